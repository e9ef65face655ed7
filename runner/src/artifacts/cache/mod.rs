//! The on-disk cache: one directory shared by every runner process on a machine.
//!
//! Layout: `objects/` (the entries: [`entry`]), `locks/` (who fetches and who uses an entry:
//! [`lock`]), `tmp/` (work in progress; renamed into `objects/` only when complete and verified)
//! and `hashes/` (digests of local files, reused while the file's inode stamp is unchanged).
//! Downloads are revalidated by [`revalidate`]; [`prune`] keeps the cache within a budget.

mod entry;
mod lock;
mod prune;
mod revalidate;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bootfarm_core::result::ArtifactInfo;
use reqwest::Url;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::decompress::{self, Codec, DecompressError};
use super::fetch::Downloader;
use super::local;
use super::policy::FetchPolicy;
use super::source::{self, redacted, Source};
use super::verify::{self, Digests};
use super::{ArtifactError, Limits};
use entry::{Entry, EntryMeta, EntryState};
use lock::{KeyGuard, KeyLocks};
use revalidate::{unix_now, Plan, Settled};

pub use lock::InUse;
pub use prune::PruneReport;

/// An artifact ready to boot from.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The name given to [`ArtifactCache::fetch`] ("kernel", "initrd", ..).
    pub name: String,
    /// A file that must not be written: the cached original or the user's own file.
    pub path: PathBuf,
    /// Source as given, sha256 and size of the bytes as fetched (before decompression).
    pub info: ArtifactInfo,
    /// True when `path` holds the decompressed form of a gzip/xz/zstd source.
    pub decompressed: bool,
    /// Keeps the cache entry from being pruned: hold it as long as `path` is used.
    pub in_use: InUse,
}

/// An entry [`ArtifactCache::derive`] made or found.
#[derive(Debug)]
pub struct Derived {
    /// Read-only.
    pub path: PathBuf,
    pub sha256: String,
    /// False when the entry was already there.
    pub made: bool,
    pub in_use: InUse,
}

/// Two fetches of the same artifact are equal, whatever holds them.
impl PartialEq for Fetched {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.path, &self.info, self.decompressed)
            == (&other.name, &other.path, &other.info, other.decompressed)
    }
}

impl Eq for Fetched {}

pub struct ArtifactCache {
    dir: PathBuf,
    limits: Limits,
    downloader: Downloader,
    policy: FetchPolicy,
    key_locks: KeyLocks,
}

