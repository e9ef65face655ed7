//! Turning a request into files QEMU can use: artifacts fetched through the cache, the
//! initramfs pieces (initrd, cpio rootfs, cpio modules, a modules tarball repacked into a cpio)
//! concatenated, the QEMU binary found.

use super::repack::{self, GuestDir};
use super::{early, early_initramfs};
use super::{ArtifactSource, BootRequest};
use crate::artifacts::decompress;
use crate::artifacts::{ArtifactCache, ArtifactError, InUse, Limits};
use crate::qemu::profile::{disk_format, is_cpio_name, DiskImage, Profile};
use bootfarm_core::result::ArtifactInfo;
use bootfarm_core::result::ErrorKind;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An infrastructure error: `error.kind` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraError {
    pub kind: ErrorKind,
    pub message: String,
}

impl InfraError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        InfraError {
            kind,
            message: message.into(),
        }
    }
}

impl From<ArtifactError> for InfraError {
    fn from(e: ArtifactError) -> Self {
        InfraError::new(e.kind(), e.to_string())
    }
}

/// The boot's files, ready for the command line.
#[derive(Debug)]
pub struct Inputs {
    /// The kernel QEMU boots: the fetched image, or its extracted PVH ELF.
    pub kernel: PathBuf,
    pub kernel_booted: bootfarm_core::result::KernelBooted,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<DiskImage>,
    /// A newc archive of the job's modules and overlays (sector-padded), attached as a second
    /// disk for the early init to merge into a disk root.
    pub merge_disk: Option<PathBuf>,
    /// What the early initramfs (then the `initrd`) holds, when bootfarm built one.
    pub early: Option<bootfarm_core::result::EarlyInitramfs>,
    pub dtb: Option<PathBuf>,
    pub artifacts: BTreeMap<String, ArtifactInfo>,
    /// Keeps the cache entries above from being pruned while the boot uses them.
    pub held: Vec<InUse>,
    /// The `lib/modules/<version>` trees a modules tarball brought (checked against the kernel
    /// that booted).
    pub module_versions: BTreeSet<String>,
}

/// The default cache directory: `$BOOTFARM_CACHE`, else `/var/cache/bootfarm` for root, else
/// `$HOME/.cache/bootfarm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    bootfarm_core::paths::default_cache_dir()
}

