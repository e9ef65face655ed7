//! KTAP / TAP results (KUnit nests by indentation, the kselftest runner by a `# ` prefix).
//!
//! Whatever precedes a version line is that level's prefix; a line belongs to the deepest level
//! whose prefix it starts with. Leaf results become test cases whose suite is the `/`-joined
//! path of the enclosing subtests; a level that reports fewer results than its plan adds a
//! failed case (the kernel or the test crashed).

use crate::result::{TestCase, TestOutcome};

/// Bound on cases buffered in nested levels until their suite's name is known.
const MAX_BUFFERED: usize = 10_000;
/// Bound on nesting.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Default)]
struct Level {
    prefix: String,
    name: Option<String>,
    plan: Option<u32>,
    results: u32,
    /// Cases below this level, `suite` relative to it.
    cases: Vec<TestCase>,
    any_failed: bool,
}

#[derive(Debug, Default)]
pub struct Ktap {
    levels: Vec<Level>,
    buffered: usize,
}

/// `KTAP version 1`, `TAP version 13/14`: the byte index where the version text starts.
pub fn version_pos(text: &str) -> Option<usize> {
    let i = text.find("TAP version ")?;
    let start = if i >= 1 && text.as_bytes()[i - 1] == b'K' {
        i - 1
    } else {
        i
    };
    let after = &text[i + "TAP version ".len()..];
    if after.starts_with(|c: char| c.is_ascii_digit()) {
        Some(start)
    } else {
        None
    }
}

impl Ktap {
    pub fn active(&self) -> bool {
        !self.levels.is_empty()
    }

    /// Feed one stripped console line. Returns true when the line was KTAP.
    pub fn line(&mut self, text: &str, out: &mut Vec<TestCase>) -> bool {
        if let Some(vpos) = version_pos(text) {
            self.version(text, vpos, out);
            return true;
        }
        if self.levels.is_empty() {
            return false;
        }
        let Some(i) = (0..self.levels.len())
            .rev()
            .find(|&i| text.starts_with(self.levels[i].prefix.as_str()))
        else {
            return false;
        };
        let rest = &text[self.levels[i].prefix.len()..];
        let trimmed = rest.trim_start();
        if let Some(name) = trimmed.strip_prefix("# Subtest:") {
            let name = name.trim().to_string();
            let ws = &rest[..rest.len() - trimmed.len()];
            if ws.is_empty() {
                if self.levels[i].name.is_none() {
                    self.levels[i].name = Some(name);
                }
            } else if self.levels.len() < MAX_DEPTH {
                self.levels.truncate(i + 1);
                let prefix = format!("{}{}", self.levels[i].prefix, ws);
                self.levels.push(Level {
                    prefix,
                    name: Some(name),
                    ..Level::default()
                });
            }
            return true;
        }
        if let Some(n) = rest.strip_prefix("1..") {
            if let Ok(n) = n.trim().parse::<u32>() {
                if self.levels[i].plan.is_none() {
                    self.levels[i].plan = Some(n);
                }
                return true;
            }
        }
        if let Some(reason) = rest.strip_prefix("Bail out!") {
            let reason = reason.trim().to_string();
            let level = &mut self.levels[i];
            level
                .cases
                .push(case("bail out", TestOutcome::Fail, Some(reason)));
            self.close_all(out);
            return true;
        }
        let (ok, after) = if let Some(a) = rest.strip_prefix("ok ") {
            (true, a)
        } else if let Some(a) = rest.strip_prefix("not ok ") {
            (false, a)
        } else {
            return false;
        };
        self.result(i, ok, after, out);
        true
    }

    fn version(&mut self, text: &str, vpos: usize, out: &mut Vec<TestCase>) {
        let pre = &text[..vpos];
        if self.levels.is_empty() {
            self.levels.push(Level {
                prefix: pre.to_string(),
                ..Level::default()
            });
            return;
        }
        let found = (0..self.levels.len())
            .rev()
            .find(|&i| pre.starts_with(self.levels[i].prefix.as_str()));
        let Some(i) = found else {
            // A new stream with a different prefix: the old one is over.
            self.close_all(out);
            self.levels.push(Level {
                prefix: pre.to_string(),
                ..Level::default()
            });
            return;
        };
        let extra = &pre[self.levels[i].prefix.len()..];
        if extra.is_empty() {
            let fresh = {
                let l = &self.levels[i];
                l.plan.is_none() && l.results == 0 && l.cases.is_empty()
            };
            if fresh {
                return;
            }
            if i == 0 {
                self.close_all(out);
                self.levels.push(Level {
                    prefix: pre.to_string(),
                    ..Level::default()
                });
                return;
            }
            // A sibling subtest at a level whose parent never reported the previous one.
            self.close_from(i, out);
            self.levels.push(Level {
                prefix: pre.to_string(),
                ..Level::default()
            });
            return;
        }
        if extra.bytes().all(|b| b == b' ' || b == b'\t' || b == b'#')
            && self.levels.len() < MAX_DEPTH
        {
            // KUnit may print `# Subtest:` before the child's version line.
            if let Some(child) = self.levels.get(i + 1) {
                if child.prefix == pre && child.plan.is_none() && child.results == 0 {
                    return;
                }
            }
            self.close_from(i + 1, out);
            self.levels.push(Level {
                prefix: pre.to_string(),
                ..Level::default()
            });
        }
    }

