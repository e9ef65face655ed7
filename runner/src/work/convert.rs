//! A BootJob spec (what the operator hands out) turned into the runner's `BootRequest`: the spec
//! is validated with the same rules as at submission ([`bootfarm_core::spec::validate`]), and
//! the typed result is mapped, never parsed again. Pure.
//!
//! The operator validated the spec at submission, but a runner of another version may disagree;
//! anything it cannot turn into a boot is an `invalid_job` error (which the operator does not
//! retry: every runner would refuse it the same way).

use crate::artifacts::FetchPolicy;
use crate::boot::{ArtifactSource, BootRequest, ConsoleOut};
use bootfarm_core::spec::{validate, Artifact, BootJobSpec, ValidatedSpec};
use std::path::PathBuf;

/// Per-runner settings that are not the job's business.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub cache_dir: Option<PathBuf>,
    /// The artifact cache's size budget.
    pub cache_max: Option<u64>,
    pub qemu_binary_dir: Option<PathBuf>,
    pub guest_tools: Option<PathBuf>,
    /// What this runner may fetch (the farm's rules for `work`).
    pub fetch_policy: FetchPolicy,
    /// Cap of each job's console log.
    pub console_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

fn source(a: &Artifact) -> ArtifactSource {
    ArtifactSource {
        source: a.source.clone(),
        sha256: a.sha256.clone(),
    }
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            cache_dir: None,
            cache_max: Some(crate::artifacts::DEFAULT_CACHE_MAX),
            qemu_binary_dir: None,
            guest_tools: None,
            fetch_policy: FetchPolicy::default(),
            console_limit: bootfarm_core::console_cap::DEFAULT_FARM_LIMIT,
        }
    }
}

