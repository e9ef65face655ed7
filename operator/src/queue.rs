//! The BootJob state machine as pure functions: every store (SQLite, Kubernetes) moves jobs only
//! through these, so phases, attempts and conditions mean the same in both modes.
//!
//! Pending → Queued → Running → Succeeded | Failed | Error | Canceled; an infrastructure failure
//! (verdict `error`, lease expiry, release) sends a Running job back to Queued until `maxAttempts`
//! attempts have started, then to Error. A kernel failure (verdict `fail`) is never retried.

use bootfarm_core::result::ErrorKind;
use bootfarm_core::result::{BootResult, Verdict};
use bootfarm_core::spec::{BootJob, BootJobStatus, Condition, JobPhase, DEFAULT_MAX_ATTEMPTS};
use jiff::Timestamp;
use std::cmp::Reverse;
use std::time::Duration;

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Keep going; the lease now ends at `expires_at`.
    Active { expires_at: Timestamp },
    /// The job was canceled or deleted: stop the boot, post nothing.
    Canceled,
    /// The lease is no longer this runner's (it expired and the job was requeued or finished):
    /// stop the boot, post nothing.
    Lost,
}

/// Condition types set on BootJobs.
pub mod condition {
    pub const VALID: &str = "Valid";
    pub const QUEUED: &str = "Queued";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const ERROR: &str = "Error";
    pub const CANCELED: &str = "Canceled";
}

/// RFC 3339 with microseconds: sortable, and fine enough to order a burst of submissions.
pub fn fmt_time(ts: Timestamp) -> String {
    round_time(ts).to_string()
}

/// A time as the API shows it: to the microsecond.
pub fn round_time(ts: Timestamp) -> Timestamp {
    ts.round(jiff::Unit::Microsecond).unwrap_or(ts)
}

pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// The job's phase (Pending while it has no status).
pub fn phase(job: &BootJob) -> JobPhase {
    job.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub fn max_attempts(job: &BootJob) -> u32 {
    job.spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1)
}

fn status_mut(job: &mut BootJob) -> &mut BootJobStatus {
    job.status.get_or_insert_with(BootJobStatus::default)
}

/// Longest condition message kept (Kubernetes' own limit is 32 KiB; a status must stay small).
pub const MAX_CONDITION_MESSAGE: usize = 1024;

/// Sets a condition; `lastTransitionTime` moves only when the status value changes.
pub fn set_condition(
    status: &mut BootJobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    upsert_condition(
        &mut status.conditions,
        type_,
        value,
        reason,
        message,
        generation,
        now,
    );
}

/// Sets a condition in a list of them (BootJobs' and RunnerPools'); `lastTransitionTime` moves
/// only when the status value changes.
pub fn upsert_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    let time = now.round(jiff::Unit::Second).unwrap_or(now);
    // Messages quote results and runners; a status must stay small whatever they say.
    let message = &bootfarm_core::result::check::truncate(message, MAX_CONDITION_MESSAGE);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = time;
            }
            c.status = value.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: time,
            observed_generation: generation,
        }),
    }
}

/// Sets only the conditions already present (to False), so a fresh job does not grow
/// conditions for phases it never reached.
fn clear_condition(
    status: &mut BootJobStatus,
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    if status.conditions.iter().any(|c| c.type_ == type_) {
        set_condition(status, type_, false, reason, message, generation, now);
    }
}

pub fn condition<'a>(job: &'a BootJob, type_: &str) -> Option<&'a Condition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// A new, valid job enters the queue.
pub fn enqueue(job: &mut BootJob, now: Timestamp) {
    let generation = job.metadata.generation;
    let status = status_mut(job);
    status.phase = JobPhase::Queued;
    status.queued_at = Some(round_time(now));
    status.observed_generation = generation;
    set_condition(
        status,
        condition::VALID,
        true,
        "Validated",
        "the spec is valid",
        generation,
        now,
    );
    set_condition(
        status,
        condition::QUEUED,
        true,
        "Submitted",
        "waiting for a runner",
        generation,
        now,
    );
}

/// An invalid job ends at once in Error, with a condition that says what is wrong.
pub fn reject_invalid(job: &mut BootJob, message: &str, now: Timestamp) {
    let generation = job.metadata.generation;
    let status = status_mut(job);
    status.phase = JobPhase::Error;
    status.completion_time = Some(round_time(now));
    status.observed_generation = generation;
    set_condition(
        status,
        condition::VALID,
        false,
        "InvalidSpec",
        message,
        generation,
        now,
    );
    set_condition(
        status,
        condition::ERROR,
        true,
        "InvalidSpec",
        message,
        generation,
        now,
    );
    clear_condition(
        status,
        condition::QUEUED,
        "InvalidSpec",
        message,
        generation,
        now,
    );
}