    fn result(&mut self, i: usize, ok: bool, after: &str, out: &mut Vec<TestCase>) {
        let (num_name, directive) = match after.find(" # ") {
            Some(p) => (&after[..p], Some(after[p + 3..].trim())),
            None => match after.strip_suffix(" #") {
                Some(a) => (a, None),
                None => (after, None),
            },
        };
        let num_name = num_name.trim();
        let (num, name) = match num_name.split_once(' ') {
            Some((n, rest)) => (n, rest.trim_start_matches("- ").trim()),
            None => (num_name, ""),
        };
        let name = if name.is_empty() { num } else { name };
        // The deeper levels are the subtests this result summarises.
        let child = if self.levels.len() > i + 1 {
            Some(self.close_child_levels(i, name))
        } else {
            None
        };
        let (outcome, reason) = outcome(ok, directive);
        let level = &mut self.levels[i];
        level.results += 1;
        match child {
            Some(child_failed) => {
                if outcome == TestOutcome::Fail && !child_failed {
                    level.any_failed = true;
                    level.cases.push(case(name, TestOutcome::Fail, reason));
                }
            }
            None => {
                if outcome == TestOutcome::Fail {
                    level.any_failed = true;
                }
                level.cases.push(case(name, outcome, reason));
            }
        }
        if i == 0 {
            self.flush_top(out);
            let l = &self.levels[0];
            if l.plan.is_some_and(|p| l.results >= p) {
                self.levels.clear();
                self.buffered = 0;
            }
        } else {
            self.buffered += 1;
            if self.buffered > MAX_BUFFERED {
                self.levels[i].cases.pop();
                self.buffered -= 1;
            }
        }
    }

    /// Close every level below `i`, the direct child taking `name` if it has none.
    /// Returns whether any case below failed.
    fn close_child_levels(&mut self, i: usize, name: &str) -> bool {
        while self.levels.len() > i + 2 {
            self.close_last(None);
        }
        self.close_last(Some(name))
    }

    /// Pop the deepest level into its parent, prefixing its cases' suites with its name.
    fn close_last(&mut self, fallback_name: Option<&str>) -> bool {
        let Some(mut level) = self.levels.pop() else {
            return false;
        };
        let name = level
            .name
            .clone()
            .or_else(|| fallback_name.map(str::to_string))
            .unwrap_or_else(|| "unnamed".to_string());
        shortfall(&mut level, &name);
        let failed = level.any_failed;
        for mut c in level.cases {
            c.suite = if c.suite.is_empty() {
                name.clone()
            } else {
                format!("{name}/{}", c.suite)
            };
            if let Some(parent) = self.levels.last_mut() {
                parent.cases.push(c);
            }
        }
        if let Some(parent) = self.levels.last_mut() {
            parent.any_failed |= failed;
        }
        failed
    }

    fn close_from(&mut self, depth: usize, out: &mut Vec<TestCase>) {
        while self.levels.len() > depth.max(1) {
            self.close_last(None);
        }
        self.flush_top(out);
    }

    /// Emit the top level's finished cases.
    fn flush_top(&mut self, out: &mut Vec<TestCase>) {
        if let Some(top) = self.levels.first_mut() {
            let name = top.name.clone();
            for mut c in top.cases.drain(..) {
                if let Some(n) = &name {
                    c.suite = if c.suite.is_empty() {
                        n.clone()
                    } else {
                        format!("{n}/{}", c.suite)
                    };
                }
                out.push(c);
            }
        }
        self.buffered = 0;
        for l in self.levels.iter().skip(1) {
            self.buffered += l.cases.len();
        }
    }

    /// The stream ended (log over, new stream): close every level, reporting shortfalls.
    pub fn close_all(&mut self, out: &mut Vec<TestCase>) {
        while self.levels.len() > 1 {
            self.close_last(None);
        }
        if let Some(top) = self.levels.first_mut() {
            let name = top.name.clone().unwrap_or_else(|| "ktap".to_string());
            shortfall(top, &name);
        }
        self.flush_top(out);
        self.levels.clear();
        self.buffered = 0;
    }
}