/// Validates `spec` and maps it; the first problem is the error (all are in its message).
pub fn to_request(
    spec: &BootJobSpec,
    settings: &RunnerSettings,
) -> Result<BootRequest, ConvertError> {
    let v = validate(spec).map_err(|errs| ConvertError {
        field: errs.first().map(|e| e.field.clone()).unwrap_or_default(),
        message: errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    Ok(request_from(&v, settings))
}

/// The boot of a validated spec, with this runner's settings.
pub fn request_from(v: &ValidatedSpec, settings: &RunnerSettings) -> BootRequest {
    BootRequest {
        arch: v.arch,
        kernel: source(&v.kernel),
        initrd: v.initrd.as_ref().map(source),
        rootfs: v.rootfs.as_ref().map(source),
        dtb: v.dtb.as_ref().map(source),
        modules: v.modules.as_ref().map(source),
        overlays: v
            .overlays
            .iter()
            .map(|o| (source(&o.artifact), o.path.clone()))
            .collect(),
        boot_args: v.boot_args.clone(),
        machine: v.machine.clone(),
        cpu: v.cpu.clone(),
        memory: v.memory,
        smp: v.smp,
        accel: v.accel,
        kernel_boot: v.kernel_boot,
        expect: v.expect,
        timeout: v.total_timeout,
        boot_timeout: v.boot_timeout,
        console_limit: settings.console_limit,
        // The console goes to the operator through the hook only.
        console_out: ConsoleOut::Discard,
        classifier: v.classifier.clone(),
        login: v.login.clone(),
        commands: v.commands.clone(),
        cache_dir: settings.cache_dir.clone(),
        cache_max: settings.cache_max,
        qemu_binary_dir: settings.qemu_binary_dir.clone(),
        guest_tools: settings.guest_tools.clone(),
        fetch_policy: settings.fetch_policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::AccelRequest;
    use bootfarm_core::result::IssueKind;
    use bootfarm_core::spec::Timeouts;
    use bootfarm_core::verdict::Expect;
    use bootfarm_core::Arch;
    use std::time::Duration;

    fn spec() -> BootJobSpec {
        serde_json::from_value(serde_json::json!({
            "arch": "arm64",
            "kernel": {"url": "file:///k/Image", "sha256": "AB".repeat(32)},
            "initrd": {"url": "/i.cpio.gz"},
            "bootArgs": "quiet",
            "accel": "tcg",
            "kernelBoot": "as-is",
            "expect": "shell",
            "login": "tester:secret",
            "commands": ["uname -a"],
            "failOn": ["warning"],
            "ignore": ["oops"],
            "failurePatterns": ["^FATAL"],
            "expectTests": ["t1"],
            "timeouts": {"boot": 30, "total": 60},
            "machine": "virt,gic-version=3",
            "cpu": "max,-sve",
            "memory": "1G",
            "smp": 2
        }))
        .unwrap()
    }

    #[test]
    fn every_field_reaches_the_request() {
        let settings = RunnerSettings {
            cache_dir: Some("/cache".into()),
            ..RunnerSettings::default()
        };
        let r = to_request(&spec(), &settings).unwrap();
        assert_eq!(r.arch, Arch::Arm64);
        assert_eq!(r.kernel.source, "file:///k/Image");
        assert_eq!(r.kernel.sha256, Some("ab".repeat(32)));
        assert_eq!(r.initrd.unwrap().source, "/i.cpio.gz");
        assert_eq!(r.boot_args, "quiet");
        assert_eq!(r.accel, AccelRequest::Tcg);
        assert_eq!(r.kernel_boot, bootfarm_core::spec::KernelBoot::AsIs);
        assert_eq!(r.expect, Expect::Shell);
        let login = r.login.unwrap();
        assert_eq!(
            (login.user.as_str(), login.password.as_deref()),
            ("tester", Some("secret"))
        );
        assert_eq!(r.commands, vec!["uname -a".to_string()]);
        assert_eq!(r.classifier.fail_on, vec![IssueKind::Warning]);
        assert_eq!(r.classifier.ignore, vec![IssueKind::Oops]);
        assert_eq!(r.classifier.failure_patterns[0].as_str(), "^FATAL");
        assert_eq!(r.classifier.expect_tests, vec!["t1".to_string()]);
        assert_eq!(r.boot_timeout, Duration::from_secs(30));
        assert_eq!(r.timeout, Duration::from_secs(60));
        assert_eq!(r.memory, Some(1 << 30));
        assert_eq!(r.machine.unwrap().to_arg(), "virt,gic-version=3");
        assert_eq!(r.cpu.unwrap().to_arg(Arch::Arm64), "max,sve=off");
        assert_eq!(r.smp, Some(2));
        assert_eq!(r.console_out, ConsoleOut::Discard);
        assert_eq!(r.cache_dir, Some(PathBuf::from("/cache")));
    }

    #[test]
    fn defaults_apply_when_fields_are_absent() {
        let mut s = spec();
        s.timeouts = Some(Timeouts::default());
        s.accel = None;
        s.expect = None;
        let r = to_request(&s, &RunnerSettings::default()).unwrap();
        assert_eq!(r.accel, AccelRequest::Auto);
        assert_eq!(r.expect, Expect::Auto);
        assert_eq!(r.timeout, BootRequest::default().timeout);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (edit, field) in [
            (
                (|s: &mut BootJobSpec| s.fail_on = vec!["nonsense".into()]) as fn(&mut BootJobSpec),
                "spec.failOn[0]",
            ),
            (
                |s: &mut BootJobSpec| s.failure_patterns = vec!["(".into()],
                "spec.failurePatterns[0]",
            ),
            (
                |s: &mut BootJobSpec| s.accel = Some("warp".into()),
                "spec.accel",
            ),
            (
                |s: &mut BootJobSpec| s.machine = Some("virt,dumpdtb=x".into()),
                "spec.machine",
            ),
        ] {
            let mut s = spec();
            edit(&mut s);
            assert_eq!(
                to_request(&s, &RunnerSettings::default())
                    .unwrap_err()
                    .field,
                field
            );
        }
    }
}
