//! The job store: the queue of BootJobs, the same contract in both modes.
//!
//! The HTTP API, the housekeeping loop and the scalers talk to a `dyn JobStore`; standalone mode
//! backs it with SQLite ([`sqlite::SqliteStore`]), Kubernetes mode with BootJob objects. Every
//! state change is one of the pure transitions in [`crate::queue`], so both stores move jobs
//! through the same phases with the same conditions. Logs and result documents are not in the
//! store: they live in files ([`crate::files::JobFiles`]) in both modes.
//!
//! Time is always passed in (`now`), so tests and both backends agree on it.

pub mod sqlite;
pub mod transitions;

use async_trait::async_trait;
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase};
use bootfarm_core::Arch;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `metadata.name` is taken (HTTP 409).
    #[error("bootjob {0:?} already exists")]
    AlreadyExists(String),
    /// The document cannot be stored as given (no name and no generateName, bad label...): HTTP 422.
    #[error("invalid bootjob: {0}")]
    Invalid(String),
    /// A concurrent writer won (Kubernetes resourceVersion precondition); the caller may retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database or API server failed (HTTP 500/503).
    #[error("store backend: {0}")]
    Backend(String),
    /// The database cannot be written (disk full, I/O error, file gone): HTTP 503. Reads and
    /// decisions already taken in memory go on; writes resume when it can write again.
    #[error("store cannot write: {0}")]
    Storage(String),
}

/// What `list` returns: all conditions must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub phase: Option<JobPhase>,
    /// Equality label selector (`k=v,k2=v2`), parsed with [`JobFilter::parse_selector`].
    pub labels: Vec<(String, String)>,
    /// At most this many, newest first; `None` for all.
    pub limit: Option<usize>,
}

impl JobFilter {
    /// Parses `k=v[,k=v]` (also `k==v`); an empty string selects everything.
    pub fn parse_selector(selector: &str) -> Result<Vec<(String, String)>, String> {
        selector
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(|term| {
                let (k, v) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| format!("label selector term {term:?} is not key=value"))?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() {
                    return Err(format!("label selector term {term:?} has an empty key"));
                }
                Ok((k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// Whether `job` passes this filter (phase and labels; `limit` is applied by the store).
    pub fn matches(&self, job: &BootJob) -> bool {
        if let Some(phase) = self.phase {
            if crate::queue::phase(job) != phase {
                return false;
            }
        }
        let labels = job.metadata.labels.as_ref();
        self.labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// A runner asking for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub runner_id: String,
    /// The runner's pool: it gets jobs whose `spec.pool` is this pool or unset.
    pub pool: String,
    /// Arches the runner can boot; empty means any.
    pub arches: Vec<Arch>,
}

impl ClaimRequest {
    /// Whether this runner may take `job` (pool and arch; the phase is the store's business).
    pub fn serves(&self, job: &BootJob) -> bool {
        let pool_ok = job.spec.pool.as_deref().is_none_or(|p| p == self.pool);
        pool_ok && (self.arches.is_empty() || self.arches.contains(&job.spec.arch))
    }
}

/// A job handed to a runner: it is Running under this lease until the lease expires.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: BootJob,
    pub lease_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub expires_at: Timestamp,
}

impl Claim {
    /// A claim of `job` as stored after [`crate::queue::start_attempt`]; the attempt number is
    /// the one that call recorded.
    pub fn new(job: BootJob, lease_id: String, expires_at: Timestamp) -> Self {
        let attempt = job.status.as_ref().map(|s| s.attempts).unwrap_or(1);
        Claim {
            job,
            lease_id,
            attempt,
            expires_at,
        }
    }
}

/// Whether a job of this name can exist: a DNS subdomain, as Kubernetes requires for object
/// names (also safe as a directory name). Both stores ask this before anything else, so a name
/// the API server would refuse is refused (or simply not found) alike in both modes.
pub fn valid_name(name: &str) -> bool {
    bootfarm_core::names::is_dns_subdomain(name)
}

/// The answer to a heartbeat (decided by the pure transitions).
pub use crate::queue::LeaseState;

/// The answer to `complete`.
#[derive(Debug, Clone)]
pub enum CompleteOutcome {
    /// The job ended (Succeeded, Failed or Error): store the result document now.
    Finished(BootJob),
    /// The verdict was `error` (infrastructure) and attempts remain: the job is Queued again.
    Retrying(BootJob),
    /// The lease was not current (expired, canceled, already completed): nothing changed.
    Stale,
}

/// A lease that ran out (`expire_leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub name: String,
    pub runner: Option<String>,
    pub attempts: u32,
    /// Queued again (`true`) or ended in Error after `maxAttempts` (`false`).
    pub requeued: bool,
}

/// Queued jobs grouped by what decides their pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCount {
    pub pool: Option<String>,
    pub arch: Arch,
    pub count: u64,
}

/// Counts for scaling and metrics, cheap to ask every second even with 10,000 queued jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub by_phase: BTreeMap<JobPhase, u64>,
    pub queued: Vec<QueuedCount>,
    /// Running job name → the runner holding its lease.
    pub running: BTreeMap<String, String>,
}

/// The queue. Object-safe: use it as `Arc<dyn JobStore>`.
///
/// Atomicity: `claim`, `heartbeat`, `complete`, `release`, `cancel` and `expire_leases` are each
/// one atomic read-modify-write (a transaction in SQLite, a resourceVersion precondition in
/// Kubernetes), so a job is never handed out twice and never finished twice.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job (validated by the caller) as Queued: assigns the name (from
    /// `generateName` when `name` is empty), uid, creationTimestamp, resourceVersion and
    /// generation, and sets status via [`crate::queue::enqueue`]. Returns the stored object.
    async fn create(&self, job: BootJob, now: Timestamp) -> Result<BootJob, StoreError>;

