//! `bootfarm-operator standalone`: the whole farm on one machine.
//!
//! The SQLite store in `--data-dir`, the same HTTP API as in Kubernetes, a housekeeping loop
//! (lease expiry, TTL deletes) and local `bootfarm-runner work` processes started and stopped
//! with the queue by the same scaling function as runner pods ([`crate::scaler::decide`]), as
//! one implicit pool `local` serving every arch.

mod housekeeping;
mod supervisor;

use crate::admission::ArtifactAccessArgs;
use crate::api::auth::Tokens;
use crate::api::{router, warn_if_exposed, AppState};
use crate::files::JobFiles;
use crate::metrics::Metrics;
use crate::store::sqlite::SqliteStore;
use crate::store::JobStore;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use supervisor::{LocalPool, LOCAL_POOL};

#[derive(Debug, Clone, Args)]
pub struct StandaloneArgs {
    /// Where the job database, console logs and results live (created if missing).
    #[arg(long, env = "BOOTFARM_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address for the HTTP API.
    #[arg(long, env = "BOOTFARM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Most runner processes (one QEMU each) at once [default: number of CPUs].
    #[arg(long, env = "BOOTFARM_MAX_RUNNERS")]
    pub max_runners: Option<u32>,
    /// Runners idle this long are stopped (down to zero).
    #[arg(
        long,
        env = "BOOTFARM_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub idle_timeout: u64,
    /// A job whose runner stops heartbeating for this long is requeued (infrastructure retry).
    #[arg(
        long,
        env = "BOOTFARM_LEASE_TTL",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub lease_ttl: u64,
    /// User tokens, one per line (runner tokens with a `runner:` prefix); none: no authentication.
    #[arg(long, env = "BOOTFARM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The runner binary [default: `bootfarm-runner` beside this binary, else on PATH].
    #[arg(long, env = "BOOTFARM_RUNNER_BIN")]
    pub runner_bin: Option<PathBuf>,
    #[command(flatten)]
    pub artifacts: ArtifactAccessArgs,
}

impl StandaloneArgs {
    fn max_runners(&self) -> u32 {
        self.max_runners.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
    }

    fn runner_bin(&self) -> PathBuf {
        if let Some(bin) = &self.runner_bin {
            return bin.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("bootfarm-runner")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("bootfarm-runner"))
    }
}

/// Runs until SIGTERM or SIGINT, then stops the runners (they release their leases) and exits.
pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    if args.lease_ttl == 0 {
        anyhow::bail!("--lease-ttl must be at least 1 second");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let _lock = lock_data_dir(&args.data_dir)?;
    let store = SqliteStore::open(&args.data_dir)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    // Local runners are our children and die with us (PR_SET_PDEATHSIG), so a job Running in
    // the database belongs to a runner that no longer exists: requeue it now instead of waiting
    // for its lease to expire. A survivor could only post with a stale lease, which is refused.
    let requeued = store.requeue_running(jiff::Timestamp::now()).await?;
    for job in &requeued {
        tracing::info!(job = %job.name, attempts = job.attempts, requeued = job.requeued, "Requeued a job left running by the previous operator");
    }
    let files = JobFiles::new(&args.data_dir);
    let (metrics, _registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let sqlite = Arc::new(store);
    let store: Arc<dyn JobStore> = sqlite.clone();
    let mut state = AppState::new(store.clone(), files.clone(), metrics.clone());
    state.lease_ttl = Duration::from_secs(args.lease_ttl);
    state.local_artifacts = args
        .artifacts
        .local()
        .map_err(|e| anyhow::anyhow!("--allow-local-artifacts: {e}"))?;

    let tokens = match &args.token_file {
        Some(path) => Tokens::load(std::slice::from_ref(path), &[] as &[PathBuf])
            .with_context(|| format!("loading tokens from {}", path.display()))?,
        None => Tokens::disabled(),
    };
    // With authentication on, our own runners need a runner token: a fresh one per start,
    // in a file only we can read.
    let runner_token_file = if tokens.enabled() {
        let (all, token) = tokens.with_generated_runner_token();
        state.tokens = all;
        Some(write_private(&args.data_dir.join("runner.token"), &token)?)
    } else {
        state.tokens = tokens;
        None
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let server_url = format!("http://{}", loopback_for(bound));
    tracing::info!(listen = %bound, data_dir = %args.data_dir.display(), max_runners = args.max_runners(), "Standalone farm ready");

    warn_if_exposed(bound, &state.tokens);

    let shutdown = CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone())?;
    // Long-polling claims answer at once and log follows end, so the server can stop promptly.
    state.shutdown = shutdown.clone();

    let app = router(state.clone());
    // The server stops only after the runners: a runner told to stop releases its job through
    // the API, which must still be listening.
    let server_stop = CancellationToken::new();
    let server_stopped = server_stop.clone();
    let server = tokio::spawn(async move {
        crate::api::server::serve(
            listener,
            app,
            crate::api::server::Limits::default(),
            async move { server_stopped.cancelled().await },
        )
        .await
    });
    let housekeeping = tokio::spawn(housekeeping::run(state.clone(), files, shutdown.clone()));
    let pool = LocalPool::new(
        supervisor::Config {
            runner_bin: args.runner_bin(),
            server_url,
            token_file: runner_token_file,
            log_dir: args.data_dir.join("runners"),
            max_runners: args.max_runners(),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            runner_env: args.artifacts.runner_env(),
        },
        sqlite,
    );
    let supervised = pool.run(state, shutdown.clone()).await;
    shutdown.cancel();
    server_stop.cancel();
    let _ = housekeeping.await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    supervised
}

/// One operator per data dir: a second one would requeue the first one's running jobs at start
/// and run a second set of runners on the same queue. The lock dies with the process (even on
/// `kill -9`), so a restart never finds a stale lock.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("operator.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{} is in use by another bootfarm operator ({e}); stop it first",
            dir.display()
        )
    })
}

/// The address our runners use: a wildcard listen address is reachable on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

fn write_private(path: &std::path::Path, token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "runner:{token}")?;
    Ok(path.to_path_buf())
}
