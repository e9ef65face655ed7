//! `bootfarm-operator run`: the controllers and the HTTP API over BootJob objects.

use super::context::Context;
use super::runners::{PodSettings, RunnerActivity, COMPONENT_LABEL, COMPONENT_RUNNER};
use super::store::KubeJobStore;
use super::{bootjob, plan, pool};
use crate::api::auth::Tokens;
use crate::api::{router, warn_if_exposed, AppState};
use crate::files::JobFiles;
use crate::metrics::Metrics;
use bootfarm_core::plan::BootPlan;
use bootfarm_core::spec::{BootJob, JobPhase, RunnerPool};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::Client;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Kubernetes mode: BootJobs and RunnerPools in a namespace, runner pods, and the HTTP API.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Namespace to watch [default: the kubeconfig's, or the pod's own in a cluster].
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "BOOTFARM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Where job logs and result documents are kept (a persistent volume in a cluster).
    #[arg(long, env = "BOOTFARM_DATA_DIR", default_value = "/var/lib/bootfarm")]
    pub data_dir: PathBuf,
    /// User API tokens, one per line (`runner:` prefixed lines are runner tokens). Repeatable.
    /// Without any token file the API needs no authentication.
    #[arg(
        long = "token-file",
        env = "BOOTFARM_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub token_files: Vec<PathBuf>,
    /// Runner tokens, one per line (what runner pods present). Repeatable.
    #[arg(
        long = "runner-token-file",
        env = "BOOTFARM_RUNNER_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub runner_token_files: Vec<PathBuf>,
    /// Seconds a work lease lasts without a heartbeat before the job is retried.
    #[arg(long, env = "BOOTFARM_LEASE_TTL", default_value_t = 60)]
    pub lease_ttl: u64,
    /// The runner pod template (a Pod in YAML; `kvm.yaml` beside it adds the KVM device).
    /// Default: a built-in non-root pod.
    #[arg(long, env = "BOOTFARM_RUNNER_POD_TEMPLATE")]
    pub runner_pod_template: Option<PathBuf>,
    /// The URL runner pods reach this API at [default: http://bootfarm.<namespace>.svc:8080].
    #[arg(long, env = "BOOTFARM_SERVER_URL")]
    pub server_url: Option<String>,
    /// The runner image for pools whose template names none.
    #[arg(
        long,
        env = "BOOTFARM_RUNNER_IMAGE",
        default_value = "bootfarm/runner:latest"
    )]
    pub runner_image: String,
    #[command(flatten)]
    pub artifacts: bootfarm_core::cli::ArtifactAccessArgs,
    #[command(flatten)]
    pub console: crate::files::ConsoleArgs,
    #[command(flatten)]
    pub callbacks: crate::callbacks::CallbackArgs,
    /// The Secret with the runner token (key `token`), for the built-in pod template.
    #[arg(
        long,
        env = "BOOTFARM_RUNNER_TOKEN_SECRET",
        default_value = "bootfarm-runner-token"
    )]
    pub runner_token_secret: String,
}

/// Sets `cell` once `store` has synced, and tells `then`.
fn when_synced<K>(
    store: Store<K>,
    cell: Arc<OnceLock<Store<K>>>,
    then: impl FnOnce(Store<K>) + Send + 'static,
) where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    tokio::spawn(async move {
        // The store's readiness is a oneshot that wakes only its latest waiter (the controller),
        // so look again every so often instead of trusting a wake-up.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        let _ = cell.set(store.clone());
        then(store);
    });
}

/// Reconcile errors are logged by the error policies; this reports the watch failures.
fn log_controller_error<E: std::error::Error>(
    kind: &str,
    err: Option<kube::runtime::controller::Error<super::context::ReconcileError, E>>,
) {
    use kube::runtime::controller::Error as C;
    match err {
        None | Some(C::ReconcilerFailed(..)) => {}
        Some(e) => tracing::warn!(kind, error = %e, "Controller stream error"),
    }
}

