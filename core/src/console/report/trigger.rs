//! Which kernel line starts a report and of what kind, and which lines belong to it.
//!
//! Firmware and bootloaders print `WARNING: Caches not enabled` (U-Boot), `WARNING: region 0:`
//! (TF-A) and the like before the kernel runs, without printk timestamps. So a trigger is
//! either *strict* — a shape only the kernel prints (`WARNING: CPU: 0 PID: 1 at`, `BUG: KASAN:`,
//! `Kernel panic - not syncing`) — and counts on any kernel-side line, or *loose* (any other
//! `WARNING:`, errno lines) and counts only on a line the kernel formatted (a timestamp).

use crate::result::IssueKind;

/// What a trigger line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A report of this kind starts here; following lines belong to it.
    Kind(IssueKind),
    /// `------------[ cut here ]------------`: the kind comes from the next lines.
    CutHere,
    /// A one-line issue (errno lines, user-space faults): it never opens a report.
    Line(IssueKind),
}

/// A trigger and whether its shape is the kernel's own (counts without a timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub trigger: Trigger,
    pub strict: bool,
}

/// Lockdep report heads (after `WARNING: ` or `BUG: `, or in `[ INFO: ... ]` on old kernels).
const LOCKDEP_HEADS: &[&str] = &[
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "suspicious RCU usage",
    "bad unlock balance detected",
    "held lock freed",
    "lock held when returning to user space",
    "possible irq lock inversion dependency detected",
    "lock order detected",
    "Nested lock was not taken",
    "Invalid wait context",
    "bad contention detected",
    "trying to register non-static key",
    "looking up invalid subclass",
    // lockdep running out of room (`BUG: MAX_LOCKDEP_KEYS too low!`, `..._ENTRIES`,
    // `..._CHAINS`, `..._CHAIN_HLOCKS`, and the two below): it turns itself off.
    "MAX_LOCKDEP",
    "MAX_LOCK_DEPTH too low",
    "MAX_STACK_TRACE_ENTRIES too low",
    "lock held at task exit time",
    "still has locks held",
];

fn lockdep_head(rest: &str) -> bool {
    LOCKDEP_HEADS.iter().any(|h| rest.contains(h))
}

/// `WARNING:` lines the kernel prints that are not problems (from syzkaller's ignore list).
const BENIGN_WARNINGS: &[&str] = &[
    "WARNING: /etc/ssh/moduli does not exist",
    "WARNING: workqueue cpumask: online intersect > possible intersect",
    "WARNING: The mand mount option",
    "WARNING: the mand mount option",
    "WARNING: Unsupported flag value",
    "WARNING: Unprivileged eBPF is enabled",
    "WARNING: kernel not compiled with CPU_SRSO",
    "for mitigation options",
    "missed to adjust virtual screen size",
    "uses deprecated v2 capabilities",
    "uses wireless extensions",
];

