//! The console classifier: fed the serial console as raw bytes, in chunks of any size, it
//! tracks the boot stage, the kernel version, kernel problems and test results, and reports
//! events as they happen so a live runner can stop as soon as the verdict is known.
//!
//! Work is bounded per line and memory is bounded whatever the log size: lines are capped, a
//! literal prefilter (Aho-Corasick) skips ordinary lines after a few byte comparisons, and only
//! a bounded window of an open report, a KTAP stream or a capture is kept.
//!
//! The same implementation serves live boots and `bootfarm-runner classify`, and the result
//! does not depend on how the bytes were chunked.

pub mod commands;
pub mod fragment;
pub mod ktap;
pub mod lava;
pub mod lines;
pub mod normalize;
pub mod prompt;
pub mod report;
pub mod session;
pub mod testlog;

use crate::result::{Issue, IssueKind, Phase, Stage, TestCase, TestOutcome};
use aho_corasick::AhoCorasick;
use fragment::Fragment;
use prompt::Prompt;
use report::{IssueLog, KernelLine, Reports};
use std::collections::HashMap;
use std::sync::OnceLock;

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

impl ClassifierConfig {
    /// Whether the policy counts an issue of this kind as a failure.
    pub fn is_fatal(&self, kind: IssueKind) -> bool {
        (kind.fails_by_default() || self.fail_on.contains(&kind)) && !self.ignore.contains(&kind)
    }
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
    Issue {
        index: usize,
        kind: IssueKind,
        fatal: bool,
    },
    /// A fatal kernel panic: nothing more will happen, the run can stop.
    Panic,
    /// An interactive command's end marker: its exit status is known.
    CommandEnd {
        nonce: String,
        index: u32,
        status: i32,
    },
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
    /// `reboot: Restarting system` was seen.
    pub rebooted: bool,
    /// `Login timed out` was seen.
    pub login_timed_out: bool,
    /// Issues and tests beyond the memory bounds are counted, not kept.
    pub dropped_issues: u64,
    pub dropped_tests: u64,
}

/// Longest line kept; the rest of a longer line is dropped (still one line).
pub const MAX_LINE: usize = 4096;

/// Literals that any line worth a closer look contains.
const LITERALS: &[&str] = &[
    "Linux version",
    "Booting Linux",
    "as init process",
    "reboot:",
    "System halted",
    "Kernel panic",
    "cut here",
    "BUG",
    "Oops",
    "WARNING:",
    "INFO:",
    "UBSAN:",
    "hard LOCKUP",
    "detected stall",
    "detected expedited stall",
    "blocked for more than",
    "blocked in I/O wait",
    "can't die for more than",
    "oom-killer",
    "Out of memory",
    "out of memory",
    "invalid opcode",
    "divide error",
    "divide_error",
    "stack segment",
    "double fault",
    "Unhandled fault",
    "Unable to handle",
    "protection fault",
    "Internal error",
    "Alignment trap",
    "unreferenced object",
    "kmemleak:",
    "traps:",
    "segfault at",
    "unhandled ",
    "<LAVA_",
    "<TEST_CASE_ID=",
    "TAP version",
    "login:",
    "Password:",
    "Login incorrect",
    "Login timed out",
    "BF_S_",
    "BF_E_",
    "\"BF\"\"_S_",
];

/// A negative errno after a separator (`error -22`, `(-110)`, `err=-5`, `error -EINVAL`): the
/// rare part of an errno line, so ordinary lines skip the error-code check.
fn errno_literals() -> Vec<String> {
    let mut v = Vec::new();
    for sep in [" -", "(-", "=-", ":-"] {
        for d in '1'..='9' {
            v.push(format!("{sep}{d}"));
        }
        v.push(format!("{sep}E"));
    }
    v
}

fn prefilter() -> &'static AhoCorasick {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    AC.get_or_init(|| {
        let mut all: Vec<String> = LITERALS.iter().map(|s| s.to_string()).collect();
        all.extend(errno_literals());
        AhoCorasick::new(all).expect("static literals")
    })
}

