//! The on-disk cache: one directory shared by every runner process on a machine.
//!
//! Layout: `objects/<key>` (read-only data, decompressed when the source was compressed) with
//! `objects/<key>.json` (its metadata), `locks/<key>.lock` (an `flock` per key) and `tmp/` (work
//! in progress; renamed into `objects/` only when complete and verified) and `hashes/` (digests
//! of local files, reused while the file's inode stamp is unchanged).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootfarm_core::result::ArtifactInfo;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::decompress::{self, Codec, DecompressError};
use super::fetch::{Downloader, Outcome, Validators};
use super::local;
use super::policy::FetchPolicy;
use super::source::{self, redacted, Source};
use super::verify::{self, Digests};
use super::{ArtifactError, Limits};

/// An artifact ready to boot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The name given to [`ArtifactCache::fetch`] ("kernel", "initrd", ..).
    pub name: String,
    /// A file that must not be written: the cached original or the user's own file.
    pub path: PathBuf,
    /// Source as given, sha256 and size of the bytes as fetched (before decompression).
    pub info: ArtifactInfo,
    /// True when `path` holds the decompressed form of a gzip/xz/zstd source.
    pub decompressed: bool,
}

pub struct ArtifactCache {
    dir: PathBuf,
    limits: Limits,
    downloader: Downloader,
    policy: FetchPolicy,
    /// Serialises tasks of this process per key before they queue on the cross-process flock.
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const OBJECTS: &str = "objects";
const LOCKS: &str = "locks";
const TMP: &str = "tmp";
const HASHES: &str = "hashes";
/// Leftovers of killed processes older than this are removed at start.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);
const META_FORMAT: u32 = 1;

impl ArtifactCache {
    /// A cache that fetches anything its user can read (a person's own boot).
    pub fn new(dir: PathBuf, limits: Limits) -> Result<Self, ArtifactError> {
        Self::with_policy(dir, limits, FetchPolicy::Unrestricted)
    }

