//! Local runner processes as one runner pool, `local`, sized by [`crate::scaler::decide`].
//!
//! Each runner is `bootfarm-runner work` in its own process group, with `PR_SET_PDEATHSIG`
//! so it dies with the operator (even on `kill -9`), and its QEMU dies with it (the runner sets
//! the same on QEMU). The supervisor sees a runner as busy while a Running job names it, idle
//! otherwise; stopping one is SIGTERM (the runner aborts any boot and releases its lease), then
//! SIGKILL to its group after a grace period. A runner that exits by itself with an error is a
//! failed runner: its job is released at once (an infrastructure retry) and its slot is free.
//! A runner whose lease expired is hung (alive but silent): it is killed and replaced, since it
//! would otherwise look idle forever while work waits.

use crate::api::AppState;
use crate::scaler::{self, DeleteReason, PoolInput, Runner, RunnerState};
use crate::store::sqlite::SqliteStore;
use bootfarm_core::spec::RunnerPoolSpec;
use jiff::Timestamp;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The implicit pool of standalone mode: serves every arch.
pub const LOCAL_POOL: &str = "local";

/// How often the pool is re-sized (also on every submission).
const TICK: Duration = Duration::from_millis(500);
/// SIGTERM → SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A local process that has not even spawned in this time is broken.
const STARTUP_TIMEOUT_SECONDS: u64 = 60;
/// A runner that dies sooner than this after its start is crash-looping (a wrong binary, a
/// bad token): new starts back off, doubling up to `MAX_BACKOFF`, so capacity comes back as
/// soon as it can without a fork storm.
const QUICK_DEATH: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub runner_bin: PathBuf,
    pub server_url: String,
    /// The runner token, passed in each runner's environment.
    pub token: Option<String>,
    pub log_dir: PathBuf,
    pub max_runners: u32,
    pub idle_timeout: Duration,
    /// The farm's artifact rules for `bootfarm-runner work` (its environment variables).
    pub runner_env: Vec<(String, String)>,
    /// The unprivileged user runners run as, and their cache (an operator started as root).
    pub identity: Option<super::RunnerIdentity>,
}

struct Child {
    proc: tokio::process::Child,
    pid: i32,
    created_at: Timestamp,
    /// Spawn time, or the last time it was seen busy.
    idle_since: Timestamp,
    /// When it was asked to stop.
    stopping: Option<Instant>,
}

pub struct LocalPool {
    cfg: Config,
    store: Arc<SqliteStore>,
    policy: RunnerPoolSpec,
    children: BTreeMap<String, Child>,
    /// Distinguishes this operator's runners from a previous run's in job status.
    id_prefix: String,
    seq: u64,
    /// Runners in a row that died (or failed to start) right after starting.
    crash_streak: u32,
    /// No new runner before this (crash-loop backoff).
    hold_until: Option<Instant>,
}

impl LocalPool {
    pub fn new(cfg: Config, store: Arc<SqliteStore>) -> Self {
        let policy = RunnerPoolSpec {
            arches: Vec::new(),
            min_idle: 0,
            max_runners: cfg.max_runners,
            idle_timeout_seconds: cfg.idle_timeout.as_secs(),
            startup_timeout_seconds: STARTUP_TIMEOUT_SECONDS,
            scale_up_burst: cfg.max_runners.max(1),
            kvm: false,
            template: Default::default(),
        };
        let id_prefix = uuid::Uuid::new_v4().simple().to_string()[..4].to_string();
        LocalPool {
            cfg,
            store,
            policy,
            children: BTreeMap::new(),
            id_prefix,
            seq: 0,
            crash_streak: 0,
            hold_until: None,
        }
    }