pub struct Classifier {
    cfg: ClassifierConfig,
    failure_set: Option<regex::RegexSet>,
    state: Classification,
    splitter: lines::LineSplitter,
    /// The pending partial line was already reported as a prompt.
    partial_prompt: bool,
    fragment: Option<Fragment>,
    reports: Reports,
    /// Fingerprint -> index in `state.issues`.
    fingerprints: HashMap<String, usize>,
    timestamps_seen: bool,
    prompt_seen: bool,
    ktap: ktap::Ktap,
    lava: lava::Lava,
    commands: commands::Commands,
    tests: testlog::TestLog,
}

impl Classifier {
    pub fn new(cfg: ClassifierConfig) -> Self {
        let failure_set = if cfg.failure_patterns.is_empty() {
            None
        } else {
            regex::RegexSet::new(cfg.failure_patterns.iter().map(|r| r.as_str())).ok()
        };
        Classifier {
            cfg,
            failure_set,
            state: Classification::default(),
            splitter: lines::LineSplitter::default(),
            partial_prompt: false,
            fragment: None,
            reports: Reports::default(),
            fingerprints: HashMap::new(),
            timestamps_seen: false,
            prompt_seen: false,
            ktap: ktap::Ktap::default(),
            lava: lava::Lava::default(),
            commands: commands::Commands::default(),
            tests: testlog::TestLog::default(),
        }
    }

