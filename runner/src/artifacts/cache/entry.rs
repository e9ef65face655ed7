//! A cache entry's format: `objects/<key>` (the read-only data, decompressed when the source
//! was compressed) beside `objects/<key>.json` (its metadata: where it came from, both digests,
//! HTTP validators). An entry is committed data first (fsynced, read-only, renamed into place),
//! then metadata, so a half-written entry is recognised as damaged and fetched again.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

use super::super::decompress::Codec;
use super::super::fetch::Validators;
use super::super::verify::{self, Digests};
use super::super::ArtifactError;

pub(super) const META_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EntryMeta {
    pub(super) format: u32,
    pub(super) source: String,
    pub(super) fetched_sha256: String,
    pub(super) fetched_size: u64,
    /// The codec the source was compressed with; None when stored as fetched.
    pub(super) codec: Option<String>,
    pub(super) content_sha256: String,
    pub(super) content_size: u64,
    /// mtime of the data file when written: unchanged size and mtime mean no rehash is needed.
    pub(super) mtime: i64,
    pub(super) mtime_nsec: i64,
    /// HTTP validators of a download, and when the server last confirmed it (Unix seconds).
    #[serde(default)]
    pub(super) etag: Option<String>,
    #[serde(default)]
    pub(super) last_modified: Option<String>,
    #[serde(default)]
    pub(super) validated_at: i64,
}

impl EntryMeta {
    pub(super) fn new(
        source: &str,
        fetched_sha256: &str,
        fetched_size: u64,
        codec: Codec,
        content_sha256: &str,
        content_size: u64,
    ) -> Self {
        EntryMeta {
            format: META_FORMAT,
            source: source.to_string(),
            fetched_sha256: fetched_sha256.to_string(),
            fetched_size,
            codec: Some(codec.name().to_string()),
            content_sha256: content_sha256.to_string(),
            content_size,
            mtime: 0,
            mtime_nsec: 0,
            etag: None,
            last_modified: None,
            validated_at: 0,
        }
    }

    pub(super) fn plain(source: &str, sha256: &str, size: u64) -> Self {
        EntryMeta {
            codec: None,
            ..EntryMeta::new(source, sha256, size, Codec::Gzip, sha256, size)
        }
    }

    pub(super) fn validators(&self) -> Validators {
        Validators {
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
        }
    }

    pub(super) fn digests(&self) -> Digests {
        Digests {
            fetched_sha256: self.fetched_sha256.clone(),
            fetched_size: self.fetched_size,
            content_sha256: self.content_sha256.clone(),
            content_size: self.content_size,
        }
    }
}

#[derive(Debug)]
pub(super) enum EntryState {
    Absent,
    Valid(EntryMeta),
    Damaged(String),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) data: PathBuf,
    pub(super) meta: PathBuf,
}

impl Entry {
    /// The entry `key` in the `objects/` directory.
    pub(super) fn at(objects: &Path, key: &str) -> Entry {
        Entry {
            data: objects.join(key),
            meta: objects.join(format!("{key}.json")),
        }
    }

    pub(super) fn check(&self) -> io::Result<EntryState> {
        let raw = match fs::read(&self.meta) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Data without metadata: a writer died between the two renames.
                return Ok(if self.data.exists() {
                    EntryState::Damaged("data without metadata".into())
                } else {
                    EntryState::Absent
                });
            }
            Err(e) => return Err(e),
        };
        let mut meta: EntryMeta = match serde_json::from_slice(&raw) {
            Ok(
                meta @ EntryMeta {
                    format: META_FORMAT,
                    ..
                },
            ) => meta,
            _ => return Ok(EntryState::Damaged("unreadable metadata".into())),
        };
        let md = match fs::metadata(&self.data) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(EntryState::Damaged("metadata without data".into()))
            }
            Err(e) => return Err(e),
        };
        if !md.is_file() || md.len() != meta.content_size {
            return Ok(EntryState::Damaged(format!(
                "size {} differs from the recorded {}",
                md.len(),
                meta.content_size
            )));
        }
        if (md.mtime(), md.mtime_nsec()) == (meta.mtime, meta.mtime_nsec) {
            return Ok(EntryState::Valid(meta));
        }
        // Touched since it was written: trust it only if the content still matches.
        let (_, sha256) = verify::hash_reader(
            BufReader::with_capacity(1 << 20, File::open(&self.data)?),
            u64::MAX,
        )?;
        if sha256 != meta.content_sha256 {
            return Ok(EntryState::Damaged(format!(
                "content sha256 {sha256} differs from the recorded {}",
                meta.content_sha256
            )));
        }
        (meta.mtime, meta.mtime_nsec) = (md.mtime(), md.mtime_nsec());
        self.write_meta(&meta)?;
        Ok(EntryState::Valid(meta))
    }

    /// Make `content` this entry: fsync, read-only, atomic rename, then the metadata.
    pub(super) fn commit(
        &self,
        content: NamedTempFile,
        mut meta: EntryMeta,
    ) -> Result<EntryMeta, ArtifactError> {
        let io_err = |what: &str, e: io::Error| {
            ArtifactError::io(format!("{what} {}", self.data.display()), e)
        };
        content
            .as_file()
            .sync_all()
            .map_err(|e| io_err("syncing", e))?;
        fs::set_permissions(content.path(), fs::Permissions::from_mode(0o444))
            .map_err(|e| io_err("protecting", e))?;
        content
            .persist(&self.data)
            .map_err(|e| io_err("storing", e.error))?;
        let md = fs::metadata(&self.data).map_err(|e| io_err("reading", e))?;
        (meta.mtime, meta.mtime_nsec) = (md.mtime(), md.mtime_nsec());
        self.write_meta(&meta)
            .map_err(|e| io_err("writing metadata for", e))?;
        Ok(meta)
    }

    pub(super) fn write_meta(&self, meta: &EntryMeta) -> io::Result<()> {
        let dir = self.meta.parent().unwrap_or(Path::new("."));
        let mut tmp = NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, meta)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.meta).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()
    }

    pub(super) fn remove(&self) -> io::Result<()> {
        for path in [&self.meta, &self.data] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
