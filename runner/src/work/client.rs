//! The runner's side of the operator's `/api/v1/runner/` endpoints.

use bootfarm_core::result::BootResult;
use bootfarm_core::spec::BootJobSpec;
use bootfarm_core::Arch;
use serde::Deserialize;
use serde_json::json;
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
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network(_) => true,
            // 5xx: the operator's store is briefly unavailable.
            ClientError::Refused { status, .. } => *status >= 500,
            ClientError::Stale(_) => false,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimResponse {
    job: serde_json::Value,
    lease_id: String,
    attempt: u32,
    lease_ttl_seconds: u64,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base: format!("{}/api/v1/runner", server.trim_end_matches('/')),
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
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        if status == reqwest::StatusCode::CONFLICT {
            return Err(ClientError::Stale(message));
        }
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    /// Long-polls for work for up to `wait`; `None` when there was none.
    pub async fn claim(
        &self,
        runner_id: &str,
        pool: &str,
        arches: &[Arch],
        wait: Duration,
        created_at: Option<&str>,
    ) -> Result<Option<Claimed>, ClientError> {
        let mut body = json!({
            "runnerId": runner_id,
            "pool": pool,
            "arches": arches,
            "waitSeconds": wait.as_secs(),
        });
        if let Some(t) = created_at {
            body["runnerCreatedAt"] = json!(t);
        }
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
        let c: ClaimResponse = resp
            .json()
            .await
            .map_err(|e| ClientError::Network(format!("reading the claim: {e}")))?;
        let name = c.job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec =
            serde_json::from_value::<BootJobSpec>(c.job["spec"].clone()).map_err(|e| e.to_string());
        Ok(Some(Claimed {
            name,
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
                    .json(&json!({"leaseId": lease_id})),
            )
            .await?;
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| ClientError::Network(format!("reading the heartbeat answer: {e}")))?;
        Ok(match v["state"].as_str() {
            Some("active") => Lease::Active,
            Some("canceled") => Lease::Canceled,
            _ => Lease::Lost,
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
                .query(&[("leaseId", lease_id)])
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(chunk),
        )
        .await
        .map(drop)
    }

    pub async fn complete(
        &self,
        name: &str,
        lease_id: &str,
        result: &BootResult,
    ) -> Result<(), ClientError> {
        self.send(
            self.post(&format!("jobs/{name}/complete"), Duration::from_secs(30))
                .json(&json!({"leaseId": lease_id, "result": result})),
        )
        .await
        .map(drop)
    }

    pub async fn release(
        &self,
        name: &str,
        lease_id: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.send(
            self.post(&format!("jobs/{name}/release"), Duration::from_secs(10))
                .json(&json!({"leaseId": lease_id, "reason": reason})),
        )
        .await
        .map(drop)
    }
}
