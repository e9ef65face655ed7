//! A report's name as syzbot writes it: the head of the report, normalised, then ` in ` and
//! the guilty function (`KASAN: use-after-free Read in tcp_recvmsg`, `WARNING in
//! __queue_work`, `INFO: task hung in jbd2_journal_commit_transaction`). Where the format
//! needs a function and the report shows none, the head alone.
//!
//! The formats mirror syzkaller's `pkg/report/linux.go` (re-implemented, not copied).

use super::frames::{self, guilty, warning_stack, Part, Pick, StackFmt, CALL_TRACE, RIP};
use crate::result::IssueKind;
use regex::Regex;
use std::sync::OnceLock;

/// What a closed report is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub title: String,
    pub function: Option<String>,
}

const TITLE_MAX: usize = 120;

const CALL: StackFmt = StackFmt::new(&[Part::Line(CALL_TRACE), Part::Stack]);
const RIP_CALL: StackFmt = StackFmt::new(&[Part::Line(RIP), Part::Line(CALL_TRACE), Part::Stack]);
const RIP_ONLY: StackFmt = StackFmt::new(&[Part::Line(RIP)]);
const STALL: StackFmt = RIP_CALL.pick(Pick::Stall);

/// Name a report from its lines, the head first.
pub fn name(kind: IssueKind, lines: &[&str]) -> Named {
    let head = lines.first().map(|l| l.trim()).unwrap_or("");
    match kind {
        IssueKind::Panic => panic(head, lines),
        IssueKind::Kasan => kasan(head, lines),
        IssueKind::Kmsan => kmsan(head, lines),
        IssueKind::Kfence => kfence(head, lines),
        IssueKind::Kcsan => kcsan(head),
        IssueKind::Ubsan => ubsan(head, lines),
        IssueKind::SoftLockup => framed("BUG: soft lockup", guilty(lines, &STALL)),
        IssueKind::HardLockup => framed("hard LOCKUP", guilty(lines, &STALL)),
        IssueKind::RcuStall => rcu_stall(lines),
        IssueKind::HungTask => hung_task(head, lines),
        IssueKind::Oom => oom(head, lines),
        IssueKind::Memleak => memleak(head, lines),
        IssueKind::Lockdep => lockdep(head, lines),
        IssueKind::Warning => warning(head, lines),
        IssueKind::ErrorCode => plain(super::errcode::title(head)),
        IssueKind::UserFault => plain(super::userfault::title(head)),
        IssueKind::Pattern => plain(sanitize(head)),
        IssueKind::Bug | IssueKind::Oops | IssueKind::InvalidOpcode | IssueKind::Fault => {
            crash(head, lines)
        }
        IssueKind::Exception => exception(head, lines),
    }
}

fn plain(title: String) -> Named {
    Named {
        title,
        function: None,
    }
}

/// `<base> in <frame>`, or the base alone without a frame.
fn framed(base: &str, frame: Option<String>) -> Named {
    let title = match &frame {
        Some(f) => sanitize(&format!("{base} in {f}")),
        None => sanitize(base),
    };
    Named {
        title,
        function: frame,
    }
}

fn cap<'t>(pattern: &'static str, text: &'t str) -> Option<regex::Captures<'t>> {
    frames::re(pattern).captures(text)
}

fn group<'t>(c: &regex::Captures<'t>, i: usize) -> &'t str {
    c.get(i).map(|m| m.as_str()).unwrap_or("")
}

/// The first line after `after` (a line containing it) that matches `pattern`.
fn find_after<'t>(
    lines: &[&'t str],
    after: &str,
    pattern: &'static str,
) -> Option<regex::Captures<'t>> {
    let start = lines.iter().position(|l| l.contains(after))?;
    lines[start + 1..].iter().find_map(|l| cap(pattern, l))
}

