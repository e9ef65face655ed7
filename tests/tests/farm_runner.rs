//! The runner's work loop from outside: SIGTERM mid-boot hands the job back at once (no waiting
//! for the lease to expire), and an idle runner exits 0 by itself.

mod farm_support;

use farm_support::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigterm_mid_boot_releases_the_job_for_another_attempt() {
    let fx = fixtures();
    // A long lease: if the job came back only through lease expiry, it would take a minute.
    let farm = Farm::start(Options {
        max_runners: 1,
        lease_ttl: 60,
        ..Options::default()
    });
    farm.start_endless_boot(&fx, "handback");
    let runners = descendants_named(farm.pid(), "bootfarm-runner");
    assert_eq!(runners.len(), 1, "{runners:?}");
    let signaled = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &runners[0].to_string()])
        .status()
        .unwrap();
    assert!(ok.success());

    // Released (condition reason "Released"), then claimed again: attempt 2, long before 60 s.
    loop {
        let job = farm.job("handback");
        let attempts = job["status"]["attempts"].as_u64().unwrap_or(0);
        if attempts >= 2 {
            let released = job["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Released"));
            assert!(released || job["status"]["phase"] == "Running", "{job}");
            break;
        }
        assert!(
            signaled.elapsed() < Duration::from_secs(30),
            "job not handed back after SIGTERM: {job}\n{}",
            farm.operator_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("job re-attempted {:?} after SIGTERM", signaled.elapsed());
    assert!(!descendants_named(farm.pid(), "bootfarm-runner").contains(&runners[0]));
    let out = farm.cli(&["cancel", "handback"]);
    assert!(out.status.success());
}

#[test]
fn an_idle_runner_exits_zero_after_idle_exit() {
    // No boots: the farm has no work for this extra runner.
    let farm = Farm::start(Options::default());
    let started = Instant::now();
    let status = Command::new(bin_dir().join("bootfarm-runner"))
        .args([
            "work",
            "--server",
            &farm.url,
            "--runner-id",
            "idler",
            "--idle-exit",
            "3",
        ])
        .env_remove("BOOTFARM_TOKEN_FILE")
        .env_remove("BOOTFARM_TOKEN")
        .status()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_runner_with_a_refused_token_stops_loudly() {
    let farm = Farm::start(Options {
        tokens: Some("some-user-token\n".into()),
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "runner:not-a-valid-token\n").unwrap();
    let out = Command::new(bin_dir().join("bootfarm-runner"))
        .args([
            "work",
            "--server",
            &farm.url,
            "--idle-exit",
            "20",
            "--token-file",
        ])
        .arg(&token)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
}
