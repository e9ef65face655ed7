//! The interactive session against a real guest: an x86_64 Debian kernel under QEMU (TCG)
//! with the busybox getty initramfs from `scripts/fixtures`. The test plays the runner's part
//! (serial console on QEMU's stdio), so the state machine, the echo pacing and the command
//! markers meet a real serial console. Skipped, loudly, when the fixtures are absent.

use bootfarm_core::console::session::{Action, Session, SessionConfig};
use bootfarm_core::console::{Classification, Classifier, ClassifierConfig};
use bootfarm_core::result::{Stage, TestOutcome};
use bootfarm_core::verdict::{decide, End, Expect};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    bootfarm_core::paths::require_fixtures()
}

/// Kills QEMU whatever happens to the test.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    class: Classification,
    log: Vec<u8>,
    failure: Option<String>,
    exited: bool,
}

fn boot(fx: &std::path::Path, cfg: SessionConfig) -> Run {
    boot_initrd(fx, "initrd-login.cpio.gz", cfg)
}

fn boot_initrd(fx: &std::path::Path, initrd: &str, cfg: SessionConfig) -> Run {
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-M", "q35", "-cpu", "Nehalem", "-m", "512M", "-smp", "1", "-accel", "tcg",
        ])
        .args([
            "-no-reboot",
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(fx.join("x86_64/kernel"))
        .arg("-initrd")
        .arg(fx.join("x86_64").join(initrd))
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let mut qemu = Qemu(child);
    let mut stdin = qemu.0.stdin.take().expect("stdin");
    let mut stdout = qemu.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut classifier = Classifier::new(ClassifierConfig::default());
    let mut session = Session::new(cfg, "f00dcafe");
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_output = Instant::now();
    let mut finished_at: Option<Instant> = None;
    let mut exited = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(bytes) => {
                last_output = Instant::now();
                log.extend_from_slice(&bytes);
                let events = classifier.feed(&bytes);
                for a in session.on_output(&bytes, &events) {
                    match a {
                        Action::Send(b) => {
                            stdin.write_all(&b).expect("write to the console");
                            stdin.flush().expect("flush the console");
                        }
                        Action::Finish => finished_at = Some(Instant::now()),
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if session.is_active() && last_output.elapsed() > Duration::from_secs(5) {
                    for a in session.on_idle() {
                        if let Action::Send(b) = a {
                            stdin.write_all(&b).expect("write to the console");
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
        if finished_at.is_some_and(|t| t.elapsed() > Duration::from_secs(15)) {
            break;
        }
    }
    drop(qemu);
    // Kept for a look when an assertion fails.
    let _ = std::fs::write(std::env::temp_dir().join("bootfarm-live-session.log"), &log);
    Run {
        class: classifier.finish(),
        log,
        failure: session.failure().map(str::to_string),
        exited,
    }
}

#[test]
fn login_as_root_runs_commands_and_powers_off() {
    let fx = fixtures();
    let run = boot(
        &fx,
        SessionConfig {
            login: Some("root".parse().expect("login")),
            commands: vec![
                "uname -a".into(),
                "echo to-kmsg > /dev/kmsg; echo out; false".into(),
            ],
        },
    );
    let text = String::from_utf8_lossy(&run.log);
    let c = &run.class;
    assert_eq!(c.stage, Stage::Shell, "log:\n{text}");
    let tests: Vec<_> = c
        .tests
        .iter()
        .map(|t| (t.suite.as_str(), t.name.as_str(), t.result))
        .collect();
    assert_eq!(
        tests,
        vec![
            ("commands", "uname -a", TestOutcome::Pass),
            (
                "commands",
                "echo to-kmsg > /dev/kmsg; echo out; false",
                TestOutcome::Fail
            ),
        ],
        "log:\n{text}"
    );
    let uname = c.tests[0].output.as_deref().unwrap_or("");
    assert!(
        uname.starts_with("Linux bootfarm 6.") || uname.starts_with("Linux "),
        "{uname:?}"
    );
    // The kernel's copy of the /dev/kmsg line is not command output; the command's own is.
    assert_eq!(c.tests[1].output.as_deref(), Some("out\n"), "log:\n{text}");
    assert_eq!(c.tests[1].reason.as_deref(), Some("exit status 1"));
    assert!(
        c.powered_off && run.exited,
        "poweroff -f ends the run; log:\n{text}"
    );
    assert_eq!(run.failure, None);
    let d = decide(c, Expect::Auto, End::PowerOff);
    assert_eq!(d.reason, "test_failed");

    // The saved log classifies to the same tests offline.
    let mut offline = Classifier::new(ClassifierConfig::default());
    offline.feed(&run.log);
    assert_eq!(&offline.finish(), c);
}

#[test]
fn a_wrong_password_is_login_incorrect() {
    let fx = fixtures();
    let run = boot(
        &fx,
        SessionConfig {
            login: Some("tester:wrong".parse().expect("login")),
            commands: vec!["true".into()],
        },
    );
    let text = String::from_utf8_lossy(&run.log);
    assert_eq!(
        run.failure.as_deref(),
        Some("Login incorrect"),
        "log:\n{text}"
    );
    assert!(run.class.login_incorrect);
    assert_eq!(
        decide(&run.class, Expect::Auto, End::PromptReached).reason,
        "login_incorrect"
    );
}

#[test]
fn lava_signals_and_ktap_from_a_real_shell_with_kmsg() {
    let fx = fixtures();
    let run = boot_initrd(
        &fx,
        "initrd-shell.cpio.gz",
        SessionConfig {
            login: None,
            commands: vec![
                // Long enough for the terminal to wrap the echo, which repeats the signals.
                "echo '<LAVA_SIGNAL_STARTRUN 0_smoke 77>'; echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=echo RESULT=pass>'".into(),
                "echo '<LAVA_SIGNAL_TESTCASE RESULT=fail TEST_CASE_ID=kmsg MEASUREMENT=2 UNITS=s>' > /dev/kmsg".into(),
                "printf 'KTAP version 1\\n1..3\\nok 1 first\\nnot ok 2 second # SKIP later\\n'".into(),
                "echo '<LAVA_SIGNAL_ENDRUN 0_smoke 77>'".into(),
            ],
        },
    );
    let text = String::from_utf8_lossy(&run.log);
    let c = &run.class;
    let tests: Vec<_> = c
        .tests
        .iter()
        .map(|t| (t.suite.as_str(), t.name.as_str(), t.result))
        .collect();
    use TestOutcome::*;
    let lava_and_ktap: Vec<_> = tests
        .iter()
        .filter(|t| t.0 != "commands")
        .cloned()
        .collect();
    assert_eq!(
        lava_and_ktap,
        vec![
            ("0_smoke", "echo", Pass),
            ("0_smoke", "kmsg", Fail),
            ("", "first", Pass),
            ("", "second", Skip),
            ("", "ktap: missing results (2 of 3)", Fail),
        ],
        "log:\n{text}"
    );
    let kmsg = c
        .tests
        .iter()
        .find(|t| t.name == "kmsg")
        .expect("kmsg case");
    assert_eq!(
        (kmsg.measurement, kmsg.units.as_deref()),
        (Some(2.0), Some("s"))
    );
    let commands: Vec<_> = tests
        .iter()
        .filter(|t| t.0 == "commands")
        .map(|t| t.2)
        .collect();
    assert_eq!(commands, vec![Pass; 4], "log:\n{text}");
    assert!(c.powered_off, "log:\n{text}");
    let mut offline = Classifier::new(ClassifierConfig::default());
    offline.feed(&run.log);
    assert_eq!(&offline.finish(), c);
}
