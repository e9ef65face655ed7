//! The command-line flags that describe a boot job, shared by `bootfarm-runner boot` and
//! `bootfarm-operator submit` (feature `cli`), so moving from a local boot to the farm means
//! changing only the command. The flags map onto the one spec type, [`BootJobSpec`], through
//! one pure [`JobArgs::to_spec`]; the same rules then validate both.
//!
//! Also here: the policy flags `classify` shares with `boot`, and the farm's artifact rules that
//! the operator and `bootfarm-runner work` both take.

use crate::console::session::Login;
use crate::console::ClassifierConfig;
use crate::netpolicy::NetPolicy;
use crate::result::IssueKind;
use crate::spec::validate::{
    compile_pattern, parse_login, DEFAULT_BOOT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT,
};
use crate::spec::{
    validate, AccelMode, ArtifactRef, BootJobSpec, KernelBoot, OverlayRef, Timeouts, ValidatedSpec,
};
use crate::verdict::Expect;
use crate::Arch;
use clap::Args;
use std::path::PathBuf;

/// What to boot and how to judge it: every flag of a boot that describes the job (not where
/// its output goes, nor the host it runs on).
///
/// As declared, the flags are those of a local boot: `--arch` and `--kernel` required, the
/// accelerator, expectation and timeouts defaulted. A command that wants otherwise adjusts them
/// with `mut_arg` (`submit` leaves unset what was not given, so the farm's defaults apply); the
/// fields are `Option`s for that, and [`JobArgs::to_spec`] refuses a job without arch or kernel.
#[derive(Debug, Clone, Default, Args)]
pub struct JobArgs {
    /// Guest architecture: x86_64, i386, arm64, armv7, riscv64, ppc64le, s390x.
    #[arg(long, required = true)]
    pub arch: Option<Arch>,
    /// Kernel image: a path, file:// or http(s):// URL (in the farm, as the runner sees it).
    #[arg(long, required = true)]
    pub kernel: Option<String>,
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
    /// Modules: a `.cpio*` archive, or a tarball as TuxMake writes it (`modules.tar.{gz,xz,zst}`,
    /// `lib/modules/<version>/…`) repacked into one; appended to the initramfs.
    #[arg(long)]
    pub modules: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub modules_sha256: Option<String>,
    /// A tarball extracted into the guest's root filesystem at PATH (default `/`), as TuxRun's
    /// `--overlay`; repeatable, later ones win. Repacked into the initramfs.
    #[arg(long = "overlay", value_name = "SRC[:PATH]")]
    pub overlays: Vec<String>,
    /// Extra kernel arguments, after `console=<dev>,115200 panic=-1` (so yours win).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub boot_args: Option<String>,
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
    /// Accelerator: auto (KVM when it works on the host, else TCG), kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    pub accel: Option<AccelMode>,
    /// How the kernel is booted: auto (a bzImage's ELF, extracted on the host and cached, is
    /// entered at its PVH entry point: no firmware, no in-guest decompression, but no KASLR;
    /// else the image as given) or as-is (exactly the image given).
    #[arg(long, default_value = "auto", value_parser = parse_kernel_boot)]
    pub kernel_boot: Option<KernelBoot>,
    /// What counts as a successful boot.
    #[arg(long, default_value = "auto", value_parser = parse_expect)]
    pub expect: Option<Expect>,
    /// Total timeout in seconds (artifacts, boot and commands).
    #[arg(long, default_value = DEFAULT_TOTAL_TIMEOUT.as_secs().to_string())]
    pub timeout: Option<u64>,
    /// Seconds from the start of the guest until the expected prompt or power-off (at most the
    /// total timeout).
    #[arg(long, default_value = DEFAULT_BOOT_TIMEOUT.as_secs().to_string())]
    pub boot_timeout: Option<u64>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Log in at a `login:` prompt as USER[:PASSWORD].
    #[arg(long, value_name = "USER[:PASSWORD]", value_parser = parse_login)]
    pub login: Option<Login>,
    /// A shell command to run at the prompt (repeatable; each is a test case).
    #[arg(long = "command", value_name = "CMD")]
    pub commands: Vec<String>,
}

/// What fails a run besides the default policy: the same flags for `boot`, `submit` and
/// `classify`, so a console is judged alike live, in the farm and offline.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Issue kinds that fail the run on top of the default policy (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub fail_on: Vec<IssueKind>,
    /// Issue kinds that never fail the run (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub ignore: Vec<IssueKind>,
    /// A regular expression whose matching console lines fail the run (repeatable).
    #[arg(long, value_parser = compile_pattern)]
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

fn parse_accel(s: &str) -> Result<AccelMode, String> {
    s.parse()
}

