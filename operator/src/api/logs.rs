//! `GET /api/v1/bootjobs/{name}/log`: the console log, streamed from disk in bounded chunks
//! (memory stays flat whatever the log's size and the number of readers), with `Range` for
//! pieces of it (`bytes=a-b`, `bytes=a-`, `bytes=-n`), and `?follow=true` to keep streaming
//! new bytes until the job ends (from the range's start when one is given).
//!
//! The log served is the stored head, the cut marker when the tail rolled, and the tail
//! ([`crate::files::stored_log`]), as they were when the request came: a whole response is one
//! consistent log. A follower reads by stream position, so a tail rolling under it costs it a
//! marker, never repeated or misplaced bytes.

use super::error::ApiError;
use super::jobs::find;
use super::AppState;
use crate::files::{LogChunk, LogView};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Largest piece of log read and sent at once.
const CHUNK: usize = 64 * 1024;

/// A byte range of a log of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

/// Reads a `Range` header against a log of `len` bytes. `Ok(None)`: serve the whole log (no
/// header, or one we do not handle, such as several ranges, which RFC 9110 lets us ignore).
pub fn parse_range(value: &str, len: u64) -> Result<Option<ByteRange>, ApiError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => {
            let n = num(b).ok_or(ApiError::RangeNotSatisfiable(len))?;
            if n == 0 || len == 0 {
                return Err(ApiError::RangeNotSatisfiable(len));
            }
            ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }
        }
        (false, true) => ByteRange {
            start: num(a).ok_or(ApiError::RangeNotSatisfiable(len))?,
            end: len.saturating_sub(1),
        },
        (false, false) => {
            let (start, end) = (
                num(a).ok_or(ApiError::RangeNotSatisfiable(len))?,
                num(b).ok_or(ApiError::RangeNotSatisfiable(len))?,
            );
            if end < start {
                return Err(ApiError::RangeNotSatisfiable(len));
            }
            ByteRange {
                start,
                end: end.min(len.saturating_sub(1)),
            }
        }
        (true, true) => return Ok(None),
    };
    if range.start >= len {
        return Err(ApiError::RangeNotSatisfiable(len));
    }
    Ok(Some(range))
}

/// Where a follow starts: the range's start, where `bytes=LEN-` (the byte after the last one
/// written) is allowed too, so a follower resuming where it stopped waits for the next bytes
/// instead of being refused.
pub fn follow_start(value: &str, len: u64) -> Result<u64, ApiError> {
    match open_ended_start(value) {
        Some(n) if n <= len => Ok(n),
        Some(_) => Err(ApiError::RangeNotSatisfiable(len)),
        None => Ok(parse_range(value, len)?.map_or(0, |r| r.start)),
    }
}

/// N of `bytes=N-`.
fn open_ended_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.trim().strip_suffix('-'))
        .and_then(|n| n.trim().parse::<u64>().ok())
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

pub async fn log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let job = find(&state, &name).await?;
    let files = state.files.clone();
    let lookup = name.clone();
    let view = tokio::task::spawn_blocking(move || files.open_log(&lookup))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("opening log of {name}: {e}")))?;
    let len = view.len();
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if q.follow && !crate::queue::phase(&job).is_finished() {
        let start = match range_header {
            Some(v) => follow_start(v, len)?,
            None => 0,
        };
        let from = view.layout().position(start);
        let stream = follow(state, name, from);
        return Ok(text_response(
            StatusCode::OK,
            None,
            Body::from_stream(stream),
        ));
    }
    // A follower resuming at or past the end of a job that has ended: there is nothing more,
    // ever (its count may include markers the follow sent that the stored log does not hold).
    if q.follow
        && range_header
            .and_then(open_ended_start)
            .is_some_and(|n| n >= len && len > 0)
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let range = match range_header {
        Some(v) => parse_range(v, len)?,
        None => None,
    };
    let (status, start, count) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, len),
    };
    let body = if count == 0 {
        Body::empty()
    } else {
        Body::from_stream(serve(std::sync::Arc::new(view), start, count))
    };
    let mut resp = text_response(status, Some(count), body);
    if let Some(r) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end)) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `count` bytes of an opened log from `start`, read [`CHUNK`] at a time as the client takes them.
fn serve(
    view: std::sync::Arc<LogView>,
    start: u64,
    count: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures::stream::try_unfold((start, count), move |(at, left)| {
        let view = view.clone();
        async move {
            if left == 0 {
                return Ok(None);
            }
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
            let data = tokio::task::spawn_blocking(move || view.read_at(at, want))
                .await
                .map_err(std::io::Error::other)??;
            if data.is_empty() {
                // Shorter than it was when opened: end early rather than promise more.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "log shorter than announced",
                ));
            }
            let n = data.len() as u64;
            Ok(Some((bytes::Bytes::from(data), (at + n, left - n))))
        }
    })
}

fn text_response(status: StatusCode, len: Option<u64>, body: Body) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

struct Follow {
    state: AppState,
    name: String,
    /// The stream position read next.
    position: u64,
    deadline: tokio::time::Instant,
    /// The job finished: one last read drains what the runner wrote before the end.
    last_read: bool,
    done: bool,
}

/// Streams the log from stream position `position`, then new bytes as they arrive, until the job
/// finishes, the job disappears, or `follow_limit` passes. Dropping the stream (client gone)
/// stops the polling.
fn follow(
    state: AppState,
    name: String,
    position: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let deadline = tokio::time::Instant::now() + state.follow_limit;
    let start = Follow {
        state,
        name,
        position,
        deadline,
        last_read: false,
        done: false,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            let chunk = match read_from(&f.state, &f.name, f.position).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(job = %f.name, error = %e, "Following log failed");
                    return None;
                }
            };
            f.position = chunk.next_offset;
            if !chunk.data.is_empty() {
                return Some((Ok(bytes::Bytes::from(chunk.data)), f));
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

/// At most [`CHUNK`] bytes of the log from stream position `position`; an absent log reads as
/// empty.
async fn read_from(state: &AppState, name: &str, position: u64) -> Result<LogChunk, String> {
    let files = state.files.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || files.follow_log(&name, position, CHUNK))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn a_follow_may_resume_at_the_end_but_not_past_it() {
        assert_eq!(follow_start("bytes=1000-", 1000).unwrap(), 1000);
        assert_eq!(follow_start("bytes=0-", 0).unwrap(), 0);
        assert_eq!(follow_start("bytes=10-20", 1000).unwrap(), 10);
        assert_eq!(follow_start("bytes=-100", 1000).unwrap(), 900);
        assert!(matches!(
            follow_start("bytes=1001-", 1000),
            Err(ApiError::RangeNotSatisfiable(1000))
        ));
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-99", 1000).unwrap(), r(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000).unwrap(), r(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000).unwrap(), r(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000).unwrap(), r(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000).unwrap(), r(990, 999));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 1000).unwrap(), None);
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-0",
            "bytes=2000-3000",
        ] {
            assert!(
                matches!(
                    parse_range(bad, 1000),
                    Err(ApiError::RangeNotSatisfiable(1000))
                ),
                "{bad}"
            );
        }
        assert!(
            parse_range("bytes=0-", 0).is_err(),
            "an empty log has no bytes to give"
        );
    }
}
