//! LAVA test-shell signals (`<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>` and friends):
//! the parser, and the state they drive (the open run, test set and STARTTC/ENDTC capture).

use crate::result::{TestCase, TestOutcome};
use std::collections::VecDeque;

/// STARTTC/ENDTC excerpt bound.
pub const TC_OUTPUT_MAX: usize = 2048;
/// Signals read from one line at most.
const SIGNALS_PER_LINE: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    StartRun { run: String },
    EndRun { run: String },
    TestCase(Case),
    StartTc(String),
    EndTc(String),
    TestSetStart(String),
    TestSetStop,
    TestRaise(String),
    RunnerExit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub result: TestOutcome,
    pub measurement: Option<f64>,
    pub units: Option<String>,
}

/// Every signal of a line, in order (`<LAVA_SIGNAL_ENDTC a><LAVA_SIGNAL_TESTCASE ...>`).
pub fn parse_all(line: &str) -> Vec<Signal> {
    let mut out = Vec::new();
    let mut rest = line;
    while out.len() < SIGNALS_PER_LINE {
        let Some(start) = next_start(rest) else {
            break;
        };
        let tail = &rest[start..];
        let Some(end) = tail.find('>') else {
            break;
        };
        if let Some(sig) = parse(&tail[..=end]) {
            out.push(sig);
        }
        rest = &tail[end + 1..];
    }
    out
}

fn next_start(s: &str) -> Option<usize> {
    ["<LAVA_SIGNAL_", "<LAVA_TEST_RUNNER EXIT>", "<TEST_CASE_ID="]
        .iter()
        .filter_map(|m| s.find(m))
        .min()
}

/// Find a signal anywhere in a line (after a kernel timestamp, after a shell's `+ echo`).
pub fn parse(line: &str) -> Option<Signal> {
    if let Some(start) = line.find("<LAVA_SIGNAL_") {
        let rest = &line[start + "<LAVA_SIGNAL_".len()..];
        let end = rest.find('>')?;
        let body = rest[..end].trim();
        let (name, params) = match body.split_once(char::is_whitespace) {
            Some((n, p)) => (n, p.trim()),
            None => (body, ""),
        };
        let first = |p: &str| p.split_whitespace().next().unwrap_or("").to_string();
        return match name {
            "STARTRUN" => Some(Signal::StartRun { run: first(params) }),
            "ENDRUN" => Some(Signal::EndRun { run: first(params) }),
            "TESTCASE" => case(params).map(Signal::TestCase),
            "STARTTC" => Some(Signal::StartTc(first(params))),
            "ENDTC" => Some(Signal::EndTc(first(params))),
            "TESTSET" => {
                let mut it = params.split_whitespace();
                match it.next() {
                    Some("START") => Some(Signal::TestSetStart(it.next()?.to_string())),
                    Some("STOP") => Some(Signal::TestSetStop),
                    _ => None,
                }
            }
            "TESTRAISE" => Some(Signal::TestRaise(params.to_string())),
            _ => None,
        };
    }
    if line.contains("<LAVA_TEST_RUNNER EXIT>") {
        return Some(Signal::RunnerExit);
    }
    // The helper-less fallback: `<TEST_CASE_ID=x RESULT=pass>`.
    let start = line.find("<TEST_CASE_ID=")?;
    let rest = &line[start + 1..];
    let end = rest.find('>')?;
    case(&rest[..end]).map(Signal::TestCase)
}

/// `KEY=value` pairs in any order.
fn case(params: &str) -> Option<Case> {
    let mut id = None;
    let mut result = None;
    let mut measurement = None;
    let mut units = None;
    for kv in params.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "TEST_CASE_ID" => id = Some(v.to_string()),
            "RESULT" => result = Some(outcome(v)),
            "MEASUREMENT" => measurement = v.parse::<f64>().ok().filter(|m| m.is_finite()),
            "UNITS" => units = Some(v.to_string()),
            _ => {}
        }
    }
    let id = id.filter(|i| !i.is_empty())?;
    Some(Case {
        id,
        result: result?,
        measurement,
        units,
    })
}

fn outcome(v: &str) -> TestOutcome {
    match v.to_ascii_lowercase().as_str() {
        "pass" => TestOutcome::Pass,
        "fail" => TestOutcome::Fail,
        "skip" => TestOutcome::Skip,
        _ => TestOutcome::Unknown,
    }
}

/// The test run, test set and capture the signals so far opened.
#[derive(Debug, Default)]
pub struct Lava {
    run: Option<String>,
    set: Option<String>,
    tc: Option<(String, String)>,
    /// ENDTC excerpts waiting for their TESTCASE: (suite, id, output).
    excerpts: VecDeque<(String, String, String)>,
}