    /// A cache that fetches only what `policy` allows (the farm).
    pub fn with_policy(
        dir: PathBuf,
        limits: Limits,
        policy: FetchPolicy,
    ) -> Result<Self, ArtifactError> {
        for sub in [OBJECTS, LOCKS, TMP, HASHES] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| {
                ArtifactError::io(format!("creating cache directory {}", path.display()), e)
            })?;
        }
        remove_stale_temporaries(&dir.join(TMP));
        Ok(ArtifactCache {
            downloader: Downloader::new(&limits, policy.net().cloned()),
            policy,
            dir,
            limits,
            key_locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Resolve `source` (a path, file:// URL or http(s):// URL), verify `sha256` if given (of the
    /// bytes as fetched, i.e. the compressed file; a match on the decompressed bytes is accepted
    /// too), decompress gzip/xz/zstd by magic bytes, and return a read-only file. A password in
    /// a URL never appears in errors, logs or [`Fetched::info`].
    pub async fn fetch(
        &self,
        name: &str,
        source: &str,
        sha256: Option<&str>,
    ) -> Result<Fetched, ArtifactError> {
        let started = Instant::now();
        let parsed = source::parse(source)?;
        // What messages, logs and the result show: the source as given, minus any password.
        let shown = match &parsed {
            Source::Http(url) if url.password().is_some() => redacted(url),
            _ => source.to_string(),
        };
        let source = shown.as_str();
        let expected = sha256
            .map(|value| verify::parse_expected(source, value))
            .transpose()?;
        let fetched = match parsed {
            Source::Local(path) => {
                self.fetch_local(name, source, path, expected.as_deref())
                    .await?
            }
            Source::Http(url) => {
                self.fetch_url(name, source, url, expected.as_deref())
                    .await?
            }
        };
        tracing::info!(
            name,
            source,
            path = %fetched.path.display(),
            size = fetched.info.size,
            decompressed = fetched.decompressed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Artifact ready"
        );
        Ok(fetched)
    }

    async fn fetch_local(
        &self,
        name: &str,
        source: &str,
        path: PathBuf,
        expected: Option<&str>,
    ) -> Result<Fetched, ArtifactError> {
        let limit = self.limits.max_size;
        let origin = source.to_string();
        let hashes = self.dir.join(HASHES);
        let dirs = self.policy.local_dirs().cloned();
        let probe =
            blocking(move || local::probe(&origin, &path, limit, &hashes, dirs.as_ref())).await?;
        let local::LocalProbe {
            path: real_path,
            file,
            size: fetched_size,
            sha256: fetched_sha256,
            codec,
        } = probe;
        let Some(codec) = codec else {
            verify::check(
                source,
                expected,
                &Digests {
                    fetched_sha256: fetched_sha256.clone(),
                    fetched_size,
                    content_sha256: fetched_sha256.clone(),
                    content_size: fetched_size,
                },
            )?;
            // A person's own file is used in place. In the farm QEMU must open what was checked,
            // not a path that could be re-pointed after the check: boot from a copy in the cache.
            let path = if self.policy.is_restricted() {
                self.copy_checked(source, file, &fetched_sha256, fetched_size)
                    .await?
            } else {
                real_path
            };
            return Ok(Fetched {
                name: name.to_string(),
                path,
                info: ArtifactInfo {
                    source: source.to_string(),
                    sha256: fetched_sha256,
                    size: fetched_size,
                },
                decompressed: false,
            });
        };

        // Same compressed bytes, same decompressed file, wherever the file lives.
        let key = format!("content-{fetched_sha256}");
        let _guard = self.lock_key(&key).await?;
        let entry = self.entry(&key);
        let meta = match self.valid_entry(&entry).await? {
            Some(meta) => meta,
            None => {
                let tmp_dir = self.dir.join(TMP);
                let origin = source.to_string();
                let hashed = fetched_sha256.clone();
                let (content, size, sha256) = blocking(move || {
                    let unreadable = |reason: String| ArtifactError::Unreadable {
                        origin: origin.clone(),
                        reason,
                    };
                    let mut reader = verify::HashingReader::new(file);
                    let out = decompress_to_temp(&origin, codec, &mut reader, &tmp_dir, limit)?;
                    // The key is the digest taken earlier: the bytes decompressed must be those.
                    let seen = reader.finish().map_err(|e| unreadable(e.to_string()))?;
                    if seen != hashed {
                        return Err(unreadable(
                            "the file changed while it was being read".into(),
                        ));
                    }
                    Ok(out)
                })
                .await?;
                let meta =
                    EntryMeta::new(source, &fetched_sha256, fetched_size, codec, &sha256, size);
                verify::check(source, expected, &meta.digests())?;
                let entry = entry.clone();
                blocking(move || entry.commit(content, meta)).await?
            }
        };
        verify::check(source, expected, &meta.digests())?;
        Ok(Fetched {
            name: name.to_string(),
            path: entry.data,
            info: ArtifactInfo {
                source: source.to_string(),
                sha256: meta.fetched_sha256,
                size: meta.fetched_size,
            },
            decompressed: true,
        })
    }

    /// The cache's copy of a checked local file (`content-<sha256>`), made from the open file
    /// itself; a file that changes while it is copied is refused.
    async fn copy_checked(
        &self,
        source: &str,
        file: File,
        sha256: &str,
        size: u64,
    ) -> Result<PathBuf, ArtifactError> {
        let key = format!("content-{sha256}");
        let _guard = self.lock_key(&key).await?;
        let entry = self.entry(&key);
        if self.valid_entry(&entry).await?.is_some() {
            return Ok(entry.data);
        }
        let tmp_dir = self.dir.join(TMP);
        let (origin, want, limit) = (source.to_string(), sha256.to_string(), self.limits.max_size);
        let copy = blocking(move || {
            let unreadable = |reason: String| ArtifactError::Unreadable {
                origin: origin.clone(),
                reason,
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".copy-")
                .tempfile_in(&tmp_dir)
                .map_err(|e| ArtifactError::io("creating a temporary file", e))?;
            let mut reader = verify::HashingReader::new(io::Read::take(file, limit + 1));
            let copied = io::copy(&mut reader, tmp.as_file_mut())
                .map_err(|e| ArtifactError::io(format!("copying {origin}"), e))?;
            let seen = reader.finish().map_err(|e| unreadable(e.to_string()))?;
            if seen != want || copied != size {
                return Err(unreadable(
                    "the file changed while it was being read".into(),
                ));
            }
            Ok(tmp)
        })
        .await?;
        let meta = EntryMeta::plain(source, sha256, size);
        let e = entry.clone();
        blocking(move || e.commit(copy, meta)).await?;
        Ok(entry.data)
    }

    async fn fetch_url(
        &self,
        name: &str,
        source: &str,
        url: Url,
        expected: Option<&str>,
    ) -> Result<Fetched, ArtifactError> {
        let key = url_key(&url, expected);
        let _guard = self.lock_key(&key).await?;
        let entry = self.entry(&key);
        let cached = self.valid_entry(&entry).await?;
        let current = match &cached {
            Some(meta) if !needs_revalidation(meta, expected, unix_now()) => {
                tracing::debug!(name, url = %redacted(&url), "Cache hit");
                return url_fetched(name, source, &entry, meta, expected);
            }
            Some(meta) => Some(meta.validators()),
            None => None,
        };
        let tmp_dir = self.dir.join(TMP);
        let outcome = self
            .downloader
            .download(&url, &tmp_dir, current.as_ref())
            .await;
        let downloaded = match (outcome, cached) {
            (Ok(Outcome::Downloaded(d)), _) => d,
            (Ok(Outcome::NotModified), Some(mut meta)) => {
                tracing::debug!(name, url = %redacted(&url), "Cache entry still current");
                meta.validated_at = unix_now();
                let (e, m) = (entry.clone(), meta.clone());
                blocking(move || {
                    e.write_meta(&m)
                        .map_err(|err| ArtifactError::io("updating cache metadata", err))
                })
                .await?;
                return url_fetched(name, source, &entry, &meta, expected);
            }
            (Err(err), Some(meta)) => {
                tracing::warn!(name, url = %redacted(&url), error = %err, "Could not revalidate, using the cached copy");
                return url_fetched(name, source, &entry, &meta, expected);
            }
            (Ok(Outcome::NotModified), None) => {
                return Err(ArtifactError::Internal(format!(
                    "HTTP 304 for {} without a conditional request",
                    redacted(&url)
                )))
            }
            (Err(err), None) => return Err(err),
        };
        let limit = self.limits.max_size;
        let origin = source.to_string();
        let (content, mut meta) = blocking(move || {
            let (fetched_size, fetched_sha256) = (downloaded.size, downloaded.sha256);
            let reopen = |f: &NamedTempFile| {
                f.reopen()
                    .map_err(|e| ArtifactError::io("reopening a download", e))
            };
            let header = decompress::read_header(reopen(&downloaded.file)?)
                .map_err(|e| ArtifactError::io("reading a download", e))?;
            match decompress::detect(&header) {
                None => {
                    let meta = EntryMeta::plain(&origin, &fetched_sha256, fetched_size);
                    Ok((downloaded.file, meta))
                }
                Some(codec) => {
                    let input = reopen(&downloaded.file)?;
                    let (content, size, sha256) =
                        decompress_to_temp(&origin, codec, input, &tmp_dir, limit)?;
                    let meta = EntryMeta::new(
                        &origin,
                        &fetched_sha256,
                        fetched_size,
                        codec,
                        &sha256,
                        size,
                    );
                    Ok((content, meta))
                }
            }
        })
        .await?;
        meta.etag = downloaded.validators.etag;
        meta.last_modified = downloaded.validators.last_modified;
        meta.validated_at = unix_now();
        // Verify before the rename: a mismatch leaves nothing in the cache.
        verify::check(source, expected, &meta.digests())?;
        let e = entry.clone();
        let meta = blocking(move || e.commit(content, meta)).await?;
        url_fetched(name, source, &entry, &meta, expected)
    }

    fn entry(&self, key: &str) -> Entry {
        let objects = self.dir.join(OBJECTS);
        Entry {
            data: objects.join(key),
            meta: objects.join(format!("{key}.json")),
        }
    }

    /// The entry's metadata when it is intact; a damaged entry is removed (and so refetched).
    async fn valid_entry(&self, entry: &Entry) -> Result<Option<EntryMeta>, ArtifactError> {
        let e = entry.clone();
        let state = blocking(move || {
            e.check().map_err(|err| {
                ArtifactError::io(format!("checking cache entry {}", e.data.display()), err)
            })
        })
        .await?;
        match state {
            EntryState::Valid(meta) => Ok(Some(meta)),
            EntryState::Absent => Ok(None),
            EntryState::Damaged(reason) => {
                tracing::warn!(path = %entry.data.display(), %reason, "Damaged cache entry, fetching again");
                let e = entry.clone();
                blocking(move || {
                    e.remove().map_err(|err| {
                        ArtifactError::io(format!("removing {}", e.data.display()), err)
                    })
                })
                .await?;
                Ok(None)
            }
        }
    }

    /// Remove the least recently used entries until the cache holds at most `keep_bytes`.
    /// Entries in use (locked by a fetch in any process) are kept. Blocking: call it from
    /// `spawn_blocking` in async code.
    pub fn prune(&self, keep_bytes: u64) -> Result<PruneReport, ArtifactError> {
        let objects = self.dir.join(OBJECTS);
        let io_err = |e| ArtifactError::io(format!("listing {}", objects.display()), e);
        let mut entries = Vec::new();
        for item in fs::read_dir(&objects).map_err(io_err)? {
            let item = item.map_err(io_err)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            let entry = self.entry(&name);
            let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
            let bytes = size(&entry.data) + size(&entry.meta);
            let lock = self.dir.join(LOCKS).join(format!("{name}.lock"));
            let last_used = fs::metadata(&lock)
                .or_else(|_| fs::metadata(&entry.data))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((last_used, bytes, name, lock, entry));
        }
        entries.sort_by_key(|e| e.0);
        let mut report = PruneReport {
            kept_bytes: entries.iter().map(|e| e.1).sum(),
            ..PruneReport::default()
        };
        for (_, bytes, name, lock, entry) in entries {
            if report.kept_bytes <= keep_bytes {
                break;
            }
            let Ok(lock_file) = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock)
            else {
                continue;
            };
            if !matches!(
                fs4::fs_std::FileExt::try_lock_exclusive(&lock_file),
                Ok(true)
            ) {
                tracing::debug!(key = %name, "Cache entry in use, not pruned");
                continue;
            }
            entry
                .remove()
                .map_err(|e| ArtifactError::io(format!("removing {}", entry.data.display()), e))?;
            report.removed += 1;
            report.freed_bytes += bytes;
            report.kept_bytes -= bytes;
        }
        tracing::info!(
            removed = report.removed,
            freed_bytes = report.freed_bytes,
            kept_bytes = report.kept_bytes,
            "Pruned artifact cache"
        );
        Ok(report)
    }

    /// Exclusive access to `key` for this task, against other tasks and other processes.
    async fn lock_key(&self, key: &str) -> Result<KeyGuard, ArtifactError> {
        let in_process = self
            .key_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone();
        let task = in_process.lock_owned().await;
        let path = self.dir.join(LOCKS).join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ArtifactError::io(format!("opening lock {}", path.display()), e))?;
        // The holder is bounded by the total timeout plus decompression; wait a bit longer.
        let wait = self.limits.total_timeout.saturating_mul(2) + Duration::from_secs(60);
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
        // The lock file's mtime records the key's last use, for `prune`.
        let _ = file.set_modified(SystemTime::now());
        Ok(KeyGuard {
            _file: file,
            _task: task,
        })
    }
}

/// What [`ArtifactCache::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept_bytes: u64,
}

