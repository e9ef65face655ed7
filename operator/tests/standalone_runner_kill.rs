//! A runner that dies or hangs mid-boot costs an attempt, never the job: the job runs again
//! and ends Succeeded with attempts = 2 and exactly one result. Real QEMU (TCG).

mod standalone_support;

use standalone_support::*;
use std::time::Duration;

const BOOT_WAIT: Duration = Duration::from_secs(240);

/// Waits until the farm's first runner has a QEMU running; returns (runner pid, qemu pid).
async fn runner_mid_boot(farm: &Farm) -> (i32, i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let procs = descendants(farm.pid());
        let qemu = procs.iter().find(|p| is_qemu(p));
        let runner = qemu.and_then(|q| procs.iter().find(|p| p.pid == q.ppid && is_runner(p)));
        if let (Some(r), Some(q)) = (runner, qemu) {
            return (r.pid, q.pid);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no QEMU started; log:\n{}",
            farm.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_killed_mid_boot_costs_one_attempt_and_the_job_still_succeeds() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(
        dir.path(),
        &[
            "--max-runners",
            "1",
            "--lease-ttl",
            "5",
            "--idle-timeout",
            "3",
        ],
    )
    .await;
    let name = farm.submit(&poweroff_job(&fixtures, "killed-runner")).await;
    let (runner, qemu) = runner_mid_boot(&farm).await;
    // Let the guest get somewhere first: a real mid-boot death.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_gone(&[runner, qemu], Duration::from_secs(10))
            .await
            .is_empty(),
        "the runner's QEMU outlived it"
    );

    let job = farm.wait_job(&name, BOOT_WAIT, finished).await;
    assert_eq!(phase(&job), "Succeeded", "{job:#}");
    assert_eq!(job["status"]["attempts"], 2, "{job:#}");
    assert_eq!(job["status"]["result"]["result"], "pass");
    let (status, result) = farm.result(&name).await;
    assert_eq!(status, 200);
    assert_eq!(result["result"], "pass");
    let metrics = farm.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "bootfarm_jobs_finished_total"),
        1.0,
        "exactly one result:\n{metrics}"
    );
    assert!(metric_sum(&metrics, "bootfarm_infra_retries_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_runner_loses_its_lease_and_is_replaced_and_the_job_still_succeeds() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(
        dir.path(),
        &[
            "--max-runners",
            "1",
            "--lease-ttl",
            "5",
            "--idle-timeout",
            "3",
        ],
    )
    .await;
    let name = farm.submit(&poweroff_job(&fixtures, "hung-runner")).await;
    let (runner, qemu) = runner_mid_boot(&farm).await;
    // Frozen, not dead: the process is still there, only the missing heartbeats tell.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let retried = farm
        .wait_job(&name, Duration::from_secs(60), |j| {
            j["status"]["attempts"] == 2
        })
        .await;
    assert_eq!(phase(&retried), "Running", "{retried:#}");
    let metrics = farm.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "bootfarm_lease_expirations_total"),
        1.0,
        "requeued by lease expiry:\n{metrics}"
    );
    assert!(
        wait_gone(&[runner, qemu], Duration::from_secs(10))
            .await
            .is_empty(),
        "the hung runner (and its QEMU) were not stopped"
    );

    let job = farm.wait_job(&name, BOOT_WAIT, finished).await;
    assert_eq!(phase(&job), "Succeeded", "{job:#}");
    assert_eq!(job["status"]["attempts"], 2, "{job:#}");
    let metrics = farm.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "bootfarm_jobs_finished_total"),
        1.0,
        "exactly one result:\n{metrics}"
    );
}
