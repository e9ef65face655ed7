//! `bootfarm-runner work --server URL`: the farm's worker loop.
//!
//! Long-poll the operator for a job → turn its spec into a `BootRequest` → boot it while
//! heartbeating the lease (a `canceled` or `lost` answer stops the boot) and shipping the console
//! → post the result (retried with backoff on network errors) → next. Exits 0 after
//! `--idle-exit` seconds without work (so a scaler can let runners go gracefully), and on
//! SIGTERM/SIGINT aborts the boot and releases the lease as an infrastructure failure, so the job
//! is retried elsewhere instead of waiting for the lease to expire.

pub mod client;
pub mod convert;
mod shipper;

pub use shipper::BATCH_WINDOW;

use crate::artifacts::FetchPolicy;
use crate::boot::{default_cache_dir, run_boot, BootHooks};
use bootfarm_core::cli::ArtifactAccessArgs;
use bootfarm_core::protocol::CompleteReply;
use bootfarm_core::result::BootResult;
use bootfarm_core::result::ErrorKind;
use bootfarm_core::Arch;
use clap::Args;
use client::{Claimed, Client, ClientError, Lease};
use convert::RunnerSettings;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// The operator's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "BOOTFARM_SERVER")]
    pub server: String,
    /// The runner pool this runner belongs to (it gets jobs of this pool or of no pool).
    #[arg(long, env = "BOOTFARM_POOL", default_value = "default")]
    pub pool: String,
    /// This runner's name in job status [default: $HOSTNAME, the pod name in Kubernetes].
    #[arg(long, env = "BOOTFARM_RUNNER_ID")]
    pub runner_id: Option<String>,
    /// File with the runner token (first non-comment line; a `runner:` prefix is allowed).
    #[arg(long, env = "BOOTFARM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Exit 0 after this many seconds without work.
    #[arg(long, env = "BOOTFARM_IDLE_EXIT", value_name = "SECONDS")]
    pub idle_exit: Option<u64>,
    /// Artifact cache and host KVM verdict [default: $BOOTFARM_CACHE, /var/cache/bootfarm for root, else ~/.cache/bootfarm].
    #[arg(long, env = "BOOTFARM_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// The artifact cache's size budget (bytes, K/M/G suffixes): after each job's fetches the
    /// least recently used entries go until it fits (never one a boot is using). Keep it below
    /// the cache volume's size.
    #[arg(
        long,
        env = "BOOTFARM_CACHE_MAX",
        default_value = "3G",
        value_parser = crate::cli::parse_size
    )]
    pub cache_max: u64,
    /// Directory holding the qemu-system-* binaries [default: PATH].
    #[arg(long, env = "BOOTFARM_QEMU_DIR")]
    pub qemu_binary_dir: Option<PathBuf>,
    /// Static busybox per guest arch (`DIR/<arch>/busybox`) for a disk root's early initramfs
    /// [default: /usr/lib/bootfarm/guest-tools, /var/cache/bootfarm/guest-tools, $BOOTFARM_CACHE/guest-tools].
    #[arg(long, env = "BOOTFARM_GUEST_TOOLS", value_name = "DIR")]
    pub guest_tools: Option<PathBuf>,
    /// Arches this runner boots, comma-separated [default: any].
    #[arg(long, env = "BOOTFARM_ARCHES", value_delimiter = ',')]
    pub arches: Vec<Arch>,
    /// When whoever started this runner created it (RFC 3339; set by the operator on runner
    /// pods and processes): reported once, for the start-up time metric.
    #[arg(long, env = "BOOTFARM_RUNNER_CREATED_AT")]
    pub created_at: Option<jiff::Timestamp>,
    /// Exit 0 after this many jobs (0: no limit).
    #[arg(long, env = "BOOTFARM_MAX_JOBS", default_value_t = 0)]
    pub max_jobs: u64,
    #[command(flatten)]
    pub artifacts: ArtifactAccessArgs,
    /// Cap of each job's console log (bytes, K/M/G suffixes): its head and tail are kept and a
    /// marker says what was left out. Keep it at most the operator's own `--console-limit`.
    #[arg(
        long,
        env = "BOOTFARM_CONSOLE_LIMIT",
        default_value = "16M",
        value_parser = crate::cli::parse_size
    )]
    pub console_limit: u64,
}

/// Longest single claim long-poll asked of the server.
const CLAIM_WAIT: Duration = Duration::from_secs(25);
/// Heartbeat at least this often, so a cancel stops the boot within seconds.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on uploading the rest of the console after the boot.
const CONSOLE_DRAIN: Duration = Duration::from_secs(15);
/// Posting the result: attempts and first delay (doubling), about a minute in all.
const COMPLETE_ATTEMPTS: u32 = 7;
const COMPLETE_FIRST_DELAY: Duration = Duration::from_millis(500);

