//! What state a runner pod is in, and whether its pods can start at all.

use super::{Seen, IDLE_SINCE, RUNNER_CONTAINER};
use crate::scaler::{Runner, RunnerState};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// One runner pod as the pool reconciler sees it: the scaler's view plus the pod's uid (the
/// precondition of its deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    pub runner: Runner,
    pub uid: Option<String>,
}

/// Classifies a runner pod from its phase, whether it holds a lease, and what the HTTP API saw.
pub fn classify(
    pod: &Pod,
    busy: bool,
    seen: Option<Seen>,
    operator_started: Timestamp,
    now: Timestamp,
) -> RunnerView {
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let (state, created_at) = if pod.metadata.deletion_timestamp.is_some() {
        (RunnerState::Terminating, created)
    } else if matches!(phase, Some("Failed") | Some("Succeeded")) {
        // A runner never exits on its own while wanted: either way the pod is spent.
        (RunnerState::Failed, created)
    } else if busy {
        (RunnerState::Busy, created)
    } else if phase != Some("Running") {
        (RunnerState::Pending, created)
    } else if let Some(seen) = seen {
        // The annotation outlives an operator restart; the in-memory record may be fresher.
        let annotated = pod
            .annotations()
            .get(IDLE_SINCE)
            .and_then(|s| crate::queue::parse_time(s));
        let since = annotated.map_or(seen.idle_since(), |a| a.max(seen.idle_since()));
        (RunnerState::Idle { since }, created)
    } else {
        // Running but not polled since this operator started: starting, its startup clock from
        // the later of its creation and our start (a restart must not make old pods look stuck).
        (RunnerState::Starting, created.max(operator_started))
    };
    RunnerView {
        runner: Runner {
            id: pod.name_any(),
            state,
            created_at,
        },
        uid: pod.metadata.uid.clone(),
    }
}

/// Kubelet reasons for a waiting container that waiting will not fix: the image cannot be had,
/// or the kubelet cannot set the container up.
const START_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "RegistryUnavailable",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What a runner pod's start says about its pool (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartEvidence {
    /// The runner container is stuck: the kubelet's reason and message, and the pod.
    Failing {
        pod: String,
        reason: String,
        message: String,
    },
    /// The runner container runs.
    Started,
}

/// The first stuck runner container among `pods` (they fail alike), else whether one runs;
/// None when no pod has got that far.
pub fn start_evidence(pods: &[Pod]) -> Option<StartEvidence> {
    let mut started = false;
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for cs in statuses.iter().filter(|c| c.name == RUNNER_CONTAINER) {
            let state = cs.state.as_ref();
            if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                if START_FAILURES.contains(&reason.as_str()) {
                    return Some(StartEvidence::Failing {
                        pod: pod.name_any(),
                        reason,
                        message: w.message.clone().unwrap_or_default(),
                    });
                }
            }
            started |= state.is_some_and(|s| s.running.is_some());
        }
    }
    started.then_some(StartEvidence::Started)
}
