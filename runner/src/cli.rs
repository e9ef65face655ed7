//! The command line (a contract: checks outside the repository use it) and its mapping onto
//! `BootRequest`.

use crate::accel::AccelRequest;
use crate::artifacts::FetchPolicy;
use crate::boot::{default_cache_dir, BootRequest, ConsoleOut, Login};
use crate::work::convert::{request_from, RunnerSettings};
use bootfarm_core::console::ClassifierConfig;
use bootfarm_core::result::IssueKind;
use bootfarm_core::spec::validate::{DEFAULT_BOOT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT};
use bootfarm_core::spec::{validate, ArtifactRef, BootJobSpec, Timeouts};
use bootfarm_core::verdict::Expect;
use bootfarm_core::Arch;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bootfarm-runner",
    version,
    about = "Boots one Linux kernel under QEMU and reports a structured verdict"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot one kernel and print its verdict (exit 0 pass, 1 fail, 3 error, 2 usage).
    Boot(Box<BootArgs>),
    /// Classify a saved console log offline.
    Classify(crate::classify::ClassifyArgs),
    /// Serve the farm: take boot jobs from the operator.
    Work(crate::work::WorkArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Guest architecture: x86_64, i386, arm64, armv7, riscv64, ppc64le, s390x.
    #[arg(long)]
    pub arch: Arch,
    /// Kernel image: a path, file:// or http(s):// URL.
    #[arg(long)]
    pub kernel: String,
    #[arg(long, value_name = "HEX")]
    pub kernel_sha256: Option<String>,
    /// Initramfs (cpio, optionally compressed).
    #[arg(long)]
    pub initrd: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub initrd_sha256: Option<String>,
    /// Root filesystem: a `.cpio*` initramfs or a disk image (attached read-only, snapshot=on).
    #[arg(long)]
    pub rootfs: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub rootfs_sha256: Option<String>,
    /// Device tree blob.
    #[arg(long)]
    pub dtb: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub dtb_sha256: Option<String>,
    /// Modules as a `.cpio*` archive, appended to the initramfs.
    #[arg(long)]
    pub modules: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub modules_sha256: Option<String>,
    /// Extra kernel arguments, after `console=<dev>,115200 panic=-1` (so yours win).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub boot_args: String,
    /// Guest memory (QEMU -m syntax); default per architecture (512M, 1G for ppc64le).
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs; default 1.
    #[arg(long)]
    pub smp: Option<u32>,
    /// QEMU machine, overriding the architecture's profile.
    #[arg(long)]
    pub machine: Option<String>,
    /// QEMU CPU model, overriding the architecture's profile.
    #[arg(long)]
    pub cpu: Option<String>,
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    pub accel: AccelRequest,
    /// What counts as a successful boot.
    #[arg(long, default_value = "auto", value_parser = parse_expect)]
    pub expect: Expect,
    /// Total timeout in seconds (artifacts, boot and commands).
    #[arg(long, default_value_t = DEFAULT_TOTAL_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Seconds from the start of the guest until the expected prompt or power-off (at most the
    /// total timeout).
    #[arg(long, default_value_t = DEFAULT_BOOT_TIMEOUT.as_secs())]
    pub boot_timeout: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Write the console here instead of stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Cap of the stored console log (bytes, K/M/G suffixes); head and tail are kept.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub console_limit: u64,
    /// Artifact cache and host KVM verdict [default: $BOOTFARM_CACHE, /var/cache/bootfarm for root, else ~/.cache/bootfarm].
    #[arg(long, env = "BOOTFARM_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// The artifact cache's size budget (bytes, K/M/G suffixes): after the fetches the least
    /// recently used entries go until it fits (never one a boot is using).
    #[arg(long, env = "BOOTFARM_CACHE_MAX", default_value = "3G", value_parser = parse_size)]
    pub cache_max: u64,
    /// Directory holding the qemu-system-* binaries [default: PATH].
    #[arg(long, env = "BOOTFARM_QEMU_DIR")]
    pub qemu_binary_dir: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Log in at a `login:` prompt as USER[:PASSWORD].
    #[arg(long, value_name = "USER[:PASSWORD]", value_parser = parse_login)]
    pub login: Option<Login>,
    /// A shell command to run at the prompt (repeatable; each is a test case).
    #[arg(long = "command", value_name = "CMD")]
    pub commands: Vec<String>,
}