/// Reads the runner token: `BOOTFARM_TOKEN`, else the first token line of `file`.
fn read_token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", path.display()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| anyhow::anyhow!("token file {} holds no token", path.display()))?;
        return Ok(Some(
            line.strip_prefix("runner:")
                .unwrap_or(line)
                .trim()
                .to_string(),
        ));
    }
    Ok(std::env::var("BOOTFARM_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

fn default_runner_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("runner-{}", std::process::id()))
}

/// Cancelled on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing up"),
            _ = int.recv() => tracing::info!("SIGINT: finishing up"),
        }
        t.cancel();
    });
    Ok(token)
}

/// Returns the process exit status.
pub async fn run(args: WorkArgs) -> anyhow::Result<i32> {
    // QEMU runs as our user: without this it could read our memory and environment (the runner
    // token) through /proc. Non-dumpable makes those root's alone.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "Could not make the runner non-dumpable");
    }
    let token = read_token(args.token_file.as_ref())?;
    let client = Client::new(&args.server, token)?;
    let runner_id = args.runner_id.clone().unwrap_or_else(default_runner_id);
    let fetch_policy = FetchPolicy::farm(
        &args.artifacts.allow_local_artifacts,
        args.artifacts.net_policy(),
    )?;
    let settings = RunnerSettings {
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        cache_max: Some(args.cache_max),
        qemu_binary_dir: args.qemu_binary_dir.clone(),
        guest_tools: args.guest_tools.clone(),
        fetch_policy,
        console_limit: args.console_limit,
    };
    let shutdown = shutdown_signal()?;
    let idle_exit = args.idle_exit.map(Duration::from_secs);
    tracing::info!(runner = %runner_id, pool = %args.pool, server = %args.server, "Runner ready for work");

    let mut idle_since = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut done = 0u64;
    let mut created_at = args.created_at;
    loop {
        if shutdown.is_cancelled() {
            return Ok(0);
        }
        let mut wait = CLAIM_WAIT;
        if let Some(limit) = idle_exit {
            let idle = idle_since.elapsed();
            if idle >= limit {
                tracing::info!(runner = %runner_id, idle_s = idle.as_secs(), "Idle timeout: exiting");
                return Ok(0);
            }
            wait = wait.min(limit - idle).max(Duration::from_secs(1));
        }
        let claimed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(0),
            c = client.claim(&runner_id, &args.pool, &args.arches, wait, created_at) => c,
        };
        if claimed.is_ok() {
            // Start-up is reported once: the first claim the operator answered.
            created_at = None;
        }
        match claimed {
            Ok(None) => backoff = Duration::from_millis(500),
            Ok(Some(job)) => {
                backoff = Duration::from_millis(500);
                run_job(&client, &settings, job, &shutdown).await;
                done += 1;
                idle_since = Instant::now();
                if args.max_jobs > 0 && done >= args.max_jobs {
                    return Ok(0);
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "Claim failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(0),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            // A refused token or request will not fix itself: stop loudly.
            Err(e) => anyhow::bail!("claiming work: {e}"),
        }
    }
}

/// Why a boot was stopped before its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Canceled,
    Lost,
    Shutdown,
}

/// One claimed job, claim to complete: its span carries the job, the attempt and the lease into
/// every line the boot, the heartbeats and the result posting log.
#[tracing::instrument(name = "job", skip_all, fields(job = %job.name, attempt = job.attempt, lease = %job.lease_id))]
async fn run_job(
    client: &Client,
    settings: &RunnerSettings,
    job: Claimed,
    shutdown: &CancellationToken,
) {
    let name = job.name.clone();
    tracing::info!(job = %name, attempt = job.attempt, "Starting job");
    let request = job
        .spec
        .clone()
        .map_err(|e| format!("spec: {e}"))
        .and_then(|spec| convert::to_request(&spec, settings).map_err(|e| e.to_string()));
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(job = %name, error = %message, "Job cannot be booted by this runner");
            let result = BootResult::error(ErrorKind::InvalidJob, message);
            post_result(client, &job, &result).await;
            return;
        }
    };

    let cancel = CancellationToken::new();
    let (console, shipper) = shipper::Shipper::start(
        client.clone(),
        name.clone(),
        job.lease_id.clone(),
        shipper::buffer_for(request.console_limit),
    );
    let hooks = BootHooks {
        console: Some(console),
        cancel: cancel.clone(),
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel::<Option<Stop>>(None);
    let beat = tokio::spawn(
        heartbeats(
            client.clone(),
            name.clone(),
            job.lease_id.clone(),
            job.lease_ttl,
            cancel.clone(),
            stop_tx.clone(),
        )
        .in_current_span(),
    );
    let on_shutdown = {
        let (cancel, shutdown, stop_tx) = (cancel.clone(), shutdown.clone(), stop_tx.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stop_tx.send_if_modified(|s| {
                if s.is_none() {
                    *s = Some(Stop::Shutdown);
                    true
                } else {
                    false
                }
            });
            cancel.cancel();
        })
    };

    let mut result = run_boot(request, hooks).await;
    beat.abort();
    on_shutdown.abort();
    let stop = *stop_rx.borrow_and_update();
    let shipped = shipper.finish(CONSOLE_DRAIN).await;
    if shipped.lost > 0 {
        tracing::warn!(job = %name, bytes = shipped.lost, "Part of the console never reached the operator");
    }
    // The operator's copy is what `console.truncated` describes.
    result.console.truncated |= shipped.cut;
    match stop {
        Some(Stop::Canceled) => tracing::info!(job = %name, "Job canceled; boot stopped"),
        Some(Stop::Lost) => tracing::warn!(job = %name, "Lease lost; boot stopped, result dropped"),
        Some(Stop::Shutdown) => {
            tracing::info!(job = %name, "Shutting down: releasing the job for another runner");
            if let Err(e) = client
                .release(&name, &job.lease_id, "runner shutting down (SIGTERM)")
                .await
            {
                tracing::warn!(job = %name, error = %e, "Release failed; the lease will expire instead");
            }
        }
        None => {
            tracing::info!(job = %name, result = result.result.as_str(), reason = %result.reason, "Boot finished");
            post_result(client, &job, &result).await;
        }
    }
}

