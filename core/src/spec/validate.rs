//! A BootJob spec checked once, into a typed value: the API, the Kubernetes controller and the
//! runner all consume the [`ValidatedSpec`] this returns, so nothing downstream parses strings
//! again (and the copies cannot disagree).
//!
//! The HTTP API refuses an invalid job with every error at once (422, each naming its field);
//! the Kubernetes controller puts the same messages on an Error phase and a `Valid=False`
//! condition. Limits are generous for real use and stop abuse (a 1 MB command line, 10,000
//! commands, a week-long timeout, a terabyte of guest memory).

use super::location::{Location, LocationError};
use super::qemu_opts::{Cpu, Machine};
use super::{ArtifactRef, BootJobSpec};
use crate::console::session::Login;
use crate::console::ClassifierConfig;
use crate::result::IssueKind;
use crate::size::{parse_size, Unit};
use crate::verdict::Expect;
use crate::Arch;
use std::time::Duration;

/// The kernel's own command-line limit on most arches (COMMAND_LINE_SIZE is 2048–4096).
pub const MAX_BOOT_ARGS: usize = 4096;
pub const MAX_SMP: u32 = 64;
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
/// One day: no boot test needs longer, and a typo (ms for s) should not pin a runner for weeks.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
pub const MAX_COMMANDS: usize = 256;
pub const MAX_COMMAND_LEN: usize = 4096;
pub const MAX_LIST_ITEMS: usize = 1024;
pub const MAX_PATTERN_LEN: usize = 1024;
/// The compiled size of one failure pattern (the regex crate's `size_limit`).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
pub const MAX_URL_LEN: usize = 8192;
pub const MAX_LOGIN_LEN: usize = 256;
pub const MAX_TEST_NAME: usize = 512;
/// Guest memory from 16 MiB to 64 GiB: a boot test needs far less, and more is a typo that would
/// fail (or take the node down) on every runner.
pub const MIN_MEMORY: u64 = 16 << 20;
pub const MAX_MEMORY: u64 = 64 << 30;
/// `timeouts.boot` and `timeouts.total` when absent (the runner CLI's defaults too).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The JSON path of the field, e.g. `spec.timeouts.boot`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The accelerator a job asks for (`spec.accel`, `--accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelMode {
    /// KVM when it provably works here, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl AccelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccelMode::Auto => "auto",
            AccelMode::Kvm => "kvm",
            AccelMode::Tcg => "tcg",
        }
    }
}

impl std::str::FromStr for AccelMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelMode::Auto),
            "kvm" => Ok(AccelMode::Kvm),
            "tcg" => Ok(AccelMode::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?} (expected auto, kvm or tcg)"
            )),
        }
    }
}

/// How the kernel image is handed to QEMU (`spec.kernelBoot`, `--kernel-boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelBoot {
    /// The fastest way QEMU boots the same kernel: a bzImage's ELF extracted on the host and
    /// entered at its PVH entry point (no firmware, no in-guest decompression), else as given.
    #[default]
    Auto,
    /// The image exactly as given: for KASLR-sensitive bugs and for testing the decompressor.
    AsIs,
}

impl KernelBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelBoot::Auto => "auto",
            KernelBoot::AsIs => "as-is",
        }
    }
}

impl std::str::FromStr for KernelBoot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KernelBoot::Auto),
            "as-is" => Ok(KernelBoot::AsIs),
            other => Err(format!(
                "unknown kernel boot mode {other:?} (expected auto or as-is)"
            )),
        }
    }
}

/// An artifact ready to fetch: where from, as given, and the digest it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The source string as the user wrote it (shown in results, never with a password).
    pub source: String,
    pub location: Location,
    /// Lowercase hex SHA-256 of the bytes as fetched (or decompressed).
    pub sha256: Option<String>,
}

impl Artifact {
    /// Parses a source and an optional digest; the error says which is wrong.
    pub fn parse(source: &str, sha256: Option<&str>) -> Result<Artifact, String> {
        if source.len() > MAX_URL_LEN {
            return Err(format!("longer than {MAX_URL_LEN} bytes"));
        }
        let location = Location::parse(source.trim()).map_err(|LocationError(e)| e)?;
        let sha256 = sha256.map(parse_sha256).transpose()?;
        Ok(Artifact {
            source: source.trim().to_string(),
            location,
            sha256,
        })
    }
}

