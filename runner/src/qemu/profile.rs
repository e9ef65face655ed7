//! Per-architecture QEMU profiles and the pure command-line builder.
//!
//! The table follows TuxRun's device table (`shared/reference.md` §1) with CI-sized defaults
//! (512M, one vCPU): boots here run under TCG on small machines, where 4G/2 buys nothing.
//! `build_args` does no I/O, so every architecture's command line is unit-tested.

use bootfarm_core::spec::{Cpu, Machine};
use bootfarm_core::Arch;
use std::path::{Path, PathBuf};

/// The accelerator a boot runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How a disk image is attached (and so what the kernel calls it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskInterface {
    Ide,
    Virtio,
    Scsi,
}

impl DiskInterface {
    fn qemu_if(self) -> &'static str {
        match self {
            DiskInterface::Ide => "ide",
            DiskInterface::Virtio => "virtio",
            DiskInterface::Scsi => "scsi",
        }
    }

    /// The kernel's name for the first disk on this interface.
    pub fn root_device(self) -> &'static str {
        match self {
            DiskInterface::Ide | DiskInterface::Scsi => "/dev/sda",
            DiskInterface::Virtio => "/dev/vda",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub arch: Arch,
    /// QEMU binary name (looked up in the binary dir or PATH).
    pub binary: &'static str,
    /// The Debian package that ships `binary`.
    pub package: &'static str,
    pub machine: &'static str,
    pub machine_kvm: &'static str,
    pub cpu: &'static str,
    pub cpu_kvm: &'static str,
    /// Kernel console device name (`console=<this>,115200`).
    pub console: &'static str,
    pub disk: DiskInterface,
    pub memory: &'static str,
    pub smp: u32,
    /// A pvpanic device so QEMU reports GUEST_PANICKED even when the console is lost.
    pub pvpanic: Option<&'static str>,
    /// `-bios` value, when the machine needs firmware to start a kernel.
    pub bios: Option<&'static str>,
    /// `std::env::consts::ARCH` of a host that can run this guest under KVM.
    pub kvm_host_arch: &'static str,
}

