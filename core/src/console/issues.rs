//! Kernel problem reports: which line starts one and of what kind, which following lines belong
//! to it (the bounded excerpt), and the fingerprint that recognises the same bug across runs.

use crate::result::IssueKind;
use regex::Regex;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Excerpt bounds: enough for a cut-here block with its call trace.
pub const EXCERPT_MAX_LINES: usize = 80;
pub const EXCERPT_MAX_BYTES: usize = 8 * 1024;
pub const SUMMARY_MAX: usize = 240;

/// What a trigger line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Kind(IssueKind),
    /// `------------[ cut here ]------------`: the kind comes from the next lines.
    CutHere,
}

/// Classify a stripped kernel line. Only called when the prefilter saw a trigger literal, so
/// this can afford plain string searches. Order matters: the more specific report wins.
pub fn trigger(text: &str) -> Option<Trigger> {
    use IssueKind::*;
    let t = text.trim_start();
    let k = |k| Some(Trigger::Kind(k));
    if t.contains("Kernel panic - not syncing") {
        // The closing `---[ end Kernel panic - not syncing: ... ]---` repeats it.
        return if t.starts_with("---[ end") {
            None
        } else {
            k(Panic)
        };
    }
    if t.contains("[ cut here ]") || t.starts_with("8<--- cut here") {
        return Some(Trigger::CutHere);
    }
    if t.contains("BUG: KASAN:") {
        return k(Kasan);
    }
    if t.contains("BUG: KFENCE:") {
        return k(Kfence);
    }
    if t.contains("BUG: KCSAN:") {
        return k(Kcsan);
    }
    if t.starts_with("UBSAN:") {
        return k(Ubsan);
    }
    if t.contains("BUG: soft lockup") {
        return k(SoftLockup);
    }
    if t.contains("hard LOCKUP") {
        return k(HardLockup);
    }
    if (t.starts_with("rcu:") || t.starts_with("INFO: rcu"))
        && (t.contains("detected stall") || t.contains("detected expedited stall"))
    {
        return k(RcuStall);
    }
    if t.starts_with("INFO: task ") && t.contains(" blocked for more than ") {
        return k(HungTask);
    }
    if t.contains(" invoked oom-killer:")
        || t.starts_with("Out of memory")
        || t.starts_with("Memory cgroup out of memory")
    {
        return k(Oom);
    }
    if t.starts_with("kernel BUG at ") {
        return k(Bug);
    }
    if t.contains("general protection fault") {
        return k(Fault);
    }
    if t.contains("invalid opcode:") {
        return k(InvalidOpcode);
    }
    if t.starts_with("BUG: kernel NULL pointer dereference")
        || t.starts_with("BUG: unable to handle")
        || t.starts_with("Unable to handle kernel")
        || t.starts_with("Oops")
        || t.starts_with("Internal error: Oops")
    {
        return k(Oops);
    }
    if t.starts_with("Unhandled fault") {
        return k(Fault);
    }
    if t.starts_with("WARNING:") {
        return k(Warning);
    }
    if t.starts_with("BUG: ") {
        return k(Bug);
    }
    None
}

/// Whether a trigger of kind `next` is the continuation of an open report of kind `open`
/// (`kernel BUG at` is followed by `invalid opcode:` on x86 and `Internal error: Oops - BUG`
/// on arm; `invoked oom-killer` by `Out of memory: Killed process`).
pub fn absorbs(open: IssueKind, next: IssueKind) -> bool {
    use IssueKind::*;
    match open {
        Bug => matches!(next, Oops | InvalidOpcode | Fault),
        Oops => matches!(next, Oops | InvalidOpcode | Fault),
        Fault => matches!(next, Oops | Fault),
        InvalidOpcode => matches!(next, Oops),
        Oom => next == Oom,
        RcuStall => next == RcuStall,
        _ => false,
    }
}

