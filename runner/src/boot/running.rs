//! The last phases: the guest runs (`cont`), one select loop watches the console, QMP's guest
//! events, QEMU's exit, the deadlines and cancellation until the verdict is known; then QEMU is
//! stopped (politely when the guest is done), the console drained and judged.

use super::inputs::InfraError;
use super::run::{interrupted, ConsoleFacts, Facts, OrStop, Stopped};
use super::start::Started;
use super::watch::{act, nonce, stop_for, Watch, DRAIN_TIMEOUT};
use super::{BootHooks, BootRequest, ConsoleOut};
use crate::artifacts::InUse;
use crate::console_sink::ConsoleSink;
use crate::qemu::process::QemuProcess;
use crate::qmp::{GuestEvent, Qmp};
use bootfarm_core::console::session::{Session, SessionConfig};
use bootfarm_core::console::{Classification, Classifier};
use bootfarm_core::result::Durations;
use bootfarm_core::result::ErrorKind;
use bootfarm_core::verdict::{decide, result_from, End, Expect};
use bootfarm_core::BootResult;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::sleep_until;

/// A session typing a line waits this long for its echo before sending the rest.
const SESSION_IDLE: Duration = Duration::from_secs(2);

/// The guest runs.
pub(super) struct Running {
    facts: Facts,
    _work: tempfile::TempDir,
    _held: Vec<InUse>,
    qemu: QemuProcess,
    qmp: Qmp,
    con_read: OwnedReadHalf,
    con_write: OwnedWriteHalf,
    watch: Watch,
    session: Option<Session>,
    idle_at: tokio::time::Instant,
    boot_deadline: tokio::time::Instant,
    total_deadline: tokio::time::Instant,
}

/// QEMU is gone and the console judged.
pub(super) struct Finished {
    facts: Facts,
    class: Classification,
    end: End,
    /// QEMU's run state when the guest timed out wedged in it (internal-error, paused...).
    vm_state: Option<String>,
    durations: Durations,
    truncated: bool,
}

impl Started {
    /// Connects the console to its sink and lets the guest run.
    pub async fn cont(self, req: &BootRequest, hooks: &BootHooks) -> Result<Running, Stopped> {
        let Started {
            mut facts,
            work,
            held,
            mut qemu,
            console,
            qmp,
            total_deadline,
        } = self;
        let out: Option<Box<dyn std::io::Write + Send>> = match &req.console_out {
            ConsoleOut::Discard => None,
            ConsoleOut::Stderr => Some(Box::new(std::io::stderr())),
            ConsoleOut::File(p) => Some(Box::new(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .map_err(|e| {
                        InfraError::new(
                            ErrorKind::Internal,
                            format!("creating log {}: {e}", p.display()),
                        )
                    })
                    .or_stop(&mut facts)?,
            ))),
        };
        let mut watch = Watch {
            classifier: Classifier::new(req.classifier.clone()),
            sink: ConsoleSink::new(req.console_limit, out, hooks.console.clone()),
            durations: Durations::default(),
            t0: Instant::now(),
        };
        let (con_read, con_write) = console.into_split();
        let session = (req.login.is_some() || !req.commands.is_empty()).then(|| {
            Session::new(
                SessionConfig {
                    login: req.login.clone(),
                    commands: req.commands.clone(),
                },
                &nonce(),
            )
        });
        let idle_at = tokio::time::Instant::now() + SESSION_IDLE;

        if let Err(e) = qmp.cont().await {
            qemu.kill().await;
            let tail = qemu.stderr_tail().await;
            return Err(Stopped::error(
                InfraError::new(ErrorKind::QemuFailed, format!("{e}: {tail}")),
                facts,
            ));
        }
        watch.t0 = Instant::now();
        let boot_deadline = tokio::time::Instant::from_std(watch.t0 + req.boot_timeout);
        Ok(Running {
            facts,
            _work: work,
            _held: held,
            qemu,
            qmp,
            con_read,
            con_write,
            watch,
            session,
            idle_at,
            boot_deadline,
            total_deadline,
        })
    }
}