impl Profile {
    pub fn for_arch(arch: Arch) -> Profile {
        match arch {
            Arch::X86_64 => Profile {
                arch,
                binary: "qemu-system-x86_64",
                package: "qemu-system-x86",
                machine: "q35",
                machine_kvm: "q35",
                cpu: "Nehalem",
                cpu_kvm: "host",
                console: "ttyS0",
                disk: DiskInterface::Ide,
                memory: "512M",
                smp: 1,
                pvpanic: Some("pvpanic"),
                bios: None,
                kvm_host_arch: "x86_64",
            },
            Arch::I386 => Profile {
                arch,
                binary: "qemu-system-i386",
                package: "qemu-system-x86",
                machine: "q35",
                machine_kvm: "q35",
                cpu: "coreduo",
                cpu_kvm: "host",
                console: "ttyS0",
                disk: DiskInterface::Ide,
                memory: "512M",
                smp: 1,
                pvpanic: Some("pvpanic"),
                bios: None,
                kvm_host_arch: "x86",
            },
            Arch::Arm64 => Profile {
                arch,
                binary: "qemu-system-aarch64",
                package: "qemu-system-arm",
                // No virtualization=on/mte=on: EL2 and MTE emulation slow TCG boots a lot and
                // a boot test does not need them (override with --machine).
                machine: "virt,gic-version=3",
                machine_kvm: "virt,gic-version=3",
                cpu: "max,pauth-impdef=on",
                cpu_kvm: "host",
                console: "ttyAMA0",
                disk: DiskInterface::Virtio,
                memory: "512M",
                smp: 1,
                pvpanic: Some("pvpanic-pci"),
                bios: None,
                kvm_host_arch: "aarch64",
            },
            Arch::Armv7 => Profile {
                arch,
                binary: "qemu-system-arm",
                package: "qemu-system-arm",
                machine: "virt,gic-version=3",
                machine_kvm: "virt,gic-version=3",
                cpu: "cortex-a15",
                cpu_kvm: "host",
                console: "ttyAMA0",
                disk: DiskInterface::Virtio,
                memory: "512M",
                smp: 1,
                pvpanic: Some("pvpanic-pci"),
                bios: None,
                kvm_host_arch: "arm",
            },
            Arch::Riscv64 => Profile {
                arch,
                binary: "qemu-system-riscv64",
                package: "qemu-system-misc",
                machine: "virt",
                machine_kvm: "virt",
                cpu: "rv64",
                cpu_kvm: "host",
                console: "ttyS0",
                disk: DiskInterface::Virtio,
                memory: "512M",
                smp: 1,
                pvpanic: Some("pvpanic-pci"),
                // OpenSBI: the virt machine needs an SBI firmware below the kernel.
                bios: Some("default"),
                kvm_host_arch: "riscv64",
            },
            Arch::Ppc64le => Profile {
                arch,
                binary: "qemu-system-ppc64",
                package: "qemu-system-ppc",
                machine: "pseries",
                machine_kvm: "pseries",
                cpu: "POWER8",
                cpu_kvm: "host",
                console: "hvc0",
                disk: DiskInterface::Scsi,
                // SLOF and the pseries kernel want more than the others.
                memory: "1G",
                smp: 1,
                pvpanic: Some("pvpanic-pci"),
                bios: None,
                kvm_host_arch: "powerpc64",
            },
            Arch::S390x => Profile {
                arch,
                binary: "qemu-system-s390x",
                package: "qemu-system-misc",
                machine: "s390-ccw-virtio",
                machine_kvm: "s390-ccw-virtio",
                cpu: "max,zpci=on",
                cpu_kvm: "host",
                console: "ttyS0",
                disk: DiskInterface::Virtio,
                memory: "512M",
                smp: 1,
                // No pvpanic device on s390x; the console and panic=-1 still end the run.
                pvpanic: None,
                bios: None,
                kvm_host_arch: "s390x",
            },
        }
    }
}

/// A disk image to boot from (never written: attached with `snapshot=on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
}

/// Everything that varies per boot.
#[derive(Debug, Clone)]
pub struct QemuConfig<'a> {
    pub profile: &'a Profile,
    pub accel: Accel,
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub rootfs: Option<&'a DiskImage>,
    /// A raw second disk on the same interface (the job's modules and overlays for the early
    /// init to merge into the disk root), never written either.
    pub merge_disk: Option<&'a Path>,
    pub dtb: Option<&'a Path>,
    /// User kernel arguments, appended after ours (so a user `panic=` wins).
    pub boot_args: &'a str,
    /// The job's machine and CPU (validated: they pass through no text of the user's).
    pub machine: Option<&'a Machine>,
    pub cpu: Option<&'a Cpu>,
    /// Guest memory in bytes.
    pub memory: Option<u64>,
    pub smp: Option<u32>,
    /// Unix socket QEMU connects to for the serial console (we listen).
    pub console_socket: &'a Path,
    /// Unix socket QEMU connects to for QMP (we listen).
    pub qmp_socket: &'a Path,
    /// Run under QEMU's seccomp sandbox (`-sandbox`, when the build supports it).
    pub sandbox: bool,
}

/// The kernel command line: console first, `panic=-1` so a panic ends QEMU (with
/// `-no-reboot`), `root=` for disk images, then the user's arguments.
pub fn kernel_cmdline(cfg: &QemuConfig<'_>) -> String {
    let mut parts = vec![format!("console={},115200", cfg.profile.console)];
    parts.push("panic=-1".to_string());
    if cfg.rootfs.is_some() {
        parts.push(format!("root={} rw", cfg.profile.disk.root_device()));
    }
    let user = cfg.boot_args.trim();
    if !user.is_empty() {
        parts.push(user.to_string());
    }
    parts.join(" ")
}

