//! A QMP client over a connected unix socket, through the `qapi` crate.
//!
//! `Qmp::negotiate` reads the greeting (QEMU's version), negotiates capabilities and spawns a
//! task that drives the stream: it routes command responses back to `execute` callers and
//! forwards asynchronous events (SHUTDOWN, RESET, STOP, GUEST_PANICKED) on a channel.

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use std::io;
use std::time::Duration;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Every QMP command gets this long: QEMU answers in microseconds unless it is wedged.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

type Writer = QmpStreamTokio<WriteHalf<UnixStream>>;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP i/o: {0}")]
    Io(#[from] io::Error),
    #[error("QMP command {0} failed: {1}")]
    Command(&'static str, String),
    #[error("QMP command {0} got no answer in {1:?}")]
    Timeout(&'static str, Duration),
}

/// What the runner cares about in QEMU's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// The guest powered itself off.
    Shutdown,
    /// The guest reset (with -no-reboot QEMU then exits; `panic=-1` ends up here too).
    Reset,
    /// A guest panic reported by pvpanic (or a shutdown caused by one).
    Panicked,
    /// QEMU is going away for a host reason (our quit, a signal).
    HostShutdown,
    Stopped,
}

/// Map a QMP event to what it means for the run; None for events we ignore.
pub fn guest_event(ev: &qmp::Event) -> Option<GuestEvent> {
    use qmp::ShutdownCause as C;
    match ev {
        qmp::Event::SHUTDOWN { data, .. } => Some(match data.reason {
            C::guest_shutdown => GuestEvent::Shutdown,
            C::guest_reset => GuestEvent::Reset,
            C::guest_panic => GuestEvent::Panicked,
            _ => GuestEvent::HostShutdown,
        }),
        qmp::Event::RESET { .. } => Some(GuestEvent::Reset),
        qmp::Event::GUEST_PANICKED { .. } => Some(GuestEvent::Panicked),
        qmp::Event::STOP { .. } => Some(GuestEvent::Stopped),
        _ => None,
    }
}

pub struct Qmp {
    service: QapiService<Writer>,
    /// `major.minor.micro (package)` from the greeting.
    pub version: String,
    pub events: mpsc::UnboundedReceiver<GuestEvent>,
    driver: tokio::task::JoinHandle<()>,
}

impl Qmp {
    /// Greeting, capability negotiation, then a background task reading the stream.
    pub async fn negotiate(stream: UnixStream) -> Result<Qmp, QmpError> {
        let (r, w) = tokio::io::split(stream);
        let negotiation = QmpStreamTokio::open_split(r, w).await?;
        let v = &negotiation.capabilities.QMP.version;
        let version = format!(
            "{}.{}.{}{}",
            v.qemu.major,
            v.qemu.minor,
            v.qemu.micro,
            if v.package.trim().is_empty() {
                String::new()
            } else {
                format!(" {}", v.package.trim())
            }
        );
        let stream = tokio::time::timeout(COMMAND_TIMEOUT, negotiation.negotiate())
            .await
            .map_err(|_| QmpError::Timeout("qmp_capabilities", COMMAND_TIMEOUT))??;
        let (service, mut raw_events) = stream.into_parts();
        let (tx, events) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            // Polling the event stream is also what delivers command responses.
            while let Some(item) = raw_events.next().await {
                match item {
                    Ok(ev) => {
                        tracing::debug!(event = ?ev, "QMP event");
                        if let Some(g) = guest_event(&ev) {
                            let _ = tx.send(g);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "QMP stream ended");
                        break;
                    }
                }
            }
        });
        Ok(Qmp {
            service,
            version,
            events,
            driver,
        })
    }

    async fn run<C>(&self, name: &'static str, cmd: C) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command + qmp::QmpCommand,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = io::Error> + Unpin,
    {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.service.execute(cmd)).await {
            Err(_) => Err(QmpError::Timeout(name, COMMAND_TIMEOUT)),
            Ok(Err(e)) => Err(QmpError::Command(name, e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }

    pub async fn cont(&self) -> Result<(), QmpError> {
        self.run("cont", qmp::cont {}).await.map(|_| ())
    }

    /// `running`, `paused`, `shutdown`, ... as QEMU names it.
    pub async fn query_status(&self) -> Result<String, QmpError> {
        let info = self.run("query-status", qmp::query_status {}).await?;
        Ok(serde_json::to_value(info.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string()))
    }

    /// Ask QEMU to exit. QEMU may close the socket before answering: that counts as done.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.run("quit", qmp::quit {}).await {
            Ok(_) => Ok(()),
            Err(QmpError::Command(_, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A scripted QMP peer: greeting, then answers each command by name.
    async fn fake_qemu(peer: UnixStream) {
        let (r, mut w) = peer.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(
            br#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}
"#,
        )
        .await
        .unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let id = v.get("id").cloned().unwrap_or(serde_json::Value::Null);
            let reply = match v["execute"].as_str().unwrap() {
                "query-status" => {
                    serde_json::json!({"return": {"running": true, "status": "running"}, "id": id})
                }
                "cont" => {
                    let r = serde_json::json!({"return": {}, "id": id});
                    w.write_all(format!("{r}\n").as_bytes()).await.unwrap();
                    serde_json::json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-panic"}, "timestamp": {"seconds": 1, "microseconds": 2}})
                }
                _ => serde_json::json!({"return": {}, "id": id}),
            };
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn negotiates_runs_commands_and_forwards_events() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(fake_qemu(theirs));
        let mut qmp = Qmp::negotiate(ours).await.unwrap();
        assert_eq!(qmp.version, "7.2.22 Debian 1:7.2");
        assert_eq!(qmp.query_status().await.unwrap(), "running");
        qmp.cont().await.unwrap();
        assert_eq!(qmp.events.recv().await, Some(GuestEvent::Panicked));
        qmp.quit().await.unwrap();
    }
}
