//! The embedded store under load: submissions per second into SQLite (target ≥ 1,000/s),
//! claim latency and process memory with 10,000 queued jobs (target < 200 MB).
//! Run: `cargo run -p bootfarm-operator --release --example bench_store [JOBS]`.

use bootfarm_core::spec::{BootJob, BootJobSpec};
use bootfarm_core::Arch;
use bootfarm_operator::store::sqlite::SqliteStore;
use bootfarm_operator::store::{ClaimRequest, JobFilter, JobStore};
use jiff::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn job(i: usize) -> BootJob {
    let spec: BootJobSpec = serde_json::from_value(serde_json::json!({
        "arch": if i.is_multiple_of(4) { "arm64" } else { "x86_64" },
        "kernel": {"url": "https://artifacts.example.invalid/builds/123/bzImage", "sha256": "0".repeat(64)},
        "initrd": {"url": "https://artifacts.example.invalid/rootfs/initrd.cpio.gz"},
        "bootArgs": "console=ttyS0 panic=-1 earlycon",
        "expect": "login", "login": "root",
        "commands": ["uname -a", "cat /proc/cmdline"],
        "failOn": ["warning"],
        "timeouts": {"boot": 300, "total": 900},
        "priority": i32::try_from(i % 3).expect("small"),
    }))
    .expect("a valid spec");
    let mut j = BootJob::new("", spec);
    j.metadata.name = None;
    j.metadata.generate_name = Some("bench-".into());
    j
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path())?);
    let before = rss_mib();

    // Sequential: one request after another, as one client would.
    let seq = n / 2;
    let t0 = Instant::now();
    for i in 0..seq {
        store.create(job(i), Timestamp::now()).await?;
    }
    let seq_rate = seq as f64 / t0.elapsed().as_secs_f64();

    // Concurrent: 16 clients at once, as the HTTP API sees a CI burst.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let store = store.clone();
        let share = (n - seq) / 16 + usize::from(c < (n - seq) % 16);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                store.create(job(i + c), Timestamp::now()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let conc_rate = (n - seq) as f64 / t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let counts = store.counts().await?;
    let counts_ms = t0.elapsed().as_secs_f64() * 1e3;
    let req = ClaimRequest {
        runner_id: "bench".into(),
        pool: "local".into(),
        arches: vec![Arch::X86_64],
    };
    let mut claim_worst = Duration::ZERO;
    for _ in 0..100 {
        let t0 = Instant::now();
        store
            .claim(&req, Duration::from_secs(30), Timestamp::now())
            .await?;
        claim_worst = claim_worst.max(t0.elapsed());
    }
    let t0 = Instant::now();
    let page = store
        .list(&JobFilter {
            limit: Some(100),
            ..Default::default()
        })
        .await?;
    let list_ms = t0.elapsed().as_secs_f64() * 1e3;
    let after = rss_mib();
    let db_mib = std::fs::metadata(dir.path().join("bootfarm.db"))?.len() as f64 / 1048576.0
        + std::fs::metadata(dir.path().join("bootfarm.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0) as f64
            / 1048576.0;

    println!("bench_store: {n} submissions into SQLite (WAL, synchronous=NORMAL)");
    println!("  sequential:    {seq_rate:>8.0} submissions/s (target >= 1000)");
    println!("  16 concurrent: {conc_rate:>8.0} submissions/s");
    println!("  counts() over {} queued: {counts_ms:.2} ms; claim (worst of 100): {:.2} ms; list 100: {list_ms:.2} ms ({} items)",
        counts.by_phase.values().sum::<u64>(), claim_worst.as_secs_f64() * 1e3, page.len());
    println!("  process RSS: {before:.1} MiB before, {after:.1} MiB with {n} jobs (target < 200 MB); database {db_mib:.1} MiB on disk");
    Ok(())
}