/// QEMU's arguments (without the binary) for one boot. Pure.
pub fn build_args(cfg: &QemuConfig<'_>) -> Vec<String> {
    let p = cfg.profile;
    let kvm = cfg.accel == Accel::Kvm;
    let machine = cfg.machine.map_or_else(
        || if kvm { p.machine_kvm } else { p.machine }.to_string(),
        Machine::to_arg,
    );
    let cpu = cfg.cpu.map_or_else(
        || if kvm { p.cpu_kvm } else { p.cpu }.to_string(),
        |c| c.to_arg(p.arch),
    );
    let memory = cfg.memory.map_or_else(|| p.memory.to_string(), memory_arg);
    let mut a: Vec<String> = Vec::with_capacity(48);
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-machine", &machine]);
    push(&["-accel", cfg.accel.as_str()]);
    push(&["-cpu", &cpu]);
    push(&["-m", &memory]);
    let smp = cfg.smp.unwrap_or(p.smp).to_string();
    push(&["-smp", &smp]);
    // Start paused: the runner attaches the console and QMP, then sends `cont`.
    push(&[
        "-S",
        "-no-reboot",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
    ]);
    if cfg.sandbox {
        push(&["-sandbox", super::sandbox::SANDBOX]);
    }
    push(&["-chardev"]);
    a.push(format!(
        "socket,id=con,path={}",
        cfg.console_socket.display()
    ));
    a.extend(["-serial".to_string(), "chardev:con".to_string()]);
    a.extend(["-chardev".to_string()]);
    a.push(format!("socket,id=qmp,path={}", cfg.qmp_socket.display()));
    a.extend(["-mon".to_string(), "chardev=qmp,mode=control".to_string()]);
    if let Some(bios) = p.bios {
        a.extend(["-bios".to_string(), bios.to_string()]);
    }
    if let Some(dev) = p.pvpanic {
        a.extend(["-device".to_string(), dev.to_string()]);
    }
    a.extend(["-kernel".to_string(), cfg.kernel.display().to_string()]);
    if let Some(initrd) = cfg.initrd {
        a.extend(["-initrd".to_string(), initrd.display().to_string()]);
    }
    if let Some(dtb) = cfg.dtb {
        a.extend(["-dtb".to_string(), dtb.display().to_string()]);
    }
    // The disk root, then the archive its early init merges; neither is ever written.
    let disks = cfg
        .rootfs
        .map(|d| (d.path.as_path(), d.format))
        .into_iter()
        .chain(cfg.merge_disk.map(|m| (m, "raw")));
    for (path, format) in disks {
        a.push("-drive".to_string());
        a.push(format!(
            "file={},if={},format={format},snapshot=on",
            path.display(),
            p.disk.qemu_if()
        ));
    }
    a.extend(["-append".to_string(), kernel_cmdline(cfg)]);
    a
}

/// Bytes as QEMU's `-m` value, in the largest exact unit.
pub fn memory_arg(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}K", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

/// A disk image's format from its first bytes: qcow2 has a magic, anything else is raw.
pub fn disk_format(magic: &[u8]) -> &'static str {
    if magic.starts_with(b"QFI\xfb") {
        "qcow2"
    } else {
        "raw"
    }
}

