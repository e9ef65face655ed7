//! Boot artifacts (kernel, initrd, rootfs, dtb, modules): resolve a source (path, `file://`,
//! `http(s)://`), download with timeouts and bounded retries, verify sha256, decompress
//! gzip/xz/zstd by magic bytes, and keep results in an on-disk cache shared by every runner
//! process on the machine.
//!
//! - Local files that need no decompression are used in place (not copied); compressed local
//!   files are decompressed once into the cache, keyed by the content hash of the compressed bytes.
//! - Downloads are cached by URL (plus the expected sha256 when given). One download per key,
//!   whether the concurrent requests come from tasks in one process or from several processes
//!   (an in-process mutex plus an `flock` per key). Data lands in a temporary file, is verified
//!   and fsynced, and only then renamed into place, so a partial or corrupt file never enters.
//! - A download without a pinned `sha256` that was last confirmed over 5 minutes ago is
//!   revalidated with a conditional GET (ETag / Last-Modified): 304 keeps it, 200 replaces it,
//!   and if the server cannot answer the cached copy is used (one attempt, no retries).
//! - Local files are hashed once per inode stamp (`hashes/`), so warm starts do not reread them.
//! - A `sha256` names the bytes as fetched (e.g. the `.gz` file); the decompressed bytes' digest
//!   is accepted too. [`Fetched::info`] always reports the fetched bytes.
//! - Returned paths are read-only originals: boot from [`per_boot_copy`] or with `snapshot=on`.
//! - The cache keeps to a size budget ([`ArtifactCache::fit`]): least recently used entries go
//!   first, never one being fetched or held by a boot ([`Fetched::in_use`]), in any process.

mod boot_copy;
mod cache;
pub(crate) mod decompress;
mod error;
mod fetch;
mod local;
mod policy;
mod source;
mod verify;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use boot_copy::per_boot_copy;
pub use cache::{ArtifactCache, Derived, Fetched, InUse, PruneReport};
pub use decompress::Codec;
pub use error::ArtifactError;
pub use policy::{check_url, refusal_in, FetchPolicy, PolicyError, PolicyResolver, RefusedAddress};
pub use source::{parse as parse_source, Source};
pub(crate) use verify::{is_limit_exceeded, HashingWriter};

/// The cache's default size budget: below the runner pod's cache volume (4 GiB in the chart),
/// with room left for a download in progress.
pub const DEFAULT_CACHE_MAX: u64 = 3 << 30;

/// Bounds on every fetch. Every wait is bounded: connect, each read, the whole download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest artifact accepted, both as fetched and after decompression.
    pub max_size: u64,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes (per read, not for the whole body).
    pub read_timeout: Duration,
    /// Longest time for one download including its retries.
    pub total_timeout: Duration,
    /// Retries after the first attempt, on 5xx and connection errors only.
    pub retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: 2 << 30,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(30 * 60),
            retries: 3,
        }
    }
}
