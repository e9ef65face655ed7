//! The early initramfs of a disk root (KIR's point: any modular kernel on a generic rootfs).
//!
//! A distribution kernel has its storage and filesystem drivers as modules, so it cannot mount a
//! disk root by itself. bootfarm builds the small initramfs it needs from the job's modules
//! tarball: the drivers for the root disk's bus and for ext4, with their dependencies in load
//! order, and an init that loads them, mounts the root (a copy-on-write snapshot of
//! the cached image), merges the job's modules and overlays into it from a second disk, and
//! switches to the root's own init.
//!
//! This module is the pure part: depmod's tables in, a load order out. The init itself is
//! [`bootfarm_core::early_init::INIT`], shared with the reproducer.

use crate::qemu::profile::DiskInterface;
use bootfarm_core::Arch;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The drivers that mount the root disk: its bus, its disk class, and the filesystem. Each
/// group is one need: every member present is loaded, and at least one must be.
pub fn root_drivers(arch: Arch, disk: DiskInterface) -> Vec<&'static [&'static str]> {
    let mut v: Vec<&'static [&'static str]> = match disk {
        // q35's AHCI controller, or the older i440fx machine's PIIX.
        DiskInterface::Ide => vec![&["ahci", "ata_piix"], &["sd_mod"]],
        DiskInterface::Scsi => vec![&["ibmvscsi"], &["sd_mod"]],
        DiskInterface::Virtio if arch == Arch::S390x => vec![&["virtio_ccw"], &["virtio_blk"]],
        DiskInterface::Virtio => vec![&["virtio_pci"], &["virtio_blk"]],
    };
    v.push(&["ext4"]);
    v
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EarlyError {
    #[error(
        "the modules tarball has no lib/modules/{version}/modules.dep (make modules_install runs \
         depmod and writes it)"
    )]
    NoDepmod { version: String },
    #[error(
        "a disk root needs the {driver} driver, and kernel {version} has it neither built in \
         (modules.builtin) nor in the modules tarball"
    )]
    NoDriver { driver: String, version: String },
    #[error(
        "the modules tarball holds several kernels' modules ({0}); a disk root needs exactly one"
    )]
    Versions(String),
    #[error("a disk root with a modules tarball needs its lib/modules/<version> tree; none found")]
    NoModules,
}

pub use bootfarm_core::early_init::module_name;

/// depmod's tables of one kernel version.
#[derive(Debug, Default, Clone)]
pub struct ModuleTables {
    /// name → (path relative to `lib/modules/<version>`, its dependencies' paths).
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    /// name → the `pre:` soft dependencies (names or aliases).
    softdeps: BTreeMap<String, Vec<String>>,
    /// exact alias → module names, in file order.
    aliases: BTreeMap<String, Vec<String>>,
}

impl ModuleTables {
    /// From the text of `modules.dep`, `modules.builtin`, `modules.softdep` and `modules.alias`
    /// (the last three may be empty).
    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut t = ModuleTables::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = rest.split_whitespace().map(str::to_string).collect();
            t.deps.insert(module_name(path), (path.to_string(), deps));
        }
        for line in builtin.lines().map(str::trim).filter(|l| !l.is_empty()) {
            t.builtin.insert(module_name(line));
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let mut pre = false;
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => t
                        .softdeps
                        .entry(module_name(name))
                        .or_default()
                        .push(w.to_string()),
                    _ => {}
                }
            }
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (words.next(), words.next(), words.next()) {
                // Device aliases are patterns; only plain names are looked up here.
                if !a.contains(['*', '?', '[']) {
                    t.aliases
                        .entry(a.replace('-', "_"))
                        .or_default()
                        .push(module_name(m));
                }
            }
        }
        t
    }

    /// The module files to load, dependencies first, each once, for `wanted` drivers. A wanted
    /// driver built into the kernel needs nothing; one missing altogether is an error. Soft
    /// dependencies (`ext4` wants `crc32c`) are loaded when present.
    pub fn plan(&self, wanted: &[&[&str]], version: &str) -> Result<Vec<String>, EarlyError> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for group in wanted {
            let mut found = false;
            for w in group.iter() {
                match self.resolve(w) {
                    Resolved::Module(name) => {
                        self.load(&name, &mut seen, &mut order);
                        found = true;
                    }
                    Resolved::Builtin => found = true,
                    Resolved::Missing => {}
                }
            }
            if !found {
                return Err(EarlyError::NoDriver {
                    driver: group.join(" or "),
                    version: version.to_string(),
                });
            }
        }
        Ok(order)
    }

    fn resolve(&self, name: &str) -> Resolved {
        let n = module_name(name);
        if self.deps.contains_key(&n) {
            return Resolved::Module(n);
        }
        if self.builtin.contains(&n) {
            return Resolved::Builtin;
        }
        let Some(targets) = self.aliases.get(&n) else {
            return Resolved::Missing;
        };
        // `crc32c` names crc32c_generic and CPU-specific versions: of the ones that are
        // modules, the generic one (it always loads) is preferred.
        let generic = format!("{n}_generic");
        let mut modules = targets.iter().filter(|t| self.deps.contains_key(*t));
        let first = modules.clone().next();
        if let Some(t) = modules.find(|t| **t == generic).or(first) {
            return Resolved::Module(t.clone());
        }
        if targets.iter().any(|t| self.builtin.contains(t)) {
            Resolved::Builtin
        } else {
            Resolved::Missing
        }
    }

    fn load(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.deps.get(name) else {
            return;
        };
        for soft in self.softdeps.get(name).into_iter().flatten() {
            if let Resolved::Module(m) = self.resolve(soft) {
                self.load(&m, seen, order);
            }
        }
        for d in deps {
            self.load(&module_name(d), seen, order);
        }
        order.push(path.clone());
    }
}

