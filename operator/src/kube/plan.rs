//! The BootPlan reconciler: a plan applied with `kubectl` is expanded into its BootJobs (owned by
//! the plan, so deleting the plan deletes them), and its status is their summary.
//!
//! The expansion and the summary are the same pure functions the HTTP API uses
//! ([`crate::api::document::plan_jobs`], [`crate::plans::view`]); this module creates what is
//! missing and writes the status when it changed (the BootJob watch wakes it, debounced).

use super::context::{Context, ReconcileError};
use crate::store::{JobStore, StoreError};
use bootfarm_core::plan::{BootPlan, PlanSummary, PLAN_LABEL};
use bootfarm_core::spec::BootJob;
use jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Re-check of a plan still running (its jobs' changes wake it sooner).
const RECHECK: Duration = Duration::from_secs(120);

#[tracing::instrument(name = "reconcile_bootplan", skip_all, fields(plan = %plan.name_any()))]
pub async fn reconcile(plan: Arc<BootPlan>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let result = reconcile_plan(&plan, &ctx).await;
    ReconcileError::observe(&ctx.metrics, "bootplan", started, &result);
    result
}

pub fn error_policy(plan: Arc<BootPlan>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    if error.is_conflict() || matches!(error, ReconcileError::NotSynced) {
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(plan = %plan.name_any(), kind = error.kind(), error = %error, "BootPlan reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn is_of(job: &BootJob, plan: &str, ns: &str) -> bool {
    job.namespace().as_deref() == Some(ns)
        && job.labels().get(PLAN_LABEL).map(String::as_str) == Some(plan)
}

async fn reconcile_plan(plan: &BootPlan, ctx: &Context) -> Result<Action, ReconcileError> {
    if plan.meta().deletion_timestamp.is_some() {
        // The garbage collector deletes the jobs it owns.
        return Ok(Action::await_change());
    }
    let name = plan.name_any();
    let ns = plan
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    // Which jobs exist comes from the watch cache: without it every reconcile would create again.
    if ctx.jobs.get().is_none() {
        return Err(ReconcileError::NotSynced);
    }
    let mut jobs: Vec<BootJob> = ctx
        .job_snapshot()
        .iter()
        .filter(|j| is_of(j, &name, &ns))
        .map(|j| (**j).clone())
        .collect();

    let mut message = None;
    match expand(plan, &name, ctx) {
        Err(m) => message = Some(m),
        Ok(expanded) => {
            let have: HashSet<String> = jobs.iter().map(ResourceExt::name_any).collect();
            let owner = plan.controller_owner_ref(&());
            for mut job in expanded {
                let job_name = job.name_any();
                if have.contains(&job_name) {
                    continue;
                }
                job.metadata.owner_references = owner.clone().map(|o| vec![o]);
                match ctx.store.create(job, Timestamp::now()).await {
                    Ok(stored) => {
                        ctx.metrics.arch_seen(stored.spec.arch);
                        jobs.push(stored);
                    }
                    // Ours, created by an earlier reconcile the cache has not shown yet; or
                    // someone else's job of that name, which the plan cannot replace.
                    Err(StoreError::AlreadyExists(_)) => match ctx.store.get(&job_name).await? {
                        Some(j) if is_of(&j, &name, &ns) => jobs.push(j),
                        _ => {
                            message = Some(format!(
                                "a BootJob named {job_name} exists and is not this plan's: \
                                 rename the plan or delete that job"
                            ));
                        }
                    },
                    Err(e) => return Err(e.into()),
                }
            }
            ctx.work.notify_waiters();
        }
    }

    let mut status: PlanSummary = crate::plans::view(&name, &jobs).status;
    status.message = message;
    status.observed_generation = plan.meta().generation;
    if plan.status.as_ref() != Some(&status) {
        write_status(plan, &ns, status.clone(), ctx).await?;
        tracing::debug!(plan = %name, phase = status.phase.as_str(), "BootPlan status written");
    }
    Ok(if status.phase.is_finished() {
        Action::await_change()
    } else {
        Action::requeue(RECHECK)
    })
}

/// The plan's jobs, each admitted by the farm's rules; the first problem as the status message.
fn expand(plan: &BootPlan, name: &str, ctx: &Context) -> Result<Vec<BootJob>, String> {
    let jobs = crate::api::document::plan_jobs(name, &plan.spec).map_err(|e| e.to_string())?;
    for j in &jobs {
        crate::admission::admit_spec(&j.spec, &ctx.local_artifacts).map_err(|errs| {
            let first = errs.first().map(ToString::to_string).unwrap_or_default();
            format!("plan job {}: {first}", j.name_any())
        })?;
    }
    Ok(jobs)
}

/// Replaces the status at the plan's resourceVersion: a stale write is a conflict, retried.
async fn write_status(
    plan: &BootPlan,
    ns: &str,
    status: PlanSummary,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let api: Api<BootPlan> = Api::namespaced(ctx.client.clone(), ns);
    let mut next = plan.clone();
    next.status = Some(status);
    next.metadata.managed_fields = None;
    api.replace_status(&plan.name_any(), &PostParams::default(), &next)
        .await
        .map_err(ReconcileError::Kube)?;
    Ok(())
}
