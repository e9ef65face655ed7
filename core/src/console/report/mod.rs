//! Kernel problem reports: the state machine that collects an open report's lines (bounded),
//! decides its kind, and when it closes names it (title, guilty function) and merges repeats
//! of one bug into one issue with a count.

pub mod errcode;
pub mod frames;
pub mod title;
pub mod trigger;
pub mod userfault;

use super::{ClassifierConfig, Event};
use crate::result::{Issue, IssueKind, Phase};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use trigger::Trigger;

/// Excerpt bounds: enough for a cut-here block with its call trace.
pub const EXCERPT_MAX_LINES: usize = 80;
pub const EXCERPT_MAX_BYTES: usize = 8 * 1024;
pub const SUMMARY_MAX: usize = 240;
/// Lines of an open report kept for naming it (lockdep's lock chains come before the trace).
const ANALYSIS_MAX_LINES: usize = 256;
const ANALYSIS_MAX_BYTES: usize = 32 * 1024;
/// Issues kept; more are counted in `dropped`.
pub const MAX_ISSUES: usize = 1000;

/// The issues of a log so far, each fingerprint once (a view of the classification's issues
/// and the classifier's fingerprint index).
#[derive(Debug)]
pub struct IssueLog<'a> {
    pub issues: &'a mut Vec<Issue>,
    pub dropped: &'a mut u64,
    /// Fingerprint -> index of its issue.
    pub by_fingerprint: &'a mut HashMap<String, usize>,
}

/// What a new issue needs besides its naming.
struct NewIssue {
    kind: IssueKind,
    line: u64,
    summary: String,
    excerpt: String,
    phase: Phase,
}

impl IssueLog<'_> {
    /// Record an issue. With `dedup`, a repeat of a known fingerprint only counts; without
    /// (a report whose name is not final yet), it is stored and merged when renamed.
    fn record(
        &mut self,
        cfg: &ClassifierConfig,
        new: NewIssue,
        named: title::Named,
        dedup: bool,
    ) -> Recorded {
        let fingerprint = fingerprint(new.kind, &named.title);
        if dedup && self.count_repeat(&fingerprint) {
            return Recorded::Repeat;
        }
        if self.issues.len() >= MAX_ISSUES {
            *self.dropped += 1;
            return Recorded::Dropped;
        }
        let fatal = cfg.is_fatal(new.kind);
        self.by_fingerprint
            .entry(fingerprint.clone())
            .or_insert(self.issues.len());
        self.issues.push(Issue {
            kind: new.kind,
            line: new.line,
            summary: new.summary,
            excerpt: new.excerpt,
            fingerprint,
            phase: new.phase,
            fatal,
            title: named.title,
            function: named.function,
            count: 1,
        });
        Recorded::New(self.issues.len() - 1)
    }

    /// Count one more report of a known fingerprint; false when it is new.
    fn count_repeat(&mut self, fingerprint: &str) -> bool {
        let Some(&i) = self.by_fingerprint.get(fingerprint) else {
            return false;
        };
        if let Some(issue) = self.issues.get_mut(i) {
            issue.count += 1;
        }
        true
    }

    /// A one-line issue (errno lines, user-space faults, `--failure-pattern` matches).
    pub fn line_issue(
        &mut self,
        cfg: &ClassifierConfig,
        kind: IssueKind,
        text: &str,
        line: u64,
        phase: Phase,
        events: &mut Vec<Event>,
    ) {
        let summary = summarise(text);
        let named = title::name(kind, &[summary.as_str()]);
        let new = NewIssue {
            kind,
            line,
            excerpt: summary.clone(),
            summary,
            phase,
        };
        if let Recorded::New(index) = self.record(cfg, new, named, true) {
            let fatal = self.issues[index].fatal;
            events.push(Event::Issue { index, kind, fatal });
        }
        if kind == IssueKind::Panic && cfg.is_fatal(kind) {
            events.push(Event::Panic);
        }
    }

    /// The closed report at `index` turned out to repeat an earlier issue: count it there.
    fn merge(&mut self, index: usize) {
        let Some(fp) = self.issues.get(index).map(|i| i.fingerprint.clone()) else {
            return;
        };
        let Some(&first) = self.by_fingerprint.get(&fp) else {
            self.by_fingerprint.insert(fp, index);
            return;
        };
        if first == index {
            return;
        }
        let count = self.issues[index].count;
        self.issues.remove(index);
        for i in self.by_fingerprint.values_mut() {
            if *i > index {
                *i -= 1;
            }
        }
        let first = if first > index { first - 1 } else { first };
        if let Some(issue) = self.issues.get_mut(first) {
            issue.count += count;
        }
    }

    /// A stored issue was renamed when its report closed.
    fn rename(&mut self, index: usize, named: title::Named) {
        let Some(issue) = self.issues.get_mut(index) else {
            return;
        };
        let old = std::mem::replace(
            &mut issue.fingerprint,
            fingerprint(issue.kind, &named.title),
        );
        issue.title = named.title;
        issue.function = named.function;
        if self.by_fingerprint.get(&old) == Some(&index) {
            self.by_fingerprint.remove(&old);
        }
        self.merge(index);
    }
}

