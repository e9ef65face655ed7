//! Keeping the cache within a size budget: the least recently used entries go first, and an
//! entry being fetched or used by a boot (in any process) never goes.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::super::ArtifactError;
use super::entry::Entry;
use super::lock;

/// What [`super::ArtifactCache::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept_bytes: u64,
}

/// One entry as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub key: String,
    pub last_used: SystemTime,
    pub bytes: u64,
}

/// The order entries go in until the cache fits `budget` (pure): oldest use first, and only
/// as many as needed, supposing each can go (one in use is skipped and the next one tried).
pub(super) fn eviction_order(mut entries: Vec<Candidate>, budget: u64) -> (Vec<Candidate>, u64) {
    entries.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
    let total = entries.iter().map(|e| e.bytes).sum();
    let order = if total > budget { entries } else { Vec::new() };
    (order, total)
}

/// The entries in `objects/`, with their sizes and last uses (the fetch lock's mtime).
fn candidates(objects: &Path, locks: &Path) -> Result<Vec<Candidate>, ArtifactError> {
    let io_err = |e| ArtifactError::io(format!("listing {}", objects.display()), e);
    let mut out = Vec::new();
    for item in fs::read_dir(objects).map_err(io_err)? {
        let item = item.map_err(io_err)?;
        let key = item.file_name().to_string_lossy().into_owned();
        if key.ends_with(".json") || key.starts_with('.') {
            continue;
        }
        let entry = Entry::at(objects, &key);
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let bytes = size(&entry.data) + size(&entry.meta);
        let last_used = fs::metadata(lock::lock_path(locks, &key))
            .or_else(|_| fs::metadata(&entry.data))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(Candidate {
            key,
            last_used,
            bytes,
        });
    }
    Ok(out)
}

/// Removes least recently used entries until `objects/` holds at most `budget` bytes, skipping
/// entries in use. Blocking.
pub(super) fn prune(
    objects: &Path,
    locks: &Path,
    budget: u64,
) -> Result<PruneReport, ArtifactError> {
    let (order, total) = eviction_order(candidates(objects, locks)?, budget);
    let mut report = PruneReport {
        kept_bytes: total,
        ..PruneReport::default()
    };
    for c in order {
        if report.kept_bytes <= budget {
            break;
        }
        let Some(_locked) = lock::try_lock_unused(locks, &c.key) else {
            tracing::debug!(key = %c.key, "Cache entry in use, not pruned");
            continue;
        };
        let entry = Entry::at(objects, &c.key);
        entry
            .remove()
            .map_err(|e| ArtifactError::io(format!("removing {}", entry.data.display()), e))?;
        report.removed += 1;
        report.freed_bytes += c.bytes;
        report.kept_bytes -= c.bytes;
    }
    if report.removed > 0 {
        tracing::info!(
            removed = report.removed,
            freed_bytes = report.freed_bytes,
            kept_bytes = report.kept_bytes,
            budget,
            "Pruned artifact cache"
        );
    }
    if report.kept_bytes > budget {
        tracing::warn!(
            kept_bytes = report.kept_bytes,
            budget,
            "Artifact cache over its budget: the rest is in use"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn c(key: &str, age_s: u64, bytes: u64) -> Candidate {
        Candidate {
            key: key.into(),
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age_s),
            bytes,
        }
    }

    #[test]
    fn the_oldest_go_first_and_only_when_over_budget() {
        let entries = vec![c("new", 1, 100), c("old", 50, 100), c("mid", 10, 100)];
        let (order, total) = eviction_order(entries.clone(), 300);
        assert_eq!((order.len(), total), (0, 300));
        let (order, _) = eviction_order(entries, 250);
        let keys: Vec<&str> = order.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["old", "mid", "new"]);
    }
}
