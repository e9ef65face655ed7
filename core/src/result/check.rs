//! A result document from a runner is input like any other: the operator checks its numbers
//! and bounds its sizes before anything of it is stored, shown or copied into a status. The
//! runner applies the same bounds before it posts, so an honest result always passes.

use super::{BootResult, SCHEMA};
use crate::spec::FieldError;

/// Longest a duration may claim to be: a week (a boot's total timeout is at most a day).
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
pub const MAX_SUMMARY: usize = 4096;
pub const MAX_REASON: usize = 64;
pub const MAX_SHORT: usize = 256;
pub const MAX_ISSUES: usize = 1000;
pub const MAX_ISSUE_SUMMARY: usize = 1024;
pub const MAX_EXCERPT: usize = 8 * 1024;
pub const MAX_TESTS: usize = 20_000;
pub const MAX_TEST_NAME: usize = 512;
pub const MAX_TEST_OUTPUT: usize = 64 * 1024;
/// All test output of one result together.
pub const TEST_OUTPUT_BUDGET: usize = 4 << 20;
pub const MAX_ARGV: usize = 256;
pub const MAX_ARG: usize = 8 * 1024;
pub const MAX_ARTIFACTS: usize = 16;
/// The whole document, serialized: well under the operator's 8 MiB limit on a runner request.
pub const MAX_DOCUMENT: usize = 6 << 20;

/// Problems that trimming cannot fix: a wrong schema, impossible numbers.
pub fn validate(r: &BootResult) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut push = |field: &str, message: String| {
        errs.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if r.schema != SCHEMA {
        push("result.schema", format!("expected {SCHEMA:?}"));
    }
    let d = &r.durations;
    for (field, v) in [
        ("result.durations.total", d.total),
        ("result.durations.to_kernel", d.to_kernel),
        ("result.durations.to_userspace", d.to_userspace),
        ("result.durations.to_prompt", d.to_prompt),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
                push(
                    field,
                    format!("{v} is not a duration in 0..={MAX_SECONDS} s"),
                );
            }
        }
    }
    for (i, t) in r.tests.iter().enumerate() {
        if t.measurement.is_some_and(|m| !m.is_finite()) {
            push(
                &format!("result.tests[{i}].measurement"),
                "not a finite number".into(),
            );
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        *s = truncate(s, max);
    }
}

fn cut_opt(s: &mut Option<String>, max: usize) {
    if let Some(v) = s {
        cut(v, max);
    }
}

/// Trims every string and list of `r` to its bound; counts what was dropped in
/// `console.dropped_issues` / `console.dropped_tests`.
pub fn bound(r: &mut BootResult) {
    cut(&mut r.reason, MAX_REASON);
    cut(&mut r.summary, MAX_SUMMARY);
    cut_opt(&mut r.kernel_version, MAX_SHORT);
    cut_opt(&mut r.accel, MAX_REASON);
    cut_opt(&mut r.accel_reason, MAX_SUMMARY);
    if r.issues.len() > MAX_ISSUES {
        let extra = r.issues.len() - MAX_ISSUES;
        // Keep the first issues and any fatal ones among the rest (the verdict's reason).
        let (keep, rest) = r.issues.split_at(MAX_ISSUES);
        let mut kept = keep.to_vec();
        if let Some(f) = rest.iter().find(|i| i.fatal) {
            if !kept.iter().any(|i| i.fatal) {
                kept.pop();
                kept.push(f.clone());
            }
        }
        r.issues = kept;
        r.console.dropped_issues = r.console.dropped_issues.saturating_add(extra as u64);
    }
    for i in &mut r.issues {
        cut(&mut i.summary, MAX_ISSUE_SUMMARY);
        cut(&mut i.excerpt, MAX_EXCERPT);
        cut(&mut i.title, MAX_ISSUE_SUMMARY);
        cut(&mut i.fingerprint, MAX_REASON);
        cut_opt(&mut i.function, MAX_SHORT);
    }
    if r.tests.len() > MAX_TESTS {
        let extra = r.tests.len() - MAX_TESTS;
        r.tests.truncate(MAX_TESTS);
        r.console.dropped_tests = r.console.dropped_tests.saturating_add(extra as u64);
    }
    let mut budget = TEST_OUTPUT_BUDGET;
    for t in &mut r.tests {
        cut(&mut t.name, MAX_TEST_NAME);
        cut(&mut t.suite, MAX_TEST_NAME);
        cut_opt(&mut t.units, MAX_REASON);
        cut_opt(&mut t.reason, MAX_ISSUE_SUMMARY);
        if let Some(out) = &mut t.output {
            cut(out, MAX_TEST_OUTPUT.min(budget));
            budget = budget.saturating_sub(out.len());
        }
    }
    if let Some(e) = &mut r.error {
        cut(&mut e.message, MAX_SUMMARY);
    }
    if let Some(q) = &mut r.qemu {
        cut_opt(&mut q.version, MAX_REASON);
        if let Some(k) = &mut q.kernel {
            cut(&mut k.format, MAX_REASON);
            cut_opt(&mut k.from, MAX_REASON);
            cut_opt(&mut k.codec, MAX_REASON);
            cut_opt(&mut k.sha256, MAX_REASON + 8);
            cut_opt(&mut k.reason, MAX_SUMMARY);
        }
        q.argv.truncate(MAX_ARGV);
        for a in &mut q.argv {
            cut(a, MAX_ARG);
        }
    }
    while r.artifacts.len() > MAX_ARTIFACTS {
        r.artifacts.pop_last();
    }
    for a in r.artifacts.values_mut() {
        cut(&mut a.source, MAX_ARG);
        cut(&mut a.sha256, MAX_REASON + 8);
    }
    fit(r, MAX_DOCUMENT);
}