/// How many lines after its first one a report may still collect lines and absorb triggers.
pub fn window(kind: IssueKind) -> u32 {
    match kind {
        // The OOM report dumps memory state and the task list before it names its victim.
        IssueKind::Oom => 2000,
        IssueKind::Kasan | IssueKind::Kfence | IssueKind::Kcsan => 200,
        _ => 120,
    }
}

/// Whether this excerpt line ends the report.
pub fn ends_report(kind: IssueKind, cut_here: bool, framed: bool, text: &str) -> bool {
    let t = text.trim();
    if t.starts_with("---[ end trace") || t.starts_with("---[ end Kernel panic") {
        return true;
    }
    if framed && t.len() >= 20 && t.bytes().all(|b| b == b'=') {
        return true;
    }
    !cut_here
        && matches!(
            kind,
            IssueKind::SoftLockup
                | IssueKind::HardLockup
                | IssueKind::HungTask
                | IssueKind::RcuStall
        )
        && t == "</TASK>"
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

fn frame_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^\s*(?:\[<[0-9a-fA-F]+>\]\s*)?(\? )?\(?([A-Za-z_][\w.]*)(?:\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+|\) from )",
        )
        .expect("static regex")
    })
}

/// Report machinery that sits on top of every trace: not what went wrong.
const HELPER_FRAMES: &[&str] = &[
    "dump_stack",
    "__dump_stack",
    "show_stack",
    "dump_backtrace",
    "show_regs",
    "print_report",
    "print_address_description",
    "kasan_",
    "__kasan",
    "kfence_",
    "kcsan_",
    "__asan_",
    "__tsan_",
    "ubsan_",
    "__ubsan_",
    "panic",
    "vpanic",
    "__warn",
    "warn_slowpath",
    "report_bug",
    "handle_bug",
    "exc_invalid_op",
    "asm_exc_",
    "do_error_trap",
    "do_trap",
    "die",
    "__die",
    "oops_",
    "bug_handler",
    "do_undefinstr",
    "el1_",
    "check_panic_on_warn",
];

/// The first meaningful call-trace function of an excerpt line, if it is a frame.
pub fn frame_function(text: &str) -> Option<&str> {
    let c = frame_re().captures(text)?;
    if c.get(1).is_some() {
        return None; // `? foo+0x..`: an unreliable frame
    }
    let name = c.get(2)?.as_str();
    if HELPER_FRAMES.iter().any(|h| name.starts_with(h)) {
        return None;
    }
    Some(name)
}

/// Text with everything that changes between runs and kernels removed: numbers, addresses,
/// timestamps, pids, CPU numbers, taint flags.
pub fn normalise(text: &str) -> String {
    let mut s = text.trim();
    for cut in [" Tainted:", " Not tainted"] {
        if let Some(i) = s.find(cut) {
            s = &s[..i];
        }
    }
    // File paths differ between build trees (out-of-tree modules build in temporary
    // directories): keep only the file name.
    let owned = strip_dirs(s);
    let s = owned.as_str();
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'0' && matches!(b.get(i + 1), Some(b'x') | Some(b'X')) {
            i += 2;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_hexdigit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            let word_end = b.get(i + run).is_none_or(|c| !c.is_ascii_alphanumeric());
            if run >= 8 && word_end {
                i += run;
                continue;
            }
        }
        if c.is_ascii_digit() {
            i += 1;
            continue;
        }
        if c == b' ' && out.ends_with(' ') {
            i += 1;
            continue;
        }
        // Copy one whole UTF-8 character.
        let len = utf8_len(c);
        let end = (i + len).min(b.len());
        out.push_str(&s[i..end]);
        i = end;
    }
    out.trim().to_string()
}