/// What fails a run besides the default policy: the same flags for `boot` and `classify`, so a
/// console is judged alike live and offline.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Issue kinds that fail the run on top of the default policy (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub fail_on: Vec<IssueKind>,
    /// Issue kinds that never fail the run (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub ignore: Vec<IssueKind>,
    /// A regular expression whose matching console lines fail the run (repeatable).
    #[arg(long, value_parser = parse_regex)]
    pub failure_pattern: Vec<regex::Regex>,
    /// Test names that must report a result (comma-separated); missing ones fail.
    #[arg(long, value_delimiter = ',')]
    pub expect_tests: Vec<String>,
}

impl PolicyArgs {
    pub fn classifier_config(&self) -> ClassifierConfig {
        // The struct update keeps this compiling when the classifier grows options.
        #[allow(clippy::needless_update)]
        ClassifierConfig {
            fail_on: self.fail_on.clone(),
            ignore: self.ignore.clone(),
            failure_patterns: self.failure_pattern.clone(),
            expect_tests: self.expect_tests.clone(),
            ..ClassifierConfig::default()
        }
    }
}

fn parse_accel(s: &str) -> Result<AccelRequest, String> {
    s.parse()
}

pub(crate) fn parse_expect(s: &str) -> Result<Expect, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<IssueKind, String> {
    s.parse()
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    bootfarm_core::spec::validate::compile_pattern(s)
}

fn parse_login(s: &str) -> Result<Login, String> {
    bootfarm_core::spec::validate::parse_login(s)
}

/// `64M`, `512K`, `1G`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    bootfarm_core::size::parse_size(s, bootfarm_core::size::Unit::Bytes).map_err(|e| e.to_string())
}

impl BootArgs {
    /// The job these flags describe: the same spec a BootJob carries, so a boot by hand and a
    /// boot in the farm are validated by the same rules.
    pub fn to_spec(&self) -> BootJobSpec {
        let art = |url: &Option<String>, sha: &Option<String>| {
            url.as_ref().map(|u| ArtifactRef {
                url: u.clone(),
                sha256: sha.clone(),
            })
        };
        let mut spec = BootJobSpec::new(self.arch, self.kernel.clone());
        spec.kernel.sha256 = self.kernel_sha256.clone();
        spec.initrd = art(&self.initrd, &self.initrd_sha256);
        spec.rootfs = art(&self.rootfs, &self.rootfs_sha256);
        spec.dtb = art(&self.dtb, &self.dtb_sha256);
        spec.modules = art(&self.modules, &self.modules_sha256);
        spec.boot_args = Some(self.boot_args.clone()).filter(|a| !a.is_empty());
        spec.machine = self.machine.clone();
        spec.cpu = self.cpu.clone();
        spec.memory = self.memory.clone();
        spec.smp = self.smp;
        spec.accel = Some(self.accel.as_str().to_string());
        spec.expect = Some(self.expect.as_str().to_string());
        spec.login = self.login.as_ref().map(|l| match &l.password {
            Some(p) => format!("{}:{p}", l.user),
            None => l.user.clone(),
        });
        spec.commands = self.commands.clone();
        spec.expect_tests = self.policy.expect_tests.clone();
        spec.fail_on = self
            .policy
            .fail_on
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        spec.ignore = self
            .policy
            .ignore
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        spec.failure_patterns = self
            .policy
            .failure_pattern
            .iter()
            .map(|r| r.as_str().to_string())
            .collect();
        spec.timeouts = Some(Timeouts {
            boot: Some(self.boot_timeout.min(self.timeout)),
            total: Some(self.timeout),
        });
        spec
    }

