//! Writing the early initramfs of a disk root ([`super::early`] decides what goes in): depmod's
//! tables and the planned driver modules are read back from the repacked archive of the job's
//! modules (no second decompression of the tarball, nothing unpacked on disk), modules are
//! decompressed (busybox's insmod reads plain ELF), and a newc archive is written with the guest
//! arch's static busybox and the init.

use super::early::{self, ModuleTables};
use super::inputs::InfraError;
use crate::artifacts::decompress;
use bootfarm_core::result::ErrorKind;
use bootfarm_core::Arch;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Where a static busybox for each guest arch lives: `<dir>/<arch>/busybox`.
pub const GUEST_TOOLS_DIRS: [&str; 2] = [
    "/usr/lib/bootfarm/guest-tools",
    "/var/cache/bootfarm/guest-tools",
];

/// depmod's tables are small; a bigger one is not depmod's.
const TABLE_MAX: u64 = 64 << 20;
/// One driver module, decompressed.
const MODULE_MAX: u64 = 64 << 20;

/// The guest arch's static busybox: in `configured` if given, else the first of
/// [`GUEST_TOOLS_DIRS`] and `$BOOTFARM_CACHE/guest-tools` that has one.
pub fn guest_busybox(arch: Arch, configured: Option<&Path>) -> Result<PathBuf, InfraError> {
    let dirs: Vec<PathBuf> = match configured {
        Some(d) => vec![d.to_path_buf()],
        None => GUEST_TOOLS_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(bootfarm_core::paths::default_cache_dir().map(|c| c.join("guest-tools")))
            .collect(),
    };
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(arch.as_str()).join("busybox"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            InfraError::new(
                ErrorKind::Internal,
                format!(
                    "a disk root with a modular kernel needs a static busybox for {arch} in the guest's \
                     early initramfs, and there is none ({}): scripts/fixtures installs them, or set \
                     --guest-tools (BOOTFARM_GUEST_TOOLS)",
                    looked.join(", ")
                ),
            )
        })
}

/// What went into the early initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub path: PathBuf,
    /// What it holds, for the result (and the reproducer).
    pub info: bootfarm_core::result::EarlyInitramfs,
}

/// Builds the early initramfs at `out`. `merge` is the repacked archive of the job's modules
/// and overlays (attached as a second disk), `version` its one kernel version (None: no
/// modules, the kernel's drivers are built in).
pub fn build(
    arch: Arch,
    drivers: &[&[&str]],
    merge: &Path,
    version: Option<&str>,
    busybox: &Path,
    out: &Path,
) -> Result<Built, InfraError> {
    let (planned, modules) = match version {
        Some(version) => driver_modules(drivers, merge, version)?,
        None => Default::default(),
    };
    let bb = std::fs::read(busybox).map_err(|e| {
        InfraError::new(
            ErrorKind::Internal,
            format!("reading {}: {e}", busybox.display()),
        )
    })?;
    let file = std::fs::File::create(out).map_err(|e| write_err(out, e))?;
    let mut w = io::BufWriter::new(file);
    write_archive(&mut w, &bb, &modules).map_err(|e| write_err(out, e))?;
    w.into_inner()
        .map_err(|e| write_err(out, e.into_error()))?
        .sync_all()
        .map_err(|e| write_err(out, e))?;
    tracing::info!(%arch, modules = modules.len(), path = %out.display(), "Early initramfs built for the disk root");
    Ok(Built {
        path: out.to_path_buf(),
        info: bootfarm_core::result::EarlyInitramfs {
            version: version.map(str::to_string),
            modules: planned,
        },
    })
}

/// A module file of the early initramfs: its name there and its plain ELF.
type Module = (String, Vec<u8>);