/// Whether a rootfs source is an initramfs (`.cpio`, `.cpio.gz`, ...) rather than a disk image.
pub use bootfarm_core::spec::is_cpio_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg<'a>(p: &'a Profile, accel: Accel, rootfs: Option<&'a DiskImage>) -> QemuConfig<'a> {
        QemuConfig {
            profile: p,
            accel,
            kernel: Path::new("/k/kernel"),
            initrd: Some(Path::new("/k/initrd.cpio.gz")),
            rootfs,
            merge_disk: None,
            dtb: None,
            boot_args: "quiet",
            machine: None,
            cpu: None,
            memory: None,
            smp: None,
            console_socket: Path::new("/run/b/console.sock"),
            qmp_socket: Path::new("/run/b/qmp.sock"),
            sandbox: false,
        }
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn every_arch_has_a_complete_tcg_command_line() {
        let expected = [
            (
                Arch::X86_64,
                "q35",
                "Nehalem",
                "ttyS0",
                Some("pvpanic"),
                None,
            ),
            (Arch::I386, "q35", "coreduo", "ttyS0", Some("pvpanic"), None),
            (
                Arch::Arm64,
                "virt,gic-version=3",
                "max,pauth-impdef=on",
                "ttyAMA0",
                Some("pvpanic-pci"),
                None,
            ),
            (
                Arch::Armv7,
                "virt,gic-version=3",
                "cortex-a15",
                "ttyAMA0",
                Some("pvpanic-pci"),
                None,
            ),
            (
                Arch::Riscv64,
                "virt",
                "rv64",
                "ttyS0",
                Some("pvpanic-pci"),
                Some("default"),
            ),
            (
                Arch::Ppc64le,
                "pseries",
                "POWER8",
                "hvc0",
                Some("pvpanic-pci"),
                None,
            ),
            (
                Arch::S390x,
                "s390-ccw-virtio",
                "max,zpci=on",
                "ttyS0",
                None,
                None,
            ),
        ];
        for (arch, machine, cpu, console, pvpanic, bios) in expected {
            let p = Profile::for_arch(arch);
            let args = build_args(&cfg(&p, Accel::Tcg, None));
            assert_eq!(value_after(&args, "-machine"), [machine], "{arch}");
            assert_eq!(value_after(&args, "-cpu"), [cpu], "{arch}");
            assert_eq!(value_after(&args, "-accel"), ["tcg"], "{arch}");
            assert_eq!(
                value_after(&args, "-device"),
                pvpanic.into_iter().collect::<Vec<_>>()
            );
            assert_eq!(
                value_after(&args, "-bios"),
                bios.into_iter().collect::<Vec<_>>()
            );
            assert_eq!(value_after(&args, "-kernel"), ["/k/kernel"]);
            assert_eq!(value_after(&args, "-initrd"), ["/k/initrd.cpio.gz"]);
            let append = value_after(&args, "-append");
            assert_eq!(
                append,
                [format!("console={console},115200 panic=-1 quiet").as_str()],
                "{arch}"
            );
            for flag in ["-S", "-no-reboot", "-nodefaults"] {
                assert!(args.iter().any(|a| a == flag), "{arch} lacks {flag}");
            }
            assert_eq!(value_after(&args, "-serial"), ["chardev:con"]);
            assert_eq!(
                value_after(&args, "-chardev"),
                [
                    "socket,id=con,path=/run/b/console.sock",
                    "socket,id=qmp,path=/run/b/qmp.sock"
                ]
            );
            assert_eq!(value_after(&args, "-mon"), ["chardev=qmp,mode=control"]);
            assert!(!args.iter().any(|a| a == "-drive"));
        }
    }

    #[test]
    fn the_sandbox_denies_spawning_privileges_and_obsolete_calls() {
        let p = Profile::for_arch(Arch::X86_64);
        let mut c = cfg(&p, Accel::Tcg, None);
        assert!(value_after(&build_args(&c), "-sandbox").is_empty());
        c.sandbox = true;
        assert_eq!(
            value_after(&build_args(&c), "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_the_kvm_machine() {
        let p = Profile::for_arch(Arch::X86_64);
        let args = build_args(&cfg(&p, Accel::Kvm, None));
        assert_eq!(value_after(&args, "-cpu"), ["host"]);
        assert_eq!(value_after(&args, "-accel"), ["kvm"]);
        let p = Profile::for_arch(Arch::Arm64);
        let args = build_args(&cfg(&p, Accel::Kvm, None));
        assert_eq!(value_after(&args, "-machine"), ["virt,gic-version=3"]);
        assert_eq!(value_after(&args, "-cpu"), ["host"]);
    }

    #[test]
    fn disk_rootfs_is_a_snapshot_drive_with_the_right_root_device() {
        let disk = DiskImage {
            path: PathBuf::from("/c/rootfs.ext4"),
            format: "raw",
        };
        let cases = [
            (Arch::X86_64, "ide", "/dev/sda"),
            (Arch::Arm64, "virtio", "/dev/vda"),
            (Arch::Riscv64, "virtio", "/dev/vda"),
            (Arch::Ppc64le, "scsi", "/dev/sda"),
            (Arch::S390x, "virtio", "/dev/vda"),
        ];
        for (arch, iface, root) in cases {
            let p = Profile::for_arch(arch);
            let mut c = cfg(&p, Accel::Tcg, Some(&disk));
            c.initrd = None;
            let args = build_args(&c);
            assert_eq!(
                value_after(&args, "-drive"),
                [format!("file=/c/rootfs.ext4,if={iface},format=raw,snapshot=on").as_str()]
            );
            assert!(value_after(&args, "-append")[0].contains(&format!("root={root} rw")));
        }
    }

    #[test]
    fn overrides_replace_profile_defaults() {
        let p = Profile::for_arch(Arch::Arm64);
        let mut c = cfg(&p, Accel::Tcg, None);
        let machine = Machine::parse(Arch::Arm64, "virt,virtualization=on").unwrap();
        let cpu = Cpu::parse(Arch::Arm64, "cortex-a57,-sve").unwrap();
        c.machine = Some(&machine);
        c.cpu = Some(&cpu);
        c.memory = Some(2 << 30);
        c.smp = Some(4);
        c.dtb = Some(Path::new("/k/board.dtb"));
        let args = build_args(&c);
        assert_eq!(value_after(&args, "-machine"), ["virt,virtualization=on"]);
        assert_eq!(value_after(&args, "-cpu"), ["cortex-a57,sve=off"]);
        assert_eq!(value_after(&args, "-m"), ["2048M"]);
        assert_eq!(value_after(&args, "-smp"), ["4"]);
        assert_eq!(value_after(&args, "-dtb"), ["/k/board.dtb"]);
    }

    #[test]
    fn user_boot_args_come_last_so_they_override_ours() {
        let p = Profile::for_arch(Arch::X86_64);
        let mut c = cfg(&p, Accel::Tcg, None);
        c.boot_args = "  panic=0  ";
        assert_eq!(kernel_cmdline(&c), "console=ttyS0,115200 panic=-1 panic=0");
        c.boot_args = "";
        assert_eq!(kernel_cmdline(&c), "console=ttyS0,115200 panic=-1");
    }

    #[test]
    fn packages_name_the_debian_package_of_each_binary() {
        assert_eq!(Profile::for_arch(Arch::X86_64).package, "qemu-system-x86");
        assert_eq!(Profile::for_arch(Arch::Armv7).package, "qemu-system-arm");
        assert_eq!(Profile::for_arch(Arch::Riscv64).package, "qemu-system-misc");
        assert_eq!(Profile::for_arch(Arch::Ppc64le).package, "qemu-system-ppc");
        assert_eq!(Profile::for_arch(Arch::S390x).binary, "qemu-system-s390x");
    }

    #[test]
    fn rootfs_kind_and_disk_format_are_detected() {
        assert!(is_cpio_name("https://x/y/rootfs.cpio.gz"));
        assert!(is_cpio_name("/a/initrd.cpio"));
        assert!(!is_cpio_name("/a/rootfs.ext4.zst"));
        assert_eq!(disk_format(b"QFI\xfb\0\0\0\x03"), "qcow2");
        assert_eq!(disk_format(b"\0\0\0\0"), "raw");
    }
}
