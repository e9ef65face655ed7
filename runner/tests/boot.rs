//! Real boots under QEMU (TCG) through the `bootfarm-runner boot` binary, against the fixtures
//! built by `scripts/fixtures` (env `BOOTFARM_FIXTURES`, default `$BOOTFARM_CACHE/fixtures` or
//! `~/.cache/bootfarm/fixtures`). Boots are serialised: the machines are small and TCG boots
//! contending for cores would only measure contention.

// Test helpers outside #[test] functions: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const RUNNER: &str = env!("CARGO_BIN_EXE_bootfarm-runner");
/// Generous: a TCG boot here takes 3-7 s, CI machines may be slower.
const BOOT_TIMEOUT: &str = "120";

static ONE_BOOT_AT_A_TIME: Mutex<()> = Mutex::new(());

fn fixtures() -> PathBuf {
    bootfarm_core::paths::require_fixtures()
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("runner-test-cache")
}

struct Run {
    code: i32,
    json: Value,
    elapsed: Duration,
    log: String,
    /// The stored console log as written.
    raw_log: Vec<u8>,
    /// The runner's peak resident memory as last sampled (VmHWM), in KiB.
    peak_rss_kib: u64,
}

/// Run `bootfarm-runner boot ARGS --output json`, killing it if it outlives `limit`.
fn boot(args: &[&str], limit: Duration) -> Run {
    let _one = ONE_BOOT_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let log = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let child = Command::new(RUNNER)
        .arg("boot")
        .args(args)
        .args(["--output", "json", "--log"])
        .arg(log.path())
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, stdout, peak_rss_kib) = wait_bounded_sampling(child, limit);
    let elapsed = started.elapsed();
    let json: Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    });
    let raw_log = std::fs::read(log.path()).unwrap();
    Run {
        code,
        json,
        elapsed,
        log: String::from_utf8_lossy(&raw_log).into_owned(),
        raw_log,
        peak_rss_kib,
    }
}

/// `bootfarm-runner classify` on the stored log decides what the live boot decided, from the
/// same console facts: the two build their result the same way and must never drift.
fn assert_classify_agrees(run: &Run) {
    let mut log = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut log, &run.raw_log).unwrap();
    let out = Command::new(RUNNER)
        .arg("classify")
        .arg(log.path())
        .output()
        .unwrap();
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "classify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for field in [
        "schema",
        "result",
        "reason",
        "summary",
        "stage",
        "kernel_version",
        "issues",
        "tests",
    ] {
        assert_eq!(
            offline[field], run.json[field],
            "{field}: offline {offline:#}"
        );
    }
    for field in [
        "bytes",
        "lines",
        "truncated",
        "dropped_issues",
        "dropped_tests",
    ] {
        assert_eq!(
            offline["console"][field], run.json["console"][field],
            "console.{field}: offline {offline:#}"
        );
    }
    assert_eq!(out.status.code(), Some(run.code), "{offline:#}");
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn wait_bounded(child: Child, limit: Duration) -> (i32, Vec<u8>) {
    let (code, out, _) = wait_bounded_sampling(child, limit);
    (code, out)
}

