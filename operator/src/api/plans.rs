//! Plan endpoints: submit a BootPlan (expanded into its jobs at once), a plan's summary, and the
//! comparison of two plans or label selectors.

use super::document;
use super::error::ApiError;
use super::{read_body, AppState};
use crate::plans::{self, PlanView};
use crate::store::{JobFilter, StoreError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfarm_core::compare::{self, Comparison};
use bootfarm_core::plan::{MAX_PLAN_JOBS, PLAN_LABEL};
use bootfarm_core::spec::BootJob;
use jiff::Timestamp;
use serde::Deserialize;

/// Largest BootPlan document accepted: a plan of a thousand kernels is well under this.
pub const MAX_PLAN_BODY: usize = 4 * 1024 * 1024;
/// Node budget of a plan document (a kernel entry is a handful of values).
const MAX_PLAN_NODES: usize = 50_000;

/// `POST /api/v1/plans`: every job of the plan is checked before any is created, and a failure
/// while creating removes the ones already created: a plan is submitted whole or not at all.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let format = document::format_of(content_type)?;
    let bytes = read_body(body, MAX_PLAN_BODY).await?;
    let value = document::to_value_within(format, &bytes, MAX_PLAN_NODES)?;
    let plan = document::bootplan_from_value(value)?;
    let name = plan.metadata.name.clone().unwrap_or_default();
    let jobs = document::plan_jobs(&name, &plan.spec)?;
    for job in &jobs {
        super::jobs::admit(&state, job).map_err(|e| match e {
            ApiError::Invalid { message, field } => ApiError::Invalid {
                message: format!(
                    "plan job {}: {message}",
                    job.metadata.name.as_deref().unwrap_or("?")
                ),
                field,
            },
            other => other,
        })?;
    }
    if !jobs_of(&state, &name, Some(1)).await?.is_empty() {
        return Err(ApiError::Conflict(format!(
            "plan {name:?} already exists (jobs labelled {PLAN_LABEL}={name}); submit it under another name"
        )));
    }
    let mut created: Vec<BootJob> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let job_name = job.metadata.name.clone().unwrap_or_default();
        match state.store.create(job, Timestamp::now()).await {
            Ok(stored) => {
                state.metrics.arch_seen(stored.spec.arch);
                created.push(stored);
            }
            Err(e) => {
                // No half plans: what was created goes again (best effort; each is still a
                // plain job if its deletion fails).
                for done in &created {
                    if let Some(n) = &done.metadata.name {
                        if let Err(d) = state.store.delete(n).await {
                            tracing::warn!(job = %n, error = %d, "removing a job of a refused plan");
                        }
                    }
                }
                return Err(match e {
                    StoreError::AlreadyExists(_) => ApiError::Conflict(format!(
                        "plan {name:?}: a job named {job_name:?} already exists"
                    )),
                    other => other.into(),
                });
            }
        }
    }
    state.work_available();
    tracing::info!(plan = %name, jobs = created.len(), "BootPlan submitted");
    let view = plans::view(&name, &created);
    let mut resp = (StatusCode::CREATED, Json(&view)).into_response();
    if let Ok(loc) = format!("/api/v1/plans/{name}").parse() {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn jobs_of(
    state: &AppState,
    plan: &str,
    limit: Option<usize>,
) -> Result<Vec<BootJob>, ApiError> {
    let filter = JobFilter {
        phase: None,
        labels: vec![(PLAN_LABEL.to_string(), plan.to_string())],
        limit,
    };
    Ok(state.store.list(&filter).await?)
}

/// `GET /api/v1/plans/{name}`: the summary and every job in brief; 404 when no job has the label.
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    let jobs = jobs_of(&state, &name, Some(MAX_PLAN_JOBS + 1)).await?;
    if jobs.is_empty() {
        return Err(ApiError::NotFound(format!(
            "plan {name:?} not found (no job is labelled {PLAN_LABEL}={name})"
        )));
    }
    Ok(Json(plans::view(&name, &jobs)))
}

#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    baseline: Option<String>,
    candidate: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/compare?baseline=A&candidate=B[&format=text]`: each side a plan's name or a label
/// selector (`k=v,...`). JSON by default; the exit-worthy part is `regressions`.
pub async fn compare(
    State(state): State<AppState>,
    query: Result<Query<CompareQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let side = |v: Option<String>, field: &str| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::BadRequest {
                message: format!(
                    "{field} is required: a plan's name or a label selector (k=v,...)"
                ),
                field: Some(field.into()),
            })
    };
    let (baseline, candidate) = (
        side(q.baseline, "baseline")?,
        side(q.candidate, "candidate")?,
    );
    let text = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "text" => true,
        other => {
            return Err(ApiError::BadRequest {
                message: format!("format {other:?}: expected json or text"),
                field: Some("format".into()),
            })
        }
    };
    let base = side_runs(&state, &baseline, "baseline").await?;
    let cand = side_runs(&state, &candidate, "candidate").await?;
    let report: Comparison = compare::compare(&base, &cand);
    if text {
        Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            compare::to_text(&report),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

async fn side_runs(
    state: &AppState,
    side: &str,
    field: &str,
) -> Result<Vec<compare::Run>, ApiError> {
    let labels = JobFilter::parse_selector(&plans::side_selector(side)).map_err(|e| {
        ApiError::BadRequest {
            message: format!("{field}: {e}"),
            field: Some(field.into()),
        }
    })?;
    let filter = JobFilter {
        phase: None,
        labels,
        limit: Some(MAX_PLAN_JOBS + 1),
    };
    let jobs = state.store.list(&filter).await?;
    if jobs.is_empty() {
        return Err(ApiError::NotFound(format!(
            "{field} {side:?}: no job matches"
        )));
    }
    if jobs.len() > MAX_PLAN_JOBS {
        return Err(ApiError::BadRequest {
            message: format!(
                "{field} {side:?}: more than {MAX_PLAN_JOBS} jobs match; narrow the selector"
            ),
            field: Some(field.into()),
        });
    }
    let files = state.files.clone();
    tokio::task::spawn_blocking(move || {
        plans::runs(&jobs, |name| match files.read_result(name) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "reading a result to compare");
                None
            }
        })
    })
    .await
    .map_err(ApiError::internal)
}
