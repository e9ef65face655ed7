//! A BootJob spec (what the operator hands out) turned into the runner's `BootRequest`. Pure.
//!
//! The operator validated the spec at submission, but a runner of another version may disagree;
//! anything it cannot turn into a boot is an `invalid_job` error (which the operator does not
//! retry: every runner would refuse it the same way).

use crate::accel::AccelRequest;
use crate::boot::{ArtifactSource, BootRequest, ConsoleOut, Login};
use bootfarm_core::console::ClassifierConfig;
use bootfarm_core::result::IssueKind;
use bootfarm_core::spec::{ArtifactRef, BootJobSpec};
use bootfarm_core::verdict::Expect;
use std::path::PathBuf;
use std::time::Duration;

/// Per-runner settings that are not the job's business.
#[derive(Debug, Clone, Default)]
pub struct RunnerSettings {
    pub cache_dir: Option<PathBuf>,
    pub qemu_binary_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn source(a: &ArtifactRef) -> ArtifactSource {
    ArtifactSource {
        source: a.url.clone(),
        sha256: a.sha256.clone(),
    }
}

fn kinds(field: &str, names: &[String]) -> Result<Vec<IssueKind>, ConvertError> {
    names
        .iter()
        .map(|n| n.parse::<IssueKind>().map_err(|e| err(field, e)))
        .collect()
}

pub fn to_request(
    spec: &BootJobSpec,
    settings: &RunnerSettings,
) -> Result<BootRequest, ConvertError> {
    let defaults = BootRequest::default();
    let accel = match spec.accel.as_deref() {
        None | Some("") => AccelRequest::Auto,
        Some(a) => a.parse().map_err(|e: String| err("spec.accel", e))?,
    };
    let expect = match spec.expect.as_deref() {
        None | Some("") => Expect::Auto,
        Some(e) => e.parse().map_err(|e: String| err("spec.expect", e))?,
    };
    let login = match spec.login.as_deref() {
        None | Some("") => None,
        Some(l) => {
            let (user, password) = match l.split_once(':') {
                Some((u, p)) => (u, Some(p.to_string())),
                None => (l, None),
            };
            if user.is_empty() {
                return Err(err("spec.login", "empty user name"));
            }
            Some(Login {
                user: user.to_string(),
                password,
            })
        }
    };
    let failure_patterns = spec
        .failure_patterns
        .iter()
        .map(|p| regex::Regex::new(p).map_err(|e| err("spec.failurePatterns", e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    Ok(BootRequest {
        arch: spec.arch,
        kernel: source(&spec.kernel),
        initrd: spec.initrd.as_ref().map(source),
        rootfs: spec.rootfs.as_ref().map(source),
        dtb: spec.dtb.as_ref().map(source),
        modules: spec.modules.as_ref().map(source),
        boot_args: spec.boot_args.clone().unwrap_or_default(),
        machine: spec.machine.clone(),
        cpu: spec.cpu.clone(),
        memory: spec.memory.clone(),
        smp: spec.smp,
        accel,
        expect,
        timeout: timeouts
            .total
            .map(Duration::from_secs)
            .unwrap_or(defaults.timeout),
        boot_timeout: timeouts
            .boot
            .map(Duration::from_secs)
            .unwrap_or(defaults.boot_timeout),
        console_limit: defaults.console_limit,
        // The console goes to the operator through the hook only.
        console_out: ConsoleOut::Discard,
        classifier: ClassifierConfig {
            fail_on: kinds("spec.failOn", &spec.fail_on)?,
            ignore: kinds("spec.ignore", &spec.ignore)?,
            failure_patterns,
            expect_tests: spec.expect_tests.clone(),
        },
        login,
        commands: spec.commands.clone(),
        cache_dir: settings.cache_dir.clone(),
        qemu_binary_dir: settings.qemu_binary_dir.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::Timeouts;
    use bootfarm_core::Arch;

    fn spec() -> BootJobSpec {
        serde_json::from_value(serde_json::json!({
            "arch": "arm64",
            "kernel": {"url": "file:///k/Image", "sha256": "ab"},
            "initrd": {"url": "/i.cpio.gz"},
            "bootArgs": "quiet",
            "accel": "tcg",
            "expect": "shell",
            "login": "tester:secret",
            "commands": ["uname -a"],
            "failOn": ["warning"],
            "ignore": ["oops"],
            "failurePatterns": ["^FATAL"],
            "expectTests": ["t1"],
            "timeouts": {"boot": 30, "total": 60},
            "memory": "1G",
            "smp": 2
        }))
        .unwrap()
    }

    #[test]
    fn every_field_reaches_the_request() {
        let settings = RunnerSettings {
            cache_dir: Some("/cache".into()),
            qemu_binary_dir: None,
        };
        let r = to_request(&spec(), &settings).unwrap();
        assert_eq!(r.arch, Arch::Arm64);
        assert_eq!(r.kernel.source, "file:///k/Image");
        assert_eq!(r.kernel.sha256.as_deref(), Some("ab"));
        assert_eq!(r.initrd.unwrap().source, "/i.cpio.gz");
        assert_eq!(r.boot_args, "quiet");
        assert_eq!(r.accel, AccelRequest::Tcg);
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
        assert_eq!(r.memory.as_deref(), Some("1G"));
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
        let mut s = spec();
        s.fail_on = vec!["nonsense".into()];
        assert_eq!(
            to_request(&s, &RunnerSettings::default())
                .unwrap_err()
                .field,
            "spec.failOn"
        );
        let mut s = spec();
        s.failure_patterns = vec!["(".into()];
        assert_eq!(
            to_request(&s, &RunnerSettings::default())
                .unwrap_err()
                .field,
            "spec.failurePatterns"
        );
        let mut s = spec();
        s.accel = Some("warp".into());
        assert_eq!(
            to_request(&s, &RunnerSettings::default())
                .unwrap_err()
                .field,
            "spec.accel"
        );
    }
}
