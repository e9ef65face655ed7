//! Runner endpoints: claim work under a lease (long-poll), heartbeat, append console output,
//! complete with the verdict, or release the job after an infrastructure failure.

use super::error::ApiError;
use super::{read_body, AppState, MAX_RUNNER_BODY};
use crate::store::{ClaimRequest, CompleteOutcome, LeaseState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfarm_core::protocol::{
    self, ClaimReply, CompleteReply, CompleteRequest, HeartbeatReply, LeaseRequest, ReleaseReply,
    ReleaseRequest,
};
use bootfarm_core::spec::{BootJob, JobPhase};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Claims re-check the store at least this often even without a wake-up: jobs can appear
/// without passing through this API (kubectl apply, a lease expiring in housekeeping).
const CLAIM_RECHECK: Duration = Duration::from_secs(1);

/// Parses a JSON body, naming the field on error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ApiError::BadRequest {
            message: format!("{field}: {}", e.inner()),
            field: (field != ".").then_some(field),
        }
    })
}

#[tracing::instrument(name = "claim", skip_all)]
pub async fn claim(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body: protocol::ClaimRequest = parse_json(&read_body(body, MAX_RUNNER_BODY).await?)?;
    if body.runner_id.is_empty() {
        return Err(ApiError::BadRequest {
            message: "runnerId must not be empty".into(),
            field: Some("runnerId".into()),
        });
    }
    if let Some(secs) = body.runner_created_at.map(seconds_since) {
        // Anything beyond a day is a clock problem, not a start-up time.
        if secs < 86_400.0 {
            let pool = body.pool.as_deref().unwrap_or("default");
            state
                .metrics
                .runner_startup_seconds
                .with_label_values(&[pool])
                .observe(secs);
        }
    }
    let req = ClaimRequest {
        runner_id: body.runner_id,
        pool: body.pool.unwrap_or_else(|| "default".into()),
        arches: body.arches,
    };
    let wait = body.wait_seconds.map_or(state.claim_wait, |s| {
        Duration::from_secs(s).min(state.claim_wait)
    });
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for wake-ups before looking, so a submission between the look and the wait
        // is not missed.
        let notified = state.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(claim) = state
            .store
            .claim(&req, state.lease_ttl, Timestamp::now())
            .await?
        {
            observe_queue_wait(&state, &claim.job);
            let name = claim.job.metadata.name.clone().unwrap_or_default();
            if claim.attempt > 1 {
                attempt_marker(&state, &name, claim.attempt, &req.runner_id).await;
            }
            tracing::info!(job = %name, runner = %req.runner_id, attempt = claim.attempt, "Job claimed");
            return Ok(Json(ClaimReply {
                job: claim.job,
                lease_id: claim.lease_id,
                attempt: claim.attempt,
                lease_ttl_seconds: state.lease_ttl.as_secs().max(1),
                lease_expires_at: crate::queue::round_time(claim.expires_at),
            })
            .into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || state.shutdown.is_cancelled() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let wait = (deadline - now).min(CLAIM_RECHECK);
        tokio::select! {
            _ = tokio::time::timeout(wait, notified) => {}
            _ = state.shutdown.cancelled() => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// Marks where a retried job's next console begins, so the attempts' logs do not run together.
async fn attempt_marker(state: &AppState, name: &str, attempt: u32, runner: &str) {
    let files = state.files.clone();
    let (job, runner) = (name.to_string(), runner.to_string());
    let written = tokio::task::spawn_blocking(move || {
        let ends_with_newline = files
            .log_len(&job)
            .ok()
            .filter(|&n| n > 0)
            .and_then(|n| files.read_log(&job, n - 1, 1).ok())
            .is_none_or(|c| c.data == b"\n");
        let marker = format!(
            "{}[bootfarm: attempt {attempt} on runner {runner} at {}]\n",
            if ends_with_newline { "" } else { "\n" },
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
        );
        files.append_log(&job, marker.as_bytes())
    })
    .await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::warn!(
            job = name,
            attempt,
            "Could not mark the new attempt in the log"
        );
    }
}

fn seconds_since(t: Timestamp) -> f64 {
    Timestamp::now().duration_since(t).as_secs_f64().max(0.0)
}

fn observe_queue_wait(state: &AppState, job: &BootJob) {
    let queued = job.status.as_ref().and_then(|s| s.queued_at);
    if let Some(wait) = queued.map(seconds_since) {
        state
            .metrics
            .job_queue_wait_seconds
            .with_label_values(&[job.spec.arch.as_str()])
            .observe(wait);
    }
}

#[tracing::instrument(name = "heartbeat", skip_all, fields(job = %name))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let body: LeaseRequest = parse_json(&read_body(body, MAX_RUNNER_BODY).await?)?;
    let answer = state
        .store
        .heartbeat(&name, &body.lease_id, state.lease_ttl, Timestamp::now())
        .await?;
    Ok(Json(match answer {
        LeaseState::Active { expires_at } => HeartbeatReply::Active {
            lease_expires_at: crate::queue::round_time(expires_at),
        },
        LeaseState::Canceled => HeartbeatReply::Canceled,
        LeaseState::Lost => HeartbeatReply::Lost,
    }))
}

#[tracing::instrument(name = "append_log", skip_all, fields(job = %name))]
pub async fn append_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<protocol::LogQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest {
        message: format!("leaseId query parameter required: {}", e.body_text()),
        field: Some("leaseId".into()),
    })?;
    let bytes = read_body(body, MAX_RUNNER_BODY).await?;
    let job = state.store.get(&name).await?;
    // Only the current lease holder writes: a runner whose lease expired must not interleave
    // its console with the next attempt's. A canceled job still accepts its last chunks.
    let holder = job.as_ref().is_some_and(|j| {
        j.status.as_ref().is_some_and(|s| {
            s.lease_id.as_deref() == Some(q.lease_id.as_str())
                && matches!(s.phase, JobPhase::Running | JobPhase::Canceled)
        })
    });
    if !holder {
        return Err(ApiError::Conflict(format!(
            "lease {} is not the current lease of bootjob {name:?}",
            q.lease_id
        )));
    }
    // A roll of the tail reads what it drops: off the async threads.
    let (files, job_name) = (state.files.clone(), name.clone());
    tokio::task::spawn_blocking(move || files.append_log(&job_name, &bytes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("appending log of {name}: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(name = "complete", skip_all, fields(job = %name))]
pub async fn complete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = read_body(body, MAX_RUNNER_BODY).await?;
    let mut body: CompleteRequest = parse_json(&raw)?;
    // A runner's document is input: impossible numbers are refused, sizes are bounded before
    // anything is stored or copied into the job's status.
    bootfarm_core::result::check::validate(&body.result).map_err(|errs| ApiError::fields(&errs))?;
    bootfarm_core::result::check::bound(&mut body.result);
    // `console.truncated` describes the stored log: true too when this operator cut it.
    let (files, job_name) = (state.files.clone(), name.clone());
    if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || files.log_cut(&job_name)).await {
        body.result.console.truncated = true;
    }
    // The document goes to disk first (a full disk refuses it before anything is recorded, and
    // the runner retries); it is put in place only once the store has recorded the verdict.
    let files = state.files.clone();
    let (file_name, result) = (name.clone(), body.result.clone());
    let staged = tokio::task::spawn_blocking(move || files.stage_result(&file_name, &result))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::Unavailable(format!("cannot write the result of {name}: {e}")))?;
    let outcome = state
        .store
        .complete(&name, &body.lease_id, &body.result, Timestamp::now())
        .await?;
    match outcome {
        CompleteOutcome::Finished(job) => {
            tokio::task::spawn_blocking(move || staged.commit())
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::internal(format!("writing result of {name}: {e}")))?;
            tracing::info!(job = %name, result = body.result.result.as_str(), "Job finished");
            Ok(Json(CompleteReply::Finished { job }).into_response())
        }
        CompleteOutcome::Retrying(job) => {
            state
                .metrics
                .infra_retries_total
                .with_label_values(&[pool_of(&job)])
                .inc();
            state.work_available();
            tracing::info!(job = %name, "Infrastructure error; job requeued");
            Ok(Json(CompleteReply::Retrying { job }).into_response())
        }
        CompleteOutcome::Stale => Err(ApiError::Conflict(format!(
            "lease {} of bootjob {name:?} is not current (expired, canceled or already completed); result not recorded",
            body.lease_id
        ))),
    }
}

