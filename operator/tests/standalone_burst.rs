//! A burst of jobs on a farm of two runners: all finish, never more than two QEMUs at once,
//! and the pool is back to zero runners after the idle timeout.
//!
//! 50 jobs by default (issue 4), about 3–4 minutes under TCG on two cores; set
//! `BOOTFARM_BURST_JOBS` to run fewer on a slow machine.

mod standalone_support;

use standalone_support::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_jobs_on_two_runners_all_finish_within_the_limit_and_scale_to_zero() {
    let fixtures = fixtures();
    let n: usize = std::env::var("BOOTFARM_BURST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(
        dir.path(),
        &[
            "--max-runners",
            "2",
            "--lease-ttl",
            "10",
            "--idle-timeout",
            "3",
        ],
    )
    .await;
    let operator = farm.pid();

    // Sample the operator's process tree while the burst runs.
    let stop = Arc::new(AtomicBool::new(false));
    let (max_qemu, max_runners) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, max_qemu, max_runners) = (stop.clone(), max_qemu.clone(), max_runners.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let procs = descendants(operator);
                max_qemu.fetch_max(
                    procs.iter().filter(|p| is_qemu(p)).count(),
                    Ordering::Relaxed,
                );
                max_runners.fetch_max(
                    // Runners are the operator's children: a runner's own fork on its way to
                    // exec QEMU briefly carries the runner's command line too.
                    procs
                        .iter()
                        .filter(|p| p.ppid == operator && is_runner(p))
                        .count(),
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let started = Instant::now();
    let mut names = vec![];
    for i in 0..n {
        names.push(
            farm.submit(&poweroff_job(&fixtures, &format!("burst-{i:03}")))
                .await,
        );
    }
    let per_job = Duration::from_secs(60);
    let budget = per_job * u32::try_from(n).expect("small").div_ceil(2) + Duration::from_secs(60);
    for name in &names {
        let left = budget
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let job = farm.wait_job(name, left, finished).await;
        assert_eq!(phase(&job), "Succeeded", "{job:#}");
        assert_eq!(job["status"]["attempts"], 1, "no retries expected: {job:#}");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{n} jobs on 2 runners in {:.1} s ({:.1} jobs/min)",
        elapsed.as_secs_f64(),
        n as f64 * 60.0 / elapsed.as_secs_f64()
    );

    // Idle timeout 3 s, decisions every 0.5 s, SIGTERM exit: zero runners well within 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let runners = descendants(operator)
            .into_iter()
            .filter(|p| p.ppid == operator && is_runner(p))
            .count();
        if runners == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{runners} runners still alive after the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (q, r) = (
        max_qemu.load(Ordering::Relaxed),
        max_runners.load(Ordering::Relaxed),
    );
    assert!(q <= 2, "{q} QEMUs at once with --max-runners 2");
    assert!(r <= 2, "{r} runners at once with --max-runners 2");
    assert_eq!(q, 2, "both runners were used");
    let metrics = farm.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "bootfarm_jobs_finished_total"),
        n as f64
    );
}