/// Wait for the child (killing it past `limit`), sampling its peak memory meanwhile.
fn wait_bounded_sampling(mut child: Child, limit: Duration) -> (i32, Vec<u8>, u64) {
    use std::io::Read;
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    loop {
        if let Some(kib) = vm_hwm_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), reader.join().unwrap(), peak);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("bootfarm-runner still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn f(dir: &Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

fn kernel_version(dir: &Path, arch: &str) -> String {
    std::fs::read_to_string(dir.join(arch).join("kernel-version"))
        .unwrap()
        .trim()
        .to_string()
}

fn assert_pass(run: &Run, stage: &str) {
    assert_eq!(run.code, 0, "{:#}\n--- console ---\n{}", run.json, run.log);
    assert_eq!(run.json["result"], "pass");
    assert_eq!(run.json["stage"], stage, "{:#}", run.json);
    assert_eq!(run.json["schema"], "bootfarm.result/v1");
}

/// `boot` of a fixture kernel and initramfs under TCG, with `extra` flags.
fn boot_fixture(
    arch: &str,
    initrd: &str,
    boot_timeout: &str,
    extra: &[&str],
    limit: Duration,
) -> Run {
    let dir = fixtures();
    let kernel = f(&dir, &format!("{arch}/kernel"));
    let initrd = f(&dir, &format!("{arch}/{initrd}"));
    let mut args = vec![
        "--arch",
        arch,
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--accel",
        "tcg",
        "--boot-timeout",
        boot_timeout,
    ];
    args.extend_from_slice(extra);
    boot(&args, limit)
}

/// An x86_64 boot of `kernel` (with `initrd`) that must fail at stage none, by a short boot
/// timeout.
fn boot_to_stage_none(kernel: &str, initrd: Option<&str>) -> Run {
    let mut args = vec![
        "--arch",
        "x86_64",
        "--kernel",
        kernel,
        "--accel",
        "tcg",
        "--boot-timeout",
        "8",
    ];
    if let Some(initrd) = initrd {
        args.extend(["--initrd", initrd]);
    }
    let run = boot(&args, Duration::from_secs(40));
    assert_eq!(run.json["stage"], "none", "{:#}", run.json);
    if !qemu_aborted_on_guest_code(&run.json) {
        assert_eq!(run.code, 1, "{:#}", run.json);
        assert_eq!(run.json["result"], "fail");
    }
    run
}

/// Bytes that are not a kernel, run as code, sometimes hit an assertion in QEMU 7.2's device
/// models (`serial_ioport_read: Assertion 'size == 1 && addr < 8'`, depending on what the random
/// code reads from the clock): QEMU started and accepted the command line, then died of the guest.
/// An error at stage none, not the stage-none failure a guest that merely never prints gets.
fn qemu_aborted_on_guest_code(json: &Value) -> bool {
    let msg = json["error"]["message"].as_str().unwrap_or_default();
    json["result"] == "error"
        && json["error"]["kind"] == "qemu_failed"
        && msg.starts_with("QEMU exited during the boot")
        && msg.contains("Assertion")
}

fn boot_to(arch: &str, initrd: &str, stage: &str) -> Run {
    let dir = fixtures();
    let run = boot_fixture(arch, initrd, BOOT_TIMEOUT, &[], Duration::from_secs(200));
    assert_pass(&run, stage);
    assert_eq!(run.json["arch"], arch);
    assert_eq!(run.json["accel"], "tcg");
    assert_eq!(
        run.json["kernel_version"].as_str(),
        Some(kernel_version(&dir, arch).as_str())
    );
    let d = &run.json["durations"];
    let kernel = d["to_kernel"].as_f64().unwrap();
    let user = d["to_userspace"].as_f64().unwrap();
    let total = d["total"].as_f64().unwrap();
    assert!(0.0 < kernel && kernel <= user && user <= total, "{d}");
    run
}

#[test]
fn x86_64_boots_to_userspace_and_powers_off() {
    let dir = fixtures();
    let run = boot_to("x86_64", "initrd-poweroff.cpio.gz", "userspace");
    assert_eq!(run.json["reason"], "poweroff");
    assert!(run.log.contains("bootfarm: userspace up"), "{}", run.log);
    let argv: Vec<&str> = run.json["qemu"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(argv[0].ends_with("qemu-system-x86_64"), "{argv:?}");
    assert!(argv.contains(&"-S"));
    assert!(run.json["qemu"]["version"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    let kernel = &run.json["artifacts"]["kernel"];
    assert_eq!(kernel["source"], f(&dir, "x86_64/kernel"));
    assert_eq!(kernel["sha256"].as_str().unwrap().len(), 64);
    assert!(run.json["artifacts"]["initrd"]["size"].as_u64().unwrap() > 0);
    assert!(run.json["console"]["bytes"].as_u64().unwrap() > 1000);
    // The fast path: Debian's bzImage carries an xz-compressed ELF with a PVH note.
    let booted = &run.json["qemu"]["kernel"];
    assert_eq!(booted["format"], "pvh-elf", "{booted}");
    assert_eq!(booted["from"], "bzImage");
    assert_eq!(booted["codec"], "xz");
    assert_eq!(booted["kaslr"], false);
    let given = argv
        .windows(2)
        .find(|w| w[0] == "-kernel")
        .map(|w| w[1])
        .unwrap();
    assert_ne!(given, f(&dir, "x86_64/kernel"));
    assert!(std::fs::read(given).unwrap().starts_with(b"\x7fELF"));
    assert_classify_agrees(&run);
}

fn qemu_kernel_arg(run: &Run) -> String {
    let argv = run.json["qemu"]["argv"].as_array().unwrap();
    let at = argv.iter().position(|a| a == "-kernel").unwrap();
    argv[at + 1].as_str().unwrap().to_string()
}

#[test]
fn as_is_boots_the_bzimage_itself_to_the_same_verdict() {
    let kernel = f(&fixtures(), "x86_64/kernel");
    let initrd = "initrd-poweroff.cpio.gz";
    let limit = Duration::from_secs(200);
    let as_is = boot_fixture(
        "x86_64",
        initrd,
        BOOT_TIMEOUT,
        &["--kernel-boot", "as-is"],
        limit,
    );
    assert_pass(&as_is, "userspace");
    let booted = &as_is.json["qemu"]["kernel"];
    assert_eq!(booted["format"], "bzImage", "{booted}");
    assert!(booted["reason"].as_str().unwrap().contains("as-is"));
    assert_eq!(qemu_kernel_arg(&as_is), kernel);
    let fast = boot_fixture("x86_64", initrd, BOOT_TIMEOUT, &[], limit);
    assert_pass(&fast, "userspace");
    assert_eq!(fast.json["qemu"]["kernel"]["format"], "pvh-elf");
    // The same kernel, judged alike.
    for field in ["result", "reason", "stage", "kernel_version", "issues"] {
        assert_eq!(as_is.json[field], fast.json[field], "{field}");
    }
    // The firmware and the decompressor are what the fast path saves.
    let (slow, quick) = (
        as_is.json["durations"]["to_kernel"].as_f64().unwrap(),
        fast.json["durations"]["to_kernel"].as_f64().unwrap(),
    );
    assert!(
        quick < slow,
        "to kernel: {quick} s on the fast path, {slow} s as is"
    );
}

#[test]
fn a_bzimage_whose_payload_merely_looks_compressed_is_booted_as_given_and_fails_at_stage_none() {
    let dir = fixtures();
    let mut image = std::fs::read(dir.join("x86_64/kernel")).unwrap();
    // Keep the setup header and the payload's xz magic; the rest of the payload is noise.
    let setup = (usize::from(image[0x1f1]) + 1) * 512;
    let offset =
        usize::try_from(u32::from_le_bytes(image[0x248..0x24c].try_into().unwrap())).unwrap();
    let start = setup + offset;
    assert!(image[start..].starts_with(b"\xfd7zXZ\x00"));
    let mut x = 0x9e37_79b9_u32;
    for b in &mut image[start + 64..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x.to_le_bytes()[0];
    }
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("bzImage");
    std::fs::write(&kernel, &image).unwrap();
    let run = boot_to_stage_none(kernel.to_str().unwrap(), None);
    let booted = &run.json["qemu"]["kernel"];
    assert_eq!(booted["format"], "bzImage", "{booted}");
    assert!(
        booted["reason"].as_str().unwrap().contains("corrupt xz"),
        "{booted}"
    );
    assert_eq!(qemu_kernel_arg(&run), kernel.to_str().unwrap());
}

#[test]
fn i386_without_pvh_boots_its_bzimage_as_given_and_remembers_why() {
    // Debian's 686 kernel is built without CONFIG_PVH: the fast path finds no PVH entry point
    // in the ELF it extracts, boots the bzImage itself and says so; the answer is cached.
    for _ in 0..2 {
        let run = boot_to("i386", "initrd-poweroff.cpio.gz", "userspace");
        assert_eq!(run.json["reason"], "poweroff");
        let booted = &run.json["qemu"]["kernel"];
        assert_eq!(booted["format"], "bzImage", "{booted}");
        assert!(
            booted["reason"]
                .as_str()
                .unwrap()
                .contains("no PVH entry point"),
            "{booted}"
        );
        assert_eq!(qemu_kernel_arg(&run), f(&fixtures(), "i386/kernel"));
    }
}

/// The arches beyond x86_64 and arm64: a real Debian kernel boots a busybox initramfs to
/// power-off, and a panicking init fails at once with the panic named.
#[test]
fn armv7_riscv64_i386_ppc64le_and_s390x_boot_and_their_panics_fail() {
    for arch in ["armv7", "riscv64", "i386", "ppc64le", "s390x"] {
        let run = boot_to(arch, "initrd-poweroff.cpio.gz", "userspace");
        assert_eq!(run.json["reason"], "poweroff", "{arch}");
        assert!(
            run.log.contains("bootfarm: userspace up"),
            "{arch}: {}",
            run.log
        );
        let panic = boot_fixture(
            arch,
            "initrd-panic.cpio.gz",
            BOOT_TIMEOUT,
            &[],
            Duration::from_secs(200),
        );
        assert_eq!(panic.code, 1, "{arch}: {:#}", panic.json);
        assert_eq!(panic.json["reason"], "panic", "{arch}: {:#}", panic.json);
        assert_eq!(panic.json["stage"], "userspace", "{arch}");
        // armv7's kernel reports an error code of its own earlier in the boot.
        assert!(
            panic.json["issues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["kind"] == "panic" && i["fatal"] == true),
            "{arch}: {:#}",
            panic.json["issues"]
        );
        assert_classify_agrees(&panic);
    }
}

#[test]
fn arm64_boots_to_a_shell() {
    let _ = fixtures();
    let run = boot_to("arm64", "initrd-shell.cpio.gz", "shell");
    assert_eq!(run.json["reason"], "prompt");
    assert!(run.json["durations"]["to_prompt"].as_f64().is_some());
}

#[test]
fn riscv64_boots_to_a_shell() {
    let _ = fixtures();
    boot_to("riscv64", "initrd-shell.cpio.gz", "shell");
}

#[test]
fn arm64_powers_off() {
    let _ = fixtures();
    let run = boot_to("arm64", "initrd-poweroff.cpio.gz", "userspace");
    assert_eq!(run.json["reason"], "poweroff");
}

#[test]
fn login_and_commands_become_test_cases() {
    let dir = fixtures();
    let junit = tempfile::TempDir::new().unwrap();
    let junit_file = junit.path().join("boot.xml");
    let run = boot_fixture(
        "x86_64",
        "initrd-login.cpio.gz",
        BOOT_TIMEOUT,
        &[
            "--login",
            "tester:secret",
            "--command",
            "uname -r",
            "--command",
            "test -e /nonexistent",
            "--junit",
            junit_file.to_str().unwrap(),
            "--tuxrun-results",
            junit.path().join("results.json").to_str().unwrap(),
        ],
        Duration::from_secs(200),
    );
    assert_eq!(run.code, 1, "{:#}\n{}", run.json, run.log);
    assert_eq!(run.json["stage"], "shell");
    assert_eq!(run.json["reason"], "test_failed");
    let tests = run.json["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2, "{tests:?}");
    assert_eq!(tests[0]["result"], "pass");
    assert_eq!(tests[1]["result"], "fail");
    // The same verdict as JUnit: the boot failed because a command did, one case per command.
    let xml = std::fs::read_to_string(&junit_file).expect("--junit wrote its file");
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit XML");
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), "kernel");
    assert_eq!(
        suite.tests,
        1 + run.json["issues"].as_array().unwrap().len() + 2
    );
    assert_eq!(suite.test_cases[0].name.as_str(), "boot");
    let last = suite.test_cases.last().unwrap();
    assert_eq!(last.name.as_str(), tests[1]["name"].as_str().unwrap());
    assert!(matches!(
        last.status,
        quick_junit::TestCaseStatus::NonSuccess { .. }
    ));
    // And as TuxRun writes it: the boot went fine, the commands are cases of their suite.
    let tux: Value =
        serde_json::from_slice(&std::fs::read(junit.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(tux["lava"]["login-action"]["result"], "pass", "{tux:#}");
    let suite = tests[1]["suite"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("commands");
    assert_eq!(
        tux[suite][tests[1]["name"].as_str().unwrap()]["result"],
        "fail",
        "{tux:#}"
    );
    assert_eq!(
        tux[suite][tests[0]["name"].as_str().unwrap()]["result"],
        "pass",
        "{tux:#}"
    );
    assert!(run.log.contains(&kernel_version(&dir, "x86_64")));
}

#[test]
fn a_panic_fails_at_once_not_at_the_timeout() {
    let run = boot_fixture(
        "x86_64",
        "initrd-panic.cpio.gz",
        BOOT_TIMEOUT,
        &[],
        Duration::from_secs(200),
    );
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.json["result"], "fail");
    assert_eq!(run.json["reason"], "panic");
    assert_eq!(run.json["stage"], "userspace");
    assert_eq!(run.json["issues"][0]["kind"], "panic");
    // The verdict came from the panic: well before the boot timeout.
    let total = run.json["durations"]["total"].as_f64().unwrap();
    let user = run.json["durations"]["to_userspace"].as_f64().unwrap();
    assert!(
        total - user < 5.0,
        "stopped {total} s in, userspace at {user} s"
    );
    assert_classify_agrees(&run);
}

#[test]
fn a_silent_guest_fails_with_timeout_at_the_boot_timeout() {
    let run = boot_fixture(
        "x86_64",
        "initrd-silent.cpio.gz",
        "30",
        &[],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.json["reason"], "timeout");
    assert_eq!(run.json["stage"], "userspace");
    let total = run.json["durations"]["total"].as_f64().unwrap();
    assert!((30.0..35.0).contains(&total), "{total}");
}

#[test]
fn random_bytes_as_a_kernel_fail_at_stage_none_by_the_boot_timeout() {
    let dir = fixtures();
    let run = boot_to_stage_none(&f(&dir, "garbage.bin"), None);
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
}

#[test]
fn an_arm64_kernel_booted_as_x86_64_fails_at_stage_none() {
    let dir = fixtures();
    boot_to_stage_none(
        &f(&dir, "arm64/kernel"),
        Some(&f(&dir, "arm64/initrd-poweroff.cpio.gz")),
    );
}

#[test]
fn an_unknown_arch_is_a_usage_error() {
    let out = Command::new(RUNNER)
        .args(["boot", "--arch", "mips", "--kernel", "/k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mips"));
}

#[test]
fn a_nonexistent_kernel_is_an_artifact_error() {
    let run = boot(
        &["--arch", "x86_64", "--kernel", "/nonexistent/bzImage"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, 3);
    assert_eq!(run.json["result"], "error");
    assert_eq!(run.json["error"]["kind"], "artifact_missing");
    assert_eq!(run.json["stage"], "none");
}

#[test]
fn missing_qemu_names_the_debian_package() {
    let empty = tempfile::tempdir().unwrap();
    for (arch, package) in [
        ("x86_64", "qemu-system-x86"),
        ("arm64", "qemu-system-arm"),
        ("riscv64", "qemu-system-misc"),
        ("ppc64le", "qemu-system-ppc"),
    ] {
        let out = Command::new(RUNNER)
            .args(["boot", "--arch", arch, "--kernel", "/k", "--output", "json"])
            .env("BOOTFARM_QEMU_DIR", empty.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["error"]["kind"], "qemu_missing");
        let msg = json["error"]["message"].as_str().unwrap();
        assert!(msg.contains(package), "{msg}");
    }
}

#[test]
fn kvm_on_request_passes_or_is_an_error_never_a_hang() {
    let dir = fixtures();
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--initrd",
            &f(&dir, "x86_64/initrd-poweroff.cpio.gz"),
            "--accel",
            "kvm",
            "--boot-timeout",
            "60",
        ],
        Duration::from_secs(100),
    );
    match run.code {
        0 => assert_eq!(run.json["accel"], "kvm"),
        3 => {
            assert_eq!(
                run.json["error"]["kind"], "kvm_unavailable",
                "{:#}",
                run.json
            );
            assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
        }
        other => panic!("exit {other}: {:#}", run.json),
    }
}

#[test]
fn accel_auto_says_which_accelerator_and_why() {
    let dir = fixtures();
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--initrd",
            &f(&dir, "x86_64/initrd-poweroff.cpio.gz"),
            "--boot-timeout",
            BOOT_TIMEOUT,
        ],
        Duration::from_secs(200),
    );
    assert_pass(&run, "userspace");
    let accel = run.json["accel"].as_str().unwrap();
    let why = run.json["accel_reason"].as_str().unwrap();
    assert!(
        accel == "kvm" || why.contains("fell back to tcg"),
        "{accel}: {why}"
    );
    // The verdict is cached for the host: a foreign-arch guest never probes, an x86 one reuses it.
    let cached = cache_dir().join("host/kvm-qemu-system-x86_64.json");
    if Path::new("/dev/kvm").exists() && std::env::consts::ARCH == "x86_64" {
        assert!(cached.exists(), "{}", cached.display());
    }
}

#[test]
fn a_flooding_guest_gets_a_bounded_log() {
    let dir = fixtures();
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--initrd",
            &f(&dir, "x86_64/initrd-flood.cpio.gz"),
            "--accel",
            "tcg",
            // Long enough for a loaded CI machine to boot and then flood well past the cap.
            "--boot-timeout",
            "40",
            "--console-limit",
            "64K",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.json["reason"], "timeout");
    let console = &run.json["console"];
    assert_eq!(console["truncated"], true, "{console}");
    assert!(console["bytes"].as_u64().unwrap() > 128 * 1024, "{console}");
    // Head + tail + two one-line markers.
    assert!(run.log.len() <= 64 * 1024 + 512, "{}", run.log.len());
    assert!(run.log.contains("Linux version"), "the head is kept");
    assert!(run.log.contains("bytes omitted"), "the cut is marked");
    let omitted = run.log.rfind("bytes omitted").unwrap();
    let tail = &run.log[omitted..];
    assert!(
        tail.len() > 16 * 1024,
        "the tail is kept: {} bytes",
        tail.len()
    );
    assert!(tail.contains("bootfarm: flood"), "the tail is the flood");
    // Memory stays bounded too: the runner holds at most the cap's tail half, not the log.
    assert!(
        run.peak_rss_kib > 0 && run.peak_rss_kib < 64 * 1024,
        "{} KiB",
        run.peak_rss_kib
    );
}

/// A guest that floods well past the limit and then panics: the stored log keeps the head,
/// one marker, and a tail that ends with the panic; offline, `classify` reads the cut log as the
/// live run did (a panic, truncated) and makes nothing of the marker.
#[test]
fn a_guest_that_floods_then_panics_keeps_the_panic_at_the_end_of_its_log() {
    let dir = fixtures();
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--initrd",
            &f(&dir, "x86_64/initrd-shell.cpio.gz"),
            "--accel",
            "tcg",
            "--boot-timeout",
            BOOT_TIMEOUT,
            "--console-limit",
            "64K",
            "--command",
            "yes 'bootfarm: flood 0123456789 abcdefghijklmnopqrstuvwxyz' | head -c 400000; \
             echo c > /proc/sysrq-trigger",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(run.json["reason"], "panic", "{:#}", run.json);
    let console = &run.json["console"];
    assert_eq!(console["truncated"], true, "{console}");
    assert!(console["bytes"].as_u64().unwrap() > 400_000, "{console}");
    assert!(run.log.len() <= 64 * 1024 + 512, "{}", run.log.len());
    assert!(run.log.contains("Linux version"), "the head is kept");
    assert_eq!(run.log.matches("bytes omitted by the runner]").count(), 1);
    let panic_at = run
        .log
        .rfind("Kernel panic - not syncing")
        .expect("the panic is kept");
    assert!(
        !run.log[panic_at..].contains("bootfarm: flood"),
        "the log ends with the panic"
    );

    let mut saved = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut saved, &run.raw_log).unwrap();
    let out = Command::new(RUNNER)
        .arg("classify")
        .arg(saved.path())
        .output()
        .unwrap();
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["result", "reason", "stage", "kernel_version"] {
        assert_eq!(offline[field], run.json[field], "{field}: {offline:#}");
    }
    assert_eq!(offline["console"]["truncated"], true);
    assert!(
        offline["issues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| !i["excerpt"].as_str().unwrap_or("").contains("[bootfarm:")),
        "{offline:#}"
    );
}

/// QEMU children of `pid` (any of its threads).
fn qemu_children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                kids.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    kids.retain(|k| {
        std::fs::read_to_string(format!("/proc/{k}/comm"))
            .map(|c| c.starts_with("qemu-system"))
            .unwrap_or(false)
    });
    kids
}

/// Gone, or a zombie waiting to be reaped (dead either way).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Start a boot of the silent guest and return the runner and its QEMU once QEMU runs.
fn start_silent_boot(dir: &Path) -> (Child, u32) {
    let child = Command::new(RUNNER)
        .args([
            "boot", "--arch", "x86_64", "--accel", "tcg", "--output", "json",
        ])
        .args(["--kernel", &f(dir, "x86_64/kernel")])
        .args(["--initrd", &f(dir, "x86_64/initrd-silent.cpio.gz")])
        .args(["--log", "/dev/null", "--boot-timeout", "120"])
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut qemu = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            qemu = qemu_children(child.id()).first().copied();
            qemu.is_some()
        }),
        "QEMU never started"
    );
    (child, qemu.unwrap())
}

