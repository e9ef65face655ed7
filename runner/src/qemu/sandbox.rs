//! QEMU's seccomp sandbox: with it, a guest that escaped into QEMU still cannot start programs,
//! gain privileges or use obsolete system calls. Every boot uses it when the QEMU build has it.
//!
//! Whether a binary supports it is asked once (`-sandbox ... -version` fails fast when seccomp
//! is not built in, or when a sub-option is unknown) and remembered per binary identity in the
//! cache directory, so a one-shot `boot` does not pay the ~100 ms question each time.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The `-sandbox` value: deny what a boot never needs.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

const ASK_TIMEOUT: Duration = Duration::from_secs(10);

fn memo() -> &'static Mutex<HashMap<String, bool>> {
    static MEMO: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// The binary's identity: path, size, mtime (a QEMU upgrade asks again).
fn identity(binary: &Path) -> Option<String> {
    let md = std::fs::metadata(binary).ok()?;
    Some(format!(
        "{}:{}:{}.{}",
        binary.display(),
        md.len(),
        md.mtime(),
        md.mtime_nsec()
    ))
}

fn memo_file(cache_dir: &Path, id: &str) -> PathBuf {
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    cache_dir
        .join("qemu-features")
        .join(format!("sandbox-{}", &key[..16]))
}

/// Whether `binary` accepts [`SANDBOX`].
pub async fn supported(binary: &Path, cache_dir: Option<&Path>) -> bool {
    let Some(id) = identity(binary) else {
        return false;
    };
    if let Some(known) = memo()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .copied()
    {
        return known;
    }
    let file = cache_dir.map(|d| memo_file(d, &id));
    if let Some(answer) = file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| match t.trim() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        })
    {
        remember(&id, answer);
        return answer;
    }
    let asked = tokio::process::Command::new(binary)
        .args(["-sandbox", SANDBOX, "-version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let answer = matches!(
        tokio::time::timeout(ASK_TIMEOUT, asked).await,
        Ok(Ok(status)) if status.success()
    );
    if !answer {
        tracing::warn!(qemu = %binary.display(), "QEMU has no seccomp sandbox; booting without it");
    }
    remember(&id, answer);
    if let Some(f) = file {
        // Best effort: without the memo the question is only asked again.
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&f, if answer { "yes\n" } else { "no\n" });
    }
    answer
}

fn remember(id: &str, answer: bool) {
    memo()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string(), answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_qemu(dir: &Path, exit: i32) -> PathBuf {
        let p = dir.join(format!("qemu-{exit}"));
        std::fs::write(&p, format!("#!/bin/sh\nexit {exit}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn the_answer_is_asked_once_and_remembered_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let yes = fake_qemu(dir.path(), 0);
        let no = fake_qemu(dir.path(), 1);
        assert!(supported(&yes, Some(dir.path())).await);
        assert!(!supported(&no, Some(dir.path())).await);
        let id = identity(&yes).unwrap();
        assert_eq!(
            std::fs::read_to_string(memo_file(dir.path(), &id)).unwrap(),
            "yes\n"
        );
        assert!(!supported(Path::new("/nonexistent/qemu"), None).await);
    }
}
