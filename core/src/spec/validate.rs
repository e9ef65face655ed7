//! Semantic checks of a BootJob spec, beyond what its types (and the CRD schema) enforce.
//!
//! The HTTP API refuses an invalid job with every error at once (422, each naming its field);
//! the Kubernetes controller puts the same messages on an Error phase and a `Valid=False`
//! condition. Limits are generous for real use and stop abuse (a 1 MB command line, 10,000
//! commands, a week-long timeout).

use super::BootJobSpec;
use crate::result::IssueKind;
use crate::verdict::Expect;

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
pub const MAX_URL_LEN: usize = 8192;
/// QEMU memory sizes from 16 MiB to 1 TiB.
const MIN_MEMORY: u64 = 16 << 20;
const MAX_MEMORY: u64 = 1 << 40;

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

/// All problems with `spec`, or Ok.
pub fn validate(spec: &BootJobSpec) -> Result<(), Vec<FieldError>> {
    let mut errs = Errors::default();
    check_artifact(&mut errs, "spec.kernel", Some(&spec.kernel), true);
    check_artifact(&mut errs, "spec.initrd", spec.initrd.as_ref(), false);
    check_artifact(&mut errs, "spec.rootfs", spec.rootfs.as_ref(), false);
    check_artifact(&mut errs, "spec.modules", spec.modules.as_ref(), false);
    check_artifact(&mut errs, "spec.dtb", spec.dtb.as_ref(), false);

    if let Some(args) = &spec.boot_args {
        if args.len() > MAX_BOOT_ARGS {
            errs.push(
                "spec.bootArgs",
                format!(
                    "{} bytes; the limit is {MAX_BOOT_ARGS} (the kernel's command-line size)",
                    args.len()
                ),
            );
        }
        if args.contains(['\n', '\r', '\0']) {
            errs.push("spec.bootArgs", "must be one line without NUL bytes");
        }
    }
    for (field, value) in [("spec.machine", &spec.machine), ("spec.cpu", &spec.cpu)] {
        if let Some(v) = value {
            if v.is_empty()
                || v.len() > 256
                || !v.chars().all(|c| c.is_ascii_graphic())
                || v.starts_with('-')
            {
                errs.push(field, format!("{v:?} is not a QEMU {} name", &field[5..]));
            }
        }
    }
    if let Some(mem) = &spec.memory {
        match parse_memory(mem) {
            Ok(bytes) if (MIN_MEMORY..=MAX_MEMORY).contains(&bytes) => {}
            Ok(_) => errs.push("spec.memory", format!("{mem:?} is outside 16M..1T")),
            Err(e) => errs.push("spec.memory", e),
        }
    }
    if let Some(smp) = spec.smp {
        if smp == 0 || smp > MAX_SMP {
            errs.push("spec.smp", format!("{smp} is outside 1..={MAX_SMP}"));
        }
    }
    if let Some(accel) = &spec.accel {
        if !matches!(accel.as_str(), "auto" | "kvm" | "tcg") {
            errs.push(
                "spec.accel",
                format!("unknown accelerator {accel:?} (expected auto, kvm or tcg)"),
            );
        }
    }
    if let Some(expect) = &spec.expect {
        if let Err(e) = expect.parse::<Expect>() {
            errs.push("spec.expect", e);
        }
    }
    if let Some(login) = &spec.login {
        let user = login.split(':').next().unwrap_or_default();
        if user.is_empty() || login.len() > 256 || login.contains(['\n', '\r', '\0']) {
            errs.push("spec.login", "expected USER or USER:PASSWORD on one line");
        }
    }
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
        } else if c.contains(['\n', '\r', '\0']) {
            errs.push(
                format!("spec.commands[{i}]"),
                "must be one line (no newline or NUL)",
            );
        }
    }
    check_names(&mut errs, "spec.expectTests", &spec.expect_tests);
    for (field, kinds) in [
        ("spec.failOn", &spec.fail_on),
        ("spec.ignore", &spec.ignore),
    ] {
        if kinds.len() > MAX_LIST_ITEMS {
            errs.push(
                field,
                format!("{} items; the limit is {MAX_LIST_ITEMS}", kinds.len()),
            );
            continue;
        }
        for (i, k) in kinds.iter().enumerate() {
            if let Err(e) = k.parse::<IssueKind>() {
                errs.push(format!("{field}[{i}]"), e);
            }
        }
    }
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
            let field = format!("spec.failurePatterns[{i}]");
            if p.is_empty() || p.len() > MAX_PATTERN_LEN {
                errs.push(field, format!("must be 1..={MAX_PATTERN_LEN} bytes"));
            } else if let Err(e) = regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
                errs.push(
                    field,
                    format!("invalid regular expression: {}", one_line(&e.to_string())),
                );
            }
        }
    }
    if let Some(t) = &spec.timeouts {
        for (field, v) in [
            ("spec.timeouts.boot", t.boot),
            ("spec.timeouts.total", t.total),
        ] {
            if let Some(v) = v {
                if v == 0 || v > MAX_TIMEOUT_SECONDS {
                    errs.push(field, format!("{v} s is outside 1..={MAX_TIMEOUT_SECONDS}"));
                }
            }
        }
        if let (Some(boot), Some(total)) = (t.boot, t.total) {
            if boot > total {
                errs.push(
                    "spec.timeouts.boot",
                    format!("{boot} s exceeds timeouts.total ({total} s)"),
                );
            }
        }
    }
    if let Some(n) = spec.max_attempts {
        if n == 0 || n > MAX_ATTEMPTS_LIMIT {
            errs.push(
                "spec.maxAttempts",
                format!("{n} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
            );
        }
    }
    if let Some(pool) = &spec.pool {
        if !is_dns_label(pool) {
            errs.push(
                "spec.pool",
                format!("{pool:?} is not a valid pool name (lowercase DNS label)"),
            );
        }
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        if ttl > 365 * 24 * 3600 {
            errs.push("spec.ttlSecondsAfterFinished", "at most one year");
        }
    }
    errs.finish()
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
    fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_artifact(errs: &mut Errors, field: &str, a: Option<&super::ArtifactRef>, required: bool) {
    let Some(a) = a else {
        if required {
            errs.push(format!("{field}.url"), "required");
        }
        return;
    };
    let url = a.url.trim();
    if url.is_empty() {
        errs.push(format!("{field}.url"), "required");
    } else if a.url.len() > MAX_URL_LEN || url.contains(['\n', '\r', '\0']) {
        errs.push(format!("{field}.url"), "not a usable URL or path");
    } else if let Some((scheme, _)) = url.split_once("://") {
        if !matches!(scheme, "file" | "http" | "https") {
            errs.push(
                format!("{field}.url"),
                format!("unsupported scheme {scheme:?} (file, http or https)"),
            );
        }
    }
    if let Some(sum) = &a.sha256 {
        if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
            errs.push(format!("{field}.sha256"), "must be 64 hex digits");
        }
    }
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
        if n.is_empty() || n.len() > 512 || n.contains(['\n', '\r', '\0']) {
            errs.push(
                format!("{field}[{i}]"),
                "must be a non-empty one-line name up to 512 bytes",
            );
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// QEMU's `-m` syntax: a number with an optional K/M/G/T suffix (MiB when bare).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a memory size (e.g. 512M, 2G)");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" | "M" | "m" | "MB" | "MiB" => 20,
        "K" | "k" | "KB" | "KiB" => 10,
        "G" | "g" | "GB" | "GiB" => 30,
        "T" | "t" | "TB" | "TiB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
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
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_realistic_spec_is_valid() {
        assert_eq!(validate(&spec()), Ok(()));
        assert_eq!(spec().arch, Arch::X86_64);
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
        s.accel = Some("hvf".into());
        s.expect = Some("prompt".into());
        assert_eq!(fields(&s), ["spec.accel", "spec.expect"]);
    }

    #[test]
    fn memory_syntax_and_range_are_checked() {
        for bad in ["lots", "512X", "-1G", "1P", "4K", ""] {
            let mut s = spec();
            s.memory = Some(bad.into());
            assert_eq!(fields(&s), ["spec.memory"], "{bad}");
        }
        for good in ["256", "512M", "2G", "1024MiB"] {
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
    fn a_megabyte_of_boot_args_is_rejected() {
        let mut s = spec();
        s.boot_args = Some("x".repeat(1 << 20));
        let errs = validate(&s).expect_err("too long");
        assert_eq!(errs[0].field, "spec.bootArgs");
        assert!(errs[0].message.contains("4096"), "{}", errs[0].message);
        s.boot_args = Some("x".repeat(MAX_BOOT_ARGS));
        assert!(validate(&s).is_ok());
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
        ];
        assert_eq!(fields(&s), ["spec.commands[1]", "spec.commands[2]"]);
    }

    #[test]
    fn issue_kinds_and_regexes_are_checked() {
        let mut s = spec();
        s.fail_on = vec!["warning".into(), "warnings".into()];
        s.ignore = vec!["Panic".into()];
        s.failure_patterns = vec!["ok".into(), "(unclosed".into()];
        assert_eq!(
            fields(&s),
            [
                "spec.failOn[1]",
                "spec.ignore[0]",
                "spec.failurePatterns[1]"
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
        s.kernel.sha256 = Some("abc".into());
        s.pool = Some("Bad_Pool".into());
        assert_eq!(
            fields(&s),
            ["spec.kernel.url", "spec.kernel.sha256", "spec.pool"]
        );
    }
}
