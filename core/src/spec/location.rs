//! Where an artifact comes from, parsed once: a local path (a bare path or `file://` URL) or an
//! `http(s)://` URL. The runner fetches from it, the API checks it against the farm's policy.

use std::path::{Component, Path, PathBuf};
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the machine that boots (relative paths only make sense by hand).
    Local(PathBuf),
    Http(Url),
}

/// Why a source string is not a location we can fetch from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LocationError(pub String);

impl Location {
    /// Parses a source string. Anything without a `scheme://` prefix is a path.
    pub fn parse(source: &str) -> Result<Location, LocationError> {
        let bad = |why: &str| LocationError(why.to_string());
        if source.trim().is_empty() {
            return Err(bad("empty source"));
        }
        if source.contains(['\n', '\r', '\0']) {
            return Err(bad("a source must be one line without NUL bytes"));
        }
        let Some((scheme, _)) = source.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(source)));
        };
        if !is_scheme(scheme) {
            // e.g. "dir/a://b": a path that happens to contain "://".
            return Ok(Location::Local(PathBuf::from(source)));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let url = Url::parse(source).map_err(|e| bad(&format!("bad URL: {e}")))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("URL has no host"));
                }
                Ok(Location::Http(url))
            }
            "file" => {
                let url = Url::parse(source).map_err(|e| bad(&format!("bad URL: {e}")))?;
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("a file URL must be absolute and local (file:///path)"))?;
                Ok(Location::Local(path))
            }
            _ => Err(bad(
                "unsupported scheme (use a path, file://, http:// or https://)",
            )),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }
}

/// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
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

/// `path` with `.` and `..` resolved without looking at the filesystem; `None` for a relative
/// path (it means nothing to a farm) or one that climbs above `/`.
pub fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Directories local artifacts may come from in the farm (`--allow-local-artifacts`). Pure:
/// the caller resolves symlinks (the operator with `canonicalize`, the runner from the file it
/// actually opened) and asks again with the real path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalDirs {
    dirs: Vec<PathBuf>,
}

impl LocalDirs {
    /// No local artifacts at all (the farm's default).
    pub fn none() -> Self {
        LocalDirs::default()
    }

    /// Each directory must be absolute; it is normalized lexically. The caller should pass
    /// canonical paths (symlinks resolved), so a real path compares equal.
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Result<Self, LocationError> {
        let mut out = Vec::new();
        for d in dirs {
            let n = normalize_lexically(&d).ok_or_else(|| {
                LocationError(format!(
                    "allowed artifact directory {} must be an absolute path",
                    d.display()
                ))
            })?;
            out.push(n);
        }
        Ok(LocalDirs { dirs: out })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The normalized path when it lies inside an allowed directory, else why not.
    pub fn check(&self, path: &Path) -> Result<PathBuf, LocationError> {
        let refused = |why: String| Err(LocationError(why));
        if self.dirs.is_empty() {
            return refused(format!(
                "local artifact {} refused: this farm accepts no local paths (the operator has no \
                 --allow-local-artifacts directory); use an http(s) URL",
                path.display()
            ));
        }
        let Some(norm) = normalize_lexically(path) else {
            return refused(format!(
                "local artifact {} refused: the farm needs an absolute path",
                path.display()
            ));
        };
        if self.dirs.iter().any(|d| norm.starts_with(d)) {
            Ok(norm)
        } else {
            refused(format!(
                "local artifact {} refused: it is not inside an allowed directory ({})",
                path.display(),
                self.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_local() {
        assert_eq!(
            Location::parse("/boot/vmlinuz").unwrap(),
            Location::Local("/boot/vmlinuz".into())
        );
        assert_eq!(
            Location::parse("rel/initrd.gz").unwrap(),
            Location::Local("rel/initrd.gz".into())
        );
        assert_eq!(
            Location::parse("dir/a://b").unwrap(),
            Location::Local("dir/a://b".into())
        );
    }

    #[test]
    fn file_urls_become_paths_with_percent_decoding() {
        assert_eq!(
            Location::parse("file:///tmp/a%20b/Image").unwrap(),
            Location::Local("/tmp/a b/Image".into())
        );
        assert_eq!(
            Location::parse("FILE://localhost/x").unwrap(),
            Location::Local("/x".into())
        );
    }

    #[test]
    fn http_urls_are_http_in_any_case() {
        let Location::Http(url) = Location::parse("HTTPS://example.org/k?x=1").unwrap() else {
            panic!("expected http");
        };
        assert_eq!(url.as_str(), "https://example.org/k?x=1");
    }

    #[test]
    fn unsupported_sources_are_rejected() {
        for s in [
            "ftp://host/x",
            "s3://bucket/k",
            "",
            "file://remotehost/x",
            "a\nb",
        ] {
            assert!(Location::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = Url::parse("https://user:s3cret@h/k").unwrap();
        assert_eq!(redacted(&url), "https://user:***@h/k");
    }

    #[test]
    fn dot_dot_is_resolved_before_the_directory_check() {
        let dirs = LocalDirs::new([PathBuf::from("/srv/kernels")]).unwrap();
        assert_eq!(
            dirs.check(Path::new("/srv/kernels/a/../b/Image")).unwrap(),
            PathBuf::from("/srv/kernels/b/Image")
        );
        for bad in [
            "/srv/kernels/../../etc/shadow",
            "/srv/kernels-evil/x",
            "/srv",
            "/etc/shadow",
            "kernels/Image",
            "/../../srv/kernels/../etc",
        ] {
            assert!(dirs.check(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(LocalDirs::none()
            .check(Path::new("/srv/kernels/x"))
            .is_err());
        assert!(LocalDirs::new([PathBuf::from("relative")]).is_err());
    }
}