pub async fn fetch_all(req: &BootRequest, work_dir: &Path) -> Result<Inputs, InfraError> {
    let cache_dir = match &req.cache_dir {
        Some(d) => d.join("artifacts"),
        // Without a cache dir, downloads and decompressions live as long as the boot.
        None => work_dir.join("artifacts"),
    };
    let cache = ArtifactCache::with_policy(cache_dir, Limits::default(), req.fetch_policy.clone())?;
    let mut got = Got::default();
    let fetched_kernel = got.fetch(&cache, "kernel", &req.kernel).await?;
    let sha256 = got
        .artifacts
        .get("kernel")
        .map(|a| a.sha256.clone())
        .unwrap_or_default();
    let chosen =
        crate::kernel::choose(req.arch, req.kernel_boot, &cache, &fetched_kernel, &sha256).await;
    got.held.extend(chosen.held);
    let kernel = chosen.path;
    let mut ramdisk_parts = Vec::new();
    if let Some(src) = &req.initrd {
        ramdisk_parts.push(got.fetch(&cache, "initrd", src).await?);
    }
    let mut rootfs = None;
    if let Some(src) = &req.rootfs {
        let path = got.fetch(&cache, "rootfs", src).await?;
        if is_cpio_name(&src.source) {
            ramdisk_parts.push(path);
        } else {
            let format = disk_format(&read_magic(&path)?);
            rootfs = Some(DiskImage { path, format });
        }
    }
    // A disk root booted without an initramfs of the user's: a modules tarball and overlays go
    // on a second disk that bootfarm's early init merges into the (snapshotted) root.
    let into_disk = rootfs.is_some() && req.initrd.is_none();
    let mut module_versions = BTreeSet::new();
    let mut merge_tarballs = Vec::new();
    if let Some(src) = &req.modules {
        let path = got.fetch(&cache, "modules", src).await?;
        if is_cpio_name(&src.source) {
            ramdisk_parts.push(path);
        } else if into_disk {
            merge_tarballs.push((path, GuestDir::root(), src.source.clone()));
        } else {
            // A tarball (`modules.tar.xz` as TuxMake writes it): repacked into a cpio appended
            // to the initramfs.
            let tarballs = vec![(path, GuestDir::root(), src.source.clone())];
            let (cpio, report) = repack_into(tarballs, work_dir.join("modules.cpio")).await?;
            module_versions = report.module_versions;
            ramdisk_parts.push(cpio);
        }
    }
    let has_module_tarball = !merge_tarballs.is_empty();
    // Overlays after the modules: later archives overwrite earlier files, as later overlays do.
    if !req.overlays.is_empty() {
        if rootfs.is_some() && !into_disk {
            return Err(InfraError::new(
                ErrorKind::InvalidJob,
                "overlays on a disk rootfs are merged into it by bootfarm's early initramfs; \
                 with an initrd of your own, put them into it",
            ));
        }
        let mut tarballs = Vec::new();
        for (i, (src, path)) in req.overlays.iter().enumerate() {
            let name = format!("overlay-{i}");
            let file = got.fetch(&cache, &name, src).await?;
            if let Some(info) = got.artifacts.get_mut(&name) {
                info.path = Some(path.clone());
            }
            let dest = GuestDir::parse(path).map_err(|e| {
                InfraError::new(
                    ErrorKind::InvalidJob,
                    format!("overlay {}: {e}", src.source),
                )
            })?;
            tarballs.push((file, dest, src.source.clone()));
        }
        if into_disk {
            merge_tarballs.extend(tarballs);
        } else {
            let (cpio, _) = repack_into(tarballs, work_dir.join("overlays.cpio")).await?;
            ramdisk_parts.push(cpio);
        }
    }
    let mut merge_disk = None;
    let mut early_info = None;
    if !merge_tarballs.is_empty() {
        let (cpio, report) = repack_into(merge_tarballs, work_dir.join("merge.cpio")).await?;
        pad_to_sectors(&cpio)?;
        let version = if has_module_tarball {
            let v = early::single_version(&report.module_versions)
                .map_err(|e| InfraError::new(ErrorKind::InvalidJob, e.to_string()))?;
            Some(v.to_string())
        } else {
            None
        };
        module_versions = report.module_versions;
        let busybox = early_initramfs::guest_busybox(req.arch, req.guest_tools.as_deref())?;
        let drivers = early::root_drivers(req.arch, Profile::for_arch(req.arch).disk);
        let out = work_dir.join("early-initramfs.cpio");
        let arch = req.arch;
        let merge = cpio.clone();
        let built = tokio::task::spawn_blocking(move || {
            early_initramfs::build(arch, &drivers, &merge, version.as_deref(), &busybox, &out)
        })
        .await
        .map_err(|e| InfraError::new(ErrorKind::Internal, format!("early initramfs: {e}")))??;
        tracing::info!(modules = ?built.info.modules, "Disk root: early initramfs and merge disk ready");
        ramdisk_parts.insert(0, built.path);
        early_info = Some(built.info);
        merge_disk = Some(cpio);
    }
    let dtb = match &req.dtb {
        Some(src) => Some(got.fetch(&cache, "dtb", src).await?),
        None => None,
    };
    let initrd = match ramdisk_parts.len() {
        0 => None,
        1 => ramdisk_parts.pop(),
        // The kernel unpacks concatenated cpio archives in order.
        _ => Some(concatenate(
            &ramdisk_parts,
            &work_dir.join("initramfs.cpio"),
        )?),
    };
    // This boot's entries are held: only others' can go.
    if let (Some(budget), Some(_)) = (req.cache_max, &req.cache_dir) {
        if let Err(e) = cache.fit(budget).await {
            tracing::warn!(error = %e, budget, "Could not prune the artifact cache");
        }
    }
    Ok(Inputs {
        kernel,
        kernel_booted: chosen.booted,
        initrd,
        rootfs,
        merge_disk,
        early: early_info,
        dtb,
        artifacts: got.artifacts,
        held: got.held,
        module_versions,
    })
}

/// [`repack`] off the async threads (it reads and writes every byte), logged.
async fn repack_into(
    tarballs: Vec<(PathBuf, GuestDir, String)>,
    out: PathBuf,
) -> Result<(PathBuf, repack::Report), InfraError> {
    let (cpio, report) = tokio::task::spawn_blocking(move || repack(&tarballs, &out))
        .await
        .map_err(|e| InfraError::new(ErrorKind::Internal, format!("repacking: {e}")))??;
    tracing::info!(
        cpio = %cpio.display(),
        files = report.files,
        bytes = report.bytes,
        module_versions = ?report.module_versions,
        "Tarballs repacked into the initramfs"
    );
    Ok((cpio, report))
}

