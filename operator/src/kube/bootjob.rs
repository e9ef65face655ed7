//! The BootJob reconciler: validate new jobs into the queue (or Error with a `Valid=False`
//! condition), expire leases, delete jobs past their TTL, and clean up on deletion.
//!
//! Queue transitions are the pure functions of [`crate::queue`]; this module only decides
//! which one a job needs now and writes it.

use super::context::{Context, ReconcileError};
use super::store::delete_job_with_uid;
use crate::admission::LocalArtifacts;
use crate::queue;
use bootfarm_core::spec::{BootJob, JobPhase};
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// Keeps a BootJob until its logs are removed (and its runner learns it is gone).
pub const FINALIZER: &str = "bootfarm.dev/cleanup";
/// A cleanup that keeps failing stops blocking the deletion after this long.
pub const FINALIZER_DEADLINE: Duration = Duration::from_secs(60);
/// Re-check of jobs waiting on something else (a runner, a claim).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

#[tracing::instrument(name = "reconcile_bootjob", skip_all, fields(job = %job.name_any()))]
pub async fn reconcile(job: Arc<BootJob>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let result = reconcile_job(job, &ctx).await;
    ReconcileError::observe(&ctx.metrics, "bootjob", started, &result);
    result
}

async fn reconcile_job(job: Arc<BootJob>, ctx: &Context) -> Result<Action, ReconcileError> {
    let ns = job
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(job.name_any()))?;
    let api: Api<BootJob> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(&api, &job, ctx, Timestamp::now()).await,
            Finalizer::Cleanup(job) => cleanup(&job, ctx, Timestamp::now()),
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

