//! Console logs and result documents on disk, the same in both modes, in
//! `DATA_DIR/jobs/<name>/`: the console log ([`stored_log`]: `console.log`, the head, and its
//! rolling tail) and `result.json`.
//!
//! Logs are capped by the one console-log policy (a flooding kernel must not fill the disk,
//! and its panic at the end must survive): head and tail are kept, a marker says what was left
//! out. Results are written atomically (temp file + rename), so a reader never sees half a
//! document and a crash leaves the old one or the new one.

pub mod log_layout;
pub mod stored_log;

use bootfarm_core::console_cap::{Cap, DEFAULT_FARM_LIMIT};
use bootfarm_core::result::BootResult;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use stored_log::LogView;

/// The console-log limit of the farm (the operator's stored logs, and its runners').
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Cap of each job's stored console log (bytes, K/M/G suffixes): its head and at least its
    /// last half are kept, with a marker where bytes were left out. Runners this operator
    /// starts get the same limit (`BOOTFARM_CONSOLE_LIMIT`).
    #[arg(
        long = "console-limit",
        env = "BOOTFARM_CONSOLE_LIMIT",
        default_value = "16M",
        value_parser = parse_limit
    )]
    pub console_limit: u64,
}

fn parse_limit(s: &str) -> Result<u64, String> {
    bootfarm_core::size::parse_size(s, bootfarm_core::size::Unit::Bytes).map_err(|e| e.to_string())
}