#[test]
fn sigterm_during_a_boot_is_an_interrupted_error_and_leaves_no_qemu() {
    let dir = fixtures();
    let _one = ONE_BOOT_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (child, qemu) = start_silent_boot(&dir);
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, stdout) = wait_bounded(child, Duration::from_secs(15));
    assert_eq!(code, 3);
    let json: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(json["result"], "error");
    assert_eq!(json["error"]["kind"], "interrupted");
    assert!(is_dead(qemu), "QEMU {qemu} survived SIGTERM of the runner");
}

#[test]
fn sigkill_of_the_runner_takes_qemu_with_it() {
    let dir = fixtures();
    let _one = ONE_BOOT_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (mut child, qemu) = start_silent_boot(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || is_dead(qemu)),
        "QEMU {qemu} outlived the SIGKILLed runner"
    );
}

#[test]
fn qemu_refusing_the_jobs_machine_is_an_invalid_job_with_its_stderr() {
    let dir = fixtures();
    // Well-formed by the grammar, unknown to this QEMU: QEMU itself refuses it at start.
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--machine",
            "pc-q35-1.0",
            "--accel",
            "tcg",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 3, "{:#}", run.json);
    assert_eq!(run.json["error"]["kind"], "invalid_job");
    let msg = run.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("machine"), "{msg}");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn qemu_dying_at_start_is_a_qemu_failed_error_with_its_stderr() {
    let dir = fixtures();
    let fake = tempfile::tempdir().unwrap();
    let qemu = fake.path().join("qemu-system-x86_64");
    std::fs::write(
        &qemu,
        "#!/bin/sh\necho 'qemu-system-x86_64: failed to initialize the host: no space' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&qemu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            &f(&dir, "x86_64/kernel"),
            "--accel",
            "tcg",
            "--qemu-binary-dir",
            &fake.path().display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 3, "{:#}", run.json);
    assert_eq!(run.json["error"]["kind"], "qemu_failed");
    let msg = run.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("failed to initialize the host"), "{msg}");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn options_outside_the_grammar_are_usage_errors() {
    for (flag, value) in [
        ("--machine", "q35,dumpdtb=x.dtb"),
        ("--machine", "no-such-machine"),
        ("--cpu", "Nehalem,model-id=x"),
        ("--memory", "1T"),
        ("--boot-args", "a\u{1b}b"),
    ] {
        let out = Command::new(RUNNER)
            .args(["boot", "--arch", "x86_64", "--kernel", "/k", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(out.stdout.is_empty(), "no result for a usage error");
    }
}

/// Every profile's command line is one the installed QEMU accepts: a non-kernel makes each
/// arch fail at stage none (QEMU rejects the image or the guest never prints), never a
/// `qemu_failed` error from a bad machine, CPU or device name.
#[test]
fn every_arch_profile_starts_under_the_installed_qemu() {
    let dir = fixtures();
    for arch in [
        "x86_64", "i386", "arm64", "armv7", "riscv64", "ppc64le", "s390x",
    ] {
        let run = boot(
            &[
                "--arch",
                arch,
                "--kernel",
                &f(&dir, "garbage.bin"),
                "--accel",
                "tcg",
                "--boot-timeout",
                "3",
            ],
            Duration::from_secs(30),
        );
        // scripts/setup-host installs every arch's QEMU: a missing one is a failure.
        assert_ne!(run.json["error"]["kind"], "qemu_missing", "{arch}");
        assert_eq!(run.json["stage"], "none", "{arch}");
        if qemu_aborted_on_guest_code(&run.json) {
            continue;
        }
        assert_eq!(run.code, 1, "{arch}: {:#}", run.json);
        assert!(run.json["qemu"]["version"].is_string() || run.json["reason"] == "kernel_rejected");
    }
}

/// Runs a reproducer script (console on stdout) and classifies what it printed.
fn run_reproducer(script: &Path, limit: Duration) -> Value {
    run_reproducer_with(script, limit, &[])
}

/// [`run_reproducer`] with environment variables for the script.
fn run_reproducer_with(script: &Path, limit: Duration, env: &[(&str, &Path)]) -> Value {
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let console = work.path().join("console.log");
    let child = Command::new("sh")
        .arg(script)
        // Its own process group: a timeout takes QEMU and any helper with it.
        .process_group(0)
        .env("WORK", work.path().join("files"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = std::thread::spawn(move || child.wait_with_output().unwrap());
    let ended = wait_until(limit, || out.is_finished());
    if !ended {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(format!("-{pid}"))
            .status();
        let _ = Command::new("pkill")
            .args(["-9", "-P", &pid.to_string()])
            .status();
    }
    let out = out.join().unwrap();
    assert!(ended, "the reproducer ran past {limit:?}");
    assert!(
        out.status.success(),
        "reproducer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classified = Command::new(RUNNER)
        .arg("classify")
        .arg(&console)
        .output()
        .unwrap();
    serde_json::from_slice(&classified.stdout).unwrap()
}

#[test]
fn a_reproducer_boots_the_same_kernel_to_the_same_verdict() {
    for (arch, initrd) in [
        ("x86_64", "initrd-poweroff.cpio.gz"),
        ("x86_64", "initrd-panic.cpio.gz"),
        ("arm64", "initrd-poweroff.cpio.gz"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let script = work.path().join("reproduce.sh");
        let run = boot_fixture(
            arch,
            initrd,
            BOOT_TIMEOUT,
            &["--reproducer", script.to_str().unwrap()],
            Duration::from_secs(200),
        );
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.starts_with("#!/bin/sh"), "{text}");
        let mode = std::fs::metadata(&script).unwrap().permissions();
        assert_ne!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111,
            0,
            "executable"
        );
        let again = run_reproducer(&script, Duration::from_secs(200));
        for field in ["result", "reason", "stage", "kernel_version"] {
            assert_eq!(
                again[field], run.json[field],
                "{arch} {initrd}: {field}\n{text}"
            );
        }
        let kinds = |v: &Value| -> Vec<Value> {
            v["issues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["title"].clone())
                .collect()
        };
        assert_eq!(kinds(&again), kinds(&run.json), "{arch} {initrd}");
    }
}

#[test]
fn a_boot_that_never_reached_qemu_has_no_reproducer_but_keeps_its_verdict() {
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("reproduce.sh");
    let run = boot(
        &[
            "--arch",
            "x86_64",
            "--kernel",
            "/nonexistent/bzImage",
            "--reproducer",
            script.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 3);
    assert_eq!(run.json["error"]["kind"], "artifact_missing");
    assert!(!script.exists());
}

/// A modules tarball as TuxMake writes it (`lib/modules/<version>/…`, xz), with `modules.dep`.
fn modules_tarball(dir: &Path, version: &str, out: &Path) {
    let ko =
        std::fs::read(dir.join("x86_64/bootfarm_trigger.ko")).expect("the trigger module fixture");
    let (ko_path, dep_path) = (
        format!("lib/modules/{version}/extra/bootfarm_trigger.ko"),
        format!("lib/modules/{version}/modules.dep"),
    );
    let xz = xz2::write::XzEncoder::new(std::fs::File::create(out).unwrap(), 1);
    tar_files(
        xz,
        &[
            (&ko_path, 0o644, &ko),
            (&dep_path, 0o644, b"extra/bootfarm_trigger.ko:\n"),
        ],
    )
    .finish()
    .unwrap();
}

/// A tar archive of (path, mode, content) written into `w`; returns `w` to be finished.
fn tar_files<W: std::io::Write>(w: W, files: &[(&str, u32, &[u8])]) -> W {
    let mut tar = tar::Builder::new(w);
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// KIR: the tarball is repacked into the initramfs (no unpacked tree, no tar in the guest), the
/// module loads in the real guest from where TuxMake put it, and lsmod shows it.
#[test]
fn a_modules_tarball_is_repacked_into_the_initramfs_and_its_module_loads() {
    let dir = fixtures();
    let version = kernel_version(&dir, "x86_64");
    let tmp = tempfile::TempDir::new().unwrap();
    let tarball = tmp.path().join("modules.tar.xz");
    modules_tarball(&dir, &version, &tarball);
    let tarball = tarball.display().to_string();
    let run = boot_fixture(
        "x86_64",
        "initrd-shell.cpio.gz",
        BOOT_TIMEOUT,
        &[
            "--expect",
            "shell",
            "--modules",
            &tarball,
            "--command",
            "insmod /lib/modules/$(uname -r)/extra/bootfarm_trigger.ko mode=warn",
            "--command",
            "lsmod",
        ],
        Duration::from_secs(200),
    );
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.log);
    let tests = run.json["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2, "{tests:?}");
    assert!(tests.iter().all(|t| t["result"] == "pass"), "{tests:?}");
    let lsmod = tests[1]["output"].as_str().unwrap_or_default();
    assert!(lsmod.contains("bootfarm_trigger"), "lsmod: {lsmod}");
    // The module's own code ran: its WARN is a (non-fatal) issue in its init function.
    assert!(
        run.log.contains("bootfarm_trigger: mode=warn returned"),
        "{}",
        run.log
    );
    let issues = run.json["issues"].as_array().unwrap();
    assert!(
        issues
            .iter()
            .any(|i| i["kind"] == "warning" && i["function"] == "bootfarm_trigger_init"),
        "{issues:#?}"
    );
    assert!(run.json.get("warnings").is_none(), "{:#}", run.json);
    assert!(run.json["artifacts"]["modules"]["sha256"].is_string());
}

/// Modules built for another kernel: the boot goes on, and the result says why they cannot load.
#[test]
fn modules_for_another_kernel_are_a_warning_in_the_result() {
    let dir = fixtures();
    let tmp = tempfile::TempDir::new().unwrap();
    let tarball = tmp.path().join("modules.tar.xz");
    modules_tarball(&dir, "5.10.0-99-other", &tarball);
    let tarball = tarball.display().to_string();
    let script = tmp.path().join("reproduce.sh");
    let run = boot_fixture(
        "x86_64",
        "initrd-poweroff.cpio.gz",
        BOOT_TIMEOUT,
        &[
            "--modules",
            &tarball,
            "--reproducer",
            script.to_str().unwrap(),
        ],
        Duration::from_secs(200),
    );
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.log);
    // The reproducer repacks the tarball with tar and cpio, and boots to the same verdict.
    let again = run_reproducer(&script, Duration::from_secs(200));
    assert_eq!(again["result"], run.json["result"]);
    assert_eq!(again["stage"], run.json["stage"]);
    let warnings = run.json["warnings"].as_array().expect("a warnings list");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("lib/modules/5.10.0-99-other") && w.contains(&kernel_version(&dir, "x86_64")),
        "{w}"
    );
}

/// A hostile tarball never reaches the guest: the boot is an error naming the entry.
#[test]
fn a_modules_tarball_that_climbs_out_is_refused_before_the_boot() {
    let _ = fixtures();
    let tmp = tempfile::TempDir::new().unwrap();
    let tarball = tmp.path().join("evil.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        // The tar crate's path setters refuse `..`, as they should: write the name by hand.
        h.as_gnu_mut().unwrap().name[..16].copy_from_slice(b"../../etc/passwd");
        h.set_cksum();
        tar.append(&h, &b"root"[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let tarball = tarball.display().to_string();
    let run = boot_fixture(
        "x86_64",
        "initrd-poweroff.cpio.gz",
        BOOT_TIMEOUT,
        &["--modules", &tarball],
        Duration::from_secs(60),
    );
    assert_eq!(run.json["result"], "error", "{:#}", run.json);
    assert_eq!(run.json["error"]["kind"], "artifact_unreadable");
    let msg = run.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("../../etc/passwd") && msg.contains("climbs out"),
        "{msg}"
    );
    assert!(
        run.json["qemu"].is_null(),
        "QEMU never started: {:#}",
        run.json
    );
}

/// A gzip tarball of (path, mode, content).
fn tarball_gz(out: &Path, files: &[(&str, u32, &[u8])]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    tar_files(gz, files).finish().unwrap();
}

/// `--overlay SRC[:PATH]` as TuxRun's: each tarball lands in the guest at its directory, in
/// order (a later one wins), with its modes; the guest runs what the overlay brought.
#[test]
fn overlays_land_at_their_paths_in_order_and_run() {
    let tmp = tempfile::TempDir::new().unwrap();
    let first = tmp.path().join("suite.tar.gz");
    tarball_gz(
        &first,
        &[
            (
                "opt/bootfarm/hello",
                0o755,
                b"#!/bin/sh\necho hello from the overlay\n",
            ),
            ("etc/bootfarm/motd", 0o644, b"the first overlay\n"),
        ],
    );
    let second = tmp.path().join("conf.tar.gz");
    tarball_gz(&second, &[("motd", 0o644, b"the second overlay wins\n")]);
    let first = first.display().to_string();
    let second = format!("{}:/etc/bootfarm", second.display());
    let run = boot_fixture(
        "x86_64",
        "initrd-shell.cpio.gz",
        BOOT_TIMEOUT,
        &[
            "--expect",
            "shell",
            "--overlay",
            &first,
            "--overlay",
            &second,
            "--command",
            "/opt/bootfarm/hello",
            "--command",
            "cat /etc/bootfarm/motd",
        ],
        Duration::from_secs(200),
    );
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.log);
    let tests = run.json["tests"].as_array().unwrap();
    let out = |i: usize| tests[i]["output"].as_str().unwrap_or_default().to_string();
    assert_eq!(out(0).trim(), "hello from the overlay", "{tests:?}");
    assert_eq!(out(1).trim(), "the second overlay wins", "{tests:?}");
    let a = &run.json["artifacts"];
    assert_eq!(a["overlay-0"]["path"], "/", "{a:#}");
    assert_eq!(a["overlay-1"]["path"], "/etc/bootfarm", "{a:#}");
}

/// The generic Debian disk root `scripts/rootfs` built for `arch` (no kernel, no modules in it).
fn disk_rootfs(arch: &str) -> PathBuf {
    bootfarm_core::paths::require_disk_root(arch)
}

/// `boot` of `arch`'s fixture kernel on its Debian disk root, with the fixture modules tarball
/// `modules` and no initrd, under TCG, with `extra` flags.
fn boot_disk_root(
    arch: &str,
    modules: &str,
    boot_timeout: &str,
    extra: &[&str],
    limit: Duration,
) -> Run {
    let dir = fixtures();
    let rootfs = disk_rootfs(arch).display().to_string();
    let kernel = f(&dir, &format!("{arch}/kernel"));
    let modules = f(&dir, modules);
    let mut args = vec![
        "--arch",
        arch,
        "--kernel",
        &kernel,
        "--rootfs",
        &rootfs,
        "--modules",
        &modules,
        "--accel",
        "tcg",
        "--boot-timeout",
        boot_timeout,
    ];
    args.extend_from_slice(extra);
    boot(&args, limit)
}

/// KIR on a disk: a generic Debian root filesystem (ext4, from mmdebstrap), the distribution
/// kernel, its modules only as a TuxMake tarball, no initramfs. bootfarm's early initramfs loads
/// the disk and ext4 drivers from the tarball, merges the modules and an overlay into a
/// copy-on-write snapshot of the root, and the root's own systemd comes up to a login prompt.
fn a_debian_disk_root_boots_with_the_kernels_modules_from_a_tarball(arch: &str, disk_driver: &str) {
    let dir = fixtures();
    let rootfs = disk_rootfs(arch);
    let before = std::fs::metadata(&rootfs).unwrap();
    let version = kernel_version(&dir, arch);
    let tmp = tempfile::TempDir::new().unwrap();
    let overlay = tmp.path().join("suite.tar.gz");
    tarball_gz(
        &overlay,
        &[(
            "bootfarm/hello",
            0o755,
            b"#!/bin/sh\necho hello from the overlay on $(uname -m)\n",
        )],
    );
    let overlay = format!("{}:/opt", overlay.display());
    let modules = format!("{arch}/modules.tar.xz");
    let run = boot_disk_root(
        arch,
        &modules,
        "900",
        &[
            "--overlay",
            &overlay,
            "--login",
            "root",
            "--command",
            "uname -a",
            "--command",
            "lsmod",
            "--command",
            "/opt/bootfarm/hello",
            "--command",
            "ls /lib/modules",
        ],
        Duration::from_secs(1000),
    );
    let rootfs_arg = rootfs.display().to_string();
    assert_eq!(run.code, 0, "{:#}\n--- console ---\n{}", run.json, run.log);
    assert_eq!(run.json["result"], "pass");
    let tests = run.json["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 4, "{tests:?}");
    let out = |i: usize| tests[i]["output"].as_str().unwrap_or_default().to_string();
    assert!(out(0).contains(&version), "uname -a: {}", out(0));
    // The image holds no modules at all: whatever lsmod lists came from the tarball, loaded by
    // the early init (the disk and ext4 drivers) or by the root's udev afterwards.
    let lsmod = out(1);
    for m in [disk_driver, "ext4"] {
        assert!(
            lsmod
                .lines()
                .any(|l| l.split_whitespace().next() == Some(m)),
            "lsmod shows no {m}:\n{lsmod}"
        );
    }
    assert!(out(2).contains("hello from the overlay"), "{}", out(2));
    assert_eq!(
        out(3).trim(),
        version,
        "the tarball's tree was merged into the root"
    );
    assert!(run.log.contains("bootfarm-early: loaded"), "{}", run.log);
    assert!(run.log.contains("login:"), "a login prompt: {}", run.log);
    // Copy-on-write: the cached image was never written.
    let after = std::fs::metadata(&rootfs).unwrap();
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
    assert_eq!(before.len(), after.len());
    let argv: Vec<&str> = run.json["qemu"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        argv.iter()
            .any(|a| a.starts_with(&format!("file={rootfs_arg},")) && a.ends_with("snapshot=on")),
        "{argv:?}"
    );
}

#[test]
fn x86_64_debian_disk_root_boots_with_modules_from_a_tarball() {
    a_debian_disk_root_boots_with_the_kernels_modules_from_a_tarball("x86_64", "ahci");
}

#[test]
fn arm64_debian_disk_root_boots_with_modules_from_a_tarball() {
    a_debian_disk_root_boots_with_the_kernels_modules_from_a_tarball("arm64", "virtio_blk");
}

/// The disk root's reproducer rebuilds the early initramfs (from a static busybox given as
/// `BUSYBOX`, the shared init and the drivers the runner loaded) and the merge disk with tar and
/// cpio, and boots to the same verdict: the root's own systemd powering the machine off.
#[test]
fn a_disk_roots_reproducer_rebuilds_its_early_initramfs_and_boots_to_the_same_verdict() {
    let dir = fixtures();
    let tmp = tempfile::TempDir::new().unwrap();
    let script = tmp.path().join("reproduce.sh");
    let run = boot_disk_root(
        "x86_64",
        "x86_64/modules.tar.xz",
        "900",
        &[
            "--expect",
            "poweroff",
            "--boot-args",
            "systemd.unit=poweroff.target",
            "--reproducer",
            script.to_str().unwrap(),
        ],
        Duration::from_secs(1000),
    );
    assert_eq!(run.code, 0, "{:#}\n--- console ---\n{}", run.json, run.log);
    assert_eq!(run.json["reason"], "poweroff", "{:#}", run.json);
    let early = &run.json["qemu"]["early_initramfs"];
    let loaded: Vec<&str> = early["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(loaded.iter().any(|m| m.ends_with("/ext4.ko")), "{early:#}");
    assert_eq!(early["version"], kernel_version(&dir, "x86_64"));
    let busybox = dir.parent().unwrap().join("guest-tools/x86_64/busybox");
    let again = run_reproducer_with(&script, Duration::from_secs(1000), &[("BUSYBOX", &busybox)]);
    for field in ["result", "reason", "stage", "kernel_version"] {
        assert_eq!(again[field], run.json[field], "{field}: {again:#}");
    }
}

/// A disk root's modules must be one kernel's, and overlays cannot be merged into a disk that an
/// initrd of the user's mounts: both are refused before QEMU, with the reason.
#[test]
fn a_disk_root_refuses_two_kernels_modules_and_overlays_beside_its_own_initrd() {
    let dir = fixtures();
    let tmp = tempfile::TempDir::new().unwrap();
    let two = tmp.path().join("two.tar.xz");
    let xz = xz2::write::XzEncoder::new(std::fs::File::create(&two).unwrap(), 1);
    tar_files(
        xz,
        &[
            ("lib/modules/6.1.0-1-amd64/modules.dep", 0o644, b""),
            ("lib/modules/6.1.0-2-amd64/modules.dep", 0o644, b""),
        ],
    )
    .finish()
    .unwrap();
    let disk = f(&dir, "garbage.bin");
    let kernel = f(&dir, "x86_64/kernel");
    // Refused before QEMU as an invalid job; returns the message.
    let refused = |extra: &[&str]| -> String {
        let mut args = vec!["--arch", "x86_64", "--kernel", &kernel, "--rootfs", &disk];
        args.extend_from_slice(extra);
        let run = boot(&args, Duration::from_secs(60));
        assert_eq!(run.code, 3, "{:#}", run.json);
        assert_eq!(run.json["error"]["kind"], "invalid_job", "{:#}", run.json);
        assert!(run.json["qemu"].is_null(), "no QEMU: {:#}", run.json);
        run.json["error"]["message"].as_str().unwrap().to_string()
    };
    let two = two.display().to_string();
    let msg = refused(&["--modules", &two]);
    assert!(msg.contains("6.1.0-1-amd64, 6.1.0-2-amd64"), "{msg}");

    let overlay = tmp.path().join("o.tar.gz");
    tarball_gz(&overlay, &[("x", 0o644, b"x")]);
    let overlay = overlay.display().to_string();
    let initrd = f(&dir, "x86_64/initrd-poweroff.cpio.gz");
    let msg = refused(&["--initrd", &initrd, "--overlay", &overlay]);
    assert!(msg.contains("initrd of your own"), "{msg}");
}

/// Another kernel's modules tarball on a disk root (arm64's tree, an x86_64 kernel): the early
/// init cannot load the drivers and says so; its exit panics the kernel, and the result fails
/// with the warning naming both versions; never a hang, never a pass, never a corrupted boot.
#[test]
fn a_disk_root_with_another_kernels_modules_fails_fast_with_the_warning() {
    let dir = fixtures();
    let run = boot_disk_root(
        "x86_64",
        "arm64/modules.tar.xz",
        "300",
        &["--login", "root"],
        Duration::from_secs(400),
    );
    assert_eq!(run.code, 1, "{:#}\n{}", run.json, run.log);
    assert_eq!(run.json["result"], "fail");
    assert!(run.log.contains("bootfarm-early: ERROR:"), "{}", run.log);
    assert_eq!(run.json["reason"], "panic", "{:#}", run.json);
    let w = run.json["warnings"][0].as_str().unwrap_or_default();
    assert!(
        w.contains(&kernel_version(&dir, "arm64")) && w.contains(&kernel_version(&dir, "x86_64")),
        "{:#}",
        run.json
    );
    assert!(
        run.elapsed < Duration::from_secs(200),
        "failed at once, not timed out: {:?}",
        run.elapsed
    );
}