fn parse_kernel_boot(s: &str) -> Result<KernelBoot, String> {
    s.parse()
}

/// `--expect` (also `classify --expect`).
pub fn parse_expect(s: &str) -> Result<Expect, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<IssueKind, String> {
    s.parse()
}

/// A job without `--arch` or `--kernel`: clap's own usage error (exit status 2), for a command
/// whose parser could not require them.
fn missing_flags(missing: &[&str]) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::MissingRequiredArgument,
        format!(
            "the following required arguments were not provided: {}\n",
            missing.join(" ")
        ),
    )
}

impl JobArgs {
    /// The ids of every flag here, for a command to conflict with (clap's own group of a
    /// struct stays empty when the struct flattens another).
    pub fn ids() -> Vec<clap::Id> {
        <JobArgs as Args>::augment_args(clap::Command::new("job"))
            .get_arguments()
            .map(|a| a.get_id().clone())
            .collect()
    }

    /// The job these flags describe: the spec a BootJob carries. A flag not given leaves its
    /// field unset. Pure.
    pub fn to_spec(&self) -> Result<BootJobSpec, clap::Error> {
        let (arch, kernel) = match (self.arch, &self.kernel) {
            (Some(arch), Some(kernel)) => (arch, kernel),
            (arch, kernel) => {
                let missing: Vec<&str> = [
                    arch.is_none().then_some("--arch <ARCH>"),
                    kernel.is_none().then_some("--kernel <KERNEL>"),
                ]
                .into_iter()
                .flatten()
                .collect();
                return Err(missing_flags(&missing));
            }
        };
        let art = |url: &Option<String>, sha: &Option<String>| {
            url.as_ref().map(|u| ArtifactRef {
                url: u.clone(),
                sha256: sha.clone(),
            })
        };
        let mut spec = BootJobSpec::new(arch, kernel.clone());
        spec.kernel.sha256 = self.kernel_sha256.clone();
        spec.initrd = art(&self.initrd, &self.initrd_sha256);
        spec.rootfs = art(&self.rootfs, &self.rootfs_sha256);
        spec.dtb = art(&self.dtb, &self.dtb_sha256);
        spec.modules = art(&self.modules, &self.modules_sha256);
        spec.overlays = self
            .overlays
            .iter()
            .map(|o| {
                let (url, path) = split_overlay(o);
                OverlayRef {
                    url: url.to_string(),
                    sha256: None,
                    path: path.map(str::to_string),
                }
            })
            .collect();
        spec.boot_args = self.boot_args.clone().filter(|a| !a.is_empty());
        spec.machine = self.machine.clone();
        spec.cpu = self.cpu.clone();
        spec.memory = self.memory.clone();
        spec.smp = self.smp;
        spec.accel = self.accel.map(|a| a.as_str().to_string());
        spec.kernel_boot = self.kernel_boot.map(|k| k.as_str().to_string());
        spec.expect = self.expect.map(|e| e.as_str().to_string());
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
        // The boot timeout is at most the total, as `--help` promises: a longer one is cut
        // rather than refused.
        let boot = match (self.boot_timeout, self.timeout) {
            (Some(boot), Some(total)) => Some(boot.min(total)),
            (boot, _) => boot,
        };
        if boot.is_some() || self.timeout.is_some() {
            spec.timeouts = Some(Timeouts {
                boot,
                total: self.timeout,
            });
        }
        Ok(spec)
    }
}

/// `SRC[:PATH]`: the last `:` starts PATH when what follows is an absolute path and what comes
/// before is more than a URL scheme (`https://host/o.tar.gz` has no PATH).
pub fn split_overlay(s: &str) -> (&str, Option<&str>) {
    if let Some((src, path)) = s.rsplit_once(':') {
        let scheme_only = !src.is_empty() && src.chars().all(|c| c.is_ascii_alphanumeric());
        if path.starts_with('/') && !path.starts_with("//") && !src.is_empty() && !scheme_only {
            return (src, Some(path));
        }
    }
    (s, None)
}