fn parse_sha256(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 must be 64 hex digits".into());
    }
    Ok(s.to_ascii_lowercase())
}

/// Every artifact slot of a spec, in one order (used for policy checks and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Kernel,
    Initrd,
    Rootfs,
    Modules,
    Dtb,
    /// One of `spec.overlays[]` (not in [`Slot::ALL`]: there may be several).
    Overlay,
}

impl Slot {
    pub const ALL: [Slot; 5] = [
        Slot::Kernel,
        Slot::Initrd,
        Slot::Rootfs,
        Slot::Modules,
        Slot::Dtb,
    ];

    /// The name in results (`artifacts.kernel`) and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Kernel => "kernel",
            Slot::Initrd => "initrd",
            Slot::Rootfs => "rootfs",
            Slot::Modules => "modules",
            Slot::Dtb => "dtb",
            Slot::Overlay => "overlay",
        }
    }

    /// The spec field holding its URL.
    pub fn field(self) -> &'static str {
        match self {
            Slot::Kernel => "spec.kernel.url",
            Slot::Initrd => "spec.initrd.url",
            Slot::Rootfs => "spec.rootfs.url",
            Slot::Modules => "spec.modules.url",
            Slot::Dtb => "spec.dtb.url",
            Slot::Overlay => "spec.overlays[].url",
        }
    }
}

/// A spec that passed every check, with every value in its type.
#[derive(Debug, Clone)]
pub struct ValidatedSpec {
    pub arch: Arch,
    pub kernel: Artifact,
    pub initrd: Option<Artifact>,
    pub rootfs: Option<Artifact>,
    pub modules: Option<Artifact>,
    pub overlays: Vec<Overlay>,
    pub dtb: Option<Artifact>,
    /// The user's kernel arguments: one line, no control characters, bounded.
    pub boot_args: String,
    pub machine: Option<Machine>,
    pub cpu: Option<Cpu>,
    /// Guest memory in bytes.
    pub memory: Option<u64>,
    pub smp: Option<u32>,
    pub accel: AccelMode,
    pub kernel_boot: KernelBoot,
    pub expect: Expect,
    pub login: Option<Login>,
    pub commands: Vec<String>,
    /// fail_on, ignore, compiled failure patterns, expected tests.
    pub classifier: ClassifierConfig,
    pub boot_timeout: Duration,
    pub total_timeout: Duration,
    pub priority: i32,
    pub max_attempts: u32,
    pub pool: Option<String>,
    pub ttl_after_finished: Option<Duration>,
}

impl ValidatedSpec {
    /// The artifacts the job names, with their slots.
    pub fn artifacts(&self) -> impl Iterator<Item = (Slot, &Artifact)> {
        Slot::ALL
            .into_iter()
            .filter_map(move |s| {
                match s {
                    Slot::Kernel => Some(&self.kernel),
                    Slot::Initrd => self.initrd.as_ref(),
                    Slot::Rootfs => self.rootfs.as_ref(),
                    Slot::Modules => self.modules.as_ref(),
                    Slot::Dtb => self.dtb.as_ref(),
                    Slot::Overlay => None,
                }
                .map(|a| (s, a))
            })
            .chain(self.overlays.iter().map(|o| (Slot::Overlay, &o.artifact)))
    }
}

/// A validated overlay: its tarball and its directory in the guest.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub artifact: Artifact,
    /// Normalized: `/` or `/a/b`.
    pub path: String,
}

/// Overlays one job may carry.
pub const MAX_OVERLAYS: usize = 16;

/// A directory in the guest, as its components: absolute, no `..`, no control characters.
pub fn parse_guest_dir(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} must be an absolute directory in the guest"
        ));
    }
    if path.len() > 1024 || has_control(path) {
        return Err(format!(
            "{path:?}: at most 1024 bytes, no control characters"
        ));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{path:?} may not contain `..`")),
            c => parts.push(c.to_string()),
        }
    }
    Ok(parts)
}

