//! The result document, `bootfarm.result/v1`: what `bootfarm-runner boot --output json` and
//! `bootfarm-runner classify` print, what runners post to the operator. Field names are a contract.

pub mod check;
mod error_kind;
pub mod junit;
pub mod reproducer;
pub mod tuxrun;

pub use error_kind::ErrorKind;

use crate::Arch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "bootfarm.result/v1";

/// pass: the kernel did what was expected; fail: the kernel or a test failed;
/// error: infrastructure (never the kernel's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
}

impl Verdict {
    /// The runner's exit status for this verdict (2 is reserved for usage errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Error => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

/// How far the guest got, in boot order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The kernel never printed.
    #[default]
    None,
    /// The kernel started; userspace never did.
    Kernel,
    /// init ran.
    Userspace,
    /// A login prompt appeared.
    Login,
    /// A shell prompt appeared.
    Shell,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::Kernel => "kernel",
            Stage::Userspace => "userspace",
            Stage::Login => "login",
            Stage::Shell => "shell",
        }
    }
}

/// Kernel problem kinds; the names are a contract (`issues[].kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    Panic,
    Oops,
    Bug,
    Warning,
    SoftLockup,
    HardLockup,
    RcuStall,
    HungTask,
    Oom,
    Kasan,
    Kfence,
    Kcsan,
    Ubsan,
    InvalidOpcode,
    Fault,
    Exception,
    /// A line matching a job's own `--failure-pattern`.
    Pattern,
    /// KMSAN: use of uninitialised memory.
    Kmsan,
    /// A lockdep splat (possible deadlock, inconsistent lock state, suspicious RCU usage, ...).
    Lockdep,
    /// kmemleak's `unreferenced object`.
    Memleak,
    /// A driver or subsystem error with an errno (`probe of x failed with error -22`).
    ErrorCode,
    /// A user-space process crash the kernel logs (`traps: ...`, `segfault at`).
    UserFault,
}

impl IssueKind {
    pub const ALL: [IssueKind; 22] = [
        IssueKind::Panic,
        IssueKind::Oops,
        IssueKind::Bug,
        IssueKind::Warning,
        IssueKind::SoftLockup,
        IssueKind::HardLockup,
        IssueKind::RcuStall,
        IssueKind::HungTask,
        IssueKind::Oom,
        IssueKind::Kasan,
        IssueKind::Kfence,
        IssueKind::Kcsan,
        IssueKind::Ubsan,
        IssueKind::InvalidOpcode,
        IssueKind::Fault,
        IssueKind::Exception,
        IssueKind::Pattern,
        IssueKind::Kmsan,
        IssueKind::Lockdep,
        IssueKind::Memleak,
        IssueKind::ErrorCode,
        IssueKind::UserFault,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Panic => "panic",
            IssueKind::Oops => "oops",
            IssueKind::Bug => "bug",
            IssueKind::Warning => "warning",
            IssueKind::SoftLockup => "soft_lockup",
            IssueKind::HardLockup => "hard_lockup",
            IssueKind::RcuStall => "rcu_stall",
            IssueKind::HungTask => "hung_task",
            IssueKind::Oom => "oom",
            IssueKind::Kasan => "kasan",
            IssueKind::Kfence => "kfence",
            IssueKind::Kcsan => "kcsan",
            IssueKind::Ubsan => "ubsan",
            IssueKind::InvalidOpcode => "invalid_opcode",
            IssueKind::Fault => "fault",
            IssueKind::Exception => "exception",
            IssueKind::Pattern => "pattern",
            IssueKind::Kmsan => "kmsan",
            IssueKind::Lockdep => "lockdep",
            IssueKind::Memleak => "memleak",
            IssueKind::ErrorCode => "error_code",
            IssueKind::UserFault => "user_fault",
        }
    }

    /// The default policy: these fail a run; warning, hung_task, oom, lockdep, memleak,
    /// error_code and user_fault are only recorded.
    pub fn fails_by_default(self) -> bool {
        !matches!(
            self,
            IssueKind::Warning
                | IssueKind::HungTask
                | IssueKind::Oom
                | IssueKind::Lockdep
                | IssueKind::Memleak
                | IssueKind::ErrorCode
                | IssueKind::UserFault
        )
    }
}

