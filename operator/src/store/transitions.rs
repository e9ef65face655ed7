//! Every state change of a job, once for both stores: load the job, apply the pure transition
//! of [`crate::queue`], write it back only if nobody wrote it since (compare and swap), and look
//! again on a conflict. A store provides the few primitives of [`Backend`]; the decisions, the
//! lease checks, the name check, the claim filter and the finished-job metrics are all here.

use super::{Claim, ClaimRequest, CompleteOutcome, Expired, LeaseState, StoreError};
use crate::metrics::Metrics;
use crate::queue;
use async_trait::async_trait;
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, BootJobStatus, JobPhase};
use jiff::Timestamp;
use std::time::Duration;

/// What a compare-and-swap did.
#[derive(Debug)]
pub enum Swap {
    /// Written; the job as stored now (its new version).
    Written(Box<BootJob>),
    /// Someone wrote the job since it was loaded: load it again.
    Conflict,
    /// The job is gone.
    Gone,
}

/// The storage under the queue.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The job as the store knows it (with its version), if any; may lag the storage (a watch
    /// cache): the compare and swap catches that.
    async fn load(&self, name: &str) -> Result<Option<BootJob>, StoreError>;
    /// The job as stored now: read after a conflict, when the known version was stale.
    async fn load_fresh(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        self.load(name).await
    }
    /// Writes `job` (status included) only if the stored job still has `job`'s version.
    async fn compare_and_swap(&self, job: &BootJob) -> Result<Swap, StoreError>;
    /// Queued jobs in claim order that may suit `req` (a store may narrow with an index;
    /// [`claimable_by`] decides), at most `limit`.
    async fn claim_candidates(
        &self,
        req: &ClaimRequest,
        limit: usize,
    ) -> Result<Vec<BootJob>, StoreError>;
    /// Running jobs (lease expiry looks at them).
    async fn running(&self) -> Result<Vec<BootJob>, StoreError>;
    /// Where finished jobs are counted.
    fn metrics(&self) -> &Metrics;
    /// Where finished jobs are announced for their callbacks.
    fn callbacks(&self) -> &crate::callbacks::Callbacks;
}

/// Re-reads after a conflict before a transition gives up.
const CONFLICT_RETRIES: usize = 5;
/// How often one claim looks for candidates again when others took all it saw.
const CLAIM_ROUNDS: usize = 32;
/// Candidates one claim tries per look.
pub const CLAIM_CANDIDATES: usize = 8;

/// Whether `req`'s runner may take `job` now: the one claim filter of both stores.
pub fn claimable_by(job: &BootJob, req: &ClaimRequest) -> bool {
    queue::phase(job) == JobPhase::Queued
        && job.metadata.deletion_timestamp.is_none()
        && req.serves(job)
}

/// Load → `f` → compare and swap, retried on conflict. `f` returns `None` to write nothing
/// (the answer is then `Ok(None)`). A job that became finished by this write is counted.
pub async fn transition<B, T>(
    b: &B,
    name: &str,
    mut f: impl FnMut(&mut BootJob) -> Option<T> + Send,
) -> Result<Option<(T, BootJob)>, StoreError>
where
    B: Backend + ?Sized,
    T: Send,
{
    // A name that cannot exist is not looked up (nor turned into a path anywhere).
    if !bootfarm_core::names::is_dns_subdomain(name) {
        return Ok(None);
    }
    for round in 0..CONFLICT_RETRIES {
        let loaded = if round == 0 {
            b.load(name).await?
        } else {
            b.load_fresh(name).await?
        };
        let Some(mut job) = loaded else {
            return Ok(None);
        };
        let before = queue::phase(&job);
        let Some(out) = f(&mut job) else {
            return Ok(None);
        };
        match b.compare_and_swap(&job).await? {
            Swap::Written(stored) => {
                if !before.is_finished() && queue::phase(&stored).is_finished() {
                    b.metrics().job_finished(&stored, Timestamp::now());
                    b.callbacks().finished(&stored);
                }
                return Ok(Some((out, *stored)));
            }
            Swap::Conflict => continue,
            Swap::Gone => return Ok(None),
        }
    }
    Err(StoreError::Conflict(format!(
        "bootjob {name:?} kept changing under {CONFLICT_RETRIES} attempts"
    )))
}

/// A claim that was written, and the job's status before it (to put it back untouched when
/// the runner turns out to be going away).
#[derive(Debug)]
pub struct ClaimWon {
    pub claim: Claim,
    pub before: Option<BootJobStatus>,
}

