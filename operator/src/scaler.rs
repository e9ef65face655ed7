//! The scaling decision: a pure function from queue depth, runners and policy to runners to
//! create and delete. Standalone mode (local runner processes) and Kubernetes mode (runner pods)
//! both call [`decide`]; only how a runner is started or stopped differs.
//!
//! Rules (from ARC and KEDA's most-reported bugs, see reference §6):
//! - desired = clamp(busy + queued + minIdle, 0, maxRunners);
//! - runners not yet ready (pending, starting) are supply already on the way: they count, so
//!   a slow start never causes over-provisioning; those in excess of demand go first;
//! - idle runners are deleted only after `idleTimeout`, down to `minIdle` (zero by default);
//! - a busy runner is never deleted;
//! - failed runners are deleted and never count as supply, so they never block new capacity;
//!   a runner stuck starting past `startupTimeout` is treated as failed;
//! - terminating runners still hold resources: they count against `maxRunners` but not as supply;
//! - at most `scaleUpBurst` runners are created per decision.
//!
//! Lease expiry and failing jobs whose runner vanished are the store's side of the same loop
//! ([`crate::store::JobStore::expire_leases`]).

use crate::store::QueuedCount;
use bootfarm_core::spec::RunnerPoolSpec;
use bootfarm_core::Arch;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Asked for, not yet scheduled (an unschedulable pod; a process about to spawn).
    Pending,
    /// Scheduled or spawned, not yet asking for work.
    Starting,
    /// Asking for work since `since`.
    Idle { since: Timestamp },
    /// Holding a lease.
    Busy,
    /// Crashed, exited, or its pod failed.
    Failed,
    /// Being stopped.
    Terminating,
}

impl RunnerState {
    /// The state's name in metrics and in the API (one of [`crate::metrics::RUNNER_STATES`]).
    pub fn label(&self) -> &'static str {
        match self {
            RunnerState::Pending => "pending",
            RunnerState::Starting => "starting",
            RunnerState::Idle { .. } => "idle",
            RunnerState::Busy => "busy",
            RunnerState::Failed => "failed",
            RunnerState::Terminating => "terminating",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub id: String,
    pub state: RunnerState,
    pub created_at: Timestamp,
}

/// One pool's view at decision time.
#[derive(Debug, Clone, Copy)]
pub struct PoolInput<'a> {
    pub name: &'a str,
    pub policy: &'a RunnerPoolSpec,
    /// Queued jobs this pool should serve (see [`queued_by_pool`]).
    pub queued: u64,
    pub runners: &'a [Runner],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeleteReason {
    /// The runner failed; it frees its slot.
    Failed,
    /// It did not become ready within `startupTimeout`.
    StartupTimeout,
    /// Not running yet, and demand fell: cheaper to drop than to keep idle.
    NotNeeded,
    /// Idle past `idleTimeout` with no demand for it.
    IdleTimeout,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Failed => "failed",
            DeleteReason::StartupTimeout => "startup_timeout",
            DeleteReason::NotNeeded => "not_needed",
            DeleteReason::IdleTimeout => "idle_timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDecision {
    pub pool: String,
    /// clamp(busy + queued + minIdle, 0, maxRunners).
    pub desired: u32,
    /// Runners counted as supply before this decision (busy, idle, pending, starting).
    pub supply: u32,
    pub create: u32,
    pub delete: Vec<(String, DeleteReason)>,
}