    async fn get(&self, name: &str) -> Result<Option<BootJob>, StoreError>;

    /// Jobs passing `filter`, newest first.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<BootJob>, StoreError>;

    /// Queued or Running → Canceled (a running job's runner learns it at its next heartbeat);
    /// a finished job is returned unchanged. `None` when there is no such job.
    async fn cancel(&self, name: &str, now: Timestamp) -> Result<Option<BootJob>, StoreError>;

    /// Removes the job record (TTL cleanup); the caller removes its files. `false` if absent.
    async fn delete(&self, name: &str) -> Result<bool, StoreError>;

    /// Atomically hands the runner the highest-priority, oldest queued job it serves
    /// ([`crate::queue::claim_order`]), Running under a new lease of `lease_ttl`; attempts + 1.
    async fn claim(
        &self,
        req: &ClaimRequest,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Claim>, StoreError>;

    /// Extends a current lease by `lease_ttl`, or says why the runner must stop.
    async fn heartbeat(
        &self,
        name: &str,
        lease_id: &str,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseState, StoreError>;

    /// Records the runner's verdict exactly once ([`crate::queue::record_result`]): pass →
    /// Succeeded, fail → Failed, error → Queued again or Error after maxAttempts. A lease that
    /// is not current gets `Stale` and changes nothing.
    async fn complete(
        &self,
        name: &str,
        lease_id: &str,
        result: &BootResult,
        now: Timestamp,
    ) -> Result<CompleteOutcome, StoreError>;

    /// The runner gives the job back without a verdict (it is shutting down, or its own
    /// infrastructure failed): Queued again, or Error after maxAttempts. A stale lease is a no-op.
    async fn release(
        &self,
        name: &str,
        lease_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Every Running job whose lease ended before `now` is requeued (the attempt stays counted)
    /// or ends in Error after maxAttempts ([`crate::queue::expire`]).
    async fn expire_leases(&self, now: Timestamp) -> Result<Vec<Expired>, StoreError>;

    /// Names of finished jobs whose `ttlSecondsAfterFinished` has passed at `now`.
    async fn finished_before(&self, now: Timestamp) -> Result<Vec<String>, StoreError>;

    /// Jobs by phase, queued jobs by (pool, arch), running jobs by runner.
    async fn counts(&self) -> Result<JobCounts, StoreError>;

    /// Whether the store can keep what it is given (for `/readyz`); the error says why not.
    async fn ready(&self) -> Result<(), StoreError> {
        // A lookup of a name that cannot exist proves the store answers, whatever it holds.
        self.get("readyz.probe.invalid-").await.map(drop)
    }
}
