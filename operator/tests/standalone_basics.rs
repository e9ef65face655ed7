//! The standalone farm without booting anything: persistence across restarts, cancel, TTL
//! cleanup of jobs and their files, and a crash-looping runner binary that must neither block
//! the queue nor fork-storm the machine.

mod standalone_support;

use serde_json::json;
use standalone_support::*;
use std::time::Duration;

fn job(name: &str, ttl: Option<u64>) -> serde_json::Value {
    let mut spec = json!({
        "arch": "x86_64",
        "kernel": {"url": "https://artifacts.invalid/bzImage"},
        "expect": "poweroff"
    });
    if let Some(ttl) = ttl {
        spec["ttlSecondsAfterFinished"] = json!(ttl);
    }
    json!({"apiVersion": "bootfarm.dev/v1alpha1", "kind": "BootJob", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_jobs_survive_a_restart_and_finished_ones_go_after_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    // No runners: jobs stay where we put them.
    let mut farm = Farm::start(dir.path(), &["--max-runners", "0"]).await;
    farm.submit(&job("waits", None)).await;
    farm.submit(&job("short-lived", Some(2))).await;
    farm.submit(&job("kept", None)).await;
    for name in ["short-lived", "kept"] {
        let r = reqwest::Client::new()
            .delete(format!("{}/api/v1/bootjobs/{name}", farm.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    // A log file for the short-lived job, to see it removed with the job.
    let job_dir = dir.path().join("jobs/short-lived");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(job_dir.join("console.log"), "boot\n").unwrap();

    farm.kill9();
    farm.restart().await;
    assert_eq!(phase(&farm.job("waits").await), "Queued");
    assert_eq!(phase(&farm.job("kept").await), "Canceled");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let names: Vec<String> = farm
            .jobs()
            .await
            .iter()
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if !names.iter().any(|n| n == "short-lived") {
            assert_eq!(names.len(), 2, "{names:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TTL never applied:\n{}",
            farm.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!job_dir.exists(), "the job's files were left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_runner_backs_off_and_leaves_the_job_queued() {
    let dir = tempfile::tempdir().unwrap();
    // `false work --server ...` exits 1 at once: a broken runner binary.
    let farm = Farm::start_with_runner(dir.path(), &["--max-runners", "2"], "/bin/false").await;
    farm.submit(&job("stuck", None)).await;
    let operator = farm.pid();
    let mut most = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        most = most.max(descendants(operator).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spawned = std::fs::read_dir(dir.path().join("runners"))
        .unwrap()
        .count();
    // Without backoff: 2 starts per 0.5 s tick, about 32 in 8 s.
    assert!(
        (2..=12).contains(&spawned),
        "{spawned} runner starts in 8 s"
    );
    assert!(most <= 2, "{most} children at once with --max-runners 2");
    let job = farm.job("stuck").await;
    assert_eq!(
        phase(&job),
        "Queued",
        "never claimed, never failed: {job:#}"
    );
    assert_eq!(job["status"]["attempts"], 0);
    let metrics = farm.metrics().await;
    assert!(
        metrics.contains("bootfarm_runners_desired{pool=\"local\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_operator_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _farm = Farm::start(dir.path(), &["--max-runners", "0"]).await;
    let out = std::process::Command::new(operator_bin())
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--max-runners", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another bootfarm operator"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_for_a_pool_this_farm_does_not_have_ends_in_error_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(dir.path(), &["--max-runners", "0"]).await;
    let mut doc = job("elsewhere", None);
    doc["spec"]["pool"] = json!("gpu");
    farm.submit(&doc).await;
    let job = farm
        .wait_job("elsewhere", Duration::from_secs(10), finished)
        .await;
    assert_eq!(phase(&job), "Error", "{job:#}");
    let conditions = job["status"]["conditions"].to_string();
    assert!(conditions.contains("no runner pool"), "{job:#}");
    // Ended by the farm, not by a runner: counted all the same.
    let metrics = farm.metrics().await;
    assert!(
        metrics.contains(r#"bootfarm_jobs_finished_total{arch="x86_64",result="error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_farm_promptly_even_while_a_log_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let mut farm = Farm::start(dir.path(), &["--max-runners", "0"]).await;
    farm.submit(&job("followed", None)).await;
    // A queued job's log followed: without the shutdown signal this stream lasts for hours.
    let follow = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/bootjobs/followed/log?follow=true",
            farm.url
        ))
        .send()
        .await
        .unwrap();
    assert!(follow.status().is_success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(farm.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = farm.child.take().expect("running");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the operator did not stop within 10 s of SIGTERM:\n{}",
                farm.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", farm.log_text());
    // The follow ended with the server instead of hanging.
    let rest = tokio::time::timeout(Duration::from_secs(5), follow.bytes()).await;
    assert!(rest.is_ok(), "the followed log stream outlived the server");
}

#[tokio::test(flavor = "multi_thread")]
async fn listening_beyond_loopback_without_tokens_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    // On loopback: no warning.
    let farm = Farm::start(dir.path().join("quiet").as_path(), &["--max-runners", "0"]).await;
    assert!(
        !farm.log_text().contains("without authentication"),
        "{}",
        farm.log_text()
    );
    drop(farm);

    let log_path = dir.path().join("exposed.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(operator_bin())
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path().join("exposed"))
        .args(["--listen", "0.0.0.0:0", "--max-runners", "0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("without authentication") || std::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("without authentication") && text.contains("--token-file"),
        "no warning about an open API:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_runners_report_their_start_up_time() {
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(dir.path(), &["--max-runners", "1"]).await;
    // A missing kernel: the runner claims it and fails fast, no QEMU needed.
    farm.submit(&job("no-kernel", None)).await;
    let job = farm
        .wait_job("no-kernel", Duration::from_secs(60), finished)
        .await;
    assert_eq!(phase(&job), "Error", "{job:#}");
    let metrics = farm.metrics().await;
    let count = metric_sum(&metrics, "bootfarm_runner_startup_seconds_count");
    let sum = metric_sum(&metrics, "bootfarm_runner_startup_seconds_sum");
    assert!(count >= 1.0, "no start-up observed:\n{metrics}");
    // Process start to first claim: well under a minute even on a loaded machine.
    assert!(sum / count < 60.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_lists_every_job_of_a_small_farm() {
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(dir.path(), &["--max-runners", "0"]).await;
    for name in ["one", "two", "three"] {
        farm.submit(&job(name, None)).await;
    }
    let out = std::process::Command::new(operator_bin())
        .args(["list", "--server", &farm.url])
        .env_remove("BOOTFARM_TOKEN_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["three", "two", "one"], "{stdout}");
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(!stderr.contains("Only the newest"), "{stderr}");
}
