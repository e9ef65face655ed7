//! The runner protocol: the bodies and replies of the operator's `/api/v1/runner/` endpoints, one
//! set of types for both sides (`operator::api::runner` serves them, `runner::work::client` sends
//! them). Field names are camelCase on the wire and a contract.
//!
//! A job's document travels as a type parameter: the operator sends its `BootJob`, a runner reads
//! only what it needs ([`ClaimedJob`]), so a field a newer operator adds does not break an older
//! runner.

use crate::result::BootResult;
use crate::spec::{BootJobSpec, JobPhase};
use crate::Arch;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The path prefix of the runner endpoints.
pub const RUNNER_API: &str = "/api/v1/runner";

/// `POST claim`: ask for work, long-polling until some comes or the wait ends (204).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub runner_id: String,
    /// The pool this runner serves; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The architectures it boots; any when empty.
    #[serde(default)]
    pub arches: Vec<Arch>,
    /// The runner's own bound on the long-poll (e.g. its idle exit is near); capped by the
    /// server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// On a runner's first claim: when its pod or process was created, for the start-up histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_created_at: Option<Timestamp>,
}

/// The reply to a claim that found work (200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimReply<J = ClaimedJob> {
    pub job: J,
    pub lease_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Heartbeat well within this.
    pub lease_ttl_seconds: u64,
    pub lease_expires_at: Timestamp,
}

/// What a runner reads of the BootJob it was handed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimedJob {
    pub metadata: ClaimedMetadata,
    /// Kept raw: a spec this runner cannot read (from a newer operator) is the job's error,
    /// reported as `invalid_job`, not a failed claim.
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimedMetadata {
    pub name: String,
}

impl ClaimedJob {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The spec, or why this runner cannot read it.
    pub fn spec(&self) -> Result<BootJobSpec, String> {
        BootJobSpec::deserialize(&self.spec).map_err(|e| e.to_string())
    }
}

/// `POST jobs/{name}/heartbeat`, and the body of `release` without a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    pub lease_id: String,
}

/// The heartbeat's answer: keep going, stop because the job was canceled, or stop because the
/// lease is no longer this runner's. Any other state is a protocol error, never taken for one
/// of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum HeartbeatReply {
    Active {
        #[serde(rename = "leaseExpiresAt")]
        lease_expires_at: Timestamp,
    },
    Canceled,
    Lost,
}

/// `POST jobs/{name}/log?leaseId=…` carries console bytes; this is its query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    pub lease_id: String,
}

/// `POST jobs/{name}/complete`: the verdict of the current attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    pub lease_id: String,
    pub result: BootResult,
}

/// The answer to `complete`: recorded for good, or an infrastructure error put back in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CompleteReply<J = serde::de::IgnoredAny> {
    Finished { job: J },
    Retrying { job: J },
}

/// `POST jobs/{name}/release`: give the job back after an infrastructure failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRequest {
    pub lease_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to `release`, with the job's phase after it (Queued again, or Error when its
/// attempts are spent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ReleaseReply {
    Released { phase: Option<JobPhase> },
}

/// Every error reply of the API: `{"error": {"message", "code", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorReply {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub message: String,
    /// The HTTP status again, for clients that only keep the body.
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_claim_request_is_camel_case_and_omits_what_is_unset() {
        let req = ClaimRequest {
            runner_id: "r1".into(),
            pool: None,
            arches: vec![Arch::X86_64],
            wait_seconds: Some(20),
            runner_created_at: None,
        };
        assert_eq!(
            serde_json::to_value(&req).expect("serializes"),
            json!({"runnerId": "r1", "arches": ["x86_64"], "waitSeconds": 20})
        );
        let old: ClaimRequest = serde_json::from_value(json!({"runnerId": "r2"})).expect("parses");
        assert_eq!(old.pool, None);
        assert!(old.arches.is_empty());
    }

    #[test]
    fn a_bad_creation_time_is_refused() {
        let bad = json!({"runnerId": "r", "runnerCreatedAt": "yesterday"});
        assert!(serde_json::from_value::<ClaimRequest>(bad).is_err());
    }

    #[test]
    fn heartbeat_states_are_tagged_and_an_unknown_one_is_an_error() {
        let active: HeartbeatReply = serde_json::from_value(
            json!({"state": "active", "leaseExpiresAt": "2026-12-02T04:00:00.5Z"}),
        )
        .expect("parses");
        assert!(matches!(active, HeartbeatReply::Active { .. }));
        assert_eq!(
            serde_json::to_value(HeartbeatReply::Canceled).expect("serializes"),
            json!({"state": "canceled"})
        );
        assert!(serde_json::from_value::<HeartbeatReply>(json!({"state": "paused"})).is_err());
        assert!(serde_json::from_value::<HeartbeatReply>(json!({"state": "active"})).is_err());
    }

    #[test]
    fn a_claimed_spec_the_runner_cannot_read_is_the_jobs_error_not_the_claims() {
        let reply: ClaimReply = serde_json::from_value(json!({
            "job": {"metadata": {"name": "j1", "uid": "u"}, "spec": {"arch": "vax", "kernel": {"url": "k"}}},
            "leaseId": "l", "attempt": 2, "leaseTtlSeconds": 30,
            "leaseExpiresAt": "2026-12-02T04:00:00Z"
        }))
        .expect("the claim itself parses");
        assert_eq!(reply.job.name(), "j1");
        assert_eq!(reply.attempt, 2);
        let err = reply.job.spec().expect_err("vax is no arch");
        assert!(err.contains("vax"), "{err}");
    }

    #[test]
    fn complete_and_release_replies_keep_their_wire_shape() {
        let done: CompleteReply =
            serde_json::from_value(json!({"state": "retrying", "job": {"any": 1}}))
                .expect("parses");
        assert!(matches!(done, CompleteReply::Retrying { .. }));
        assert_eq!(
            serde_json::to_value(ReleaseReply::Released {
                phase: Some(JobPhase::Queued)
            })
            .expect("serializes"),
            json!({"state": "released", "phase": "Queued"})
        );
    }
}