fn overlays(errs: &mut Errors, given: &[super::OverlayRef]) -> Vec<Overlay> {
    if given.len() > MAX_OVERLAYS {
        errs.push(
            "spec.overlays",
            format!("{} overlays; the limit is {MAX_OVERLAYS}", given.len()),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, o) in given.iter().enumerate() {
        let url_field = format!("spec.overlays[{i}].url");
        if o.url.trim().is_empty() {
            errs.push(url_field, "required");
            continue;
        }
        let artifact = match Artifact::parse(&o.url, o.sha256.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                errs.push(url_field, e);
                continue;
            }
        };
        match parse_guest_dir(o.path.as_deref().unwrap_or("/")) {
            Ok(parts) => out.push(Overlay {
                artifact,
                path: format!("/{}", parts.join("/")),
            }),
            Err(e) => errs.push(format!("spec.overlays[{i}].path"), e),
        }
    }
    out
}

/// A compiled failure pattern, with the one size limit every caller uses.
pub fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    if p.is_empty() || p.len() > MAX_PATTERN_LEN {
        return Err(format!("must be 1..={MAX_PATTERN_LEN} bytes"));
    }
    regex::RegexBuilder::new(p)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression: {}", one_line(&e.to_string())))
}

/// `USER[:PASSWORD]` on one line, the user without whitespace.
pub fn parse_login(s: &str) -> Result<Login, String> {
    if s.len() > MAX_LOGIN_LEN || has_control(s) {
        return Err(format!(
            "expected USER or USER:PASSWORD on one line, at most {MAX_LOGIN_LEN} bytes"
        ));
    }
    s.parse()
}