fn panic(head: &str, lines: &[&str]) -> Named {
    let msg = head
        .split_once("Kernel panic - not syncing: ")
        .map(|(_, m)| m.trim())
        .unwrap_or(head);
    if let Some(c) = cap(
        r"^stack-protector: Kernel stack is corrupted in: {FUNC}",
        msg,
    ) {
        let f = group(&c, 1).to_string();
        return framed("kernel panic: stack is corrupted", Some(f));
    }
    if msg.starts_with("stack-protector:") {
        let f = guilty(lines, &CALL.skip(&["stack_chk"]));
        return framed("kernel panic: stack is corrupted", f);
    }
    if msg.starts_with("corrupted stack end") {
        let fmt = CALL.skip(&["schedule", "retint_kernel"]).pick(Pick::Stall);
        return framed("kernel panic: corrupted stack end", guilty(lines, &fmt));
    }
    if msg.starts_with("kernel stack overflow") {
        let fmt = CALL.skip(&["bad_stack"]).pick(Pick::Stall);
        return framed("kernel stack overflow", guilty(lines, &fmt));
    }
    // The title is the message alone (syzbot's); the function is still the trace's.
    let title = if msg.starts_with("Attempted to kill init!") {
        "kernel panic: Attempted to kill init!".to_string()
    } else if msg.starts_with("Couldn't open N_TTY ldisc") {
        "kernel panic: Couldn't open N_TTY ldisc".to_string()
    } else {
        sanitize(&format!("kernel panic: {msg}"))
    };
    Named {
        title,
        function: panic_frame(lines),
    }
}

/// The guilty frame of the panic's own trace: `panic()` dumps it right after the panic line
/// (`CPU:` and `Hardware name:` between). A panic that dumps none (`Fatal exception` after an
/// Oops) is not named by some later trace.
fn panic_frame(lines: &[&str]) -> Option<String> {
    const NEAR: usize = 8;
    if !lines.iter().take(NEAR).any(|l| frames::starts_trace(l)) {
        return None;
    }
    guilty(lines, &CALL)
}

fn kasan(head: &str, lines: &[&str]) -> Named {
    const SKIP: &[&str] = &["kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"];
    let Some(c) = cap(r"BUG: KASAN: ([a-z\-]+) (in|on address)", head) else {
        return plain(sanitize(&after_bug(head)));
    };
    let typ = group(&c, 1);
    if matches!(typ, "double-free" | "invalid-free") || head.contains("double-free or invalid-free")
    {
        let fmt = StackFmt::new(&[
            Part::Line(
                r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {FUNC}",
            ),
            Part::Line(CALL_TRACE),
            Part::Stack,
        ])
        .skip(&["slab_", "kfree", "vunmap", "vfree"]);
        return framed("KASAN: invalid-free", guilty(lines, &fmt));
    }
    let access = lines
        .iter()
        .find_map(|l| cap(r"(Read|Write) (?:of size|at addr) [0-9a-f]+", l))
        .map(|c| group(&c, 1).to_string());
    let Some(access) = access else {
        return plain(sanitize(&after_bug(head)));
    };
    if group(&c, 2) == "on address" {
        return plain(sanitize(&format!("KASAN: {typ} {access}")));
    }
    let fmt = StackFmt::new(&[
        Part::Line(r"BUG: KASAN: (?:[a-z\-]+) in {FUNC}"),
        Part::Line(CALL_TRACE),
        Part::Stack,
    ])
    .skip(SKIP);
    framed(&format!("KASAN: {typ} {access}"), guilty(lines, &fmt))
}

fn kmsan(head: &str, lines: &[&str]) -> Named {
    let Some(c) = cap(r"BUG: KMSAN: ([a-z\-]+) in {FUNC}", head) else {
        return plain(sanitize(&after_bug(head)));
    };
    let typ = group(&c, 1);
    let parts: &'static [Part] = &[
        Part::Stack,
        Part::Line(r"(Local variable .* created at:|Uninit was created at:)"),
        Part::Stack,
    ];
    let fmt = if typ == "kernel-usb-infoleak" {
        StackFmt::new(parts).skip(&[
            "alloc_skb",
            "usb_submit_urb",
            "usb_start_wait_urb",
            "usb_bulk_msg",
            "usb_interrupt_msg",
            "usb_control_msg",
        ])
    } else {
        StackFmt::new(parts).skip(&[
            "alloc_skb",
            "netlink_ack",
            "netlink_rcv_skb",
            "_encrypt$",
            "^(?:crypto|cipher|drbg|rng)_",
        ])
    };
    let frame = frames::extract(lines, &fmt).into_iter().next().flatten();
    framed(&format!("KMSAN: {typ}"), frame)
}

