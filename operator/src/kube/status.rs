//! The one writer of BootJob status. Every status change the operator makes (admission, claims,
//! heartbeats, verdicts, expiry, cancel) goes through here: a replace of the status
//! subresource carrying the object's `resourceVersion`, so the API server refuses it with 409
//! when anyone wrote first; bounded in time; counted by outcome.

use super::store::FIELD_MANAGER;
use crate::metrics::Metrics;
use bootfarm_core::spec::BootJob;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// Longest one status write may take before it counts as failed (the caller retries).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("status write of bootjob {0:?} timed out after {WRITE_TIMEOUT:?}")]
    Timeout(String),
}

impl WriteError {
    /// The API server's status code, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            WriteError::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct StatusWriter {
    metrics: Arc<Metrics>,
}

impl StatusWriter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        StatusWriter { metrics }
    }

    /// Writes `job.status` in `api`'s namespace, conditional on `job`'s resourceVersion.
    pub async fn write(&self, api: &Api<BootJob>, job: &BootJob) -> Result<BootJob, WriteError> {
        let mut body = job.clone();
        // Omitted managedFields are kept by the server; sending them back is pointless.
        body.metadata.managed_fields = None;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let name = job.name_any();
        let outcome = tokio::time::timeout(WRITE_TIMEOUT, api.replace_status(&name, &pp, &body))
            .await
            .map_err(|_| WriteError::Timeout(name.clone()))
            .and_then(|r| r.map_err(WriteError::Kube));
        let label = match &outcome {
            Ok(_) => "success",
            Err(e) if e.code() == Some(409) => "conflict",
            Err(WriteError::Timeout(_)) => "timeout",
            Err(_) => "failure",
        };
        self.metrics
            .status_writes_total
            .with_label_values(&[label])
            .inc();
        if let Err(e) = &outcome {
            if label != "conflict" {
                tracing::warn!(job = %name, error = %e, "BootJob status write failed");
            }
        }
        outcome
    }
}
