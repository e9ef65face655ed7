//! The web UI: one page shell and its script and stylesheet, compiled into the binary (an
//! offline cluster needs nothing from outside), served at `/` beside the API it calls. Its views
//! are paths, so a job's page is `/jobs/NAME` and a console line is `/jobs/NAME#L412`.
//!
//! The shell holds no data, so it is served without a token; everything it shows comes from the
//! token-guarded API. When tokens are on, its login form posts a user token to `/ui/session`,
//! which sets an HttpOnly cookie that the API accepts for user routes (see
//! [`crate::api::auth::Presented`]): plain links to the raw log or the JUnit file work too.

use crate::api::auth::{self, Role, SESSION_COOKIE};
use crate::api::error::ApiError;
use crate::api::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// How long a login lasts.
const SESSION_SECONDS: u64 = 12 * 3600;

/// The UI's routes: the views, the assets, and the session.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{name}", get(index))
        .route("/pools", get(index))
        .route(
            "/ui/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/ui/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/ui/favicon.svg", get(|| asset(FAVICON, "image/svg+xml")))
        .route("/ui/session", get(session).post(login).delete(logout))
}

/// Headers on every UI response: only our own scripts, styles and API (no inline script, so
/// an escaping bug cannot become script), no framing, no referrer leaking job names.
fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always revalidated: an upgraded operator must not run yesterday's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    hardened(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    hardened(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionState {
    /// Whether the API needs a token at all.
    auth_required: bool,
    /// Whether this request's cookie (or header) is a valid user token.
    authenticated: bool,
}

async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let presented = auth::Presented::of(&headers);
    let authenticated = state
        .tokens
        .check_presented(&presented, true, true, Role::User)
        .is_ok();
    hardened(
        Json(SessionState {
            auth_required: state.tokens.enabled(),
            authenticated,
        })
        .into_response(),
    )
}

#[derive(Debug, Deserialize)]
struct Login {
    token: String,
}

/// `POST /ui/session {"token"}`: checks a user token and keeps it in the session cookie.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // The same rule as a change through the cookie: only the page itself may log in.
    if !headers.contains_key(auth::UI_HEADER) {
        return Err(ApiError::Forbidden(format!(
            "logging in needs the {} header",
            auth::UI_HEADER
        )));
    }
    let Json(login) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let token = login.token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid("token", "the token is empty"));
    }
    state.tokens.check_token(token, Role::User)?;
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict{}",
        auth::hex_encode(token),
        if secure { "; Secure" } else { "" }
    );
    let mut resp = hardened(StatusCode::NO_CONTENT.into_response());
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    tracing::info!("Web UI login");
    Ok(resp)
}

async fn logout() -> Result<Response, ApiError> {
    let mut resp = hardened(StatusCode::NO_CONTENT.into_response());
    let cookie = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(resp)
}
