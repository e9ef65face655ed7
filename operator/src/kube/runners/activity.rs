//! What the operator has seen of each runner over HTTP: polls, claims, idle times.

use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the operator has seen of each runner over HTTP (in memory: after a restart runners
/// count as starting until they poll again, which they do within one long-poll).
#[derive(Debug, Default)]
pub struct RunnerActivity {
    seen: Mutex<HashMap<String, Seen>>,
    /// Runners being scaled down: they get no new work, so a deletion never races a claim.
    draining: Mutex<std::collections::HashSet<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first_poll: Timestamp,
    /// When it last became idle (first poll, or the end of its last job).
    pub idle_since: Timestamp,
    /// When it was last seen holding a lease (claim, heartbeat, or a pool reconcile that found
    /// it busy): a job deleted under it ends its work without an `idle` call.
    pub last_busy: Option<Timestamp>,
}

impl Seen {
    /// Idle since the later of the end of its last job and the last time it was seen busy.
    pub fn idle_since(&self) -> Timestamp {
        self.last_busy
            .map_or(self.idle_since, |b| b.max(self.idle_since))
    }
}

impl RunnerActivity {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Seen>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the map is still usable.
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn polled(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
        });
    }

    pub fn busy(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            let e = m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
            e.last_busy = Some(now);
        });
    }

    pub fn idle(&self, runner: &str, now: Timestamp) {
        self.with(|m| {
            let e = m.entry(runner.to_string()).or_insert(Seen {
                first_poll: now,
                idle_since: now,
                last_busy: None,
            });
            e.idle_since = now;
        });
    }

    pub fn get(&self, runner: &str) -> Option<Seen> {
        self.with(|m| m.get(runner).copied())
    }

    /// Forget runners whose pods are gone.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.with(|m| m.retain(|k, _| alive(k)));
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| alive(k));
    }

    /// From now on `runner` is handed no work (its pod is about to be deleted).
    pub fn drain(&self, runner: &str) {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(runner.to_string());
    }

    pub fn is_draining(&self, runner: &str) -> bool {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(runner)
    }
}
