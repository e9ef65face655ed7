//! The HTTP API (the same in Kubernetes and standalone mode): user endpoints to submit, list,
//! inspect and cancel BootJobs; runner endpoints to claim work under a lease, heartbeat, stream
//! the console and post the verdict; health, readiness, metrics and the OpenAPI document.
//!
//! `router(state)` builds the whole app, so tests drive it with `oneshot` and no socket.

pub mod auth;
pub mod document;
pub mod error;
mod jobs;
mod logs;
pub mod openapi;
mod plans;
mod runner;
pub mod server;

use crate::admission::LocalArtifacts;
use crate::files::JobFiles;
use crate::metrics::Metrics;
use crate::pools::PoolBoard;
use crate::store::JobStore;
use auth::{Role, Tokens};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
pub use jobs::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Largest BootJob document accepted (a real one is a few KiB).
pub const MAX_JOB_BODY: usize = 1024 * 1024;
/// Largest runner request body: result documents carry console excerpts; log chunks are batched.
pub const MAX_RUNNER_BODY: usize = 8 * 1024 * 1024;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn JobStore>,
    pub files: JobFiles,
    pub metrics: Arc<Metrics>,
    pub tokens: Tokens,
    /// How long a claim's lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How long a claim long-polls before answering 204.
    pub claim_wait: Duration,
    /// Upper bound on one `?follow=true` log stream.
    pub follow_limit: Duration,
    /// Signalled when work may have appeared (submission, requeue): wakes long-polling claims.
    pub work: Arc<Notify>,
    /// Cancelled when the server is stopping: long-polls answer 204 and log follows end, so a
    /// graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// Where local artifacts may come from (none by default).
    pub local_artifacts: LocalArtifacts,
    /// The pools' views (`GET /api/v1/pools`), written by whichever scaler runs.
    pub pools: PoolBoard,
}

impl AppState {
    /// Defaults: 30 s leases, 25 s claim long-poll, 2 h log follow, no authentication.
    pub fn new(store: Arc<dyn JobStore>, files: JobFiles, metrics: Arc<Metrics>) -> Self {
        AppState {
            store,
            files,
            metrics,
            tokens: Tokens::disabled(),
            lease_ttl: Duration::from_secs(30),
            claim_wait: Duration::from_secs(25),
            follow_limit: Duration::from_secs(2 * 3600),
            work: Arc::new(Notify::new()),
            shutdown: CancellationToken::new(),
            local_artifacts: LocalArtifacts::none(),
            pools: PoolBoard::new(),
        }
    }

    /// Wake every long-polling claim (call after anything that may have queued a job).
    pub fn work_available(&self) {
        self.work.notify_waiters();
    }
}

/// Warns when the API is reachable beyond this machine with no tokens configured: anyone who can
/// reach it could submit jobs (arbitrary kernels and URLs) or pose as a runner.
pub fn warn_if_exposed(listen: std::net::SocketAddr, tokens: &Tokens) {
    if !listen.ip().is_loopback() && !tokens.enabled() {
        tracing::warn!(
            listen = %listen,
            "API listening beyond loopback without authentication; pass --token-file to require tokens"
        );
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let user_tokens = state.tokens.clone();
    let runner_tokens = state.tokens.clone();
    let user = Router::new()
        .route("/api/v1/bootjobs", post(jobs::submit).get(jobs::list))
        .route(
            "/api/v1/bootjobs/{name}",
            get(jobs::get_one).delete(jobs::cancel),
        )
        .route("/api/v1/bootjobs/{name}/log", get(logs::log))
        .route("/api/v1/pools", get(pools))
        .route("/api/v1/bootjobs/{name}/result", get(jobs::result))
        .route("/api/v1/bootjobs/{name}/junit", get(jobs::junit))
        .route("/api/v1/bootjobs/{name}/reproducer", get(jobs::reproducer))
        .route(
            "/api/v1/bootjobs/{name}/results.json",
            get(jobs::results_json),
        )
        .route("/api/v1/plans", post(plans::submit))
        .route("/api/v1/plans/{name}", get(plans::get_one))
        .route("/api/v1/compare", get(plans::compare))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            auth::require(user_tokens.clone(), Role::User, req, next)
        }));
    let runner = Router::new()
        .route("/api/v1/runner/claim", post(runner::claim))
        .route(
            "/api/v1/runner/jobs/{name}/heartbeat",
            post(runner::heartbeat),
        )
        .route("/api/v1/runner/jobs/{name}/log", post(runner::append_log))
        .route(
            "/api/v1/runner/jobs/{name}/complete",
            post(runner::complete),
        )
        .route("/api/v1/runner/jobs/{name}/release", post(runner::release))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            auth::require(runner_tokens.clone(), Role::Runner, req, next)
        }));
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .merge(user)
        .merge(runner)
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .with_state(state)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            track(metrics.clone(), req, next)
        }))
}

/// Counts and times every request by its matched route (never the raw path: names would explode
/// the label set).
async fn track(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics
        .http_requests_total
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    metrics
        .http_request_duration_seconds
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// `GET /api/v1/pools`: each pool's runners, desired count, queue and last scale decisions.
async fn pools(State(state): State<AppState>) -> Json<PoolList> {
    Json(PoolList {
        api_version: bootfarm_core::spec::API_VERSION,
        kind: "RunnerPoolViewList",
        items: state.pools.snapshot(),
    })
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolList {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub items: Vec<crate::pools::PoolView>,
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.store.ready().await {
        Ok(()) => Ok("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "Readiness probe: the store is not ready");
            Err(ApiError::Unavailable(format!("not ready: {e}")))
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    // Jobs by phase are refreshed at scrape time so the gauge is right even between housekeeping ticks.
    match state.store.counts().await {
        Ok(counts) => {
            for phase in bootfarm_core::spec::JobPhase::ALL {
                let n = counts.by_phase.get(&phase).copied().unwrap_or(0);
                state
                    .metrics
                    .jobs
                    .with_label_values(&[phase.as_str()])
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "Metrics: counting jobs failed"),
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Longest time a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body up to `limit` bytes within [`BODY_TIMEOUT`]; beyond the size, 413 with
/// the limit in the message; too slow, 408.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))
        })?;
    read.map_err(|e| {
        // axum wraps http-body's LengthLimitError; its text is the stable part we can see.
        let too_large = e.to_string().contains("length limit");
        if too_large {
            ApiError::PayloadTooLarge(format!("request body larger than {limit} bytes"))
        } else {
            ApiError::bad_request(format!("reading the request body: {e}"))
        }
    })
}

/// Maps store errors to HTTP: name taken → 409, invalid → 422, backend → 503.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::AlreadyExists(name) => {
                ApiError::Conflict(format!("bootjob {name:?} already exists"))
            }
            StoreError::Invalid(msg) => ApiError::invalid("", msg),
            StoreError::Conflict(msg) => {
                ApiError::Conflict(format!("concurrent update, retry: {msg}"))
            }
            StoreError::Backend(msg) => {
                tracing::error!(error = %msg, "Store backend failed");
                ApiError::Unavailable("the job store is unavailable; retry later".into())
            }
            StoreError::Storage(msg) => {
                tracing::error!(error = %msg, "Store cannot write");
                ApiError::Unavailable(format!("the job store cannot write ({msg}); retry later"))
            }
        }
    }
}