fn pool_of(job: &BootJob) -> &str {
    job.status
        .as_ref()
        .and_then(|s| s.pool.as_deref())
        .or(job.spec.pool.as_deref())
        .unwrap_or("default")
}

#[tracing::instrument(name = "release", skip_all, fields(job = %name))]
pub async fn release(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<ReleaseReply>, ApiError> {
    let body: ReleaseRequest = parse_json(&read_body(body, MAX_RUNNER_BODY).await?)?;
    let reason = body
        .reason
        .unwrap_or_else(|| "released by the runner".into());
    let before = state.store.get(&name).await?;
    if !before
        .as_ref()
        .is_some_and(|j| crate::queue::lease_is_current(j, &body.lease_id))
    {
        return Err(ApiError::Conflict(format!(
            "lease {} of bootjob {name:?} is not current; nothing released",
            body.lease_id
        )));
    }
    state
        .store
        .release(&name, &body.lease_id, &reason, Timestamp::now())
        .await?;
    let job = state.store.get(&name).await?;
    let phase = job.as_ref().map(crate::queue::phase);
    if let (Some(job), Some(JobPhase::Queued)) = (&job, phase) {
        state
            .metrics
            .infra_retries_total
            .with_label_values(&[pool_of(job)])
            .inc();
        state.work_available();
    }
    tracing::info!(job = %name, reason = %reason, "Job released by its runner");
    Ok(Json(ReleaseReply::Released { phase }))
}
