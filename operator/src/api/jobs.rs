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
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase, API_VERSION};
use jiff::Timestamp;
use serde::Deserialize;

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
    state.metrics.arch_seen(stored.spec.arch);
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
pub(super) fn admit(state: &AppState, job: &BootJob) -> Result<(), ApiError> {
    crate::admission::admit_spec(&job.spec, &state.local_artifacts)
        .map(drop)
        .map_err(|errors| ApiError::fields(&errors))
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
) -> Result<Json<BootJobList>, ApiError> {
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
    Ok(Json(BootJobList {
        api_version: API_VERSION,
        kind: "BootJobList",
        metadata: ListMeta { limit, truncated },
        items,
    }))
}

/// The answer of `GET /api/v1/bootjobs`, shaped like a Kubernetes list.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootJobList {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ListMeta,
    pub items: Vec<BootJob>,
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ListMeta {
    /// The page size applied.
    pub limit: usize,
    /// More jobs match than were returned.
    pub truncated: bool,
}

pub(super) async fn find(state: &AppState, name: &str) -> Result<BootJob, ApiError> {
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
    if !crate::queue::phase(&before).is_finished()
        && crate::queue::phase(&job) == JobPhase::Canceled
    {
        tracing::info!(job = %name, "BootJob canceled");
    }
    Ok(Json(job))
}

/// How long `GET …/result` waits for the document of a verdict the status already shows.
const RESULT_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn result(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(stored_result(&state, &name).await?).into_response())
}

/// The result as JUnit XML: one testsuite named after the job.
pub async fn junit(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = stored_result(&state, &name).await?;
    let xml = bootfarm_core::result::junit::to_junit(&result, &name)
        .map_err(|e| ApiError::internal(format!("rendering the JUnit report of {name}: {e}")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response())
}

/// The boot as a shell script for a machine without bootfarm (artifacts fetched from their
/// sources and checked, the same QEMU command with the console on stdio).
pub async fn reproducer(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = stored_result(&state, &name).await?;
    let script = bootfarm_core::result::reproducer::reproducer(&result, &name)
        .map_err(|e| ApiError::NotFound(format!("no reproducer for bootjob {name:?}: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"reproduce.sh\"",
            ),
        ],
        script,
    )
        .into_response())
}

/// `GET …/results.json?format=tuxrun|bootfarm`: the result in TuxRun's results.json shape, or
/// bootfarm's own document (the default, as `/result`).
pub async fn results_json(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let result = stored_result(&state, &name).await?;
    match q.format.as_deref().unwrap_or("bootfarm") {
        "tuxrun" => Ok(Json(bootfarm_core::result::tuxrun::to_tuxrun(&result)).into_response()),
        "bootfarm" => Ok(Json(result).into_response()),
        other => Err(ApiError::BadRequest {
            message: format!("format {other:?}: expected tuxrun or bootfarm"),
            field: Some("format".into()),
        }),
    }
}

#[derive(Debug, Deserialize)]
pub struct ResultsQuery {
    format: Option<String>,
}

/// The job's result document; 404 while it has none.
async fn stored_result(state: &AppState, name: &str) -> Result<BootResult, ApiError> {
    let job = find(state, name).await?;
    // The verdict reaches the status a moment before its document is renamed into place (the
    // document is committed only once the store accepted the lease's result): a client that saw
    // the job finish and asks at once waits for the rename instead of getting a 404.
    let recorded = job.status.as_ref().is_some_and(|s| s.result.is_some());
    let deadline = tokio::time::Instant::now() + RESULT_COMMIT_WAIT;
    let read = loop {
        let (files, lookup) = (state.files.clone(), name.to_string());
        let read = tokio::task::spawn_blocking(move || files.read_result(&lookup))
            .await
            .map_err(ApiError::internal)?;
        if !matches!(read, Ok(None)) || !recorded || tokio::time::Instant::now() >= deadline {
            break read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    match read {
        Ok(Some(result)) => Ok(result),
        Ok(None) => Err(ApiError::NotFound(format!(
            "bootjob {name:?} has no result yet"
        ))),
        Err(e) => Err(ApiError::internal(format!("reading result of {name}: {e}"))),
    }
}
