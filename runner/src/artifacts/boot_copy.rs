//! Private per-boot copies, so a guest can never write the cached original.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ArtifactError, Fetched};

/// Copy `fetched` into `dir` under a name derived from the artifact name (never overwriting).
/// `std::fs::copy` uses `copy_file_range`, which shares extents (a reflink) on filesystems that
/// support it, so large images are cheap to copy there.
pub fn per_boot_copy(fetched: &Fetched, dir: &Path) -> Result<PathBuf, ArtifactError> {
    fs::create_dir_all(dir)
        .map_err(|e| ArtifactError::io(format!("creating {}", dir.display()), e))?;
    let dest = reserve(dir, &copy_name(&fetched.name))?;
    let copied = fs::copy(&fetched.path, &dest).and_then(|_| {
        // The copy inherits the cache's read-only mode; the boot owns this one.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))
    });
    if let Err(e) = copied {
        let _ = fs::remove_file(&dest);
        if e.kind() == io::ErrorKind::NotFound && !fetched.path.exists() {
            return Err(ArtifactError::Missing {
                origin: fetched.path.display().to_string(),
            });
        }
        return Err(ArtifactError::io(
            format!("copying {} to {}", fetched.path.display(), dest.display()),
            e,
        ));
    }
    Ok(dest)
}

/// Create `dir/base`, or `dir/base.1`, `dir/base.2`, .. if taken, and return its path.
fn reserve(dir: &Path, base: &str) -> Result<PathBuf, ArtifactError> {
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            dir.join(base)
        } else {
            dir.join(format!("{base}.{n}"))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(_) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(ArtifactError::io(
                    format!("creating {}", candidate.display()),
                    e,
                ))
            }
        }
    }
    Err(ArtifactError::Internal(format!(
        "no free file name for {base} in {}",
        dir.display()
    )))
}

/// A safe single file name from an artifact name ("kernel", "initrd", maybe user-supplied).
fn copy_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "artifact".to_string()
    } else {
        cleaned.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::result::ArtifactInfo;

    #[test]
    fn copy_names_are_single_safe_components() {
        assert_eq!(copy_name("kernel"), "kernel");
        assert_eq!(copy_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(copy_name(".."), "artifact");
        assert_eq!(copy_name(""), "artifact");
        assert_eq!(copy_name("root fs.img"), "root_fs.img");
    }

    #[test]
    fn copies_are_private_writable_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("orig");
        fs::write(&original, b"kernel bytes").unwrap();
        fs::set_permissions(&original, fs::Permissions::from_mode(0o444)).unwrap();
        let fetched = Fetched {
            name: "kernel".into(),
            path: original.clone(),
            info: ArtifactInfo {
                source: "x".into(),
                sha256: String::new(),
                size: 12,
                path: None,
            },
            decompressed: false,
            in_use: crate::artifacts::InUse::none(),
        };
        let boot = dir.path().join("boot");
        let a = per_boot_copy(&fetched, &boot).unwrap();
        let b = per_boot_copy(&fetched, &boot).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, boot.join("kernel"));
        fs::write(&a, b"guest wrote here").unwrap();
        assert_eq!(fs::read(&original).unwrap(), b"kernel bytes");
        assert_eq!(fs::read(&b).unwrap(), b"kernel bytes");
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn a_vanished_original_is_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let fetched = Fetched {
            name: "kernel".into(),
            path: dir.path().join("gone"),
            info: ArtifactInfo {
                source: "x".into(),
                sha256: String::new(),
                size: 0,
                path: None,
            },
            decompressed: false,
            in_use: crate::artifacts::InUse::none(),
        };
        let err = per_boot_copy(&fetched, &dir.path().join("boot")).unwrap_err();
        assert_eq!(err.kind().as_str(), "artifact_missing", "{err}");
        assert!(!dir.path().join("boot/kernel").exists());
    }
}
