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
        "kernel": {"url": "/nonexistent/bzImage"},
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
}
