//! Admission: what the farm accepts, the same for the HTTP API and for `kubectl apply`. A spec is
//! validated into its typed form, then checked against the farm's own rules: local artifacts
//! only from the directories the operator was started with (`--allow-local-artifacts`).
//!
//! The runner checks again, race-free, on the file it opens (a symlink could be re-pointed after
//! admission); this check makes the common refusal immediate, with a 422 naming the field.

use bootfarm_core::spec::{validate, BootJobSpec, FieldError, LocalDirs, Location, ValidatedSpec};
use std::path::{Path, PathBuf};

/// The directories local artifacts may come from, as the operator sees them.
#[derive(Debug, Clone, Default)]
pub struct LocalArtifacts {
    dirs: LocalDirs,
}

impl LocalArtifacts {
    /// No local artifacts (the default).
    pub fn none() -> Self {
        LocalArtifacts::default()
    }

    /// Each directory's real path when it exists here (standalone: the runners see the same
    /// files); as given otherwise (Kubernetes: it may exist only in runner pods).
    pub fn new(dirs: &[PathBuf]) -> Result<Self, String> {
        let real: Vec<PathBuf> = dirs
            .iter()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
            .collect();
        Ok(LocalArtifacts {
            dirs: LocalDirs::new(real).map_err(|e| e.0)?,
        })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        self.dirs.dirs()
    }

    /// Problems with the spec's local artifacts under this policy.
    pub fn check(&self, spec: &ValidatedSpec) -> Vec<FieldError> {
        spec.artifacts()
            .filter_map(|(slot, a)| match &a.location {
                Location::Local(path) => self.check_path(path).err().map(|message| FieldError {
                    field: slot.field().to_string(),
                    message,
                }),
                Location::Http(_) => None,
            })
            .collect()
    }

    fn check_path(&self, path: &Path) -> Result<(), String> {
        self.dirs.check(path).map_err(|e| e.0)?;
        // Symlinks are resolved when the file exists here; a missing file is the runner's to report.
        if let Ok(real) = std::fs::canonicalize(path) {
            self.dirs
                .check(&real)
                .map_err(|e| format!("{} (it resolves to {})", e.0, real.display()))?;
        }
        Ok(())
    }
}

/// Validate `spec` and apply the farm's rules; every problem at once.
pub fn admit_spec(
    spec: &BootJobSpec,
    local: &LocalArtifacts,
) -> Result<ValidatedSpec, Vec<FieldError>> {
    let v = validate(spec)?;
    let errs = local.check(&v);
    if errs.is_empty() {
        Ok(v)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::Arch;

    #[test]
    fn local_paths_are_refused_unless_inside_an_allowed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("kernels");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("Image"), b"k").unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"s").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        let policy = LocalArtifacts::new(std::slice::from_ref(&allowed)).unwrap();

        let spec = |url: String| BootJobSpec::new(Arch::X86_64, url);
        let ok = spec(format!("file://{}", allowed.join("Image").display()));
        assert!(admit_spec(&ok, &policy).is_ok());
        for bad in [
            "file:///etc/shadow".to_string(),
            "/etc/shadow".to_string(),
            format!("{}/../secret", allowed.display()),
            allowed.join("link").display().to_string(),
            "relative/Image".to_string(),
        ] {
            let errs = admit_spec(&spec(bad.clone()), &policy).unwrap_err();
            assert_eq!(errs[0].field, "spec.kernel.url", "{bad}");
            assert!(
                errs[0].message.contains("refused"),
                "{bad}: {}",
                errs[0].message
            );
        }
        let none = admit_spec(&ok, &LocalArtifacts::none()).unwrap_err();
        assert!(
            none[0].message.contains("no local paths"),
            "{}",
            none[0].message
        );
        let http = spec("https://artifacts.example/bzImage".into());
        assert!(admit_spec(&http, &LocalArtifacts::none()).is_ok());
        // An overlay is an artifact like any other: its local path is checked too.
        let mut with_overlay = ok.clone();
        with_overlay.overlays.push(bootfarm_core::spec::OverlayRef {
            url: "/etc/shadow".into(),
            sha256: None,
            path: Some("/opt".into()),
        });
        let errs = admit_spec(&with_overlay, &policy).unwrap_err();
        assert_eq!(errs[0].field, "spec.overlays[].url");
        assert!(errs[0].message.contains("refused"), "{}", errs[0].message);
    }
}
