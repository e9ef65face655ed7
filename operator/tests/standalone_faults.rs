//! The standalone farm when its storage or its clients misbehave: the database deleted under
//! it, a full disk, slow or silent HTTP clients, hundreds of readers of one big log. It must
//! never accept what it cannot keep, never hang a connection, and keep its memory bounded.

mod standalone_support;

use serde_json::{json, Value};
use standalone_support::*;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const USER: &str = "user-token-faults";
const RUNNER: &str = "runner-token-faults";

fn token_file(dir: &std::path::Path) -> String {
    let p = dir.join("tokens");
    std::fs::write(&p, format!("{USER}\nrunner:{RUNNER}\n")).expect("write tokens");
    p.display().to_string()
}

fn job(name: &str) -> Value {
    json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootJob",
        "metadata": {"name": name},
        "spec": {"arch": "x86_64", "kernel": {"url": "https://artifacts.invalid/bzImage"}, "maxAttempts": 1}
    })
}

async fn post(farm: &Farm, path: &str, token: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", farm.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn status(farm: &Farm, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}{path}", farm.url))
        .bearer_auth(USER)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_status(farm: &Farm, path: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = status(farm, path).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {got}, not {want}:\n{}",
            farm.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A farm whose database `lose` takes away while it runs: it stops accepting jobs within
/// seconds (not ready, 503) and its log says what happened (`said`).
async fn a_lost_database_stops_all_acceptance(lose: impl FnOnce(&Path), said: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = token_file(dir.path());
    let data = dir.path().join("data");
    let farm = Farm::start(&data, &["--max-runners", "0", "--token-file", &tokens]).await;
    let r = post(&farm, "/api/v1/bootjobs", USER, job("before")).await;
    assert_eq!(r.status().as_u16(), 201);
    lose(&data);
    wait_status(&farm, "/readyz", 503, Duration::from_secs(5)).await;
    let r = post(&farm, "/api/v1/bootjobs", USER, job("after")).await;
    assert_eq!(
        r.status().as_u16(),
        503,
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert!(farm.log_text().contains(said), "{}", farm.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_deleted_while_running_stops_all_acceptance_within_seconds() {
    a_lost_database_stops_all_acceptance(
        |data| {
            for f in ["bootfarm.db", "bootfarm.db-wal", "bootfarm.db-shm"] {
                let _ = std::fs::remove_file(data.join(f));
            }
        },
        "was deleted while the operator ran",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_replaced_while_running_stops_all_acceptance_within_seconds() {
    // Another file under the same name (a restore from a backup, a careless copy): what the
    // operator writes would go to the old, unlinked inode and be lost.
    a_lost_database_stops_all_acceptance(
        |data| {
            let (db, copy) = (data.join("bootfarm.db"), data.join("bootfarm.db.copy"));
            std::fs::copy(&db, &copy).unwrap();
            std::fs::rename(&copy, &db).unwrap();
        },
        "was replaced while the operator ran",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_disconnected_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let farm = Farm::start(&dir.path().join("data"), &["--max-runners", "0"]).await;
    // Slowloris: a request head that never ends, one byte at a time.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", farm.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        if s.write_all(b"X").is_err() {
            break started.elapsed();
        }
        let mut b = [0u8; 256];
        match s.read(&mut b) {
            Ok(0) => break started.elapsed(),
            Ok(_) => break started.elapsed(), // an error answer, then close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still open after 30 s"
        );
    };
    assert!(closed < Duration::from_secs(30), "{closed:?}");

    // A kept-alive connection that goes quiet after one answer is closed too.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", farm.port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&b[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_readers_of_a_16_mib_log_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let farm = Farm::start(
        &dir.path().join("data"),
        &["--max-runners", "0", "--token-file", &tokens],
    )
    .await;
    assert_eq!(
        post(&farm, "/api/v1/bootjobs", USER, job("big"))
            .await
            .status(),
        201
    );
    let claim: Value = post(
        &farm,
        "/api/v1/runner/claim",
        RUNNER,
        json!({"runnerId": "fake", "pool": "local", "waitSeconds": 5}),
    )
    .await
    .json()
    .await
    .unwrap();
    let lease = claim["leaseId"].as_str().expect("claimed").to_string();
    let chunk: String = "0123456789abcdef".repeat(256 << 10 >> 4);
    for _ in 0..64 {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/api/v1/runner/jobs/big/log?leaseId={lease}",
                farm.url
            ))
            .bearer_auth(RUNNER)
            .header("content-type", "application/octet-stream")
            .body(chunk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    let before = peak_rss_kib(u32::try_from(farm.pid()).expect("a pid"));
    let url = format!("{}/api/v1/bootjobs/big/log", farm.url);
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut r = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(USER)
                    .send()
                    .await
                    .expect("read the log");
                let mut n = 0usize;
                while let Some(c) = r.chunk().await.expect("chunk") {
                    n += c.len();
                    // Slow readers: the server must not buffer ahead of them.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                n
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 16 << 20);
    }
    let peak = peak_rss_kib(u32::try_from(farm.pid()).expect("a pid"));
    eprintln!(
        "operator peak RSS: {} MiB before the readers, {} MiB after",
        before >> 10,
        peak >> 10
    );
    assert!(peak < 150 << 10, "peak RSS {} MiB", peak >> 10);
}

/// A real boot that ends while the data disk is full: the runner survives (its log file is on
/// that disk), the job's lease still ends the attempt in memory, readiness says why, and once
/// space is back everything is written and the farm is ready again by itself.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_full_disk_leases_still_end_jobs_and_the_farm_recovers_by_itself() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let farm = Farm::start_on_tmpfs(
        &data,
        64,
        &[
            "--max-runners",
            "1",
            "--lease-ttl",
            "5",
            "--idle-timeout",
            "5",
        ],
    )
    .await;
    let f = fixtures.join("x86_64");
    let name = farm
        .submit(&json!({
            "apiVersion": "bootfarm.dev/v1alpha1",
            "kind": "BootJob",
            "metadata": {"name": "full-disk"},
            "spec": {
                "arch": "x86_64",
                "kernel": {"url": f.join("kernel")},
                "initrd": {"url": f.join("initrd-silent.cpio.gz")},
                "accel": "tcg",
                "maxAttempts": 1,
                "timeouts": {"boot": 15, "total": 20}
            }
        }))
        .await;
    farm.wait_job(&name, Duration::from_secs(60), |j| phase(j) == "Running")
        .await;
    // Fill the data disk.
    let fill = farm.in_operator_mounts(&[
        "sh",
        "-c",
        &format!(
            "dd if=/dev/zero of={}/fill bs=1M 2>/dev/null; true",
            data.display()
        ),
    ]);
    assert!(fill.status.success(), "{fill:?}");
    wait_status(&farm, "/readyz", 503, Duration::from_secs(10)).await;
    // The guest times out at 20 s; its result cannot be stored; the lease then runs out.
    let ended = farm
        .wait_job(&name, Duration::from_secs(180), finished)
        .await;
    assert_eq!(phase(&ended), "Error", "{ended:#}");
    assert_eq!(status(&farm, "/readyz").await, 503);
    assert!(alive(farm.pid()), "the operator survived");
    assert!(
        !farm.log_text().contains("Runner died") && !farm.log_text().contains("panicked"),
        "a runner died or something panicked:\n{}",
        farm.log_text()
    );
    let runner_logs =
        farm.in_operator_mounts(&["sh", "-c", &format!("cat {}/runners/*.log", data.display())]);
    assert!(
        !String::from_utf8_lossy(&runner_logs.stdout).contains("panicked"),
        "a runner panicked"
    );
    // Space again: what was decided in memory is written, and the farm is ready by itself
    // (readiness waits for every kept change to be written).
    let freed = farm.in_operator_mounts(&["rm", "-f", &format!("{}/fill", data.display())]);
    assert!(freed.status.success(), "{freed:?}");
    wait_status(&farm, "/readyz", 200, Duration::from_secs(15)).await;
    assert_eq!(phase(&farm.job(&name).await), "Error");
    let r = post(&farm, "/api/v1/bootjobs", "", job("after-the-storm")).await;
    assert_eq!(r.status().as_u16(), 201, "accepting again");
}
