//! What each runner pool looks like now and how it scaled lately, for people (`GET /api/v1/pools`
//! and the web UI's pools view). Both modes record their scaler's view here on every decision;
//! the API only reads it. It lives in memory: after a restart the history starts again, which is
//! what a "last decisions" view needs.

use crate::scaler::{PoolDecision, Runner, RunnerState};
use bootfarm_core::spec::RunnerPoolSpec;
use bootfarm_core::Arch;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Scale decisions kept per pool.
pub const HISTORY: usize = 20;

/// One pool as the scaler last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    pub name: String,
    /// Empty: the pool serves every arch.
    pub arches: Vec<Arch>,
    pub min_idle: u32,
    pub max_runners: u32,
    pub desired: u32,
    /// Runners that exist and are not being stopped (pending, starting, idle, busy).
    pub actual: u32,
    /// Every runner state, zero included, so a table of them has fixed columns.
    pub runners: BTreeMap<String, u32>,
    pub queued: u64,
    /// Queued jobs this pool serves, by arch (arches with none are left out).
    pub queued_by_arch: BTreeMap<Arch, u64>,
    #[schemars(with = "String")]
    pub updated_at: Timestamp,
    /// The last decisions that changed something, newest first.
    pub decisions: Vec<ScaleEvent>,
}

/// A decision that created or stopped runners, or changed the desired count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub desired: u32,
    /// Runners counted as supply before the decision.
    pub supply: u32,
    pub queued: u64,
    pub create: u32,
    /// Runners stopped or forgotten, with why (`idle_timeout`, `failed`, …).
    pub delete: Vec<StoppedRunner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoppedRunner {
    pub runner: String,
    pub reason: String,
}

/// What one decision saw: the input to [`PoolBoard::record`].
pub struct Observation<'a> {
    pub pool: &'a str,
    pub policy: &'a RunnerPoolSpec,
    pub runners: &'a [Runner],
    pub queued_by_arch: BTreeMap<Arch, u64>,
    pub decision: &'a PoolDecision,
    pub now: Timestamp,
}

/// The pools' views, shared by the scaler that writes and the API that reads. Cheap to clone.
#[derive(Clone, Default)]
pub struct PoolBoard {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    view: PoolView,
    history: VecDeque<ScaleEvent>,
}

impl PoolBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one decision of one pool.
    pub fn record(&self, obs: &Observation<'_>) {
        let view = view_of(obs);
        let mut pools = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (mut history, previous_desired) = match pools.remove(obs.pool) {
            Some(e) => (e.history, Some(e.view.desired)),
            None => (VecDeque::new(), None),
        };
        if let Some(event) = event_of(obs, previous_desired) {
            history.push_front(event);
            history.truncate(HISTORY);
        }
        pools.insert(obs.pool.to_string(), Entry { view, history });
    }

    /// Drops pools that no longer exist (a deleted RunnerPool).
    pub fn retain(&self, live: &BTreeSet<String>) {
        let mut pools = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|name, _| live.contains(name));
    }

    /// Every pool, by name, with its history.
    pub fn snapshot(&self) -> Vec<PoolView> {
        let pools = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .values()
            .map(|e| PoolView {
                decisions: e.history.iter().cloned().collect(),
                ..e.view.clone()
            })
            .collect()
    }
}

/// The pool as this observation shows it (pure; the history is added by the board).
fn view_of(obs: &Observation<'_>) -> PoolView {
    let mut runners: BTreeMap<String, u32> = crate::metrics::RUNNER_STATES
        .into_iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for r in obs.runners {
        *runners.entry(r.state.label().to_string()).or_default() += 1;
    }
    let actual = obs
        .runners
        .iter()
        .filter(|r| !matches!(r.state, RunnerState::Failed | RunnerState::Terminating))
        .count();
    PoolView {
        name: obs.pool.to_string(),
        arches: obs.policy.arches.clone(),
        min_idle: obs.policy.min_idle,
        max_runners: obs.policy.max_runners,
        desired: obs.decision.desired,
        actual: u32::try_from(actual).unwrap_or(u32::MAX),
        runners,
        queued: obs.queued_by_arch.values().sum(),
        queued_by_arch: obs.queued_by_arch.clone(),
        updated_at: obs.now,
        decisions: Vec::new(),
    }
}

/// The event worth keeping from a decision: one that acts, or moves the desired count.
fn event_of(obs: &Observation<'_>, previous_desired: Option<u32>) -> Option<ScaleEvent> {
    let d = obs.decision;
    let acts = d.create > 0 || !d.delete.is_empty();
    if !acts && previous_desired.is_none_or(|p| p == d.desired) {
        return None;
    }
    Some(ScaleEvent {
        at: obs.now,
        desired: d.desired,
        supply: d.supply,
        queued: obs.queued_by_arch.values().sum(),
        create: d.create,
        delete: d
            .delete
            .iter()
            .map(|(runner, why)| StoppedRunner {
                runner: runner.clone(),
                reason: why.as_str().to_string(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::DeleteReason;

    fn decision(desired: u32, create: u32, delete: &[(&str, DeleteReason)]) -> PoolDecision {
        PoolDecision {
            pool: "local".into(),
            desired,
            supply: 0,
            create,
            delete: delete.iter().map(|(r, w)| (r.to_string(), *w)).collect(),
        }
    }

    fn record(board: &PoolBoard, runners: &[Runner], queued: u64, d: &PoolDecision, s: i64) {
        let policy = RunnerPoolSpec {
            max_runners: 4,
            ..RunnerPoolSpec::default()
        };
        board.record(&Observation {
            pool: "local",
            policy: &policy,
            runners,
            queued_by_arch: [(Arch::X86_64, queued)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
            decision: d,
            now: Timestamp::from_second(s).expect("valid time"),
        });
    }

    fn runner(id: &str, state: RunnerState) -> Runner {
        Runner {
            id: id.into(),
            state,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn counts_runners_by_state_and_keeps_acting_decisions_newest_first() {
        let board = PoolBoard::new();
        record(&board, &[], 0, &decision(0, 0, &[]), 1);
        record(&board, &[], 3, &decision(3, 3, &[]), 2);
        // Nothing changes: not an event.
        let three = [
            runner("a", RunnerState::Busy),
            runner("b", RunnerState::Starting),
            runner("c", RunnerState::Terminating),
        ];
        record(&board, &three, 3, &decision(3, 0, &[]), 3);
        record(
            &board,
            &three,
            0,
            &decision(1, 0, &[("b", DeleteReason::NotNeeded)]),
            4,
        );
        let views = board.snapshot();
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!((v.desired, v.actual, v.queued), (1, 2, 0));
        assert_eq!(v.runners["busy"], 1);
        assert_eq!(v.runners["starting"], 1);
        assert_eq!(v.runners["terminating"], 1);
        assert_eq!(v.runners["idle"], 0);
        assert_eq!(v.runners.len(), crate::metrics::RUNNER_STATES.len());
        let at: Vec<i64> = v.decisions.iter().map(|e| e.at.as_second()).collect();
        assert_eq!(at, vec![4, 2]);
        assert_eq!(v.decisions[0].delete[0].reason, "not_needed");
        assert_eq!(v.decisions[1].create, 3);
    }

    #[test]
    fn history_is_bounded_and_deleted_pools_go() {
        let board = PoolBoard::new();
        for s in 0..30 {
            record(&board, &[], 1, &decision(1, 1, &[]), s);
        }
        assert_eq!(board.snapshot()[0].decisions.len(), HISTORY);
        board.retain(&BTreeSet::new());
        assert!(board.snapshot().is_empty());
    }
}
