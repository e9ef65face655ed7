//! The standalone farm boots real kernels under QEMU (TCG) and records their verdicts:
//! x86_64 and arm64 power-off initramfs → Succeeded; x86_64 panicking init → Failed.

mod farm_support;

use farm_support::*;
use std::time::{Duration, Instant};

#[test]
fn real_boots_end_in_the_right_phase_with_their_logs_and_results() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let jobs = [
        (
            "x86-ok",
            "x86_64",
            "x86_64/initrd-poweroff.cpio.gz",
            "Succeeded",
            0,
            "pass",
        ),
        (
            "x86-panic",
            "x86_64",
            "x86_64/initrd-panic.cpio.gz",
            "Failed",
            1,
            "fail",
        ),
        (
            "arm-ok",
            "arm64",
            "arm64/initrd-poweroff.cpio.gz",
            "Succeeded",
            0,
            "pass",
        ),
    ];
    for (name, arch, initrd, ..) in &jobs {
        let kernel = url(&fx, &format!("{arch}/kernel"));
        let initrd = url(&fx, initrd);
        let out = farm.cli(&[
            "submit",
            "--name",
            name,
            "--arch",
            arch,
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--timeout",
            "240",
            "--label",
            "suite=blackbox",
        ]);
        assert!(out.status.success(), "submit {name}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), *name);
    }
    for (name, _, _, phase, code, result) in &jobs {
        let out = farm.cli(&["wait", name, "--timeout", "300"]);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "wait {name}:\n{}",
            farm.operator_log()
        );
        let job = farm.job(name);
        assert_eq!(job["status"]["phase"], *phase);
        assert_eq!(job["status"]["result"]["result"], *result);
        assert_eq!(job["status"]["attempts"], 1);
        assert!(
            job["status"]["result"]["kernelVersion"].as_str().is_some(),
            "{job}"
        );

        let doc = farm.cli(&["get", name, "--result", "-o", "json"]);
        assert!(doc.status.success());
        let doc: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
        assert_eq!(doc["schema"], "bootfarm.result/v1");
        assert_eq!(doc["result"], *result);
        // The farm boots x86 kernels the fast way, and its runners share the extracted ELF.
        let booted = &doc["qemu"]["kernel"];
        let want = if name.starts_with("x86") {
            "pvh-elf"
        } else {
            "Image"
        };
        assert_eq!(booted["format"], want, "{name}: {doc}");

        if *name == "x86-ok" {
            assert_reproducer_gives_the_same_verdict(&farm, name, &doc);
        }

        let log = farm.cli(&["log", name]);
        let log = String::from_utf8_lossy(&log.stdout);
        assert!(log.contains("Linux version"), "{name} log:\n{log}");
        if *result == "pass" {
            assert!(log.contains("bootfarm: userspace up"), "{name} log:\n{log}");
        } else {
            assert!(log.contains("Kernel panic"), "{name} log:\n{log}");
            let issues = &doc["issues"];
            assert!(
                issues
                    .as_array()
                    .is_some_and(|i| i.iter().any(|i| i["kind"] == "panic")),
                "{doc}"
            );
        }
    }
    // The list shows all three, filterable by phase and label.
    let out = farm.cli(&["list", "--phase", "Succeeded", "-l", "suite=blackbox"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("x86-ok") && table.contains("arm-ok") && !table.contains("x86-panic"),
        "{table}"
    );
}

/// `GET …/reproducer` run on this machine boots the same kernel to the same verdict.
fn assert_reproducer_gives_the_same_verdict(farm: &Farm, name: &str, doc: &serde_json::Value) {
    let (status, script) = farm.http(
        "GET",
        &format!("/api/v1/bootjobs/{name}/reproducer"),
        None,
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&script));
    let work = tempfile::tempdir().expect("a temporary directory");
    let path = work.path().join("reproduce.sh");
    std::fs::write(&path, &script).expect("the script written");
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "200", "sh"])
        .arg(&path)
        .env("WORK", work.path().join("files"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the reproducer runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = work.path().join("console.log");
    std::fs::write(&console, &out.stdout).expect("the console written");
    let classified = std::process::Command::new(bin_dir().join("bootfarm-runner"))
        .arg("classify")
        .arg(&console)
        .output()
        .expect("classify runs");
    let again: serde_json::Value =
        serde_json::from_slice(&classified.stdout).expect("classify prints JSON");
    for field in ["result", "reason", "stage", "kernel_version"] {
        assert_eq!(again[field], doc[field], "{field}");
    }
}

#[test]
fn log_follow_streams_until_the_job_ends() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let kernel = url(&fx, "x86_64/kernel");
    let initrd = url(&fx, "x86_64/initrd-poweroff.cpio.gz");
    let out = farm.cli(&[
        "submit", "--name", "followed", "--arch", "x86_64", "--kernel", &kernel, "--initrd",
        &initrd,
    ]);
    assert!(out.status.success());
    // Follow from submission: the stream must stay open through the boot and end by itself.
    let started = Instant::now();
    let out = farm.cli(&["log", "followed", "--follow"]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(240));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("Linux version"), "{log}");
    assert!(log.contains("bootfarm: userspace up"), "{log}");
    assert_eq!(farm.phase("followed"), "Succeeded");
    // The followed stream is the stored log, byte for byte.
    let stored = farm.cli(&["log", "followed"]);
    assert_eq!(stored.stdout, out.stdout);
}

