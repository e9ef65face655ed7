//! The strict grammar for the two QEMU options a job may choose: `machine` and `cpu`.
//!
//! Nothing a user writes reaches QEMU's command line as text. A machine is one of the arch's
//! known machine types with only allow-listed properties and values (no `dumpdtb=`, `dtb=`,
//! `kernel=`, `memory-backend=`: QEMU runs with the farm's rights and such properties read or
//! write host files). A CPU is a known model with boolean feature flags only (`+x`, `-x`,
//! `x=on|off`). Both parse into typed values; the runner formats them back with
//! [`Machine::to_arg`] and [`Cpu::to_arg`].

use crate::Arch;
use std::fmt;

/// A validated `-machine` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// A known machine type of the arch (`q35`, `virt`, `virt-7.2`, `pseries`, ...).
    pub name: String,
    /// Allow-listed `key=value` properties, in the order given.
    pub props: Vec<(String, String)>,
}

/// A validated `-cpu` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// A known CPU model of the arch (`max`, `Nehalem`, `cortex-a57`, `POWER9`, ...).
    pub model: String,
    /// Feature flags: name and whether it is on.
    pub features: Vec<(String, bool)>,
}

/// Why a machine or CPU string was refused (the message names what is allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

/// The values a property may take.
#[derive(Debug, Clone, Copy)]
enum Values {
    OnOff,
    OnOffAuto,
    OneOf(&'static [&'static str]),
    /// An integer in the inclusive range.
    Int(u32, u32),
}

impl Values {
    fn allows(self, v: &str) -> bool {
        match self {
            Values::OnOff => matches!(v, "on" | "off"),
            Values::OnOffAuto => matches!(v, "on" | "off" | "auto"),
            Values::OneOf(list) => list.contains(&v),
            Values::Int(lo, hi) => {
                v.len() <= 3 && v.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Values::OnOff => "on or off".into(),
            Values::OnOffAuto => "on, off or auto".into(),
            Values::OneOf(list) => list.join(", "),
            Values::Int(lo, hi) => format!("an integer {lo}..={hi}"),
        }
    }
}

type PropTable = &'static [(&'static str, Values)];

const X86_PC_PROPS: PropTable = &[
    ("acpi", Values::OnOffAuto),
    ("smm", Values::OnOffAuto),
    ("hpet", Values::OnOff),
    ("vmport", Values::OnOffAuto),
    ("kernel-irqchip", Values::OneOf(&["on", "off", "split"])),
];
const X86_MICROVM_PROPS: PropTable = &[
    ("acpi", Values::OnOffAuto),
    ("pic", Values::OnOffAuto),
    ("pit", Values::OnOffAuto),
    ("rtc", Values::OnOffAuto),
    ("pcie", Values::OnOffAuto),
    ("isa-serial", Values::OnOff),
    ("auto-kernel-cmdline", Values::OnOff),
];
const ARM_VIRT_PROPS: PropTable = &[
    (
        "gic-version",
        Values::OneOf(&["2", "3", "4", "max", "host"]),
    ),
    ("highmem", Values::OnOff),
    ("highmem-ecam", Values::OnOff),
    ("highmem-mmio", Values::OnOff),
    ("highmem-redists", Values::OnOff),
    ("compact-highmem", Values::OnOff),
    ("mte", Values::OnOff),
    ("virtualization", Values::OnOff),
    ("secure", Values::OnOff),
    ("its", Values::OnOff),
    ("ras", Values::OnOff),
    ("acpi", Values::OnOffAuto),
    ("iommu", Values::OneOf(&["none", "smmuv3"])),
];
const ARM_VEXPRESS_PROPS: PropTable =
    &[("secure", Values::OnOff), ("virtualization", Values::OnOff)];