enum Resolved {
    Module(String),
    Builtin,
    Missing,
}

/// The one kernel version of a modules tarball.
pub fn single_version(versions: &BTreeSet<String>) -> Result<&str, EarlyError> {
    let mut it = versions.iter();
    match (it.next(), it.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(EarlyError::NoModules),
        _ => Err(EarlyError::Versions(
            versions.iter().cloned().collect::<Vec<_>>().join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
";
    const SOFT: &str = "softdep ext4 pre: crc32c post: nothing\n";
    const ALIAS: &str = "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n";

    #[test]
    fn dependencies_load_first_each_once_with_soft_dependencies() {
        let t = ModuleTables::parse(DEP, "", SOFT, ALIAS);
        let order = t
            .plan(&root_drivers(Arch::Arm64, DiskInterface::Virtio), "6.12")
            .unwrap();
        let pos = |m: &str| order.iter().position(|p| p.contains(m)).unwrap();
        assert_eq!(order.len(), 10, "{order:?}");
        assert!(
            pos("/virtio.ko") < pos("virtio_ring") && pos("virtio_ring") < pos("virtio_pci.ko")
        );
        assert!(pos("virtio_pci.ko") < pos("virtio_blk"));
        assert!(pos("crc32c_generic") < pos("ext4") && pos("jbd2") < pos("ext4"));
        assert!(
            !order.iter().any(|p| p.contains("intel")),
            "the generic crc32c is picked"
        );
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
    }

    #[test]
    fn built_in_drivers_need_nothing_and_missing_ones_are_named() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n";
        let dep = "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n";
        let t = ModuleTables::parse(dep, builtin, "", "");
        let order = t
            .plan(&root_drivers(Arch::X86_64, DiskInterface::Virtio), "6.1")
            .unwrap();
        assert_eq!(order, ["kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"]);
        // One of a group is enough (q35 has AHCI, no PIIX); all present are loaded.
        let dep = "kernel/ahci.ko:\nkernel/sd_mod.ko:\nkernel/fs/ext4/ext4.ko:\n";
        let t = ModuleTables::parse(dep, "", "", "");
        let order = t
            .plan(&root_drivers(Arch::X86_64, DiskInterface::Ide), "6.1")
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/ahci.ko",
                "kernel/sd_mod.ko",
                "kernel/fs/ext4/ext4.ko"
            ]
        );
        let t = ModuleTables::parse("kernel/fs/ext4/ext4.ko:\n", "", "", "");
        let err = t
            .plan(&root_drivers(Arch::X86_64, DiskInterface::Virtio), "6.1")
            .unwrap_err();
        assert_eq!(
            err,
            EarlyError::NoDriver {
                driver: "virtio_pci".into(),
                version: "6.1".into()
            }
        );
        assert!(err.to_string().contains("virtio_pci"));
    }

    #[test]
    fn an_alias_resolves_to_a_module_even_when_its_generic_one_is_neither() {
        let t = ModuleTables::parse(
            "kernel/x/crc32c-intel.ko:\n",
            "",
            "",
            "alias crc32c crc32c_generic\nalias crc32c crc32c_intel\n",
        );
        assert_eq!(
            t.plan(&[&["crc32c"]], "6.1").unwrap(),
            ["kernel/x/crc32c-intel.ko"]
        );
    }

    #[test]
    fn names_normalize_like_the_kernels() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko.zst"),
            "crc32c_intel"
        );
        assert_eq!(module_name("sd_mod.ko"), "sd_mod");
        assert_eq!(module_name("crc-t10dif"), "crc_t10dif");
    }

    #[test]
    fn one_kernel_version_or_a_clear_error() {
        let one: BTreeSet<String> = ["6.1.0-1-amd64".to_string()].into();
        assert_eq!(single_version(&one).unwrap(), "6.1.0-1-amd64");
        assert_eq!(single_version(&BTreeSet::new()), Err(EarlyError::NoModules));
        let two: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(single_version(&two)
            .unwrap_err()
            .to_string()
            .contains("a, b"));
    }
}