enum Recorded {
    New(usize),
    Repeat,
    Dropped,
}

/// Where an open report's issue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Not stored (the kind is not known yet, or the log was full).
    No,
    At(usize),
    /// A repeat already counted (or dropped) when stored.
    Counted,
}

/// An open kernel report collecting its lines.
#[derive(Debug)]
struct Report {
    stored: Stored,
    decided: bool,
    kind: IssueKind,
    line: u64,
    cut_here: bool,
    /// Framed by `====` lines (KASAN, KFENCE, KCSAN, lockdep, old UBSAN).
    framed: bool,
    seen: u32,
    excerpt: String,
    excerpt_lines: usize,
    summary: String,
    /// The lines kept for naming the report, and where its head (the line that decided the
    /// kind) is among them.
    lines: Vec<String>,
    lines_bytes: usize,
    head: usize,
    /// The printk caller (`T123`, `C1`) of the head: other callers' lines are interleaved
    /// output from other CPUs and tasks, not part of this report.
    caller: Option<String>,
    /// `Sending NMI from CPU`: the other CPUs' backtraces belong to the report.
    all_cpus: bool,
    /// A call trace started (a panic after it ends the report, one before it does not).
    traced: bool,
    /// Phase when the report started (a cut-here block is stored only once its kind is known).
    phase: Phase,
}

impl Report {
    fn keep(&mut self, text: &str) {
        append_excerpt(self, text);
        self.traced |= frames::starts_trace(text);
        if self.lines.len() < ANALYSIS_MAX_LINES
            && self.lines_bytes + text.len() <= ANALYSIS_MAX_BYTES
        {
            self.lines_bytes += text.len();
            self.lines.push(text.to_string());
        }
    }

    fn named(&self) -> title::Named {
        let lines: Vec<&str> = self.lines[self.head.min(self.lines.len())..]
            .iter()
            .map(String::as_str)
            .collect();
        if lines.is_empty() {
            return title::name(self.kind, &[self.summary.as_str()]);
        }
        title::name(self.kind, &lines)
    }

    /// The issue as the report is so far.
    fn issue(&self) -> NewIssue {
        NewIssue {
            kind: self.kind,
            line: self.line,
            summary: self.summary.clone(),
            excerpt: self.excerpt.trim_end_matches('\n').to_string(),
            phase: self.phase,
        }
    }
}

/// The report state machine: at most one report is open at a time.
#[derive(Debug, Default)]
pub struct Reports {
    open: Option<Report>,
    /// The previous kernel line was a `====` frame.
    prev_equals: bool,
    /// The line of an `INFO: task <comm>` head whose rest may follow on the next line.
    pending_task: Option<u64>,
    /// A hung-task report found on its second line starts at this one.
    hung_from: Option<u64>,
}

/// A kernel line as the report machine sees it.
pub struct KernelLine<'a> {
    pub text: &'a str,
    pub line: u64,
    /// The prefilter matched a trigger literal.
    pub hit: bool,
    /// Printed with a printk timestamp (or in a log without any, once the kernel ran): loose
    /// triggers count only then.
    pub formatted: bool,
    pub caller: Option<&'a str>,
    pub phase: Phase,
}