    /// Sizes the pool until `shutdown`, then stops every runner.
    pub async fn run(mut self, state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cfg.log_dir)?;
        // Every series from the first scrape (this farm serves every arch), so that no early
        // observation is lost to rate() on a series born with it.
        state.metrics.pool_seen(LOCAL_POOL);
        for arch in bootfarm_core::arch::Arch::ALL {
            state.metrics.arch_seen(arch);
        }
        let work = state.work.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(TICK) => {}
                _ = work.notified() => {}
            }
            self.tick(&state).await;
        }
        self.stop_all().await;
        Ok(())
    }

    async fn tick(&mut self, state: &AppState) {
        let now = Timestamp::now();
        let hung = self.expire_leases(state, now).await;
        let (mut failed, gone) = self.reap();
        for id in hung {
            // Frozen or wedged, not dead: stop it for good (its QEMU dies with it) so it
            // neither holds a slot nor looks idle while work waits.
            if let Some(child) = self.children.get_mut(&id) {
                tracing::warn!(runner = %id, "Runner lost its lease; killing it");
                signal_group(child.pid, Signal::SIGKILL);
                child.stopping.get_or_insert_with(Instant::now);
                failed.insert(id);
            }
        }
        let counts = match state.store.counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Counting jobs failed; pool left as is");
                return;
            }
        };
        if counts
            .queued
            .iter()
            .any(|q| q.pool.as_deref().is_some_and(|p| p != LOCAL_POOL))
        {
            match self.store.reject_other_pools(LOCAL_POOL, now).await {
                Ok(names) => {
                    for name in names {
                        tracing::warn!(job = %name, "Job names a pool this farm does not have: Error");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Rejecting jobs for other pools failed"),
            }
        }
        let busy: BTreeMap<&str, &str> = counts
            .running
            .iter()
            .map(|(job, runner)| (runner.as_str(), job.as_str()))
            .collect();

        // A gone runner's job is requeued now: it cannot post any more, so its lease is moot.
        // Besides crashes this covers a runner stopped while idle that had just been handed a
        // job (the claim answer died with it), which would otherwise wait out the lease.
        for id in &gone {
            if let Some(job) = busy.get(id.as_str()) {
                release_gone_runners_job(state, job, id, now).await;
            }
        }

        let mut runners: Vec<Runner> = failed
            .iter()
            .map(|id| Runner {
                id: id.clone(),
                state: RunnerState::Failed,
                created_at: now,
            })
            .collect();
        for (id, child) in &mut self.children {
            if failed.contains(id) {
                continue;
            }
            let state = if child.stopping.is_some() {
                RunnerState::Terminating
            } else if busy.contains_key(id.as_str()) {
                child.idle_since = now;
                self.crash_streak = 0;
                RunnerState::Busy
            } else {
                RunnerState::Idle {
                    since: child.idle_since,
                }
            };
            runners.push(Runner {
                id: id.clone(),
                state,
                created_at: child.created_at,
            });
        }
        let policies = [(LOCAL_POOL, &self.policy)];
        let queued_by_pool = scaler::queued_by_pool(&counts.queued, &policies);
        let queued = queued_by_pool
            .get(&Some(LOCAL_POOL.to_string()))
            .copied()
            .unwrap_or(0);
        let decision = scaler::decide(
            &PoolInput {
                name: LOCAL_POOL,
                policy: &self.policy,
                queued,
                runners: &runners,
            },
            now,
        );
        record_metrics(state, &runners, &decision, &counts.queued);
        state.pools.record(&crate::pools::Observation {
            pool: LOCAL_POOL,
            policy: &self.policy,
            runners: &runners,
            queued_by_arch: scaler::queued_by_arch(&counts.queued, LOCAL_POOL, &policies),
            decision: &decision,
            now,
        });

        for (id, reason) in &decision.delete {
            if *reason == DeleteReason::Failed {
                continue; // already gone
            }
            if let Some(child) = self.children.get_mut(id) {
                tracing::info!(runner = %id, reason = reason.as_str(), "Stopping runner");
                signal_group(child.pid, Signal::SIGTERM);
                child.stopping = Some(Instant::now());
            }
        }
        for child in self.children.values() {
            if child.stopping.is_some_and(|t| t.elapsed() >= STOP_GRACE) {
                signal_group(child.pid, Signal::SIGKILL);
            }
        }
        let held = self.hold_until.is_some_and(|t| Instant::now() < t);
        for _ in 0..if held { 0 } else { decision.create } {
            if let Err(e) = self.spawn(now) {
                tracing::error!(error = %e, bin = %self.cfg.runner_bin.display(), "Starting a runner failed");
                self.crashed();
                break;
            }
        }
    }

    /// Requeues jobs whose lease ran out; returns the runners that held them.
    async fn expire_leases(&mut self, state: &AppState, now: Timestamp) -> BTreeSet<String> {
        let expired = match state.store.expire_leases(now).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "Expiring leases failed");
                return BTreeSet::new();
            }
        };
        let mut runners = BTreeSet::new();
        let mut requeued = false;
        for e in expired {
            tracing::warn!(job = %e.name, runner = ?e.runner, attempts = e.attempts, requeued = e.requeued, "Lease expired");
            state
                .metrics
                .lease_expirations_total
                .with_label_values(&[LOCAL_POOL])
                .inc();
            if e.requeued {
                requeued = true;
                state
                    .metrics
                    .infra_retries_total
                    .with_label_values(&[LOCAL_POOL])
                    .inc();
            }
            runners.extend(e.runner);
        }
        if requeued {
            state.work_available();
        }
        runners
    }

    /// Collects exited runners; returns those that died without being asked to, and all that
    /// exited.
    fn reap(&mut self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut exited: Vec<(String, Option<ExitStatus>)> = Vec::new();
        for (id, child) in &mut self.children {
            match child.proc.try_wait() {
                Ok(Some(status)) => exited.push((id.clone(), Some(status))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(runner = %id, error = %e, "Cannot wait for runner");
                    exited.push((id.clone(), None));
                }
            }
        }
        let mut failed = BTreeSet::new();
        let gone: BTreeSet<String> = exited.iter().map(|(id, _)| id.clone()).collect();
        for (id, status) in exited {
            let Some(child) = self.children.remove(&id) else {
                continue;
            };
            // Anything left in its group (a helper it started) goes with it.
            signal_group(child.pid, Signal::SIGKILL);
            let clean = status.is_some_and(|s| s.success());
            if child.stopping.is_some() || clean {
                tracing::info!(runner = %id, status = ?status, "Runner exited");
            } else {
                tracing::warn!(runner = %id, status = ?status, log = %self.cfg.log_dir.join(format!("{id}.log")).display(), "Runner died");
                let lived = Timestamp::now().duration_since(child.created_at);
                if lived < jiff::SignedDuration::try_from(QUICK_DEATH).unwrap_or_default() {
                    self.crashed();
                }
                failed.insert(id);
            }
        }
        (failed, gone)
    }

    /// One more quick death: hold new starts for a doubling delay.
    fn crashed(&mut self) {
        self.crash_streak = self.crash_streak.saturating_add(1);
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << self.crash_streak.min(16).saturating_sub(1))
            .min(MAX_BACKOFF);
        tracing::warn!(
            streak = self.crash_streak,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "Runners die at start; backing off"
        );
        self.hold_until = Some(Instant::now() + delay);
    }

    #[allow(unsafe_code)]
    fn spawn(&mut self, now: Timestamp) -> std::io::Result<()> {
        self.seq += 1;
        let id = format!("local-{}-{}", self.id_prefix, self.seq);
        let log_path = self.cfg.log_dir.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = tokio::process::Command::new(&self.cfg.runner_bin);
        cmd.arg("work")
            .args(["--server", &self.cfg.server_url])
            .args(["--pool", LOCAL_POOL])
            .args(["--runner-id", &id])
            // A safety net only: the supervisor stops idle runners itself, well before this.
            .args([
                "--idle-exit",
                &(self.cfg.idle_timeout.as_secs() * 2 + 60).to_string(),
            ]);
        cmd.env_remove("BOOTFARM_TOKEN_FILE")
            .env_remove("BOOTFARM_TOKEN");
        if let Some(token) = &self.cfg.token {
            cmd.env("BOOTFARM_TOKEN", token);
        }
        // RFC 3339; the runner reports it on its first claim for the start-up histogram.
        cmd.env("BOOTFARM_RUNNER_CREATED_AT", now.to_string());
        for var in [
            "BOOTFARM_ALLOW_LOCAL_ARTIFACTS",
            "BOOTFARM_ALLOW_ARTIFACT_NET",
            "BOOTFARM_DENY_ARTIFACT_NET",
        ] {
            // Only the operator's own flags decide what its runners may fetch.
            cmd.env_remove(var);
        }
        cmd.envs(self.cfg.runner_env.iter().map(|(k, v)| (k, v)));
        let ids = self.cfg.identity.as_ref().map(|i| {
            // Its cache and work directory are the only places it may write.
            cmd.env("BOOTFARM_CACHE", &i.cache)
                .env("TMPDIR", i.cache.join("tmp"))
                .env("HOME", &i.cache)
                .current_dir(&i.cache);
            let mut groups = [0 as libc::gid_t; 4];
            let n = i.user.groups.len().min(groups.len());
            groups[..n].copy_from_slice(&i.user.groups[..n]);
            (i.user.uid, i.user.gid, groups, n)
        });
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let parent = nix::unistd::getpid().as_raw();
        // SAFETY: runs in the forked child before exec and calls only async-signal-safe
        // functions (setgroups, setgid, setuid, prctl, getppid, raise), allocating nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some((uid, gid, groups, n)) = ids {
                    // Groups and gid first, while still root; uid last. The kernel clears the
                    // parent-death signal on a credential change, so it is set after.
                    if libc::setgroups(n, groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The operator may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
        let proc = cmd.spawn()?;
        let pid = proc
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| std::io::Error::other("runner exited before its pid was known"))?;
        tracing::info!(runner = %id, pid, log = %log_path.display(), "Started runner");
        self.children.insert(
            id,
            Child {
                proc,
                pid,
                created_at: now,
                idle_since: now,
                stopping: None,
            },
        );
        Ok(())
    }

    /// SIGTERM to all (each releases its lease), then SIGKILL after the grace period.
    async fn stop_all(&mut self) {
        if self.children.is_empty() {
            return;
        }
        tracing::info!(runners = self.children.len(), "Stopping all runners");
        for child in self.children.values_mut() {
            signal_group(child.pid, Signal::SIGTERM);
            child.stopping.get_or_insert_with(Instant::now);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            self.children
                .retain(|_, c| matches!(c.proc.try_wait(), Ok(None)));
            if self.children.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (id, child) in &mut self.children {
            tracing::warn!(runner = %id, "Runner ignored SIGTERM; killing it");
            signal_group(child.pid, Signal::SIGKILL);
            let _ = child.proc.wait().await;
        }
        self.children.clear();
    }
}

