//! Who may touch a cache entry, across tasks and processes. Two `flock`s per key in `locks/`:
//!
//! - `<key>.lock`, exclusive: one task at a time fetches, checks or removes the entry (an
//!   in-process mutex first, so tasks of one process queue without polling the flock). Its
//!   mtime records the key's last use, for pruning.
//! - `<key>.use`, shared: held by every boot using the entry, from its fetch (taken while the
//!   fetch lock is held) until the boot ends. Pruning needs both exclusively, so an entry in use
//!   by any process is never removed under it.
//!
//! Lock files are never removed: a process waiting on a removed file's lock would hold a lock
//! nobody else sees.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::super::ArtifactError;

/// Serialises tasks of this process per key before they queue on the cross-process flock.
#[derive(Default)]
pub(super) struct KeyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Holds the flock (released when the file closes) and the in-process lock.
pub(super) struct KeyGuard {
    _file: File,
    _task: tokio::sync::OwnedMutexGuard<()>,
}

/// Keeps a cache entry from being pruned while it lives (a boot holds one per artifact).
#[derive(Debug, Clone, Default)]
pub struct InUse {
    /// The shared flock on `<key>.use`: held, never read, released when the last clone drops.
    _held: Option<Arc<File>>,
}

impl InUse {
    /// For a file that is not a cache entry (a person's own file, used in place).
    pub fn none() -> InUse {
        InUse { _held: None }
    }
}

pub(super) fn lock_path(locks: &Path, key: &str) -> PathBuf {
    locks.join(format!("{key}.lock"))
}

fn use_path(locks: &Path, key: &str) -> PathBuf {
    locks.join(format!("{key}.use"))
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

impl KeyLocks {
    /// Exclusive access to `key` for this task, against other tasks and other processes;
    /// waits at most `wait` for another process.
    pub(super) async fn lock(
        &self,
        locks: &Path,
        key: &str,
        wait: Duration,
    ) -> Result<KeyGuard, ArtifactError> {
        let in_process = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone();
        let task = in_process.lock_owned().await;
        let path = lock_path(locks, key);
        let file = open_lock(&path)
            .map_err(|e| ArtifactError::io(format!("opening lock {}", path.display()), e))?;
        let deadline = Instant::now() + wait;
        let mut delay = Duration::from_millis(5);
        loop {
            match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(ArtifactError::io(format!("locking {}", path.display()), e)),
            }
            if Instant::now() >= deadline {
                return Err(ArtifactError::Internal(format!(
                    "waited {} s for cache lock {} held by another process",
                    wait.as_secs(),
                    path.display()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
        // The lock file's mtime records the key's last use, for pruning.
        let _ = file.set_modified(SystemTime::now());
        Ok(KeyGuard {
            _file: file,
            _task: task,
        })
    }
}

impl KeyGuard {
    /// Marks the entry in use; call it while holding the guard, so no prune slips in between.
    pub(super) fn hold(&self, locks: &Path, key: &str) -> Result<InUse, ArtifactError> {
        let path = use_path(locks, key);
        let file = open_lock(&path)
            .map_err(|e| ArtifactError::io(format!("opening lock {}", path.display()), e))?;
        // A prune holds it exclusively only while it holds our key lock, which we have.
        match fs4::fs_std::FileExt::try_lock_shared(&file) {
            Ok(true) => Ok(InUse {
                _held: Some(Arc::new(file)),
            }),
            Ok(false) => Err(ArtifactError::Internal(format!(
                "cache entry lock {} is held exclusively",
                path.display()
            ))),
            Err(e) => Err(ArtifactError::io(format!("locking {}", path.display()), e)),
        }
    }
}

/// For pruning: both locks of `key` if nobody fetches or uses the entry now.
pub(super) fn try_lock_unused(locks: &Path, key: &str) -> Option<(File, File)> {
    let fetch = open_lock(&lock_path(locks, key)).ok()?;
    if !matches!(fs4::fs_std::FileExt::try_lock_exclusive(&fetch), Ok(true)) {
        return None;
    }
    let used = open_lock(&use_path(locks, key)).ok()?;
    if !matches!(fs4::fs_std::FileExt::try_lock_exclusive(&used), Ok(true)) {
        return None;
    }
    Some((fetch, used))
}