fn kfence(head: &str, lines: &[&str]) -> Named {
    let fmt = StackFmt::new(&[
        Part::Line(r"BUG: KFENCE: (?:[a-z\- ]+) in {FUNC}"),
        Part::Stack,
    ]);
    let base = if let Some(c) = cap(
        r"BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in",
        head,
    ) {
        format!("KFENCE: {} {}", group(&c, 1), group(&c, 2))
    } else if head.contains("BUG: KFENCE: invalid free in") {
        "KFENCE: invalid free".to_string()
    } else if let Some(c) = cap(r"BUG: KFENCE: invalid (read|write) in", head) {
        format!("KFENCE: invalid {}", group(&c, 1))
    } else if head.contains("BUG: KFENCE: memory corruption in") {
        "KFENCE: memory corruption".to_string()
    } else {
        return plain(sanitize(&after_bug(head)));
    };
    framed(&base, guilty(lines, &fmt))
}

fn kcsan(head: &str) -> Named {
    let title = sanitize(&after_bug(head));
    let function = head
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split([' ', '/']).find(|w| !w.is_empty()))
        .map(|f| frames::strip_suffix(f.split('+').next().unwrap_or(f)).to_string());
    Named { title, function }
}

fn ubsan(head: &str, lines: &[&str]) -> Named {
    let fmt = CALL.skip(&["ubsan", "overflow"]);
    if head.contains("UBSAN: Undefined behaviour in") {
        return framed("UBSAN: undefined-behaviour", guilty(lines, &fmt));
    }
    if let Some(c) = cap(r"UBSAN: (.*?) in", head) {
        let base = format!("UBSAN: {}", group(&c, 1));
        return framed(&base, guilty(lines, &fmt));
    }
    plain(sanitize(head))
}

fn rcu_stall(lines: &[&str]) -> Named {
    const FMT: StackFmt = StackFmt::new(&[
        Part::Line("apic_timer_interrupt"),
        Part::Line(RIP),
        Part::Stack,
    ])
    .or(&[
        Part::Line("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"),
        Part::Stack,
    ])
    .skip(&["apic_timer_interrupt", "rcu"])
    .pick(Pick::Stall);
    // A report without the timer interrupt frame: its registers and trace still name it.
    let frame = guilty(lines, &FMT).or_else(|| guilty(lines, &STALL.skip(&["rcu"])));
    framed("INFO: rcu detected stall", frame)
}

fn hung_task(head: &str, lines: &[&str]) -> Named {
    if head.contains("can't die") {
        return framed(
            "INFO: task can't die",
            guilty(lines, &CALL.skip(&["schedule"])),
        );
    }
    framed("INFO: task hung", guilty(lines, &CALL.pick(Pick::Hang)))
}

fn oom(head: &str, lines: &[&str]) -> Named {
    const FMT: StackFmt = CALL.skip(&[
        "oom",
        "out_of_memory",
        "alloc",
        "dump_header",
        "fault",
        "^folio_",
        "^filemap_",
    ]);
    let function = guilty(lines, &FMT);
    let title = match head.split_once(" invoked oom-killer") {
        Some((comm, _)) => sanitize(&format!("out of memory: {comm} invoked oom-killer")),
        None => sanitize(head.split(" total-vm").next().unwrap_or(head)),
    };
    Named { title, function }
}

fn memleak(head: &str, lines: &[&str]) -> Named {
    const FMT: StackFmt = StackFmt::new(&[
        Part::Line(r"backtrace(?: \(crc [[:xdigit:]]*\))?:"),
        Part::Stack,
    ])
    .skip(&[
        "kmemleak",
        "mmap",
        "kmem",
        "slab",
        "alloc",
        "create_object",
        "idr_get",
        "list_lru_init",
        "kasprintf",
        "kvasprintf",
        "pcpu_create",
        "strdup",
        "strndup",
        "memdup",
    ]);
    if head.starts_with("kmemleak:") {
        return plain(sanitize(head));
    }
    framed("memory leak", guilty(lines, &FMT))
}

const AT_FUNC: &str = r"at: (?:{PC} +)?{FUNC}";

