//! The command line (a contract: checks outside the repository use it) and its mapping onto
//! `BootRequest`.

use crate::artifacts::FetchPolicy;
use crate::boot::{default_cache_dir, BootRequest, ConsoleOut};
use crate::work::convert::{request_from, RunnerSettings};
use bootfarm_core::cli::{validate_flags, JobArgs};
use bootfarm_core::spec::BootJobSpec;
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

/// `bootfarm-runner boot`: the job (the same flags `bootfarm-operator submit` takes) and where
/// this local boot writes and finds things.
#[derive(Debug, Args)]
pub struct BootArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Write the console here instead of stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub reports: crate::output::ReportArgs,
    /// Also write a shell script that reproduces this boot on a machine without bootfarm: it
    /// fetches each artifact from its source, checks its sha256 and runs the same QEMU command
    /// with the console on stdio.
    #[arg(long, value_name = "FILE")]
    pub reproducer: Option<PathBuf>,
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
    /// Static busybox per guest arch (`DIR/<arch>/busybox`) for a disk root's early initramfs
    /// [default: /usr/lib/bootfarm/guest-tools, /var/cache/bootfarm/guest-tools, $BOOTFARM_CACHE/guest-tools].
    #[arg(long, env = "BOOTFARM_GUEST_TOOLS", value_name = "DIR")]
    pub guest_tools: Option<PathBuf>,
}

/// `64M`, `512K`, `1G`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    bootfarm_core::size::parse_size(s, bootfarm_core::size::Unit::Bytes).map_err(|e| e.to_string())
}

impl BootArgs {
    /// The job these flags describe: the same spec a BootJob carries, so a boot by hand and a
    /// boot in the farm are validated by the same rules.
    pub fn to_spec(&self) -> Result<BootJobSpec, clap::Error> {
        self.job.to_spec()
    }

    /// The request these flags describe, or a usage error naming the flag.
    pub fn to_request(&self) -> Result<BootRequest, String> {
        let spec = self.to_spec().map_err(|e| e.to_string())?;
        let v = validate_flags(&spec)?;
        let settings = RunnerSettings {
            cache_dir: self.cache_dir.clone().or_else(default_cache_dir),
            cache_max: Some(self.cache_max),
            qemu_binary_dir: self.qemu_binary_dir.clone(),
            guest_tools: self.guest_tools.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::AccelRequest;
    use bootfarm_core::result::IssueKind;
    use bootfarm_core::spec::validate::parse_login;
    use bootfarm_core::verdict::Expect;
    use bootfarm_core::Arch;

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
    fn work_takes_the_farms_artifact_rules() {
        let cli = Cli::try_parse_from([
            "bootfarm-runner",
            "work",
            "--server",
            "http://127.0.0.1:8080",
            "--allow-local-artifacts",
            "/srv/kernels",
            "--allow-artifact-net",
            "10.1.0.0/16",
            "--deny-artifact-net",
            "203.0.113.0/24",
        ])
        .unwrap();
        let Command::Work(w) = cli.command else {
            panic!("not work")
        };
        assert_eq!(
            w.artifacts.allow_local_artifacts,
            [PathBuf::from("/srv/kernels")]
        );
        assert_eq!(w.artifacts.allow_artifact_net[0].to_string(), "10.1.0.0/16");
        assert_eq!(
            w.artifacts.deny_artifact_net[0].to_string(),
            "203.0.113.0/24"
        );
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
