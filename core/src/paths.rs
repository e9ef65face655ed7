//! Where bootfarm keeps its cache by default, the same for every binary, script and test:
//! `$BOOTFARM_CACHE`, else `/var/cache/bootfarm` for root (a system service's cache, readable
//! by the unprivileged runner user), else `~/.cache/bootfarm`.

use std::path::PathBuf;

/// The default cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BOOTFARM_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if is_root() {
        return Some(PathBuf::from("/var/cache/bootfarm"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("bootfarm"))
}

/// The test fixtures (kernels, initramfs images): `$BOOTFARM_FIXTURES`, else `<cache>/fixtures`.
pub fn fixtures_dir() -> Option<PathBuf> {
    std::env::var_os("BOOTFARM_FIXTURES")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| default_cache_dir().map(|c| c.join("fixtures")))
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The fixtures directory for tests that boot real kernels. A missing fixture fails the test
/// run (a boot test that silently passes without its kernel proves nothing): this panics with
/// how to make them.
pub fn require_fixtures() -> PathBuf {
    let dir = fixtures_dir().unwrap_or_else(|| PathBuf::from("(no cache directory)"));
    if !dir.join("x86_64/kernel").is_file() {
        panic!(
            "no boot fixtures in {}: run scripts/fixtures (or point BOOTFARM_FIXTURES at them)",
            dir.display()
        );
    }
    dir
}

/// The generic Debian disk root `scripts/rootfs` built for `arch`:
/// `$BOOTFARM_ROOTFS/<arch>/rootfs.ext4`, else `<cache>/rootfs/<arch>/rootfs.ext4`. For tests:
/// panics with what to run when it is missing.
pub fn require_disk_root(arch: &str) -> PathBuf {
    let dir = std::env::var_os("BOOTFARM_ROOTFS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| default_cache_dir().map(|c| c.join("rootfs")))
        .unwrap_or_else(|| PathBuf::from("(no cache directory)"));
    let img = dir.join(arch).join("rootfs.ext4");
    if !img.is_file() {
        panic!(
            "{} is missing: run scripts/rootfs (scripts/test does), or point BOOTFARM_ROOTFS at its output",
            img.display()
        );
    }
    img
}
