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
    /// When this operator started: runners not seen since are "starting", not "stuck".
    pub started: Timestamp,
    /// Events on transitions (`kubectl describe` shows them).
    pub recorder: Recorder,
    /// Where local artifacts may come from (the same rule as the HTTP API's).
    pub local_artifacts: crate::admission::LocalArtifacts,
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
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    #[error("writing status: {0}")]
    Status(#[source] super::status::WriteError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("cleaning up the files of {name}: {message}")]
    Cleanup { name: String, message: String },
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("the caches have not synced yet")]
    NotSynced,
}

impl Error {
    /// Someone wrote the object since we read it: not a failure, just look again.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.code == 409,
            Error::Status(e) => e.code() == Some(409),
            Error::Store(StoreError::Conflict(_)) => true,
            Error::Finalizer(f) => match &**f {
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

    /// A short, fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Store(_) => "store",
            Error::Status(_) => "status",
            Error::Finalizer(_) => "finalizer",
            Error::Cleanup { .. } => "cleanup",
            Error::NoNamespace(_) => "no_namespace",
            Error::NotSynced => "not_synced",
        }
    }
}
