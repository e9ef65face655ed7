//! What the BootJob and RunnerPool reconcilers share, and their error type.

use super::runners::{PodSettings, RunnerActivity};
use super::store::KubeJobStore;
use crate::files::JobFiles;
use crate::metrics::Metrics;
use crate::store::StoreError;
use bootfarm_core::spec::{BootJob, RunnerPool};
use jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

pub struct Context {
    pub client: Client,
    pub store: KubeJobStore,
    pub files: JobFiles,
    pub metrics: Arc<Metrics>,
    pub pods: PodSettings,
    pub activity: Arc<RunnerActivity>,
    /// Woken when a job may have become claimable (long-polling claims re-check at once).
    pub work: Arc<Notify>,
    /// The BootJob and RunnerPool caches the pool reconciler reads (set once synced).
    pub jobs: Arc<OnceLock<Store<BootJob>>>,
    pub pools: Arc<OnceLock<Store<RunnerPool>>>,
    /// The runner pods (set once synced), and the pods created since that the watch may not
    /// have delivered yet (so a reconcile right after a scale-up does not create them again).
    pub runner_pods: Arc<OnceLock<Store<k8s_openapi::api::core::v1::Pod>>>,
    pub created_pods: super::pool::CreatedPods,
    /// When this operator started: runners not seen since are "starting", not "stuck".
    pub started: Timestamp,
    /// Events on transitions (`kubectl describe` shows them).
    pub recorder: Recorder,
    /// Where local artifacts may come from (the same rule as the HTTP API's).
    pub local_artifacts: crate::admission::LocalArtifacts,
    /// The pools' views for the API (`GET /api/v1/pools`), written on every pool decision.
    pub board: crate::pools::PoolBoard,
}

/// The reporting controller named in Events.
pub const REPORTER: &str = "bootfarm-operator";

pub fn recorder(client: Client) -> Recorder {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok();
    Recorder::new(
        client,
        Reporter {
            controller: REPORTER.into(),
            instance,
        },
    )
}

impl Context {
    pub fn job_snapshot(&self) -> Vec<Arc<BootJob>> {
        self.jobs.get().map(|s| s.state()).unwrap_or_default()
    }

    pub fn pool_snapshot(&self) -> Vec<Arc<RunnerPool>> {
        self.pools.get().map(|s| s.state()).unwrap_or_default()
    }

    /// Records an Event about `object`; a failure is logged, never fatal (Events are advice).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &object.object_ref(&())).await {
            tracing::debug!(reason, error = %e, "Publishing an Event failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    #[error("writing status: {0}")]
    Status(#[source] super::status::WriteError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ReconcileError>>),
    #[error("cleaning up the files of {name}: {message}")]
    Cleanup { name: String, message: String },
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("the caches have not synced yet")]
    NotSynced,
}

impl ReconcileError {
    /// Someone wrote the object since we read it: not a failure, just look again.
    pub fn is_conflict(&self) -> bool {
        match self {
            ReconcileError::Kube(kube::Error::Api(s)) => s.code == 409,
            ReconcileError::Status(e) => e.code() == Some(409),
            ReconcileError::Store(StoreError::Conflict(_)) => true,
            ReconcileError::Finalizer(f) => match &**f {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_conflict(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) => {
                    s.code == 409 || s.code == 422
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Records one reconcile's duration and outcome, and a failure's kind.
    pub fn observe(
        metrics: &Metrics,
        controller: &str,
        started: std::time::Instant,
        result: &Result<kube::runtime::controller::Action, ReconcileError>,
    ) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .reconcile_duration_seconds
            .with_label_values(&[controller, outcome])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            let kind = if e.is_conflict() {
                "conflict"
            } else {
                e.kind()
            };
            metrics
                .reconcile_errors_total
                .with_label_values(&[controller, kind])
                .inc();
        }
    }

    /// A short, fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "kube",
            ReconcileError::Store(_) => "store",
            ReconcileError::Status(_) => "status",
            ReconcileError::Finalizer(_) => "finalizer",
            ReconcileError::Cleanup { .. } => "cleanup",
            ReconcileError::NoNamespace(_) => "no_namespace",
            ReconcileError::NotSynced => "not_synced",
        }
    }
}