    /// The request these flags describe, or a usage error naming the flag.
    pub fn to_request(&self) -> Result<BootRequest, String> {
        let v = validate(&self.to_spec()).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {}", flag_for(&e.field), e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let settings = RunnerSettings {
            cache_dir: self.cache_dir.clone().or_else(default_cache_dir),
            cache_max: Some(self.cache_max),
            qemu_binary_dir: self.qemu_binary_dir.clone(),
            // A person's own boot: they may read whatever their user can.
            fetch_policy: FetchPolicy::Unrestricted,
            console_limit: self.console_limit,
        };
        let mut req = request_from(&v, &settings);
        req.console_out = match &self.log {
            Some(p) => ConsoleOut::File(p.clone()),
            None => ConsoleOut::Stderr,
        };
        Ok(req)
    }
}

/// The flag behind a spec field, for usage errors.
fn flag_for(field: &str) -> String {
    let name = field
        .trim_start_matches("spec.")
        .split('[')
        .next()
        .unwrap_or(field);
    let flag = match name {
        "kernel.url" => "--kernel",
        "kernel.sha256" => "--kernel-sha256",
        "initrd.url" => "--initrd",
        "initrd.sha256" => "--initrd-sha256",
        "rootfs.url" => "--rootfs",
        "rootfs.sha256" => "--rootfs-sha256",
        "dtb.url" => "--dtb",
        "dtb.sha256" => "--dtb-sha256",
        "modules.url" => "--modules",
        "modules.sha256" => "--modules-sha256",
        "bootArgs" => "--boot-args",
        "timeouts.boot" => "--boot-timeout",
        "timeouts.total" => "--timeout",
        "failOn" => "--fail-on",
        "failurePatterns" => "--failure-pattern",
        "expectTests" => "--expect-tests",
        "commands" => "--command",
        other => return format!("--{}", kebab(other)),
    };
    flag.to_string()
}

fn kebab(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn the_contract_command_line_parses() {
        let cli = Cli::try_parse_from([
            "bootfarm-runner",
            "boot",
            "--arch",
            "arm64",
            "--kernel",
            "file:///k",
            "--initrd",
            "/i.cpio.gz",
            "--boot-args",
            "-- quiet",
            "--memory",
            "1G",
            "--smp",
            "2",
            "--accel",
            "tcg",
            "--expect",
            "shell",
            "--timeout",
            "60",
            "--boot-timeout",
            "30",
            "--output",
            "json",
            "--log",
            "/tmp/x.log",
            "--login",
            "root",
            "--command",
            "uname -a",
            "--command",
            "true",
            "--fail-on",
            "warning,oom",
            "--failure-pattern",
            "^FAIL",
        ])
        .unwrap();
        let Command::Boot(b) = cli.command else {
            panic!("not boot")
        };
        let r = b.to_request().unwrap();
        assert_eq!(r.arch, Arch::Arm64);
        assert_eq!(r.initrd.unwrap().source, "/i.cpio.gz");
        assert_eq!(r.boot_args, "-- quiet");
        assert_eq!(r.accel, AccelRequest::Tcg);
        assert_eq!(r.expect, Expect::Shell);
        assert_eq!(r.boot_timeout, std::time::Duration::from_secs(30));
        assert_eq!(r.commands, ["uname -a", "true"]);
        assert_eq!(r.login.unwrap().password, None);
        assert_eq!(r.classifier.fail_on, [IssueKind::Warning, IssueKind::Oom]);
        assert_eq!(r.console_out, ConsoleOut::File("/tmp/x.log".into()));
        assert_eq!(b.output, Output::Json);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["boot", "--arch", "mips", "--kernel", "k"][..],
            &["boot", "--arch", "x86_64"],
            &[
                "boot", "--arch", "x86_64", "--kernel", "k", "--expect", "magic",
            ],
            &[
                "boot", "--arch", "x86_64", "--kernel", "k", "--accel", "hvf",
            ],
        ] {
            let err =
                Cli::try_parse_from(std::iter::once("bootfarm-runner").chain(bad.iter().copied()))
                    .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn login_splits_user_and_password() {
        let l = parse_login("tester:secret").unwrap();
        assert_eq!(
            (l.user.as_str(), l.password.as_deref()),
            ("tester", Some("secret"))
        );
        assert!(parse_login(":x").is_err());
    }
}