#[test]
fn submit_wait_reports_a_kernel_failure_with_exit_1() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let kernel = url(&fx, "x86_64/kernel");
    let initrd = url(&fx, "x86_64/initrd-panic.cpio.gz");
    let out = farm.cli(&[
        "submit",
        "--arch",
        "x86_64",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--wait",
        "--wait-timeout",
        "240",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", farm.operator_log());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Failed"), "{text}");
    assert!(text.contains("Attempted to kill init"), "{text}");
}

#[test]
fn a_local_boots_job_flags_give_the_same_verdict_in_the_farm() {
    // The command line of runner/tests/boot.rs `login_and_commands_become_test_cases`, with
    // `bootfarm-runner boot` changed to `bootfarm-operator submit`.
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let kernel = url(&fx, "x86_64/kernel");
    let initrd = url(&fx, "x86_64/initrd-login.cpio.gz");
    let out = farm.cli(&[
        "submit",
        "--name",
        "from-boot-flags",
        "--arch",
        "x86_64",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--accel",
        "tcg",
        "--boot-timeout",
        "120",
        "--login",
        "tester:secret",
        "--command",
        "uname -r",
        "--command",
        "test -e /nonexistent",
        "--wait",
        "--wait-timeout",
        "240",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", farm.operator_log());
    let job = farm.job("from-boot-flags");
    assert_eq!(job["spec"]["login"], "tester:secret", "{job:#}");
    // Flags not given are left to the farm.
    assert!(job["spec"].get("expect").is_none(), "{job:#}");
    let out = farm.cli(&["get", "from-boot-flags", "--result", "-o", "json"]);
    assert!(out.status.success());
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a result");
    assert_eq!(result["stage"], "shell", "{result:#}");
    assert_eq!(result["reason"], "test_failed");
    let tests = result["tests"].as_array().expect("tests");
    assert_eq!(tests.len(), 2, "{tests:?}");
    assert_eq!(tests[0]["result"], "pass");
    assert_eq!(tests[1]["result"], "fail");
}

/// A disk-root job in the farm as on the command line: the generic Debian root of
/// `scripts/rootfs`, the kernel's modules as a tarball, an overlay; the farm's runner (its own
/// unprivileged user) builds the early initramfs and the guest logs in.
#[test]
fn a_disk_root_job_with_a_modules_tarball_logs_in_through_the_farm() {
    let fx = fixtures();
    let rootfs = bootfarm_core::paths::require_disk_root("x86_64");
    let rootfs_dir = rootfs
        .parent()
        .and_then(|d| d.parent())
        .expect("<dir>/x86_64/rootfs.ext4")
        .to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let overlay = tmp.path().join("hello.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&overlay).expect("overlay"));
        let script = b"#!/bin/sh\necho hello from the farm overlay\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "hello", &script[..])
            .expect("append");
        tar.finish().expect("finish");
    }
    let farm = Farm::start(Options {
        allow_local: vec![rootfs_dir.clone(), tmp.path().to_path_buf()],
        ..Options::default()
    });
    let kernel = url(&fx, "x86_64/kernel");
    let modules = url(&fx, "x86_64/modules.tar.xz");
    let rootfs = format!("file://{}", rootfs.display());
    let overlay = format!("file://{}:/opt/farm", overlay.display());
    let out = farm.cli(&[
        "submit",
        "--name",
        "disk-root",
        "--arch",
        "x86_64",
        "--kernel",
        &kernel,
        "--rootfs",
        &rootfs,
        "--modules",
        &modules,
        "--overlay",
        &overlay,
        "--accel",
        "tcg",
        "--boot-timeout",
        "600",
        "--timeout",
        "900",
        "--login",
        "root",
        "--command",
        "lsmod",
        "--command",
        "/opt/farm/hello",
        "--wait",
        "--wait-timeout",
        "1000",
    ]);
    let waited = out.status.code();
    let out = farm.cli(&["get", "disk-root", "--result", "-o", "json"]);
    assert!(out.status.success(), "{}", farm.operator_log());
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a result");
    assert_eq!(waited, Some(0), "{result:#}\n{}", farm.operator_log());
    let tests = result["tests"].as_array().expect("tests");
    assert_eq!(tests.len(), 2, "{result:#}");
    let lsmod = tests[0]["output"].as_str().unwrap_or_default();
    assert!(lsmod.lines().any(|l| l.starts_with("ext4 ")), "{lsmod}");
    assert!(
        tests[1]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("hello from the farm overlay"),
        "{result:#}"
    );
    assert!(
        result["qemu"]["early_initramfs"]["modules"].is_array(),
        "{result:#}"
    );
}