fn lockdep(head: &str, lines: &[&str]) -> Named {
    if head.contains("possible circular locking dependency detected") {
        if head.starts_with("WARNING") {
            let fmt =
                StackFmt::new(&[Part::Line(AT_FUNC), Part::Line(AT_FUNC), Part::Stack]).skip(&[
                    "process_one_work",
                    "flush_workqueue",
                    "drain_workqueue",
                    "destroy_workqueue",
                ]);
            return framed("possible deadlock", guilty(lines, &fmt));
        }
        return report_func(
            "possible deadlock",
            lines,
            "is trying to acquire lock",
            AT_FUNC,
        );
    }
    if head.contains("possible recursive locking detected") {
        return report_func(
            "possible deadlock",
            lines,
            "is trying to acquire lock",
            AT_FUNC,
        );
    }
    if head.contains("possible irq lock inversion dependency detected") {
        return report_func(
            "possible deadlock",
            lines,
            "just changed the state of lock",
            AT_FUNC,
        );
    }
    if head.contains("lock order detected") {
        if head.starts_with("WARNING") {
            let fmt = StackFmt::new(&[Part::Line("which became (?:.*) at:"), Part::Stack]);
            return framed("possible deadlock", guilty(lines, &fmt));
        }
        return report_func("possible deadlock", lines, "is trying to acquire", AT_FUNC);
    }
    if head.contains("inconsistent lock state") {
        // The lock the report says is taken names it (the trace starts in lockdep).
        let named = report_func("inconsistent lock state", lines, "takes", AT_FUNC);
        if named.function.is_some() {
            return named;
        }
        return framed("inconsistent lock state", guilty(lines, &CALL));
    }
    if head.contains("suspicious RCU usage") {
        let base = if head.starts_with("WARNING") {
            "WARNING: suspicious RCU usage"
        } else {
            "INFO: suspicious RCU usage"
        };
        return framed(base, guilty(lines, &CALL.skip(&["rcu", "kmem", "slab"])));
    }
    if head.contains("trying to register non-static key") {
        let fmt = CALL.skip(&["stack", "lock", "IRQ"]);
        return framed(
            "INFO: trying to register non-static key",
            guilty(lines, &fmt),
        );
    }
    // 4.x kernels frame the head: `[ BUG: bad unlock balance detected! ]`.
    let prefix = if head.trim_start_matches("[ ").starts_with("BUG") {
        "BUG"
    } else {
        "WARNING"
    };
    if head.contains("bad unlock balance detected") {
        let fmt = StackFmt::new(&[
            Part::Line(r"{PC} +{FUNC}"),
            Part::Line(CALL_TRACE),
            Part::Stack,
        ]);
        return framed(
            &format!("{prefix}: bad unlock balance"),
            guilty(lines, &fmt),
        );
    }
    if head.contains("held lock freed") {
        let pat = if prefix == "BUG" {
            r"{PC} +{FUNC}"
        } else {
            r"at:(?: {PC})? +{FUNC}"
        };
        let f = lines[1.min(lines.len())..]
            .iter()
            .find_map(|l| cap(pat, l))
            .map(|c| group(&c, 1).to_string());
        return framed(&format!("{prefix}: held lock freed"), f);
    }
    if head.contains("still has locks held") {
        let pat = if prefix == "BUG" {
            r"{PC} +{FUNC}"
        } else {
            r"at: {FUNC}"
        };
        let f = lines[1.min(lines.len())..]
            .iter()
            .find_map(|l| cap(pat, l))
            .map(|c| group(&c, 1).to_string());
        return framed(&format!("{prefix}: still has locks held"), f);
    }
    if head.contains("lock held when returning to user space") {
        return report_func(
            &format!("{prefix}: lock held when returning to user space"),
            lines,
            "leaving the kernel with locks still held",
            AT_FUNC,
        );
    }
    if head.contains("Nested lock was not taken") {
        return framed(
            "WARNING: nested lock was not taken",
            guilty(lines, &warning_stack(&[])),
        );
    }
    if head.contains("Invalid wait context") || head.contains("kernel/locking/lockdep.c") {
        let fmt = if head.starts_with("WARNING") {
            warning_stack(&["lock_sock", "release_sock"])
        } else {
            CALL.skip(&["lock_sock", "release_sock"])
        };
        return framed("WARNING: locking bug", guilty(lines, &fmt));
    }
    plain(sanitize(
        head.trim_start_matches("[ ").trim_end_matches(" ]"),
    ))
}

/// `<base> in F`, F from the first `pattern` line after the line containing `after` (the
/// frame is named by the report itself, so nothing is skipped).
fn report_func(base: &str, lines: &[&str], after: &str, pattern: &'static str) -> Named {
    let f = find_after(lines, after, pattern).map(|c| group(&c, 1).to_string());
    framed(base, f)
}

