//! User endpoints: submit, list, get, cancel, console log, result.

use super::document;
use super::error::ApiError;
use super::{read_body, AppState, MAX_JOB_BODY};
use crate::store::JobFilter;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfarm_core::spec::{BootJob, JobPhase, API_VERSION};
use jiff::Timestamp;
use serde::Deserialize;
use std::time::Duration;

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Largest piece of log sent per read.
const LOG_READ_CHUNK: usize = 256 * 1024;
/// `GET /api/v1/bootjobs` page size when `limit` is not given, and the largest one allowed:
/// a farm keeps every finished job until its TTL, so "all" can be far too many to load.
pub const DEFAULT_LIST_LIMIT: usize = 500;
pub const MAX_LIST_LIMIT: usize = 5000;

pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    // Check the type before reading: a wrong type is refused whatever its size.
    document::format_of(content_type)?;
    let bytes = read_body(body, MAX_JOB_BODY).await?;
    let job = document::parse_bootjob(content_type, &bytes)?;
    admit(&state, &job)?;
    let stored = state.store.create(job, Timestamp::now()).await?;
    state.work_available();
    let name = stored.metadata.name.clone().unwrap_or_default();
    tracing::info!(job = %name, arch = %stored.spec.arch, "BootJob submitted");
    let mut resp = (StatusCode::CREATED, Json(&stored)).into_response();
    if let Ok(loc) = format!("/api/v1/bootjobs/{name}").parse() {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Semantic checks beyond the schema and the farm's own rules ([`crate::admission`]).
fn admit(state: &AppState, job: &BootJob) -> Result<(), ApiError> {
    crate::admission::admit_spec(&job.spec, &state.local_artifacts)
        .map(drop)
        .map_err(|errors| {
            let field = errors.first().map(|e| e.field.clone()).unwrap_or_default();
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            ApiError::invalid(field, message)
        })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    phase: Option<String>,
    label_selector: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let phase = q
        .phase
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(str::parse::<JobPhase>)
        .transpose()
        .map_err(|e| ApiError::BadRequest {
            message: format!("phase: {e} (expected one of Pending, Queued, Running, Succeeded, Failed, Error, Canceled)"),
            field: Some("phase".into()),
        })?;
    let labels =
        JobFilter::parse_selector(q.label_selector.as_deref().unwrap_or("")).map_err(|e| {
            ApiError::BadRequest {
                message: format!("labelSelector: {e}"),
                field: Some("labelSelector".into()),
            }
        })?;
    let limit = match q.limit {
        None => DEFAULT_LIST_LIMIT,
        Some(n @ 1..=MAX_LIST_LIMIT) => n,
        Some(n) => {
            return Err(ApiError::BadRequest {
                message: format!("limit: {n} is out of range (1 to {MAX_LIST_LIMIT})"),
                field: Some("limit".into()),
            })
        }
    };
    // One more than asked tells whether the list was cut.
    let filter = JobFilter {
        phase,
        labels,
        limit: Some(limit + 1),
    };
    let mut items = state.store.list(&filter).await?;
    let truncated = items.len() > limit;
    items.truncate(limit);
    Ok(Json(serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "BootJobList",
        "metadata": {"limit": limit, "truncated": truncated},
        "items": items,
    })))
}

async fn find(state: &AppState, name: &str) -> Result<BootJob, ApiError> {
    state
        .store
        .get(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bootjob {name:?} not found")))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BootJob>, ApiError> {
    Ok(Json(find(&state, &name).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BootJob>, ApiError> {
    let before = find(&state, &name).await?;
    let job = state
        .store
        .cancel(&name, Timestamp::now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bootjob {name:?} not found")))?;
    let was_finished = crate::queue::phase(&before).is_finished();
    if !was_finished && crate::queue::phase(&job) == JobPhase::Canceled {
        state
            .metrics
            .jobs_finished_total
            .with_label_values(&[job.spec.arch.as_str(), "canceled"])
            .inc();
        tracing::info!(job = %name, "BootJob canceled");
    }
    Ok(Json(job))
}

pub async fn result(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    find(&state, &name).await?;
    let files = state.files.clone();
    let lookup = name.clone();
    let read = tokio::task::spawn_blocking(move || files.read_result(&lookup))
        .await
        .map_err(ApiError::internal)?;
    match read {
        Ok(Some(result)) => Ok(Json(result).into_response()),
        Ok(None) => Err(ApiError::NotFound(format!(
            "bootjob {name:?} has no result yet"
        ))),
        Err(e) => Err(ApiError::internal(format!("reading result of {name}: {e}"))),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

pub async fn log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let job = find(&state, &name).await?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow || crate::queue::phase(&job).is_finished() {
        let chunk = read_log(&state, &name, 0, usize::MAX)
            .await
            .map_err(|e| ApiError::internal(format!("reading log of {name}: {e}")))?;
        return Ok((StatusCode::OK, text_plain, chunk.data).into_response());
    }
    let stream = follow(state, name);
    Ok((StatusCode::OK, text_plain, Body::from_stream(stream)).into_response())
}

struct Follow {
    state: AppState,
    name: String,
    offset: u64,
    deadline: tokio::time::Instant,
    /// The job finished: one last read drains what the runner wrote before the end.
    last_read: bool,
    done: bool,
}

/// Streams the log from the start, then new bytes as they arrive, until the job finishes, the
/// job disappears, or `follow_limit` passes. Dropping the stream (client gone) stops the polling.
fn follow(
    state: AppState,
    name: String,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let deadline = tokio::time::Instant::now() + state.follow_limit;
    let start = Follow {
        state,
        name,
        offset: 0,
        deadline,
        last_read: false,
        done: false,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            let chunk = match read_log(&f.state, &f.name, f.offset, LOG_READ_CHUNK).await {
                Ok(c) => c.data,
                Err(e) => {
                    tracing::warn!(job = %f.name, error = %e, "Following log failed");
                    return None;
                }
            };
            if !chunk.is_empty() {
                f.offset += chunk.len() as u64;
                return Some((Ok(bytes::Bytes::from(chunk)), f));
            }
            if f.last_read
                || tokio::time::Instant::now() >= f.deadline
                || f.state.shutdown.is_cancelled()
            {
                f.done = true;
                continue;
            }
            let finished = match f.state.store.get(&f.name).await {
                Ok(Some(job)) => crate::queue::phase(&job).is_finished(),
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(job = %f.name, error = %e, "Following log: store lookup failed");
                    false
                }
            };
            if finished {
                f.last_read = true;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = f.state.shutdown.cancelled() => {}
            }
        }
    })
}

/// Reads a piece of the log off the async threads (a whole log can be 16 MiB).
async fn read_log(
    state: &AppState,
    name: &str,
    offset: u64,
    max: usize,
) -> Result<crate::files::LogChunk, String> {
    let files = state.files.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || files.read_log(&name, offset, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
