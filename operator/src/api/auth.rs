//! Bearer-token authentication with two roles.
//!
//! Token files hold one token per line; blank lines and `#` comments are ignored. A line may carry
//! a role prefix, `user:TOKEN` or `runner:TOKEN`; a line without one takes the file's default role:
//! `--token-file` defaults to `user`, `--runner-token-file` to `runner`. So the Helm chart can
//! mount two plain files, and a single hand-written file can hold both kinds.
//!
//! With no token configured at all, authentication is off (the standalone default on loopback).
//! Once any token is configured, every `/api/v1/` route needs a token of its role: a runner token
//! on a user route (or the reverse) is refused with 403, a missing or unknown token with 401.

use super::error::ApiError;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Runner,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Runner => "runner",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: unknown role {role:?} (expected user: or runner:)")]
    UnknownRole {
        path: String,
        line: usize,
        role: String,
    },
    #[error("{path}:{line}: empty token")]
    Empty { path: String, line: usize },
    /// A token file was given but holds no token: refusing to start beats silently running
    /// with authentication off.
    #[error("token file {path} holds no token (only blank lines and comments); authentication would be off")]
    NoTokens { path: String },
}

/// The accepted tokens, kept as SHA-256 digests. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Tokens {
    inner: Arc<Vec<(Role, [u8; 32])>>,
    failures: Arc<FailureLog>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Tokens")
            .field("user", &self.count(Role::User))
            .field("runner", &self.count(Role::Runner))
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Compares digests, never the tokens: the time taken is the same whatever the presented
/// token's length or content, so a caller cannot learn a token byte by byte.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Failed authentications, logged at most once per `FAILURE_LOG_EVERY` with how many were
/// not logged since (a scan or a misconfigured client must not flood the log).
#[derive(Default)]
struct FailureLog {
    state: std::sync::Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl FailureLog {
    /// Whether to log this failure now, and how many went unlogged before it.
    fn admit(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(t) if now.duration_since(t) < FAILURE_LOG_EVERY => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

impl Tokens {
    /// No tokens: authentication off.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn new(tokens: impl IntoIterator<Item = (Role, String)>) -> Self {
        Tokens {
            inner: Arc::new(tokens.into_iter().map(|(r, t)| (r, digest(&t))).collect()),
            failures: Arc::default(),
        }
    }

    /// Parses a token file's text; `default` is the role of lines without a prefix.
    pub fn parse(
        text: &str,
        default: Role,
        path: &str,
    ) -> Result<Vec<(Role, String)>, TokenFileError> {
        let mut out = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (role, token) = match line.split_once(':') {
                Some(("user", t)) => (Role::User, t.trim()),
                Some(("runner", t)) => (Role::Runner, t.trim()),
                // A prefix-looking word that is not a role is a typo, not part of a token.
                Some((p, _)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()) => {
                    return Err(TokenFileError::UnknownRole {
                        path: path.to_string(),
                        line: i + 1,
                        role: p.to_string(),
                    })
                }
                _ => (default, line),
            };
            if token.is_empty() {
                return Err(TokenFileError::Empty {
                    path: path.to_string(),
                    line: i + 1,
                });
            }
            out.push((role, token.to_string()));
        }
        Ok(out)
    }

    /// Loads user token files (unprefixed lines are user tokens) and runner token files
    /// (unprefixed lines are runner tokens).
    pub fn load(
        user_files: &[impl AsRef<Path>],
        runner_files: &[impl AsRef<Path>],
    ) -> Result<Self, TokenFileError> {
        let mut all = Vec::new();
        let files = user_files
            .iter()
            .map(|p| (p.as_ref(), Role::User))
            .chain(runner_files.iter().map(|p| (p.as_ref(), Role::Runner)));
        for (path, default) in files {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
                path: shown.clone(),
                source,
            })?;
            let tokens = Self::parse(&text, default, &shown)?;
            if tokens.is_empty() {
                return Err(TokenFileError::NoTokens { path: shown });
            }
            all.extend(tokens);
        }
        Ok(Self::new(all))
    }

    /// Adds a fresh random runner token (for runners the operator starts itself, e.g. standalone
    /// child processes) and returns it.
    pub fn with_generated_runner_token(&self) -> (Tokens, String) {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut all = (*self.inner).clone();
        all.push((Role::Runner, digest(&token)));
        (
            Tokens {
                inner: Arc::new(all),
                failures: self.failures.clone(),
            },
            token,
        )
    }

    pub fn enabled(&self) -> bool {
        !self.inner.is_empty()
    }

    pub fn count(&self, role: Role) -> usize {
        self.inner.iter().filter(|(r, _)| *r == role).count()
    }

    /// The role a presented token has, if any.
    fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        // Check every entry (no early exit) so timing does not say which one matched.
        let mut found = None;
        for (role, t) in self.inner.iter() {
            if same(t, &presented) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }

    /// Logs a refused request (rate-limited; never any token material).
    fn log_failure(&self, method: &str, path: &str, why: &ApiError) {
        if let Some(suppressed) = self.failures.admit(std::time::Instant::now()) {
            tracing::warn!(
                method,
                path,
                status = why.status().as_u16(),
                reason = %why,
                suppressed_since_last = suppressed,
                "Authentication failed"
            );
        }
    }

    /// Decides whether a request with this `Authorization` header may use a route of `needed` role.
    pub fn check(&self, authorization: Option<&str>, needed: Role) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(header) = authorization else {
            return Err(ApiError::Unauthorized(
                "missing bearer token (send `Authorization: Bearer TOKEN`)".into(),
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("authorization must be `Bearer TOKEN`".into()))?;
        self.check_token(token, needed)
    }

    /// Decides whether a token (from a header, the session cookie or the login form) may use a
    /// route of `needed` role.
    pub fn check_token(&self, token: &str, needed: Role) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        match self.role_of(token) {
            None => Err(ApiError::Unauthorized("invalid token".into())),
            Some(role) if role == needed => Ok(()),
            Some(role) => Err(ApiError::Forbidden(format!(
                "a {} token cannot call {} endpoints",
                role.as_str(),
                needed.as_str()
            ))),
        }
    }
}

