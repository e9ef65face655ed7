//! Where an artifact comes from: a local path, a `file://` URL or an `http(s)://` URL.

use std::path::PathBuf;

use reqwest::Url;

use super::ArtifactError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Http(Url),
}

/// Parse a source string. Anything without a `scheme://` prefix is a path (relative paths allowed).
pub fn parse(source: &str) -> Result<Source, ArtifactError> {
    let unsupported = |reason: &str| ArtifactError::Unsupported {
        origin: source.to_string(),
        reason: reason.to_string(),
    };
    if source.trim().is_empty() {
        return Err(unsupported("empty source"));
    }
    let Some((scheme, _)) = source.split_once("://") else {
        return Ok(Source::Local(PathBuf::from(source)));
    };
    if !is_scheme(scheme) {
        // e.g. "dir/a://b": a path that happens to contain "://".
        return Ok(Source::Local(PathBuf::from(source)));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let url = Url::parse(source).map_err(|e| unsupported(&format!("bad URL: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(unsupported("URL has no host"));
            }
            Ok(Source::Http(url))
        }
        "file" => {
            let url = Url::parse(source).map_err(|e| unsupported(&format!("bad URL: {e}")))?;
            let path = url.to_file_path().map_err(|()| {
                unsupported("a file URL must be absolute and local (file:///path)")
            })?;
            Ok(Source::Local(path))
        }
        _ => Err(unsupported(
            "unsupported scheme (use a path, file://, http:// or https://)",
        )),
    }
}

/// A URL fit for messages and logs: any password in it is replaced by `***`.
pub fn redacted(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which have no password to hide.
    let _ = shown.set_password(Some("***"));
    shown.to_string()
}

/// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_local() {
        assert_eq!(
            parse("/boot/vmlinuz").unwrap(),
            Source::Local("/boot/vmlinuz".into())
        );
        assert_eq!(
            parse("rel/initrd.gz").unwrap(),
            Source::Local("rel/initrd.gz".into())
        );
        assert_eq!(
            parse("dir/a://b").unwrap(),
            Source::Local("dir/a://b".into())
        );
    }

    #[test]
    fn file_urls_become_paths_with_percent_decoding() {
        assert_eq!(
            parse("file:///tmp/a%20b/Image").unwrap(),
            Source::Local("/tmp/a b/Image".into())
        );
        assert_eq!(
            parse("FILE://localhost/x").unwrap(),
            Source::Local("/x".into())
        );
    }

    #[test]
    fn http_urls_are_http_in_any_case() {
        let Source::Http(url) = parse("HTTPS://example.org/k?x=1").unwrap() else {
            panic!("expected http");
        };
        assert_eq!(url.as_str(), "https://example.org/k?x=1");
        assert!(matches!(
            parse("http://127.0.0.1:8080/a").unwrap(),
            Source::Http(_)
        ));
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = Url::parse("https://user:s3cret@h/k").unwrap();
        assert_eq!(redacted(&url), "https://user:***@h/k");
        let plain = Url::parse("https://h/k?x=1").unwrap();
        assert_eq!(redacted(&plain), "https://h/k?x=1");
    }

    #[test]
    fn unsupported_sources_are_rejected_with_the_source_named() {
        for s in ["ftp://host/x", "s3://bucket/k", "", "file://remotehost/x"] {
            let err = parse(s).unwrap_err();
            assert_eq!(err.kind(), "artifact_missing", "{s}");
            assert!(err.to_string().contains(&format!("{s:?}")), "{err}");
        }
    }
}
