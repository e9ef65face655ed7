//! The second phase: QEMU spawned paused, its console and QMP sockets accepted, QMP greeted.
//! A QEMU that dies (or wedges) here is judged by its stderr: the kernel refused (a `fail`), the
//! job's own options refused (`invalid_job`), or QEMU itself failed (`qemu_failed`).

use super::inputs::InfraError;
use super::prepare::Prepared;
use super::run::{interrupted, Facts, OrStop, Stopped, Why};
use super::{BootHooks, BootRequest};
use crate::artifacts::InUse;
use crate::qemu::process::QemuProcess;
use crate::qmp::Qmp;
use bootfarm_core::result::ErrorKind;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UnixStream;

/// QEMU must connect its sockets and greet within this (it takes ~50 ms).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// QEMU is up, the guest paused.
pub(super) struct Started {
    pub facts: Facts,
    pub work: tempfile::TempDir,
    pub held: Vec<InUse>,
    pub qemu: QemuProcess,
    pub console: UnixStream,
    pub qmp: Qmp,
    pub total_deadline: tokio::time::Instant,
}

impl Prepared {
    pub async fn start(self, _req: &BootRequest, hooks: &BootHooks) -> Result<Started, Stopped> {
        let Prepared {
            mut facts,
            work,
            held,
            qemu_binary,
            args,
            accel,
            console_listener,
            qmp_listener,
            started,
            total_deadline,
        } = self;
        let mut qemu = QemuProcess::spawn(qemu_binary.as_os_str(), &args, false)
            .map_err(|e| {
                InfraError::new(
                    ErrorKind::QemuFailed,
                    format!("cannot run {}: {e}", qemu_binary.display()),
                )
            })
            .or_stop(&mut facts)?;
        log_spawned(&qemu, accel.as_str(), started);

        // QEMU connects both sockets during start-up, then greets on QMP.
        let connect = async {
            let (con, qmp) = tokio::try_join!(console_listener.accept(), qmp_listener.accept())?;
            let qmp = Qmp::negotiate(qmp.0)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<(UnixStream, Qmp), std::io::Error>((con.0, qmp))
        };
        let connected: Result<(UnixStream, Qmp), String> = tokio::select! {
            biased;
            _ = hooks.cancel.cancelled() => {
                qemu.kill().await;
                return Err(Stopped::error(interrupted(), facts));
            }
            status = qemu.wait() => Err(match status {
                Ok(s) => format!("QEMU exited at start ({s})"),
                Err(e) => format!("QEMU exited at start ({e})"),
            }),
            r = tokio::time::timeout(START_TIMEOUT, connect) => match r {
                Ok(Ok(pair)) => Ok(pair),
                Ok(Err(e)) => Err(format!("QEMU start-up failed: {e}")),
                Err(_) => Err(format!("QEMU did not start within {START_TIMEOUT:?}")),
            },
        };
        let (console, qmp) = match connected {
            Ok(pair) => pair,
            Err(why) => return Err(failed_start(qemu, why, facts).await),
        };
        if let Some(q) = facts.qemu.as_mut() {
            q.version = Some(qmp.version.clone());
        }
        Ok(Started {
            facts,
            work,
            held,
            qemu,
            console,
            qmp,
            total_deadline,
        })
    }
}

fn log_spawned(qemu: &QemuProcess, accel: &str, started: Instant) {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    tracing::info!(
        pid = qemu.pid(),
        accel,
        since_start_ms = started.elapsed().as_secs_f64() * 1000.0,
        spawned_unix_us = unix_us,
        "QEMU spawned"
    );
}

/// QEMU died (or wedged) at start: its stderr says why.
async fn failed_start(mut qemu: QemuProcess, why: String, facts: Facts) -> Stopped {
    let exited = tokio::time::timeout(Duration::from_secs(2), qemu.wait()).await;
    qemu.kill().await;
    let tail = qemu.stderr_tail().await;
    let why = match exited {
        Ok(Ok(status)) if !why.contains("exited") => format!("{why}; QEMU exited ({status})"),
        _ => why,
    };
    let why = if kernel_rejected(&tail) {
        Why::KernelRejected(tail)
    } else if job_option_refused(&tail) {
        // The job's own machine/CPU/memory choice: every runner would refuse it alike.
        Why::Error(InfraError::new(
            ErrorKind::InvalidJob,
            format!("QEMU refused the job's options: {tail}"),
        ))
    } else {
        Why::Error(InfraError::new(
            ErrorKind::QemuFailed,
            format!("{why}: {tail}"),
        ))
    };
    Stopped {
        why,
        facts: Box::new(facts),
    }
}

/// QEMU's start-up refusal of a machine, CPU or memory setting (not of the host or the kernel).
pub fn job_option_refused(stderr: &str) -> bool {
    [
        "unsupported machine type",
        "requires kvm",
        "property '",
        "not supported by the guest cpu",
        "cannot set up guest memory",
        "invalid smp",
        "unable to find cpu model",
        "is not a valid cpu model",
    ]
    .iter()
    .any(|p| stderr.to_ascii_lowercase().contains(p))
}

/// QEMU refused the kernel image itself: the kernel's fault, not the farm's.
pub fn kernel_rejected(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "could not load kernel",
        "linux kernel too old",
        "pvh elf note",
        "kernel image",
        "error loading",
        "invalid kernel",
    ]
    .iter()
    .any(|p| s.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_refusals_are_the_jobs() {
        assert!(job_option_refused(
            "qemu-system-x86_64: unsupported machine type\nUse -machine help"
        ));
        assert!(job_option_refused(
            "qemu-system-x86_64: Property 'Nehalem-x86_64-cpu.nosuchflag' not found"
        ));
        assert!(!job_option_refused("qemu: failed to set MSR 0x10a"));
    }

    #[test]
    fn kernel_load_errors_are_the_kernels_fault() {
        assert!(kernel_rejected(
            "qemu-system-x86_64: linux kernel too old to load a ram disk"
        ));
        assert!(kernel_rejected("qemu: could not load kernel '/x'"));
        assert!(!kernel_rejected("failed to set MSR 0x10a"));
    }
}