impl Reports {
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// One kernel-side line.
    pub fn line(
        &mut self,
        l: KernelLine<'_>,
        log: &mut IssueLog<'_>,
        cfg: &ClassifierConfig,
        events: &mut Vec<Event>,
    ) {
        self.step(&l, log, cfg, events);
    }

    /// Every console line: a `====` frame line before a report head frames the report.
    pub fn saw(&mut self, text: &str) {
        self.prev_equals = text.starts_with("=====");
    }

    fn split_hung_task(&mut self, l: &KernelLine<'_>) -> Option<trigger::Found> {
        let first = self.pending_task.take();
        if l.text.starts_with("INFO: task ") && !l.text.contains(" for more than ") {
            self.pending_task = Some(l.line);
            return None;
        }
        let line = first?;
        let second = l.text.contains(" blocked for more than ")
            || l.text.contains(" blocked in I/O wait for more than ");
        if !second || self.open.is_some() {
            return None;
        }
        self.hung_from = Some(line);
        Some(trigger::Found {
            trigger: Trigger::Kind(IssueKind::HungTask),
            strict: true,
        })
    }

    fn step(
        &mut self,
        l: &KernelLine<'_>,
        log: &mut IssueLog<'_>,
        cfg: &ClassifierConfig,
        events: &mut Vec<Event>,
    ) {
        let found = if l.hit {
            trigger::trigger(l.text).filter(|f| f.strict || l.formatted)
        } else {
            None
        };
        // Another CPU's or task's line inside a report: not part of it.
        if let Some(r) = &self.open {
            let foreign = match (&r.caller, l.caller) {
                (Some(own), Some(other)) => own != other && !(r.all_cpus && other.starts_with('C')),
                _ => false,
            };
            if foreign && found.is_none_or(|f| !matches!(f.trigger, Trigger::Kind(_))) {
                if let Some(Trigger::Line(kind)) = found.map(|f| f.trigger) {
                    log.line_issue(cfg, kind, l.text, l.line, l.phase, events);
                }
                return;
            }
        }
        // `INFO: task <comm>` and `... blocked for more than N seconds.` on two lines (a comm
        // with a newline in it): the head is the first line.
        let found = found.or_else(|| self.split_hung_task(l));
        let trig = found.map(|f| f.trigger);
        if let Some(Trigger::Line(kind)) = trig {
            // One-line issues never end or join a report.
            log.line_issue(cfg, kind, l.text, l.line, l.phase, events);
            if let Some(r) = &mut self.open {
                r.keep(l.text);
                r.seen += 1;
            }
            return;
        }
        if let (Some(r), Some(Trigger::Kind(IssueKind::Panic))) = (&mut self.open, trig) {
            if r.kind != IssueKind::Panic && (!r.traced || trigger::panic_mid_report(l.text)) {
                // A report that panics before its trace (`panic_on_warn` on 4.x kernels,
                // `scheduling while atomic`): the trace printed after the panic line is the
                // report's. The panic is an issue of its own and the report goes on.
                r.keep(l.text);
                r.seen += 1;
                log.line_issue(cfg, IssueKind::Panic, l.text, l.line, l.phase, events);
                return;
            }
        }
        if let Some(r) = &mut self.open {
            match trig {
                Some(Trigger::Kind(k)) if k != IssueKind::Panic && !r.decided => {
                    r.kind = k;
                    r.summary = summarise(l.text);
                    r.head = r.lines.len();
                    r.keep(l.text);
                    self.store(log, cfg, events);
                    return;
                }
                Some(Trigger::Kind(k))
                    if k != IssueKind::Panic
                        && r.decided
                        && trigger::absorbs(r.kind, k)
                        && r.seen < trigger::window(r.kind, &r.summary) =>
                {
                    if trigger::upgrades(r.kind, k) {
                        r.kind = k;
                        if let Some(issue) = match r.stored {
                            Stored::At(i) => log.issues.get_mut(i),
                            _ => None,
                        } {
                            issue.kind = k;
                            issue.fatal = cfg.is_fatal(k);
                        }
                    }
                    r.keep(l.text);
                    r.seen += 1;
                    return;
                }
                Some(_) => self.close(log, cfg, events),
                None => {
                    r.keep(l.text);
                    r.seen += 1;
                    if !r.decided && r.summary.is_empty() && !l.text.trim().is_empty() {
                        r.summary = summarise(l.text);
                        r.head = r.lines.len() - 1;
                    }
                    if l.text.contains("Sending NMI from CPU") {
                        r.all_cpus = true;
                    }
                    if trigger::ends_report(r.kind, r.cut_here, r.framed, l.text)
                        || r.seen >= trigger::window(r.kind, &r.summary)
                    {
                        self.close(log, cfg, events);
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
            Trigger::Kind(k) | Trigger::Line(k) => (k, false),
        };
        let mut r = Report {
            stored: Stored::No,
            decided: !cut_here,
            kind,
            line: self.hung_from.take().unwrap_or(l.line),
            cut_here,
            framed: self.prev_equals,
            seen: 0,
            excerpt: String::new(),
            excerpt_lines: 0,
            summary: if cut_here {
                String::new()
            } else {
                summarise(l.text)
            },
            lines: Vec::new(),
            lines_bytes: 0,
            // A cut-here block's head is the line that names it, after the marker.
            head: usize::from(cut_here),
            caller: l.caller.map(str::to_string),
            all_cpus: false,
            traced: false,
            phase: l.phase,
        };
        r.keep(l.text);
        self.open = Some(r);
        if !cut_here {
            self.store(log, cfg, events);
        }
    }

    /// The report's kind is known: record the issue (and stop the run on a fatal panic).
    fn store(&mut self, log: &mut IssueLog<'_>, cfg: &ClassifierConfig, events: &mut Vec<Event>) {
        let Some(r) = &mut self.open else {
            return;
        };
        r.decided = true;
        let kind = r.kind;
        let fatal = cfg.is_fatal(kind);
        // A panic is stored at once (it stops the run; the console is still drained after)
        // and, like every report, renamed when it closes: `corrupted stack end` and `kernel
        // stack overflow` take their frame from the trace that follows.
        let panic = kind == IssueKind::Panic;
        if panic || log.issues.len() < MAX_ISSUES {
            r.stored = match log.record(cfg, r.issue(), r.named(), panic) {
                Recorded::New(index) => {
                    events.push(Event::Issue { index, kind, fatal });
                    Stored::At(index)
                }
                Recorded::Repeat | Recorded::Dropped => Stored::Counted,
            };
        }
        if panic && fatal {
            events.push(Event::Panic);
        }
    }

    /// The open report ended: name it and merge it with an earlier issue of the same bug.
    pub fn close(
        &mut self,
        log: &mut IssueLog<'_>,
        cfg: &ClassifierConfig,
        events: &mut Vec<Event>,
    ) {
        if self.open.as_ref().is_some_and(|r| !r.decided) {
            // A cut-here block with no more specific line.
            self.store(log, cfg, events);
        }
        let Some(r) = self.open.take() else {
            return;
        };
        let named = r.named();
        match r.stored {
            Stored::At(index) => {
                if let Some(issue) = log.issues.get_mut(index) {
                    issue.excerpt = r.excerpt.trim_end_matches('\n').to_string();
                    issue.summary = r.summary.clone();
                }
                log.rename(index, named);
            }
            Stored::No => {
                // Not stored (the log was full): still a repeat of a known bug, or dropped.
                let fp = fingerprint(r.kind, &named.title);
                if !log.count_repeat(&fp) {
                    *log.dropped += 1;
                }
            }
            Stored::Counted => {}
        }
    }
}

/// One line, at most `SUMMARY_MAX` bytes (on a char boundary).
pub fn summarise(text: &str) -> String {
    truncate(text.trim(), SUMMARY_MAX).to_string()
}

pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Hex SHA-256 prefix of the kind and the title: one bug, one fingerprint, whatever the
/// kernel, build, addresses and offsets.
pub fn fingerprint(kind: IssueKind, title: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update(b"\n");
    h.update(title.as_bytes());
    hex::encode(&h.finalize()[..8])
}

fn append_excerpt(r: &mut Report, text: &str) {
    if r.excerpt_lines >= EXCERPT_MAX_LINES {
        return;
    }
    if super::push_line_capped(&mut r.excerpt, text, EXCERPT_MAX_BYTES) {
        r.excerpt_lines += 1;
    } else {
        r.excerpt_lines = EXCERPT_MAX_LINES;
    }
}