/// Guest memory in QEMU's `-m` syntax (a bare number is MiB), within the farm's bounds.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s, Unit::Mebibytes)
        .map_err(|_| format!("{s:?} is not a memory size (e.g. 512M, 2G)"))?;
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(format!("{s:?} is outside 16M..64G"));
    }
    Ok(bytes)
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// All problems with `spec`, or the typed spec.
pub fn validate(spec: &BootJobSpec) -> Result<ValidatedSpec, Vec<FieldError>> {
    let mut errs = Errors::default();
    let kernel = artifact(&mut errs, Slot::Kernel, Some(&spec.kernel));
    let initrd = artifact(&mut errs, Slot::Initrd, spec.initrd.as_ref());
    let rootfs = artifact(&mut errs, Slot::Rootfs, spec.rootfs.as_ref());
    let modules = artifact(&mut errs, Slot::Modules, spec.modules.as_ref());
    let overlays = overlays(&mut errs, &spec.overlays);
    let dtb = artifact(&mut errs, Slot::Dtb, spec.dtb.as_ref());

    let boot_args = spec.boot_args.clone().unwrap_or_default();
    if boot_args.len() > MAX_BOOT_ARGS {
        errs.push(
            "spec.bootArgs",
            format!(
                "{} bytes; the limit is {MAX_BOOT_ARGS} (the kernel's command-line size)",
                boot_args.len()
            ),
        );
    } else if has_control(&boot_args) {
        errs.push(
            "spec.bootArgs",
            "must be one line without control characters",
        );
    }
    let machine = spec.machine.as_deref().and_then(|m| {
        Machine::parse(spec.arch, m)
            .map_err(|e| errs.push("spec.machine", e.0))
            .ok()
    });
    let cpu = spec.cpu.as_deref().and_then(|c| {
        Cpu::parse(spec.arch, c)
            .map_err(|e| errs.push("spec.cpu", e.0))
            .ok()
    });
    let memory = spec.memory.as_deref().and_then(|m| {
        parse_memory(m)
            .map_err(|e| errs.push("spec.memory", e))
            .ok()
    });
    if let Some(smp) = spec.smp {
        if smp == 0 || smp > MAX_SMP {
            errs.push("spec.smp", format!("{smp} is outside 1..={MAX_SMP}"));
        }
    }
    let accel = match spec.accel.as_deref() {
        None | Some("") => AccelMode::Auto,
        Some(a) => a.parse().unwrap_or_else(|e| {
            errs.push("spec.accel", e);
            AccelMode::Auto
        }),
    };
    let kernel_boot = match spec.kernel_boot.as_deref() {
        None | Some("") => KernelBoot::Auto,
        Some(k) => k.parse().unwrap_or_else(|e| {
            errs.push("spec.kernelBoot", e);
            KernelBoot::Auto
        }),
    };
    if accel == AccelMode::Tcg && cpu.as_ref().is_some_and(Cpu::needs_kvm) {
        errs.push(
            "spec.cpu",
            "CPU model \"host\" needs KVM; with accel tcg choose a model such as max",
        );
    }
    let expect = match spec.expect.as_deref() {
        None | Some("") => Expect::Auto,
        Some(e) => e.parse().unwrap_or_else(|e| {
            errs.push("spec.expect", e);
            Expect::Auto
        }),
    };
    let login = match spec.login.as_deref() {
        None | Some("") => None,
        Some(l) => parse_login(l).map_err(|e| errs.push("spec.login", e)).ok(),
    };
    if spec.commands.len() > MAX_COMMANDS {
        errs.push(
            "spec.commands",
            format!(
                "{} commands; the limit is {MAX_COMMANDS}",
                spec.commands.len()
            ),
        );
    }
    for (i, c) in spec.commands.iter().enumerate().take(MAX_COMMANDS) {
        if c.len() > MAX_COMMAND_LEN {
            errs.push(
                format!("spec.commands[{i}]"),
                format!("{} bytes; the limit is {MAX_COMMAND_LEN}", c.len()),
            );
        } else if c.chars().any(|ch| ch.is_control() && ch != '\t') {
            errs.push(
                format!("spec.commands[{i}]"),
                "must be one line without control characters",
            );
        }
    }
    check_names(&mut errs, "spec.expectTests", &spec.expect_tests);
    let fail_on = kinds(&mut errs, "spec.failOn", &spec.fail_on);
    let ignore = kinds(&mut errs, "spec.ignore", &spec.ignore);
    let mut failure_patterns = Vec::new();
    if spec.failure_patterns.len() > MAX_LIST_ITEMS {
        errs.push(
            "spec.failurePatterns",
            format!(
                "{} patterns; the limit is {MAX_LIST_ITEMS}",
                spec.failure_patterns.len()
            ),
        );
    } else {
        for (i, p) in spec.failure_patterns.iter().enumerate() {
            match compile_pattern(p) {
                Ok(re) => failure_patterns.push(re),
                Err(e) => errs.push(format!("spec.failurePatterns[{i}]"), e),
            }
        }
    }
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    for (field, v) in [
        ("spec.timeouts.boot", timeouts.boot),
        ("spec.timeouts.total", timeouts.total),
    ] {
        if let Some(v) = v {
            if v == 0 || v > MAX_TIMEOUT_SECONDS {
                errs.push(field, format!("{v} s is outside 1..={MAX_TIMEOUT_SECONDS}"));
            }
        }
    }
    if let (Some(boot), Some(total)) = (timeouts.boot, timeouts.total) {
        if boot > total {
            errs.push(
                "spec.timeouts.boot",
                format!("{boot} s exceeds timeouts.total ({total} s)"),
            );
        }
    }
    let total_timeout = timeouts
        .total
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOTAL_TIMEOUT);
    // A total shorter than the default boot timeout bounds the boot too.
    let boot_timeout = timeouts
        .boot
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT)
        .min(total_timeout);
    let max_attempts = spec.max_attempts.unwrap_or(super::DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 || max_attempts > MAX_ATTEMPTS_LIMIT {
        errs.push(
            "spec.maxAttempts",
            format!("{max_attempts} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
        );
    }
    if let Some(pool) = &spec.pool {
        if !crate::names::is_dns_label(pool) {
            errs.push(
                "spec.pool",
                format!("{pool:?} is not a valid pool name (lowercase DNS label)"),
            );
        }
    }
    if let Some(cb) = &spec.callback {
        if let Err((field, message)) = crate::callback::check(cb) {
            errs.push(format!("spec.callback.{field}"), message);
        }
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        if ttl > 365 * 24 * 3600 {
            errs.push("spec.ttlSecondsAfterFinished", "at most one year");
        }
    }
    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    // Every `None` here was pushed as an error above.
    let Some(kernel) = kernel.flatten() else {
        return Err(vec![FieldError {
            field: "spec.kernel.url".into(),
            message: "required".into(),
        }]);
    };
    Ok(ValidatedSpec {
        arch: spec.arch,
        kernel,
        initrd: initrd.flatten(),
        rootfs: rootfs.flatten(),
        modules: modules.flatten(),
        overlays,
        dtb: dtb.flatten(),
        boot_args,
        machine,
        cpu,
        memory,
        smp: spec.smp,
        accel,
        kernel_boot,
        expect,
        login,
        commands: spec.commands.clone(),
        classifier: ClassifierConfig {
            fail_on,
            ignore,
            failure_patterns,
            expect_tests: spec.expect_tests.clone(),
        },
        boot_timeout,
        total_timeout,
        priority: spec.priority,
        max_attempts,
        pool: spec.pool.clone(),
        ttl_after_finished: spec.ttl_seconds_after_finished.map(Duration::from_secs),
    })
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Some(None)` when absent and optional; `None` when an error was pushed.
fn artifact(errs: &mut Errors, slot: Slot, a: Option<&ArtifactRef>) -> Option<Option<Artifact>> {
    let field = slot.field();
    let Some(a) = a else {
        if slot == Slot::Kernel {
            errs.push(field, "required");
            return None;
        }
        return Some(None);
    };
    if a.url.trim().is_empty() {
        errs.push(field, "required");
        return None;
    }
    let location = match Artifact::parse(&a.url, None) {
        Ok(art) => art,
        Err(e) => {
            errs.push(field, e);
            return None;
        }
    };
    let sha256 = match a.sha256.as_deref().map(parse_sha256).transpose() {
        Ok(s) => s,
        Err(e) => {
            errs.push(field.replace(".url", ".sha256"), e);
            return None;
        }
    };
    Some(Some(Artifact { sha256, ..location }))
}

fn kinds(errs: &mut Errors, field: &str, names: &[String]) -> Vec<IssueKind> {
    if names.len() > MAX_LIST_ITEMS {
        errs.push(
            field,
            format!("{} items; the limit is {MAX_LIST_ITEMS}", names.len()),
        );
        return Vec::new();
    }
    names
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            k.parse::<IssueKind>()
                .map_err(|e| errs.push(format!("{field}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn check_names(errs: &mut Errors, field: &str, names: &[String]) {
    if names.len() > MAX_LIST_ITEMS {
        errs.push(
            field,
            format!("{} items; the limit is {MAX_LIST_ITEMS}", names.len()),
        );
        return;
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || n.len() > MAX_TEST_NAME || has_control(n) {
            errs.push(
                format!("{field}[{i}]"),
                format!("must be a non-empty one-line name up to {MAX_TEST_NAME} bytes"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ArtifactRef, Timeouts};
    use crate::Arch;

    fn spec() -> BootJobSpec {
        serde_json::from_value(serde_json::json!({
            "arch": "x86_64",
            "kernel": {"url": "file:///k"},
            "initrd": {"url": "https://example.invalid/i.cpio.gz"},
            "bootArgs": "console=ttyS0 panic=-1",
            "memory": "512M", "smp": 2, "accel": "tcg", "expect": "poweroff",
            "failOn": ["warning"], "ignore": ["oom"], "failurePatterns": ["^selftest: FAIL"],
            "timeouts": {"boot": 60, "total": 120}, "maxAttempts": 3
        }))
        .expect("a valid document")
    }

    fn fields(spec: &BootJobSpec) -> Vec<String> {
        match validate(spec) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_realistic_spec_is_valid_and_typed() {
        let v = validate(&spec()).unwrap();
        assert_eq!(v.arch, Arch::X86_64);
        assert_eq!(v.memory, Some(512 << 20));
        assert_eq!(v.accel, AccelMode::Tcg);
        assert_eq!(v.expect, Expect::Poweroff);
        assert_eq!(v.boot_timeout, Duration::from_secs(60));
        assert_eq!(v.total_timeout, Duration::from_secs(120));
        assert_eq!(v.classifier.fail_on, [IssueKind::Warning]);
        assert_eq!(v.classifier.failure_patterns[0].as_str(), "^selftest: FAIL");
        assert_eq!(v.kernel.location, Location::Local("/k".into()));
        assert!(matches!(
            v.initrd.as_ref().map(|a| &a.location),
            Some(Location::Http(_))
        ));
        assert_eq!(v.max_attempts, 3);
    }

    #[test]
    fn overlays_need_a_source_and_an_absolute_directory_that_never_climbs() {
        let mut s = spec();
        s.overlays = vec![
            crate::spec::OverlayRef {
                url: "https://example.invalid/ltp.tar.xz".into(),
                sha256: None,
                path: Some("/opt//ltp/".into()),
            },
            crate::spec::OverlayRef {
                url: "/srv/o.tar.gz".into(),
                sha256: Some("ab".repeat(32)),
                path: None,
            },
        ];
        let v = validate(&s).unwrap();
        assert_eq!(v.overlays.len(), 2);
        assert_eq!(v.overlays[0].path, "/opt/ltp");
        assert_eq!(v.overlays[1].path, "/");
        // Every overlay is an artifact the farm's policy checks.
        let slots: Vec<Slot> = v.artifacts().map(|(s, _)| s).collect();
        assert_eq!(slots.iter().filter(|s| **s == Slot::Overlay).count(), 2);
        s.overlays[0].path = Some("opt".into());
        s.overlays[1].path = Some("/opt/../etc".into());
        s.overlays.push(crate::spec::OverlayRef {
            url: " ".into(),
            sha256: None,
            path: None,
        });
        assert_eq!(
            fields(&s),
            [
                "spec.overlays[0].path",
                "spec.overlays[1].path",
                "spec.overlays[2].url"
            ]
        );
        s.overlays = vec![s.overlays[0].clone(); MAX_OVERLAYS + 1];
        assert_eq!(fields(&s), ["spec.overlays"]);
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let v = validate(&BootJobSpec::new(Arch::Arm64, "https://x.example/Image")).unwrap();
        assert_eq!(v.accel, AccelMode::Auto);
        assert_eq!(v.expect, Expect::Auto);
        assert_eq!(v.boot_timeout, DEFAULT_BOOT_TIMEOUT);
        assert_eq!(v.total_timeout, DEFAULT_TOTAL_TIMEOUT);
        assert_eq!(v.max_attempts, crate::spec::DEFAULT_MAX_ATTEMPTS);
        let mut s = BootJobSpec::new(Arch::Arm64, "https://x.example/Image");
        s.timeouts = Some(Timeouts {
            boot: None,
            total: Some(60),
        });
        assert_eq!(
            validate(&s).unwrap().boot_timeout,
            Duration::from_secs(60),
            "a short total bounds the default boot timeout"
        );
    }

    #[test]
    fn a_missing_kernel_url_is_named() {
        let mut s = spec();
        s.kernel = ArtifactRef::default();
        assert_eq!(fields(&s), ["spec.kernel.url"]);
    }

    #[test]
    fn unknown_accel_and_expect_are_rejected() {
        let mut s = spec();
        s.kernel_boot = Some("as-is".into());
        assert_eq!(validate(&s).unwrap().kernel_boot, KernelBoot::AsIs);
        s.kernel_boot = Some("pvh".into());
        assert_eq!(fields(&s), ["spec.kernelBoot"]);
        s.kernel_boot = None;
        s.accel = Some("hvf".into());
        s.expect = Some("prompt".into());
        assert_eq!(fields(&s), ["spec.accel", "spec.expect"]);
    }

    #[test]
    fn memory_syntax_and_range_are_checked() {
        for bad in [
            "lots",
            "512X",
            "-1G",
            "1P",
            "4K",
            "",
            "1T",
            "65G",
            "99999999999999999999G",
        ] {
            let mut s = spec();
            s.memory = Some(bad.into());
            assert_eq!(fields(&s), ["spec.memory"], "{bad}");
        }
        for good in ["256", "512M", "2G", "1024MiB", "64G"] {
            let mut s = spec();
            s.memory = Some(good.into());
            assert_eq!(fields(&s), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn smp_must_be_between_1_and_64() {
        for (n, ok) in [(0, false), (1, true), (64, true), (65, false)] {
            let mut s = spec();
            s.smp = Some(n);
            assert_eq!(validate(&s).is_ok(), ok, "smp {n}");
        }
    }

    #[test]
    fn zero_and_absurd_timeouts_are_rejected() {
        let mut s = spec();
        s.timeouts = Some(Timeouts {
            boot: Some(0),
            total: Some(30 * 24 * 3600),
        });
        assert_eq!(fields(&s), ["spec.timeouts.boot", "spec.timeouts.total"]);
        s.timeouts = Some(Timeouts {
            boot: Some(100),
            total: Some(50),
        });
        assert_eq!(fields(&s), ["spec.timeouts.boot"]);
    }

    #[test]
    fn boot_args_are_bounded_and_free_of_control_characters() {
        let mut s = spec();
        s.boot_args = Some("x".repeat(1 << 20));
        let errs = validate(&s).expect_err("too long");
        assert_eq!(errs[0].field, "spec.bootArgs");
        assert!(errs[0].message.contains("4096"), "{}", errs[0].message);
        s.boot_args = Some("x".repeat(MAX_BOOT_ARGS));
        assert!(validate(&s).is_ok());
        for bad in ["a\nb", "a\rb", "a\0b", "a\x1b[2Jb", "a\u{7f}b", "a\u{85}b"] {
            s.boot_args = Some(bad.into());
            assert_eq!(fields(&s), ["spec.bootArgs"], "{bad:?}");
        }
    }

    #[test]
    fn too_many_or_huge_commands_are_rejected() {
        let mut s = spec();
        s.commands = vec!["true".into(); MAX_COMMANDS + 1];
        assert_eq!(fields(&s), ["spec.commands"]);
        s.commands = vec![
            "uname -a".into(),
            "y".repeat(MAX_COMMAND_LEN + 1),
            "a\nb".into(),
            "printf 'a\tb'".into(),
        ];
        assert_eq!(fields(&s), ["spec.commands[1]", "spec.commands[2]"]);
    }

    #[test]
    fn issue_kinds_and_regexes_are_checked() {
        let mut s = spec();
        s.fail_on = vec!["warning".into(), "warnings".into()];
        s.ignore = vec!["Panic".into()];
        s.failure_patterns = vec!["ok".into(), "(unclosed".into(), "a{1000}{1000}".into()];
        assert_eq!(
            fields(&s),
            [
                "spec.failOn[1]",
                "spec.ignore[0]",
                "spec.failurePatterns[1]",
                "spec.failurePatterns[2]"
            ]
        );
    }

    #[test]
    fn max_attempts_must_be_between_1_and_10() {
        for (n, ok) in [(0, false), (1, true), (10, true), (11, false)] {
            let mut s = spec();
            s.max_attempts = Some(n);
            assert_eq!(validate(&s).is_ok(), ok, "maxAttempts {n}");
        }
    }

    #[test]
    fn artifact_schemes_checksums_and_pool_names_are_checked() {
        let mut s = spec();
        s.kernel.url = "ftp://host/k".into();
        s.initrd = Some(ArtifactRef {
            url: "https://x.example/i".into(),
            sha256: Some("abc".into()),
        });
        s.pool = Some("Bad_Pool".into());
        assert_eq!(
            fields(&s),
            ["spec.kernel.url", "spec.initrd.sha256", "spec.pool"]
        );
    }

    #[test]
    fn machine_and_cpu_follow_the_strict_grammar() {
        let mut s = spec();
        s.machine = Some("q35,dumpdtb=/etc/x".into());
        s.cpu = Some("Nehalem,model-id=x".into());
        assert_eq!(fields(&s), ["spec.machine", "spec.cpu"]);
        s.machine = Some("q35,acpi=off".into());
        s.cpu = Some("Nehalem,+avx".into());
        let v = validate(&s).unwrap();
        assert_eq!(v.machine.unwrap().to_arg(), "q35,acpi=off");
        assert_eq!(v.cpu.unwrap().to_arg(Arch::X86_64), "Nehalem,+avx");
    }

    #[test]
    fn cpu_host_under_tcg_is_invalid() {
        let mut s = spec();
        s.cpu = Some("host".into());
        assert_eq!(fields(&s), ["spec.cpu"]);
        s.accel = Some("kvm".into());
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn logins_are_one_line_users() {
        let mut s = spec();
        for (l, ok) in [
            ("root", true),
            ("tester:secret", true),
            (":x", false),
            ("a b", false),
            ("root\n", false),
        ] {
            s.login = Some(l.into());
            assert_eq!(validate(&s).is_ok(), ok, "{l:?}");
        }
    }
}