/// Validates a spec built from flags; a problem is a usage error that names the flag.
pub fn validate_flags(spec: &BootJobSpec) -> Result<ValidatedSpec, String> {
    validate(spec).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {}", flag_for(&e.field), e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The flag behind a spec field, for usage errors.
pub fn flag_for(field: &str) -> String {
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
        "overlays" => "--overlay",
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

/// The farm's artifact rules: on the command line of `bootfarm-operator standalone` and `run`,
/// and of `bootfarm-runner work` (local runners get them as flags, runner pods as environment
/// variables, see [`ArtifactAccessArgs::runner_env`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ArtifactAccessArgs {
    /// A directory local artifacts (paths, file:// URLs) may come from; repeatable. Symlinks are
    /// resolved before the check. Without one, jobs may name only http(s) artifacts.
    #[arg(
        long = "allow-local-artifacts",
        env = "BOOTFARM_ALLOW_LOCAL_ARTIFACTS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub allow_local_artifacts: Vec<PathBuf>,
    /// An internal address range (loopback, private, link-local...) runners may download
    /// artifacts from, e.g. an on-premises mirror; repeatable.
    #[arg(
        long = "allow-artifact-net",
        env = "BOOTFARM_ALLOW_ARTIFACT_NET",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub allow_artifact_net: Vec<ipnet::IpNet>,
    /// A further range runners never download from (the cluster's service and pod ranges when
    /// they are public addresses); repeatable.
    #[arg(
        long = "deny-artifact-net",
        env = "BOOTFARM_DENY_ARTIFACT_NET",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub deny_artifact_net: Vec<ipnet::IpNet>,
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    crate::netpolicy::parse_cidr(s).map_err(|e| e.to_string())
}

impl ArtifactAccessArgs {
    /// The address ranges downloads may and may not reach.
    pub fn net_policy(&self) -> NetPolicy {
        NetPolicy::new(
            self.allow_artifact_net.clone(),
            self.deny_artifact_net.clone(),
        )
    }

    /// The same rules as environment variables for `bootfarm-runner work` (empty ones omitted).
    pub fn runner_env(&self) -> Vec<(String, String)> {
        let join = |items: Vec<String>| items.join(",");
        [
            (
                "BOOTFARM_ALLOW_LOCAL_ARTIFACTS",
                join(
                    self.allow_local_artifacts
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                ),
            ),
            (
                "BOOTFARM_ALLOW_ARTIFACT_NET",
                join(
                    self.allow_artifact_net
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                ),
            ),
            (
                "BOOTFARM_DENY_ARTIFACT_NET",
                join(
                    self.deny_artifact_net
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                ),
            ),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Boot {
        #[command(flatten)]
        job: JobArgs,
    }

    #[derive(Debug, Parser)]
    struct Access {
        #[command(flatten)]
        access: ArtifactAccessArgs,
    }

    fn boot(args: &[&str]) -> Result<JobArgs, clap::Error> {
        Boot::try_parse_from(std::iter::once("boot").chain(args.iter().copied())).map(|b| b.job)
    }

    #[test]
    fn an_overlay_path_follows_the_last_colon_unless_it_is_the_urls_own() {
        assert_eq!(split_overlay("/o.tar:/opt/x"), ("/o.tar", Some("/opt/x")));
        assert_eq!(
            split_overlay("https://h/o.tar.gz:/"),
            ("https://h/o.tar.gz", Some("/"))
        );
        assert_eq!(
            split_overlay("https://h/o.tar.gz"),
            ("https://h/o.tar.gz", None)
        );
        assert_eq!(split_overlay("file:///o.tar"), ("file:///o.tar", None));
        assert_eq!(split_overlay("/o.tar"), ("/o.tar", None));
        assert_eq!(split_overlay("/o.tar:rel"), ("/o.tar:rel", None));
    }

    #[test]
    fn every_flag_lands_in_its_spec_field() {
        let job = boot(&[
            "--arch",
            "arm64",
            "--kernel",
            "file:///k",
            "--kernel-sha256",
            "aa",
            "--initrd",
            "/i",
            "--initrd-sha256",
            "bb",
            "--rootfs",
            "/r.img",
            "--rootfs-sha256",
            "cc",
            "--dtb",
            "/d.dtb",
            "--dtb-sha256",
            "dd",
            "--modules",
            "/m.cpio",
            "--modules-sha256",
            "ee",
            "--overlay",
            "https://example.org/ltp.tar.xz:/opt/ltp",
            "--overlay",
            "/srv/o.tar.gz",
            "--boot-args",
            "-- quiet",
            "--memory",
            "1G",
            "--smp",
            "2",
            "--machine",
            "virt",
            "--cpu",
            "max",
            "--accel",
            "tcg",
            "--kernel-boot",
            "as-is",
            "--expect",
            "shell",
            "--timeout",
            "60",
            "--boot-timeout",
            "30",
            "--fail-on",
            "warning,oom",
            "--ignore",
            "bug",
            "--failure-pattern",
            "^FAIL",
            "--expect-tests",
            "a,b",
            "--login",
            "root:pw",
            "--command",
            "uname -a",
            "--command",
            "true",
        ])
        .unwrap();
        let spec = job.to_spec().unwrap();
        let want = serde_json::json!({
            "arch": "arm64",
            "kernel": {"url": "file:///k", "sha256": "aa"},
            "initrd": {"url": "/i", "sha256": "bb"},
            "rootfs": {"url": "/r.img", "sha256": "cc"},
            "dtb": {"url": "/d.dtb", "sha256": "dd"},
            "modules": {"url": "/m.cpio", "sha256": "ee"},
            "overlays": [{"url": "https://example.org/ltp.tar.xz", "path": "/opt/ltp"}, {"url": "/srv/o.tar.gz"}],
            "bootArgs": "-- quiet", "memory": "1G", "smp": 2, "machine": "virt", "cpu": "max",
            "accel": "tcg", "kernelBoot": "as-is", "expect": "shell", "login": "root:pw",
            "commands": ["uname -a", "true"], "expectTests": ["a", "b"],
            "failOn": ["warning", "oom"], "ignore": ["bug"], "failurePatterns": ["^FAIL"],
            "timeouts": {"boot": 30, "total": 60}, "priority": 0,
        });
        assert_eq!(serde_json::to_value(&spec).unwrap(), want);
    }

    #[test]
    fn a_local_boot_has_its_defaults_spelled_out() {
        let spec = boot(&["--arch", "x86_64", "--kernel", "k"])
            .unwrap()
            .to_spec()
            .unwrap();
        assert_eq!(spec.accel.as_deref(), Some("auto"));
        assert_eq!(spec.kernel_boot.as_deref(), Some("auto"));
        assert_eq!(spec.expect.as_deref(), Some("auto"));
        assert_eq!(spec.boot_args, None);
        assert_eq!(
            spec.timeouts,
            Some(Timeouts {
                boot: Some(DEFAULT_BOOT_TIMEOUT.as_secs()),
                total: Some(DEFAULT_TOTAL_TIMEOUT.as_secs()),
            })
        );
        // A total below the default boot timeout bounds the boot, as it always has.
        let short = boot(&["--arch", "x86_64", "--kernel", "k", "--timeout", "60"])
            .unwrap()
            .to_spec()
            .unwrap();
        assert_eq!(short.timeouts.and_then(|t| t.boot), Some(60));
    }

    #[test]
    fn arch_and_kernel_are_required_by_the_parser_and_by_to_spec() {
        for argv in [&["--arch", "x86_64"][..], &["--kernel", "k"], &[]] {
            let err = boot(argv).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
        let unset = JobArgs {
            kernel: Some("k".into()),
            ..JobArgs::default()
        };
        let err = unset.to_spec().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--arch"), "{err}");
        assert!(!err.to_string().contains("--kernel"), "{err}");
    }

    #[test]
    fn unset_flags_leave_unset_fields() {
        let job = JobArgs {
            arch: Some(Arch::X86_64),
            kernel: Some("k".into()),
            ..JobArgs::default()
        };
        assert_eq!(job.to_spec().unwrap(), BootJobSpec::new(Arch::X86_64, "k"));
        let only_boot = JobArgs {
            boot_timeout: Some(30),
            ..job
        };
        assert_eq!(
            only_boot.to_spec().unwrap().timeouts,
            Some(Timeouts {
                boot: Some(30),
                total: None
            })
        );
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let job = boot(&["--arch", "x86_64", "--kernel", "k", "--smp", "1000"]).unwrap();
        let err = validate_flags(&job.to_spec().unwrap()).unwrap_err();
        assert!(err.starts_with("--smp: "), "{err}");
        assert_eq!(flag_for("spec.timeouts.boot"), "--boot-timeout");
        assert_eq!(flag_for("spec.commands[3]"), "--command");
        assert_eq!(flag_for("spec.maxAttempts"), "--max-attempts");
    }

    #[test]
    fn artifact_rules_parse_and_travel_as_environment() {
        let a = Access::try_parse_from([
            "x",
            "--allow-local-artifacts",
            "/srv/a,/srv/b",
            "--allow-artifact-net",
            "10.0.0.0/8",
            "--deny-artifact-net",
            "203.0.113.0/24",
        ])
        .unwrap()
        .access;
        assert_eq!(a.allow_local_artifacts.len(), 2);
        assert_eq!(
            a.runner_env(),
            [
                (
                    "BOOTFARM_ALLOW_LOCAL_ARTIFACTS".into(),
                    "/srv/a,/srv/b".into()
                ),
                ("BOOTFARM_ALLOW_ARTIFACT_NET".into(), "10.0.0.0/8".into()),
                ("BOOTFARM_DENY_ARTIFACT_NET".into(), "203.0.113.0/24".into()),
            ]
        );
        assert_eq!(a.net_policy().allowed().len(), 1);
        assert!(ArtifactAccessArgs::default().runner_env().is_empty());
        assert!(Access::try_parse_from(["x", "--allow-artifact-net", "nonsense"]).is_err());
    }
}