/// Holds the flock (released when the file closes) and the in-process lock.
struct KeyGuard {
    _file: File,
    _task: tokio::sync::OwnedMutexGuard<()>,
}

/// Cache key of a URL: the expected digest is part of it so a corrected checksum never
/// reuses a download made under another expectation.
fn url_key(url: &Url, expected: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(b"url\n");
    h.update(url.as_str().as_bytes());
    h.update(b"\n");
    h.update(expected.unwrap_or("").as_bytes());
    format!("url-{}", hex::encode(h.finalize()))
}

fn url_fetched(
    name: &str,
    source: &str,
    entry: &Entry,
    meta: &EntryMeta,
    expected: Option<&str>,
) -> Result<Fetched, ArtifactError> {
    verify::check(source, expected, &meta.digests())?;
    Ok(Fetched {
        name: name.to_string(),
        path: entry.data.clone(),
        info: ArtifactInfo {
            source: source.to_string(),
            sha256: meta.fetched_sha256.clone(),
            size: meta.fetched_size,
        },
        decompressed: meta.codec.is_some(),
    })
}

/// A download confirmed current this recently is used without asking the server again, so a
/// burst of boots costs one request.
const REVALIDATE_AFTER_SECS: i64 = 300;

/// Pure decision: ask the server whether a cached download changed? Never when a sha256 pins the
/// content, nor when the server gave nothing to ask with (no ETag or Last-Modified).
fn needs_revalidation(meta: &EntryMeta, expected: Option<&str>, now: i64) -> bool {
    expected.is_none()
        && !meta.validators().is_empty()
        && now.saturating_sub(meta.validated_at) >= REVALIDATE_AFTER_SECS
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntryMeta {
    format: u32,
    source: String,
    fetched_sha256: String,
    fetched_size: u64,
    /// The codec the source was compressed with; None when stored as fetched.
    codec: Option<String>,
    content_sha256: String,
    content_size: u64,
    /// mtime of the data file when written: unchanged size and mtime mean no rehash is needed.
    mtime: i64,
    mtime_nsec: i64,
    /// HTTP validators of a download, and when the server last confirmed it (Unix seconds).
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    validated_at: i64,
}

impl EntryMeta {
    fn new(
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

    fn plain(source: &str, sha256: &str, size: u64) -> Self {
        EntryMeta {
            codec: None,
            ..EntryMeta::new(source, sha256, size, Codec::Gzip, sha256, size)
        }
    }

    fn validators(&self) -> Validators {
        Validators {
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
        }
    }

    fn digests(&self) -> Digests {
        Digests {
            fetched_sha256: self.fetched_sha256.clone(),
            fetched_size: self.fetched_size,
            content_sha256: self.content_sha256.clone(),
            content_size: self.content_size,
        }
    }
}

#[derive(Debug)]
enum EntryState {
    Absent,
    Valid(EntryMeta),
    Damaged(String),
}

#[derive(Debug, Clone)]
struct Entry {
    data: PathBuf,
    meta: PathBuf,
}

impl Entry {
    fn check(&self) -> io::Result<EntryState> {
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
    fn commit(
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

    fn write_meta(&self, meta: &EntryMeta) -> io::Result<()> {
        let dir = self.meta.parent().unwrap_or(Path::new("."));
        let mut tmp = NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, meta)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.meta).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()
    }

    fn remove(&self) -> io::Result<()> {
        for path in [&self.meta, &self.data] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Decompress `input` into a new temporary file in `tmp_dir`; returns it with its size and sha256.
fn decompress_to_temp(
    origin: &str,
    codec: Codec,
    input: impl Read,
    tmp_dir: &Path,
    limit: u64,
) -> Result<(NamedTempFile, u64, String), ArtifactError> {
    let out = tempfile::Builder::new()
        .prefix(".decompress-")
        .tempfile_in(tmp_dir)
        .map_err(|e| ArtifactError::io("creating a temporary file", e))?;
    let (size, sha256) =
        decompress::decompress(codec, input, out.as_file(), limit).map_err(|e| match e {
            DecompressError::TooLarge(limit) => ArtifactError::TooLarge {
                origin: origin.to_string(),
                what: "the decompressed data",
                limit,
            },
            DecompressError::Corrupt { .. } => ArtifactError::Unreadable {
                origin: origin.to_string(),
                reason: e.to_string(),
            },
            DecompressError::Write(source) => ArtifactError::Io {
                context: format!("decompressing {origin}"),
                source,
            },
        })?;
    Ok((out, size, sha256))
}

fn remove_stale_temporaries(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TMP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArtifactError::Internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: Option<&str>, validated_at: i64) -> EntryMeta {
        EntryMeta {
            etag: etag.map(str::to_string),
            validated_at,
            ..EntryMeta::plain("http://h/k", "aa", 1)
        }
    }

    #[test]
    fn only_old_unpinned_downloads_with_validators_are_revalidated() {
        let now = 10_000;
        let old = now - REVALIDATE_AFTER_SECS;
        assert!(needs_revalidation(&meta(Some("\"x\""), old), None, now));
        assert!(!needs_revalidation(
            &meta(Some("\"x\""), now - 1),
            None,
            now
        ));
        assert!(!needs_revalidation(
            &meta(Some("\"x\""), old),
            Some("aa"),
            now
        ));
        assert!(!needs_revalidation(&meta(None, old), None, now));
        let dated = EntryMeta {
            last_modified: Some("Sat, 28 Nov 2026 12:00:00 GMT".into()),
            ..meta(None, old)
        };
        assert!(needs_revalidation(&dated, None, now));
    }

    #[test]
    fn url_keys_depend_on_url_and_expected_digest() {
        let a = Url::parse("http://h/a").unwrap();
        let b = Url::parse("http://h/b").unwrap();
        assert_ne!(url_key(&a, None), url_key(&b, None));
        assert_ne!(url_key(&a, None), url_key(&a, Some("aa")));
        assert_eq!(url_key(&a, Some("aa")), url_key(&a, Some("aa")));
    }
}
