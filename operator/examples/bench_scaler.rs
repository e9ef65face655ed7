//! The scaling decision at scale: 10,000 queued jobs over 5 pools and 500 runners.
//! Target (issue 4): under 10 ms per decision. Run: `cargo run -p bootfarm-operator --release --example bench_scaler`.

use bootfarm_core::spec::RunnerPoolSpec;
use bootfarm_core::Arch;
use bootfarm_operator::scaler::{self, PoolInput, Runner, RunnerState};
use bootfarm_operator::store::QueuedCount;
use jiff::Timestamp;
use std::time::Instant;

const JOBS: usize = 10_000;
const RUNNERS: usize = 500;
const ROUNDS: u32 = 200;

fn main() {
    let now = Timestamp::now();
    let arches = [
        Arch::X86_64,
        Arch::Arm64,
        Arch::Riscv64,
        Arch::Armv7,
        Arch::I386,
    ];
    let pools: Vec<(String, RunnerPoolSpec)> = arches
        .iter()
        .map(|a| {
            let spec = RunnerPoolSpec {
                arches: vec![*a],
                min_idle: 1,
                max_runners: 200,
                idle_timeout_seconds: 300,
                startup_timeout_seconds: 600,
                scale_up_burst: 20,
                kvm: false,
                template: Default::default(),
            };
            (format!("pool-{}", a.as_str()), spec)
        })
        .collect();
    // Every queued job, one row each (the worst case: no grouping done by the store).
    let jobs: Vec<QueuedCount> = (0..JOBS)
        .map(|i| QueuedCount {
            pool: None,
            arch: arches[i % arches.len()],
            count: 1,
        })
        .collect();
    let states = |i: usize| match i % 6 {
        0 => RunnerState::Pending,
        1 => RunnerState::Starting,
        2 | 3 => RunnerState::Busy,
        4 => RunnerState::Idle {
            since: now - jiff::SignedDuration::from_secs(i64::try_from(i % 900).expect("small")),
        },
        _ => RunnerState::Failed,
    };
    let runners: Vec<Vec<Runner>> = (0..pools.len())
        .map(|p| {
            (0..RUNNERS / pools.len())
                .map(|i| Runner {
                    id: format!("r-{p}-{i}"),
                    state: states(i),
                    created_at: now
                        - jiff::SignedDuration::from_secs(i64::try_from(i % 700).expect("small")),
                })
                .collect()
        })
        .collect();

    let mut worst = std::time::Duration::ZERO;
    let start = Instant::now();
    let mut created = 0u64;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let refs: Vec<(&str, &RunnerPoolSpec)> =
            pools.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let queued = scaler::queued_by_pool(&jobs, &refs);
        let inputs: Vec<PoolInput<'_>> = refs
            .iter()
            .zip(&runners)
            .map(|((name, policy), runners)| PoolInput {
                name,
                policy,
                queued: queued.get(&Some(name.to_string())).copied().unwrap_or(0),
                runners,
            })
            .collect();
        let decisions = inputs
            .iter()
            .map(|p| scaler::decide(p, now))
            .collect::<Vec<_>>();
        created += decisions.iter().map(|d| u64::from(d.create)).sum::<u64>();
        worst = worst.max(t0.elapsed());
    }
    let mean = start.elapsed() / ROUNDS;
    println!(
        "bench_scaler: {JOBS} queued jobs, {RUNNERS} runners, {} pools: mean {:.3} ms, worst {:.3} ms per decision (target < 10 ms); {} creates/decision",
        pools.len(),
        mean.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        created / u64::from(ROUNDS),
    );
}
