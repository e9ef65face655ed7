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
pub mod issues;
pub mod ktap;
pub mod lava;
pub mod normalize;
pub mod prompt;
pub mod session;

use crate::result::{Issue, IssueKind, Phase, Stage, TestCase, TestOutcome};
use aho_corasick::AhoCorasick;
use issues::Trigger;
use prompt::Prompt;
use std::collections::VecDeque;
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
const MAX_ISSUES: usize = 1000;
const MAX_TESTS: usize = 20_000;
/// Bound on test and suite names.
const NAME_MAX: usize = 512;
/// Bound on all captured test output together.
const OUTPUT_BUDGET: usize = 8 << 20;
/// STARTTC/ENDTC excerpt bound.
const TC_OUTPUT_MAX: usize = 2048;
/// Kernel lines a split userspace fragment waits through before it is taken as a line of its own.
const FRAGMENT_PATIENCE: u32 = 8;

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
    "UBSAN:",
    "hard LOCKUP",
    "detected stall",
    "detected expedited stall",
    "blocked for more than",
    "oom-killer",
    "Out of memory",
    "out of memory",
    "invalid opcode",
    "Unhandled fault",
    "Unable to handle",
    "protection fault",
    "Internal error",
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

fn prefilter() -> &'static AhoCorasick {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    AC.get_or_init(|| AhoCorasick::new(LITERALS).expect("static literals"))
}

/// An open kernel report collecting its excerpt.
#[derive(Debug)]
struct Report {
    /// Index in `issues` once the kind is known and the issue stored.
    index: Option<usize>,
    decided: bool,
    kind: IssueKind,
    line: u64,
    cut_here: bool,
    /// Framed by `====` lines (KASAN, KFENCE, KCSAN, old UBSAN).
    framed: bool,
    seen: u32,
    excerpt: String,
    excerpt_lines: usize,
    summary: String,
    frame: Option<String>,
    in_irq: bool,
    /// Phase when the report started (a cut-here block is stored only once its kind is known).
    phase: Phase,
}

/// Userspace text interrupted by a kernel line, waiting for the rest of its line.
#[derive(Debug)]
struct Fragment {
    text: String,
    line: u64,
    prompt_reported: bool,
    kernel_lines: u32,
}

#[derive(Debug, Default)]
struct Lava {
    run: Option<String>,
    set: Option<String>,
    tc: Option<(String, String)>,
    /// ENDTC excerpts waiting for their TESTCASE.
    excerpts: VecDeque<(String, String, String)>,
}

#[derive(Debug)]
struct Command {
    nonce: String,
    index: u32,
    name: String,
    output: String,
    truncated: bool,
}