pub async fn run(args: RunArgs) -> Result<(), BoxError> {
    let client = Client::try_default().await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let jobs: Api<BootJob> = Api::namespaced(client.clone(), &ns);
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = jobs.list(&ListParams::default().limit(1)).await {
        return Err(format!(
            "cannot list BootJobs in namespace {ns} ({e}): are the CRDs installed \
             (`bootfarm-operator crdgen | kubectl apply -f -`) and the RBAC bound?"
        )
        .into());
    }

    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let files = JobFiles::new(&args.data_dir).with_log_cap(args.console.console_limit);
    let (metrics, _registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let activity = Arc::new(RunnerActivity::default());
    let started = Timestamp::now();
    let lease_ttl = Duration::from_secs(args.lease_ttl.max(1));
    let (callbacks, callback_queue) = crate::callbacks::Callbacks::channel(metrics.clone());
    let store = KubeJobStore::new(
        jobs.clone(),
        pods.clone(),
        activity.clone(),
        metrics.clone(),
    )
    .with_lease_grace(started, lease_ttl)
    .with_callbacks(callbacks);
    let deliverer = crate::callbacks::dispatcher(
        Arc::new(store.clone()),
        args.callbacks.clone(),
        metrics.clone(),
    )
    .map_err(|e| format!("the callback client: {e}"))?;
    tokio::spawn(crate::callbacks::run(callback_queue, deliverer));
    let server_url = args
        .server_url
        .clone()
        .unwrap_or_else(|| format!("http://bootfarm.{ns}.svc:8080"));
    let mut pod_settings = match &args.runner_pod_template {
        Some(path) => PodSettings::from_template_file(path, &server_url, &args.runner_image)?,
        None => PodSettings::builtin(&server_url, &args.runner_image, &args.runner_token_secret),
    };
    pod_settings.extra_env = [args.artifacts.runner_env(), args.console.runner_env()].concat();
    let local_artifacts =
        crate::admission::LocalArtifacts::new(&args.artifacts.allow_local_artifacts)
            .map_err(|e| format!("--allow-local-artifacts: {e}"))?;
    let tokens = Tokens::load(&args.token_files, &args.runner_token_files)?;
    let work = Arc::new(Notify::new());

    let board = crate::pools::PoolBoard::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        store: store.clone(),
        files: files.clone(),
        metrics: metrics.clone(),
        pods: pod_settings,
        activity,
        work: work.clone(),
        jobs: Arc::default(),
        pools: Arc::default(),
        runner_pods: Arc::default(),
        created_pods: Default::default(),
        started,
        recorder: super::context::recorder(client.clone()),
        local_artifacts: local_artifacts.clone(),
        board: board.clone(),
    });

    let job_controller = Controller::new(jobs.clone(), watcher::Config::default());
    let s = store.clone();
    when_synced(job_controller.store(), ctx.jobs.clone(), move |c| {
        s.use_job_cache(c)
    });
    // Runner pods, watched once: the pool reconciler and the store read them here (no LIST per
    // reconcile).
    let runner_selector = format!("{COMPONENT_LABEL}={COMPONENT_RUNNER}");
    let (pod_cache, pod_writer) = kube::runtime::reflector::store::<Pod>();
    let pod_watch = kube::runtime::reflector(
        pod_writer,
        watcher(
            pods.clone(),
            watcher::Config::default().labels(&runner_selector),
        ),
    )
    .default_backoff()
    .for_each(|event| {
        if let Err(e) = event {
            tracing::warn!(error = %e, "Runner pod watch failed; retrying");
        }
        futures::future::ready(())
    });
    tokio::spawn(pod_watch);
    let s = store.clone();
    when_synced(pod_cache, ctx.runner_pods.clone(), move |c| {
        s.use_pod_cache(c)
    });
    let pool_controller = Controller::new(pools, watcher::Config::default());
    let pool_store = pool_controller.store();
    let s = store.clone();
    when_synced(pool_store.clone(), ctx.pools.clone(), move |c| {
        s.use_pool_cache(c)
    });
    // A queued job can count against any pool (pools are few: wake them all); a running or
    // finished job concerns only the pool that ran it (heartbeats must not wake every pool).
    let all_pools = pool_store.clone();
    let pool_controller = pool_controller
        .owns(pods, watcher::Config::default().labels(&runner_selector))
        .watches(
            jobs.clone(),
            watcher::Config::default(),
            move |job: BootJob| {
                let ran_in = job.status.as_ref().and_then(|s| s.pool.clone());
                let queued = matches!(
                    crate::queue::phase(&job),
                    JobPhase::Pending | JobPhase::Queued
                );
                all_pools
                    .state()
                    .iter()
                    .filter(|p| queued || ran_in.is_none() || p.metadata.name == ran_in)
                    .map(|p| ObjectRef::from_obj(&**p))
                    .collect::<Vec<_>>()
            },
        )
        // Bursts of job changes (a batch submitted, many heartbeats) become one reconcile.
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(300)));

    // BootPlans (kubectl apply): expanded into owned BootJobs; woken by their jobs' changes,
    // debounced so a burst of verdicts is one status write. A cluster whose CRDs predate
    // BootPlan runs without it (plans over HTTP still work).
    let plans_api: Api<BootPlan> = Api::namespaced(client.clone(), &ns);
    let plans_run = match plans_api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Controller::new(plans_api, watcher::Config::default())
            .owns(
                jobs.clone(),
                watcher::Config::default().labels(bootfarm_core::plan::PLAN_LABEL),
            )
            .with_config(ControllerConfig::default().debounce(Duration::from_secs(1)))
            .shutdown_on_signal()
            .run(plan::reconcile, plan::error_policy, ctx.clone())
            .for_each(|r| {
                log_controller_error("BootPlan", r.err());
                futures::future::ready(())
            })
            .boxed(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list BootPlans (is the bootplans CRD installed?): running without the BootPlan controller");
            futures::future::pending().boxed()
        }
    };
    let jobs_run = job_controller
        .shutdown_on_signal()
        .run(bootjob::reconcile, bootjob::error_policy, ctx.clone())
        .for_each(|r| {
            log_controller_error("BootJob", r.err());
            futures::future::ready(())
        });
    let pools_run = pool_controller
        .shutdown_on_signal()
        .run(pool::reconcile, pool::error_policy, ctx.clone())
        .for_each(|r| {
            log_controller_error("RunnerPool", r.err());
            futures::future::ready(())
        });

    let shutdown = tokio_util::sync::CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone())
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let mut state = AppState::new(Arc::new(store), files, metrics);
    state.tokens = tokens;
    // Long-polls and log follows end at once on shutdown instead of holding the server open.
    state.shutdown = shutdown.clone();
    state.lease_ttl = lease_ttl;
    state.work = work;
    state.local_artifacts = local_artifacts;
    state.pools = board;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    warn_if_exposed(args.listen, &state.tokens);
    tracing::info!(namespace = %ns, listen = %args.listen, server_url = %server_url, "bootfarm operator running");
    let serve = crate::api::server::serve(
        listener,
        router(state),
        crate::api::server::Limits::default(),
        async move { shutdown.cancelled().await },
    );

    tokio::select! {
        r = serve => r.map_err(|e| format!("HTTP server: {e}"))?,
        _ = jobs_run => tracing::info!("BootJob controller stopped"),
        _ = pools_run => tracing::info!("RunnerPool controller stopped"),
        _ = plans_run => tracing::info!("BootPlan controller stopped"),
    }
    Ok(())
}
