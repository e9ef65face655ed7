//! The runner's side of the operator's `/api/v1/runner/` endpoints.

use bootfarm_core::protocol::{
    ClaimReply, ClaimRequest, CompleteReply, CompleteRequest, ErrorReply, HeartbeatReply,
    LeaseRequest, ReleaseRequest, RUNNER_API,
};
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::BootJobSpec;
use bootfarm_core::Arch;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The operator could not be reached or did not answer in time: worth retrying.
    #[error("operator unreachable: {0}")]
    Network(String),
    /// The lease is not ours any more (409): stop, post nothing more.
    #[error("stale lease: {0}")]
    Stale(String),
    /// Any other refusal (bad token, bad request): retrying will not help.
    #[error("operator refused: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// The operator answered something this runner does not understand (a newer protocol).
    #[error("unexpected answer from the operator: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network(_) => true,
            // 5xx: the operator's store is briefly unavailable.
            ClientError::Refused { status, .. } => *status >= 500,
            ClientError::Stale(_) | ClientError::Protocol(_) => false,
        }
    }
}

/// A job handed to this runner.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub name: String,
    pub lease_id: String,
    pub attempt: u32,
    pub lease_ttl: Duration,
    /// The spec, or why it could not be read (an operator newer than this runner).
    pub spec: Result<BootJobSpec, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Active,
    Canceled,
    Lost,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base: format!("{}{RUNNER_API}", server.trim_end_matches('/')),
            token,
        })
    }

    fn post(&self, path: &str, timeout: Duration) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(format!("{}/{path}", self.base))
            .timeout(timeout);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Network(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorReply>(&body)
            .map(|r| r.error.message)
            .unwrap_or(body);
        if status == reqwest::StatusCode::CONFLICT {
            return Err(ClientError::Stale(message));
        }
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    /// Reads a reply body as its protocol type.
    async fn reply<T: DeserializeOwned>(
        resp: reqwest::Response,
        what: &str,
    ) -> Result<T, ClientError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Network(format!("reading the {what} answer: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("the {what} answer: {e}")))
    }

    /// Long-polls for work for up to `wait`; `None` when there was none.
    pub async fn claim(
        &self,
        runner_id: &str,
        pool: &str,
        arches: &[Arch],
        wait: Duration,
        created_at: Option<jiff::Timestamp>,
    ) -> Result<Option<Claimed>, ClientError> {
        let body = ClaimRequest {
            runner_id: runner_id.to_string(),
            pool: Some(pool.to_string()),
            arches: arches.to_vec(),
            wait_seconds: Some(wait.as_secs()),
            runner_created_at: created_at,
        };
        // The server answers within its own wait; the margin covers a slow store.
        let resp = self
            .send(
                self.post("claim", wait + Duration::from_secs(30))
                    .json(&body),
            )
            .await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let c: ClaimReply = Self::reply(resp, "claim").await?;
        let spec = c.job.spec();
        Ok(Some(Claimed {
            name: c.job.metadata.name,
            lease_id: c.lease_id,
            attempt: c.attempt,
            lease_ttl: Duration::from_secs(c.lease_ttl_seconds.max(1)),
            spec,
        }))
    }

    pub async fn heartbeat(&self, name: &str, lease_id: &str) -> Result<Lease, ClientError> {
        let resp = self
            .send(
                self.post(&format!("jobs/{name}/heartbeat"), Duration::from_secs(10))
                    .json(&LeaseRequest {
                        lease_id: lease_id.to_string(),
                    }),
            )
            .await?;
        Ok(match Self::reply(resp, "heartbeat").await? {
            HeartbeatReply::Active { .. } => Lease::Active,
            HeartbeatReply::Canceled => Lease::Canceled,
            HeartbeatReply::Lost => Lease::Lost,
        })
    }

    pub async fn append_log(
        &self,
        name: &str,
        lease_id: &str,
        chunk: bytes::Bytes,
    ) -> Result<(), ClientError> {
        self.send(
            self.post(&format!("jobs/{name}/log"), Duration::from_secs(30))
                .query(&bootfarm_core::protocol::LogQuery {
                    lease_id: lease_id.to_string(),
                })
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(chunk),
        )
        .await
        .map(drop)
    }

    /// Records the verdict; the answer says whether the job is done or was queued again.
    pub async fn complete(
        &self,
        name: &str,
        lease_id: &str,
        result: &BootResult,
    ) -> Result<CompleteReply, ClientError> {
        let resp = self
            .send(
                self.post(&format!("jobs/{name}/complete"), Duration::from_secs(30))
                    .json(&CompleteRequest {
                        lease_id: lease_id.to_string(),
                        result: result.clone(),
                    }),
            )
            .await?;
        Self::reply(resp, "complete").await
    }

    pub async fn release(
        &self,
        name: &str,
        lease_id: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.send(
            self.post(&format!("jobs/{name}/release"), Duration::from_secs(10))
                .json(&ReleaseRequest {
                    lease_id: lease_id.to_string(),
                    reason: Some(reason.to_string()),
                }),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    use std::sync::{Arc, Mutex};

    /// A stand-in operator answering each endpoint with a canned body; keeps what was posted.
    async fn operator(replies: serde_json::Value) -> (Client, Arc<Mutex<Vec<serde_json::Value>>>) {
        type Seen = Arc<Mutex<Vec<serde_json::Value>>>;
        let seen: Seen = Arc::default();
        let answer = |key: &'static str| {
            let reply = replies[key].clone();
            move |State(seen): State<Seen>, Json(body): Json<serde_json::Value>| {
                let reply = reply.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    Json(reply)
                }
            }
        };
        let app = Router::new()
            .route("/api/v1/runner/claim", post(answer("claim")))
            .route(
                "/api/v1/runner/jobs/j1/heartbeat",
                post(answer("heartbeat")),
            )
            .route("/api/v1/runner/jobs/j1/complete", post(answer("complete")))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&format!("http://{addr}"), None).unwrap();
        (client, seen)
    }

    #[tokio::test]
    async fn a_claim_is_a_typed_request_and_an_unreadable_spec_is_the_jobs_error() {
        let (client, seen) = operator(serde_json::json!({"claim": {
            "job": {"metadata": {"name": "j1"}, "spec": {"arch": "vax", "kernel": {"url": "k"}}},
            "leaseId": "l1", "attempt": 2, "leaseTtlSeconds": 30,
            "leaseExpiresAt": "2026-12-02T04:00:00Z"
        }}))
        .await;
        let created: jiff::Timestamp = "2026-12-02T03:59:00Z".parse().unwrap();
        let claimed = client
            .claim(
                "r1",
                "default",
                &[Arch::Arm64],
                Duration::from_secs(5),
                Some(created),
            )
            .await
            .unwrap()
            .expect("work");
        assert_eq!(
            (claimed.name.as_str(), claimed.lease_id.as_str()),
            ("j1", "l1")
        );
        assert_eq!(claimed.attempt, 2);
        assert!(claimed.spec.unwrap_err().contains("vax"));
        let sent: ClaimRequest = serde_json::from_value(seen.lock().unwrap()[0].clone()).unwrap();
        assert_eq!(sent.runner_id, "r1");
        assert_eq!(sent.arches, [Arch::Arm64]);
        assert_eq!(sent.runner_created_at, Some(created));
    }

    #[tokio::test]
    async fn an_unknown_heartbeat_state_is_an_error_not_a_lost_lease() {
        let (client, _) = operator(serde_json::json!({"heartbeat": {"state": "paused"}})).await;
        let err = client.heartbeat("j1", "l1").await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        assert!(!err.is_retryable());
        let (client, seen) =
            operator(serde_json::json!({"heartbeat": {"state": "canceled"}})).await;
        assert_eq!(client.heartbeat("j1", "l1").await.unwrap(), Lease::Canceled);
        let sent: LeaseRequest = serde_json::from_value(seen.lock().unwrap()[0].clone()).unwrap();
        assert_eq!(sent.lease_id, "l1");
    }

    #[tokio::test]
    async fn complete_says_whether_the_job_was_queued_again() {
        let (client, seen) =
            operator(serde_json::json!({"complete": {"state": "retrying", "job": {"x": 1}}})).await;
        let result = BootResult::error(bootfarm_core::result::ErrorKind::QemuFailed, "boom");
        let reply = client.complete("j1", "l1", &result).await.unwrap();
        assert!(matches!(reply, CompleteReply::Retrying { .. }));
        let sent: CompleteRequest =
            serde_json::from_value(seen.lock().unwrap()[0].clone()).unwrap();
        assert_eq!(sent.result, result);
    }
}