pub struct Classifier {
    cfg: ClassifierConfig,
    failure_set: Option<regex::RegexSet>,
    state: Classification,
    partial: Vec<u8>,
    pending_cr: bool,
    newlines: u64,
    ends_with_newline: bool,
    /// The pending partial line was already reported as a prompt.
    partial_prompt: bool,
    fragment: Option<Fragment>,
    report: Option<Report>,
    prev_equals: bool,
    timestamps_seen: bool,
    prompt_seen: bool,
    ktap: ktap::Ktap,
    lava: Lava,
    command: Option<Command>,
    /// Names parsed from the echo of typed command lines, by (nonce, index).
    command_names: VecDeque<(String, u32, String)>,
    /// The start of a command echo the terminal wrapped, with the lines joined so far.
    pending_echo: Option<(String, u32)>,
    /// Captured output bytes still allowed (see `OUTPUT_BUDGET`).
    output_budget: usize,
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
            partial: Vec::new(),
            pending_cr: false,
            newlines: 0,
            ends_with_newline: false,
            partial_prompt: false,
            fragment: None,
            report: None,
            prev_equals: false,
            timestamps_seen: false,
            prompt_seen: false,
            ktap: ktap::Ktap::default(),
            lava: Lava::default(),
            command: None,
            command_names: VecDeque::new(),
            pending_echo: None,
            output_budget: OUTPUT_BUDGET,
        }
    }

    /// Feed console bytes; returns the events they caused, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.state.bytes += bytes.len() as u64;
        if let Some(&last) = bytes.last() {
            self.ends_with_newline = last == b'\n';
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.pending_cr {
                // `\r\n`, `\r\r\n`: one line end.
                if rest[0] == b'\n' {
                    self.newlines += 1;
                    self.pending_cr = false;
                    rest = &rest[1..];
                    continue;
                }
                if rest[0] == b'\r' {
                    rest = &rest[1..];
                    continue;
                }
                self.pending_cr = false;
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(p) => {
                    let line_no = self.newlines + 1;
                    if self.partial.is_empty() {
                        let seg = &rest[..p.min(MAX_LINE)];
                        self.complete_line(seg, line_no, &mut events);
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        push_capped(&mut line, &rest[..p]);
                        self.complete_line(&line, line_no, &mut events);
                        line.clear();
                        self.partial = line;
                    }
                    if rest[p] == b'\n' {
                        self.newlines += 1;
                    } else {
                        self.pending_cr = true;
                    }
                    rest = &rest[p + 1..];
                }
                None => {
                    push_capped(&mut self.partial, rest);
                    break;
                }
            }
        }
        if !self.partial.is_empty() && !self.partial_prompt {
            self.check_partial(&mut events);
        }
        events
    }

    /// What has been seen so far.
    pub fn snapshot(&self) -> &Classification {
        &self.state
    }

    /// The log ended: flush the last unterminated line and return the classification.
    pub fn finish(mut self) -> Classification {
        let mut ev = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.complete_line(&line, self.newlines + 1, &mut ev);
        }
        self.state.lines =
            self.newlines + u64::from(self.state.bytes > 0 && !self.ends_with_newline);
        if let Some(f) = self.fragment.take() {
            self.user_line(&f.text, f.line, f.prompt_reported, &mut ev);
        }
        self.close_report(&mut ev);
        let mut out = Vec::new();
        self.ktap.close_all(&mut out);
        for t in out {
            self.push_test(t);
        }
        if let Some(c) = self.command.take() {
            self.push_test(TestCase {
                name: c.name,
                result: TestOutcome::Fail,
                suite: commands::SUITE.to_string(),
                measurement: None,
                units: None,
                reason: Some("no exit status: the command did not finish".to_string()),
                output: Some(c.output),
            });
        }
        if let Some(run) = self.lava.run.take() {
            self.push_test(TestCase {
                name: format!("{run}: incomplete"),
                result: TestOutcome::Fail,
                suite: run,
                measurement: None,
                units: None,
                reason: Some("STARTRUN without ENDRUN: the test run did not finish".to_string()),
                output: None,
            });
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

    fn check_partial(&mut self, events: &mut Vec<Event>) {
        if self.partial.len() > 1024 {
            return;
        }
        if self.fragment.as_ref().is_some_and(|f| f.prompt_reported) {
            return;
        }
        let decoded = normalize::decode(&self.partial);
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

    /// One segment ended by a line end; `line_no` counts `\n` as editors and `grep -n` do
    /// (a bare `\r` splits segments but keeps the line number).
    fn complete_line(&mut self, raw: &[u8], line_no: u64, events: &mut Vec<Event>) {
        self.state.lines = line_no;
        let reported = std::mem::take(&mut self.partial_prompt);
        let decoded = normalize::decode(raw);
        let s = normalize::strip(&decoded);
        if s.kernel {
            self.timestamps_seen = true;
            self.line(s.text, line_no, true, false, events);
            self.age_fragment(events);
            return;
        }
        let (text, first_line, reported) = match self.fragment.take() {
            Some(f) => {
                let mut t = f.text;
                t.push_str(issues::truncate(s.text, MAX_LINE.saturating_sub(t.len())));
                (
                    std::borrow::Cow::Owned(t),
                    f.line,
                    reported || f.prompt_reported,
                )
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
            self.fragment = Some(Fragment {
                text: user.to_string(),
                line: first_line,
                prompt_reported: reported,
                kernel_lines: 0,
            });
            let ks = normalize::strip(kern);
            self.timestamps_seen = true;
            self.line(ks.text, line_no, true, false, events);
            return;
        }
        self.user_line(&text, first_line, reported, events);
    }

    /// A userspace fragment that waited through too many kernel lines is a line of its own.
    fn age_fragment(&mut self, events: &mut Vec<Event>) {
        if let Some(f) = &mut self.fragment {
            f.kernel_lines += 1;
            if f.kernel_lines > FRAGMENT_PATIENCE {
                if let Some(f) = self.fragment.take() {
                    self.user_line(&f.text, f.line, f.prompt_reported, events);
                }
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
        self.line(text, line_no, false, p.is_some(), events);
    }

    /// One complete, normalised line.
    fn line(
        &mut self,
        text: &str,
        line_no: u64,
        kernel: bool,
        prompt_echo: bool,
        events: &mut Vec<Event>,
    ) {
        let hit = prefilter().is_match(text);
        let equals = text.starts_with("=====");
        if (kernel || !self.timestamps_seen) && (hit || self.report.is_some()) {
            self.issue_line(text, line_no, hit, events);
        }
        self.prev_equals = equals;
        if let Some(set) = &self.failure_set {
            if set.is_match(text) {
                self.pattern_issue(text, line_no, events);
            }
        }
        let mut prompt_echo = prompt_echo;
        if !kernel && self.pending_echo.is_some() {
            // The rest of a typed command line the terminal wrapped: still an echo.
            self.continue_echo(text);
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
            if let Some(c) = &mut self.command {
                if !c.truncated {
                    c.truncated = !push_line_capped(&mut c.output, text, commands::OUTPUT_MAX);
                }
            }
        }
        // A signal typed at the prompt is echoed; only what the guest printed counts.
        if hit && !prompt_echo && (text.contains("<LAVA_") || text.contains("<TEST_CASE_ID=")) {
            if let Some(sig) = lava::parse(text) {
                self.lava_signal(sig);
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
        if let Some((_, buf)) = &mut self.lava.tc {
            push_line_capped(buf, text, TC_OUTPUT_MAX);
        }
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

    // ---- kernel reports ----

    fn issue_line(&mut self, text: &str, line_no: u64, hit: bool, events: &mut Vec<Event>) {
        let trig = if hit { issues::trigger(text) } else { None };
        if let Some(r) = &mut self.report {
            match trig {
                Some(Trigger::Kind(k)) if k != IssueKind::Panic && !r.decided => {
                    r.kind = k;
                    r.summary = issues::summarise(text);
                    append_excerpt(r, text);
                    self.store_report(events);
                    return;
                }
                Some(Trigger::Kind(k))
                    if k != IssueKind::Panic
                        && r.decided
                        && issues::absorbs(r.kind, k)
                        && r.seen < issues::window(r.kind) =>
                {
                    append_excerpt(r, text);
                    r.seen += 1;
                    return;
                }
                Some(_) => self.close_report(events),
                None => {
                    append_excerpt(r, text);
                    r.seen += 1;
                    if !r.decided && r.summary.is_empty() && !text.trim().is_empty() {
                        r.summary = issues::summarise(text);
                    }
                    let t = text.trim();
                    if t == "<IRQ>" {
                        r.in_irq = true;
                    } else if t == "</IRQ>" {
                        r.in_irq = false;
                    } else if r.frame.is_none() && !r.in_irq {
                        if let Some(f) = issues::frame_function(text) {
                            r.frame = Some(f.to_string());
                        }
                    }
                    if issues::ends_report(r.kind, r.cut_here, r.framed, text)
                        || r.seen >= issues::window(r.kind)
                    {
                        self.close_report(events);
                    }
                    return;
                }
            }
        }
        let Some(t) = trig else {
            return;
        };
        let (kind, cut_here) = match t {
            Trigger::CutHere => (IssueKind::Exception, true),
            Trigger::Kind(k) => (k, false),
        };
        let mut r = Report {
            index: None,
            decided: !cut_here,
            kind,
            line: line_no,
            cut_here,
            framed: self.prev_equals,
            seen: 0,
            excerpt: String::new(),
            excerpt_lines: 0,
            summary: if cut_here {
                String::new()
            } else {
                issues::summarise(text)
            },
            frame: None,
            in_irq: false,
            phase: self.phase(),
        };
        append_excerpt(&mut r, text);
        self.report = Some(r);
        if !cut_here {
            self.store_report(events);
        }
    }

    /// The report's kind is known: record the issue (and stop the run on a fatal panic).
    fn store_report(&mut self, events: &mut Vec<Event>) {
        let Some(r) = &mut self.report else {
            return;
        };
        let phase = r.phase;
        r.decided = true;
        let fatal = self.cfg.is_fatal(r.kind);
        let kind = r.kind;
        if self.state.issues.len() < MAX_ISSUES {
            self.state.issues.push(Issue {
                kind,
                line: r.line,
                summary: r.summary.clone(),
                excerpt: r.excerpt.trim_end_matches('\n').to_string(),
                fingerprint: issues::fingerprint(kind, &r.summary, None),
                phase,
                fatal,
            });
            let index = self.state.issues.len() - 1;
            r.index = Some(index);
            events.push(Event::Issue { index, kind, fatal });
        } else {
            self.state.dropped_issues += 1;
        }
        if kind == IssueKind::Panic && fatal {
            events.push(Event::Panic);
        }
    }

    fn close_report(&mut self, events: &mut Vec<Event>) {
        if self.report.as_ref().is_some_and(|r| !r.decided) {
            // A cut-here block with no more specific line.
            self.store_report(events);
        }
        let Some(r) = self.report.take() else {
            return;
        };
        let Some(issue) = r.index.and_then(|i| self.state.issues.get_mut(i)) else {
            return;
        };
        issue.excerpt = r.excerpt.trim_end_matches('\n').to_string();
        issue.summary = r.summary;
        // A panic stops the run at once: its fingerprint must not depend on lines after it.
        let frame = if r.kind == IssueKind::Panic {
            None
        } else {
            r.frame.as_deref()
        };
        issue.fingerprint = issues::fingerprint(r.kind, &issue.summary, frame);
    }

    fn pattern_issue(&mut self, text: &str, line_no: u64, events: &mut Vec<Event>) {
        let kind = IssueKind::Pattern;
        let fatal = self.cfg.is_fatal(kind);
        if self.state.issues.len() >= MAX_ISSUES {
            self.state.dropped_issues += 1;
            return;
        }
        let summary = issues::summarise(text);
        self.state.issues.push(Issue {
            kind,
            line: line_no,
            fingerprint: issues::fingerprint(kind, &summary, None),
            excerpt: summary.clone(),
            summary,
            phase: self.phase(),
            fatal,
        });
        events.push(Event::Issue {
            index: self.state.issues.len() - 1,
            kind,
            fatal,
        });
    }

    // ---- tests ----

    fn push_test(&mut self, mut t: TestCase) {
        if self.state.tests.len() >= MAX_TESTS {
            self.state.dropped_tests += 1;
            return;
        }
        for s in [&mut t.name, &mut t.suite] {
            if s.len() > NAME_MAX {
                let keep = issues::truncate(s, NAME_MAX).len();
                s.truncate(keep);
            }
        }
        if let Some(out) = &mut t.output {
            let keep = issues::truncate(out, self.output_budget).len();
            out.truncate(keep);
            self.output_budget -= keep;
        }
        self.state.tests.push(t);
    }

    fn lava_suite(&self) -> String {
        match (&self.lava.run, &self.lava.set) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }

    fn lava_signal(&mut self, sig: lava::Signal) {
        use lava::Signal;
        match sig {
            Signal::StartRun { run } => {
                self.lava.run = Some(run);
                self.lava.set = None;
            }
            Signal::EndRun { .. } => {
                self.lava.run = None;
                self.lava.set = None;
            }
            Signal::TestSetStart(s) => self.lava.set = Some(s),
            Signal::TestSetStop => self.lava.set = None,
            Signal::TestCase(c) => {
                let suite = self.lava_suite();
                let output = self
                    .lava
                    .excerpts
                    .iter()
                    .position(|(s, id, _)| *s == suite && *id == c.id)
                    .and_then(|i| self.lava.excerpts.remove(i))
                    .map(|(_, _, out)| out);
                self.push_test(TestCase {
                    name: c.id,
                    result: c.result,
                    suite,
                    measurement: c.measurement,
                    units: c.units,
                    reason: None,
                    output,
                });
            }
            Signal::StartTc(id) => self.lava.tc = Some((id, String::new())),
            Signal::EndTc(id) => {
                let Some((open, out)) = self.lava.tc.take() else {
                    return;
                };
                if open != id {
                    return;
                }
                let suite = self.lava_suite();
                // The case may already have reported (TESTCASE inside STARTTC/ENDTC).
                let n = self.state.tests.len();
                let existing = self.state.tests[n.saturating_sub(64)..]
                    .iter_mut()
                    .rev()
                    .find(|t| t.name == id && t.suite == suite && t.output.is_none());
                match existing {
                    Some(t) => t.output = Some(out),
                    None => {
                        if self.lava.excerpts.len() >= 16 {
                            self.lava.excerpts.pop_front();
                        }
                        self.lava.excerpts.push_back((suite, id, out));
                    }
                }
            }
            Signal::TestRaise(msg) => {
                let suite = self.lava_suite();
                self.push_test(TestCase {
                    name: "testraise".to_string(),
                    result: TestOutcome::Fail,
                    suite,
                    measurement: None,
                    units: None,
                    reason: Some(msg),
                    output: None,
                });
            }
            Signal::RunnerExit => {}
        }
    }

    fn command_name(&mut self, m: commands::Marker, cmd: String) {
        if self.command_names.len() >= 8 {
            self.command_names.pop_front();
        }
        self.command_names.push_back((m.nonce, m.index, cmd));
    }

    /// A line after the first part of a wrapped command echo.
    fn continue_echo(&mut self, text: &str) {
        let Some((mut joined, n)) = self.pending_echo.take() else {
            return;
        };
        joined.push_str(text);
        if let Some((m, cmd)) = commands::echo(&joined) {
            self.command_name(m, cmd);
        } else if n < 8 && joined.len() < 4 * MAX_LINE && commands::start(text).is_none() {
            self.pending_echo = Some((joined, n + 1));
        }
    }

    /// Interactive command markers. Returns true when the line was a marker line.
    fn command_marker(&mut self, text: &str, prompt_echo: bool, events: &mut Vec<Event>) -> bool {
        if prompt_echo || text.contains("\"BF\"\"_S_") {
            if let Some((m, cmd)) = commands::echo(text) {
                self.command_name(m, cmd);
                return true;
            }
            if text.contains("\"BF\"\"_S_") {
                // The terminal wrapped the echo of a long line: join the following lines.
                self.pending_echo = Some((text.to_string(), 0));
            }
            return false;
        }
        if let Some((m, status, at)) = commands::end(text) {
            let Some(mut c) = self.command.take() else {
                return true;
            };
            if c.nonce != m.nonce || c.index != m.index {
                self.command = Some(c);
                return true;
            }
            if at > 0 && !c.truncated {
                c.truncated = !push_line_capped(&mut c.output, &text[..at], commands::OUTPUT_MAX);
            }
            let mut reason = (status != 0).then(|| format!("exit status {status}"));
            if c.truncated {
                reason = Some(match reason {
                    Some(r) => format!("{r}; output truncated"),
                    None => "output truncated".to_string(),
                });
            }
            self.push_test(TestCase {
                name: c.name,
                result: if status == 0 {
                    TestOutcome::Pass
                } else {
                    TestOutcome::Fail
                },
                suite: commands::SUITE.to_string(),
                measurement: None,
                units: None,
                reason,
                output: Some(c.output),
            });
            events.push(Event::CommandEnd {
                nonce: m.nonce,
                index: m.index,
                status,
            });
            return true;
        }
        if let Some(m) = commands::start(text) {
            let name = self
                .command_names
                .iter()
                .rev()
                .find(|(n, i, _)| *n == m.nonce && *i == m.index)
                .map(|(_, _, c)| c.clone())
                .unwrap_or_else(|| format!("command-{}", m.index));
            if let Some(prev) = self.command.take() {
                self.push_test(TestCase {
                    name: prev.name,
                    result: TestOutcome::Fail,
                    suite: commands::SUITE.to_string(),
                    measurement: None,
                    units: None,
                    reason: Some("no exit status: the command did not finish".to_string()),
                    output: Some(prev.output),
                });
            }
            self.command = Some(Command {
                nonce: m.nonce,
                index: m.index,
                name,
                output: String::new(),
                truncated: false,
            });
            return true;
        }
        false
    }
}

fn push_capped(buf: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
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

fn append_excerpt(r: &mut Report, text: &str) {
    if r.excerpt_lines >= issues::EXCERPT_MAX_LINES {
        return;
    }
    if push_line_capped(&mut r.excerpt, text, issues::EXCERPT_MAX_BYTES) {
        r.excerpt_lines += 1;
    } else {
        r.excerpt_lines = issues::EXCERPT_MAX_LINES;
    }
}