impl ConsoleArgs {
    /// The same limit for `bootfarm-runner work`.
    pub fn runner_env(&self) -> Vec<(String, String)> {
        vec![(
            "BOOTFARM_CONSOLE_LIMIT".to_string(),
            self.console_limit.to_string(),
        )]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid job name {0:?}")]
    BadName(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A result document written but not yet in place; dropped, it is removed.
pub struct StagedResult {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl StagedResult {
    /// Renames it into place.
    pub fn commit(self) -> Result<(), FilesError> {
        let path = self.path;
        self.tmp
            .persist(&path)
            .map_err(|e| io_err(&path)(e.error))?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct JobFiles {
    root: PathBuf,
    cap: Cap,
    locks: Arc<JobLocks>,
}

/// Appends, views and removal of one job's log exclude each other (a view is opened whole
/// between two appends); jobs share one of a few locks by the hash of their name.
#[derive(Debug, Default)]
struct JobLocks([Mutex<()>; 16]);

impl JobLocks {
    fn lock(&self, name: &str) -> MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let i = usize::try_from(h.finish() % self.0.len() as u64).unwrap_or(0);
        // A panic while holding it leaves the files as they were: still usable.
        self.0[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A slice of a log from `offset`, and where the next read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub data: Vec<u8>,
    pub next_offset: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl JobFiles {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        JobFiles {
            root: data_dir.into().join("jobs"),
            cap: Cap::new(DEFAULT_FARM_LIMIT),
            locks: Arc::default(),
        }
    }

    /// Each stored log keeps its head and tail within this limit.
    pub fn with_log_cap(mut self, limit: u64) -> Self {
        self.cap = Cap::new(limit);
        self
    }

    /// The job's directory; names are DNS subdomains, so anything else (`..`, `/`) is refused.
    fn dir(&self, name: &str) -> Result<PathBuf, FilesError> {
        if !bootfarm_core::names::is_dns_subdomain(name) {
            return Err(FilesError::BadName(name.to_string()));
        }
        Ok(self.root.join(name))
    }

    /// The log's head (the whole log unless it outgrew its limit's first half).
    pub fn log_path(&self, name: &str) -> Result<PathBuf, FilesError> {
        Ok(self.dir(name)?.join(stored_log::HEAD))
    }

    pub fn result_path(&self, name: &str) -> Result<PathBuf, FilesError> {
        Ok(self.dir(name)?.join("result.json"))
    }

    /// Appends received console bytes (past the limit, the tail rolls); returns how many.
    pub fn append_log(&self, name: &str, data: &[u8]) -> Result<usize, FilesError> {
        let dir = self.dir(name)?;
        let _one = self.locks.lock(name);
        stored_log::append(&dir, self.cap, data).map_err(io_err(&dir))?;
        Ok(data.len())
    }

    /// The log as it is now, readable whatever is appended next (an absent log is empty).
    pub fn open_log(&self, name: &str) -> Result<LogView, FilesError> {
        let dir = self.dir(name)?;
        let _one = self.locks.lock(name);
        stored_log::open(&dir).map_err(io_err(&dir))
    }

    /// The log's length in bytes as served (0 when absent).
    pub fn log_len(&self, name: &str) -> Result<u64, FilesError> {
        Ok(self.open_log(name)?.len())
    }

    /// Whether the stored log left bytes out.
    pub fn log_cut(&self, name: &str) -> Result<bool, FilesError> {
        Ok(self.open_log(name)?.layout().is_cut())
    }

    /// Reads the log as served from `offset` (at most `max` bytes); an absent log reads as empty.
    pub fn read_log(&self, name: &str, offset: u64, max: usize) -> Result<LogChunk, FilesError> {
        let dir = self.dir(name)?;
        let data = self
            .open_log(name)?
            .read_at(offset, max)
            .map_err(io_err(&dir))?;
        Ok(LogChunk {
            next_offset: offset + data.len() as u64,
            data,
        })
    }

    /// For a follower: the bytes after stream position `pos` (see [`LogView::read_from`]);
    /// `next_offset` is the next position.
    pub fn follow_log(&self, name: &str, pos: u64, max: usize) -> Result<LogChunk, FilesError> {
        let dir = self.dir(name)?;
        let (data, next_offset) = self
            .open_log(name)?
            .read_from(pos, max)
            .map_err(io_err(&dir))?;
        Ok(LogChunk { data, next_offset })
    }

    /// Writes the result document atomically (temp file, fsync, rename).
    pub fn write_result(&self, name: &str, result: &BootResult) -> Result<(), FilesError> {
        self.stage_result(name, result)?.commit()
    }

    /// Writes the result document beside its final place, fsynced, for [`StagedResult::commit`]
    /// once the store has recorded the verdict: a full disk fails here, before anything is
    /// recorded, so the runner can retry instead of the job ending without its document.
    pub fn stage_result(
        &self,
        name: &str,
        result: &BootResult,
    ) -> Result<StagedResult, FilesError> {
        let dir = self.dir(name)?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("result.json");
        let json = serde_json::to_vec_pretty(result).map_err(|source| FilesError::Json {
            path: path.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".result-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        tmp.write_all(&json).map_err(io_err(&dir))?;
        tmp.as_file().sync_all().map_err(io_err(&dir))?;
        Ok(StagedResult { tmp, path })
    }

    pub fn read_result(&self, name: &str) -> Result<Option<BootResult>, FilesError> {
        let path = self.result_path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| FilesError::Json { path, source })
    }

    /// Removes the job's log and result; absent files are fine.
    pub fn remove(&self, name: &str) -> Result<(), FilesError> {
        let dir = self.dir(name)?;
        let _one = self.locks.lock(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::result::ErrorKind;

    #[test]
    fn logs_append_and_read_from_an_offset_and_keep_head_and_tail_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let files = JobFiles::new(dir.path()).with_log_cap(8192);
        assert_eq!(files.read_log("a", 0, 100).unwrap().data, b"");
        assert_eq!(files.append_log("a", b"hello ").unwrap(), 6);
        files.append_log("a", b"world\n").unwrap();
        assert_eq!(
            files.read_log("a", 6, 4).unwrap(),
            LogChunk {
                data: b"worl".to_vec(),
                next_offset: 10
            }
        );
        assert!(!files.log_cut("a").unwrap());
        for i in 0..5000 {
            files
                .append_log("a", format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(files.log_cut("a").unwrap());
        let len = files.log_len("a").unwrap();
        let all = files.read_log("a", 0, usize::MAX).unwrap().data;
        assert_eq!(all.len() as u64, len);
        let text = String::from_utf8(all).unwrap();
        assert!(text.starts_with("hello world\nline 0\n"));
        assert!(text.ends_with("line 4999\n"));
        assert!(text.contains("bytes omitted by the operator]\n"));
        // The head is a file of its own: links into it never move.
        let head = std::fs::read(files.log_path("a").unwrap()).unwrap();
        assert!(text.as_bytes().starts_with(&head));
    }

    #[test]
    fn results_round_trip_and_remove_deletes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let files = JobFiles::new(dir.path());
        assert_eq!(files.read_result("a").unwrap(), None);
        let r = BootResult::error(ErrorKind::QemuFailed, "boom");
        files.write_result("a", &r).unwrap();
        files.append_log("a", b"x").unwrap();
        assert_eq!(files.read_result("a").unwrap(), Some(r));
        files.remove("a").unwrap();
        files.remove("a").unwrap();
        assert_eq!(files.read_result("a").unwrap(), None);
        assert!(!dir.path().join("jobs/a").exists());
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        let files = JobFiles::new("/tmp/x");
        for bad in ["..", "../etc", "a/b", "", ".hidden", "UPPER"] {
            assert!(
                matches!(files.append_log(bad, b"x"), Err(FilesError::BadName(_))),
                "{bad}"
            );
        }
    }
}
