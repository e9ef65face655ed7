//! `bootfarm-operator standalone`: the whole farm on one machine.
//!
//! The SQLite store in `--data-dir`, the same HTTP API as in Kubernetes, a housekeeping loop
//! (lease expiry, TTL deletes) and local `bootfarm-runner work` processes started and stopped
//! with the queue by the same scaling function as runner pods ([`crate::scaler::decide`]), as
//! one implicit pool `local` serving every arch.

mod housekeeping;
pub mod identity;
mod supervisor;

use crate::admission::LocalArtifacts;
use crate::api::auth::Tokens;
use crate::api::{router, warn_if_exposed, AppState};
use crate::files::JobFiles;
use crate::metrics::Metrics;
use crate::store::sqlite::SqliteStore;
use crate::store::JobStore;
use anyhow::Context;
use bootfarm_core::cli::ArtifactAccessArgs;
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
    #[command(flatten)]
    pub console: crate::files::ConsoleArgs,
    #[command(flatten)]
    pub callbacks: crate::callbacks::CallbackArgs,
    /// When started as root: the unprivileged user runners and QEMU run as (created when
    /// missing). `root` keeps them root (not recommended: a job's author then owns the machine).
    #[arg(long, env = "BOOTFARM_RUNNER_USER", default_value = identity::DEFAULT_USER)]
    pub runner_user: String,
    /// The runners' artifact cache and work directories, owned by the runner user
    /// [default: $BOOTFARM_CACHE/runner-<user>, or /var/cache/bootfarm/runner-<user>].
    #[arg(long, env = "BOOTFARM_RUNNER_CACHE")]
    pub runner_cache: Option<PathBuf>,
}

/// The unprivileged identity of local runners.
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    pub user: identity::RunnerUser,
    /// Their cache (artifacts, KVM verdict) and, below it, `tmp/` for their work directories.
    pub cache: PathBuf,
}

/// Decides who runners run as; checks that they can read what they must and write where they
/// may, and that the data directory is the operator's alone.
fn runner_identity(args: &StandaloneArgs) -> anyhow::Result<Option<RunnerIdentity>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    if args.runner_user == "root" {
        tracing::warn!("Runners and QEMU run as root (--runner-user root): a job's author can act as root on this machine");
        return Ok(None);
    }
    let user = identity::ensure_user(&args.runner_user)?;
    let cache = match &args.runner_cache {
        Some(c) => c.clone(),
        None => std::env::var_os("BOOTFARM_CACHE")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/bootfarm"))
            .join(format!("runner-{}", user.name)),
    };
    identity::private_dir(&cache, &user)?;
    identity::private_dir(&cache.join("tmp"), &user)?;
    if !identity::can_write(&user, &cache) {
        anyhow::bail!(
            "runner user {} cannot reach its cache {} (a parent directory is closed to it); \
             choose another with --runner-cache",
            user.name,
            cache.display()
        );
    }
    for dir in &args.artifacts.allow_local_artifacts {
        if !identity::can_read(&user, dir) {
            anyhow::bail!(
                "runner user {} cannot read {} (--allow-local-artifacts): make it and its parent \
                 directories readable by that user, or run runners as another with --runner-user",
                user.name,
                dir.display()
            );
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", args.data_dir.display()))?;
    }
    tracing::info!(user = %user.name, uid = user.uid, cache = %cache.display(), "Runners run as an unprivileged user");
    Ok(Some(RunnerIdentity { user, cache }))
}

impl StandaloneArgs {
    fn max_runners(&self) -> u32 {
        self.max_runners.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
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
    let identity = runner_identity(&args)?;
    let (metrics, _registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let (callbacks, callback_queue) = crate::callbacks::Callbacks::channel(metrics.clone());
    let store = SqliteStore::open(&args.data_dir)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?
        .with_metrics(metrics.clone())
        .with_callbacks(callbacks);
    // Local runners are our children and die with us (PR_SET_PDEATHSIG), so a job Running in
    // the database belongs to a runner that no longer exists: requeue it now instead of waiting
    // for its lease to expire. A survivor could only post with a stale lease, which is refused.
    let requeued = store.requeue_running(jiff::Timestamp::now()).await?;
    for job in &requeued {
        tracing::info!(job = %job.name, attempts = job.attempts, requeued = job.requeued, "Requeued a job left running by the previous operator");
    }
    let files = JobFiles::new(&args.data_dir).with_log_cap(args.console.console_limit);
    let sqlite = Arc::new(store);
    let store: Arc<dyn JobStore> = sqlite.clone();
    let deliverer =
        crate::callbacks::dispatcher(store.clone(), args.callbacks.clone(), metrics.clone())
            .context("the callback client")?;
    tokio::spawn(crate::callbacks::run(callback_queue, deliverer));
    let mut state = AppState::new(store.clone(), files.clone(), metrics.clone());
    state.lease_ttl = Duration::from_secs(args.lease_ttl);
    state.local_artifacts = LocalArtifacts::new(&args.artifacts.allow_local_artifacts)
        .map_err(|e| anyhow::anyhow!("--allow-local-artifacts: {e}"))?;

    let tokens = match &args.token_file {
        Some(path) => Tokens::load(std::slice::from_ref(path), &[] as &[PathBuf])
            .with_context(|| format!("loading tokens from {}", path.display()))?,
        None => Tokens::disabled(),
    };
    // With authentication on, our own runners need a runner token: a fresh one per start,
    // handed to each runner in its environment (never in a file: QEMU, running as the runner's
    // user, could read a file; the runner's environment it cannot).
    let _ = std::fs::remove_file(args.data_dir.join("runner.token"));
    let runner_token = if tokens.enabled() {
        let (all, token) = tokens.with_generated_runner_token();
        state.tokens = all;
        Some(token)
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
            token: runner_token,
            log_dir: args.data_dir.join("runners"),
            max_runners: args.max_runners(),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            runner_env: [args.artifacts.runner_env(), args.console.runner_env()].concat(),
            identity,
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