/// How often a runner renews a lease of `ttl`: a third of it, within 200 ms and 5 s.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(200), MAX_HEARTBEAT_INTERVAL)
}

/// Renews the lease every ttl/3 (at most every 5 s); on `canceled` or `lost`, stops the boot.
/// An operator that cannot be reached does not stop it: nobody can expire the lease while no
/// operator runs, and a restarted one gives every lease a full TTL to be renewed (the boot's
/// own timeout still bounds it, and a result for a lease that did expire is refused).
async fn heartbeats(
    client: Client,
    name: String,
    lease_id: String,
    ttl: Duration,
    cancel: CancellationToken,
    stop: tokio::sync::watch::Sender<Option<Stop>>,
) {
    let every = heartbeat_interval(ttl);
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let verdict = match client.heartbeat(&name, &lease_id).await {
            Ok(Lease::Active) => {
                last_ok = Instant::now();
                continue;
            }
            Ok(Lease::Canceled) => Stop::Canceled,
            Ok(Lease::Lost) => Stop::Lost,
            Err(e) => {
                let unrenewed_s = last_ok.elapsed().as_secs();
                tracing::warn!(job = %name, error = %e, unrenewed_s, "Heartbeat failed; booting on");
                continue;
            }
        };
        stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(verdict);
                true
            } else {
                false
            }
        });
        cancel.cancel();
        return;
    }
}

/// Posts the verdict, retrying network failures with backoff (bounded); a stale lease ends it.
async fn post_result(client: &Client, job: &Claimed, result: &BootResult) {
    // The operator's bounds, applied here so an honest result always fits.
    let mut result = result.clone();
    bootfarm_core::result::check::bound(&mut result);
    let result = &result;
    let mut delay = COMPLETE_FIRST_DELAY;
    for attempt in 1..=COMPLETE_ATTEMPTS {
        match client.complete(&job.name, &job.lease_id, result).await {
            Ok(CompleteReply::Finished { .. }) => return,
            Ok(CompleteReply::Retrying { .. }) => {
                tracing::info!(job = %job.name, "The operator queued the job again");
                return;
            }
            Err(ClientError::Stale(msg)) => {
                tracing::warn!(job = %job.name, reason = %msg, "Result refused: the lease is not ours any more");
                return;
            }
            Err(e) if e.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                tracing::warn!(job = %job.name, error = %e, attempt, "Posting the result failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(job = %job.name, error = %e, "Result lost; the lease will expire and the job retry");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn token_file_takes_the_first_token_and_strips_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "# comment\n\nrunner: abc123\nother\n").unwrap();
        assert_eq!(read_token(Some(&p)).unwrap().as_deref(), Some("abc123"));
        std::fs::write(&p, "plain\n").unwrap();
        assert_eq!(read_token(Some(&p)).unwrap().as_deref(), Some("plain"));
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(read_token(Some(&p)).is_err());
    }

    /// An operator that answers 503 to the first `down` heartbeats, then `lost`.
    async fn operator_down_for(down: usize) -> (Client, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().fallback(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= down {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    axum::Json(serde_json::json!({"state": "lost"})).into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Client::new(&format!("http://{addr}"), None).unwrap(), calls)
    }

    #[tokio::test]
    async fn an_unreachable_operator_for_longer_than_the_ttl_does_not_stop_the_boot() {
        let ttl = Duration::from_millis(600); // heartbeats every 200 ms
        let (client, calls) = operator_down_for(8).await; // 1.6 s of 503s: over two TTLs
        let cancel = CancellationToken::new();
        let (stop, verdict) = tokio::sync::watch::channel(None);
        tokio::time::timeout(
            Duration::from_secs(20),
            heartbeats(client, "j1".into(), "l1".into(), ttl, cancel.clone(), stop),
        )
        .await
        .expect("heartbeats end on the operator's answer");
        assert_eq!(*verdict.borrow(), Some(Stop::Lost));
        assert!(cancel.is_cancelled());
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            9,
            "it kept renewing through the outage and stopped on the first answer"
        );
    }
}