/// The planned driver modules (paths as `modules.dep` names them) and their plain ELF under
/// the names the init loads, read back from the repacked archive `merge` of kernel `version`.
fn driver_modules(
    drivers: &[&[&str]],
    merge: &Path,
    version: &str,
) -> Result<(Vec<String>, Vec<Module>), InfraError> {
    let unreadable = |e: io::Error| {
        InfraError::new(
            ErrorKind::Internal,
            format!("reading the repacked modules {}: {e}", merge.display()),
        )
    };
    let mut modules: Vec<Module> = Vec::new();
    let prefixes = [
        format!("lib/modules/{version}/"),
        format!("usr/lib/modules/{version}/"),
    ];
    let tables = [
        "modules.dep",
        "modules.builtin",
        "modules.softdep",
        "modules.alias",
    ];
    let wanted: BTreeSet<String> = prefixes
        .iter()
        .flat_map(|p| tables.iter().map(move |t| format!("{p}{t}")))
        .collect();
    let found = read_entries(merge, &wanted, TABLE_MAX).map_err(unreadable)?;
    let table = |t: &str| {
        prefixes
            .iter()
            .find_map(|p| found.get(&format!("{p}{t}")))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let dep = table("modules.dep").ok_or_else(|| {
        invalid(early::EarlyError::NoDepmod {
            version: version.to_string(),
        })
    })?;
    let t = ModuleTables::parse(
        &dep,
        &table("modules.builtin").unwrap_or_default(),
        &table("modules.softdep").unwrap_or_default(),
        &table("modules.alias").unwrap_or_default(),
    );
    let plan = t.plan(drivers, version).map_err(invalid)?;
    let paths: BTreeSet<String> = plan
        .iter()
        .flat_map(|m| prefixes.iter().map(move |p| format!("{p}{m}")))
        .collect();
    let mut got = read_entries(merge, &paths, MODULE_MAX).map_err(unreadable)?;
    for m in &plan {
        let data = prefixes
            .iter()
            .find_map(|p| got.remove(&format!("{p}{m}")))
            .ok_or_else(|| {
                InfraError::new(
                    ErrorKind::InvalidJob,
                    format!("modules.dep names {m}, which the modules tarball does not hold"),
                )
            })?;
        let data = plain_module(m, data)?;
        modules.push((format!("{}.ko", early::module_name(m)), data));
    }
    Ok((plan, modules))
}

fn invalid(e: early::EarlyError) -> InfraError {
    InfraError::new(ErrorKind::InvalidJob, e.to_string())
}

fn write_err(out: &Path, e: io::Error) -> InfraError {
    InfraError::new(
        ErrorKind::Internal,
        format!("writing the early initramfs {}: {e}", out.display()),
    )
}

/// The contents of the named regular files of a newc archive (each at most `max` bytes).
fn read_entries(
    archive: &Path,
    names: &BTreeSet<String>,
    max: u64,
) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut r = io::BufReader::with_capacity(1 << 20, std::fs::File::open(archive)?);
    loop {
        let mut entry = cpio::NewcReader::new(r)?;
        if entry.entry().is_trailer() {
            return Ok(out);
        }
        let name = entry.entry().name().to_string();
        let size = u64::from(entry.entry().file_size());
        if names.contains(&name) && size <= max {
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry.read_to_end(&mut data)?;
            out.insert(name, data);
            r = entry.finish()?;
        } else {
            r = entry.skip()?;
        }
    }
}

/// A module as plain ELF: `.ko.xz`, `.ko.zst` and `.ko.gz` decompressed (by their magic).
fn plain_module(name: &str, data: Vec<u8>) -> Result<Vec<u8>, InfraError> {
    let Some(codec) = decompress::detect(&data) else {
        return Ok(data);
    };
    let mut out = Vec::new();
    decompress::reader(codec, data.as_slice())
        .and_then(|r| {
            r.take(MODULE_MAX + 1).read_to_end(&mut out).map_err(|e| {
                decompress::DecompressError::Corrupt {
                    codec: codec.name(),
                    source: e,
                }
            })
        })
        .map_err(|e| {
            InfraError::new(
                ErrorKind::ArtifactUnreadable,
                format!("the modules tarball's {name}: {e}"),
            )
        })?;
    if out.len() as u64 > MODULE_MAX {
        return Err(InfraError::new(
            ErrorKind::ArtifactTooLarge,
            format!("the modules tarball's {name} expands past {MODULE_MAX} bytes"),
        ));
    }
    Ok(out)
}