fn warning(head: &str, lines: &[&str]) -> Named {
    let special: &[(&'static str, &str, &'static [&'static str])] = &[
        (
            r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)",
            "WARNING: ODEBUG bug",
            &[
                "debug_",
                "rcu",
                "hrtimer_",
                "timer_",
                "work_",
                "percpu_",
                "vunmap",
                "vfree",
                "__free_",
                "debug_check",
                "kobject_",
            ],
        ),
        (
            r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)",
            "WARNING: bad usercopy",
            &["usercopy", "__check"],
        ),
        (
            r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)",
            "WARNING: kobject bug",
            &["kobject_"],
        ),
        (
            r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)",
            "WARNING: proc registration bug",
            &["proc_"],
        ),
        (
            r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)",
            "WARNING: refcount bug",
            &["refcount", "kobject_"],
        ),
        (
            r"WARNING: .*mm/.*\.c.* k?.?malloc",
            "WARNING: kmalloc bug",
            &["kmalloc", "krealloc", "slab", "kmem"],
        ),
        (
            r"WARNING: .*mm/vmalloc.c.*__vmalloc_node",
            "WARNING: zero-size vmalloc",
            &[],
        ),
    ];
    for (pattern, base, skip) in special {
        if frames::re(pattern).is_match(head) {
            // The format's skip list is static: leak-free, each pattern compiled once.
            let fmt = warning_stack(skip);
            return framed(base, guilty(lines, &fmt));
        }
    }
    if head.contains(" usb_submit_urb") {
        let fmt = warning_stack(&[
            "usb_submit_urb",
            "usb_start_wait_urb",
            "usb_bulk_msg",
            "usb_interrupt_msg",
            "usb_control_msg",
        ]);
        return match guilty(lines, &fmt) {
            Some(f) => Named {
                title: sanitize(&format!("WARNING in {f}/usb_submit_urb")),
                function: Some(f),
            },
            None => plain("WARNING in usb_submit_urb".to_string()),
        };
    }
    // 6.19+ (`WARNING: fs/x.c:289 at f+0x1/0x2, CPU#0: comm/1`): the function that warns
    // is in the head already; the caller in the trace names the bug.
    // ... and `at 0x0` when the kernel could not name it: then the registers do.
    if frames::re(r"WARNING: {SRC} at 0x[0-9a-f]+, CPU#").is_match(head) {
        return framed("WARNING", guilty(lines, &warning_stack(&[])));
    }
    if frames::re(r"WARNING: {SRC} at ").is_match(head) {
        const FMT: StackFmt = StackFmt::new(&[Part::Line(CALL_TRACE), Part::Stack])
            .or(&[Part::Line(RIP), Part::Stack]);
        let frame = guilty(lines, &FMT).or_else(|| head_function(head));
        return framed("WARNING", frame);
    }
    let shaped = frames::re(r"WARNING: .* at {SRC} {FUNC}").is_match(head)
        || frames::re(r"WARNING: \[.*\] {SRC} at {FUNC}").is_match(head);
    if shaped {
        let frame = guilty(lines, &warning_stack(&[])).or_else(|| head_function(head));
        return framed("WARNING", frame);
    }
    if let Some(c) = cap(
        r"WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value",
        head,
    ) {
        return plain(format!(
            "WARNING: kernel stack regs has bad '{}' value",
            group(&c, 1)
        ));
    }
    if head.contains("WARNING: kernel stack frame pointer at") {
        return plain("WARNING: kernel stack frame pointer has bad value".to_string());
    }
    plain(sanitize(head))
}

/// The function a WARNING line names itself (`at file.c:1 foo+0x1/0x2`), for a report cut
/// before its registers.
fn head_function(head: &str) -> Option<String> {
    cap(r"(?:at|\]) {SRC} (?:at )?{FUNC}", head)
        .or_else(|| cap(r"{SRC} at {FUNC}", head))
        .map(|c| group(&c, 2).to_string())
        .filter(|f| !f.is_empty())
}

