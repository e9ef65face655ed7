//! HTTP(S) download into a temporary file: connect/read/total timeouts, bounded retries with
//! exponential backoff on 5xx and connection errors, no retry on 4xx, size limit while streaming.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{header, StatusCode, Url};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use super::error::describe_chain;
use super::policy::{check_url, refusal_in, PolicyResolver, RefusedAddress};
use super::source::redacted;
use super::{ArtifactError, Limits};
use bootfarm_core::netpolicy::NetPolicy;
use std::sync::Arc;

/// What to do with an HTTP response status (a pure decision, tested on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    Accept,
    Retry,
    Fail,
}

pub fn classify_status(status: StatusCode) -> StatusAction {
    if status.is_success() {
        StatusAction::Accept
    } else if status.is_server_error() {
        StatusAction::Retry
    } else {
        // 4xx (and unfollowed 3xx): asking again gives the same answer.
        StatusAction::Fail
    }
}

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Delay before retry number `failures` (1 after the first failure): 0.2 s, 0.4 s, 0.8 s, .. 5 s.
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
}

/// A complete download, hashed while streaming, flushed and fsynced.
pub struct Downloaded {
    pub file: NamedTempFile,
    pub size: u64,
    pub sha256: String,
    pub validators: Validators,
}

/// HTTP validators of a copy, to ask the server whether it changed (a conditional GET).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

pub enum Outcome {
    Downloaded(Downloaded),
    /// The server confirmed the copy described by the validators is current (HTTP 304).
    NotModified,
}

enum Failure {
    Retry(String),
    Fatal(ArtifactError),
}

pub struct Downloader {
    /// Built on first use: loading TLS roots costs milliseconds that a warm, cached start
    /// (no download at all) should not pay.
    client: OnceLock<Result<reqwest::Client, String>>,
    limits: Limits,
    /// The farm's address policy; None: any address (a person's own boot).
    net: Option<Arc<NetPolicy>>,
}

/// Redirects followed at most (reqwest's default too).
const MAX_REDIRECTS: usize = 10;

