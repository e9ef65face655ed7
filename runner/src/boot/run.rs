//! Driving one boot: artifacts, accelerator, QEMU started paused with the console and QMP
//! connected to sockets we listen on, `cont`, then one select loop over console bytes, QMP
//! events, QEMU's exit, the deadlines and cancellation, until the verdict is known.

use super::inputs::{self, InfraError, Inputs};
use super::{BootHooks, BootRequest, ConsoleOut};
use crate::accel::{self, AccelChoice};
use crate::console::ConsoleSink;
use crate::qemu::process::QemuProcess;
use crate::qemu::profile::{build_args, Profile, QemuConfig};
use crate::qmp::{GuestEvent, Qmp};
use bootfarm_core::console::session::{Action, Session, SessionConfig};
use bootfarm_core::console::{Classification, Classifier, Event};
use bootfarm_core::result::{Durations, QemuInfo, Stage, Verdict};
use bootfarm_core::verdict::{decide, record_console, result_from, Decision, End, Expect};
use bootfarm_core::BootResult;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::sleep_until;

/// QEMU must connect its sockets and greet within this (it takes ~50 ms).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After we decided, how long QEMU gets to flush the console and exit before SIGKILL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// A session typing a line waits this long for its echo before sending the rest.
const SESSION_IDLE: Duration = Duration::from_secs(2);

/// What is known so far, for error results.
#[derive(Default)]
struct Known {
    accel: Option<AccelChoice>,
    qemu: Option<QemuInfo>,
    artifacts: std::collections::BTreeMap<String, bootfarm_core::result::ArtifactInfo>,
    classification: Option<Classification>,
    durations: Durations,
    truncated: bool,
}

pub(super) async fn boot(req: BootRequest, hooks: BootHooks) -> BootResult {
    let started = Instant::now();
    let mut known = Known::default();
    let mut result = match drive(&req, &hooks, started, &mut known).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(kind = e.kind, message = %e.message, "Boot error");
            let mut r = BootResult::error(e.kind, e.message);
            if let Some(c) = known.classification.take() {
                record_console(&mut r, c);
            }
            r.console.truncated = known.truncated;
            r.durations = known.durations.clone();
            r.durations
                .total
                .get_or_insert(started.elapsed().as_secs_f64());
            r
        }
    };
    result.arch = Some(req.arch);
    if let Some(a) = &known.accel {
        result.accel = Some(a.accel.as_str().to_string());
        result.accel_reason = Some(a.reason.clone());
    }
    result.qemu = known.qemu.take();
    result.artifacts = std::mem::take(&mut known.artifacts);
    result
}