fn crash(head: &str, lines: &[&str]) -> Named {
    if head.starts_with("kernel BUG at ") {
        if head.contains("mm/usercopy.c") {
            let fmt = CALL.skip(&["usercopy", "__check"]);
            return framed("BUG: bad usercopy", guilty(lines, &fmt));
        }
        if head.contains("lib/list_debug.c") {
            return framed("BUG: corrupted list", guilty(lines, &CALL));
        }
        return framed("kernel BUG", guilty(lines, &RIP_CALL.skip(&["^skb_"])));
    }
    if let Some(rest) = head.strip_prefix("Kernel BUG") {
        return plain(sanitize(&format!("kernel BUG{rest}")));
    }
    if head.starts_with("BUG kmalloc-") && head.contains("Object already free") {
        return plain("BUG: Object already free".to_string());
    }
    if let Some(c) = cap(
        r"BUG: (?:unable to handle kernel paging request|unable to handle page fault for address|Unable to handle kernel data access)",
        head,
    ) {
        let _ = c;
        return framed(
            "BUG: unable to handle kernel paging request",
            guilty(lines, &RIP_CALL),
        );
    }
    if frames::re(
        r"BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|Kernel NULL pointer dereference)",
    )
    .is_match(head)
    {
        return framed(
            "BUG: unable to handle kernel NULL pointer dereference",
            guilty(lines, &RIP_CALL),
        );
    }
    if head.starts_with("BUG: unable to handle kernel")
        || head.starts_with("BUG: Unable to handle kernel")
    {
        return plain("BUG: unable to handle kernel".to_string());
    }
    if let Some(c) = cap(
        r"Unable to handle kernel (paging request|NULL pointer dereference|access to user memory)",
        head,
    ) {
        let base = format!("BUG: unable to handle kernel {}", group(&c, 1));
        return framed(&base, guilty(lines, &RIP_CALL));
    }
    if let Some(c) = cap(
        r"^IPv6: BUG: Address \S+ on device (\S+) is missing its host route",
        head,
    ) {
        let dev = group(&c, 1);
        return plain(format!(
            "BUG: Address IPV6ADDR on device {dev} is missing its host route."
        ));
    }
    if head.starts_with("BUG: ") {
        return bug(head, lines);
    }
    let t = head.strip_prefix("Oops: ").unwrap_or(head);
    if t.contains("general protection fault") {
        return framed("general protection fault", guilty(lines, &RIP_CALL));
    }
    if t.starts_with("divide error: ") || t.starts_with("divide_error: ") {
        return framed("divide error", guilty(lines, &RIP_ONLY));
    }
    if t.starts_with("stack segment: ") {
        return framed("stack segment fault", guilty(lines, &RIP_CALL));
    }
    if t.starts_with("double fault: ") {
        return framed("PANIC: double fault", guilty(lines, &RIP_ONLY));
    }
    if t.contains("invalid opcode:") {
        return framed("invalid opcode", guilty(lines, &RIP_ONLY));
    }
    if head.starts_with("Internal error:") {
        return framed("Internal error", guilty(lines, &RIP_CALL));
    }
    if head.starts_with("Unhandled fault") {
        return framed("Unhandled fault", guilty(lines, &RIP_CALL));
    }
    if head.starts_with("Alignment trap:") {
        return framed("Alignment trap", guilty(lines, &RIP_CALL));
    }
    plain(sanitize(head))
}

