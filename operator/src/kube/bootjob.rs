//! The BootJob reconciler: validate new jobs into the queue (or Error with a `Valid=False`
//! condition), expire leases, delete jobs past their TTL, and clean up on deletion.
//!
//! Queue transitions are the pure functions of [`crate::queue`]; this module only decides
//! which one a job needs now and writes it.

use super::context::{Context, Error};
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

pub async fn reconcile(job: Arc<BootJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = job
        .namespace()
        .ok_or_else(|| Error::NoNamespace(job.name_any()))?;
    let api: Api<BootJob> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(&api, &job, &ctx, Timestamp::now()).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx, Timestamp::now()),
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(job: Arc<BootJob>, error: &Error, _ctx: Arc<Context>) -> Action {
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

/// Validates `candidate` (the job as read, or with its status cleared) into Queued or Error,
/// writes that status, and says so in an Event.
async fn admit_and_record(
    api: &Api<BootJob>,
    job: &BootJob,
    candidate: &BootJob,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let name = job.name_any();
    let admitted = admit(candidate, &ctx.local_artifacts, now);
    ctx.store
        .writer()
        .write(api, &admitted)
        .await
        .map_err(Error::Status)?;
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
) -> Result<Action, Error> {
    let name = job.name_any();
    if rejected_spec_was_edited(job) {
        // The user fixed an invalid spec: judge the new one from scratch.
        let mut fresh = job.clone();
        fresh.status = None;
        return admit_and_record(api, job, &fresh, ctx, now).await;
    }
    match queue::phase(job) {
        JobPhase::Pending => admit_and_record(api, job, job, ctx, now).await,
        JobPhase::Queued => Ok(Action::requeue(IDLE_RECHECK)),
        JobPhase::Running => {
            if queue::lease_expired(job, now) {
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
            let expires = job
                .status
                .as_ref()
                .and_then(|s| s.lease_expires_at.as_deref())
                .and_then(queue::parse_time);
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
                .and_then(|s| s.completion_time.as_deref())
                .and_then(queue::parse_time)
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
fn cleanup(job: &BootJob, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
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
        return Err(Error::Cleanup {
            name,
            message: e.to_string(),
        });
    }
    Ok(Action::await_change())
}
