//! Shared by the `api_*` tests: the real router over a SQLite store and job files in a tempdir,
//! driven with `oneshot` (no socket).
// Test-only helpers: a failed unwrap is a failed test, with its location.
#![allow(dead_code, clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bootfarm_core::protocol;
use bootfarm_core::result::{BootResult, ErrorKind, Verdict};
use bootfarm_operator::api::auth::{Role, Tokens};
use bootfarm_operator::api::{router, AppState};
use bootfarm_operator::files::JobFiles;
use bootfarm_operator::metrics::Metrics;
use bootfarm_operator::store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

pub const USER: &str = "user-token-1";
pub const RUNNER: &str = "runner-token-1";

pub struct App {
    pub router: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error.message` of an error response.
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_string)
    }
}

/// An app with authentication off.
pub fn app() -> App {
    build(Tokens::disabled())
}

/// An app with one user and one runner token.
pub fn app_with_tokens() -> App {
    build(Tokens::new([
        (Role::User, USER.to_string()),
        (Role::Runner, RUNNER.to_string()),
    ]))
}

/// An app whose stored console logs are capped at `limit` bytes.
pub fn app_with_console_limit(limit: u64) -> App {
    build_with(Tokens::disabled(), limit)
}

fn build(tokens: Tokens) -> App {
    build_with(tokens, bootfarm_core::console_cap::DEFAULT_FARM_LIMIT)
}

fn build_with(tokens: Tokens, console_limit: u64) -> App {
    let dir = tempfile::tempdir().unwrap();
    let files = JobFiles::new(dir.path()).with_log_cap(console_limit);
    let (metrics, _registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let store = SqliteStore::open(dir.path())
        .unwrap()
        .with_metrics(metrics.clone());
    let mut state = AppState::new(Arc::new(store), files, metrics);
    state.tokens = tokens;
    state.lease_ttl = Duration::from_secs(30);
    state.claim_wait = Duration::from_millis(300);
    App {
        router: router(state.clone()),
        state,
        dir,
    }
}

impl App {
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_string()));
        }
        self.call_with(method, uri, &headers, body).await
    }

    /// A request with exactly these headers.
    pub async fn call_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, Some(USER), None, Body::empty())
            .await
    }

    pub async fn submit_yaml(&self, doc: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/v1/bootjobs",
            Some(USER),
            Some("application/yaml"),
            doc.to_string(),
        )
        .await
    }

    /// Posts a protocol body (the types runners use) to a runner endpoint.
    pub async fn runner_send(&self, path: &str, body: &impl serde::Serialize) -> Resp {
        self.runner_post(path, serde_json::to_value(body).unwrap())
            .await
    }

    /// Posts raw JSON to a runner endpoint (for bodies no runner would send).
    pub async fn runner_post(&self, path: &str, body: Value) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v1/runner/{path}"),
            Some(RUNNER),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// Hands back `name` under `lease`, saying why.
    pub async fn release(&self, name: &str, lease: &str, reason: &str) -> Resp {
        let body = protocol::ReleaseRequest {
            lease_id: lease.into(),
            reason: Some(reason.into()),
        };
        self.runner_send(&format!("jobs/{name}/release"), &body)
            .await
    }

    /// Claims as `runner`; returns (job name, lease id) or None on 204.
    pub async fn claim(&self, runner: &str) -> Option<(String, String)> {
        let body = protocol::ClaimRequest {
            runner_id: runner.into(),
            pool: Some("default".into()),
            arches: Vec::new(),
            wait_seconds: None,
            runner_created_at: None,
        };
        let r = self.runner_send("claim", &body).await;
        match r.status {
            StatusCode::NO_CONTENT => None,
            StatusCode::OK => {
                let reply: protocol::ClaimReply = serde_json::from_value(r.json()).unwrap();
                Some((reply.job.metadata.name, reply.lease_id))
            }
            other => panic!("claim: {other}: {}", r.text()),
        }
    }

    /// Submits `name`, claims it and completes it with `verdict` (typed as a runner sends it).
    pub async fn finish(&self, name: &str, verdict: Verdict) {
        self.finish_with(name, result(verdict)).await;
    }

    /// Submits `name`, claims it and completes it with `result`.
    pub async fn finish_with(&self, name: &str, result: BootResult) {
        self.submit_yaml(&job_yaml(name)).await;
        let (claimed, lease) = self.claim("r1").await.expect("the job is claimable");
        assert_eq!(claimed, name);
        let body = protocol::CompleteRequest {
            lease_id: lease,
            result,
        };
        let done = self
            .runner_send(&format!("jobs/{name}/complete"), &body)
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    }

    /// Names of all stored jobs.
    pub async fn names(&self) -> Vec<String> {
        let r = self.get("/api/v1/bootjobs").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn phase(&self, name: &str) -> String {
        let r = self.get(&format!("/api/v1/bootjobs/{name}")).await;
        r.json()["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn job_yaml(name: &str) -> String {
    format!(
        "apiVersion: bootfarm.dev/v1alpha1
kind: BootJob
metadata:
  name: {name}
  labels:
    team: kernel
spec:
  arch: x86_64
  kernel:
    url: https://artifacts.example/vmlinuz
  initrd:
    url: https://artifacts.example/initrd.cpio.gz
  bootArgs: console=ttyS0
"
    )
}

pub fn result(verdict: Verdict) -> BootResult {
    let mut r = BootResult::error(ErrorKind::Internal, "test result");
    r.result = verdict;
    if verdict != Verdict::Error {
        r.error = None;
        r.reason = "poweroff".into();
    }
    r
}
