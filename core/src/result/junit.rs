//! A result as JUnit XML, the format CI systems read: one testsuite per job, with
//! - a `boot` case: failed (with the first failure's summary) when the boot failed, an error when
//!   the infrastructure did;
//! - one case per kernel issue, named as SQUAD's log parser names them
//!   (`check-kernel-<kind>`, then the crash's title), failed when the job's policy counts it;
//! - one case per test the guest reported, in its suite, with skips, reasons and measurements.

use super::{BootResult, Issue, TestCase, TestOutcome, Verdict};
use quick_junit::{NonSuccessKind, Property, Report, TestCaseStatus, TestSuite};
use std::time::Duration;

/// The JUnit document of one job's result; `job` names the testsuite (the job's name, or the
/// log's file name for `classify`).
pub fn to_junit(result: &BootResult, job: &str) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("bootfarm");
    report.add_test_suite(suite(result, job));
    report.to_string()
}

fn suite(r: &BootResult, job: &str) -> TestSuite {
    let mut suite = TestSuite::new(job);
    if let Some(t) = seconds(r.durations.total) {
        suite.set_time(t);
    }
    let mut props = vec![
        Property::new("result", r.result.as_str()),
        Property::new("reason", r.reason.as_str()),
        Property::new("stage", r.stage.as_str()),
    ];
    let optional = [
        ("arch", r.arch.map(|a| a.as_str().to_string())),
        ("kernel_version", r.kernel_version.clone()),
        ("accel", r.accel.clone()),
    ];
    props.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| Property::new(k, v))),
    );
    suite.add_properties(props);
    suite.add_test_case(boot_case(r, job));
    suite.add_test_cases(r.issues.iter().map(|i| issue_case(i, job)));
    suite.add_test_cases(r.tests.iter().map(|t| test_case(t, job)));
    suite
}

fn seconds(s: Option<f64>) -> Option<Duration> {
    s.filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn boot_case(r: &BootResult, job: &str) -> quick_junit::TestCase {
    let status = match r.result {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(first_failure(r)).set_type(r.reason.as_str());
            s
        }
        Verdict::Error => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            let kind = r.error.as_ref().map_or("error", |e| e.kind.as_str());
            s.set_message(r.summary.as_str()).set_type(kind);
            s
        }
    };
    let mut case = quick_junit::TestCase::new("boot", status);
    case.set_classname(job);
    if let Some(t) = seconds(r.durations.total) {
        case.set_time(t);
    }
    case
}

/// What a maintainer reads first: the first fatal issue's title, else the first failed test,
/// else the summary.
fn first_failure(r: &BootResult) -> String {
    if let Some(i) = r.issues.iter().find(|i| i.fatal) {
        return issue_title(i);
    }
    if let Some(t) = r.tests.iter().find(|t| t.result == TestOutcome::Fail) {
        return format!("test {} failed", t.name);
    }
    r.summary.clone()
}

fn issue_title(i: &Issue) -> String {
    if i.title.is_empty() {
        i.summary.clone()
    } else {
        i.title.clone()
    }
}

fn issue_case(i: &Issue, job: &str) -> quick_junit::TestCase {
    let name = format!("check-kernel-{}: {}", i.kind.as_str(), issue_title(i));
    let status = if i.fatal {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(i.summary.as_str())
            .set_type(i.kind.as_str())
            .set_description(i.excerpt.as_str());
        s
    } else {
        TestCaseStatus::success()
    };
    let mut case = quick_junit::TestCase::new(name, status);
    case.set_classname(format!("{job}.kernel"));
    let mut props = vec![
        Property::new("fingerprint", i.fingerprint.as_str()),
        Property::new("line", i.line.to_string()),
        Property::new("count", i.count.to_string()),
    ];
    if let Some(f) = &i.function {
        props.push(Property::new("function", f.as_str()));
    }
    case.add_properties(props);
    if !i.fatal {
        // Recorded, not fatal by the job's policy: the report stays readable in the case.
        case.set_system_out(i.excerpt.as_str());
    }
    case
}

