//! A real guest that floods its console past the farm's limit and then panics, in a real
//! standalone farm: the stored log served by `GET …/log` keeps how the boot started, ends with
//! the panic, says where it was cut, and the result says `console.truncated: true`.

mod standalone_support;

use serde_json::json;
use standalone_support::*;
use std::time::Duration;

/// Small enough that the guest floods well past it in seconds under TCG.
const LIMIT: u64 = 64 << 10;
/// At the shell prompt: about 400 KB of console, then a kernel panic (sysrq `c`).
const FLOOD_THEN_PANIC: &str = "yes 'bootfarm: flood 0123456789 abcdefghijklmnopqrstuvwxyz' \
                                | head -c 400000; echo c > /proc/sysrq-trigger";

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_floods_then_panics_keeps_its_panic_in_the_stored_log() {
    let fx = fixtures().join("x86_64");
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(
        dir.path(),
        &["--max-runners", "1", "--console-limit", &LIMIT.to_string()],
    )
    .await;
    let name = farm
        .submit(&json!({
            "apiVersion": "bootfarm.dev/v1alpha1",
            "kind": "BootJob",
            "metadata": {"name": "flood-then-panic"},
            "spec": {
                "arch": "x86_64",
                "kernel": {"url": fx.join("kernel")},
                "initrd": {"url": fx.join("initrd-shell.cpio.gz")},
                "bootArgs": "console=ttyS0",
                "accel": "tcg",
                "commands": [FLOOD_THEN_PANIC],
                "timeouts": {"boot": 120, "total": 300}
            }
        }))
        .await;
    let job = farm
        .wait_job(&name, Duration::from_secs(360), finished)
        .await;
    let (status, result) = farm.result(&name).await;
    assert_eq!(status, 200, "{job:#}");
    assert_eq!(phase(&job), "Failed", "{result:#}");
    assert_eq!(result["reason"], "panic", "{result:#}");
    assert_eq!(result["console"]["truncated"], true, "{result:#}");
    assert!(
        result["console"]["bytes"].as_u64().unwrap_or(0) > 400_000,
        "the guest printed more than the limit: {result:#}"
    );

    let log = reqwest::get(format!("{}/api/v1/bootjobs/{name}/log", farm.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        log.len() as u64 <= LIMIT + LIMIT / 8 + 512,
        "{} bytes stored",
        log.len()
    );
    assert!(text.contains("Linux version"), "the head is kept");
    let cuts: Vec<&str> = text
        .lines()
        .filter(|l| bootfarm_core::console_cap::marker::parse(l.as_bytes()).is_some())
        .collect();
    assert_eq!(cuts.len(), 1, "one cut, marked once: {cuts:?}");
    // It ends with the panic: nothing of the flood after it.
    let panic_at = text
        .rfind("Kernel panic - not syncing")
        .unwrap_or_else(|| panic!("no panic in the stored log's end:\n{}", tail(&text)));
    assert!(
        !text[panic_at..].contains("bootfarm: flood"),
        "{}",
        tail(&text)
    );
    assert!(text.len() - panic_at < 16 << 10, "{}", tail(&text));

    // Offline, the stored log says what the farm said.
    let saved = dir.path().join("saved.log");
    std::fs::write(&saved, &log).unwrap();
    let out = std::process::Command::new(runner_bin())
        .arg("classify")
        .arg(&saved)
        .output()
        .unwrap();
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["reason"], "panic", "{offline:#}");
    assert_eq!(offline["console"]["truncated"], true, "{offline:#}");
}

fn tail(text: &str) -> &str {
    let mut at = text.len().saturating_sub(3000);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}
