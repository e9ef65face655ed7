//! Classifier throughput and memory on a large real log: the recorded console logs in
//! `core/tests/fixtures/logs/` concatenated to the requested size (default 256 MB) in memory,
//! fed in 64 KiB chunks as a live console would be. Run with `--release`
//! (`scripts/bench-classify`). Prints one summary line and a JSON line.

use bootfarm_core::console::{Classifier, ClassifierConfig};
use std::path::Path;
use std::time::Instant;

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logs");
    let mut corpus = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture logs directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    for p in &names {
        corpus.extend(std::fs::read(p).expect("readable log"));
    }
    assert!(!corpus.is_empty(), "no logs in {}", dir.display());
    let target = mb << 20;
    let mut log = Vec::with_capacity(target + corpus.len());
    while log.len() < target {
        log.extend_from_slice(&corpus);
    }
    let rss_before = status_kb("VmRSS:").unwrap_or(0);
    let hwm_before = status_kb("VmHWM:").unwrap_or(0);

    let t = Instant::now();
    let mut c = Classifier::new(ClassifierConfig::default());
    let mut events = 0usize;
    for chunk in log.chunks(64 * 1024) {
        events += c.feed(chunk).len();
    }
    let class = c.finish();
    let secs = t.elapsed().as_secs_f64();

    let hwm_after = status_kb("VmHWM:").unwrap_or(0);
    let mbps = log.len() as f64 / 1e6 / secs;
    let lines_per_s = class.lines as f64 / secs;
    println!(
        "classified {:.0} MB ({} real logs repeated, {} lines) in {:.2} s: {:.0} MB/s, {:.1} M lines/s on one core; \
peak RSS {} MiB with the {} MiB input in memory, classifier growth {} KiB ({} events, {} issues kept, {} dropped)",
        log.len() as f64 / 1e6,
        names.len(),
        class.lines,
        secs,
        mbps,
        lines_per_s / 1e6,
        hwm_after / 1024,
        log.len() >> 20,
        hwm_after.saturating_sub(hwm_before.max(rss_before)),
        events,
        class.issues.len(),
        class.dropped_issues,
    );
    println!(
        "{{\"bytes\":{},\"seconds\":{:.3},\"mb_per_s\":{:.1},\"peak_rss_kib\":{},\"classifier_growth_kib\":{}}}",
        log.len(),
        secs,
        mbps,
        hwm_after,
        hwm_after.saturating_sub(hwm_before.max(rss_before))
    );
}