/// Classify a stripped kernel line. Only called when the prefilter saw a trigger literal, so
/// this can afford plain string searches. Order matters: the more specific report wins.
pub fn trigger(text: &str) -> Option<Found> {
    use IssueKind::*;
    let t = text.trim_start();
    let strict = |k| {
        Some(Found {
            trigger: Trigger::Kind(k),
            strict: true,
        })
    };
    let loose = |trigger| {
        Some(Found {
            trigger,
            strict: false,
        })
    };
    if t.contains("Kernel panic - not syncing") {
        // The closing `---[ end Kernel panic - not syncing: ... ]---` repeats it.
        return if t.starts_with("---[ end") {
            None
        } else {
            strict(Panic)
        };
    }
    if t.contains("[ cut here ]") || t.starts_with("8<--- cut here") {
        return Some(Found {
            trigger: Trigger::CutHere,
            strict: true,
        });
    }
    // A user-space process the kernel reports on: never a kernel fault.
    if super::userfault::is_user_fault(t) {
        return loose(Trigger::Line(UserFault));
    }
    if t.contains("BUG: KASAN:") {
        return strict(Kasan);
    }
    if t.contains("BUG: KFENCE:") {
        return strict(Kfence);
    }
    if t.contains("BUG: KCSAN:") {
        return strict(Kcsan);
    }
    if t.contains("BUG: KMSAN:") {
        return strict(Kmsan);
    }
    if t.starts_with("UBSAN:") {
        return strict(Ubsan);
    }
    if t.contains("BUG: soft lockup") {
        return strict(SoftLockup);
    }
    if t.contains("hard LOCKUP") {
        return strict(HardLockup);
    }
    if (t.starts_with("rcu:") || t.starts_with("INFO: rcu"))
        && (t.contains("detected stall") || t.contains("detected expedited stall"))
    {
        return strict(RcuStall);
    }
    if t.starts_with("INFO: task ")
        && t.contains(" for more than ")
        && (t.contains(" blocked ") || t.contains("can't die"))
    {
        return strict(HungTask);
    }
    if t.contains(" invoked oom-killer:")
        || t.starts_with("Out of memory: Kill")
        || t.starts_with("Memory cgroup out of memory")
    {
        return strict(Oom);
    }
    if t.starts_with("Out of memory") {
        return loose(Trigger::Kind(Oom));
    }
    if t.starts_with("BUG: memory leak") {
        // syzkaller's own marker before kmemleak's `unreferenced object` report (the report).
        return None;
    }
    if t.starts_with("unreferenced object 0x")
        || (t.starts_with("kmemleak: ") && t.contains("new suspected memory leak"))
    {
        return strict(Memleak);
    }
    if let Some(rest) = t
        .strip_prefix("WARNING: ")
        .or_else(|| t.strip_prefix("BUG: "))
        .or_else(|| t.strip_prefix("INFO: "))
        .or_else(|| t.strip_prefix("[ INFO: "))
        .or_else(|| t.strip_prefix("[ BUG: "))
    {
        if lockdep_head(rest) {
            return strict(Lockdep);
        }
        if t.starts_with("WARNING: ") && rest.contains("kernel/locking/lockdep.c") {
            return strict(Lockdep);
        }
    }
    if t.starts_with("kernel BUG at ") || t.starts_with("Kernel BUG") {
        return strict(Bug);
    }
    if t.contains("general protection fault") {
        return strict(Fault);
    }
    if t.contains("invalid opcode:") {
        return strict(InvalidOpcode);
    }
    if is_x86_exception(t) {
        return strict(Oops);
    }
    if t.starts_with("PANIC: double fault") {
        // An Oops line (`double fault: 0000 [#1]`) usually follows and makes it an oops.
        return strict(Exception);
    }
    if t.starts_with("BUG: kernel NULL pointer dereference")
        || t.starts_with("BUG: Kernel NULL pointer dereference")
        || t.starts_with("BUG: unable to handle")
        || t.starts_with("BUG: Unable to handle")
        || t.starts_with("Unable to handle kernel")
        || t.starts_with("Oops:")
        || t.starts_with("Oops [#")
        || t.starts_with("Oops - ")
        || t.starts_with("Oops#")
        || t.starts_with("Internal error: Oops")
    {
        return strict(Oops);
    }
    if t.starts_with("Internal error: ") && t.contains("[#") {
        return strict(Oops);
    }
    if t.starts_with("Unhandled fault") || t.starts_with("Alignment trap:") {
        return strict(Fault);
    }
    if t.starts_with("WARNING:") {
        if BENIGN_WARNINGS.iter().any(|b| t.contains(b)) {
            return None;
        }
        return if is_kernel_warning(t) {
            strict(Warning)
        } else {
            loose(Trigger::Kind(Warning))
        };
    }
    if t.starts_with("BUG: ") || t.starts_with("BUG kmalloc-") {
        return strict(Bug);
    }
    if t.starts_with("IPv6: BUG: ") {
        // addrconf's own `BUG:` (an address without its host route), behind its prefix.
        return loose(Trigger::Kind(Bug));
    }
    if super::errcode::is_error_code(t) {
        return loose(Trigger::Line(ErrorCode));
    }
    None
}

/// A panic the kernel prints in the middle of the report that caused it: `panic_on_warn`
/// panics before the warning's trace (4.x kernels print the trace after the panic line).
pub fn panic_mid_report(text: &str) -> bool {
    text.contains("panic_on_warn set")
}

/// `divide error: 0000 [#1]`, `Oops: stack segment: 0000 [#1]`: x86 traps that die.
fn is_x86_exception(t: &str) -> bool {
    let t = t.strip_prefix("Oops: ").unwrap_or(t);
    [
        "divide error: ",
        "divide_error: ",
        "stack segment: ",
        "double fault: ",
    ]
    .iter()
    .any(|p| t.starts_with(p))
}

/// The kernel's own `WARNING:` shapes: `WARNING: CPU: 0 PID: 1 at f.c:1 fn+0x1/0x2`,
/// `WARNING: at f.c:1 fn()` (old), `WARNING: f.c:1 at fn+0x1/0x2, CPU#0: comm/1` (6.19+).
fn is_kernel_warning(t: &str) -> bool {
    let rest = &t["WARNING:".len()..];
    let rest = rest.trim_start();
    if rest.starts_with("CPU: ") || rest.starts_with("at ") || rest.starts_with("[") {
        return true;
    }
    if rest.starts_with("kernel stack ") {
        return true;
    }
    // A source position first: `drivers/x.c:12 at`.
    let first = rest.split(' ').next().unwrap_or("");
    let src = first.rsplit_once(':').is_some_and(|(file, line)| {
        file.contains('.') && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit())
    });
    src && rest[first.len()..].starts_with(" at ")
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
        Exception => matches!(next, Oops | Fault),
        Oom => next == Oom,
        RcuStall => next == RcuStall,
        _ => false,
    }
}

/// Whether absorbing `next` changes the report's kind (`PANIC: double fault` then its Oops).
pub fn upgrades(open: IssueKind, next: IssueKind) -> bool {
    open == IssueKind::Exception && next == IssueKind::Oops
}