/// The archive: directories, `/dev/console` (the kernel opens it for init before any devtmpfs),
/// busybox, the init, the modules, their order and the merge flag.
fn write_archive<W: Write>(w: &mut W, busybox: &[u8], modules: &[Module]) -> io::Result<()> {
    let mut ino = 0u32;
    let mut next = || {
        ino += 1;
        ino
    };
    for d in ["bin", "dev", "proc", "sys", "root", "lib", "lib/early"] {
        cpio::NewcBuilder::new(d)
            .ino(next())
            .mode(0o755)
            .nlink(2)
            .set_mode_file_type(cpio::newc::ModeFileType::Directory)
            .write(&mut *w, 0)
            .finish()?;
    }
    cpio::NewcBuilder::new("dev/console")
        .ino(next())
        .mode(0o600)
        .rdev_major(5)
        .rdev_minor(1)
        .set_mode_file_type(cpio::newc::ModeFileType::Char)
        .write(&mut *w, 0)
        .finish()?;
    let order: String = modules.iter().map(|(n, _)| format!("{n}\n")).collect();
    let mut files: Vec<(String, u32, &[u8])> = vec![
        ("bin/busybox".into(), 0o755, busybox),
        (
            "init".into(),
            0o755,
            bootfarm_core::early_init::INIT.as_bytes(),
        ),
        ("lib/early/order".into(), 0o644, order.as_bytes()),
        ("lib/early/merge".into(), 0o644, b""),
    ];
    for (n, data) in modules {
        files.push((format!("lib/early/{n}"), 0o644, data));
    }
    for (name, mode, data) in files {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("file too large"))?;
        let mut f = cpio::NewcBuilder::new(&name)
            .ino(next())
            .mode(mode)
            .set_mode_file_type(cpio::newc::ModeFileType::Regular)
            .write(&mut *w, len);
        f.write_all(data)?;
        f.finish()?;
    }
    cpio::newc::trailer(&mut *w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, (n, d)) in files.iter().enumerate() {
            let mut f = cpio::NewcBuilder::new(n)
                .ino(u32::try_from(i + 1).unwrap())
                .mode(0o644)
                .set_mode_file_type(cpio::newc::ModeFileType::Regular)
                .write(&mut v, u32::try_from(d.len()).unwrap());
            f.write_all(d).unwrap();
            f.finish().unwrap();
        }
        cpio::newc::trailer(&mut v).unwrap();
        v
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn drivers_come_from_the_repacked_modules_in_order_and_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let v = "6.1.0-9-amd64";
        let dep = "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\nkernel/fs/jbd2/jbd2.ko.xz:\nkernel/drivers/ata/ahci.ko.xz:\nkernel/drivers/scsi/sd_mod.ko.xz:\n";
        let p = |s: &str| format!("lib/modules/{v}/{s}");
        let names = [
            p("modules.dep"),
            p("kernel/fs/ext4/ext4.ko.xz"),
            p("kernel/fs/jbd2/jbd2.ko.xz"),
            p("kernel/drivers/ata/ahci.ko.xz"),
            p("kernel/drivers/scsi/sd_mod.ko.xz"),
            p("kernel/unrelated.ko"),
        ];
        let (e, j, a, s) = (
            xz(b"\x7fELF ext4"),
            xz(b"\x7fELF jbd2"),
            xz(b"\x7fELF ahci"),
            xz(b"\x7fELF sd"),
        );
        let files: Vec<(&str, &[u8])> = vec![
            (&names[0], dep.as_bytes()),
            (&names[1], &e),
            (&names[2], &j),
            (&names[3], &a),
            (&names[4], &s),
            (&names[5], b"x"),
        ];
        let merge = dir.path().join("merge.cpio");
        std::fs::write(&merge, archive(&files)).unwrap();
        let bb = dir.path().join("busybox");
        std::fs::write(&bb, b"\x7fELF busybox").unwrap();
        let out = dir.path().join("early.cpio");
        let drivers = early::root_drivers(Arch::X86_64, crate::qemu::profile::DiskInterface::Ide);
        let built = build(Arch::X86_64, &drivers, &merge, Some(v), &bb, &out).unwrap();
        assert_eq!(
            built.info.modules,
            [
                "kernel/drivers/ata/ahci.ko.xz",
                "kernel/drivers/scsi/sd_mod.ko.xz",
                "kernel/fs/jbd2/jbd2.ko.xz",
                "kernel/fs/ext4/ext4.ko.xz"
            ]
        );
        assert_eq!(built.info.version.as_deref(), Some(v));
        let all: BTreeSet<String> = [
            "init",
            "bin/busybox",
            "lib/early/order",
            "lib/early/merge",
            "lib/early/jbd2.ko",
            "lib/early/ext4.ko",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = read_entries(&out, &all, 1 << 20).unwrap();
        assert_eq!(
            got["lib/early/order"],
            b"ahci.ko\nsd_mod.ko\njbd2.ko\next4.ko\n"
        );
        assert_eq!(got["lib/early/ext4.ko"], b"\x7fELF ext4");
        assert!(String::from_utf8_lossy(&got["init"]).contains("switch_root"));
        assert_eq!(got["bin/busybox"], b"\x7fELF busybox");
    }

    #[test]
    fn a_tarball_without_depmod_or_without_the_driver_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let merge = dir.path().join("merge.cpio");
        std::fs::write(&merge, archive(&[("lib/modules/6.1/kernel/x.ko", b"x")])).unwrap();
        let bb = dir.path().join("busybox");
        std::fs::write(&bb, b"bb").unwrap();
        let drivers = early::root_drivers(Arch::Arm64, crate::qemu::profile::DiskInterface::Virtio);
        let out = dir.path().join("early.cpio");
        let e = build(Arch::Arm64, &drivers, &merge, Some("6.1"), &bb, &out).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidJob);
        assert!(e.message.contains("modules.dep"), "{}", e.message);
        std::fs::write(
            &merge,
            archive(&[("lib/modules/6.1/modules.dep", b"kernel/fs/ext4/ext4.ko:\n")]),
        )
        .unwrap();
        let e = build(Arch::Arm64, &drivers, &merge, Some("6.1"), &bb, &out).unwrap_err();
        assert!(e.message.contains("virtio_pci"), "{}", e.message);
    }

    #[test]
    fn a_missing_guest_busybox_says_where_it_looked_and_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = guest_busybox(Arch::S390x, Some(dir.path())).unwrap_err();
        assert!(
            e.message.contains("s390x/busybox") && e.message.contains("scripts/fixtures"),
            "{}",
            e.message
        );
        std::fs::create_dir_all(dir.path().join("s390x")).unwrap();
        std::fs::write(dir.path().join("s390x/busybox"), b"bb").unwrap();
        assert_eq!(
            guest_busybox(Arch::S390x, Some(dir.path())).unwrap(),
            dir.path().join("s390x/busybox")
        );
    }
}
