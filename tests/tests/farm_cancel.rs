//! Canceling a running boot: the job is Canceled at once and its QEMU is gone within seconds.

mod farm_support;

use farm_support::*;
use std::time::{Duration, Instant};

#[test]
fn cancel_stops_a_running_boot_and_leaves_no_qemu() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    // A guest that never finishes on its own.
    farm.start_endless_boot(&fx, "forever");

    // The console streams while the boot runs, not only at the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = farm.cli(&["log", "forever"]);
        if String::from_utf8_lossy(&log.stdout).contains("Linux version") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no live console:\n{}",
            farm.operator_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(farm.phase("forever"), "Running");

    let canceled_at = Instant::now();
    let out = farm.cli(&["cancel", "forever"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "forever: Canceled"
    );
    assert_eq!(farm.phase("forever"), "Canceled");
    while !qemu_descendants(farm.pid()).is_empty() {
        assert!(
            canceled_at.elapsed() < Duration::from_secs(10),
            "QEMU still running 10 s after cancel: {:?}",
            qemu_descendants(farm.pid())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("QEMU gone {:?} after cancel", canceled_at.elapsed());
    // wait reports Canceled with exit 3, and the job stays Canceled (no late result overwrites it).
    let out = farm.cli(&["wait", "forever", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(3));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(farm.phase("forever"), "Canceled");
    let (status, _) = farm.http("GET", "/api/v1/bootjobs/forever/result", None, None);
    assert_eq!(status, 404, "a canceled job has no result");
}
