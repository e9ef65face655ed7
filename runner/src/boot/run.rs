//! Driving one boot through its phases, each a type that owns what the next one needs:
//! `Prepared` (artifacts fetched, accelerator chosen, sockets bound, QEMU's command line) →
//! `Started` (QEMU running paused, console and QMP connected) → `Running` (the guest runs; one
//! select loop over console bytes, QMP events, QEMU's exit, the deadlines and cancellation) →
//! `Finished` (QEMU gone, the console judged). A phase that cannot go on returns [`Stopped`],
//! which carries the [`Facts`] learnt so far into the error result.

use super::inputs::InfraError;
use super::prepare::Prepared;
use super::running::Finished;
use super::{BootHooks, BootRequest};
use crate::accel::AccelChoice;
use bootfarm_core::console::Classification;
use bootfarm_core::result::ErrorKind;
use bootfarm_core::result::{ArtifactInfo, Durations, QemuInfo, Verdict};
use bootfarm_core::verdict::{record_console, result_from, Decision};
use bootfarm_core::BootResult;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;
use tokio::time::sleep_until;

/// What a boot has learnt so far; each phase adds to it, and every result carries it.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub accel: Option<AccelChoice>,
    pub qemu: Option<QemuInfo>,
    pub artifacts: BTreeMap<String, ArtifactInfo>,
    /// Once the guest ran.
    pub console: Option<ConsoleFacts>,
    /// The module trees a modules tarball brought.
    pub module_versions: std::collections::BTreeSet<String>,
}

/// What the console showed, for a boot that ended in an error.
#[derive(Debug)]
pub(super) struct ConsoleFacts {
    pub classification: Classification,
    pub durations: Durations,
    pub truncated: bool,
}

impl Facts {
    /// What every result carries, whatever its verdict.
    fn apply(self, r: &mut BootResult) {
        if let Some(a) = self.accel {
            r.accel = Some(a.accel.as_str().to_string());
            r.accel_reason = Some(a.reason);
        }
        r.qemu = self.qemu;
        r.artifacts = self.artifacts;
        if let Some(w) = module_mismatch(&self.module_versions, r.kernel_version.as_deref()) {
            r.warnings.push(w);
        }
    }
}

/// A warning when the modules given are for another kernel than the one that booted (the
/// kernel refuses them: "disagrees about version of symbol" or no such directory).
fn module_mismatch(
    versions: &std::collections::BTreeSet<String>,
    booted: Option<&str>,
) -> Option<String> {
    let booted = booted?;
    if versions.is_empty() || versions.contains(booted) {
        return None;
    }
    let given: Vec<&str> = versions.iter().map(String::as_str).collect();
    Some(format!(
        "modules: the archive holds lib/modules/{} but the kernel that booted is {booted}; its modules cannot load",
        given.join(", lib/modules/")
    ))
}

/// Why a boot ended before the console gave a verdict.
#[derive(Debug)]
pub(super) enum Why {
    /// An infrastructure problem: result `error`.
    Error(InfraError),
    /// QEMU refused the kernel image (its stderr): the kernel's fault, a `fail` without a console.
    KernelRejected(String),
}

/// A boot that could not go on, with what was known when it stopped.
#[derive(Debug)]
pub(super) struct Stopped {
    pub why: Why,
    /// Boxed: the error path must not make every phase's `Result` this large.
    pub facts: Box<Facts>,
}

impl Stopped {
    pub fn error(e: InfraError, facts: Facts) -> Stopped {
        Stopped {
            why: Why::Error(e),
            facts: Box::new(facts),
        }
    }

    fn into_result(self, started: Instant) -> (BootResult, Facts) {
        let Stopped { why, facts } = self;
        let mut facts = *facts;
        let r = match why {
            Why::KernelRejected(tail) => result_from(
                Classification::default(),
                Decision {
                    verdict: Verdict::Fail,
                    reason: "kernel_rejected".to_string(),
                    summary: format!("QEMU could not load the kernel: {tail}"),
                },
            ),
            Why::Error(e) => {
                tracing::debug!(kind = e.kind.as_str(), message = %e.message, "Boot error");
                let mut r = BootResult::error(e.kind, e.message);
                if let Some(c) = facts.console.take() {
                    record_console(&mut r, c.classification);
                    r.console.truncated = c.truncated;
                    r.durations = c.durations;
                }
                r.durations
                    .total
                    .get_or_insert(started.elapsed().as_secs_f64());
                r
            }
        };
        (r, facts)
    }
}

/// An error, with the facts so far moved into it: `step.or_stop(&mut facts)?`.
pub(super) trait OrStop<T> {
    fn or_stop(self, facts: &mut Facts) -> Result<T, Stopped>;
}

impl<T, E: Into<InfraError>> OrStop<T> for Result<T, E> {
    fn or_stop(self, facts: &mut Facts) -> Result<T, Stopped> {
        self.map_err(|e| Stopped::error(e.into(), std::mem::take(facts)))
    }
}

pub(super) async fn boot(req: BootRequest, hooks: BootHooks) -> BootResult {
    let started = Instant::now();
    let (mut result, facts) = match drive(&req, &hooks, started).await {
        Ok(finished) => finished.into_result(req.expect),
        Err(stopped) => stopped.into_result(started),
    };
    result.arch = Some(req.arch);
    facts.apply(&mut result);
    result
}

async fn drive(
    req: &BootRequest,
    hooks: &BootHooks,
    started: Instant,
) -> Result<Finished, Stopped> {
    let prepared = Prepared::new(req, hooks, started).await?;
    let started = prepared.start(req, hooks).await?;
    let running = started.cont(req, hooks).await?;
    running.until_verdict(req, hooks).await
}

/// Await `fut` unless the boot is cancelled or the total deadline passes first.
pub(super) async fn guarded<T>(
    hooks: &BootHooks,
    deadline: tokio::time::Instant,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, InfraError> {
    tokio::select! {
        biased;
        _ = hooks.cancel.cancelled() => Err(interrupted()),
        _ = sleep_until(deadline) => Err(InfraError::new(ErrorKind::Timeout, format!("total timeout while {what}"))),
        v = fut => Ok(v),
    }
}

pub(super) fn interrupted() -> InfraError {
    InfraError::new(
        ErrorKind::Interrupted,
        "interrupted: the boot was cancelled (signal or request)",
    )
}