    /// Feed console bytes; returns the events they caused, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.state.bytes += bytes.len() as u64;
        let mut splitter = std::mem::take(&mut self.splitter);
        splitter.feed(bytes, |seg| {
            self.complete_line(seg.bytes, seg.line, &mut events)
        });
        if !splitter.partial().is_empty() && !self.partial_prompt {
            self.check_partial(splitter.partial(), &mut events);
        }
        self.state.lines = splitter.lines();
        self.splitter = splitter;
        events
    }

    /// What has been seen so far.
    pub fn snapshot(&self) -> &Classification {
        &self.state
    }

    /// The log ended: flush the last unterminated line and return the classification.
    pub fn finish(mut self) -> Classification {
        let mut ev = Vec::new();
        let mut splitter = std::mem::take(&mut self.splitter);
        splitter.finish(|seg| self.complete_line(seg.bytes, seg.line, &mut ev));
        self.state.lines = splitter.lines();
        if let Some(f) = self.fragment.take() {
            self.user_line(&f.text, f.line, f.prompt_reported, &mut ev);
        }
        self.close_report(&mut ev);
        let mut out = Vec::new();
        self.ktap.close_all(&mut out);
        out.extend(self.commands.finish());
        out.extend(self.lava.finish());
        for t in out {
            self.push_test(t);
        }
        let expected = std::mem::take(&mut self.cfg.expect_tests);
        for name in expected {
            let seen = self.state.tests.iter().any(|t| {
                t.name == name
                    || (!t.suite.is_empty()
                        && name.len() == t.suite.len() + 1 + t.name.len()
                        && name.starts_with(t.suite.as_str())
                        && name.ends_with(t.name.as_str()))
            });
            if !seen {
                self.push_test(TestCase {
                    name,
                    result: TestOutcome::Fail,
                    suite: String::new(),
                    measurement: None,
                    units: None,
                    reason: Some("missing".to_string()),
                    output: None,
                });
            }
        }
        self.state
    }

    fn check_partial(&mut self, partial: &[u8], events: &mut Vec<Event>) {
        if partial.len() > 1024 {
            return;
        }
        if self.fragment.as_ref().is_some_and(|f| f.prompt_reported) {
            return;
        }
        let decoded = normalize::decode(partial);
        let s = normalize::strip(&decoded);
        if s.kernel {
            return;
        }
        // The line so far includes userspace text a kernel line interrupted.
        let found = match &self.fragment {
            Some(f) => prompt::partial(&format!("{}{}", f.text, s.text)),
            None => prompt::partial(s.text),
        };
        if let Some(p) = found {
            self.partial_prompt = true;
            self.prompt(p, events);
        }
    }

    /// One segment ended by a line end.
    fn complete_line(&mut self, raw: &[u8], line_no: u64, events: &mut Vec<Event>) {
        let reported = std::mem::take(&mut self.partial_prompt);
        let decoded = normalize::decode(raw);
        let s = normalize::strip(&decoded);
        if s.kernel {
            self.timestamps_seen = true;
            self.line(s.text, line_no, true, s.caller, false, events);
            self.age_fragment(events);
            return;
        }
        let (text, first_line, reported) = match self.fragment.take() {
            Some(f) => {
                let (t, l, r) = f.join(s.text);
                (std::borrow::Cow::Owned(t), l, reported || r)
            }
            None => (std::borrow::Cow::Borrowed(s.text), line_no, reported),
        };
        if let Some(pos) = normalize::embedded_kernel_start(&text) {
            let (user, kern) = text.split_at(pos);
            let mut reported = reported;
            // What the guest had printed before the interruption may be a prompt.
            if let Some(p) = prompt::full(user) {
                if !reported {
                    self.prompt(p, events);
                }
                reported = true;
            }
            self.fragment = Some(Fragment::new(user, first_line, reported));
            let ks = normalize::strip(kern);
            self.timestamps_seen = true;
            self.line(ks.text, line_no, true, ks.caller, false, events);
            return;
        }
        self.user_line(&text, first_line, reported, events);
    }

    /// A userspace fragment that waited through too many kernel lines is a line of its own.
    fn age_fragment(&mut self, events: &mut Vec<Event>) {
        if self.fragment.as_mut().is_some_and(Fragment::age) {
            if let Some(f) = self.fragment.take() {
                self.user_line(&f.text, f.line, f.prompt_reported, events);
            }
        }
    }

    fn user_line(&mut self, text: &str, line_no: u64, reported: bool, events: &mut Vec<Event>) {
        // A prompt already reported on the partial line is not reported again; whether the
        // line is a prompt echo depends on the whole line only, never on the chunking.
        let p = prompt::full(text);
        if let Some(p) = p {
            if !reported {
                self.prompt(p, events);
            }
        }
        self.line(text, line_no, false, None, p.is_some(), events);
    }

    /// One complete, normalised line.
    fn line(
        &mut self,
        text: &str,
        line_no: u64,
        kernel: bool,
        caller: Option<&str>,
        prompt_echo: bool,
        events: &mut Vec<Event>,
    ) {
        let hit = prefilter().is_match(text);
        // Before any timestamp every line may be the kernel's (`printk.time=0`); after the
        // first one, lines without are userspace.
        if (kernel || !self.timestamps_seen) && (hit || self.reports.is_open()) {
            let kl = KernelLine {
                text,
                line: line_no,
                hit,
                // Loose shapes count on kernel-formatted lines only: timestamped ones, or any
                // line of a log without timestamps once the kernel runs (never firmware's).
                formatted: kernel || self.state.stage >= Stage::Kernel,
                caller,
                phase: self.phase(),
            };
            let mut log = IssueLog {
                issues: &mut self.state.issues,
                dropped: &mut self.state.dropped_issues,
                by_fingerprint: &mut self.fingerprints,
            };
            self.reports.line(kl, &mut log, &self.cfg, events);
        }
        self.reports.saw(text);
        if let Some(set) = &self.failure_set {
            if set.is_match(text) {
                let phase = self.phase();
                let mut log = IssueLog {
                    issues: &mut self.state.issues,
                    dropped: &mut self.state.dropped_issues,
                    by_fingerprint: &mut self.fingerprints,
                };
                log.line_issue(&self.cfg, IssueKind::Pattern, text, line_no, phase, events);
            }
        }
        let mut prompt_echo = prompt_echo;
        if !kernel && self.commands.joining_echo() {
            // The rest of a typed command line the terminal wrapped: still an echo.
            self.commands.continue_echo(text, 4 * MAX_LINE);
            prompt_echo = true;
        }
        if hit {
            self.milestones(text, kernel, events);
            if !kernel && self.command_marker(text, prompt_echo, events) {
                return;
            }
        }
        // A command's output is everything the shell printed between its markers.
        if !kernel {
            self.commands.output(text);
        }
        // A signal typed at the prompt is echoed; only what the guest printed counts.
        if hit && !prompt_echo && (text.contains("<LAVA_") || text.contains("<TEST_CASE_ID=")) {
            let signals = lava::parse_all(text);
            if !signals.is_empty() {
                for sig in signals {
                    self.lava_signal(sig);
                }
                return;
            }
        }
        if (hit || self.ktap.active()) && !prompt_echo {
            let mut out = Vec::new();
            let consumed = self.ktap.line(text, &mut out);
            for t in out {
                self.push_test(t);
            }
            if consumed {
                return;
            }
        }
        self.lava.capture(text);
    }

    fn milestones(&mut self, text: &str, kernel: bool, events: &mut Vec<Event>) {
        let kernel_text = kernel || !self.timestamps_seen;
        if !kernel_text {
            // Userspace (`cat /proc/version`) says nothing about how the boot went.
        } else if let Some(i) = text.find("Linux version ") {
            let rest = &text[i + "Linux version ".len()..];
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                self.advance(Stage::Kernel, events);
                if self.state.kernel_version.is_none() {
                    let v = rest.split_whitespace().next().unwrap_or("").to_string();
                    self.state.kernel_version = Some(v.clone());
                    events.push(Event::KernelVersion(v));
                }
            }
        }
        if kernel_text && text.starts_with("Booting Linux") {
            self.advance(Stage::Kernel, events);
        }
        if kernel_text && text.starts_with("Run ") && text.ends_with(" as init process") {
            self.advance(Stage::Userspace, events);
        }
        if kernel_text {
            if text.starts_with("reboot: Power down")
                || text.starts_with("reboot: System halted")
                || text.starts_with("System halted")
            {
                if !self.state.powered_off {
                    self.state.powered_off = true;
                    events.push(Event::PowerOff);
                }
            } else if text.starts_with("reboot: Restarting system") && !self.state.rebooted {
                self.state.rebooted = true;
                events.push(Event::Reboot);
            }
        }
        if !kernel {
            if text.contains("Login incorrect") && !self.state.login_incorrect {
                self.state.login_incorrect = true;
                events.push(Event::LoginIncorrect);
            }
            if text.contains("Login timed out") {
                self.state.login_timed_out = true;
            }
        }
    }

    fn prompt(&mut self, p: Prompt, events: &mut Vec<Event>) {
        self.prompt_seen = true;
        match p {
            Prompt::Login => {
                self.advance(Stage::Login, events);
                events.push(Event::LoginPrompt);
            }
            Prompt::Password => events.push(Event::PasswordPrompt),
            Prompt::Shell => {
                self.advance(Stage::Shell, events);
                events.push(Event::ShellPrompt);
            }
        }
    }

    fn advance(&mut self, s: Stage, events: &mut Vec<Event>) {
        if s > self.state.stage {
            self.state.stage = s;
            events.push(Event::Stage(s));
        }
    }

    fn phase(&self) -> Phase {
        if self.prompt_seen {
            Phase::Test
        } else {
            Phase::Boot
        }
    }

    fn close_report(&mut self, events: &mut Vec<Event>) {
        let mut log = IssueLog {
            issues: &mut self.state.issues,
            dropped: &mut self.state.dropped_issues,
            by_fingerprint: &mut self.fingerprints,
        };
        self.reports.close(&mut log, &self.cfg, events);
    }

    // ---- tests ----

    fn push_test(&mut self, t: TestCase) {
        self.tests
            .push(&mut self.state.tests, &mut self.state.dropped_tests, t);
    }

    fn lava_signal(&mut self, sig: lava::Signal) {
        let mut out = Vec::new();
        let n = self.state.tests.len();
        let recent = &mut self.state.tests[n.saturating_sub(64)..];
        self.lava.apply(sig, recent, &mut out);
        for t in out {
            self.push_test(t);
        }
    }

    /// Interactive command markers. Returns true when the line was a marker line.
    fn command_marker(&mut self, text: &str, prompt_echo: bool, events: &mut Vec<Event>) -> bool {
        let mut out = Vec::new();
        let outcome = self.commands.marker(text, prompt_echo, &mut out);
        for t in out {
            self.push_test(t);
        }
        match outcome {
            commands::Outcome::NotAMarker => false,
            commands::Outcome::Marker => true,
            commands::Outcome::Ended(case, m, status) => {
                self.push_test(*case);
                events.push(Event::CommandEnd {
                    nonce: m.nonce,
                    index: m.index,
                    status,
                });
                true
            }
        }
    }
}

/// Append a line to a bounded text; false when it did not fit.
fn push_line_capped(buf: &mut String, line: &str, max: usize) -> bool {
    if buf.len() + line.len() + 1 > max {
        return false;
    }
    buf.push_str(line);
    buf.push('\n');
    true
}