const OBJECTS: &str = "objects";
const LOCKS: &str = "locks";
const TMP: &str = "tmp";
const HASHES: &str = "hashes";
/// Leftovers of killed processes older than this are removed at start.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

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
            key_locks: KeyLocks::default(),
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
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
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
            let (path, in_use) = if self.policy.is_restricted() {
                self.copy_checked(source, file, &fetched_sha256, fetched_size)
                    .await?
            } else {
                (real_path, InUse::none())
            };
            return Ok(Fetched {
                name: name.to_string(),
                path,
                info: ArtifactInfo {
                    source: source.to_string(),
                    sha256: fetched_sha256,
                    size: fetched_size,
                    path: None,
                },
                decompressed: false,
                in_use,
            });
        };

        // Same compressed bytes, same decompressed file, wherever the file lives.
        let key = format!("content-{fetched_sha256}");
        let guard = self.lock_key(&key).await?;
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
                path: None,
            },
            decompressed: true,
            in_use: self.hold(&guard, &key)?,
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
    ) -> Result<(PathBuf, InUse), ArtifactError> {
        let key = format!("content-{sha256}");
        let guard = self.lock_key(&key).await?;
        let entry = self.entry(&key);
        if self.valid_entry(&entry).await?.is_some() {
            return Ok((entry.data, self.hold(&guard, &key)?));
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
        Ok((entry.data, self.hold(&guard, &key)?))
    }

    async fn fetch_url(
        &self,
        name: &str,
        source: &str,
        url: Url,
        expected: Option<&str>,
    ) -> Result<Fetched, ArtifactError> {
        let key = url_key(&url, expected);
        let guard = self.lock_key(&key).await?;
        let entry = self.entry(&key);
        let cached = self.valid_entry(&entry).await?;
        let (cached, current) = match revalidate::plan(cached, expected, unix_now()) {
            Plan::Use(meta) => {
                tracing::debug!(name, url = %redacted(&url), "Cache hit");
                let fetched = url_fetched(name, source, &entry, &meta, expected)?;
                return self.held(fetched, &guard, &key);
            }
            Plan::Ask(meta, validators) => (Some(meta), Some(validators)),
            Plan::Download => (None, None),
        };
        let tmp_dir = self.dir.join(TMP);
        let outcome = self
            .downloader
            .download(&url, &tmp_dir, current.as_ref())
            .await;
        let downloaded = match revalidate::settle(outcome, cached, unix_now(), &redacted(&url))? {
            Settled::Store(d) => d,
            Settled::Confirmed(meta) => {
                tracing::debug!(name, url = %redacted(&url), "Cache entry still current");
                let (e, m) = (entry.clone(), meta.clone());
                blocking(move || {
                    e.write_meta(&m)
                        .map_err(|err| ArtifactError::io("updating cache metadata", err))
                })
                .await?;
                let fetched = url_fetched(name, source, &entry, &meta, expected)?;
                return self.held(fetched, &guard, &key);
            }
            Settled::Unconfirmed(meta, err) => {
                tracing::warn!(name, url = %redacted(&url), error = %err, "Could not revalidate, using the cached copy");
                let fetched = url_fetched(name, source, &entry, &meta, expected)?;
                return self.held(fetched, &guard, &key);
            }
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
        let fetched = url_fetched(name, source, &entry, &meta, expected)?;
        self.held(fetched, &guard, &key)
    }

    /// The entry `key`, made by `make` (in the cache's temporary directory, returning the file
    /// with its size and sha256) unless another boot, here or in another process, made it
    /// first. Derived entries (a kernel's extracted ELF) are held and pruned like fetched ones.
    pub async fn derive<F>(
        &self,
        key: &str,
        origin: &str,
        make: F,
    ) -> Result<Derived, ArtifactError>
    where
        F: FnOnce(&Path) -> Result<(NamedTempFile, u64, String), ArtifactError> + Send + 'static,
    {
        let guard = self.lock_key(key).await?;
        let entry = self.entry(key);
        if let Some(meta) = self.valid_entry(&entry).await? {
            return Ok(Derived {
                in_use: self.hold(&guard, key)?,
                path: entry.data,
                sha256: meta.content_sha256,
                made: false,
            });
        }
        let tmp_dir = self.dir.join(TMP);
        let (content, size, sha256) = blocking(move || make(&tmp_dir)).await?;
        let meta = EntryMeta::plain(origin, &sha256, size);
        let e = entry.clone();
        blocking(move || e.commit(content, meta)).await?;
        Ok(Derived {
            in_use: self.hold(&guard, key)?,
            path: entry.data,
            sha256,
            made: true,
        })
    }

    fn entry(&self, key: &str) -> Entry {
        Entry::at(&self.dir.join(OBJECTS), key)
    }

    /// Marks `key` in use (taken while its fetch lock is held).
    fn hold(&self, guard: &KeyGuard, key: &str) -> Result<InUse, ArtifactError> {
        guard.hold(&self.dir.join(LOCKS), key)
    }

    fn held(
        &self,
        fetched: Fetched,
        guard: &KeyGuard,
        key: &str,
    ) -> Result<Fetched, ArtifactError> {
        Ok(Fetched {
            in_use: self.hold(guard, key)?,
            ..fetched
        })
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

    /// Removes the least recently used entries until the cache holds at most `keep_bytes`.
    /// Entries in use (being fetched, or held by a boot, in any process) are kept. Blocking:
    /// call it from `spawn_blocking` in async code, or use [`ArtifactCache::fit`].
    pub fn prune(&self, keep_bytes: u64) -> Result<PruneReport, ArtifactError> {
        prune::prune(&self.dir.join(OBJECTS), &self.dir.join(LOCKS), keep_bytes)
    }

    /// [`ArtifactCache::prune`] off the async threads.
    pub async fn fit(&self, budget: u64) -> Result<PruneReport, ArtifactError> {
        let (objects, locks) = (self.dir.join(OBJECTS), self.dir.join(LOCKS));
        blocking(move || prune::prune(&objects, &locks, budget)).await
    }

    /// Exclusive access to `key` for this task, against other tasks and other processes.
    async fn lock_key(&self, key: &str) -> Result<KeyGuard, ArtifactError> {
        // The holder is bounded by the total timeout plus decompression; wait a bit longer.
        let wait = self.limits.total_timeout.saturating_mul(2) + Duration::from_secs(60);
        self.key_locks.lock(&self.dir.join(LOCKS), key, wait).await
    }
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
            path: None,
        },
        decompressed: meta.codec.is_some(),
        in_use: InUse::none(),
    })
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

    #[test]
    fn url_keys_depend_on_url_and_expected_digest() {
        let a = Url::parse("http://h/a").unwrap();
        let b = Url::parse("http://h/b").unwrap();
        assert_ne!(url_key(&a, None), url_key(&b, None));
        assert_ne!(url_key(&a, None), url_key(&a, Some("aa")));
        assert_eq!(url_key(&a, Some("aa")), url_key(&a, Some("aa")));
    }
}