/// Hands `req`'s runner the best job it may take, Running under a new lease.
pub async fn claim<B: Backend + ?Sized>(
    b: &B,
    req: &ClaimRequest,
    lease_ttl: Duration,
    now: Timestamp,
) -> Result<Option<ClaimWon>, StoreError> {
    // Every conflict means another claim or a cancel made progress, so looking again ends; the
    // bound only keeps one request from spinning under a storm of them (the runner asks again).
    for _ in 0..CLAIM_ROUNDS {
        let mut candidates: Vec<BootJob> = b
            .claim_candidates(req, CLAIM_CANDIDATES)
            .await?
            .into_iter()
            .filter(|j| claimable_by(j, req))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        candidates.sort_by_key(queue::claim_order);
        for mut job in candidates.into_iter().take(CLAIM_CANDIDATES) {
            let before = job.status.clone();
            let lease_id = uuid::Uuid::new_v4().to_string();
            let expires_at = queue::start_attempt(
                &mut job,
                &req.runner_id,
                &req.pool,
                &lease_id,
                lease_ttl,
                now,
            );
            match b.compare_and_swap(&job).await? {
                Swap::Written(stored) => {
                    return Ok(Some(ClaimWon {
                        claim: Claim::new(*stored, lease_id, expires_at),
                        before,
                    }))
                }
                // Another claim, a cancel or a delete got there first: the next one.
                Swap::Conflict | Swap::Gone => continue,
            }
        }
    }
    Ok(None)
}

/// Extends a current lease, or says why the runner must stop (a deleted job is canceled).
pub async fn heartbeat<B: Backend + ?Sized>(
    b: &B,
    name: &str,
    lease_id: &str,
    lease_ttl: Duration,
    now: Timestamp,
) -> Result<(LeaseState, Option<BootJob>), StoreError> {
    let mut answer = None;
    let written = transition(b, name, |job| {
        let state = queue::heartbeat(job, lease_id, lease_ttl, now);
        answer = Some(state);
        matches!(state, LeaseState::Active { .. }).then_some(state)
    })
    .await?;
    Ok(match written {
        Some((state, job)) => (state, Some(job)),
        None => (answer.unwrap_or(LeaseState::Canceled), None),
    })
}

/// Records the verdict of the current lease exactly once; the runner of the attempt is returned
/// with the outcome.
pub async fn complete<B: Backend + ?Sized>(
    b: &B,
    name: &str,
    lease_id: &str,
    result: &BootResult,
    now: Timestamp,
) -> Result<(CompleteOutcome, Option<String>), StoreError> {
    let mut runner = None;
    let written = transition(b, name, |job| {
        if !queue::lease_is_current(job, lease_id) {
            return None;
        }
        runner = job.status.as_ref().and_then(|s| s.runner.clone());
        Some(queue::record_result(job, result, now))
    })
    .await?;
    Ok(match written {
        Some((queue::Recorded::Finished, job)) => (CompleteOutcome::Finished(job), runner),
        Some((queue::Recorded::Retrying, job)) => (CompleteOutcome::Retrying(job), runner),
        None => (CompleteOutcome::Stale, None),
    })
}

/// The runner gives the job back; returns the runner when something changed.
pub async fn release<B: Backend + ?Sized>(
    b: &B,
    name: &str,
    lease_id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Option<String>, StoreError> {
    let mut runner = None;
    let written = transition(b, name, |job| {
        if !queue::lease_is_current(job, lease_id) {
            return None;
        }
        runner = job.status.as_ref().and_then(|s| s.runner.clone());
        Some(queue::release(job, reason, now))
    })
    .await?;
    Ok(written.and(runner))
}

/// Queued or Running → Canceled; a finished job is returned unchanged, a missing one is `None`.
pub async fn cancel<B: Backend + ?Sized>(
    b: &B,
    name: &str,
    now: Timestamp,
) -> Result<Option<BootJob>, StoreError> {
    match transition(b, name, |job| queue::cancel(job, now).then_some(())).await? {
        Some(((), job)) => Ok(Some(job)),
        None if bootfarm_core::names::is_dns_subdomain(name) => b.load(name).await,
        None => Ok(None),
    }
}

/// Ends one stale attempt (lease ran out, or past its total timeout), re-checked on a fresh read.
pub async fn expire_one<B: Backend + ?Sized>(
    b: &B,
    name: &str,
    now: Timestamp,
) -> Result<Option<Expired>, StoreError> {
    let mut runner = None;
    let written = transition(b, name, |job| {
        let was = job.status.as_ref().and_then(|s| s.runner.clone());
        let ended = queue::end_stale_attempt(job, now)?;
        runner = was;
        Some(ended)
    })
    .await?;
    Ok(written.map(|(requeued, job)| Expired {
        name: name.to_string(),
        runner,
        attempts: job.status.as_ref().map(|s| s.attempts).unwrap_or(0),
        requeued,
    }))
}

/// Every Running job whose attempt is stale is requeued or ends in Error.
pub async fn expire_leases<B: Backend + ?Sized>(
    b: &B,
    now: Timestamp,
) -> Result<Vec<Expired>, StoreError> {
    let mut out = Vec::new();
    for job in b.running().await? {
        if !queue::lease_expired(&job, now) && !queue::overdue(&job, now) {
            continue;
        }
        let name = job.metadata.name.clone().unwrap_or_default();
        if let Some(e) = expire_one(b, &name, now).await? {
            out.push(e);
        }
    }
    Ok(out)
}
