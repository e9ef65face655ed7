//! Console logs and result documents on disk, the same in both modes:
//! `DATA_DIR/jobs/<name>/console.log` and `DATA_DIR/jobs/<name>/result.json`.
//!
//! Logs are capped (a flooding kernel must not fill the disk): past the cap, appends are dropped
//! and a marker line says so. Results are written atomically (temp file + rename), so a reader
//! never sees half a document and a crash leaves the old one or the new one.

use bootfarm_core::result::BootResult;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// 16 MiB of console per job by default.
pub const DEFAULT_LOG_CAP: u64 = 16 << 20;
const CUT_MARKER: &[u8] = b"\n[bootfarm: console log cut here: size limit reached]\n";

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
    log_cap: u64,
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
            log_cap: DEFAULT_LOG_CAP,
        }
    }

    pub fn with_log_cap(mut self, cap: u64) -> Self {
        self.log_cap = cap;
        self
    }

    /// The job's directory; names are DNS subdomains, so anything else (`..`, `/`) is refused.
    fn dir(&self, name: &str) -> Result<PathBuf, FilesError> {
        if !bootfarm_core::names::is_dns_subdomain(name) {
            return Err(FilesError::BadName(name.to_string()));
        }
        Ok(self.root.join(name))
    }

    pub fn log_path(&self, name: &str) -> Result<PathBuf, FilesError> {
        Ok(self.dir(name)?.join("console.log"))
    }

    pub fn result_path(&self, name: &str) -> Result<PathBuf, FilesError> {
        Ok(self.dir(name)?.join("result.json"))
    }

    /// Appends console bytes, up to the cap; returns how many bytes were kept.
    pub fn append_log(&self, name: &str, data: &[u8]) -> Result<usize, FilesError> {
        let dir = self.dir(name)?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("console.log");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len >= self.log_cap {
            return Ok(0);
        }
        let room = (self.log_cap - len) as usize;
        let keep = data.len().min(room);
        f.write_all(&data[..keep]).map_err(io_err(&path))?;
        if keep < data.len() {
            f.write_all(CUT_MARKER).map_err(io_err(&path))?;
        }
        Ok(keep)
    }

    /// The log's length in bytes (0 when absent).
    pub fn log_len(&self, name: &str) -> Result<u64, FilesError> {
        let path = self.log_path(name)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Reads the log from `offset` (at most `max` bytes); an absent log reads as empty.
    pub fn read_log(&self, name: &str, offset: u64, max: usize) -> Result<LogChunk, FilesError> {
        let path = self.log_path(name)?;
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(LogChunk {
                    data: Vec::new(),
                    next_offset: offset,
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        f.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        let mut data = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut data)
            .map_err(io_err(&path))?;
        Ok(LogChunk {
            next_offset: offset + data.len() as u64,
            data,
        })
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

    #[test]
    fn logs_append_read_from_an_offset_and_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let files = JobFiles::new(dir.path()).with_log_cap(10);
        assert_eq!(files.read_log("a", 0, 100).unwrap().data, b"");
        assert_eq!(files.append_log("a", b"hello ").unwrap(), 6);
        assert_eq!(files.append_log("a", b"world!").unwrap(), 4);
        assert_eq!(files.append_log("a", b"more").unwrap(), 0);
        let all = files.read_log("a", 0, 1000).unwrap();
        assert!(all
            .data
            .starts_with(b"hello worl\n[bootfarm: console log cut"));
        let tail = files.read_log("a", 6, 4).unwrap();
        assert_eq!(
            tail,
            LogChunk {
                data: b"worl".to_vec(),
                next_offset: 10
            }
        );
    }

    #[test]
    fn results_round_trip_and_remove_deletes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let files = JobFiles::new(dir.path());
        assert_eq!(files.read_result("a").unwrap(), None);
        let r = BootResult::error("qemu_failed", "boom");
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
