//! Plans over stored BootJobs, the same in both modes: a plan's view (its summary and its jobs)
//! and the runs `compare` matches, built from the jobs that carry its label. Pure.

use bootfarm_core::compare::Run;
use bootfarm_core::plan::{self, PlanJob, PlanSummary, KEY_ANNOTATION, SIZE_ANNOTATION};
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase, ResultSummary};
use serde::{Deserialize, Serialize};

/// `GET /api/v1/plans/{name}`: the plan's summary and each of its jobs in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub name: String,
    pub status: PlanSummary,
    pub jobs: Vec<PlanJobView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanJobView {
    pub name: String,
    /// `KERNEL/ARCH[/VARIANT]`.
    pub key: String,
    #[schemars(with = "String")]
    pub phase: JobPhase,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultSummary>,
}

/// The job's place in its plan; a job outside any plan is matched by its name.
pub fn key_of(job: &BootJob) -> String {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEY_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| job.metadata.name.clone().unwrap_or_default())
}

/// How many jobs the plan expands to, as its jobs say (the most any of them says).
fn size_of(jobs: &[BootJob]) -> usize {
    jobs.iter()
        .filter_map(|j| j.metadata.annotations.as_ref()?.get(SIZE_ANNOTATION))
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or(jobs.len())
}

/// The plan `name` from its jobs (any order; shown by key, then name).
pub fn view(name: &str, jobs: &[BootJob]) -> PlanView {
    let mut rows: Vec<PlanJobView> = jobs
        .iter()
        .map(|j| {
            let st = j.status.as_ref();
            PlanJobView {
                name: j.metadata.name.clone().unwrap_or_default(),
                key: key_of(j),
                phase: crate::queue::phase(j),
                attempts: st.map_or(0, |s| s.attempts),
                result: st.and_then(|s| s.result.clone()),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.name.cmp(&b.name)));
    let brief: Vec<PlanJob> = rows
        .iter()
        .map(|r| PlanJob {
            name: r.name.clone(),
            key: r.key.clone(),
            phase: r.phase,
            result: r.result.clone(),
        })
        .collect();
    PlanView {
        name: name.to_string(),
        status: plan::summarize_plan(size_of(jobs), &brief),
        jobs: rows,
    }
}

/// The label selector of a compare side: `k=v,...` as given, or a plan's name.
pub fn side_selector(side: &str) -> String {
    if side.contains('=') {
        side.to_string()
    } else {
        format!("{}={side}", plan::PLAN_LABEL)
    }
}

/// The runs of a compare side: each job with its result document, when it has one.
pub fn runs(jobs: &[BootJob], mut result_of: impl FnMut(&str) -> Option<BootResult>) -> Vec<Run> {
    jobs.iter()
        .map(|j| {
            let name = j.metadata.name.clone().unwrap_or_default();
            let finished = crate::queue::phase(j).is_finished();
            let has_result = j.status.as_ref().is_some_and(|s| s.result.is_some());
            Run {
                key: key_of(j),
                result: (finished && has_result).then(|| result_of(&name)).flatten(),
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::document::plan_jobs;
    use bootfarm_core::plan::{BootPlanSpec, PlanPhase};
    use bootfarm_core::spec::BootJobStatus;

    fn planned(n: usize) -> Vec<BootJob> {
        let kernels: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"name": format!("k{i}"), "url": "file:///k"}))
            .collect();
        let spec: BootPlanSpec =
            serde_json::from_value(serde_json::json!({"arches": ["x86_64"], "kernels": kernels}))
                .unwrap();
        plan_jobs("p", &spec).unwrap()
    }

    #[test]
    fn a_plan_still_being_created_is_running_until_all_its_jobs_finished() {
        let mut jobs = planned(3);
        jobs.truncate(1);
        jobs[0].status = Some(BootJobStatus {
            phase: JobPhase::Succeeded,
            ..BootJobStatus::default()
        });
        let v = view("p", &jobs);
        assert_eq!(v.status.jobs, 3, "the size annotation, not the jobs seen");
        assert_eq!(v.status.phase, PlanPhase::Running);
        assert_eq!(v.jobs[0].key, "k0/x86_64");
    }

    #[test]
    fn sides_are_selectors_or_plan_names_and_runs_need_a_finished_result() {
        assert_eq!(side_selector("nightly"), "bootfarm.dev/plan=nightly");
        assert_eq!(side_selector("team=kernel,ci=1"), "team=kernel,ci=1");
        let jobs = planned(2);
        let mut asked = Vec::new();
        let r = runs(&jobs, |n| {
            asked.push(n.to_string());
            None
        });
        assert_eq!(r.len(), 2);
        assert!(asked.is_empty(), "an unfinished job's result is not read");
        assert_eq!(r[1].key, "k1/x86_64");
    }
}
