//! Local files: check they are readable regular files, hash them and sniff their codec. Digests
//! are remembered per file and reused while its inode stamp (device, inode, size, mtime, ctime)
//! is unchanged, so a warm start does not reread a large rootfs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::decompress::{self, Codec};
use super::verify;
use super::ArtifactError;
use bootfarm_core::spec::LocalDirs;

pub struct LocalProbe {
    /// The real path of the file opened (absolute, symlinks resolved).
    pub path: PathBuf,
    /// The file itself, at offset 0: whatever reads it next reads what was checked and hashed.
    pub file: File,
    pub size: u64,
    pub sha256: String,
    pub codec: Option<Codec>,
}

/// Everything a write to the file changes. ctime cannot be set from user space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Self {
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            ctime: md.ctime(),
            ctime_nsec: md.ctime_nsec(),
        }
    }

    fn ctime_ns(&self) -> i128 {
        i128::from(self.ctime) * 1_000_000_000 + i128::from(self.ctime_nsec)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Memo {
    path: PathBuf,
    stamp: Stamp,
    sha256: String,
    codec: Option<String>,
    /// When hashing started (ns since the epoch).
    hashed_at_ns: i128,
}

/// Timestamps come from a coarse clock (a few ms): a write within this margin before hashing
/// could share the old stamp ("racy" like git's index), so such a memo is not trusted.
const RACY_MARGIN_NS: i128 = 100_000_000;

impl Memo {
    /// Pure decision: may this memo stand in for hashing the file with `stamp`?
    fn trusted_for(&self, path: &Path, stamp: &Stamp) -> bool {
        self.path == path
            && &self.stamp == stamp
            && stamp.ctime_ns() + RACY_MARGIN_NS < self.hashed_at_ns
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

fn memo_path(memo_dir: &Path, path: &Path) -> PathBuf {
    let key = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
    memo_dir.join(format!("{key}.json"))
}

fn read_memo(file: &Path) -> Option<Memo> {
    serde_json::from_slice(&fs::read(file).ok()?).ok()
}

/// Best effort: a lost memo only costs a rehash.
fn write_memo(file: &Path, memo: &Memo) {
    let write = || -> io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut tmp = NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, memo)?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::debug!(path = %file.display(), error = %e, "Could not store a file digest");
    }
}

/// Check `path` is a readable regular file within `limit`; its digest, size and codec. With
/// `dirs` (the farm), the file must lie inside one of them: the check is made on the file
/// actually opened (its real path from `/proc/self/fd`), so a symlink swapped after a check
/// cannot point the boot elsewhere; paths that are plainly outside are refused before any open
/// (opening some device nodes has effects of its own).
pub fn probe(
    origin: &str,
    path: &Path,
    limit: u64,
    memo_dir: &Path,
    dirs: Option<&LocalDirs>,
) -> Result<LocalProbe, ArtifactError> {
    let unreadable = |reason: String| ArtifactError::Unreadable {
        origin: origin.to_string(),
        reason,
    };
    let missing = || ArtifactError::Missing {
        origin: origin.to_string(),
    };
    let refused = |reason: String| ArtifactError::Refused {
        origin: origin.to_string(),
        reason,
    };
    let stat_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => missing(),
        _ => unreadable(e.to_string()),
    };
    // In the farm: refuse what is outside before touching it, then open the resolved path.
    let open_path = match dirs {
        None => path.to_path_buf(),
        Some(dirs) => {
            dirs.check(path).map_err(|e| refused(e.0))?;
            let real = fs::canonicalize(path).map_err(stat_err)?;
            dirs.check(&real).map_err(|e| refused(e.0))?;
            real
        }
    };
    let md = fs::metadata(&open_path).map_err(stat_err)?;
    if md.is_dir() {
        return Err(unreadable("it is a directory, not a file".into()));
    }
    if !md.is_file() {
        // Opening a FIFO would block forever; devices and sockets are not artifacts either.
        return Err(unreadable(
            "not a regular file (a device, FIFO or socket)".into(),
        ));
    }
    let too_large = || ArtifactError::TooLarge {
        origin: origin.to_string(),
        what: "the file",
        limit,
    };
    if md.len() > limit {
        return Err(too_large());
    }
    let mut opts = OpenOptions::new();
    opts.read(true);
    // Never block on a FIFO swapped in after the check; in the farm never follow a last-moment
    // symlink either.
    let mut flags = libc::O_NONBLOCK;
    if dirs.is_some() {
        flags |= libc::O_NOFOLLOW;
    }
    opts.custom_flags(flags);
    let mut file = opts.open(&open_path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(),
        _ => unreadable(e.to_string()),
    })?;
    let opened = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !opened.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    if opened.len() > limit {
        return Err(too_large());
    }
    let canonical = match fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(real) => real,
        // Without /proc the farm cannot prove where the file is; a person's boot can do without.
        Err(e) if dirs.is_some() => {
            return Err(refused(format!(
                "cannot tell the real path of the opened file (/proc: {e})"
            )))
        }
        Err(_) => fs::canonicalize(&open_path).map_err(|e| unreadable(e.to_string()))?,
    };
    if let Some(dirs) = dirs {
        dirs.check(&canonical).map_err(|e| refused(e.0))?;
    }
    // The stamp of the file actually opened, taken before reading it.
    let stamp = Stamp::of(&opened);

    let memo_file = memo_path(memo_dir, &canonical);
    if let Some(memo) = read_memo(&memo_file).filter(|m| m.trusted_for(&canonical, &stamp)) {
        return Ok(LocalProbe {
            path: canonical,
            file,
            size: stamp.size,
            sha256: memo.sha256,
            codec: memo.codec.as_deref().and_then(Codec::from_name),
        });
    }

    let hashed_at_ns = now_ns();
    let header = decompress::read_header(&mut file).map_err(|e| unreadable(e.to_string()))?;
    let body = file.try_clone().map_err(|e| unreadable(e.to_string()))?;
    let reader = io::Cursor::new(header.clone()).chain(BufReader::with_capacity(1 << 20, body));
    let (size, sha256) = verify::hash_reader(reader, limit).map_err(|e| {
        if verify::is_limit_exceeded(&e) {
            too_large()
        } else {
            unreadable(e.to_string())
        }
    })?;
    let codec = decompress::detect(&header);
    if size == stamp.size {
        write_memo(
            &memo_file,
            &Memo {
                path: canonical.clone(),
                stamp,
                sha256: sha256.clone(),
                codec: codec.map(|c| c.name().to_string()),
                hashed_at_ns,
            },
        );
    }
    file.rewind().map_err(|e| unreadable(e.to_string()))?;
    Ok(LocalProbe {
        path: canonical,
        file,
        size,
        sha256,
        codec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(ctime: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: ctime,
            mtime_nsec: 0,
            ctime,
            ctime_nsec: 0,
        }
    }

    #[test]
    fn a_memo_is_trusted_only_for_the_same_stamp_and_when_not_racy() {
        let memo = Memo {
            path: "/k".into(),
            stamp: stamp(100),
            sha256: "x".into(),
            codec: None,
            hashed_at_ns: 101 * 1_000_000_000,
        };
        assert!(memo.trusted_for(Path::new("/k"), &stamp(100)));
        assert!(!memo.trusted_for(Path::new("/other"), &stamp(100)));
        assert!(!memo.trusted_for(Path::new("/k"), &stamp(99)));
        let racy = Memo {
            hashed_at_ns: 100 * 1_000_000_000 + 50_000_000,
            ..memo
        };
        assert!(!racy.trusted_for(Path::new("/k"), &stamp(100)));
    }

    #[test]
    fn the_memo_is_used_while_the_file_is_unchanged_and_dropped_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let memos = dir.path().join("hashes");
        fs::create_dir(&memos).unwrap();
        let path = dir.path().join("rootfs.img");
        fs::write(&path, b"aaaa").unwrap();
        std::thread::sleep(Duration::from_millis(150)); // past the racy margin

        let first = probe("rootfs", &path, 100, &memos, None).unwrap();
        let memo_file = memo_path(&memos, &first.path);
        let mut memo = read_memo(&memo_file).expect("memo written");
        assert_eq!(memo.sha256, first.sha256);

        // Prove the memo is what answers: plant a marker digest in it.
        memo.sha256 = "planted".into();
        write_memo(&memo_file, &memo);
        assert_eq!(
            probe("rootfs", &path, 100, &memos, None).unwrap().sha256,
            "planted"
        );

        // Same size, new bytes: the stamp changes and the file is hashed again.
        fs::write(&path, b"bbbb").unwrap();
        let changed = probe("rootfs", &path, 100, &memos, None).unwrap();
        assert_ne!(changed.sha256, "planted");
        assert_ne!(changed.sha256, first.sha256);
        assert_eq!(
            changed.sha256,
            verify::hash_reader(&b"bbbb"[..], 10).unwrap().1
        );
    }
}