impl Downloader {
    pub fn new(limits: &Limits, net: Option<NetPolicy>) -> Self {
        Downloader {
            client: OnceLock::new(),
            limits: limits.clone(),
            net: net.map(Arc::new),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, ArtifactError> {
        self.client
            .get_or_init(|| {
                let mut b = reqwest::Client::builder()
                    .connect_timeout(self.limits.connect_timeout)
                    .read_timeout(self.limits.read_timeout)
                    .user_agent(concat!("bootfarm-runner/", env!("CARGO_PKG_VERSION")));
                if let Some(net) = &self.net {
                    // Every address is checked where the connection is made: names by the
                    // resolver, IP literals (which skip it) here and at each redirect. A proxy
                    // would fetch on our behalf from wherever it likes, so none is used.
                    let redirect_net = net.clone();
                    b = b
                        .no_proxy()
                        .dns_resolver(Arc::new(PolicyResolver { net: net.clone() }))
                        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                            if attempt.previous().len() >= MAX_REDIRECTS {
                                return attempt.error("too many redirects");
                            }
                            if !matches!(attempt.url().scheme(), "http" | "https") {
                                return attempt.error("redirect to a scheme other than http(s)");
                            }
                            match check_url(&redirect_net, attempt.url()) {
                                Ok(()) => attempt.follow(),
                                Err(r) => attempt.error(RefusedAddress(r)),
                            }
                        }));
                }
                b.build().map_err(|e| describe_chain(&e))
            })
            .as_ref()
            .map_err(|e| ArtifactError::Internal(format!("HTTP client: {e}")))
    }

    fn refused(url: &Url, reason: impl std::fmt::Display) -> ArtifactError {
        ArtifactError::Refused {
            origin: redacted(url),
            reason: reason.to_string(),
        }
    }

    /// Download `url` into a new temporary file in `tmp_dir`. A failed attempt leaves nothing
    /// behind. With `current`, ask only for a newer copy than the one it describes, once (the
    /// caller still has that copy if the server cannot be reached).
    pub async fn download(
        &self,
        url: &Url,
        tmp_dir: &Path,
        current: Option<&Validators>,
    ) -> Result<Outcome, ArtifactError> {
        let total = self.limits.total_timeout;
        let work = self.download_with_retries(url, tmp_dir, current);
        match tokio::time::timeout(total, work).await {
            Ok(result) => result,
            Err(_) => Err(ArtifactError::DownloadTimeout {
                url: redacted(url),
                seconds: total.as_secs_f64(),
            }),
        }
    }

    async fn download_with_retries(
        &self,
        url: &Url,
        tmp_dir: &Path,
        current: Option<&Validators>,
    ) -> Result<Outcome, ArtifactError> {
        let max_attempts = match current {
            Some(_) => 1,
            None => self.limits.retries.saturating_add(1),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(url, tmp_dir, current).await {
                Ok(outcome) => {
                    if let Outcome::Downloaded(d) = &outcome {
                        tracing::debug!(url = %redacted(url), size = d.size, attempt, "Downloaded");
                    }
                    return Ok(outcome);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason)) if attempt >= max_attempts => {
                    return Err(ArtifactError::Download {
                        url: redacted(url),
                        attempts: attempt,
                        reason,
                    })
                }
                Err(Failure::Retry(reason)) => {
                    let delay = backoff(attempt);
                    tracing::warn!(url = %redacted(url), attempt, %reason, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "Download failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &Url,
        tmp_dir: &Path,
        current: Option<&Validators>,
    ) -> Result<Outcome, Failure> {
        let limits = &self.limits;
        let client = self.client().map_err(Failure::Fatal)?;
        if let Some(net) = &self.net {
            check_url(net, url).map_err(|r| Failure::Fatal(Self::refused(url, r)))?;
        }
        let io_fatal = |what: &str, e: std::io::Error| {
            Failure::Fatal(ArtifactError::io(
                format!("{what} for {}", redacted(url)),
                e,
            ))
        };
        // reqwest's read timeout does not cover waiting for the response head on every
        // version, so bound it here too.
        let head_wait = limits.connect_timeout + limits.read_timeout;
        let mut request = client.get(url.clone());
        if let Some(v) = current {
            if let Some(etag) = &v.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &v.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        let mut response = match tokio::time::timeout(head_wait, request.send()).await {
            Err(_) => {
                return Err(Failure::Retry(format!(
                    "no response within {:.1} s",
                    head_wait.as_secs_f64()
                )))
            }
            Ok(Err(e)) if refusal_in(&e).is_some() => {
                let reason = refusal_in(&e).map(ToString::to_string).unwrap_or_default();
                return Err(Failure::Fatal(Self::refused(url, reason)));
            }
            Ok(Err(e)) if e.is_builder() => {
                return Err(Failure::Fatal(ArtifactError::Unsupported {
                    origin: redacted(url),
                    reason: describe_chain(&e),
                }))
            }
            Ok(Err(e)) => return Err(Failure::Retry(describe_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if current.is_some() && status == StatusCode::NOT_MODIFIED {
            return Ok(Outcome::NotModified);
        }
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header_text(header::ETAG),
            last_modified: header_text(header::LAST_MODIFIED),
        };
        match classify_status(status) {
            StatusAction::Accept => {}
            StatusAction::Retry => return Err(Failure::Retry(format!("HTTP {status}"))),
            StatusAction::Fail => {
                return Err(Failure::Fatal(ArtifactError::HttpStatus {
                    url: redacted(url),
                    status: status.to_string(),
                }))
            }
        }
        let too_large = |what| {
            Failure::Fatal(ArtifactError::TooLarge {
                origin: redacted(url),
                what,
                limit: limits.max_size,
            })
        };
        let announced = response.content_length();
        if announced.is_some_and(|len| len > limits.max_size) {
            return Err(too_large("the announced Content-Length"));
        }

        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(tmp_dir)
            .map_err(|e| io_fatal("creating a temporary file", e))?;
        let handle = tmp
            .as_file()
            .try_clone()
            .map_err(|e| io_fatal("opening the temporary file", e))?;
        let mut writer =
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(handle));
        let stalled = |size: u64| {
            format!(
                "stalled: no data for {:.1} s after {size} bytes",
                limits.read_timeout.as_secs_f64()
            )
        };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        loop {
            let chunk = match tokio::time::timeout(limits.read_timeout, response.chunk()).await {
                Err(_) => return Err(Failure::Retry(stalled(size))),
                // reqwest's own per-read timeout usually fires first.
                Ok(Err(e)) if e.is_timeout() => return Err(Failure::Retry(stalled(size))),
                Ok(Err(e)) => {
                    return Err(Failure::Retry(format!(
                        "reading the body after {size} bytes: {}",
                        describe_chain(&e)
                    )))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            size += chunk.len() as u64;
            if size > limits.max_size {
                return Err(too_large("the download"));
            }
            hasher.update(&chunk);
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| io_fatal("writing the download", e))?;
        }
        if let Some(len) = announced.filter(|&len| len != size) {
            return Err(Failure::Retry(format!(
                "body ended after {size} of {len} bytes"
            )));
        }
        writer
            .flush()
            .await
            .map_err(|e| io_fatal("writing the download", e))?;
        writer
            .into_inner()
            .sync_all()
            .await
            .map_err(|e| io_fatal("syncing the download", e))?;
        Ok(Outcome::Downloaded(Downloaded {
            file: tmp,
            size,
            sha256: hex::encode(hasher.finalize()),
            validators,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_errors_are_retried() {
        assert_eq!(classify_status(StatusCode::OK), StatusAction::Accept);
        assert_eq!(classify_status(StatusCode::NOT_FOUND), StatusAction::Fail);
        assert_eq!(classify_status(StatusCode::FORBIDDEN), StatusAction::Fail);
        assert_eq!(
            classify_status(StatusCode::INTERNAL_SERVER_ERROR),
            StatusAction::Retry
        );
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY),
            StatusAction::Retry
        );
        assert_eq!(
            classify_status(StatusCode::MOVED_PERMANENTLY),
            StatusAction::Fail
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}