/// Sort key for handing out work: highest priority first, then the oldest queuedAt, then name.
pub fn claim_order(job: &BootJob) -> (Reverse<i32>, Timestamp, String) {
    let queued = job
        .status
        .as_ref()
        .and_then(|s| s.queued_at)
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::MAX);
    (
        Reverse(job.spec.priority),
        queued,
        job.metadata.name.clone().unwrap_or_default(),
    )
}

/// `now + d`, saturating.
pub fn add(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// Queued → Running under a new lease; attempts + 1. Returns the lease expiry.
pub fn start_attempt(
    job: &mut BootJob,
    runner: &str,
    pool: &str,
    lease_id: &str,
    lease_ttl: Duration,
    now: Timestamp,
) -> Timestamp {
    let generation = job.metadata.generation;
    let expires = add(now, lease_ttl);
    let status = status_mut(job);
    status.phase = JobPhase::Running;
    status.attempts += 1;
    status.runner = Some(runner.to_string());
    status.pool = Some(pool.to_string());
    status.lease_id = Some(lease_id.to_string());
    status.lease_expires_at = Some(round_time(expires));
    status.start_time = Some(round_time(now));
    let msg = format!("attempt {} on runner {runner}", status.attempts);
    set_condition(
        status,
        condition::QUEUED,
        false,
        "Claimed",
        &msg,
        generation,
        now,
    );
    set_condition(
        status,
        condition::RUNNING,
        true,
        "Booting",
        &msg,
        generation,
        now,
    );
    expires
}

/// Whether `lease_id` is the job's current lease on a Running job.
pub fn lease_is_current(job: &BootJob, lease_id: &str) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.phase == JobPhase::Running && s.lease_id.as_deref() == Some(lease_id))
}

/// The runner's heartbeat: extend a current lease, or tell it to stop.
pub fn heartbeat(
    job: &mut BootJob,
    lease_id: &str,
    lease_ttl: Duration,
    now: Timestamp,
) -> LeaseState {
    let Some(status) = job.status.as_mut() else {
        return LeaseState::Lost;
    };
    if status.lease_id.as_deref() != Some(lease_id) {
        return LeaseState::Lost;
    }
    match status.phase {
        JobPhase::Running => {
            let expires = add(now, lease_ttl);
            status.lease_expires_at = Some(round_time(expires));
            LeaseState::Active {
                expires_at: expires,
            }
        }
        JobPhase::Canceled => LeaseState::Canceled,
        _ => LeaseState::Lost,
    }
}

/// Whether a Running job's lease ended before `now`.
pub fn lease_expired(job: &BootJob, now: Timestamp) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.phase == JobPhase::Running && s.lease_expires_at.is_none_or(|t| t < now))
}

/// An infrastructure failure of the current attempt: back to Queued, or Error when all
/// attempts are used (or the failure is permanent). Returns true when requeued.
fn infra_failure(
    job: &mut BootJob,
    reason: &str,
    message: &str,
    permanent: bool,
    now: Timestamp,
) -> bool {
    let generation = job.metadata.generation;
    let max = max_attempts(job);
    let status = status_mut(job);
    let requeue = !permanent && status.attempts < max;
    status.lease_id = None;
    status.lease_expires_at = None;
    status.runner = None;
    if requeue {
        status.phase = JobPhase::Queued;
        // Keep the original queuedAt: a retried job keeps its place in line.
        let msg = format!(
            "attempt {} of {max} failed: {message}; retrying",
            status.attempts
        );
        set_condition(
            status,
            condition::RUNNING,
            false,
            reason,
            &msg,
            generation,
            now,
        );
        set_condition(
            status,
            condition::QUEUED,
            true,
            "Retrying",
            &msg,
            generation,
            now,
        );
    } else {
        status.phase = JobPhase::Error;
        status.completion_time = Some(round_time(now));
        let msg = if permanent {
            message.to_string()
        } else {
            format!("all {max} attempts failed; last: {message}")
        };
        set_condition(
            status,
            condition::RUNNING,
            false,
            reason,
            &msg,
            generation,
            now,
        );
        clear_condition(status, condition::QUEUED, reason, &msg, generation, now);
        set_condition(
            status,
            condition::ERROR,
            true,
            reason,
            &msg,
            generation,
            now,
        );
    }
    requeue
}

