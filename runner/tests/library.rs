//! `run_boot` as the operator's work loop uses it: console hook and cancellation.

// Test helpers outside #[test] functions: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use bootfarm_core::result::Verdict;
use bootfarm_core::Arch;
use bootfarm_runner::accel::AccelRequest;
use bootfarm_runner::boot::{run_boot, ArtifactSource, BootHooks, BootRequest};
use std::path::PathBuf;
use std::time::Duration;

fn fixtures() -> PathBuf {
    bootfarm_core::paths::require_fixtures()
}

fn request(dir: &std::path::Path, initrd: &str) -> BootRequest {
    BootRequest {
        arch: Arch::Arm64,
        kernel: ArtifactSource::new(dir.join("arm64/kernel").display().to_string()),
        initrd: Some(ArtifactSource::new(
            dir.join("arm64").join(initrd).display().to_string(),
        )),
        accel: AccelRequest::Tcg,
        boot_timeout: Duration::from_secs(120),
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runner-test-cache")),
        ..BootRequest::default()
    }
}

#[tokio::test]
async fn the_console_hook_sees_the_stream_and_the_result_comes_back() {
    let dir = fixtures();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let hooks = BootHooks {
        console: Some(tx),
        ..BootHooks::default()
    };
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    });
    let result = run_boot(request(&dir, "initrd-poweroff.cpio.gz"), hooks).await;
    let console = collect.await.unwrap();
    assert_eq!(result.result, Verdict::Pass, "{result:#?}");
    assert_eq!(console.len() as u64, result.console.bytes);
    let text = String::from_utf8_lossy(&console);
    assert!(text.contains("bootfarm: userspace up"), "{text}");
}

#[tokio::test]
async fn cancelling_stops_the_boot_with_an_interrupted_error() {
    let dir = fixtures();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let hooks = BootHooks {
        console: Some(tx),
        ..BootHooks::default()
    };
    let cancel = hooks.cancel.clone();
    // Cancel once the guest is running (its first console bytes), however long getting there took.
    let canceled_at = tokio::spawn(async move {
        let _ = rx.recv().await;
        cancel.cancel();
        let at = std::time::Instant::now();
        while rx.recv().await.is_some() {}
        at
    });
    let result = run_boot(request(&dir, "initrd-silent.cpio.gz"), hooks).await;
    let stopped = std::time::Instant::now();
    assert_eq!(result.result, Verdict::Error, "{result:#?}");
    assert_eq!(result.error.unwrap().kind.as_str(), "interrupted");
    let canceled_at = canceled_at.await.unwrap();
    assert!(stopped.duration_since(canceled_at) < Duration::from_secs(10));
    assert_eq!(result.arch, Some(Arch::Arm64));
    assert_eq!(result.accel.as_deref(), Some("tcg"));
}