/// The decision for one pool at `now`.
pub fn decide(input: &PoolInput<'_>, now: Timestamp) -> PoolDecision {
    let policy = input.policy;
    let startup = Duration::from_secs(policy.startup_timeout_seconds);
    let idle_timeout = Duration::from_secs(policy.idle_timeout_seconds);
    let mut delete = Vec::new();
    let (mut busy, mut terminating) = (0u64, 0u64);
    let mut not_ready: Vec<&Runner> = Vec::new();
    let mut idle: Vec<(&Runner, Timestamp)> = Vec::new();
    for r in input.runners {
        match r.state {
            RunnerState::Busy => busy += 1,
            RunnerState::Terminating => terminating += 1,
            RunnerState::Failed => delete.push((r.id.clone(), DeleteReason::Failed)),
            RunnerState::Pending | RunnerState::Starting => {
                if elapsed(r.created_at, now) >= startup {
                    delete.push((r.id.clone(), DeleteReason::StartupTimeout));
                } else {
                    not_ready.push(r);
                }
            }
            RunnerState::Idle { since } => idle.push((r, since)),
        }
    }
    let max = u64::from(policy.max_runners);
    let desired = (busy + input.queued + u64::from(policy.min_idle)).min(max);
    let supply = busy + idle.len() as u64 + not_ready.len() as u64;
    let mut create = 0;
    if supply < desired {
        let room = max.saturating_sub(supply + terminating);
        create = (desired - supply)
            .min(room)
            .min(u64::from(policy.scale_up_burst));
    } else if supply > desired {
        let mut excess = supply - desired;
        // Not-yet-running runners first, least advanced (pending, then newest) first.
        not_ready.sort_by_key(|r| {
            (
                r.state != RunnerState::Pending,
                std::cmp::Reverse(r.created_at),
            )
        });
        for r in not_ready
            .iter()
            .take(usize::try_from(excess).unwrap_or(usize::MAX))
        {
            delete.push((r.id.clone(), DeleteReason::NotNeeded));
            excess -= 1;
        }
        // Then idle runners past the idle timeout, longest idle first.
        idle.sort_by_key(|(r, since)| (*since, r.id.clone()));
        for (r, since) in idle {
            if excess == 0 {
                break;
            }
            if elapsed(since, now) >= idle_timeout {
                delete.push((r.id.clone(), DeleteReason::IdleTimeout));
                excess -= 1;
            }
        }
    }
    PoolDecision {
        pool: input.name.to_string(),
        desired: u32::try_from(desired).unwrap_or(u32::MAX),
        supply: u32::try_from(supply).unwrap_or(u32::MAX),
        create: u32::try_from(create).unwrap_or(u32::MAX),
        delete,
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// The pool that should run a job: its `spec.pool` if that pool exists, else the first pool
/// (in the given order) serving its arch; a pool with no arches serves all. `None`: no pool
/// can run it (the job waits, and the operator says so in a condition).
pub fn choose_pool<'a>(
    job_pool: Option<&str>,
    arch: Arch,
    pools: &[(&'a str, &RunnerPoolSpec)],
) -> Option<&'a str> {
    match job_pool {
        Some(wanted) => pools.iter().find(|(n, _)| *n == wanted).map(|(n, _)| *n),
        None => pools.iter().find(|(_, p)| p.serves(arch)).map(|(n, _)| *n),
    }
}

/// Queue depth per pool, from the store's counts by (spec.pool, arch). Pools with no queued
/// jobs are present with 0; jobs no pool can run are under `None`.
pub fn queued_by_pool(
    queued: &[QueuedCount],
    pools: &[(&str, &RunnerPoolSpec)],
) -> BTreeMap<Option<String>, u64> {
    let mut out: BTreeMap<Option<String>, u64> = pools
        .iter()
        .map(|(n, _)| (Some(n.to_string()), 0))
        .collect();
    for q in queued {
        let pool = choose_pool(q.pool.as_deref(), q.arch, pools).map(str::to_string);
        *out.entry(pool).or_default() += q.count;
    }
    out
}

/// The queued jobs one pool serves, by arch (arches with none left out).
pub fn queued_by_arch(
    queued: &[QueuedCount],
    pool: &str,
    pools: &[(&str, &RunnerPoolSpec)],
) -> BTreeMap<Arch, u64> {
    let mut out = BTreeMap::new();
    for q in queued {
        if q.count > 0 && choose_pool(q.pool.as_deref(), q.arch, pools) == Some(pool) {
            *out.entry(q.arch).or_default() += q.count;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy(max: u32, min_idle: u32) -> RunnerPoolSpec {
        RunnerPoolSpec {
            arches: vec![],
            min_idle,
            max_runners: max,
            idle_timeout_seconds: 60,
            startup_timeout_seconds: 300,
            scale_up_burst: 100,
            kvm: false,
            template: Default::default(),
        }
    }

    fn r(id: &str, state: RunnerState, created: i64) -> Runner {
        Runner {
            id: id.into(),
            state,
            created_at: t(created),
        }
    }

    fn run(policy: &RunnerPoolSpec, queued: u64, runners: &[Runner], now: i64) -> PoolDecision {
        decide(
            &PoolInput {
                name: "p",
                policy,
                queued,
                runners,
            },
            t(now),
        )
    }

    fn deleted(d: &PoolDecision) -> Vec<&str> {
        d.delete.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn an_empty_pool_with_queued_jobs_scales_up_to_the_queue() {
        let d = run(&policy(10, 0), 3, &[], 0);
        assert_eq!((d.desired, d.create), (3, 3));
    }

    #[test]
    fn scale_up_stops_at_max_runners() {
        let d = run(&policy(2, 0), 50, &[], 0);
        assert_eq!((d.desired, d.create), (2, 2));
    }

    #[test]
    fn scale_up_is_limited_by_the_burst() {
        let mut p = policy(100, 0);
        p.scale_up_burst = 5;
        assert_eq!(run(&p, 50, &[], 0).create, 5);
    }

    #[test]
    fn pending_runners_count_as_supply_so_nothing_more_is_created_while_they_start() {
        let runners = [
            r("a", RunnerState::Pending, 0),
            r("b", RunnerState::Starting, 0),
        ];
        let d = run(&policy(10, 0), 2, &runners, 10);
        assert_eq!(d.create, 0);
        assert!(d.delete.is_empty());
    }

    #[test]
    fn runners_not_yet_running_are_removed_promptly_when_demand_falls() {
        let runners = [
            r("busy", RunnerState::Busy, 0),
            r("old", RunnerState::Starting, 1),
            r("new", RunnerState::Pending, 2),
        ];
        let d = run(&policy(10, 0), 0, &runners, 3);
        assert_eq!(d.desired, 1);
        assert_eq!(deleted(&d), ["new", "old"]);
        assert!(d
            .delete
            .iter()
            .all(|(_, why)| *why == DeleteReason::NotNeeded));
    }

    #[test]
    fn idle_runners_stay_until_the_idle_timeout_then_go_to_zero() {
        let runners = [
            r("a", RunnerState::Idle { since: t(0) }, 0),
            r("b", RunnerState::Idle { since: t(30) }, 0),
        ];
        let p = policy(10, 0);
        assert!(run(&p, 0, &runners, 59).delete.is_empty());
        assert_eq!(deleted(&run(&p, 0, &runners, 60)), ["a"]);
        let d = run(&p, 0, &runners, 90);
        assert_eq!(deleted(&d), ["a", "b"]);
        assert_eq!(d.desired, 0);
    }

    #[test]
    fn min_idle_runners_are_kept_warm_and_created() {
        let p = policy(10, 1);
        let runners = [
            r("a", RunnerState::Idle { since: t(0) }, 0),
            r("b", RunnerState::Idle { since: t(0) }, 0),
        ];
        assert_eq!(deleted(&run(&p, 0, &runners, 1000)), ["a"]);
        assert_eq!(run(&p, 0, &[], 0).create, 1);
        let busy = [r("x", RunnerState::Busy, 0)];
        assert_eq!(run(&p, 0, &busy, 0).create, 1, "min idle is on top of busy");
    }

    #[test]
    fn a_busy_runner_is_never_deleted_even_above_max() {
        let runners = [r("a", RunnerState::Busy, 0), r("b", RunnerState::Busy, 0)];
        let d = run(&policy(1, 0), 0, &runners, 10_000);
        assert!(d.delete.is_empty());
        assert_eq!(d.create, 0);
    }

    #[test]
    fn failed_runners_are_deleted_and_do_not_block_new_capacity() {
        let runners = [
            r("f1", RunnerState::Failed, 0),
            r("f2", RunnerState::Failed, 0),
        ];
        let d = run(&policy(2, 0), 2, &runners, 1);
        assert_eq!(d.create, 2);
        assert_eq!(deleted(&d), ["f1", "f2"]);
    }

    #[test]
    fn a_runner_stuck_starting_is_replaced_after_the_startup_timeout() {
        let runners = [r("stuck", RunnerState::Starting, 0)];
        let p = policy(1, 0);
        assert_eq!(run(&p, 1, &runners, 299).create, 0);
        let d = run(&p, 1, &runners, 300);
        assert_eq!(
            d.delete,
            [("stuck".to_string(), DeleteReason::StartupTimeout)]
        );
        assert_eq!(d.create, 1);
    }

    #[test]
    fn terminating_runners_hold_their_slot_until_they_are_gone() {
        let runners = [r("t", RunnerState::Terminating, 0)];
        assert_eq!(run(&policy(2, 0), 5, &runners, 0).create, 1);
    }

    #[test]
    fn jobs_go_to_their_named_pool_or_the_first_pool_serving_their_arch() {
        let mut x86 = policy(1, 0);
        x86.arches = vec![Arch::X86_64];
        let mut arm = policy(1, 0);
        arm.arches = vec![Arch::Arm64, Arch::X86_64];
        let pools = [("x86", &x86), ("arm", &arm)];
        assert_eq!(choose_pool(None, Arch::X86_64, &pools), Some("x86"));
        assert_eq!(choose_pool(None, Arch::Arm64, &pools), Some("arm"));
        assert_eq!(choose_pool(None, Arch::Riscv64, &pools), None);
        assert_eq!(choose_pool(Some("arm"), Arch::X86_64, &pools), Some("arm"));
        assert_eq!(choose_pool(Some("gpu"), Arch::X86_64, &pools), None);
        let counts = queued_by_pool(
            &[
                QueuedCount {
                    pool: None,
                    arch: Arch::X86_64,
                    count: 3,
                },
                QueuedCount {
                    pool: None,
                    arch: Arch::Arm64,
                    count: 2,
                },
                QueuedCount {
                    pool: Some("arm".into()),
                    arch: Arch::X86_64,
                    count: 1,
                },
                QueuedCount {
                    pool: None,
                    arch: Arch::Riscv64,
                    count: 7,
                },
            ],
            &pools,
        );
        assert_eq!(counts[&Some("x86".to_string())], 3);
        assert_eq!(counts[&Some("arm".to_string())], 3);
        assert_eq!(counts[&None], 7);
    }

    fn arb_state() -> impl Strategy<Value = RunnerState> {
        prop_oneof![
            Just(RunnerState::Pending),
            Just(RunnerState::Starting),
            (0i64..200).prop_map(|s| RunnerState::Idle { since: t(s) }),
            Just(RunnerState::Busy),
            Just(RunnerState::Failed),
            Just(RunnerState::Terminating),
        ]
    }

    fn arb_runners() -> impl Strategy<Value = Vec<Runner>> {
        prop::collection::vec((arb_state(), 0i64..200), 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (state, created))| r(&format!("r{i}"), state, created))
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = RunnerPoolSpec> {
        (0u32..30, 0u32..5, 1u64..120, 1u64..400, 1u32..20).prop_map(
            |(max, min_idle, idle, startup, burst)| {
                let mut p = policy(max, min_idle);
                p.idle_timeout_seconds = idle;
                p.startup_timeout_seconds = startup;
                p.scale_up_burst = burst;
                p
            },
        )
    }

    fn count(runners: &[Runner], f: impl Fn(&RunnerState) -> bool) -> u64 {
        runners.iter().filter(|r| f(&r.state)).count() as u64
    }

    proptest! {
        #[test]
        fn never_above_max(p in arb_policy(), queued in 0u64..100, runners in arb_runners(), now in 0i64..600) {
            let d = run(&p, queued, &runners, now);
            if d.create > 0 {
                let deleted: std::collections::BTreeSet<&str> = deleted(&d).into_iter().collect();
                let alive = runners.iter()
                    .filter(|r| r.state != RunnerState::Failed && !deleted.contains(r.id.as_str()))
                    .count() as u64;
                prop_assert!(alive + u64::from(d.create) <= u64::from(p.max_runners));
            }
            prop_assert!(d.desired <= p.max_runners);
            prop_assert!(d.create <= p.scale_up_burst);
        }

        #[test]
        fn never_deletes_busy(p in arb_policy(), queued in 0u64..100, runners in arb_runners(), now in 0i64..600) {
            let d = run(&p, queued, &runners, now);
            for (id, _) in &d.delete {
                let r = runners.iter().find(|r| &r.id == id).unwrap();
                prop_assert!(r.state != RunnerState::Busy && r.state != RunnerState::Terminating);
            }
        }

        #[test]
        fn scales_to_zero_when_idle_past_timeout_and_queue_empty(p in arb_policy(), runners in arb_runners()) {
            let mut p = p;
            p.min_idle = 0;
            let runners: Vec<Runner> = runners.into_iter()
                .filter(|r| !matches!(r.state, RunnerState::Busy | RunnerState::Terminating))
                .collect();
            let d = run(&p, 0, &runners, 10_000);
            prop_assert_eq!(d.create, 0);
            prop_assert_eq!(d.delete.len(), runners.len());
        }

        #[test]
        fn no_over_provisioning_while_runners_start(p in arb_policy(), queued in 0u64..100, runners in arb_runners(), now in 0i64..600) {
            let d = run(&p, queued, &runners, now);
            prop_assert!(u64::from(d.create) + u64::from(d.supply) <= u64::from(d.desired.max(d.supply)));
            let not_ready = runners.iter().filter(|r| matches!(r.state, RunnerState::Pending | RunnerState::Starting)
                && elapsed(r.created_at, t(now)) < Duration::from_secs(p.startup_timeout_seconds)).count() as u64;
            let busy = count(&runners, |s| *s == RunnerState::Busy);
            let idle = count(&runners, |s| matches!(s, RunnerState::Idle { .. }));
            prop_assert_eq!(u64::from(d.supply), busy + idle + not_ready);
        }

        #[test]
        fn failed_runners_never_block_capacity(p in arb_policy(), queued in 0u64..100, runners in arb_runners(), failed in 0usize..10, now in 0i64..600) {
            let healthy: Vec<Runner> = runners.iter().filter(|r| r.state != RunnerState::Failed).cloned().collect();
            let mut with_failed = healthy.clone();
            for i in 0..failed {
                with_failed.push(r(&format!("f{i}"), RunnerState::Failed, 0));
            }
            let a = run(&p, queued, &healthy, now);
            let b = run(&p, queued, &with_failed, now);
            prop_assert_eq!(a.create, b.create);
            prop_assert_eq!(b.delete.iter().filter(|(_, why)| *why == DeleteReason::Failed).count(), failed);
        }

        #[test]
        fn queued_work_with_room_always_gets_a_runner(p in arb_policy(), queued in 1u64..100, now in 0i64..600) {
            prop_assume!(p.max_runners > 0);
            let d = run(&p, queued, &[], now);
            prop_assert!(d.create >= 1);
        }
    }
}
