//! The console classifier: fed the serial console as raw bytes, in chunks of any size, it
//! tracks the boot stage, the kernel version, kernel problems and test results, and reports
//! events as they happen so a live runner can stop as soon as the verdict is known.
//!
//! Work is bounded per line (no rescans of the whole log), so classifying keeps up with a guest
//! printing as fast as it can.
//!
//! INTERIM: a minimal line classifier (stages, version, panic) so the runner can integrate;
//! issue 3 replaces the internals behind the same API.

use crate::result::{Issue, IssueKind, Phase, Stage, TestCase};

/// Per-run policy for the classifier.
#[derive(Debug, Clone, Default)]
pub struct ClassifierConfig {
    /// Extra kinds that fail the run (on top of the default policy).
    pub fail_on: Vec<IssueKind>,
    /// Kinds that never fail the run (still recorded).
    pub ignore: Vec<IssueKind>,
    /// A user's own fatal lines (LAVA's `failure_message`).
    pub failure_patterns: Vec<regex::Regex>,
    /// Test names that must report; missing ones become failed tests at `finish`.
    pub expect_tests: Vec<String>,
}

/// Something the live runner may act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The stage advanced (reported once per new stage).
    Stage(Stage),
    KernelVersion(String),
    /// A `login:` prompt (may arrive on an unterminated line).
    LoginPrompt,
    /// A `Password:` prompt (may arrive on an unterminated line).
    PasswordPrompt,
    /// A shell prompt (may arrive on an unterminated line).
    ShellPrompt,
    LoginIncorrect,
    /// `reboot: Power down` / `System halted`.
    PowerOff,
    /// `reboot: Restarting system`.
    Reboot,
    /// A new issue was recorded at this index of `Classification::issues`.
    Issue { index: usize, kind: IssueKind, fatal: bool },
    /// A fatal kernel panic: nothing more will happen, the run can stop.
    Panic,
}

/// What the console showed so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classification {
    pub stage: Stage,
    pub kernel_version: Option<String>,
    pub issues: Vec<Issue>,
    pub tests: Vec<TestCase>,
    pub powered_off: bool,
    pub login_incorrect: bool,
    pub bytes: u64,
    pub lines: u64,
}

pub struct Classifier {
    cfg: ClassifierConfig,
    state: Classification,
    partial: Vec<u8>,
}

const MAX_LINE: usize = 4096;

impl Classifier {
    pub fn new(cfg: ClassifierConfig) -> Self {
        Classifier {
            cfg,
            state: Classification::default(),
            partial: Vec::new(),
        }
    }

    /// Feed console bytes; returns the events they caused, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.state.bytes += bytes.len() as u64;
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    let line = std::mem::take(&mut self.partial);
                    self.line(&String::from_utf8_lossy(&line), &mut events);
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        if !self.partial.is_empty() {
            let tail = String::from_utf8_lossy(&self.partial).into_owned();
            self.prompt(&tail, &mut events);
        }
        events
    }

    /// What has been seen so far.
    pub fn snapshot(&self) -> &Classification {
        &self.state
    }

    /// The log ended: flush the last unterminated line and return the classification.
    pub fn finish(mut self) -> Classification {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let mut ev = Vec::new();
            self.line(&String::from_utf8_lossy(&line), &mut ev);
        }
        self.state
    }

    fn advance(&mut self, s: Stage, events: &mut Vec<Event>) {
        if s > self.state.stage {
            self.state.stage = s;
            events.push(Event::Stage(s));
        }
    }

    fn prompt(&mut self, tail: &str, events: &mut Vec<Event>) {
        let t = tail.trim_end();
        if t.ends_with("login:") && self.state.stage < Stage::Login {
            self.advance(Stage::Login, events);
            events.push(Event::LoginPrompt);
        } else if (t.ends_with(" #") || t.ends_with(" $") || t.ends_with(":/#") || t == "#")
            && self.state.stage < Stage::Shell
            && self.state.stage >= Stage::Userspace
        {
            self.advance(Stage::Shell, events);
            events.push(Event::ShellPrompt);
        }
    }

    fn line(&mut self, line: &str, events: &mut Vec<Event>) {
        self.state.lines += 1;
        let text = strip_prefixes(line);
        if let Some(rest) = text.find("Linux version ").map(|i| &text[i + 14..]) {
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                self.advance(Stage::Kernel, events);
                if self.state.kernel_version.is_none() {
                    let v = rest.split_whitespace().next().unwrap_or("").to_string();
                    self.state.kernel_version = Some(v.clone());
                    events.push(Event::KernelVersion(v));
                }
            }
        }
        if text.starts_with("Run ") && text.contains(" as init process") {
            self.advance(Stage::Userspace, events);
        }
        if text.contains("reboot: Power down") || text.contains("reboot: System halted") {
            self.state.powered_off = true;
            events.push(Event::PowerOff);
        }
        if text.contains("Kernel panic - not syncing") {
            let fatal = !self.cfg.ignore.contains(&IssueKind::Panic);
            self.state.issues.push(Issue {
                kind: IssueKind::Panic,
                line: self.state.lines,
                summary: text.to_string(),
                excerpt: text.to_string(),
                fingerprint: String::new(),
                phase: if self.state.stage >= Stage::Login {
                    Phase::Test
                } else {
                    Phase::Boot
                },
                fatal,
            });
            events.push(Event::Issue {
                index: self.state.issues.len() - 1,
                kind: IssueKind::Panic,
                fatal,
            });
            events.push(Event::Panic);
        }
        self.prompt(text, events);
    }
}

/// Strip `<N>` syslog prefixes and `[ t.tttttt]` timestamps.
fn strip_prefixes(line: &str) -> &str {
    let mut s = line;
    if s.starts_with('<') {
        if let Some(end) = s.find('>') {
            if s[1..end].chars().all(|c| c.is_ascii_digit()) {
                s = &s[end + 1..];
            }
        }
    }
    let t = s.trim_start();
    if t.starts_with('[') {
        if let Some(end) = t.find(']') {
            return t[end + 1..].trim_start();
        }
    }
    s
}