/// How `record_result` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Finished,
    Retrying,
}

/// The runner's verdict for the current attempt (the caller checked the lease).
pub fn record_result(job: &mut BootJob, result: &BootResult, now: Timestamp) -> Recorded {
    let generation = job.metadata.generation;
    let summary = bootfarm_core::spec::summarize(result);
    if result.result == Verdict::Error {
        let kind = result.error.as_ref().map(|e| e.kind);
        let permanent = kind.is_some_and(ErrorKind::is_permanent);
        let kind = kind.map_or("error", ErrorKind::as_str);
        let message = format!("{kind}: {}", result.summary);
        let requeued = infra_failure(job, "InfrastructureError", &message, permanent, now);
        if requeued {
            return Recorded::Retrying;
        }
        status_mut(job).result = Some(summary);
        return Recorded::Finished;
    }
    let status = status_mut(job);
    let (phase, type_, reason) = match result.result {
        Verdict::Pass => (JobPhase::Succeeded, condition::SUCCEEDED, "Passed"),
        _ => (JobPhase::Failed, condition::FAILED, "KernelFailed"),
    };
    status.phase = phase;
    status.completion_time = Some(round_time(now));
    status.lease_id = None;
    status.lease_expires_at = None;
    let message = if result.summary.is_empty() {
        result.reason.clone()
    } else {
        result.summary.clone()
    };
    set_condition(
        status,
        condition::RUNNING,
        false,
        "Finished",
        &message,
        generation,
        now,
    );
    set_condition(status, type_, true, reason, &message, generation, now);
    status.result = Some(summary);
    Recorded::Finished
}

/// The lease ran out (runner died, pod evicted, node lost). Returns true when requeued.
pub fn expire(job: &mut BootJob, now: Timestamp) -> bool {
    let runner = job
        .status
        .as_ref()
        .and_then(|s| s.runner.clone())
        .unwrap_or_else(|| "?".into());
    infra_failure(
        job,
        "LeaseExpired",
        &format!("runner {runner} stopped renewing its lease"),
        false,
        now,
    )
}

/// How long past its total timeout a running attempt may still report: the runner needs a
/// moment to stop QEMU and post, and a result retried over a minute must still count.
pub const OVERDUE_GRACE: Duration = Duration::from_secs(120);

/// Whether a Running attempt has outlived its job's total timeout (plus [`OVERDUE_GRACE`]):
/// its runner heartbeats but will never report, or the operator could not record the report.
pub fn overdue(job: &BootJob, now: Timestamp) -> bool {
    let Some(status) = job.status.as_ref() else {
        return false;
    };
    if status.phase != JobPhase::Running {
        return false;
    }
    let total = job
        .spec
        .timeouts
        .as_ref()
        .and_then(|t| t.total)
        .map(Duration::from_secs)
        .unwrap_or(bootfarm_core::spec::validate::DEFAULT_TOTAL_TIMEOUT);
    status
        .start_time
        .is_some_and(|started| add(started, total + OVERDUE_GRACE) < now)
}

/// Ends the current attempt when it is stale: its lease ran out, or it outlived the job's total
/// timeout. `Some(requeued)` when it ended; `None` when the attempt may go on.
pub fn end_stale_attempt(job: &mut BootJob, now: Timestamp) -> Option<bool> {
    if lease_expired(job, now) {
        return Some(expire(job, now));
    }
    if overdue(job, now) {
        let total = job
            .spec
            .timeouts
            .as_ref()
            .and_then(|t| t.total)
            .unwrap_or(bootfarm_core::spec::validate::DEFAULT_TOTAL_TIMEOUT.as_secs());
        let runner = job
            .status
            .as_ref()
            .and_then(|s| s.runner.clone())
            .unwrap_or_else(|| "?".into());
        return Some(infra_failure(
            job,
            "TotalTimeout",
            &format!("runner {runner} did not report within the job's total timeout ({total} s)"),
            false,
            now,
        ));
    }
    None
}

/// The runner gave the job back without a verdict. Returns true when requeued.
pub fn release(job: &mut BootJob, reason: &str, now: Timestamp) -> bool {
    infra_failure(job, "Released", reason, false, now)
}

