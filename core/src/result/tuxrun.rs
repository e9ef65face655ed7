//! A result in the shape TuxRun writes its `results.json`, so tuxsuite and SQUAD tooling read it
//! unchanged: `{"<suite>": {"<case>": {"result": "pass|fail|skip|unknown", …}}}`, with a `lava`
//! suite for the boot itself (`file-download`, `execute-qemu`, `kernel-messages`, `login-action`,
//! `job`) and one suite per test suite the guest reported (`commands` for `--command` cases).

use super::{BootResult, TestOutcome, Verdict};
use serde_json::{json, Map, Value};

fn outcome(ok: bool) -> &'static str {
    if ok {
        "pass"
    } else {
        "fail"
    }
}

pub fn to_tuxrun(r: &BootResult) -> Value {
    let mut lava = Map::new();
    let mut downloads = Map::new();
    for (role, a) in &r.artifacts {
        downloads.insert(
            role.clone(),
            json!({
                "result": "pass",
                "url": a.source,
                "extra": {"label": role, "size": a.size, "sha256sum": a.sha256},
            }),
        );
    }
    if !downloads.is_empty() {
        lava.insert("file-download".into(), Value::Object(downloads));
    }
    if let Some(q) = &r.qemu {
        let started = !matches!(
            r.error.as_ref().map(|e| e.kind.as_str()),
            Some("qemu_missing" | "qemu_failed")
        );
        lava.insert(
            "execute-qemu".into(),
            json!({
                "result": outcome(started),
                "extra": {
                    "job_arch": r.arch.map(|a| a.as_str()),
                    "qemu_version": q.version,
                },
            }),
        );
    }
    let fatal: Vec<Value> = r
        .issues
        .iter()
        .filter(|i| i.fatal)
        .map(|i| json!({"kind": i.kind.as_str(), "title": i.title, "line": i.line}))
        .collect();
    let kernel_ok = fatal.is_empty();
    lava.insert(
        "kernel-messages".into(),
        json!({"result": outcome(kernel_ok), "extra": {"extra": fatal}}),
    );
    // The boot itself got where it had to: a pass, or a failure only of the tests after it.
    let booted = r.result == Verdict::Pass || r.reason == "test_failed";
    let mut login = json!({"result": outcome(booted)});
    if let Some(d) = r.durations.to_prompt {
        // TuxRun writes durations as seconds in a string.
        login["duration"] = json!(format!("{d:.2}"));
    }
    lava.insert("login-action".into(), login);
    let job = match (&r.result, &r.error) {
        (Verdict::Error, e) => json!({
            "result": "fail",
            "error_type": "Infrastructure",
            "error_msg": e.as_ref().map_or(r.summary.as_str(), |e| e.message.as_str()),
        }),
        (_, _) if !booted => {
            json!({"result": "fail", "error_type": "Test", "error_msg": r.summary})
        }
        _ => json!({"result": "pass"}),
    };
    lava.insert("job".into(), job);

    let mut doc = Map::new();
    doc.insert("lava".into(), Value::Object(lava));
    for t in &r.tests {
        let suite = if t.suite.is_empty() {
            "commands"
        } else {
            t.suite.as_str()
        };
        let mut case = Map::new();
        let result = match t.result {
            TestOutcome::Pass => "pass",
            TestOutcome::Fail => "fail",
            TestOutcome::Skip => "skip",
            TestOutcome::Unknown => "unknown",
        };
        case.insert("result".into(), json!(result));
        if let Some(m) = t.measurement {
            case.insert("measurement".into(), json!(m));
        }
        if let Some(u) = &t.units {
            case.insert("units".into(), json!(u));
        }
        if let Some(out) = &t.output {
            case.insert("log_excerpt".into(), json!(out.lines().collect::<Vec<_>>()));
        }
        let entry = doc
            .entry(suite.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(cases) = entry {
            cases.insert(t.name.clone(), Value::Object(case));
        }
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{ArtifactInfo, ErrorKind, QemuInfo, TestCase};

    fn passing_boot() -> BootResult {
        let mut r = BootResult::error(ErrorKind::Internal, "x");
        r.result = Verdict::Pass;
        r.error = None;
        r.reason = "prompt".into();
        r.summary = "reached a shell".into();
        r.arch = Some(crate::Arch::X86_64);
        r.qemu = Some(QemuInfo {
            version: Some("7.2.19".into()),
            argv: vec![],
            kernel: None,
            early_initramfs: None,
        });
        r.artifacts.insert(
            "kernel".into(),
            ArtifactInfo {
                source: "file:///boot/vmlinuz".into(),
                sha256: "ab".repeat(32),
                size: 8247232,
                path: None,
            },
        );
        r
    }

    /// Every case TuxRun's own boot result has (a recorded TuxRun 1.11 results.json) is there,
    /// with a result TuxRun's readers know.
    #[test]
    fn a_boot_has_the_lava_cases_tuxrun_writes() {
        let sample: Value =
            serde_json::from_str(include_str!("../../tests/data/tuxrun/boot-results.json"))
                .unwrap();
        let ours = to_tuxrun(&passing_boot());
        for case in [
            "file-download",
            "execute-qemu",
            "kernel-messages",
            "login-action",
            "job",
        ] {
            assert!(sample["lava"].get(case).is_some(), "the sample has {case}");
            assert!(ours["lava"].get(case).is_some(), "ours lacks {case}");
            if case != "file-download" {
                assert_eq!(
                    ours["lava"][case]["result"], sample["lava"][case]["result"],
                    "{case}"
                );
            }
        }
        assert_eq!(ours["lava"]["file-download"]["kernel"]["result"], "pass");
        assert_eq!(
            ours["lava"]["file-download"]["kernel"]["extra"]["size"],
            sample["lava"]["file-download"]["kernel"]["extra"]["size"]
        );
    }

    #[test]
    fn commands_become_the_commands_suite_and_failures_are_said() {
        let sample: Value = serde_json::from_str(include_str!(
            "../../tests/data/tuxrun/commands-uname-results.json"
        ))
        .unwrap();
        let mut r = passing_boot();
        r.result = Verdict::Fail;
        r.reason = "test_failed".into();
        r.tests = vec![
            TestCase {
                name: "command".into(),
                result: TestOutcome::Pass,
                suite: String::new(),
                measurement: None,
                units: None,
                reason: None,
                output: Some("Linux tuxrun 6.1.0\n".into()),
            },
            TestCase {
                name: "speed".into(),
                result: TestOutcome::Skip,
                suite: "kunit/example".into(),
                measurement: Some(2.5),
                units: Some("ms".into()),
                reason: None,
                output: None,
            },
        ];
        let ours = to_tuxrun(&r);
        assert_eq!(
            ours["commands"]["command"]["result"],
            sample["commands"]["command"]["result"]
        );
        assert!(ours["commands"]["command"]["log_excerpt"].is_array());
        assert_eq!(ours["kunit/example"]["speed"]["result"], "skip");
        assert_eq!(ours["kunit/example"]["speed"]["measurement"], 2.5);
        // Tests failed after a good boot: the job and the login are fine.
        assert_eq!(ours["lava"]["job"]["result"], "pass");
        assert_eq!(ours["lava"]["login-action"]["result"], "pass");

        let err = to_tuxrun(&BootResult::error(ErrorKind::DownloadFailed, "HTTP 503"));
        assert_eq!(err["lava"]["job"]["result"], "fail");
        assert_eq!(err["lava"]["job"]["error_type"], "Infrastructure");
        assert_eq!(err["lava"]["job"]["error_msg"], "HTTP 503");
    }
}