/// Repacks tarballs (each into its guest directory) into one newc cpio at `out`.
fn repack(
    tarballs: &[(PathBuf, GuestDir, String)],
    out: &Path,
) -> Result<(PathBuf, repack::Report), InfraError> {
    let io = |e: std::io::Error| {
        InfraError::new(
            ErrorKind::Internal,
            format!("repacking into {}: {e}", out.display()),
        )
    };
    let file = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let mut packer = repack::Repacker::new(file, repack::Limits::default());
    for (path, dest, source) in tarballs {
        let bad =
            |e: String| InfraError::new(ErrorKind::ArtifactUnreadable, format!("{source}: {e}"));
        let magic = read_magic(path)?;
        let file = std::fs::File::open(path).map_err(io)?;
        let tar: Box<dyn Read> = match decompress::detect(&magic) {
            Some(codec) => decompress::reader(codec, file).map_err(|e| bad(e.to_string()))?,
            None => Box::new(std::io::BufReader::new(file)),
        };
        packer.add_tar(tar, dest).map_err(|e| match e {
            repack::RepackError::TooLarge { .. } | repack::RepackError::TooManyEntries { .. } => {
                InfraError::new(ErrorKind::ArtifactTooLarge, format!("{source}: {e}"))
            }
            e => bad(e.to_string()),
        })?;
    }
    let (file, report) = packer
        .finish()
        .map_err(|e| InfraError::new(ErrorKind::Internal, e.to_string()))?;
    file.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok((out.to_path_buf(), report))
}

/// What the fetches so far gave.
#[derive(Default)]
struct Got {
    artifacts: BTreeMap<String, ArtifactInfo>,
    held: Vec<InUse>,
}

impl Got {
    async fn fetch(
        &mut self,
        cache: &ArtifactCache,
        name: &str,
        src: &ArtifactSource,
    ) -> Result<PathBuf, InfraError> {
        let f = cache
            .fetch(name, &src.source, src.sha256.as_deref())
            .await?;
        self.artifacts.insert(name.to_string(), f.info);
        self.held.push(f.in_use);
        Ok(f.path)
    }
}

fn read_magic(path: &Path) -> Result<Vec<u8>, InfraError> {
    let mut magic = vec![0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| {
            InfraError::new(
                ErrorKind::ArtifactUnreadable,
                format!("{}: {e}", path.display()),
            )
        })?;
    magic.truncate(n);
    Ok(magic)
}