/// Await `fut` unless the boot is cancelled or the total deadline passes first.
async fn guarded<T>(
    hooks: &BootHooks,
    deadline: tokio::time::Instant,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, InfraError> {
    tokio::select! {
        biased;
        _ = hooks.cancel.cancelled() => Err(interrupted()),
        _ = sleep_until(deadline) => Err(InfraError::new("timeout", format!("total timeout while {what}"))),
        v = fut => Ok(v),
    }
}

fn interrupted() -> InfraError {
    InfraError::new(
        "interrupted",
        "interrupted: the boot was cancelled (signal or request)",
    )
}

/// A job's options that cannot run here, decided before QEMU starts: the `host` CPU without
/// KVM, more guest memory than this runner has. Permanent (`invalid_job`): retrying elsewhere
/// in the pool gives the same answer.
pub fn check_resources(
    req: &BootRequest,
    accel: crate::qemu::profile::Accel,
    memory_limit: Option<u64>,
) -> Result<(), InfraError> {
    if accel == crate::qemu::profile::Accel::Tcg && req.cpu.as_ref().is_some_and(|c| c.needs_kvm())
    {
        return Err(InfraError::new(
            "invalid_job",
            "cpu \"host\" needs KVM, and this boot runs under TCG (KVM is not usable here); \
             choose a model such as max",
        ));
    }
    if let (Some(want), Some(limit)) = (req.memory, memory_limit) {
        if want > limit {
            return Err(InfraError::new(
                "invalid_job",
                format!(
                    "memory {} MiB is more than this runner has ({} MiB)",
                    want >> 20,
                    limit >> 20
                ),
            ));
        }
    }
    Ok(())
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

async fn drive(
    req: &BootRequest,
    hooks: &BootHooks,
    started: Instant,
    known: &mut Known,
) -> Result<BootResult, InfraError> {
    let total_deadline = tokio::time::Instant::from_std(started + req.timeout);
    let profile = Profile::for_arch(req.arch);
    let work = tempfile::Builder::new()
        .prefix("bootfarm-")
        .tempdir()
        .map_err(|e| InfraError::new("internal", format!("creating a work directory: {e}")))?;

    let qemu_binary = inputs::find_qemu(&profile, req.qemu_binary_dir.as_deref())?;
    let fetched = guarded(
        hooks,
        total_deadline,
        "fetching artifacts",
        inputs::fetch_all(req, work.path()),
    )
    .await?;
    let Inputs {
        kernel,
        initrd,
        rootfs,
        dtb,
        artifacts,
    } = fetched?;
    known.artifacts = artifacts;

    let cache_dir = req.cache_dir.clone();
    let choice = guarded(
        hooks,
        total_deadline,
        "choosing the accelerator",
        accel::choose(
            req.accel,
            &profile,
            &qemu_binary,
            &kernel,
            cache_dir.as_deref(),
        ),
    )
    .await?
    .map_err(|e| InfraError::new("kvm_unavailable", e.to_string()))?;
    known.accel = Some(choice.clone());
    check_resources(req, choice.accel, crate::host::memory_limit())?;

    let sandbox = crate::qemu::sandbox::supported(&qemu_binary, req.cache_dir.as_deref()).await;
    let console_path = work.path().join("console.sock");
    let qmp_path = work.path().join("qmp.sock");
    let bind = |p: &Path| {
        UnixListener::bind(p)
            .map_err(|e| InfraError::new("internal", format!("listening on {}: {e}", p.display())))
    };
    let console_listener = bind(&console_path)?;
    let qmp_listener = bind(&qmp_path)?;
    let args = build_args(&QemuConfig {
        profile: &profile,
        accel: choice.accel,
        kernel: &kernel,
        initrd: initrd.as_deref(),
        rootfs: rootfs.as_ref(),
        dtb: dtb.as_deref(),
        boot_args: &req.boot_args,
        machine: req.machine.as_ref(),
        cpu: req.cpu.as_ref(),
        memory: req.memory,
        smp: req.smp,
        console_socket: &console_path,
        qmp_socket: &qmp_path,
        sandbox,
    });
    let mut argv = vec![qemu_binary.display().to_string()];
    argv.extend(args.iter().cloned());
    known.qemu = Some(QemuInfo {
        version: None,
        argv,
    });

    let mut qemu = QemuProcess::spawn(qemu_binary.as_os_str(), &args, false).map_err(|e| {
        InfraError::new(
            "qemu_failed",
            format!("cannot run {}: {e}", qemu_binary.display()),
        )
    })?;
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    tracing::info!(
        pid = qemu.pid(),
        accel = choice.accel.as_str(),
        since_start_ms = started.elapsed().as_secs_f64() * 1000.0,
        spawned_unix_us = unix_us,
        "QEMU spawned"
    );

    // QEMU connects both sockets during start-up, then greets on QMP.
    let start = async {
        let (con, qmp) = tokio::try_join!(console_listener.accept(), qmp_listener.accept())?;
        let qmp = Qmp::negotiate(qmp.0)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<(UnixStream, Qmp), std::io::Error>((con.0, qmp))
    };
    let started_qemu: Result<(UnixStream, Qmp), String> = tokio::select! {
        biased;
        _ = hooks.cancel.cancelled() => {
            qemu.kill().await;
            return Err(interrupted());
        }
        status = qemu.wait() => Err(match status {
            Ok(s) => format!("QEMU exited at start ({s})"),
            Err(e) => format!("QEMU exited at start ({e})"),
        }),
        r = tokio::time::timeout(START_TIMEOUT, start) => match r {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(format!("QEMU start-up failed: {e}")),
            Err(_) => Err(format!("QEMU did not start within {START_TIMEOUT:?}")),
        },
    };
    let (console, mut qmp) = match started_qemu {
        Ok(pair) => pair,
        Err(why) => {
            // QEMU died (or wedged) at start: its stderr says why.
            let exited = tokio::time::timeout(Duration::from_secs(2), qemu.wait()).await;
            qemu.kill().await;
            let tail = qemu.stderr_tail().await;
            let why = match exited {
                Ok(Ok(status)) if !why.contains("exited") => {
                    format!("{why}; QEMU exited ({status})")
                }
                _ => why,
            };
            if kernel_rejected(&tail) {
                let rejected = Decision {
                    verdict: Verdict::Fail,
                    reason: "kernel_rejected".to_string(),
                    summary: format!("QEMU could not load the kernel: {tail}"),
                };
                return Ok(result_from(Classification::default(), rejected));
            }
            if job_option_refused(&tail) {
                // The job's own machine/CPU/memory choice: every runner would refuse it alike.
                return Err(InfraError::new(
                    "invalid_job",
                    format!("QEMU refused the job's options: {tail}"),
                ));
            }
            return Err(InfraError::new("qemu_failed", format!("{why}: {tail}")));
        }
    };
    if let Some(q) = known.qemu.as_mut() {
        q.version = Some(qmp.version.clone());
    }

    let out: Option<Box<dyn std::io::Write + Send>> = match &req.console_out {
        ConsoleOut::Discard => None,
        ConsoleOut::Stderr => Some(Box::new(std::io::stderr())),
        ConsoleOut::File(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| {
                InfraError::new("internal", format!("creating log {}: {e}", p.display()))
            })?,
        ))),
    };
    let mut watch = Watch {
        classifier: Classifier::new(req.classifier.clone()),
        sink: ConsoleSink::new(req.console_limit, out, hooks.console.clone()),
        durations: Durations::default(),
        t0: Instant::now(),
    };
    let (mut con_read, mut con_write) = console.into_split();
    let mut session = (req.login.is_some() || !req.commands.is_empty()).then(|| {
        Session::new(
            SessionConfig {
                login: req.login.clone(),
                commands: req.commands.clone(),
            },
            &nonce(),
        )
    });
    let mut idle_at = tokio::time::Instant::now() + SESSION_IDLE;

    if let Err(e) = qmp.cont().await {
        qemu.kill().await;
        let tail = qemu.stderr_tail().await;
        return Err(InfraError::new("qemu_failed", format!("{e}: {tail}")));
    }
    watch.t0 = Instant::now();
    let boot_deadline = tokio::time::Instant::from_std(watch.t0 + req.boot_timeout);

    let mut buf = vec![0u8; 64 * 1024];
    let mut goal_reached = false;
    let mut console_open = true;
    let mut exited = false;
    let mut qmp_open = true;
    let mut guest_event: Option<GuestEvent> = None;
    let end: Result<End, InfraError> = loop {
        tokio::select! {
            biased;
            _ = hooks.cancel.cancelled() => break Err(interrupted()),
            n = con_read.read(&mut buf), if console_open => match n {
                Ok(0) | Err(_) => console_open = false,
                Ok(n) => {
                    let events = watch.take(&buf[..n]).await;
                    idle_at = tokio::time::Instant::now() + SESSION_IDLE;
                    let interactive = session.as_ref().is_some_and(Session::is_active);
                    if let Some(end) = stop_for(&events, req.expect, &mut goal_reached, interactive) {
                        break Ok(end);
                    }
                    if let Some(s) = session.as_mut() {
                        let actions = s.on_output(&buf[..n], &events);
                        if act(actions, &mut con_write).await {
                            break Ok(End::PromptReached);
                        }
                    }
                }
            },
            _ = sleep_until(idle_at), if session.as_ref().is_some_and(Session::is_active) => {
                idle_at = tokio::time::Instant::now() + SESSION_IDLE;
                if let Some(s) = session.as_mut() {
                    if act(s.on_idle(), &mut con_write).await {
                        break Ok(End::PromptReached);
                    }
                }
            },
            ev = qmp.events.recv(), if qmp_open => match ev {
                Some(GuestEvent::Shutdown) => { guest_event = Some(GuestEvent::Shutdown); break Ok(End::PowerOff) }
                Some(GuestEvent::Reset) => { guest_event = Some(GuestEvent::Reset); break Ok(End::Reset) }
                Some(GuestEvent::Panicked) => { guest_event = Some(GuestEvent::Panicked); break Ok(End::Panic) }
                Some(GuestEvent::HostShutdown) | Some(GuestEvent::Stopped) => {}
                // The QMP stream ended: QEMU is exiting; its exit status ends the loop.
                None => qmp_open = false,
            },
            status = qemu.wait(), if !exited => {
                exited = true;
                let failed = status.map(|s| !s.success()).unwrap_or(true);
                // A guest event may still be queued behind the exit.
                match qmp.events.try_recv() {
                    Ok(GuestEvent::Shutdown) => break Ok(End::PowerOff),
                    Ok(GuestEvent::Reset) => break Ok(End::Reset),
                    Ok(GuestEvent::Panicked) => break Ok(End::Panic),
                    _ if failed => {
                        watch.drain(&mut con_read, console_open).await;
                        let tail = qemu.stderr_tail().await;
                        known.classification = Some(watch.classifier.snapshot().clone());
                        known.durations = watch.durations.clone();
                        return Err(InfraError::new("qemu_failed", format!("QEMU exited during the boot: {tail}")));
                    }
                    _ => break Ok(End::QemuExited),
                }
            },
            _ = sleep_until(boot_deadline), if !goal_reached => break Ok(End::BootTimeout),
            _ = sleep_until(total_deadline) => break Ok(End::TotalTimeout),
        }
    };
    tracing::debug!(end = ?end, ?guest_event, "Boot loop ended");

    // Stop QEMU: politely when the guest is done, at once when it is stuck or we are asked to.
    let polite = matches!(
        end,
        Ok(End::PowerOff | End::Reset | End::Panic | End::PromptReached | End::QemuExited)
    );
    // A guest that timed out may be wedged inside QEMU (internal-error, io-error, paused):
    // say so, it is the first thing anyone debugging the timeout wants to know.
    let mut vm_state = None;
    if !exited && matches!(end, Ok(End::BootTimeout | End::TotalTimeout)) {
        if let Ok(Ok(state)) =
            tokio::time::timeout(Duration::from_secs(1), qmp.query_status()).await
        {
            vm_state = Some(state).filter(|s| s != "running");
        }
    }
    if !exited {
        if polite
            && tokio::time::timeout(DRAIN_TIMEOUT, qmp.quit())
                .await
                .is_ok()
        {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, qemu.wait()).await;
        }
        qemu.kill().await;
    }
    watch.drain(&mut con_read, console_open).await;
    drop(qmp);
    watch.durations.total = Some(watch.t0.elapsed().as_secs_f64());
    watch.sink.finish().await;
    known.truncated = watch.sink.truncated();
    known.durations = watch.durations.clone();
    let end = match end {
        Ok(end) => end,
        Err(e) => {
            known.classification = Some(watch.classifier.finish());
            return Err(e);
        }
    };
    let class = watch.classifier.finish();
    let mut d = decide(&class, req.expect, end);
    if let Some(state) = vm_state {
        d.summary = format!("{} (QEMU run state: {state})", d.summary);
    }
    // The same document `classify` builds from the log; then what only a live run knows.
    let mut r = result_from(class, d);
    r.console.truncated = watch.sink.truncated();
    r.durations = watch.durations.clone();
    Ok(r)
}