/// `at /tmp/x/y/foo.c:12` -> `at foo.c:12`.
fn strip_dirs(s: &str) -> String {
    s.split(' ')
        .map(|w| match w.rfind('/') {
            Some(i) if w.contains('.') && !w.contains("+0x") && i + 1 < w.len() => &w[i + 1..],
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Hex SHA-256 prefix of kind, normalised summary and first call-trace function.
pub fn fingerprint(kind: IssueKind, summary: &str, frame: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update(b"\n");
    h.update(normalise(summary).as_bytes());
    h.update(b"\n");
    h.update(frame.unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use IssueKind::*;

    fn kind(s: &str) -> Option<IssueKind> {
        match trigger(s) {
            Some(Trigger::Kind(k)) => Some(k),
            _ => None,
        }
    }

    #[test]
    fn the_more_specific_kind_wins() {
        assert_eq!(
            kind("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [insmod:91]"),
            Some(SoftLockup)
        );
        assert_eq!(
            kind("BUG: KASAN: slab-out-of-bounds in f+0x1/0x2"),
            Some(Kasan)
        );
        assert_eq!(kind("BUG: scheduling while atomic: x/1/0x2"), Some(Bug));
        assert_eq!(kind("kernel BUG at drivers/x.c:12!"), Some(Bug));
        assert_eq!(
            kind("BUG: kernel NULL pointer dereference, address: 0"),
            Some(Oops)
        );
        assert_eq!(
            kind("Kernel panic - not syncing: Fatal exception"),
            Some(Panic)
        );
        assert_eq!(
            kind("---[ end Kernel panic - not syncing: Fatal exception ]---"),
            None
        );
        assert_eq!(
            kind("INFO: task cat:77 blocked for more than 3 seconds."),
            Some(HungTask)
        );
        assert_eq!(
            kind("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
            Some(RcuStall)
        );
        assert_eq!(
            trigger("------------[ cut here ]------------"),
            Some(Trigger::CutHere)
        );
    }

    #[test]
    fn ordinary_boot_lines_are_not_triggers() {
        for l in [
            "Kernel command line: console=ttyS0 panic=-1",
            "PCI: MMCONFIG at [mem 0xb0000000-0xbfffffff] reserved as E820 entry; fail to add MMCONFIG information",
            "ACPI BIOS Error (bug): Could not resolve symbol",
            "i8042: Warning: Keylock active",
            "RAS: Correctable Errors collector initialized.",
        ] {
            assert_eq!(trigger(l), None, "{l}");
        }
    }

    #[test]
    fn normalising_drops_what_changes_between_runs() {
        assert_eq!(
            normalise("WARNING: CPU: 1 PID: 93 at /tmp/m/trigger.c:18 trigger_init+0x15/0x1000 [trigger]"),
            normalise("WARNING: CPU: 0 PID: 101 at /tmp/m/trigger.c:18 trigger_init+0x25/0x1000 [trigger]")
        );
        assert_eq!(
            normalise("CPU: 0 PID: 1 Comm: sh Tainted: G  W  6.1.0 #1"),
            "CPU: PID: Comm: sh"
        );
        assert_eq!(normalise("addr ffff888003a1b000 end"), "addr end");
        assert_eq!(
            normalise("kernel BUG at /root/.cache/work.uFF4Cx/module/trigger.c:52!"),
            normalise("kernel BUG at /root/.cache/work.Ab9xQ1/module/trigger.c:53!")
        );
        assert_eq!(normalise("at drivers/base/core.c:12 f"), "at core.c: f");
    }

    #[test]
    fn frames_skip_helpers_and_unreliable_entries() {
        assert_eq!(frame_function(" dump_stack_lvl+0x44/0x5c"), None);
        assert_eq!(frame_function(" ? __warn+0x7d/0xc0"), None);
        assert_eq!(
            frame_function(" trigger_init+0x15/0x1000 [trigger]"),
            Some("trigger_init")
        );
        assert_eq!(
            frame_function(" sysrq_handle_crash+0x24/0x30"),
            Some("sysrq_handle_crash")
        );
        assert_eq!(
            frame_function("[<c05a0b5c>] (sysrq_handle_crash) from [<c05a1234>] (x+0x1/0x2)"),
            Some("sysrq_handle_crash")
        );
        assert_eq!(frame_function("RIP: 0010:trigger_init+0x15/0x1000"), None);
    }
}