impl std::str::FromStr for IssueKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IssueKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = IssueKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown issue kind {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Before the first prompt, or after it (while tests ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Boot,
    Test,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Issue {
    pub kind: IssueKind,
    /// 1-based console line number where the problem (its first report) starts.
    pub line: u64,
    pub summary: String,
    /// A bounded excerpt of the (first) report: the block, or a few lines.
    pub excerpt: String,
    /// Stable across runs, builds and kernels: hex SHA-256 prefix of the kind and the title.
    pub fingerprint: String,
    pub phase: Phase,
    /// Whether the job's policy counts this issue as a failure.
    pub fatal: bool,
    /// The crash's name as syzbot writes it: the report's head without addresses, sizes,
    /// pids or CPU numbers, then ` in <function>` (`KASAN: use-after-free Read in tcp_recvmsg`).
    #[serde(default)]
    pub title: String,
    /// The guilty frame: the first function of the trace (or of the line naming it) that is
    /// not reporting machinery, a library routine or entry code; null when there is none.
    #[serde(default)]
    pub function: Option<String>,
    /// Reports of this fingerprint in the log (the first one's line and excerpt are kept).
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Pass,
    Fail,
    Skip,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TestCase {
    pub name: String,
    pub result: TestOutcome,
    /// Suite path, `/`-separated for nested KTAP suites; empty when none.
    pub suite: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub measurement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub units: Option<String>,
    /// Why, when it is not a plain pass (a KTAP directive, "missing", an exit status).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Captured output (interactive `--command` cases, STARTTC/ENDTC excerpts), bounded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output: Option<String>,
}

/// Seconds from the start of the run (QEMU `cont`) to each milestone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Durations {
    pub total: Option<f64>,
    pub to_kernel: Option<f64>,
    pub to_userspace: Option<f64>,
    pub to_prompt: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorInfo {
    /// Stable machine-readable kind (`artifact_missing`, `qemu_failed`, ...).
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QemuInfo {
    pub version: Option<String>,
    pub argv: Vec<String>,
    /// What was given to QEMU as `-kernel`, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelBooted>,
    /// The early initramfs bootfarm built for a disk root (`-initrd`, with the job's modules and
    /// overlays on the second `-drive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_initramfs: Option<EarlyInitramfs>,
}

/// What the early initramfs of a disk root held: the driver modules it loaded, in order, from
/// the modules tarball's `lib/modules/<version>` (none when no tarball came: built-in drivers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EarlyInitramfs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Paths relative to `lib/modules/<version>`, as `modules.dep` names them.
    pub modules: Vec<String>,
}

/// The kernel QEMU booted: the image as given, or its ELF extracted on the host (the fast path
/// of `--kernel-boot auto`), with the reason when the image was booted as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct KernelBooted {
    /// `pvh-elf` (the ELF a bzImage carries, entered at its PVH entry point) or the format of
    /// the image as given: `bzImage`, `zImage`, `Image`, `elf`, `pe`, `unknown`.
    pub format: String,
    /// The format of the image the booted kernel was extracted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The codec of the extracted payload (gzip, xz, zstd, lzma, lz4, bzip2, lzo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Time spent extracting for this boot (0 when the artifact cache already had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_ms: Option<u64>,
    /// True when the extracted kernel came from the artifact cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// False on the PVH path: the decompressor's KASLR does not run, so the kernel runs at its
    /// link address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kaslr: Option<bool>,
    /// sha256 of the extracted kernel (what QEMU booted, when it is not the artifact itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the image was booted as given (the mode asked for it, or the fast path does not apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ArtifactInfo {
    pub source: String,
    pub sha256: String,
    pub size: u64,
    /// An overlay's directory in the guest (`/` by default); absent for other artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConsoleInfo {
    /// Bytes the guest wrote to the console.
    pub bytes: u64,
    pub lines: u64,
    /// True when the stored log was cut (head and tail kept).
    pub truncated: bool,
    /// Issues the classifier counted beyond its bound on kept issues (not in `issues`).
    #[serde(default)]
    pub dropped_issues: u64,
    /// Test results counted beyond the bound on kept tests (not in `tests`).
    #[serde(default)]
    pub dropped_tests: u64,
}

/// The whole result document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BootResult {
    pub schema: String,
    pub result: Verdict,
    /// Short machine-friendly cause: prompt, poweroff, panic, timeout, boot_timeout, issue,
    /// test_failed, login_incorrect, incomplete, qemu_exit, error, ...
    pub reason: String,
    /// One human sentence about the verdict.
    pub summary: String,
    pub stage: Stage,
    pub kernel_version: Option<String>,
    pub arch: Option<Arch>,
    /// `kvm` or `tcg`, the accelerator actually used (null for `classify`).
    pub accel: Option<String>,
    /// Why that accelerator (e.g. "kvm probe: no console output in 4 s, fell back to tcg").
    pub accel_reason: Option<String>,
    pub durations: Durations,
    pub issues: Vec<Issue>,
    pub tests: Vec<TestCase>,
    pub error: Option<ErrorInfo>,
    pub qemu: Option<QemuInfo>,
    pub artifacts: BTreeMap<String, ArtifactInfo>,
    pub console: ConsoleInfo,
    /// What did not fail the boot but was not as asked (e.g. modules for another kernel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl BootResult {
    /// A result for an infrastructure error before or around the boot.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        BootResult {
            schema: SCHEMA.to_string(),
            result: Verdict::Error,
            reason: "error".to_string(),
            summary: message.clone(),
            stage: Stage::None,
            kernel_version: None,
            arch: None,
            accel: None,
            accel_reason: None,
            durations: Durations::default(),
            issues: Vec::new(),
            tests: Vec::new(),
            error: Some(ErrorInfo { kind, message }),
            qemu: None,
            artifacts: BTreeMap::new(),
            console: ConsoleInfo::default(),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_kind_names_are_the_contract_names() {
        for k in IssueKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(k.as_str().parse::<IssueKind>(), Ok(k));
        }
        assert_eq!(IssueKind::SoftLockup.as_str(), "soft_lockup");
    }

    #[test]
    fn error_result_serialises_with_schema_and_error_object() {
        let r = BootResult::error(ErrorKind::ArtifactMissing, "kernel /nope: no such file");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], "bootfarm.result/v1");
        assert_eq!(v["result"], "error");
        assert_eq!(v["stage"], "none");
        assert_eq!(v["error"]["kind"], "artifact_missing");
    }

    #[test]
    fn an_issue_from_before_titles_still_reads() {
        let old = r#"{"kind": "warning", "line": 3, "summary": "s", "excerpt": "e",
            "fingerprint": "f", "phase": "boot", "fatal": false}"#;
        let i: Issue = serde_json::from_str(old).unwrap();
        assert_eq!((i.title.as_str(), i.function, i.count), ("", None, 1));
    }

    #[test]
    fn console_info_without_dropped_counts_still_reads() {
        // Documents written before the dropped counts existed.
        let old = r#"{"bytes": 10, "lines": 2, "truncated": false}"#;
        let c: ConsoleInfo = serde_json::from_str(old).unwrap();
        assert_eq!((c.bytes, c.dropped_issues, c.dropped_tests), (10, 0, 0));
    }
}