fn test_case(t: &TestCase, job: &str) -> quick_junit::TestCase {
    let reason = t.reason.as_deref().unwrap_or_default();
    let status = match t.result {
        TestOutcome::Pass => TestCaseStatus::success(),
        TestOutcome::Skip => {
            let mut s = TestCaseStatus::skipped();
            if !reason.is_empty() {
                s.set_message(reason);
            }
            s
        }
        TestOutcome::Fail => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(if reason.is_empty() { "failed" } else { reason });
            s
        }
        // The guest never said: neither a pass nor the test's own failure.
        TestOutcome::Unknown => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(if reason.is_empty() {
                "no result"
            } else {
                reason
            });
            s
        }
    };
    let mut case = quick_junit::TestCase::new(t.name.as_str(), status);
    let classname = if t.suite.is_empty() {
        format!("{job}.tests")
    } else {
        format!("{job}.tests.{}", t.suite.replace('/', "."))
    };
    case.set_classname(classname);
    if let Some(m) = t.measurement {
        case.add_property(Property::new("measurement", m.to_string()));
        if let Some(u) = &t.units {
            case.add_property(Property::new("units", u.as_str()));
        }
    }
    if let Some(out) = &t.output {
        case.set_system_out(out.as_str());
    }
    case
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{ErrorKind, IssueKind, Phase};

    fn issue(kind: IssueKind, fatal: bool) -> Issue {
        Issue {
            kind,
            line: 12,
            summary: "BUG: kernel NULL pointer dereference, address: 0000000000000000".into(),
            excerpt: "BUG: kernel NULL pointer dereference\n Call Trace:\n  foo+0x1/0x2\x07".into(),
            fingerprint: "abcd".into(),
            phase: Phase::Boot,
            fatal,
            title: "BUG: unable to handle kernel NULL pointer dereference in foo".into(),
            function: Some("foo".into()),
            count: 2,
        }
    }

    fn test(name: &str, result: TestOutcome) -> TestCase {
        TestCase {
            name: name.into(),
            result,
            suite: "kunit/example".into(),
            measurement: Some(1.5),
            units: Some("ms".into()),
            reason: (result == TestOutcome::Skip).then(|| "not on this arch".to_string()),
            output: None,
        }
    }

    fn parsed(xml: &str) -> Report {
        Report::deserialize_from_str(xml).expect("the document reads back as JUnit")
    }

    #[test]
    fn a_failed_boot_names_its_first_failure_and_every_issue_and_test_is_a_case() {
        let mut r = BootResult::error(ErrorKind::Internal, "x");
        r.result = Verdict::Fail;
        r.error = None;
        r.reason = "panic".into();
        r.summary = "kernel panic".into();
        r.issues = vec![
            issue(IssueKind::Warning, false),
            issue(IssueKind::Oops, true),
        ];
        r.tests = vec![
            test("t1", TestOutcome::Pass),
            test("t2", TestOutcome::Skip),
            test("t3", TestOutcome::Fail),
        ];
        let xml = to_junit(&r, "job-1").unwrap();
        let report = parsed(&xml);
        assert_eq!(report.test_suites.len(), 1);
        let suite = &report.test_suites[0];
        assert_eq!(suite.name.as_str(), "job-1");
        assert_eq!(suite.tests, 6);
        assert_eq!(suite.failures, 3, "boot, the oops and t3");
        assert_eq!(suite.errors, 0);
        let boot = &suite.test_cases[0];
        assert_eq!(boot.name.as_str(), "boot");
        match &boot.status {
            TestCaseStatus::NonSuccess { kind, message, .. } => {
                assert_eq!(*kind, NonSuccessKind::Failure);
                assert_eq!(
                    message.as_ref().map(|m| m.as_str()),
                    Some("BUG: unable to handle kernel NULL pointer dereference in foo")
                );
            }
            other => panic!("{other:?}"),
        }
        let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(
            &"check-kernel-oops: BUG: unable to handle kernel NULL pointer dereference in foo"
        ));
        assert!(matches!(
            suite.test_cases[1].status,
            TestCaseStatus::Success { .. }
        ));
        assert!(matches!(
            suite.test_cases[4].status,
            TestCaseStatus::Skipped { .. }
        ));
        assert_eq!(
            suite.test_cases[3].classname.as_ref().map(|c| c.as_str()),
            Some("job-1.tests.kunit.example")
        );
        // Control characters of a console never make the document unreadable.
        assert!(!xml.contains('\x07'));
    }

    #[test]
    fn an_infrastructure_error_is_a_junit_error_with_its_kind() {
        let r = BootResult::error(ErrorKind::DownloadFailed, "kernel: HTTP 503");
        let report = parsed(&to_junit(&r, "j").unwrap());
        let suite = &report.test_suites[0];
        assert_eq!((suite.tests, suite.errors, suite.failures), (1, 1, 0));
        match &suite.test_cases[0].status {
            TestCaseStatus::NonSuccess { ty, .. } => {
                assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("download_failed"));
            }
            other => panic!("{other:?}"),
        }
    }
}
