//! `kill -9` the operator mid-run and start it again on the same data dir: no job is lost,
//! none is run twice to completion, and no runner or QEMU outlives the killed operator.

mod standalone_support;

use standalone_support::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_mid_run_loses_nothing_and_finishes_nothing_twice() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let mut farm = Farm::start(
        dir.path(),
        &[
            "--max-runners",
            "2",
            "--lease-ttl",
            "5",
            "--idle-timeout",
            "3",
        ],
    )
    .await;
    let mut names = vec![];
    for i in 0..4 {
        names.push(
            farm.submit(&poweroff_job(&fixtures, &format!("restart-{i}")))
                .await,
        );
    }
    // Wait until two boots are under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let children = loop {
        let procs = descendants(farm.pid());
        if procs.iter().filter(|p| is_qemu(p)).count() == 2 {
            break procs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two boots never started:\n{}",
            farm.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running: Vec<String> = {
        let mut r = vec![];
        for n in &names {
            if phase(&farm.job(n).await) == "Running" {
                r.push(n.clone());
            }
        }
        r
    };
    assert_eq!(running.len(), 2, "two jobs running before the crash");

    farm.kill9();
    let pids: Vec<i32> = children.iter().map(|p| p.pid).collect();
    let left = wait_gone(&pids, Duration::from_secs(10)).await;
    assert!(
        left.is_empty(),
        "runners or QEMUs outlived the operator: {left:?}"
    );

    farm.restart().await;
    let mut jobs = BTreeMap::new();
    for n in &names {
        jobs.insert(
            n.clone(),
            farm.wait_job(n, Duration::from_secs(300), finished).await,
        );
    }
    assert_eq!(
        farm.jobs().await.len(),
        4,
        "nothing lost, nothing duplicated"
    );
    for (n, job) in &jobs {
        assert_eq!(phase(job), "Succeeded", "{job:#}");
        let attempts = job["status"]["attempts"].as_u64().unwrap();
        let expected = if running.contains(n) { 2 } else { 1 };
        assert_eq!(attempts, expected, "{n}: {job:#}");
        let (status, result) = farm.result(n).await;
        assert_eq!(
            (status, result["result"].as_str()),
            (200, Some("pass")),
            "{n}"
        );
    }
    // Every job finished exactly once, all after the restart (the crash came first).
    let metrics = farm.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "bootfarm_jobs_finished_total"),
        4.0,
        "{metrics}"
    );
}