/// How many lines after its first one a report may still collect lines and absorb triggers.
pub fn window(kind: IssueKind, head: &str) -> u32 {
    match kind {
        // The workqueue dump lists every pool before the stalled pool's busy workers.
        IssueKind::Bug if head.starts_with("BUG: workqueue lockup") => 400,
        // The OOM report dumps memory state and the task list before it names its victim.
        IssueKind::Oom => 2000,
        IssueKind::Kasan | IssueKind::Kfence | IssueKind::Kcsan | IssueKind::Kmsan => 200,
        // Lockdep prints the lock chains, the held locks and then the trace.
        IssueKind::Lockdep => 250,
        _ => 120,
    }
}

/// Whether this excerpt line ends the report.
pub fn ends_report(kind: IssueKind, cut_here: bool, framed: bool, text: &str) -> bool {
    let t = text.trim();
    if t.starts_with("---[ end trace") || t.starts_with("---[ end Kernel panic") {
        return true;
    }
    if framed && kind != IssueKind::Lockdep && t.len() >= 20 && t.bytes().all(|b| b == b'=') {
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

#[cfg(test)]
mod tests {
    use super::*;
    use IssueKind::*;

    fn kind(s: &str) -> Option<IssueKind> {
        match trigger(s)?.trigger {
            Trigger::Kind(k) | Trigger::Line(k) => Some(k),
            Trigger::CutHere => None,
        }
    }

    fn strict(s: &str) -> bool {
        trigger(s).is_some_and(|f| f.strict)
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
        assert_eq!(kind("BUG: KMSAN: uninit-value in f+0x1/0x2"), Some(Kmsan));
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
            kind("INFO: task udevd:5612 blocked in I/O wait for more than 143 seconds."),
            Some(HungTask)
        );
        assert_eq!(
            kind("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
            Some(RcuStall)
        );
        assert_eq!(
            trigger("------------[ cut here ]------------").map(|f| f.trigger),
            Some(Trigger::CutHere)
        );
    }

    #[test]
    fn lockdep_memleak_and_x86_exceptions_have_kinds() {
        for l in [
            "WARNING: possible circular locking dependency detected",
            "WARNING: possible recursive locking detected",
            "WARNING: inconsistent lock state",
            "WARNING: suspicious RCU usage",
            "WARNING: bad unlock balance detected!",
            "BUG: held lock freed!",
            "BUG: syz-executor/123 still has locks held!",
            "[ INFO: possible circular locking dependency detected ]",
            "INFO: trying to register non-static key.",
            "WARNING: CPU: 1 PID: 9 at kernel/locking/lockdep.c:4893 __lock_acquire+0x1/0x2",
            "BUG: MAX_LOCK_DEPTH too low!",
            "BUG: MAX_STACK_TRACE_ENTRIES too low!",
            "BUG: MAX_LOCKDEP_KEYS too low!",
            "BUG: MAX_LOCKDEP_ENTRIES too low!",
            "BUG: MAX_LOCKDEP_CHAINS too low!",
            "BUG: MAX_LOCKDEP_CHAIN_HLOCKS too low!",
        ] {
            assert_eq!(kind(l), Some(Lockdep), "{l}");
            assert!(strict(l), "{l}");
        }
        assert_eq!(
            kind("unreferenced object 0xffff888012345678 (size 32):"),
            Some(Memleak)
        );
        assert_eq!(
            kind("divide error: 0000 [#1] PREEMPT SMP KASAN"),
            Some(Oops)
        );
        assert_eq!(kind("Oops: divide error: 0000 [#1] SMP"), Some(Oops));
        assert_eq!(kind("stack segment: 0000 [#1] SMP KASAN"), Some(Oops));
        assert_eq!(
            kind("PANIC: double fault, error_code: 0x0"),
            Some(Exception)
        );
        assert!(upgrades(Exception, Oops));
    }

    #[test]
    fn user_space_traps_are_never_kernel_faults() {
        for l in [
            "traps: a.out[123] general protection fault ip:401136 sp:7ffd8 error:0 in a.out[401000+1000]",
            "a.out[77]: segfault at 0 ip 0000000000401136 sp 00007ffd error 6 in a.out[401000+1000] likely on CPU 0",
            "traps: sh[1] trap invalid opcode ip:4011 sp:7ff error:0 in sh[400000+1000]",
        ] {
            assert_eq!(kind(l), Some(UserFault), "{l}");
        }
    }

    #[test]
    fn firmware_warnings_are_not_kernel_shapes() {
        for l in [
            "WARNING: Caches not enabled",
            "WARNING: can't convert coreboot GPIOs, 'lid' won't be resolved",
            "WARNING: RO_VPD is uninitialized",
            "WARNING: region 0: 0x0-0x1000 overlaps",
        ] {
            assert_eq!(kind(l), Some(Warning), "{l}");
            assert!(!strict(l), "{l}");
        }
        for l in [
            "WARNING: CPU: 0 PID: 1 at net/core/dev.c:123 foo+0x1/0x2",
            "WARNING: at fs/x.c:12 foo()",
            "WARNING: kernel/foo.c:12 at foo+0x1/0x2, CPU#0: swapper/0/1",
        ] {
            assert!(strict(l), "{l}");
        }
        assert_eq!(
            trigger("WARNING: Unprivileged eBPF is enabled with eIBRS on"),
            None
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
}