fn signal_group(pid: i32, signal: Signal) {
    // ESRCH (already gone) is the common, harmless case.
    let _ = killpg(Pid::from_raw(pid), signal);
}

async fn release_gone_runners_job(state: &AppState, job: &str, runner: &str, now: Timestamp) {
    let lease = match state.store.get(job).await {
        Ok(Some(j)) => j.status.and_then(|s| s.lease_id),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(job, error = %e, "Reading a gone runner's job failed; its lease will expire");
            None
        }
    };
    let Some(lease) = lease else {
        return;
    };
    let reason = format!("runner {runner} exited while holding the job");
    match state.store.release(job, &lease, &reason, now).await {
        Ok(()) => {
            tracing::warn!(job, runner, "Released the job of a runner that exited");
            state
                .metrics
                .infra_retries_total
                .with_label_values(&[LOCAL_POOL])
                .inc();
            state.work_available();
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "Releasing a gone runner's job failed; its lease will expire")
        }
    }
}

fn record_metrics(
    state: &AppState,
    runners: &[Runner],
    decision: &scaler::PoolDecision,
    queued: &[crate::store::QueuedCount],
) {
    let m = &state.metrics;
    let mut by_state: BTreeMap<&str, u32> = crate::metrics::RUNNER_STATES
        .into_iter()
        .map(|state| (state, 0))
        .collect();
    for r in runners {
        *by_state.entry(r.state.label()).or_default() += 1;
    }
    for (s, n) in by_state {
        m.runners
            .with_label_values(&[LOCAL_POOL, s])
            .set(f64::from(n));
    }
    m.runners_desired
        .with_label_values(&[LOCAL_POOL])
        .set(f64::from(decision.desired));
    if decision.create > 0 {
        m.scale_decisions_total
            .with_label_values(&[LOCAL_POOL, "up"])
            .inc();
    }
    if decision
        .delete
        .iter()
        .any(|(_, why)| *why != DeleteReason::Failed)
    {
        m.scale_decisions_total
            .with_label_values(&[LOCAL_POOL, "down"])
            .inc();
    }
    // Every arch's depth is written (0 when none is queued), so an emptied queue reads 0, not
    // "no data", on the dashboard and in the alerts.
    for arch in bootfarm_core::arch::Arch::ALL {
        let n: u64 = queued
            .iter()
            .filter(|q| q.arch == arch)
            .map(|q| q.count)
            .sum();
        m.queue_depth
            .with_label_values(&[LOCAL_POOL, arch.as_str()])
            .set(n as f64);
    }
}
