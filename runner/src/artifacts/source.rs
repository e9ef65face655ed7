//! Where an artifact comes from: a local path, a `file://` URL or an `http(s)://` URL (parsed by
//! `bootfarm_core::spec::Location`, the one parser every part uses).

use super::ArtifactError;
pub use bootfarm_core::spec::location::redacted;
pub use bootfarm_core::spec::Location as Source;

/// Parse a source string. Anything without a `scheme://` prefix is a path (relative paths allowed).
pub fn parse(source: &str) -> Result<Source, ArtifactError> {
    Source::parse(source).map_err(|e| ArtifactError::Unsupported {
        origin: source.to_string(),
        reason: e.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_sources_are_rejected_with_the_source_named() {
        for s in ["ftp://host/x", "s3://bucket/k", "", "file://remotehost/x"] {
            let err = parse(s).unwrap_err();
            assert_eq!(err.kind().as_str(), "artifact_missing", "{s}");
            assert!(err.to_string().contains(&format!("{s:?}")), "{err}");
        }
    }
}
