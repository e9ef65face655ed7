//! Guest architectures bootfarm knows how to boot.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    I386,
    Arm64,
    Armv7,
    Riscv64,
    Ppc64le,
    S390x,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::X86_64,
        Arch::I386,
        Arch::Arm64,
        Arch::Armv7,
        Arch::Riscv64,
        Arch::Ppc64le,
        Arch::S390x,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::I386 => "i386",
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armv7",
            Arch::Riscv64 => "riscv64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown architecture {0:?} (expected one of: x86_64, i386, arm64, armv7, riscv64, ppc64le, s390x)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept the usual aliases people type (Debian and kernel spellings), answer canonically.
        Ok(match s {
            "x86_64" | "amd64" | "x86-64" => Arch::X86_64,
            "i386" | "i686" | "x86" => Arch::I386,
            "arm64" | "aarch64" => Arch::Arm64,
            "armv7" | "armhf" | "arm" => Arch::Armv7,
            "riscv64" => Arch::Riscv64,
            "ppc64le" | "ppc64el" => Arch::Ppc64le,
            "s390x" => Arch::S390x,
            other => return Err(UnknownArch(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arch_round_trips_through_its_name() {
        for a in Arch::ALL {
            assert_eq!(a.as_str().parse::<Arch>(), Ok(a));
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
    }

    #[test]
    fn unknown_arch_is_an_error_naming_it() {
        let err = "mips".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("\"mips\""));
    }
}
