//! What this operator knows of each BootJob without asking the API server: the watch cache,
//! its own writes the watch has not delivered yet, the leases its runners renewed in memory,
//! and the claims it is writing right now.
//!
//! Reads served from here cost the API server nothing: log chunks, heartbeats, job pages and
//! claim candidates all come from the view. Writes stay conditional on `resourceVersion`, so a
//! stale view can only cost a conflict, never a wrong transition.
//!
//! Leases: a heartbeat extends the lease here, not in the BootJob's status (that would be one
//! status write per runner every few seconds). The status keeps the lease's holder
//! (`leaseId`, `runner`) from the claim and its expiry as last written; any other write of the
//! job carries the live expiry along. After an operator restart the view knows no renewals: the
//! store gives every lease one full period from the start before any can expire
//! (`KubeJobStore::with_lease_grace`), so a runner still alive renews in that time.

use bootfarm_core::spec::{BootJob, JobPhase};
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an own write is preferred over the watch cache: far beyond any watch delay, short
/// enough that a job deleted meanwhile is forgotten soon.
const WRITTEN_KEEP: Duration = Duration::from_secs(30);
/// A claim being written holds its job this long at most (the write's own timeout bounds it;
/// a request dropped mid-claim must not hold the job forever).
const RESERVATION_KEEP: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Renewal {
    lease_id: String,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    written: HashMap<String, (Arc<BootJob>, Instant)>,
    leases: HashMap<String, Renewal>,
    reserved: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
pub struct JobView {
    state: Mutex<State>,
}

/// Whether `a` is a later version than `b`. The API server's resourceVersions are etcd
/// revisions (integers); anything unparseable counts as older, so the watch cache wins.
pub fn is_newer(a: &BootJob, b: &BootJob) -> bool {
    let rv = |j: &BootJob| {
        j.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (rv(a), rv(b)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

impl JobView {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update; the maps are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job as this operator knows it: the newer of `cached` and its own last write, with
    /// the live lease. `None` when neither has it.
    pub fn resolve(&self, name: &str, cached: Option<&BootJob>) -> Option<BootJob> {
        let mut st = self.lock();
        let own = match st.written.get(name) {
            Some((job, at)) if at.elapsed() < WRITTEN_KEEP => match cached {
                Some(c) if !is_newer(job, c) => None,
                _ => Some(job.clone()),
            },
            _ => None,
        };
        if own.is_none() {
            // The watch caught up (or the entry is old): the cache speaks from here on.
            st.written.remove(name);
        }
        let mut job = match own {
            Some(own) => (*own).clone(),
            None => cached?.clone(),
        };
        live_lease(&st.leases, &mut job);
        Some(job)
    }

    /// Every job: `cached` merged with own writes the watch has not delivered (new ones too),
    /// Running ones with their live lease. Shared, not copied: this runs on every claim.
    pub fn resolve_all(&self, cached: &[Arc<BootJob>]) -> Vec<Arc<BootJob>> {
        let mut st = self.lock();
        st.written.retain(|_, (_, at)| at.elapsed() < WRITTEN_KEEP);
        let mut own_left: HashMap<&str, &Arc<BootJob>> = st
            .written
            .iter()
            .map(|(n, (j, _))| (n.as_str(), j))
            .collect();
        let mut out: Vec<Arc<BootJob>> = Vec::with_capacity(cached.len() + own_left.len());
        for c in cached {
            let name = c.metadata.name.as_deref().unwrap_or_default();
            match own_left.remove(name) {
                Some(own) if is_newer(own, c) => out.push(own.clone()),
                _ => out.push(c.clone()),
            }
        }
        out.extend(own_left.into_values().cloned());
        for job in &mut out {
            if job
                .status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Running)
            {
                let mut live = (**job).clone();
                live_lease(&st.leases, &mut live);
                *job = Arc::new(live);
            }
        }
        out
    }

    /// The live lease on a job read elsewhere (the controller's own cache object).
    pub fn with_live_lease(&self, job: &BootJob) -> BootJob {
        let mut job = job.clone();
        live_lease(&self.lock().leases, &mut job);
        job
    }

    /// Remembers what the API server stored for a write of ours (and the lease it carries).
    pub fn wrote(&self, stored: &BootJob) {
        let Some(name) = stored.metadata.name.clone() else {
            return;
        };
        let mut st = self.lock();
        match running_lease(stored) {
            Some((lease_id, expires_at)) => {
                if st.leases.get(&name).is_none_or(|r| r.lease_id != lease_id) {
                    let renewal = Renewal {
                        lease_id: lease_id.to_string(),
                        expires_at,
                    };
                    st.leases.insert(name.clone(), renewal);
                }
            }
            None => {
                st.leases.remove(&name);
            }
        }
        st.written
            .insert(name, (Arc::new(stored.clone()), Instant::now()));
    }

    /// A heartbeat renewed `lease_id` of `name` until `expires_at`.
    pub fn renew(&self, name: &str, lease_id: &str, expires_at: Timestamp) {
        self.lock().leases.insert(
            name.to_string(),
            Renewal {
                lease_id: lease_id.to_string(),
                expires_at,
            },
        );
    }

    /// The job is gone: forget it.
    pub fn forget(&self, name: &str) {
        let mut st = self.lock();
        st.written.remove(name);
        st.leases.remove(name);
        st.reserved.remove(name);
    }

    /// Holds `name` for one claim being written; false when another claim holds it.
    pub fn reserve(&self, name: &str) -> bool {
        let mut st = self.lock();
        match st.reserved.get(name) {
            Some(at) if at.elapsed() < RESERVATION_KEEP => false,
            _ => {
                st.reserved.insert(name.to_string(), Instant::now());
                true
            }
        }
    }

    pub fn is_reserved(&self, name: &str) -> bool {
        self.lock()
            .reserved
            .get(name)
            .is_some_and(|at| at.elapsed() < RESERVATION_KEEP)
    }

    pub fn unreserve(&self, name: &str) {
        self.lock().reserved.remove(name);
    }

    /// Renewals and own writes held (for tests and the operator's own metrics).
    pub fn sizes(&self) -> (usize, usize) {
        let st = self.lock();
        (st.written.len(), st.leases.len())
    }
}

fn running_lease(job: &BootJob) -> Option<(&str, Timestamp)> {
    let s = job.status.as_ref()?;
    if s.phase != JobPhase::Running {
        return None;
    }
    Some((s.lease_id.as_deref()?, s.lease_expires_at?))
}

/// Sets a Running job's `leaseExpiresAt` to the last renewal of its current lease, if any.
fn live_lease(leases: &HashMap<String, Renewal>, job: &mut BootJob) {
    let Some(name) = job.metadata.name.as_deref() else {
        return;
    };
    let Some(renewal) = leases.get(name) else {
        return;
    };
    let Some(status) = job.status.as_mut() else {
        return;
    };
    if status.phase == JobPhase::Running
        && status.lease_id.as_deref() == Some(renewal.lease_id.as_str())
    {
        status.lease_expires_at = Some(crate::queue::round_time(renewal.expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::BootJobSpec;
    use bootfarm_core::Arch;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("in range")
    }

    fn job(rv: &str, phase: JobPhase, lease: Option<(&str, i64)>) -> BootJob {
        let mut j = BootJob::new("j", BootJobSpec::new(Arch::X86_64, "http://127.0.0.1:1/k"));
        j.metadata.resource_version = Some(rv.into());
        let s = j.status.get_or_insert_with(Default::default);
        s.phase = phase;
        if let Some((id, exp)) = lease {
            s.lease_id = Some(id.into());
            s.lease_expires_at = Some(at(exp));
        }
        j
    }

    fn lease_of(j: &BootJob) -> Option<Timestamp> {
        j.status.as_ref().and_then(|s| s.lease_expires_at)
    }

    #[test]
    fn an_own_write_wins_until_the_watch_delivers_it_or_something_newer() {
        let view = JobView::default();
        let cached = job("10", JobPhase::Queued, None);
        let claimed = job("11", JobPhase::Running, Some(("l1", 100)));
        view.wrote(&claimed);
        let seen = view.resolve("j", Some(&cached)).expect("known");
        assert_eq!(
            seen.status.as_ref().map(|s| s.phase),
            Some(JobPhase::Running)
        );
        // The watch delivers version 12 (a cancel by kubectl): it wins and the own copy goes.
        let mut canceled = job("12", JobPhase::Canceled, Some(("l1", 100)));
        canceled.metadata.resource_version = Some("12".into());
        let seen = view.resolve("j", Some(&canceled)).expect("known");
        assert_eq!(
            seen.status.as_ref().map(|s| s.phase),
            Some(JobPhase::Canceled)
        );
        assert_eq!(
            view.sizes().0,
            0,
            "own write dropped once the cache is as new"
        );
        // An own write of a job the watch has not shown at all is still found.
        let view = JobView::default();
        view.wrote(&job("3", JobPhase::Queued, None));
        assert!(view.resolve("j", None).is_some());
        assert_eq!(view.resolve_all(&[]).len(), 1);
    }

    #[test]
    fn heartbeats_renew_in_memory_and_only_the_current_lease() {
        let view = JobView::default();
        let running = job("5", JobPhase::Running, Some(("l1", 30)));
        view.wrote(&running);
        assert_eq!(
            lease_of(&view.with_live_lease(&running)),
            Some(at(30)),
            "as claimed"
        );
        view.renew("j", "l1", at(90));
        assert_eq!(lease_of(&view.with_live_lease(&running)), Some(at(90)));
        // A renewal of an older lease does not apply to a new one.
        let next = job("6", JobPhase::Running, Some(("l2", 200)));
        assert_eq!(lease_of(&view.with_live_lease(&next)), Some(at(200)));
        // A fresh operator knows no renewal: the stored expiry (the store adds the grace).
        let restarted = JobView::default();
        assert_eq!(lease_of(&restarted.with_live_lease(&next)), Some(at(200)));
        // Finished jobs keep their status as stored.
        let done = job("7", JobPhase::Succeeded, None);
        view.renew("j", "l2", at(300));
        assert_eq!(lease_of(&view.with_live_lease(&done)), None);
    }

    #[test]
    fn a_reservation_holds_a_job_for_one_claim() {
        let view = JobView::default();
        assert!(view.reserve("j"));
        assert!(!view.reserve("j"));
        assert!(view.is_reserved("j"));
        view.unreserve("j");
        assert!(view.reserve("j"));
    }
}