/// The many `BUG: ` reports that are not memory errors.
fn bug(head: &str, lines: &[&str]) -> Named {
    if let Some(c) = cap(
        r"BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|bad magic|wrong owner|wrong CPU|trylock failure on UP)",
        head,
    ) {
        let base = format!("BUG: {} {}", group(&c, 1), group(&c, 2));
        return framed(
            &base,
            guilty(lines, &CALL.skip(&["spin_", "_lock", "_unlock"])),
        );
    }
    if head.starts_with("BUG: scheduling while atomic") {
        let f = guilty(lines, &CALL.skip(&["schedule"]));
        return framed("BUG: scheduling while atomic", f);
    }
    if head.starts_with("BUG: workqueue lockup") {
        // The work item of the stalled pool's busy worker, else the first one in flight.
        let f = find_after(
            lines,
            "Showing backtraces of busy workers in stalled worker pools",
            r"Workqueue: \S+ ([a-zA-Z0-9_]+)",
        )
        .or_else(|| {
            lines
                .iter()
                .find_map(|l| cap(r"in-flight: [0-9]+(?:\(RESCUER\))?:([a-zA-Z0-9_]+)", l))
        })
        .map(|c| group(&c, 1).to_string());
        return framed("BUG: workqueue lockup", f);
    }
    for fixed in [
        "BUG: Bad rss-counter state",
        "BUG: non-zero nr_ptes on freeing mm",
        "BUG: non-zero nr_pmds on freeing mm",
        "BUG: Bad page map",
    ] {
        if head.starts_with(fixed) {
            return plain(fixed.to_string());
        }
    }
    if head.contains(" still in use") && head.starts_with("BUG: Dentry") {
        return plain("BUG: Dentry still in use in unmount".to_string());
    }
    if let Some(c) = cap(r"BUG: Bad page (state|cache)", head) {
        let fmt = StackFmt::new(&[Part::Line("page last allocated"), Part::Stack]).skip(&[
            "(free|put|get|update|release)_page",
            "free_unref",
            "^_*folio",
            "truncate_inode_pages",
            "page_frag_free",
            "alloc",
            "vmap",
            "page_owner",
        ]);
        return framed(
            &format!("BUG: Bad page {}", group(&c, 1)),
            guilty(lines, &fmt),
        );
    }
    if head.starts_with("BUG: sleeping function called from invalid context") {
        let f = guilty(lines, &CALL);
        return framed("BUG: sleeping function called from invalid context", f);
    }
    if let Some(c) = cap(r"BUG: using ([a-z_]+)\(\) in preemptible", head) {
        let fmt = CALL.skip(&[
            "dump_stack",
            "preemption",
            "preempt",
            "debug_",
            "processor_id",
            "this_cpu",
        ]);
        let base = format!("BUG: using {}() in preemptible code", group(&c, 1));
        return framed(&base, guilty(lines, &fmt));
    }
    if head.starts_with("BUG: workqueue leaked lock or atomic") {
        let f = lines
            .iter()
            .find_map(|l| cap(r"last function: ([a-zA-Z0-9_]+)", l))
            .map(|c| group(&c, 1).to_string());
        return framed("BUG: workqueue leaked lock or atomic", f);
    }
    if frames::re(r"BUG: .*stack guard page was hit at").is_match(head) {
        return framed("BUG: stack guard page was hit", guilty(lines, &STALL));
    }
    plain(sanitize(head))
}

fn exception(head: &str, lines: &[&str]) -> Named {
    if head.starts_with("PANIC: double fault") {
        return framed("PANIC: double fault", guilty(lines, &RIP_ONLY));
    }
    // A cut-here block with no more specific line: its message, and the trace's function.
    Named {
        title: sanitize(head),
        function: guilty(lines, &warning_stack(&[])),
    }
}

/// `BUG: KASAN: x` -> `KASAN: x` (syzkaller drops the `BUG: ` of sanitiser reports).
fn after_bug(head: &str) -> String {
    match head.find("BUG: ") {
        Some(i) => head[i + "BUG: ".len()..].to_string(),
        None => head.to_string(),
    }
}

/// syzkaller's title normalisation: addresses, IPs, line numbers, offsets, CPU numbers and
/// other numbers replaced, printable ASCII only, single spaces, at most 120 characters.
pub fn sanitize(title: &str) -> String {
    struct Rep {
        re: Regex,
        with: &'static str,
    }
    static REPS: OnceLock<Vec<Rep>> = OnceLock::new();
    let reps = REPS.get_or_init(|| {
        let r = |p: &str, with| Rep {
            re: Regex::new(p).expect("static regex"),
            with,
        };
        vec![
            r(r"syz-executor\.?[0-9]+((/|:)[0-9]+)?", "syz-executor"),
            r(r"syzkaller[0-9]+((/|:)[0-9]+)?", "syzkaller"),
            r(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}", "${1}ADDR"),
            r(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})", "IP"),
            r(r"(\.\w+)(:[0-9]+)+", "${1}:LINE"),
            r(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+", "${1}"),
            r(r"CPU#[0-9]+", "CPU"),
            r(r"(\W)(\d+)(\W|$)", "${1}NUM${3}"),
            r(r"(\d+){7,}", "NUM"),
        ]
    });
    let mut s = title.to_string();
    for rep in reps {
        // Matches may overlap (`0,1,2`): replace until nothing changes.
        for _ in 0..8 {
            let next = rep.re.replace_all(&s, rep.with).into_owned();
            if next == s {
                break;
            }
            s = next;
        }
    }
    tidy(&s)
}

