//! The console's consumer during a boot: every chunk goes to the stored log (capped), to the
//! classifier, and marks the stage timings. Also the pure rule of which console events end a run.

use crate::console_sink::ConsoleSink;
use bootfarm_core::console::session::Action;
use bootfarm_core::console::{Classifier, Event};
use bootfarm_core::result::{Durations, Stage};
use bootfarm_core::verdict::{End, Expect};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// After we decided, how long QEMU gets to flush the console before we stop reading.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The console consumer: stored log, classifier, stage timings.
pub(super) struct Watch {
    pub classifier: Classifier,
    pub sink: ConsoleSink,
    pub durations: Durations,
    pub t0: Instant,
}

impl Watch {
    pub async fn take(&mut self, chunk: &[u8]) -> Vec<Event> {
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
    pub async fn drain(&mut self, con: &mut OwnedReadHalf, open: bool) {
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
pub(super) async fn act(actions: Vec<Action>, con: &mut OwnedWriteHalf) -> bool {
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
pub(super) fn nonce() -> String {
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
}