const RISCV_VIRT_PROPS: PropTable = &[
    ("aclint", Values::OnOff),
    ("aia", Values::OneOf(&["none", "aplic", "aplic-imsic"])),
    ("aia-guests", Values::Int(0, 7)),
    ("acpi", Values::OnOffAuto),
];
const PSERIES_CAP: Values = Values::OneOf(&[
    "on",
    "off",
    "broken",
    "workaround",
    "fixed",
    "fixed-ibs",
    "fixed-ccd",
    "fixed-na",
]);
const PSERIES_PROPS: PropTable = &[
    ("ic-mode", Values::OneOf(&["xics", "xive", "dual"])),
    (
        "max-cpu-compat",
        Values::OneOf(&["power7", "power8", "power9", "power10"]),
    ),
    ("cap-htm", Values::OnOff),
    ("cap-vsx", Values::OnOff),
    ("cap-dfp", Values::OnOff),
    ("cap-large-decr", Values::OnOff),
    ("cap-ccf-assist", Values::OnOff),
    ("cap-fwnmi", Values::OnOff),
    ("cap-rpt-invalidate", Values::OnOff),
    ("cap-nested-hv", Values::OnOff),
    ("cap-cfpc", PSERIES_CAP),
    ("cap-sbbc", PSERIES_CAP),
    ("cap-ibs", PSERIES_CAP),
];
const S390_PROPS: PropTable = &[
    ("aes-key-wrap", Values::OnOff),
    ("dea-key-wrap", Values::OnOff),
];
const NO_PROPS: PropTable = &[];

/// The machine types a job may name for `arch`, and each one's properties.
fn machine_props(arch: Arch, name: &str) -> Option<PropTable> {
    let versioned = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|v| v.strip_prefix('-'))
            .is_some_and(is_version)
    };
    match arch {
        Arch::X86_64 | Arch::I386 => match name {
            "q35" | "pc" => Some(X86_PC_PROPS),
            "microvm" => Some(X86_MICROVM_PROPS),
            _ if versioned("pc-q35") || versioned("pc-i440fx") => Some(X86_PC_PROPS),
            _ => None,
        },
        Arch::Arm64 => (name == "virt" || versioned("virt")).then_some(ARM_VIRT_PROPS),
        Arch::Armv7 => match name {
            "vexpress-a15" | "vexpress-a9" => Some(ARM_VEXPRESS_PROPS),
            _ => (name == "virt" || versioned("virt")).then_some(ARM_VIRT_PROPS),
        },
        Arch::Riscv64 => match name {
            "virt" => Some(RISCV_VIRT_PROPS),
            "sifive_u" => Some(NO_PROPS),
            _ => None,
        },
        Arch::Ppc64le => (name == "pseries" || versioned("pseries")).then_some(PSERIES_PROPS),
        Arch::S390x => {
            (name == "s390-ccw-virtio" || versioned("s390-ccw-virtio")).then_some(S390_PROPS)
        }
    }
}

/// `7.2`, `4.0.1`: a QEMU machine version.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn machine_names(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 | Arch::I386 => "q35, pc, microvm, pc-q35-X.Y, pc-i440fx-X.Y",
        Arch::Arm64 => "virt, virt-X.Y",
        Arch::Armv7 => "virt, virt-X.Y, vexpress-a15, vexpress-a9",
        Arch::Riscv64 => "virt, sifive_u",
        Arch::Ppc64le => "pseries, pseries-X.Y",
        Arch::S390x => "s390-ccw-virtio, s390-ccw-virtio-X.Y",
    }
}

/// The longest `machine` or `cpu` string accepted.
pub const MAX_OPTION_LEN: usize = 256;

fn split_option(what: &str, s: &str) -> Result<Vec<String>, OptionError> {
    if s.is_empty() || s.len() > MAX_OPTION_LEN {
        return Err(OptionError(format!(
            "a QEMU {what} must be 1..={MAX_OPTION_LEN} characters"
        )));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b',' | b'=' | b'.' | b'-' | b'_' | b'+'))
    {
        return Err(OptionError(format!(
            "{s:?} is not a QEMU {what}: only letters, digits and , = . - _ + are allowed"
        )));
    }
    Ok(s.split(',').map(str::to_string).collect())
}