impl Lava {
    fn suite(&self) -> String {
        match (&self.run, &self.set) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }

    /// A line printed inside STARTTC/ENDTC joins the excerpt.
    pub fn capture(&mut self, text: &str) {
        if let Some((_, buf)) = &mut self.tc {
            super::push_line_capped(buf, text, TC_OUTPUT_MAX);
        }
    }

    /// Apply one signal: new test cases go to `out`; an ENDTC excerpt may attach to a case
    /// among the `recent` ones (TESTCASE inside STARTTC/ENDTC).
    pub fn apply(&mut self, sig: Signal, recent: &mut [TestCase], out: &mut Vec<TestCase>) {
        match sig {
            Signal::StartRun { run } => {
                self.run = Some(run);
                self.set = None;
            }
            Signal::EndRun { .. } => {
                self.run = None;
                self.set = None;
            }
            Signal::TestSetStart(s) => self.set = Some(s),
            Signal::TestSetStop => self.set = None,
            Signal::TestCase(c) => {
                let suite = self.suite();
                let output = self
                    .excerpts
                    .iter()
                    .position(|(s, id, _)| *s == suite && *id == c.id)
                    .and_then(|i| self.excerpts.remove(i))
                    .map(|(_, _, out)| out);
                out.push(TestCase {
                    name: c.id,
                    result: c.result,
                    suite,
                    measurement: c.measurement,
                    units: c.units,
                    reason: None,
                    output,
                });
            }
            Signal::StartTc(id) => self.tc = Some((id, String::new())),
            Signal::EndTc(id) => {
                let Some((open, captured)) = self.tc.take() else {
                    return;
                };
                if open != id {
                    return;
                }
                let suite = self.suite();
                let existing = recent
                    .iter_mut()
                    .rev()
                    .find(|t| t.name == id && t.suite == suite && t.output.is_none());
                match existing {
                    Some(t) => t.output = Some(captured),
                    None => {
                        if self.excerpts.len() >= 16 {
                            self.excerpts.pop_front();
                        }
                        self.excerpts.push_back((suite, id, captured));
                    }
                }
            }
            Signal::TestRaise(msg) => out.push(TestCase {
                name: "testraise".to_string(),
                result: TestOutcome::Fail,
                suite: self.suite(),
                measurement: None,
                units: None,
                reason: Some(msg),
                output: None,
            }),
            Signal::RunnerExit => {}
        }
    }

    /// The log ended: a run without ENDRUN is an incomplete test.
    pub fn finish(&mut self) -> Option<TestCase> {
        let run = self.run.take()?;
        Some(TestCase {
            name: format!("{run}: incomplete"),
            result: TestOutcome::Fail,
            suite: run,
            measurement: None,
            units: None,
            reason: Some("STARTRUN without ENDRUN: the test run did not finish".to_string()),
            output: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_any_order() {
        let a =
            parse("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=lat RESULT=pass UNITS=ms MEASUREMENT=1.5>");
        let b =
            parse("x <LAVA_SIGNAL_TESTCASE MEASUREMENT=1.5 UNITS=ms RESULT=pass TEST_CASE_ID=lat>");
        assert_eq!(a, b);
        let Some(Signal::TestCase(c)) = a else {
            panic!("not a case")
        };
        assert_eq!(c.measurement, Some(1.5));
        assert_eq!(c.units.as_deref(), Some("ms"));
    }

    #[test]
    fn fallback_and_sets() {
        assert_eq!(
            parse("<TEST_CASE_ID=a RESULT=fail>"),
            Some(Signal::TestCase(Case {
                id: "a".into(),
                result: TestOutcome::Fail,
                measurement: None,
                units: None
            }))
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_TESTSET START net>"),
            Some(Signal::TestSetStart("net".into()))
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_TESTSET STOP>"),
            Some(Signal::TestSetStop)
        );
        assert_eq!(
            parse("<LAVA_SIGNAL_STARTRUN 0_smoke 1234-abcd>"),
            Some(Signal::StartRun {
                run: "0_smoke".into()
            })
        );
        assert_eq!(parse("<LAVA_SIGNAL_TESTCASE RESULT=pass>"), None);
    }

    #[test]
    fn several_signals_on_one_line_are_all_read() {
        let got = parse_all(
            "<LAVA_SIGNAL_ENDTC a><LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass> <TEST_CASE_ID=b RESULT=fail>",
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Signal::EndTc("a".into()));
        assert!(matches!(&got[2], Signal::TestCase(c) if c.id == "b"));
        assert_eq!(parse_all("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a"), vec![]);
    }
}