/// Whether these console events end the run (and record reaching the goal). While an
/// interactive session has work left, prompts are its business and do not end the run.
pub fn stop_for(
    events: &[Event],
    expect: Expect,
    goal_reached: &mut bool,
    interactive: bool,
) -> Option<End> {
    for ev in events {
        let goal = match ev {
            Event::Panic => return Some(End::Panic),
            Event::PowerOff => return Some(End::PowerOff),
            Event::LoginPrompt => matches!(expect, Expect::Auto | Expect::Login),
            Event::ShellPrompt => matches!(expect, Expect::Auto | Expect::Login | Expect::Shell),
            _ => false,
        };
        if goal {
            *goal_reached = true;
            if !interactive {
                return Some(End::PromptReached);
            }
        }
    }
    None
}

/// Carry out a session's actions; true when the session is finished.
async fn act(actions: Vec<Action>, con: &mut OwnedWriteHalf) -> bool {
    let mut finished = false;
    for a in actions {
        match a {
            Action::Send(bytes) => {
                if let Err(e) = con.write_all(&bytes).await {
                    tracing::warn!(error = %e, "Writing to the guest console failed");
                }
            }
            Action::Finish => finished = true,
        }
    }
    finished
}

/// Unique enough per run: markers must not collide with a previous run's output in the log.
fn nonce() -> String {
    use sha2::Digest;
    let seed = format!(
        "{}-{:?}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    );
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))[..12].to_string()
}