/// The cookie the web UI's login sets: the user token, hex-encoded (cookie-safe whatever the
/// token's characters). HttpOnly, so the page's scripts never hold it.
pub const SESSION_COOKIE: &str = "bootfarm_session";
/// The header the web UI sends on every call. A cookie is sent by the browser on cross-site
/// requests too, but a custom header cannot be added to them without a CORS grant (which this
/// server never gives), so a change authenticated by the cookie alone is refused (CSRF).
pub const UI_HEADER: &str = "x-bootfarm-ui";

/// What a request presents: a bearer header wins over the session cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Header(&'a str),
    Cookie(String),
    Nothing,
}

impl<'a> Presented<'a> {
    pub fn of(headers: &'a axum::http::HeaderMap) -> Self {
        if let Some(h) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            return Presented::Header(h);
        }
        session_token(headers).map_or(Presented::Nothing, Presented::Cookie)
    }
}

/// The token in the session cookie, when there is a well-formed one.
pub fn session_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .and_then(|(_, v)| hex_decode(v.trim()))
}

pub fn hex_encode(s: &str) -> String {
    use std::fmt::Write;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.len() > 2048 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

impl Tokens {
    /// Decides whether what a request presents may use a route of `needed` role. The cookie
    /// counts only for user routes, and for a change (not GET/HEAD) only with [`UI_HEADER`].
    pub fn check_presented(
        &self,
        presented: &Presented<'_>,
        safe_method: bool,
        ui_header: bool,
        needed: Role,
    ) -> Result<(), ApiError> {
        match presented {
            Presented::Header(h) => self.check(Some(h), needed),
            Presented::Nothing => self.check(None, needed),
            Presented::Cookie(_) if !self.enabled() => Ok(()),
            Presented::Cookie(_) if needed != Role::User => self.check(None, needed),
            Presented::Cookie(_) if !safe_method && !ui_header => Err(ApiError::Forbidden(
                format!("a change authenticated by the session cookie needs the {UI_HEADER} header (cross-site requests are refused)"),
            )),
            Presented::Cookie(token) => self
                .check_token(token, needed)
                .map_err(|e| match e {
                    ApiError::Unauthorized(_) => {
                        ApiError::Unauthorized("the session's token is no longer valid; log in again".into())
                    }
                    other => other,
                }),
        }
    }
}

/// Axum middleware guarding a group of routes for one role.
pub async fn require(
    tokens: Tokens,
    role: Role,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let ui = req.headers().contains_key(UI_HEADER);
    let verdict = tokens.check_presented(&Presented::of(req.headers()), safe, ui, role);
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tokens.log_failure(req.method().as_str(), req.uri().path(), &e);
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_comments_and_defaults() {
        let text = "# farm tokens\nalpha\nrunner:beta\n\nuser: gamma\n";
        let got = Tokens::parse(text, Role::User, "t").unwrap();
        assert_eq!(
            got,
            vec![
                (Role::User, "alpha".to_string()),
                (Role::Runner, "beta".to_string()),
                (Role::User, "gamma".to_string())
            ]
        );
        let runner_file = Tokens::parse("delta\n", Role::Runner, "r").unwrap();
        assert_eq!(runner_file, vec![(Role::Runner, "delta".to_string())]);
    }

    #[test]
    fn a_typo_in_the_role_is_an_error_with_the_line() {
        let err = Tokens::parse("ok\nrunnr:abc\n", Role::User, "t").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t:2: unknown role \"runnr\" (expected user: or runner:)"
        );
    }

    #[test]
    fn the_session_cookie_counts_for_user_reads_and_for_ui_changes_only() {
        let t = Tokens::new([(Role::User, "u; 1".into()), (Role::Runner, "r1".into())]);
        let mut h = axum::http::HeaderMap::new();
        let cookie = format!("other=1; {SESSION_COOKIE}={}", hex_encode("u; 1"));
        h.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
        let p = Presented::of(&h);
        assert_eq!(p, Presented::Cookie("u; 1".into()));
        assert!(t.check_presented(&p, true, false, Role::User).is_ok());
        assert!(t.check_presented(&p, false, true, Role::User).is_ok());
        assert!(matches!(
            t.check_presented(&p, false, false, Role::User),
            Err(ApiError::Forbidden(_))
        ));
        // Never a runner's credential, even holding a runner token.
        let runner = Presented::Cookie("r1".into());
        assert!(matches!(
            t.check_presented(&runner, true, true, Role::Runner),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            t.check_presented(&Presented::Cookie("nope".into()), true, true, Role::User),
            Err(ApiError::Unauthorized(_))
        ));
        // A bearer header wins over the cookie.
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer r1".parse().unwrap(),
        );
        assert_eq!(Presented::of(&h), Presented::Header("Bearer r1"));
        // Malformed cookies are no credential.
        for bad in ["zz", "abc", ""] {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::COOKIE,
                format!("{SESSION_COOKIE}={bad}").parse().unwrap(),
            );
            assert!(session_token(&h).is_none_or(|t| t.is_empty()), "{bad}");
        }
    }

    #[test]
    fn check_matrix() {
        let t = Tokens::new([(Role::User, "u1".into()), (Role::Runner, "r1".into())]);
        assert!(t.check(Some("Bearer u1"), Role::User).is_ok());
        assert!(t.check(Some("Bearer r1"), Role::Runner).is_ok());
        assert!(matches!(
            t.check(None, Role::User),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            t.check(Some("Bearer nope"), Role::User),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            t.check(Some("Basic u1"), Role::User),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            t.check(Some("Bearer r1"), Role::User),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            t.check(Some("Bearer u1"), Role::Runner),
            Err(ApiError::Forbidden(_))
        ));
        assert!(Tokens::disabled().check(None, Role::Runner).is_ok());
    }

    #[test]
    fn a_token_file_without_tokens_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["", "\n\n", "# only a comment\n  # and another\n"] {
            let p = dir.path().join("t");
            std::fs::write(&p, text).unwrap();
            let err = Tokens::load(&[&p], &[] as &[&std::path::Path]).unwrap_err();
            assert!(
                matches!(err, TokenFileError::NoTokens { .. }),
                "{text:?}: {err}"
            );
            let err = Tokens::load(&[] as &[&std::path::Path], &[&p]).unwrap_err();
            assert!(err.to_string().contains("holds no token"), "{err}");
        }
    }

    #[test]
    fn tokens_of_any_length_are_compared_by_digest() {
        let t = Tokens::new([(Role::User, "secret-token".into())]);
        for wrong in ["", "s", "secret-toke", "secret-tokenX", &"x".repeat(10_000)] {
            assert!(t.role_of(wrong).is_none(), "{wrong:?}");
        }
        assert_eq!(t.role_of("secret-token"), Some(Role::User));
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn failures_are_logged_at_most_once_per_period_with_a_count() {
        let log = FailureLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0 + std::time::Duration::from_secs(1)), None);
        assert_eq!(log.admit(t0 + std::time::Duration::from_secs(2)), None);
        assert_eq!(
            log.admit(t0 + FAILURE_LOG_EVERY + std::time::Duration::from_secs(1)),
            Some(2)
        );
    }

    #[test]
    fn debug_does_not_print_tokens() {
        let t = Tokens::new([(Role::User, "s3cret".into())]);
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