impl Running {
    /// Watches the guest until the verdict is known, then stops QEMU and judges the console.
    pub async fn until_verdict(
        self,
        req: &BootRequest,
        hooks: &BootHooks,
    ) -> Result<Finished, Stopped> {
        let Running {
            mut facts,
            _work,
            _held,
            mut qemu,
            mut qmp,
            mut con_read,
            mut con_write,
            mut watch,
            mut session,
            mut idle_at,
            boot_deadline,
            total_deadline,
        } = self;
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
                            // The stored log still gets its tail.
                            watch.sink.finish().await;
                            facts.console = Some(ConsoleFacts {
                                classification: watch.classifier.snapshot().clone(),
                                durations: watch.durations.clone(),
                                truncated: watch.sink.truncated(),
                            });
                            return Err(Stopped::error(
                                InfraError::new(ErrorKind::QemuFailed, format!("QEMU exited during the boot: {tail}")),
                                facts,
                            ));
                        }
                        _ => break Ok(End::QemuExited),
                    }
                },
                _ = sleep_until(boot_deadline), if !goal_reached => break Ok(End::BootTimeout),
                _ = sleep_until(total_deadline) => break Ok(End::TotalTimeout),
            }
        };
        tracing::debug!(end = ?end, ?guest_event, "Boot loop ended");

        let vm_state = stop_qemu(&mut qemu, &qmp, &end, exited).await;
        watch.drain(&mut con_read, console_open).await;
        drop(qmp);
        watch.durations.total = Some(watch.t0.elapsed().as_secs_f64());
        watch.sink.finish().await;
        let truncated = watch.sink.truncated();
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                facts.console = Some(ConsoleFacts {
                    classification: watch.classifier.finish(),
                    durations: watch.durations,
                    truncated,
                });
                return Err(Stopped::error(e, facts));
            }
        };
        Ok(Finished {
            facts,
            class: watch.classifier.finish(),
            end,
            vm_state,
            durations: watch.durations,
            truncated,
        })
    }
}

/// Stops QEMU: politely when the guest is done, at once when it is stuck or we are asked to.
/// Returns QEMU's run state when a timed-out guest is wedged in QEMU.
async fn stop_qemu(
    qemu: &mut QemuProcess,
    qmp: &Qmp,
    end: &Result<End, InfraError>,
    exited: bool,
) -> Option<String> {
    if exited {
        return None;
    }
    let polite = matches!(
        end,
        Ok(End::PowerOff | End::Reset | End::Panic | End::PromptReached | End::QemuExited)
    );
    // A guest that timed out may be wedged inside QEMU (internal-error, io-error, paused):
    // say so, it is the first thing anyone debugging the timeout wants to know.
    let mut vm_state = None;
    if matches!(end, Ok(End::BootTimeout | End::TotalTimeout)) {
        if let Ok(Ok(state)) =
            tokio::time::timeout(Duration::from_secs(1), qmp.query_status()).await
        {
            vm_state = Some(state).filter(|s| s != "running");
        }
    }
    if polite
        && tokio::time::timeout(DRAIN_TIMEOUT, qmp.quit())
            .await
            .is_ok()
    {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, qemu.wait()).await;
    }
    qemu.kill().await;
    vm_state
}

impl Finished {
    /// The same document `classify` builds from the log, then what only a live run knows.
    pub fn into_result(self, expect: Expect) -> (BootResult, Facts) {
        let mut d = decide(&self.class, expect, self.end);
        if let Some(state) = self.vm_state {
            d.summary = format!("{} (QEMU run state: {state})", d.summary);
        }
        let mut r = result_from(self.class, d);
        r.console.truncated = self.truncated;
        r.durations = self.durations;
        (r, self.facts)
    }
}
