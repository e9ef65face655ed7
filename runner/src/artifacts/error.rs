//! One error type for every way an artifact can fail, each with a stable `kind` for the result JSON.

use bootfarm_core::result::ErrorKind;

/// Why an artifact could not be provided. Every message names the source it is about.
#[derive(thiserror::Error, Debug)]
pub enum ArtifactError {
    #[error("artifact not found: {origin}")]
    Missing { origin: String },

    /// A scheme we cannot fetch (ftp://, s3://, ..): reported as `artifact_missing`.
    #[error("unsupported artifact source {origin:?}: {reason}")]
    Unsupported { origin: String, reason: String },

    /// The farm's policy forbids this source (a local path outside the allowed directories, an
    /// internal network address): the same on every attempt.
    #[error("artifact {origin} refused: {reason}")]
    Refused { origin: String, reason: String },

    #[error("artifact {origin} is unreadable: {reason}")]
    Unreadable { origin: String, reason: String },

    /// An HTTP error status that retrying cannot fix (4xx and the like).
    #[error("HTTP {status} for {url}")]
    HttpStatus { url: String, status: String },

    #[error("download of {url} failed after {attempts} attempt(s): {reason}")]
    Download {
        url: String,
        attempts: u32,
        reason: String,
    },

    #[error("download of {url} timed out: not complete within {seconds} s")]
    DownloadTimeout { url: String, seconds: f64 },

    #[error("checksum mismatch for {origin}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        origin: String,
        expected: String,
        actual: String,
    },

    #[error("invalid sha256 {value:?} for {origin}: expected 64 hex digits")]
    InvalidChecksum { origin: String, value: String },

    #[error("artifact {origin} is too large: {what} exceeds the limit of {limit} bytes")]
    TooLarge {
        origin: String,
        what: &'static str,
        limit: u64,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Internal(String),
}

impl ArtifactError {
    /// The `error.kind` of a boot result.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ArtifactError::Missing { .. } | ArtifactError::Unsupported { .. } => {
                ErrorKind::ArtifactMissing
            }
            ArtifactError::Unreadable { .. } => ErrorKind::ArtifactUnreadable,
            ArtifactError::Refused { .. } => ErrorKind::ArtifactRefused,
            ArtifactError::HttpStatus { .. }
            | ArtifactError::Download { .. }
            | ArtifactError::DownloadTimeout { .. } => ErrorKind::DownloadFailed,
            ArtifactError::ChecksumMismatch { .. } | ArtifactError::InvalidChecksum { .. } => {
                ErrorKind::ChecksumMismatch
            }
            ArtifactError::TooLarge { .. } => ErrorKind::ArtifactTooLarge,
            ArtifactError::Io { .. } | ArtifactError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ArtifactError::Io {
            context: context.into(),
            source,
        }
    }
}

/// An error and its causes on one line: reqwest's own message hides the useful part
/// ("Connection refused") in its source chain.
pub(crate) fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