/// Printable ASCII only, single spaces, at most 120 characters (no number replacement: the
/// titles of errno lines keep their errno).
pub fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(TITLE_MAX));
    let mut prev = ' ';
    for ch in s.chars().take(TITLE_MAX) {
        let ch = if ch == '\t' { ' ' } else { ch };
        if !(' '..='~').contains(&ch) || (ch == ' ' && prev == ' ') {
            continue;
        }
        out.push(ch);
        prev = ch;
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising_drops_what_changes_between_runs() {
        assert_eq!(
            sanitize("kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"),
            "kernel panic: VFS: Unable to mount root fs on unknown-block(NUM,NUM)"
        );
        assert_eq!(
            sanitize("WARNING: CPU: 1 PID: 93 at net/core/dev.c:123 foo+0x1/0x2"),
            "WARNING: CPU: NUM PID: NUM at net/core/dev.c:LINE foo"
        );
        assert_eq!(
            sanitize("BUG: x at ffff888003a1b000\tend"),
            "BUG: x at ADDR end"
        );
    }

    #[test]
    fn panics_are_named_by_their_message() {
        let n = name(
            IssueKind::Panic,
            &["Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"],
        );
        assert_eq!(n.title, "kernel panic: Attempted to kill init!");
        assert_eq!(n.function, None);
    }

    #[test]
    fn a_panic_keeps_its_title_and_takes_its_traces_function() {
        // x86_64 6.1, the test module's panic() (`x86_64-trigger-panic.log`).
        let lines = [
            "Kernel panic - not syncing: bootfarm_trigger: panic requested",
            "CPU: 0 PID: 84 Comm: insmod Tainted: G           OE      6.1.0-56-amd64 #1  Debian 6.1.192-2",
            "Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014",
            "Call Trace:",
            " <TASK>",
            " dump_stack_lvl+0x44/0x5c",
            " panic+0x118/0x2f4",
            " bootfarm_trigger_init+0xc6/0x1000 [bootfarm_trigger]",
            " ? 0xffffffffc05c1000",
            " do_one_initcall+0x59/0x220",
        ];
        let n = name(IssueKind::Panic, &lines);
        assert_eq!(n.title, "kernel panic: bootfarm_trigger: panic requested");
        assert_eq!(n.function.as_deref(), Some("bootfarm_trigger_init"));
        // arm64 6.12 and `Attempted to kill init!` (`arm64-panic-init-exit.log`): the title
        // stays syzbot's.
        let arm64 = [
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
            "CPU: 0 UID: 0 PID: 1 Comm: init Not tainted 6.12.107+deb13-arm64 #1  Debian 6.12.107-1",
            "Hardware name: linux,dummy-virt (DT)",
            "Call trace:",
            " dump_backtrace+0xd8/0x130",
            " show_stack+0x20/0x38",
            " dump_stack_lvl+0x60/0x80",
            " dump_stack+0x18/0x28",
            " panic+0x164/0x378",
            " do_exit+0xa2c/0xa38",
            " do_group_exit+0x3c/0xa0",
        ];
        let n = name(IssueKind::Panic, &arm64);
        assert_eq!(n.title, "kernel panic: Attempted to kill init!");
        assert_eq!(n.function.as_deref(), Some("do_exit"));
        // `Fatal exception` after an Oops dumps no trace of its own: a later one is not its.
        let mut late = vec!["Kernel panic - not syncing: Fatal exception"];
        late.extend(["Kernel Offset: disabled"; 10]);
        late.extend(["Call Trace:", " other_function+0x1/0x2"]);
        let n = name(IssueKind::Panic, &late);
        assert_eq!(n.title, "kernel panic: Fatal exception");
        assert_eq!(n.function, None);
    }

    #[test]
    fn lockdep_running_out_of_room_is_named_by_its_head() {
        for head in [
            "BUG: MAX_LOCK_DEPTH too low!",
            "BUG: MAX_STACK_TRACE_ENTRIES too low!",
            "BUG: MAX_LOCKDEP_CHAIN_HLOCKS too low!",
        ] {
            let n = name(
                IssueKind::Lockdep,
                &[head, "turning off the locking correctness validator."],
            );
            assert_eq!((n.title.as_str(), n.function), (head, None));
        }
    }

    #[test]
    fn a_format_without_its_frame_is_the_head_alone() {
        let n = name(
            IssueKind::Bug,
            &["BUG: scheduling while atomic: insmod/80/0x00000002"],
        );
        assert_eq!(n.title, "BUG: scheduling while atomic");
        assert_eq!(n.function, None);
    }
}
