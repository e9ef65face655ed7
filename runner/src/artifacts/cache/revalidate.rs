//! Revalidating cached downloads: a download without a pinned sha256, last confirmed over five
//! minutes ago, is checked with a conditional GET (ETag / Last-Modified). Pure decisions: when to
//! ask, and what the answer means for the entry.

use std::time::{SystemTime, UNIX_EPOCH};

use super::super::fetch::{Downloaded, Outcome, Validators};
use super::super::ArtifactError;
use super::entry::EntryMeta;

/// A download confirmed current this recently is used without asking the server again, so a
/// burst of boots costs one request.
pub(super) const REVALIDATE_AFTER_SECS: i64 = 300;

/// What to do with what the cache holds for a URL.
#[derive(Debug)]
pub(super) enum Plan {
    /// Use it as it is.
    Use(EntryMeta),
    /// Ask the server with these validators whether it changed.
    Ask(EntryMeta, Validators),
    /// Nothing cached: download.
    Download,
}

/// Ask the server whether a cached download changed? Never when a sha256 pins the content, nor
/// when the server gave nothing to ask with (no ETag or Last-Modified).
pub(super) fn needs_revalidation(meta: &EntryMeta, expected: Option<&str>, now: i64) -> bool {
    expected.is_none()
        && !meta.validators().is_empty()
        && now.saturating_sub(meta.validated_at) >= REVALIDATE_AFTER_SECS
}

pub(super) fn plan(cached: Option<EntryMeta>, expected: Option<&str>, now: i64) -> Plan {
    match cached {
        Some(meta) if !needs_revalidation(&meta, expected, now) => Plan::Use(meta),
        Some(meta) => {
            let validators = meta.validators();
            Plan::Ask(meta, validators)
        }
        None => Plan::Download,
    }
}

/// What the server's answer means.
pub(super) enum Settled {
    /// New bytes: store them.
    Store(Downloaded),
    /// The cached copy is current: record when it was confirmed (`validated_at` is set), use it.
    Confirmed(EntryMeta),
    /// The server could not answer: use the cached copy as it is.
    Unconfirmed(EntryMeta, ArtifactError),
}

pub(super) fn settle(
    outcome: Result<Outcome, ArtifactError>,
    cached: Option<EntryMeta>,
    now: i64,
    shown_url: &str,
) -> Result<Settled, ArtifactError> {
    match (outcome, cached) {
        (Ok(Outcome::Downloaded(d)), _) => Ok(Settled::Store(d)),
        (Ok(Outcome::NotModified), Some(mut meta)) => {
            meta.validated_at = now;
            Ok(Settled::Confirmed(meta))
        }
        (Err(err), Some(meta)) => Ok(Settled::Unconfirmed(meta, err)),
        (Ok(Outcome::NotModified), None) => Err(ArtifactError::Internal(format!(
            "HTTP 304 for {shown_url} without a conditional request"
        ))),
        (Err(err), None) => Err(err),
    }
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: Option<&str>, validated_at: i64) -> EntryMeta {
        EntryMeta {
            etag: etag.map(str::to_string),
            validated_at,
            ..EntryMeta::plain("http://h/k", "aa", 1)
        }
    }

    #[test]
    fn only_old_unpinned_downloads_with_validators_are_revalidated() {
        let now = 10_000;
        let old = now - REVALIDATE_AFTER_SECS;
        assert!(needs_revalidation(&meta(Some("\"x\""), old), None, now));
        assert!(!needs_revalidation(
            &meta(Some("\"x\""), now - 1),
            None,
            now
        ));
        assert!(!needs_revalidation(
            &meta(Some("\"x\""), old),
            Some("aa"),
            now
        ));
        assert!(!needs_revalidation(&meta(None, old), None, now));
        let dated = EntryMeta {
            last_modified: Some("Sat, 28 Nov 2026 12:00:00 GMT".into()),
            ..meta(None, old)
        };
        assert!(needs_revalidation(&dated, None, now));
        assert!(matches!(plan(Some(dated), None, now), Plan::Ask(..)));
        assert!(matches!(plan(None, None, now), Plan::Download));
    }

    #[test]
    fn answers_settle_the_entry() {
        let m = meta(Some("\"x\""), 1);
        match settle(Ok(Outcome::NotModified), Some(m.clone()), 99, "u").unwrap() {
            Settled::Confirmed(c) => assert_eq!(c.validated_at, 99),
            _ => panic!("a 304 confirms the cached copy"),
        }
        let down = || ArtifactError::Internal("down".into());
        assert!(matches!(
            settle(Err(down()), Some(m), 99, "u").unwrap(),
            Settled::Unconfirmed(..)
        ));
        assert!(settle(Ok(Outcome::NotModified), None, 99, "u").is_err());
        assert!(settle(Err(down()), None, 99, "u").is_err());
    }
}