/// Pads a file with zeros to a whole number of 512-byte sectors (a disk's size must be).
fn pad_to_sectors(path: &Path) -> Result<(), InfraError> {
    let io = |e: std::io::Error| {
        InfraError::new(
            ErrorKind::Internal,
            format!("padding {}: {e}", path.display()),
        )
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    f.set_len(len.div_ceil(512).max(1) * 512).map_err(io)
}

fn concatenate(parts: &[PathBuf], out: &Path) -> Result<PathBuf, InfraError> {
    let io = |e: std::io::Error| {
        InfraError::new(ErrorKind::Internal, format!("building initramfs: {e}"))
    };
    let mut dst = std::fs::File::create(out).map_err(io)?;
    let mut at = 0u64;
    for p in parts {
        // The kernel reads an uncompressed archive only where it starts on a 4-byte boundary,
        // and skips the NULs between archives: a compressed part of odd length is padded.
        let pad = (4 - at % 4) % 4;
        std::io::Write::write_all(&mut dst, &[0u8; 3][..pad as usize]).map_err(io)?;
        at += pad;
        let mut src = std::fs::File::open(p).map_err(io)?;
        at += std::io::copy(&mut src, &mut dst).map_err(io)?;
    }
    Ok(out.to_path_buf())
}

/// The QEMU binary for `profile`, in `dir` if given, else on PATH.
pub fn find_qemu(profile: &Profile, dir: Option<&Path>) -> Result<PathBuf, InfraError> {
    let candidates: Vec<PathBuf> = match dir {
        Some(d) => vec![d.join(profile.binary)],
        None => std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(profile.binary))
                    .collect()
            })
            .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .find(|c| is_executable(c))
        .ok_or_else(|| {
            let place = match dir {
                Some(d) => format!("in {}", d.display()),
                None => "on PATH".to_string(),
            };
            InfraError::new(
                ErrorKind::QemuMissing,
                format!(
                    "{} not found {place}: install the Debian package {} (apt-get install {})",
                    profile.binary, profile.package, profile.package
                ),
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::Arch;

    #[test]
    fn missing_qemu_names_the_debian_package() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::for_arch(Arch::Riscv64);
        let err = find_qemu(&p, Some(dir.path())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::QemuMissing);
        assert!(
            err.message.contains("qemu-system-riscv64"),
            "{}",
            err.message
        );
        assert!(err.message.contains("qemu-system-misc"), "{}", err.message);
    }

    #[test]
    fn qemu_is_found_in_the_given_dir_only_if_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::for_arch(Arch::X86_64);
        let bin = dir.path().join("qemu-system-x86_64");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        assert!(find_qemu(&p, Some(dir.path())).is_err());
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_qemu(&p, Some(dir.path())).unwrap(), bin);
    }

    #[tokio::test]
    async fn cpio_pieces_are_concatenated_and_disk_images_attached() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        std::fs::write(w.join("kernel"), b"k").unwrap();
        std::fs::write(w.join("a.cpio"), b"AAAAA").unwrap();
        std::fs::write(w.join("m.cpio"), b"MM").unwrap();
        std::fs::write(w.join("disk.img"), b"QFI\xfb....").unwrap();
        let src = |n: &str| Some(ArtifactSource::new(w.join(n).display().to_string()));
        let req = BootRequest {
            kernel: ArtifactSource::new(w.join("kernel").display().to_string()),
            initrd: src("a.cpio"),
            modules: src("m.cpio"),
            cache_dir: Some(w.join("cache")),
            ..BootRequest::default()
        };
        let got = fetch_all(&req, w).await.unwrap();
        // The second archive starts on a 4-byte boundary (NULs between, which the kernel skips).
        assert_eq!(
            std::fs::read(got.initrd.unwrap()).unwrap(),
            b"AAAAA\0\0\0MM"
        );
        assert_eq!(got.artifacts.len(), 3);
        let req = BootRequest {
            rootfs: src("disk.img"),
            ..req
        };
        let got = fetch_all(&req, w).await.unwrap();
        assert_eq!(got.rootfs.unwrap().format, "qcow2");
    }

    /// Bytes of the cache's entries (data and metadata).
    fn cache_bytes(cache: &Path) -> u64 {
        std::fs::read_dir(cache.join("artifacts/objects"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_cache_keeps_to_its_budget_over_many_artifacts_and_spares_those_in_use() {
        use crate::artifacts::FetchPolicy;
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().to_path_buf();
        let budget = 500_000;
        let policy = FetchPolicy::farm(
            std::slice::from_ref(&w),
            bootfarm_core::netpolicy::NetPolicy::default(),
        )
        .unwrap();
        // Distinct contents: each boot brings new entries (in the farm, local files are copied
        // into the cache).
        let boot = |i: u32| {
            let src = |kind: &str| {
                let p = w.join(format!("{kind}-{i}"));
                std::fs::write(&p, format!("{kind} {i} ").repeat(10_000)).unwrap();
                Some(ArtifactSource::new(p.display().to_string()))
            };
            BootRequest {
                kernel: src("kernel").unwrap(),
                initrd: src("initrd"),
                cache_dir: Some(w.join("cache")),
                cache_max: Some(budget),
                fetch_policy: policy.clone(),
                ..BootRequest::default()
            }
        };
        let work = w.join("work");
        std::fs::create_dir_all(&work).unwrap();
        // A long boot: its artifacts stay whatever the boots after it bring.
        let long = fetch_all(&boot(0), &work).await.unwrap();
        for i in 1..30 {
            let got = fetch_all(&boot(i), &work).await.unwrap();
            let used = cache_bytes(&w.join("cache"));
            assert!(used <= budget, "boot {i}: {used} bytes in the cache");
            assert!(got.kernel.exists() && got.initrd.as_ref().is_some_and(|p| p.exists()));
            assert!(long.kernel.exists(), "boot {i} pruned an entry in use");
        }
        let kernel = long.kernel.clone();
        drop(long);
        fetch_all(&boot(30), &work).await.unwrap();
        fetch_all(&boot(31), &work).await.unwrap();
        assert!(!kernel.exists(), "once unused, the oldest entries go");
    }
}