impl Machine {
    /// Parses `NAME[,KEY=VALUE...]` for `arch`.
    pub fn parse(arch: Arch, s: &str) -> Result<Machine, OptionError> {
        let parts = split_option("machine", s)?;
        let name = parts[0].clone();
        let Some(table) = machine_props(arch, &name) else {
            return Err(OptionError(format!(
                "unknown machine type {name:?} for {arch} (allowed: {})",
                machine_names(arch)
            )));
        };
        let mut props: Vec<(String, String)> = Vec::new();
        for part in &parts[1..] {
            let Some((key, value)) = part.split_once('=') else {
                return Err(OptionError(format!(
                    "machine property {part:?} must be KEY=VALUE"
                )));
            };
            let Some((_, values)) = table.iter().find(|(k, _)| *k == key) else {
                let allowed: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
                return Err(OptionError(format!(
                    "machine property {key:?} is not allowed on {name} (allowed: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            };
            if !values.allows(value) {
                return Err(OptionError(format!(
                    "machine property {key}={value:?}: expected {}",
                    values.describe()
                )));
            }
            if props.iter().any(|(k, _)| k == key) {
                return Err(OptionError(format!("machine property {key:?} given twice")));
            }
            props.push((key.to_string(), value.to_string()));
        }
        Ok(Machine { name, props })
    }

    /// The `-machine` argument.
    pub fn to_arg(&self) -> String {
        let mut s = self.name.clone();
        for (k, v) in &self.props {
            s.push(',');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_arg())
    }
}

/// Whether `model` is a CPU model QEMU knows for `arch` (ours: a curated list of real models).
fn known_cpu(arch: Arch, model: &str) -> bool {
    match arch {
        Arch::X86_64 | Arch::I386 => {
            // Versioned aliases (`Nehalem-v2`) name the same models.
            let base = match model.rsplit_once("-v") {
                Some((b, v)) if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) => b,
                _ => model,
            };
            X86_CPUS.contains(&base)
        }
        Arch::Arm64 => ARM64_CPUS.contains(&model),
        Arch::Armv7 => ARMV7_CPUS.contains(&model),
        Arch::Riscv64 => RISCV_CPUS.contains(&model),
        Arch::Ppc64le => {
            let lower = model.to_ascii_lowercase();
            let base = lower.split_once('_').map_or(lower.as_str(), |(b, rev)| {
                if rev.starts_with('v') && rev[1..].bytes().all(|c| c.is_ascii_digit() || c == b'.')
                {
                    b
                } else {
                    ""
                }
            });
            PPC_CPUS.contains(&base)
        }
        Arch::S390x => is_s390_cpu(model),
    }
}

const X86_CPUS: &[&str] = &[
    "host",
    "max",
    "base",
    "qemu64",
    "qemu32",
    "kvm64",
    "kvm32",
    "486",
    "pentium",
    "pentium2",
    "pentium3",
    "athlon",
    "phenom",
    "n270",
    "coreduo",
    "core2duo",
    "Conroe",
    "Penryn",
    "Nehalem",
    "Nehalem-IBRS",
    "Westmere",
    "Westmere-IBRS",
    "SandyBridge",
    "SandyBridge-IBRS",
    "IvyBridge",
    "IvyBridge-IBRS",
    "Haswell",
    "Haswell-IBRS",
    "Haswell-noTSX",
    "Haswell-noTSX-IBRS",
    "Broadwell",
    "Broadwell-IBRS",
    "Broadwell-noTSX",
    "Broadwell-noTSX-IBRS",
    "Skylake-Client",
    "Skylake-Client-IBRS",
    "Skylake-Client-noTSX-IBRS",
    "Skylake-Server",
    "Skylake-Server-IBRS",
    "Skylake-Server-noTSX-IBRS",
    "Cascadelake-Server",
    "Cascadelake-Server-noTSX",
    "Cooperlake",
    "Icelake-Server",
    "Icelake-Server-noTSX",
    "SapphireRapids",
    "GraniteRapids",
    "SierraForest",
    "KnightsMill",
    "Denverton",
    "Snowridge",
    "Opteron_G1",
    "Opteron_G2",
    "Opteron_G3",
    "Opteron_G4",
    "Opteron_G5",
    "EPYC",
    "EPYC-IBPB",
    "EPYC-Rome",
    "EPYC-Milan",
    "EPYC-Genoa",
    "Dhyana",
];
const ARM64_CPUS: &[&str] = &[
    "host",
    "max",
    "a64fx",
    "cortex-a35",
    "cortex-a53",
    "cortex-a55",
    "cortex-a57",
    "cortex-a72",
    "cortex-a76",
    "cortex-a710",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-v1",
];
const ARMV7_CPUS: &[&str] = &[
    "host",
    "max",
    "cortex-a7",
    "cortex-a8",
    "cortex-a9",
    "cortex-a15",
];
const RISCV_CPUS: &[&str] = &[
    "host",
    "max",
    "any",
    "rv64",
    "sifive-u54",
    "sifive-e51",
    "shakti-c",
    "thead-c906",
    "veyron-v1",
];
const PPC_CPUS: &[&str] = &[
    "host",
    "power7",
    "power7+",
    "power8",
    "power8e",
    "power8nvl",
    "power9",
    "power10",
];

/// s390x models: `qemu`, `max`, `host`, and the z generations (`z900`, `z990.2`, `z13s`,
/// `gen15a`, each optionally `-base` or `-full`).
fn is_s390_cpu(model: &str) -> bool {
    if matches!(model, "qemu" | "max" | "host") {
        return true;
    }
    let core = model
        .strip_suffix("-base")
        .or_else(|| model.strip_suffix("-full"))
        .unwrap_or(model);
    let (gen, ga) = core.split_once('.').unwrap_or((core, ""));
    let ga_ok = ga.is_empty() || (ga.len() == 1 && ga.bytes().all(|b| b.is_ascii_digit()));
    if !ga_ok {
        return false;
    }
    const GENERATIONS: &[&str] = &[
        "z900", "z800", "z990", "z890", "z9EC", "z9BC", "z10EC", "z10BC", "z196", "z114", "zEC12",
        "zBC12", "z13", "z13s", "z14", "z14ZR1", "gen15a", "gen15b", "gen16a", "gen16b", "gen17a",
        "gen17b",
    ];
    GENERATIONS.contains(&gen)
}

fn cpu_models(arch: Arch) -> String {
    match arch {
        Arch::X86_64 | Arch::I386 => {
            "max, qemu64, Nehalem, Skylake-Client, EPYC, ... (QEMU's x86 models)".into()
        }
        Arch::Arm64 => ARM64_CPUS.join(", "),
        Arch::Armv7 => ARMV7_CPUS.join(", "),
        Arch::Riscv64 => RISCV_CPUS.join(", "),
        Arch::Ppc64le => "POWER7, POWER8, POWER9, POWER10 (optionally _vX.Y), host".into(),
        Arch::S390x => "qemu, max, z13, z14, gen15a, ... (optionally -base/-full)".into(),
    }
}

fn is_feature_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Cpu {
    /// Parses `MODEL[,+FEATURE|,-FEATURE|,FEATURE=on|off...]` for `arch`.
    pub fn parse(arch: Arch, s: &str) -> Result<Cpu, OptionError> {
        let parts = split_option("cpu", s)?;
        let model = parts[0].clone();
        if !known_cpu(arch, &model) {
            return Err(OptionError(format!(
                "unknown CPU model {model:?} for {arch} (known: {})",
                cpu_models(arch)
            )));
        }
        let mut features: Vec<(String, bool)> = Vec::new();
        for part in &parts[1..] {
            let (name, on) = if let Some(n) = part.strip_prefix('+') {
                (n, true)
            } else if let Some(n) = part.strip_prefix('-') {
                (n, false)
            } else {
                match part.split_once('=') {
                    Some((n, "on" | "true")) => (n, true),
                    Some((n, "off" | "false")) => (n, false),
                    _ => {
                        return Err(OptionError(format!(
                            "CPU feature {part:?}: only +FEATURE, -FEATURE or FEATURE=on|off"
                        )))
                    }
                }
            };
            if !is_feature_name(name) {
                return Err(OptionError(format!("{name:?} is not a CPU feature name")));
            }
            if features.iter().any(|(n, _)| n == name) {
                return Err(OptionError(format!("CPU feature {name:?} given twice")));
            }
            features.push((name.to_string(), on));
        }
        Ok(Cpu { model, features })
    }

    /// The `-cpu` argument: x86 spells flags `+x`/`-x`; the other targets only take `x=on|off`.
    pub fn to_arg(&self, arch: Arch) -> String {
        let mut s = self.model.clone();
        let plus_minus = matches!(arch, Arch::X86_64 | Arch::I386);
        for (name, on) in &self.features {
            s.push(',');
            if plus_minus {
                s.push(if *on { '+' } else { '-' });
                s.push_str(name);
            } else {
                s.push_str(name);
                s.push_str(if *on { "=on" } else { "=off" });
            }
        }
        s
    }

    /// `host` exists only under KVM: a TCG boot of it fails the same way on every runner.
    pub fn needs_kvm(&self) -> bool {
        self.model == "host"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_machines_with_allowed_properties_parse() {
        let m = Machine::parse(Arch::Arm64, "virt,gic-version=3,mte=on,highmem=off").unwrap();
        assert_eq!(m.name, "virt");
        assert_eq!(m.to_arg(), "virt,gic-version=3,mte=on,highmem=off");
        for (arch, s) in [
            (Arch::X86_64, "q35"),
            (Arch::X86_64, "pc-q35-7.2,acpi=off"),
            (Arch::I386, "pc-i440fx-7.2"),
            (Arch::Armv7, "virt-7.2,highmem=off"),
            (Arch::Riscv64, "virt,aia=aplic-imsic,aia-guests=2"),
            (Arch::Ppc64le, "pseries,cap-cfpc=broken,ic-mode=xics"),
            (Arch::S390x, "s390-ccw-virtio-7.2"),
        ] {
            assert!(Machine::parse(arch, s).is_ok(), "{arch} {s}");
        }
    }

    #[test]
    fn properties_that_touch_host_files_are_refused() {
        for bad in [
            "virt,dumpdtb=passwd",
            "virt,dtb=shadow",
            "virt,kernel=shadow",
            "virt,memory-backend=m0",
            "virt,firmware=x",
            "virt,accel=kvm",
            "virt,gic-version=3,dumpdtb=x",
        ] {
            let err = Machine::parse(Arch::Arm64, bad).unwrap_err();
            assert!(err.0.contains("not allowed"), "{bad}: {err}");
        }
        // A path cannot even be spelled.
        assert!(Machine::parse(Arch::Arm64, "virt,dumpdtb=/etc/passwd").is_err());
    }

    #[test]
    fn injection_through_separators_is_impossible() {
        for bad in [
            "virt -device x",
            "virt\n-drive",
            "virt,,dumpdtb=/x",
            "-virt",
            "virt,gic-version=3 ",
            "virt,highmem=yes",
            "virt,gic-version=/tmp",
            "virt,highmem",
            "virt,highmem=on,highmem=off",
            "",
        ] {
            assert!(Machine::parse(Arch::Arm64, bad).is_err(), "{bad:?}");
        }
        assert!(Machine::parse(Arch::Arm64, "q35").is_err(), "wrong arch");
        assert!(Machine::parse(Arch::X86_64, "virt").is_err(), "wrong arch");
        assert!(Machine::parse(Arch::X86_64, "pc-q35-7").is_err());
        assert!(Machine::parse(Arch::X86_64, "x-remote").is_err());
    }

    #[test]
    fn cpus_are_known_models_with_boolean_flags() {
        let c = Cpu::parse(Arch::X86_64, "Nehalem,+avx,-x2apic,pdpe1gb=on").unwrap();
        assert_eq!(c.to_arg(Arch::X86_64), "Nehalem,+avx,-x2apic,+pdpe1gb");
        let c = Cpu::parse(Arch::Arm64, "max,pauth-impdef=on,-sve").unwrap();
        assert_eq!(c.to_arg(Arch::Arm64), "max,pauth-impdef=on,sve=off");
        for (arch, s) in [
            (Arch::X86_64, "Skylake-Client-v4"),
            (Arch::I386, "coreduo"),
            (Arch::Armv7, "cortex-a15"),
            (Arch::Riscv64, "rv64,+zba"),
            (Arch::Ppc64le, "POWER8"),
            (Arch::Ppc64le, "power9_v2.2"),
            (Arch::S390x, "max,+zpci"),
            (Arch::S390x, "z14ZR1-base"),
        ] {
            assert!(Cpu::parse(arch, s).is_ok(), "{arch} {s}");
        }
        for (arch, bad) in [
            (Arch::X86_64, "Nehalem,model-id=x"),
            (Arch::X86_64, "Nehalem,phys-bits=40"),
            (Arch::X86_64, "bogus"),
            (Arch::X86_64, "Nehalem,+"),
            (Arch::X86_64, "Nehalem,+avx,+avx"),
            (Arch::Arm64, "cortex-a15"),
            (Arch::Arm64, "max,sve-max-vq=4"),
            (Arch::Ppc64le, "power9_x"),
            (Arch::S390x, "z99"),
        ] {
            assert!(Cpu::parse(arch, bad).is_err(), "{arch} {bad}");
        }
        assert!(Cpu::parse(Arch::X86_64, "host").unwrap().needs_kvm());
        assert!(!Cpu::parse(Arch::X86_64, "max").unwrap().needs_kvm());
    }
}