/// Queued or Running → Canceled; returns false (and changes nothing) for a finished job.
/// The lease id stays so the runner's next heartbeat answers Canceled rather than Lost.
pub fn cancel(job: &mut BootJob, now: Timestamp) -> bool {
    let generation = job.metadata.generation;
    let status = status_mut(job);
    if status.phase.is_finished() {
        return false;
    }
    let was_running = status.phase == JobPhase::Running;
    status.phase = JobPhase::Canceled;
    status.completion_time = Some(round_time(now));
    let msg = if was_running {
        "canceled while running; the runner stops at its next heartbeat"
    } else {
        "canceled before it ran"
    };
    clear_condition(status, condition::QUEUED, "Canceled", msg, generation, now);
    clear_condition(status, condition::RUNNING, "Canceled", msg, generation, now);
    set_condition(
        status,
        condition::CANCELED,
        true,
        "Canceled",
        msg,
        generation,
        now,
    );
    true
}

/// Whether a finished job's `ttlSecondsAfterFinished` has passed at `now`.
pub fn ttl_expired(job: &BootJob, now: Timestamp) -> bool {
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return false;
    };
    let Some(status) = job.status.as_ref() else {
        return false;
    };
    if !status.phase.is_finished() {
        return false;
    }
    status
        .completion_time
        .is_some_and(|done| add(done, Duration::from_secs(ttl)) <= now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bootfarm_core::spec::BootJobSpec;
    use bootfarm_core::Arch;

    pub(crate) fn job(name: &str) -> BootJob {
        let mut job = BootJob::new(name, BootJobSpec::new(Arch::X86_64, "file:///k"));
        job.metadata.generation = Some(1);
        job
    }

    pub(crate) fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("in range")
    }

    fn pass() -> BootResult {
        let mut r = BootResult::error(ErrorKind::Internal, "y");
        r.result = Verdict::Pass;
        r.reason = "poweroff".into();
        r.summary = "powered off".into();
        r.error = None;
        r
    }

    const TTL: Duration = Duration::from_secs(5);

    fn cond_status(job: &BootJob, type_: &str) -> Option<String> {
        condition(job, type_).map(|c| c.status.clone())
    }

    #[test]
    fn an_enqueued_job_is_queued_valid_and_timestamped() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        assert_eq!(phase(&j), JobPhase::Queued);
        assert_eq!(cond_status(&j, condition::VALID).as_deref(), Some("True"));
        assert_eq!(cond_status(&j, condition::QUEUED).as_deref(), Some("True"));
        let c = condition(&j, condition::QUEUED).expect("set");
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(c.last_transition_time, t(0));
        assert!(cond_status(&j, condition::RUNNING).is_none());
    }

    #[test]
    fn claim_order_puts_higher_priority_first_then_older() {
        let mut jobs: Vec<BootJob> = (0..4).map(|i| job(&format!("j{i}"))).collect();
        for (i, j) in jobs.iter_mut().enumerate() {
            enqueue(j, t(i64::try_from(i).expect("small")));
        }
        jobs[3].spec.priority = 10;
        jobs[2].spec.priority = -1;
        jobs.sort_by_key(claim_order);
        let names: Vec<_> = jobs
            .iter()
            .map(|j| j.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["j3", "j0", "j1", "j2"]);
    }

    #[test]
    fn a_passing_verdict_succeeds_and_a_failing_one_fails_without_retry() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        assert_eq!(record_result(&mut j, &pass(), t(2)), Recorded::Finished);
        assert_eq!(phase(&j), JobPhase::Succeeded);
        assert_eq!(
            cond_status(&j, condition::RUNNING).as_deref(),
            Some("False")
        );
        assert_eq!(
            cond_status(&j, condition::SUCCEEDED).as_deref(),
            Some("True")
        );

        let mut j = job("b");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        let mut fail = pass();
        fail.result = Verdict::Fail;
        assert_eq!(record_result(&mut j, &fail, t(2)), Recorded::Finished);
        assert_eq!(phase(&j), JobPhase::Failed);
        assert_eq!(j.status.as_ref().map(|s| s.attempts), Some(1));
    }

    #[test]
    fn an_error_verdict_retries_until_max_attempts_then_errors() {
        let mut j = job("a");
        j.spec.max_attempts = Some(2);
        enqueue(&mut j, t(0));
        let err = BootResult::error(ErrorKind::QemuFailed, "qemu died");
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        assert_eq!(record_result(&mut j, &err, t(2)), Recorded::Retrying);
        assert_eq!(phase(&j), JobPhase::Queued);
        assert_eq!(j.status.as_ref().and_then(|s| s.queued_at), Some(t(0)));
        start_attempt(&mut j, "r2", "local", "L2", TTL, t(3));
        assert_eq!(record_result(&mut j, &err, t(4)), Recorded::Finished);
        assert_eq!(phase(&j), JobPhase::Error);
        assert_eq!(j.status.as_ref().map(|s| s.attempts), Some(2));
        let c = condition(&j, condition::ERROR).expect("error condition");
        assert!(c.message.contains("all 2 attempts failed"), "{}", c.message);
    }

    #[test]
    fn a_missing_artifact_is_not_retried() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        let err = BootResult::error(ErrorKind::ArtifactMissing, "kernel /nope: no such file");
        assert_eq!(record_result(&mut j, &err, t(2)), Recorded::Finished);
        assert_eq!(phase(&j), JobPhase::Error);
    }

    #[test]
    fn an_expired_lease_requeues_and_counts_the_attempt() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        assert!(!lease_expired(&j, t(5)));
        assert!(lease_expired(&j, t(7)));
        assert!(expire(&mut j, t(7)));
        assert_eq!(phase(&j), JobPhase::Queued);
        assert_eq!(heartbeat(&mut j, "L1", TTL, t(8)), LeaseState::Lost);
        start_attempt(&mut j, "r2", "local", "L2", TTL, t(8));
        assert_eq!(j.status.as_ref().map(|s| s.attempts), Some(2));
        assert!(!lease_is_current(&j, "L1"));
        assert!(lease_is_current(&j, "L2"));
    }

    #[test]
    fn an_attempt_past_its_total_timeout_ends_even_while_heartbeating() {
        let mut j = job("a");
        j.spec.timeouts = Some(bootfarm_core::spec::Timeouts {
            boot: None,
            total: Some(60),
        });
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        let late = 1 + 60 + i64::try_from(OVERDUE_GRACE.as_secs()).expect("seconds");
        heartbeat(&mut j, "L1", Duration::from_secs(600), t(late - 1));
        assert_eq!(end_stale_attempt(&mut j, t(late)), None, "not yet");
        assert_eq!(end_stale_attempt(&mut j, t(late + 1)), Some(true));
        assert_eq!(phase(&j), JobPhase::Queued);
        let c = condition(&j, condition::RUNNING).expect("running condition");
        assert_eq!(c.reason, "TotalTimeout");
        assert!(c.message.contains("total timeout (60 s)"), "{}", c.message);
    }

    #[test]
    fn heartbeats_extend_the_lease_and_report_cancel() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        assert_eq!(
            heartbeat(&mut j, "L1", TTL, t(4)),
            LeaseState::Active { expires_at: t(9) }
        );
        assert!(!lease_expired(&j, t(8)));
        assert!(cancel(&mut j, t(5)));
        assert_eq!(heartbeat(&mut j, "L1", TTL, t(6)), LeaseState::Canceled);
        assert!(
            !lease_is_current(&j, "L1"),
            "a canceled job accepts no result"
        );
        assert!(!cancel(&mut j, t(7)), "cancel is idempotent");
        assert_eq!(
            cond_status(&j, condition::CANCELED).as_deref(),
            Some("True")
        );
        assert_eq!(
            cond_status(&j, condition::RUNNING).as_deref(),
            Some("False")
        );
    }

    #[test]
    fn finished_jobs_are_not_canceled() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        record_result(&mut j, &pass(), t(2));
        assert!(!cancel(&mut j, t(3)));
        assert_eq!(phase(&j), JobPhase::Succeeded);
    }

    #[test]
    fn ttl_counts_from_completion() {
        let mut j = job("a");
        j.spec.ttl_seconds_after_finished = Some(10);
        enqueue(&mut j, t(0));
        assert!(!ttl_expired(&j, t(100)), "queued jobs never expire");
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        record_result(&mut j, &pass(), t(2));
        assert!(!ttl_expired(&j, t(11)));
        assert!(ttl_expired(&j, t(12)));
    }

    #[test]
    fn invalid_jobs_end_in_error_with_a_reason() {
        let mut j = job("a");
        reject_invalid(&mut j, "spec.smp: must be 1..=64", t(0));
        assert_eq!(phase(&j), JobPhase::Error);
        let c = condition(&j, condition::VALID).expect("valid condition");
        assert_eq!(c.status, "False");
        assert!(c.message.contains("spec.smp"));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut j = job("a");
        enqueue(&mut j, t(0));
        start_attempt(&mut j, "r1", "local", "L1", TTL, t(1));
        expire(&mut j, t(10));
        let before = condition(&j, condition::RUNNING).map(|c| c.last_transition_time);
        release(&mut j, "again", t(20)); // not running any more; Running stays False
        let after = condition(&j, condition::RUNNING).map(|c| c.last_transition_time);
        assert_eq!(before, after);
    }
}