fn shortfall(level: &mut Level, name: &str) {
    if let Some(plan) = level.plan {
        if level.results < plan {
            level.any_failed = true;
            level.cases.push(case(
                &format!("{name}: missing results ({} of {plan})", level.results),
                TestOutcome::Fail,
                Some("crashed: fewer results than planned".to_string()),
            ));
        }
    }
}

fn outcome(ok: bool, directive: Option<&str>) -> (TestOutcome, Option<String>) {
    let base = if ok {
        TestOutcome::Pass
    } else {
        TestOutcome::Fail
    };
    let Some(d) = directive.filter(|d| !d.is_empty()) else {
        return (base, None);
    };
    let word = d
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let outcome = match word.as_str() {
        "SKIP" => TestOutcome::Skip,
        "TODO" if !ok => TestOutcome::Skip,
        "TIMEOUT" | "ERROR" => TestOutcome::Fail,
        _ => base,
    };
    (outcome, Some(d.to_string()))
}

fn case(name: &str, result: TestOutcome, reason: Option<String>) -> TestCase {
    TestCase {
        name: name.to_string(),
        result,
        suite: String::new(),
        measurement: None,
        units: None,
        reason,
        output: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Vec<TestCase> {
        let mut k = Ktap::default();
        let mut out = Vec::new();
        for l in lines {
            k.line(l, &mut out);
        }
        k.close_all(&mut out);
        out
    }

    fn brief(v: &[TestCase]) -> Vec<(String, String, TestOutcome)> {
        v.iter()
            .map(|t| (t.suite.clone(), t.name.clone(), t.result))
            .collect()
    }

    #[test]
    fn nested_kunit_by_indentation() {
        let out = run(&[
            "KTAP version 1",
            "1..1",
            "    KTAP version 1",
            "    # Subtest: example",
            "    1..4",
            "    ok 1 example_simple_test",
            "    ok 2 example_skip_test # SKIP this test should be skipped",
            "        KTAP version 1",
            "        # Subtest: example_params_test",
            "        ok 1 example value 3",
            "        not ok 2 example value 2",
            "    not ok 3 example_params_test",
            "    not ok 4 example_timeout # TIMEOUT",
            "# example: pass:1 fail:2 skip:1 total:4",
            "not ok 1 example",
        ]);
        use TestOutcome::*;
        let s = |a: &str, b: &str, o| (a.to_string(), b.to_string(), o);
        assert_eq!(
            brief(&out),
            vec![
                s("example", "example_simple_test", Pass),
                s("example", "example_skip_test", Skip),
                s("example/example_params_test", "example value 3", Pass),
                s("example/example_params_test", "example value 2", Fail),
                s("example", "example_timeout", Fail),
            ]
        );
        assert_eq!(
            out[1].reason.as_deref(),
            Some("SKIP this test should be skipped")
        );
    }

    #[test]
    fn kselftest_by_hash_prefix_with_a_shortfall() {
        let out = run(&[
            "TAP version 13",
            "1..3",
            "# selftests: timers: posix_timers",
            "# TAP version 13",
            "# 1..2",
            "# ok 1 Check itimer virtual",
            "# ok 2 - Check itimer prof",
            "ok 1 selftests: timers: posix_timers",
            "ok 2 selftests: timers: nanosleep # SKIP not root",
        ]);
        use TestOutcome::*;
        let s = |a: &str, b: &str, o| (a.to_string(), b.to_string(), o);
        assert_eq!(
            brief(&out),
            vec![
                s(
                    "selftests: timers: posix_timers",
                    "Check itimer virtual",
                    Pass
                ),
                s("selftests: timers: posix_timers", "Check itimer prof", Pass),
                s("", "selftests: timers: nanosleep", Skip),
                s("", "ktap: missing results (2 of 3)", Fail),
            ]
        );
    }

    #[test]
    fn prefix_before_the_version_line_is_stripped() {
        let out = run(&["foo: KTAP version 1", "foo: 1..1", "foo: ok 1 a", "ok 2 b"]);
        assert_eq!(
            brief(&out),
            vec![("".into(), "a".into(), TestOutcome::Pass)]
        );
    }

    #[test]
    fn a_crash_inside_a_suite_reports_both_levels() {
        let out = run(&[
            "KTAP version 1",
            "1..1",
            "    # Subtest: s",
            "    1..3",
            "    ok 1 a",
        ]);
        let names: Vec<String> = out
            .iter()
            .map(|t| format!("{}|{}", t.suite, t.name))
            .collect();
        assert_eq!(
            names,
            vec![
                "s|a",
                "s|s: missing results (1 of 3)",
                "|ktap: missing results (0 of 1)"
            ]
        );
    }
}
