//! A plan's summary from the state of its jobs.

use super::PlanSummary;
use crate::spec::{JobPhase, ResultSummary};
use serde::{Deserialize, Serialize};

#[cfg(feature = "schema")]
use schemars::JsonSchema;

/// The failing jobs listed in a summary (the counts cover all of them): a status stays small.
pub const MAX_FAILING_LISTED: usize = 50;

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum PlanPhase {
    /// Not expanded yet (or its matrix is invalid: see `message`).
    #[default]
    Pending,
    /// Some job has not finished.
    Running,
    /// Every job passed.
    Succeeded,
    /// Every job finished, some failed (a kernel or a test failure), none in error.
    Failed,
    /// Every job finished and some ended in Error or Canceled: the plan's answer is incomplete,
    /// so it is not reported as a plain pass or fail.
    Error,
}

impl PlanPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanPhase::Pending => "Pending",
            PlanPhase::Running => "Running",
            PlanPhase::Succeeded => "Succeeded",
            PlanPhase::Failed => "Failed",
            PlanPhase::Error => "Error",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PlanPhase::Succeeded | PlanPhase::Failed | PlanPhase::Error
        )
    }

    /// `wait --plan`'s exit status: 0 all passed, 1 any failed, 3 any error; None while running.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            PlanPhase::Succeeded => Some(0),
            PlanPhase::Failed => Some(1),
            PlanPhase::Error => Some(3),
            PlanPhase::Pending | PlanPhase::Running => None,
        }
    }
}

/// What a summary needs of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanJob {
    pub name: String,
    pub key: String,
    pub phase: JobPhase,
    pub result: Option<ResultSummary>,
}

/// A job that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct FailingJob {
    pub name: String,
    /// `KERNEL/ARCH[/VARIANT]`.
    pub key: String,
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// The summary of a plan expanding to `expected` jobs, of which `jobs` exist (in matrix order).
pub fn summarize_plan(expected: usize, jobs: &[PlanJob]) -> PlanSummary {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut s = PlanSummary {
        jobs: count(expected.max(jobs.len())),
        created: count(jobs.len()),
        ..PlanSummary::default()
    };
    let mut finished = 0;
    let mut failed = 0;
    let mut errored = false;
    for j in jobs {
        *s.phases.entry(j.phase.as_str().to_string()).or_default() += 1;
        if let Some(r) = &j.result {
            *s.results.entry(r.result.as_str().to_string()).or_default() += 1;
        }
        if j.phase.is_finished() {
            finished += 1;
        }
        match j.phase {
            JobPhase::Failed => failed += 1,
            JobPhase::Error | JobPhase::Canceled => errored = true,
            _ => {}
        }
        let not_passed = matches!(
            j.phase,
            JobPhase::Failed | JobPhase::Error | JobPhase::Canceled
        );
        if not_passed && s.failing.len() < MAX_FAILING_LISTED {
            s.failing.push(FailingJob {
                name: j.name.clone(),
                key: j.key.clone(),
                phase: j.phase,
                first_failure: j.result.as_ref().and_then(|r| {
                    r.first_failure
                        .clone()
                        .or_else(|| Some(format!("{}: {}", r.result.as_str(), r.reason)))
                }),
            });
        }
    }
    s.finished = count(finished);
    s.failed = count(failed);
    s.phase = if jobs.is_empty() {
        PlanPhase::Pending
    } else if finished < expected.max(jobs.len()) {
        PlanPhase::Running
    } else if errored {
        PlanPhase::Error
    } else if failed > 0 {
        PlanPhase::Failed
    } else {
        PlanPhase::Succeeded
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Stage, Verdict};
    use std::collections::BTreeMap;

    fn job(name: &str, phase: JobPhase, result: Option<(Verdict, &str)>) -> PlanJob {
        PlanJob {
            name: name.into(),
            key: format!("{name}/x86_64"),
            phase,
            result: result.map(|(v, first)| ResultSummary {
                result: v,
                reason: "panic".into(),
                stage: Stage::Kernel,
                kernel_version: None,
                accel: None,
                issues: BTreeMap::new(),
                tests_passed: 0,
                tests_failed: 0,
                tests_skipped: 0,
                first_failure: (!first.is_empty()).then(|| first.to_string()),
            }),
        }
    }

    #[test]
    fn a_plan_runs_until_every_expected_job_finished() {
        assert_eq!(summarize_plan(2, &[]).phase, PlanPhase::Pending);
        let one = [job("a", JobPhase::Succeeded, Some((Verdict::Pass, "")))];
        let s = summarize_plan(2, &one);
        assert_eq!(
            (s.phase, s.jobs, s.created, s.finished),
            (PlanPhase::Running, 2, 1, 1)
        );
        let two = [
            one[0].clone(),
            job("b", JobPhase::Succeeded, Some((Verdict::Pass, ""))),
        ];
        let s = summarize_plan(2, &two);
        assert_eq!(s.phase, PlanPhase::Succeeded);
        assert_eq!(s.phase.exit_code(), Some(0));
        assert_eq!(s.results["pass"], 2);
        assert!(s.failing.is_empty());
    }

    #[test]
    fn failures_list_their_first_failure_and_errors_dominate() {
        let jobs = [
            job("a", JobPhase::Succeeded, Some((Verdict::Pass, ""))),
            job(
                "b",
                JobPhase::Failed,
                Some((Verdict::Fail, "panic: Kernel panic - not syncing")),
            ),
        ];
        let s = summarize_plan(2, &jobs);
        assert_eq!((s.phase, s.failed), (PlanPhase::Failed, 1));
        assert_eq!(s.phase.exit_code(), Some(1));
        assert_eq!(s.failing.len(), 1);
        assert_eq!(s.failing[0].key, "b/x86_64");
        assert_eq!(
            s.failing[0].first_failure.as_deref(),
            Some("panic: Kernel panic - not syncing")
        );
        let mut with_error = jobs.to_vec();
        with_error.push(job("c", JobPhase::Error, Some((Verdict::Error, ""))));
        let s = summarize_plan(3, &with_error);
        assert_eq!(s.phase, PlanPhase::Error);
        assert_eq!(s.phase.exit_code(), Some(3));
        assert_eq!(s.failing[1].first_failure.as_deref(), Some("error: panic"));
        assert_eq!(s.phases["Error"], 1);
        let canceled = [job("d", JobPhase::Canceled, None)];
        assert_eq!(summarize_plan(1, &canceled).phase, PlanPhase::Error);
    }

    #[test]
    fn the_failing_list_is_bounded_but_the_counts_are_not() {
        let jobs: Vec<PlanJob> = (0..MAX_FAILING_LISTED + 10)
            .map(|i| {
                job(
                    &format!("j{i}"),
                    JobPhase::Failed,
                    Some((Verdict::Fail, "x")),
                )
            })
            .collect();
        let s = summarize_plan(jobs.len(), &jobs);
        assert_eq!(s.failing.len(), MAX_FAILING_LISTED);
        assert_eq!(s.failed as usize, MAX_FAILING_LISTED + 10);
    }
}
