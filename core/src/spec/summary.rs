//! The result summary kept in a BootJob's status (the full document is served at `/result`).

use super::ResultSummary;
use crate::result::{BootResult, IssueKind, TestOutcome};
use std::collections::BTreeMap;

/// The longest first-failure line kept in status (status objects should stay small).
const MAX_FIRST_FAILURE: usize = 300;

pub fn summarize(r: &BootResult) -> ResultSummary {
    let mut issues: BTreeMap<IssueKind, u32> = BTreeMap::new();
    for i in &r.issues {
        *issues.entry(i.kind).or_default() += 1;
    }
    let count = |o: TestOutcome| {
        u32::try_from(r.tests.iter().filter(|t| t.result == o).count()).unwrap_or(u32::MAX)
    };
    let first_failure = r
        .issues
        .iter()
        .find(|i| i.fatal)
        .map(|i| format!("{}: {}", i.kind.as_str(), i.summary))
        .or_else(|| {
            r.tests
                .iter()
                .find(|t| t.result == TestOutcome::Fail)
                .map(|t| format!("test {} failed", t.name))
        })
        .or_else(|| {
            r.error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
        })
        .map(|s| truncate(&s, MAX_FIRST_FAILURE));
    ResultSummary {
        result: r.result,
        reason: truncate(&r.reason, 64),
        stage: r.stage,
        kernel_version: r.kernel_version.as_deref().map(|v| truncate(v, 128)),
        accel: r.accel.as_deref().map(|v| truncate(v, 16)),
        issues,
        tests_passed: count(TestOutcome::Pass),
        tests_failed: count(TestOutcome::Fail),
        tests_skipped: count(TestOutcome::Skip),
        first_failure,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::ErrorKind;
    use crate::result::{Issue, IssueKind, Phase, Stage, TestCase, Verdict};

    #[test]
    fn a_failed_boot_is_summarised_with_issue_counts_and_the_first_fatal_issue() {
        let mut r = BootResult::error(ErrorKind::Internal, "y");
        r.result = Verdict::Fail;
        r.reason = "panic".into();
        r.error = None;
        r.stage = Stage::Kernel;
        r.kernel_version = Some("6.1.0".into());
        let issue = |kind, fatal, summary: &str| Issue {
            kind,
            line: 1,
            summary: summary.into(),
            excerpt: String::new(),
            fingerprint: String::new(),
            phase: Phase::Boot,
            fatal,
            title: summary.into(),
            function: None,
            count: 1,
        };
        r.issues = vec![
            issue(IssueKind::Warning, false, "WARNING at foo"),
            issue(
                IssueKind::Panic,
                true,
                "Kernel panic - not syncing: Attempted to kill init!",
            ),
            issue(IssueKind::Warning, false, "WARNING at bar"),
        ];
        r.tests = vec![TestCase {
            name: "t1".into(),
            result: TestOutcome::Pass,
            suite: String::new(),
            measurement: None,
            units: None,
            reason: None,
            output: None,
        }];
        let s = summarize(&r);
        // The status carries the result document's spellings.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["result"], "fail");
        assert_eq!(json["stage"], "kernel");
        assert_eq!(
            json["issues"],
            serde_json::json!({"panic": 1, "warning": 2})
        );
        let back: ResultSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.tests_passed, 1);
        assert_eq!(
            s.first_failure.as_deref(),
            Some("panic: Kernel panic - not syncing: Attempted to kill init!")
        );
    }

    #[test]
    fn an_infrastructure_error_names_its_kind() {
        let r = BootResult::error(ErrorKind::QemuFailed, "qemu exited 1");
        let s = summarize(&r);
        assert_eq!(s.result, crate::result::Verdict::Error);
        assert_eq!(
            s.first_failure.as_deref(),
            Some("qemu_failed: qemu exited 1")
        );
    }
}