fn size(r: &BootResult) -> usize {
    serde_json::to_vec(r).map_or(usize::MAX, |v| v.len())
}

/// Shrinks the bulky parts, least important first, until the document fits in `max` bytes:
/// test output, then the excerpts and number of non-fatal issues, then the number of tests.
fn fit(r: &mut BootResult, max: usize) {
    let steps: [&dyn Fn(&mut BootResult); 5] = [
        &|r| {
            for t in &mut r.tests {
                cut_opt(&mut t.output, 1024);
            }
        },
        &|r| {
            for i in r.issues.iter_mut().filter(|i| !i.fatal) {
                cut(&mut i.excerpt, 1024);
            }
        },
        &|r| {
            let before = r.issues.len();
            let mut non_fatal = 0;
            r.issues.retain(|i| {
                non_fatal += usize::from(!i.fatal);
                i.fatal || non_fatal <= 100
            });
            let dropped = (before - r.issues.len()) as u64;
            r.console.dropped_issues = r.console.dropped_issues.saturating_add(dropped);
        },
        &|r| {
            if r.tests.len() > 2000 {
                let extra = (r.tests.len() - 2000) as u64;
                r.tests.truncate(2000);
                r.console.dropped_tests = r.console.dropped_tests.saturating_add(extra);
            }
        },
        &|r| {
            for i in &mut r.issues {
                cut(&mut i.excerpt, 256);
            }
            for t in &mut r.tests {
                t.output = None;
            }
        },
    ];
    for step in steps {
        if size(r) <= max {
            return;
        }
        step(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::ErrorKind;
    use crate::result::{Issue, IssueKind, Phase, TestCase, TestOutcome};

    #[test]
    fn impossible_durations_are_refused() {
        let mut r = BootResult::error(ErrorKind::Internal, "y");
        assert!(validate(&r).is_ok());
        r.durations.total = Some(-1.0);
        r.durations.to_kernel = Some(1e300);
        let errs = validate(&r).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["result.durations.total", "result.durations.to_kernel"]
        );
        r.durations = Default::default();
        r.schema = "other/v9".into();
        assert!(validate(&r).is_err());
    }

    #[test]
    fn a_huge_result_is_cut_to_its_bounds() {
        let mut r = BootResult::error(ErrorKind::Internal, "y");
        r.summary = "s".repeat(7 << 20);
        let issue = |fatal| Issue {
            kind: IssueKind::Warning,
            line: 1,
            summary: "w".repeat(10_000),
            excerpt: "e".repeat(100_000),
            fingerprint: "f".into(),
            phase: Phase::Boot,
            fatal,
            title: "t".into(),
            function: None,
            count: 1,
        };
        r.issues = (0..MAX_ISSUES + 5).map(|_| issue(false)).collect();
        r.issues.push(issue(true));
        r.tests = (0..3)
            .map(|i| TestCase {
                name: format!("t{i}"),
                result: TestOutcome::Pass,
                suite: String::new(),
                measurement: None,
                units: None,
                reason: None,
                output: Some("o".repeat(3 << 20)),
            })
            .collect();
        bound(&mut r);
        assert!(r.summary.len() <= MAX_SUMMARY);
        assert_eq!(r.issues.len(), MAX_ISSUES);
        assert!(
            r.issues.iter().any(|i| i.fatal),
            "the fatal issue survives the cut"
        );
        assert_eq!(r.console.dropped_issues, 6);
        assert!(r.issues.iter().all(|i| i.excerpt.len() <= MAX_EXCERPT));
        let out: usize = r
            .tests
            .iter()
            .filter_map(|t| t.output.as_ref())
            .map(String::len)
            .sum();
        assert!(out <= TEST_OUTPUT_BUDGET);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(json.len() <= MAX_DOCUMENT, "{} bytes", json.len());
        assert_eq!(truncate("héllo", 3), "…");
        assert_eq!(truncate("hello", 5), "hello");
    }
}