/// The console consumer: stored log, classifier, stage timings.
struct Watch {
    classifier: Classifier,
    sink: ConsoleSink,
    durations: Durations,
    t0: Instant,
}

impl Watch {
    async fn take(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.sink.push(chunk).await;
        let events = self.classifier.feed(chunk);
        let at = self.t0.elapsed().as_secs_f64();
        for ev in &events {
            if let Event::Stage(s) = ev {
                let slot = match s {
                    Stage::Kernel => &mut self.durations.to_kernel,
                    Stage::Userspace => &mut self.durations.to_userspace,
                    Stage::Login | Stage::Shell => &mut self.durations.to_prompt,
                    Stage::None => continue,
                };
                slot.get_or_insert(at);
            }
        }
        events
    }

    /// Read what QEMU left in the console socket, until EOF or a short deadline.
    async fn drain(&mut self, con: &mut OwnedReadHalf, open: bool) {
        if !open {
            return;
        }
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, con.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            self.take(&buf[..n]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_end_the_run_only_when_expected() {
        let mut goal = false;
        assert_eq!(
            stop_for(&[Event::ShellPrompt], Expect::Auto, &mut goal, false),
            Some(End::PromptReached)
        );
        assert!(goal);
        let mut goal = false;
        assert_eq!(
            stop_for(&[Event::ShellPrompt], Expect::Poweroff, &mut goal, false),
            None
        );
        assert_eq!(
            stop_for(&[Event::LoginPrompt], Expect::Shell, &mut goal, false),
            None
        );
        assert!(!goal);
        assert_eq!(
            stop_for(
                &[Event::Stage(Stage::Kernel), Event::Panic],
                Expect::Auto,
                &mut goal,
                false
            ),
            Some(End::Panic)
        );
        let mut goal = false;
        assert_eq!(
            stop_for(&[Event::ShellPrompt], Expect::Auto, &mut goal, true),
            None
        );
        assert!(goal, "a session's prompt still counts as reaching the goal");
        assert_eq!(
            stop_for(&[Event::PowerOff], Expect::Shell, &mut goal, true),
            Some(End::PowerOff)
        );
    }

    #[test]
    fn option_refusals_and_missing_resources_are_invalid_jobs() {
        assert!(job_option_refused(
            "qemu-system-x86_64: unsupported machine type\nUse -machine help"
        ));
        assert!(job_option_refused(
            "qemu-system-x86_64: Property 'Nehalem-x86_64-cpu.nosuchflag' not found"
        ));
        assert!(!job_option_refused("qemu: failed to set MSR 0x10a"));
        let arch = bootfarm_core::Arch::X86_64;
        let req = BootRequest {
            cpu: Some(bootfarm_core::spec::Cpu::parse(arch, "host").unwrap()),
            memory: Some(8 << 30),
            ..BootRequest::default()
        };
        let tcg = crate::qemu::profile::Accel::Tcg;
        assert_eq!(
            check_resources(&req, tcg, None).unwrap_err().kind,
            "invalid_job"
        );
        let req = BootRequest { cpu: None, ..req };
        assert!(check_resources(&req, tcg, None).is_ok());
        let err = check_resources(&req, tcg, Some(4 << 30)).unwrap_err();
        assert_eq!(err.kind, "invalid_job");
        assert!(err.message.contains("8192 MiB"), "{}", err.message);
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
