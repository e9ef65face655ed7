//! An interactive console session as a pure state machine: the runner feeds it the console
//! bytes and the classifier's events, and writes whatever it answers to the guest.
//!
//! It answers `login:` and `Password:`, then at each shell prompt types one command wrapped in
//! markers (see [`super::commands`]). A slow serial console drops characters sent faster than
//! it echoes them, so a line is typed in small chunks and each chunk waits for its echo.

use super::commands;
use super::Event;

/// Bytes per typed chunk: small enough for any UART FIFO.
const CHUNK: usize = 16;
/// Bound on the echo kept while waiting for a chunk.
const ECHO_MAX: usize = 4096;
/// `login:` prompts answered before giving up (each new one means the last try failed).
const MAX_LOGIN_TRIES: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
}

impl std::str::FromStr for Login {
    type Err = String;
    /// `USER[:PASSWORD]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, password) = match s.split_once(':') {
            Some((u, p)) => (u, Some(p.to_string())),
            None => (s, None),
        };
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(format!("bad login {s:?}: expected USER[:PASSWORD]"));
        }
        Ok(Login {
            user: user.to_string(),
            password,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionConfig {
    pub login: Option<Login>,
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes to write to the guest console.
    Send(Vec<u8>),
    /// Done: the runner waits briefly for power-off, then quits over QMP.
    Finish,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for a shell prompt to run command `next`.
    WaitPrompt {
        next: usize,
    },
    /// Typing command `index`: `sent` bytes of `line` are out, the last chunk awaits its echo.
    Typing {
        index: usize,
        line: Vec<u8>,
        sent: usize,
        chunk_start: usize,
    },
    /// The command line was entered; waiting for its end marker.
    Running {
        index: usize,
    },
    Done,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    nonce: String,
    state: State,
    echo: Vec<u8>,
    login_tries: u32,
    failure: Option<String>,
}

impl Session {
    /// `nonce` makes the markers unique to this run (lowercase letters and digits, 6 to 32;
    /// other characters are dropped).
    pub fn new(cfg: SessionConfig, nonce: &str) -> Self {
        let mut n: String = nonce
            .chars()
            .filter(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            .take(32)
            .collect();
        while n.len() < 6 {
            n.push('0');
        }
        let state = if cfg.login.is_none() && cfg.commands.is_empty() {
            State::Done
        } else {
            State::WaitPrompt { next: 0 }
        };
        Session {
            cfg,
            nonce: n,
            state,
            echo: Vec::new(),
            login_tries: 0,
            failure: None,
        }
    }

    /// Whether the session still has something to do.
    pub fn is_active(&self) -> bool {
        self.state != State::Done
    }

    /// Why the session gave up, if it did (`Login incorrect`).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// New console output and the events the classifier derived from it.
    pub fn on_output(&mut self, bytes: &[u8], events: &[Event]) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Done {
            return actions;
        }
        if matches!(self.state, State::Typing { .. }) {
            self.echo
                .extend(bytes.iter().filter(|&&b| b != b'\r' && b != b'\n'));
            if self.echo.len() > ECHO_MAX {
                let cut = self.echo.len() - ECHO_MAX;
                self.echo.drain(..cut);
            }
            if self.chunk_echoed() {
                self.next_chunk(&mut actions);
            }
        }
        for ev in events {
            if self.state == State::Done {
                break;
            }
            match ev {
                Event::LoginIncorrect => {
                    self.failure = Some("Login incorrect".to_string());
                    self.finish(&mut actions, false);
                }
                Event::LoginPrompt => {
                    if let Some(login) = &self.cfg.login {
                        if self.login_tries >= MAX_LOGIN_TRIES {
                            self.failure = Some("login prompt keeps coming back".to_string());
                            self.finish(&mut actions, false);
                        } else {
                            self.login_tries += 1;
                            actions.push(Action::Send(format!("{}\n", login.user).into_bytes()));
                        }
                    }
                }
                Event::PasswordPrompt => {
                    if let Some(login) = &self.cfg.login {
                        let pw = login.password.clone().unwrap_or_default();
                        actions.push(Action::Send(format!("{pw}\n").into_bytes()));
                    }
                }
                Event::ShellPrompt => {
                    if let State::WaitPrompt { next } = self.state {
                        self.start_command(next, &mut actions);
                    }
                }
                Event::CommandEnd { nonce, index, .. } => {
                    if let State::Running { index: running } = self.state {
                        if *nonce == self.nonce && *index as usize == running {
                            self.state = State::WaitPrompt { next: running + 1 };
                        }
                    }
                }
                Event::Panic | Event::PowerOff | Event::Reboot => {
                    self.state = State::Done;
                }
                _ => {}
            }
        }
        actions
    }

    /// The guest printed nothing for a while: an echo is not coming (a console with echo off),
    /// so send the rest of the line instead of waiting forever.
    pub fn on_idle(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if let State::Typing {
            index, line, sent, ..
        } = &self.state
        {
            let mut bytes = line[*sent..].to_vec();
            bytes.push(b'\n');
            actions.push(Action::Send(bytes));
            self.state = State::Running { index: *index };
        }
        actions
    }

    fn start_command(&mut self, index: usize, actions: &mut Vec<Action>) {
        let Some(cmd) = self.cfg.commands.get(index) else {
            self.finish(actions, true);
            return;
        };
        let line = commands::command_line(&self.nonce, index, cmd).into_bytes();
        self.state = State::Typing {
            index,
            line,
            sent: 0,
            chunk_start: 0,
        };
        self.echo.clear();
        self.next_chunk(actions);
    }

    /// Send the next chunk, or Enter once the whole line was echoed.
    fn next_chunk(&mut self, actions: &mut Vec<Action>) {
        let State::Typing {
            index,
            line,
            sent,
            chunk_start,
        } = &mut self.state
        else {
            return;
        };
        if *sent >= line.len() {
            actions.push(Action::Send(b"\n".to_vec()));
            self.state = State::Running { index: *index };
            return;
        }
        let end = (*sent + CHUNK).min(line.len());
        actions.push(Action::Send(line[*sent..end].to_vec()));
        *chunk_start = *sent;
        *sent = end;
        self.echo.clear();
    }

    fn chunk_echoed(&self) -> bool {
        let State::Typing {
            line,
            sent,
            chunk_start,
            ..
        } = &self.state
        else {
            return false;
        };
        let chunk = &line[*chunk_start..*sent];
        // Line editors redraw with backspaces (busybox wraps long lines with ` \b`).
        let seen = super::normalize::apply_backspaces(&without_escapes(&self.echo));
        let chunk = String::from_utf8_lossy(chunk);
        seen.contains(chunk.as_ref())
    }

    fn finish(&mut self, actions: &mut Vec<Action>, poweroff: bool) {
        if poweroff {
            actions.push(Action::Send(b"poweroff -f\n".to_vec()));
        }
        actions.push(Action::Finish);
        self.state = State::Done;
    }
}

/// The echo with terminal escapes removed but backspaces kept.
fn without_escapes(echo: &[u8]) -> String {
    let mut out = String::new();
    for (i, part) in echo.split(|&b| b == 0x08).enumerate() {
        if i > 0 {
            out.push('\u{8}');
        }
        out.push_str(&super::normalize::decode(part));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{Classifier, ClassifierConfig};

    /// A scripted guest: the session's typed bytes come back as echo, possibly a few bytes
    /// at a time, and the shell answers a completed command line with `reply`.
    struct Guest {
        classifier: Classifier,
        session: Session,
        sent: Vec<u8>,
        log: Vec<u8>,
        finished: bool,
    }

    impl Guest {
        fn new(cfg: SessionConfig) -> Self {
            Guest {
                classifier: Classifier::new(ClassifierConfig::default()),
                session: Session::new(cfg, "abc123ef"),
                sent: Vec::new(),
                log: Vec::new(),
                finished: false,
            }
        }

        /// The guest prints `bytes`; returns what the session typed in reply.
        fn print(&mut self, bytes: &[u8]) -> Vec<u8> {
            self.log.extend_from_slice(bytes);
            let ev = self.classifier.feed(bytes);
            let mut typed = Vec::new();
            for a in self.session.on_output(bytes, &ev) {
                match a {
                    Action::Send(b) => typed.extend(b),
                    Action::Finish => self.finished = true,
                }
            }
            self.sent.extend(&typed);
            typed
        }

        /// Echo typed bytes back `step` at a time until the session sends Enter; returns the line.
        fn echo_line(&mut self, first: Vec<u8>, step: usize) -> String {
            let mut pending = first;
            let mut line = Vec::new();
            loop {
                if pending.is_empty() {
                    panic!(
                        "session stopped typing: {:?}",
                        String::from_utf8_lossy(&line)
                    );
                }
                if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    line.extend_from_slice(&pending[..nl]);
                    let _ = self.print(&pending[..nl]);
                    let _ = self.print(b"\r\n");
                    return String::from_utf8_lossy(&line).into_owned();
                }
                let take = step.min(pending.len());
                let part: Vec<u8> = pending.drain(..take).collect();
                line.extend_from_slice(&part);
                let more = self.print(&part);
                pending.extend(more);
            }
        }

        /// Run the shell side of one typed line.
        fn run(&mut self, line: &str, output: &str, status: i32) -> Vec<u8> {
            let (m, _cmd) = commands::echo(line).expect("a wrapped command line");
            let out = format!(
                "BF_S_{n}_{i}\r\n{output}BF_E_{n}_{i}_{status}\r\n",
                n = m.nonce,
                i = m.index
            );
            let _ = self.print(out.as_bytes());
            self.print(b"/ # ")
        }
    }

    #[test]
    fn runs_commands_with_slow_echo_then_powers_off() {
        let mut g = Guest::new(SessionConfig {
            login: None,
            commands: vec!["uname -a".into(), "false".into()],
        });
        let _ = g.print(b"[    1.000000] Run /init as init process\r\n");
        let first = g.print(b"/ # ");
        assert_eq!(first.len(), CHUNK, "only one chunk before its echo");
        let line = g.echo_line(first, 3);
        assert_eq!(line, commands::command_line("abc123ef", 0, "uname -a"));
        let next = g.run(&line, "Linux (none) 6.1.0 x86_64\r\n", 0);
        let line = g.echo_line(next, 1);
        let after = g.run(&line, "", 1);
        assert_eq!(after, b"poweroff -f\n");
        assert!(g.finished && !g.session.is_active());
        let c = g.classifier.finish();
        let t: Vec<_> = c
            .tests
            .iter()
            .map(|t| {
                (
                    t.suite.as_str(),
                    t.name.as_str(),
                    t.result,
                    t.output.as_deref(),
                )
            })
            .collect();
        use crate::result::TestOutcome::*;
        assert_eq!(
            t,
            vec![
                (
                    "commands",
                    "uname -a",
                    Pass,
                    Some("Linux (none) 6.1.0 x86_64\n")
                ),
                ("commands", "false", Fail, Some("")),
            ]
        );
    }

    #[test]
    fn an_interleaved_kernel_line_does_not_confuse_output_or_echo() {
        let mut g = Guest::new(SessionConfig {
            login: None,
            commands: vec!["cat /proc/version".into()],
        });
        let first = g.print(b"/ # ");
        let mut line = g.echo_line(first, 5);
        // The kernel interrupts the output mid-line.
        let m = commands::echo(&line).expect("wrapped").0;
        let out = format!(
            "BF_S_{n}_0\r\nLinux ver[   12.500000] random: crng init done\r\nsion 6.1.0\r\nBF_E_{n}_0_0\r\n",
            n = m.nonce
        );
        let _ = g.print(out.as_bytes());
        let off = g.print(b"/ # ");
        assert_eq!(off, b"poweroff -f\n");
        line.clear();
        let c = g.classifier.finish();
        assert_eq!(c.tests.len(), 1);
        assert_eq!(c.tests[0].name, "cat /proc/version");
        assert_eq!(c.tests[0].output.as_deref(), Some("Linux version 6.1.0\n"));
    }

    #[test]
    fn logs_in_with_a_password() {
        let mut g = Guest::new(SessionConfig {
            login: Some("tester:secret".parse().expect("login")),
            commands: vec![],
        });
        assert_eq!(g.print(b"\r\nbootfarm login: "), b"tester\n");
        let _ = g.print(b"tester\r\n");
        assert_eq!(g.print(b"Password: "), b"secret\n");
        let _ = g.print(b"\r\n");
        assert_eq!(g.print(b"tester@bootfarm:~$ "), b"poweroff -f\n");
        assert!(g.finished);
        assert_eq!(g.session.failure(), None);
    }

    #[test]
    fn a_wrong_password_fails_the_session() {
        let mut g = Guest::new(SessionConfig {
            login: Some("tester:wrong".parse().expect("login")),
            commands: vec!["true".into()],
        });
        let _ = g.print(b"bootfarm login: ");
        let _ = g.print(b"tester\r\nPassword: ");
        let typed = g.print(b"\r\nLogin incorrect\r\nbootfarm login: ");
        assert!(
            typed.is_empty(),
            "no retry after Login incorrect: {typed:?}"
        );
        assert!(g.finished);
        assert_eq!(g.session.failure(), Some("Login incorrect"));
        assert!(g.classifier.finish().login_incorrect);
    }

    #[test]
    fn idle_sends_the_rest_when_no_echo_comes() {
        let mut s = Session::new(
            SessionConfig {
                login: None,
                commands: vec!["true".into()],
            },
            "ZZ-abc",
        );
        assert_eq!(s.nonce(), "abc000");
        let a = s.on_output(b"/ # ", &[Event::ShellPrompt]);
        assert_eq!(a.len(), 1);
        let rest = s.on_idle();
        let mut all = match &a[0] {
            Action::Send(b) => b.clone(),
            Action::Finish => panic!("finished early"),
        };
        if let Some(Action::Send(b)) = rest.first() {
            all.extend(b);
        }
        assert_eq!(
            String::from_utf8_lossy(&all),
            format!("{}\n", commands::command_line("abc000", 0, "true"))
        );
    }
}