pub fn error_policy(job: Arc<BootJob>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        tracing::debug!(job = %job.name_any(), "BootJob changed while reconciling; looking again");
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(job = %job.name_any(), kind = error.kind(), error = %error, "BootJob reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The status a new job gets: Queued when valid, else Error naming every problem.
pub fn admit(job: &BootJob, local: &LocalArtifacts, now: Timestamp) -> BootJob {
    let mut job = job.clone();
    match crate::admission::admit_spec(&job.spec, local) {
        Ok(_) => queue::enqueue(&mut job, now),
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            queue::reject_invalid(&mut job, &message, now);
        }
    }
    job
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    let d = now.duration_until(t);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// An Error for an invalid spec whose spec has changed since: worth judging again.
pub fn rejected_spec_was_edited(job: &BootJob) -> bool {
    let Some(status) = job.status.as_ref() else {
        return false;
    };
    let invalid =
        queue::condition(job, queue::condition::VALID).is_some_and(|c| c.status == "False");
    status.phase == JobPhase::Error
        && invalid
        && job.metadata.generation.is_some()
        && status.observed_generation < job.metadata.generation
}

/// Reason of the Queued condition while the job's pool cannot start runners.
pub const RUNNERS_CANNOT_START: &str = "RunnersCannotStart";

/// The queued job with its Queued condition saying what it waits for: `blocked` is its pool and
/// why that pool cannot start runners. None when the condition already says so (pure).
pub fn queued_reason(
    job: &BootJob,
    blocked: Option<&(String, String)>,
    now: Timestamp,
) -> Option<BootJob> {
    let current = queue::condition(job, queue::condition::QUEUED)?;
    let (reason, message) = match blocked {
        Some((pool, why)) => (
            RUNNERS_CANNOT_START,
            format!("waiting for a runner: pool {pool} cannot start runners ({why})"),
        ),
        None if current.reason == RUNNERS_CANNOT_START => {
            ("Submitted", "waiting for a runner".to_string())
        }
        None => return None,
    };
    if current.reason == reason && current.message == message {
        return None;
    }
    let mut job = job.clone();
    let generation = job.metadata.generation;
    let status = job.status.get_or_insert_with(Default::default);
    queue::set_condition(
        status,
        queue::condition::QUEUED,
        true,
        reason,
        &message,
        generation,
        now,
    );
    Some(job)
}

/// Validates `candidate` (the job as read, or with its status cleared) into Queued or Error,
/// writes that status, and says so in an Event.
async fn admit_and_record(
    api: &Api<BootJob>,
    job: &BootJob,
    candidate: &BootJob,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let name = job.name_any();
    let admitted = admit(candidate, &ctx.local_artifacts, now);
    ctx.store
        .write_job_status(api, &admitted)
        .await
        .map_err(ReconcileError::Status)?;
    let phase = queue::phase(&admitted);
    tracing::info!(job = %name, phase = phase.as_str(), "BootJob admitted");
    if phase == JobPhase::Queued {
        ctx.work.notify_waiters();
        ctx.event(
            job,
            EventType::Normal,
            "Queued",
            "Admit",
            "valid; waiting for a runner".into(),
        )
        .await;
    } else {
        let message = queue::condition(&admitted, queue::condition::VALID)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(job, EventType::Warning, "InvalidSpec", "Admit", message)
            .await;
    }
    Ok(Action::requeue(IDLE_RECHECK))
}

async fn apply(
    api: &Api<BootJob>,
    job: &BootJob,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let name = job.name_any();
    // The watch may lag behind this operator's own last write (the API's submit queues the
    // job itself): act on the newer, with the lease as heartbeats renewed it, or the write
    // would only conflict.
    let resolved = ctx.store.view().resolve(&name, Some(job));
    let job = resolved.as_ref().unwrap_or(job);
    if rejected_spec_was_edited(job) {
        // The user fixed an invalid spec: judge the new one from scratch.
        let mut fresh = job.clone();
        fresh.status = None;
        return admit_and_record(api, job, &fresh, ctx, now).await;
    }
    match queue::phase(job) {
        // Being created and queued by the API right now: its write is due any moment.
        JobPhase::Pending if ctx.store.view().is_reserved(&name) => {
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        JobPhase::Pending => admit_and_record(api, job, job, ctx, now).await,
        JobPhase::Queued => {
            // Say in the Queued condition when the job waits on a pool that cannot start runners.
            let pools = ctx.pool_snapshot();
            let blocked = super::pool::assigned_pool(job, &pools)
                .and_then(|name| {
                    pools
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(name))
                })
                .and_then(|p| Some((p.name_any(), super::pool::cannot_start(p)?.message.clone())));
            if let Some(updated) = queued_reason(job, blocked.as_ref(), now) {
                match ctx.store.write_job_status(api, &updated).await {
                    // Changed meanwhile (claimed, say): the next reconcile looks again.
                    Err(e) if e.code() == Some(409) => {}
                    other => {
                        other.map_err(ReconcileError::Status)?;
                    }
                }
            }
            Ok(Action::requeue(IDLE_RECHECK))
        }
        JobPhase::Running => {
            if ctx.store.lease_expired(job, now) {
                if let Some(expired) = ctx.store.expire_one(&name, now).await? {
                    let note = format!(
                        "runner {} stopped renewing its lease (attempt {}); {}",
                        expired.runner.as_deref().unwrap_or("?"),
                        expired.attempts,
                        if expired.requeued {
                            "retrying"
                        } else {
                            "no attempts left"
                        }
                    );
                    ctx.event(job, EventType::Warning, "LeaseExpired", "Expire", note)
                        .await;
                    let pool = job
                        .status
                        .as_ref()
                        .and_then(|s| s.pool.clone())
                        .unwrap_or_default();
                    ctx.metrics
                        .lease_expirations_total
                        .with_label_values(&[pool.as_str()])
                        .inc();
                    if expired.requeued {
                        ctx.metrics
                            .infra_retries_total
                            .with_label_values(&[pool.as_str()])
                            .inc();
                        ctx.work.notify_waiters();
                    }
                }
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            let expires = ctx.store.lease_deadline(job);
            let wait = expires.map_or(IDLE_RECHECK, |t| until(t, now) + Duration::from_secs(1));
            Ok(Action::requeue(wait.min(IDLE_RECHECK)))
        }
        // Finished: only the TTL is left to act on.
        _ => {
            let Some(ttl) = job.spec.ttl_seconds_after_finished else {
                return Ok(Action::await_change());
            };
            if queue::ttl_expired(job, now) {
                tracing::info!(job = %name, ttl, "TTL after finish passed: deleting");
                delete_job_with_uid(api, &name, job.uid()).await?;
                return Ok(Action::await_change());
            }
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.completion_time)
                .unwrap_or(now);
            let at = done
                .checked_add(Duration::from_secs(ttl))
                .unwrap_or(Timestamp::MAX);
            Ok(Action::requeue(until(at, now).max(Duration::from_secs(1))))
        }
    }
}

/// The job is being deleted: its runner (if any) learns at its next heartbeat that the job is
/// gone and stops the boot; the logs and result go now. A cleanup that keeps failing gives up
/// after [`FINALIZER_DEADLINE`] so the deletion is never blocked for good.
fn cleanup(job: &BootJob, ctx: &Context, now: Timestamp) -> Result<Action, ReconcileError> {
    let name = job.name_any();
    if queue::phase(job) == JobPhase::Running {
        tracing::info!(job = %name, runner = ?job.status.as_ref().and_then(|s| s.runner.as_deref()), "BootJob deleted while running: its boot is canceled");
    }
    if let Err(e) = ctx.files.remove(&name) {
        let since = job
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let age = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
        if age > FINALIZER_DEADLINE {
            tracing::warn!(job = %name, error = %e, "Cleanup kept failing: releasing the BootJob anyway");
            return Ok(Action::await_change());
        }
        return Err(ReconcileError::Cleanup {
            name,
            message: e.to_string(),
        });
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::BootJobSpec;
    use bootfarm_core::Arch;

    #[test]
    fn a_queued_job_says_when_its_pool_cannot_start_runners_and_stops_saying_it_after() {
        let now = Timestamp::from_second(1_800_000_000).expect("in range");
        let mut job = BootJob::new(
            "j",
            BootJobSpec::new(Arch::X86_64, "http://127.0.0.1:1/kernel"),
        );
        queue::enqueue(&mut job, now);
        assert!(queued_reason(&job, None, now).is_none(), "nothing to say");
        let why = (
            "tcg-x86-64".to_string(),
            "runner pod tcg-x86-64-abcde cannot start: ErrImageNeverPull: ...".to_string(),
        );
        let blocked = queued_reason(&job, Some(&why), now).expect("a new reason");
        let c = queue::condition(&blocked, queue::condition::QUEUED).expect("Queued");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", RUNNERS_CANNOT_START)
        );
        assert_eq!(
            c.message,
            "waiting for a runner: pool tcg-x86-64 cannot start runners \
             (runner pod tcg-x86-64-abcde cannot start: ErrImageNeverPull: ...)"
        );
        assert_eq!(queue::phase(&blocked), JobPhase::Queued);
        assert!(
            queued_reason(&blocked, Some(&why), now).is_none(),
            "said once"
        );
        let recovered = queued_reason(&blocked, None, now).expect("back to waiting");
        let c = queue::condition(&recovered, queue::condition::QUEUED).expect("Queued");
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("Submitted", "waiting for a runner")
        );
    }
}
