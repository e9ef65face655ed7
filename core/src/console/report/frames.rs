//! The guilty frame of a report, following syzkaller's `pkg/report` rules: a report format
//! names the *parts* to walk through in order (a line that may name a function, such as
//! `RIP: 0010:foo+0x1/0x2` or `pc : foo+0x1/0x2`, or a stack trace to parse), and the first
//! function found that is not reporting machinery, a library routine or entry code wins.
//!
//! Runs once per report, when it closes, over its bounded lines: the regexes here never see
//! ordinary console lines.

use regex::Regex;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A program address: `[<ffffffff81234567>]`, `[<0x1234>]`, `[ffff8000]`.
pub const PC: &str = r"\[<?(?:0x)?[0-9a-f]+>?\]";
/// A function name followed by its offset or a compiler suffix (`foo+0x1/0x2`, `foo.isra.0+`).
pub const FUNC: &str = r"([a-zA-Z0-9_]+)(?:\.|\+)";
/// A source position: `net/core/dev.c:123`.
pub const SRC: &str = r"([a-zA-Z0-9\-_/.]+\.[a-z]+:[0-9]+)";

/// Expand the `{PC}`, `{FUNC}` and `{SRC}` placeholders of a pattern.
pub fn expand(pattern: &str) -> String {
    pattern
        .replace("{PC}", PC)
        .replace("{FUNC}", FUNC)
        .replace("{SRC}", SRC)
}

/// A compiled pattern, cached: the patterns are static, so the cache is bounded.
pub fn re(pattern: &'static str) -> &'static Regex {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match cache.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(pattern).or_insert_with(|| {
        let compiled = Regex::new(&expand(pattern)).expect("static pattern");
        Box::leak(Box::new(compiled))
    })
}

/// The line naming the faulting function: x86 `RIP:`/`IP:`, powerpc `NIP:`, arm64 `pc :`,
/// riscv `epc :`, arm `PC is at`.
pub const RIP: &str = r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{PC} +){0,2}{FUNC}|(?:[0-9]+:)?0x[0-9a-f]+|(?:[0-9]+:)?{PC} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))";
/// The start of the call trace.
pub const CALL_TRACE: &str = r"(?:Call (?:T|t)race:)|(?:Backtrace:)";

/// One step of a format's walk through the report.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// Skip to the next line matching this pattern; its captures are candidate frames.
    Line(&'static str),
    /// Parse a stack trace from here to the next trace start.
    Stack,
}

/// How the guilty frame is chosen among the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    First,
    /// Stalls loop across functions: take the frame before the first dispatching one.
    Stall,
    /// Hung tasks wait in generic code: group the RCU and rtnl waits, skip the waiting.
    Hang,
}

#[derive(Debug, Clone, Copy)]
pub struct StackFmt {
    pub parts: &'static [Part],
    /// Tried when `parts` finds no frame.
    pub parts2: &'static [Part],
    /// Functions skipped by this format on top of the common list (regexes).
    pub skip: &'static [&'static str],
    pub pick: Pick,
}

impl StackFmt {
    pub const fn new(parts: &'static [Part]) -> Self {
        StackFmt {
            parts,
            parts2: &[],
            skip: &[],
            pick: Pick::First,
        }
    }
    pub const fn or(mut self, parts2: &'static [Part]) -> Self {
        self.parts2 = parts2;
        self
    }
    pub const fn skip(mut self, skip: &'static [&'static str]) -> Self {
        self.skip = skip;
        self
    }
    pub const fn pick(mut self, pick: Pick) -> Self {
        self.pick = pick;
        self
    }
}

/// A WARNING's frame: the faulting function of its registers, else the call trace.
pub const fn warning_stack(skip: &'static [&'static str]) -> StackFmt {
    StackFmt::new(&[Part::Line(WARNING_RIP), Part::Stack])
        .or(&[Part::Line(CALL_TRACE), Part::Stack])
        .skip(skip)
}
const WARNING_RIP: &str = r"(?:(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{PC} +){0,2}{FUNC}|(?:[0-9]+:)?0x[0-9a-f]+|(?:[0-9]+:)?{PC} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))|--- interrupt: [0-9]+ at {FUNC})";

/// Reporting machinery, library routines, locking and allocation helpers, entry code: never
/// the guilty frame (syzkaller's `skipPatterns`, matched anywhere in the name unless anchored).
const SKIP: &[&str] = &[
    "__sanitizer",
    "__asan",
    "kasan",
    "hwasan",
    "__msan",
    "kmsan",
    "kcsan_setup_watchpoint",
    "check_memory_region",
    "check_heap_object",
    "check_object",
    "read_word_at_a_time",
    "(read|write)_once_.*nocheck",
    "print_address_description",
    "panic",
    "invalid_op",
    "report_bug",
    "fixup_bug",
    "print_report",
    "print_usage_bug",
    "do_error",
    "_trap$|do_trap",
    "show_stack",
    "dump_stack",
    "walk_stack",
    "dump_backtrace",
    "warn_slowpath",
    "warn_alloc",
    "warn_bogus",
    "__warn",
    "alloc_page",
    "k?v?(?:m|z|c)alloc",
    "krealloc",
    "kmem_cache",
    "allocate_slab",
    "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)",
    "filemap_alloc_folio",
    "__filemap_get_folio",
    "find_or_create_page",
    "do_read_cache_folio",
    "read_cache_page",
    "pagecache_get_page",
    "grab_cache_page_write_begin",
    "slab_",
    "debug_object",
    "timer_is_static_object",
    "work_is_static_object",
    "__might_fault",
    "print_unlock",
    "imbalance_bug",
    "lockdep",
    "bh_enable",
    "bh_disable",
    "perf_trace",
    "lock_acquire",
    "lock_release",
    "lock_class",
    "mark_lock",
    "(reacquire|mark)_held_locks",
    "raw_spin_rq",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "read_lock",
    "read_trylock",
    "write_lock",
    "write_trylock",
    "read_unlock",
    "write_unlock",
    "^down$",
    "down_read",
    "down_write",
    "down_read_trylock",
    "down_write_trylock",
    "down_trylock",
    "up_read",
    "up_write",
    "^mutex_",
    "^__mutex_",
    "^rt_mutex_",
    "owner_on_cpu",
    "osq_lock",
    "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit",
    "__wake_up",
    "^refcount_",
    "^kref_",
    "ref_tracker",
    "seqprop_assert",
    "memcpy",
    "memcmp",
    "memset",
    "memchr",
    "memmove",
    "memdup",
    "strcmp",
    "strncmp",
    "strcpy",
    "strlcpy",
    "strncpy",
    "strscpy",
    "strlen",
    "strstr",
    "strnstr",
    "strnlen",
    "strchr",
    "strdup",
    "strndup",
    "copy_to_user",
    "copy_from_user",
    "copy_to_iter",
    "copy_from_iter",
    "copy_page_to_iter",
    "copy_page_from_iter",
    "copy_folio_to_iter",
    "^copyin$",
    "^copyout$",
    "put_user",
    "get_user",
    "might_fault",
    "might_sleep",
    "list_add",
    "list_del",
    "list_replace",
    "list_move",
    "list_splice",
    "^rb_",
    "^__rb_",
    "_indirect_thunk_",
    "string",
    "pointer",
    "snprintf",
    "scnprintf",
    "kasprintf",
    "kvasprintf",
    "printk",
    "va_format",
    "dev_info",
    "dev_notice",
    "dev_warn",
    "dev_err",
    "dev_alert",
    "dev_crit",
    "dev_emerg",
    "program_check_exception",
    "program_check_common",
    "del_timer",
    "flush_work",
    "__cancel_work_timer",
    "cancel_work_sync",
    "try_to_grab_pending",
    "flush_workqueue",
    "drain_workqueue",
    "destroy_workqueue",
    "queue_work",
    "finish_wait",
    "kthread_stop",
    "kobject_",
    "add_uevent_var",
    "get_device_parent",
    "device_add",
    "device_del",
    "device_unregister",
    "device_destroy",
    "device_release",
    "devres_release_all",
    "hwrng_unregister",
    "i2c_del_adapter",
    "__unregister_client",
    "device_for_each_child",
    "rollback_registered",
    "unregister_netdev",
    "sysfs_remove",
    "device_remove_file",
    "tty_unregister_device",
    "dummy_urb_enqueue",
    "usb_kill_urb",
    "usb_kill_anchored_urbs",
    "usb_control_msg",
    "usb_hcd_submit_urb",
    "usb_submit_urb",
    "^complete$",
    "wait_for_completion",
    "^kv?free$",
    "kfree_skb",
    "readb$",
    "readw$",
    "readl$",
    "readq$",
    "writeb$",
    "writew$",
    "writel$",
    "writeq$",
    "logic_in",
    "logic_out",
    "^crc\\d+",
    "crc_itu_t",
    "__might_resched",
    "assertfail",
    "^iput$",
    "^iput_final$",
    "^ihold$",
    "hex_dump_to_buffer",
    "print_hex_dump",
    "^klist_",
    "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page",
    "stack_trace_consume_entry",
    "arch_stack_walk",
    "stack_trace_save",
    "insert_work",
    "__queue_delayed_work",
    "queue_delayed_work_on",
    "ida_free",
    // arm64 exception paths.
    "do_(kernel|translation)_fault",
    "do_mem_abort",
    "el1_abort",
    "el1h_64_sync(?:_handler)?",
    // arm64 BUG/WARN traps (`brk`): the debug exception path above the warning function.
    "^(?:bug|brk|bug_brk|kasan_brk|ubsan_brk)_handler$",
    "call_break_hook",
    "do_debug_exception",
    "^el1_dbg$",
    "^early_brk64$",
    "print_tainted",
    "xas_(?:start|load|find)",
    "find_lock_entries",
    "truncate_inode_pages_range",
    "truncate_cleanup_folio",
    "__phys_addr",
    "__fortify_report",
    "cleanup_srcu_struct",
    "rhashtable_lookup",
    "extract_(user|iter)_to_sg",
    "drop_nlink",
    "^get_taint$",
    "^put_device$",
    "lock_timer_base",
    "__timer_delete_sync",
    "sk_stop_timer_sync",
    "__mod_timer",
    "fast_dput",
    "dput",
    // arm's unwinder heads every trace (`unwind_backtrace from show_stack+0x10/0x14`).
    "^unwind_backtrace$",
];

/// Entry code: the syscall, exception and interrupt entry and exit paths of x86 and arm64,
/// and the first frame of every kernel thread. Never the guilty frame while the trace shows
/// another; a trace of nothing else (a `scheduling while atomic` on the way back to user
/// space) is named by its first entry frame, as syzbot does. Kept apart from `SKIP` because
/// stalls anchor on some of them (`do_syscall_64`, `invoke_syscall`, `ret_from_fork`).
const ENTRY: &[&str] = &[
    "^do_syscall_64$",
    "^entry_SYSCALL_64",
    "^asm_exc_",
    "^exc_",
    "^irqentry_",
    "^exit_to_user_mode",
    "^syscall_exit_to_user_mode",
    "^(?:do_)?el0_svc",
    "^el0t_64_sync",
    "^invoke_syscall$",
    "^ret_from_fork",
];

/// Syscall wrappers differ between arches and kernels: `__x64_sys_ioctl`, `__arm64_sys_ioctl`.
const STRIP_PREFIXES: &[&str] = &[
    "SYSC_",
    "SyS_",
    "sys_",
    "__x64_",
    "__ia32_",
    "__arm64_",
    "____sys_",
    "___sys_",
    "__sys_",
    "__se_",
    "__se_sys_",
    "__do_sys_",
    "compat_SYSC_",
    "compat_SyS_",
    "ksys_",
];

fn skip_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&SKIP.join("|")).expect("static skip list"))
}

fn entry_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&ENTRY.join("|")).expect("static entry list"))
}

/// Whether a frame is entry code (see `ENTRY`).
pub fn is_entry(name: &str) -> bool {
    entry_re().is_match(name)
}

fn stack_start(line: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(concat!(
            r"Call (?:T|t)race|Allocated:|Allocated by task [0-9]+:|Freed:|Freed by task [0-9]+:",
            r"|[^k] backtrace(?: \(crc [[:xdigit:]]*\))?:|Backtrace:|Uninit was stored to memory at",
            r"|status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}",
        ))
        .expect("static regex")
    });
    // ` backtrace:` needs the character before it; a line may start with it.
    re.is_match(line) || (line.starts_with("backtrace") && re.is_match(&format!(" {line}")))
}

/// The line a call trace starts after (`Call Trace:`, arm64's `Call trace:`, arm's
/// `Backtrace:`).
pub fn starts_trace(line: &str) -> bool {
    line.contains("Call Trace:") || line.contains("Call trace:") || line.contains("Backtrace:")
}

/// A trace line's functions: `foo+0x1/0x2`, `[<ffff>] foo+0x1/0x2`, arm's
/// `[<c0>] (foo) from [<c0>] (bar+0x1/0x2)` and `foo from bar+0x1/0x2`.
fn frame_names(line: &str) -> Vec<&str> {
    static RES: OnceLock<[Regex; 3]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        let r = |p: &str| Regex::new(&expand(p)).expect("static regex");
        [
            r(r"^ *(?:{PC} ){0,2}{FUNC}"),
            r(r"^ *{PC} \(([a-zA-Z0-9_.]+)\) from {PC} \({FUNC}"),
            r(r"^ *([a-zA-Z0-9_.]+) from {FUNC}"),
        ]
    });
    for re in res {
        if let Some(c) = re.captures(line) {
            return c.iter().skip(1).flatten().map(|m| m.as_str()).collect();
        }
    }
    Vec::new()
}

/// `foo.isra.0` and `foo.cold` are `foo`.
pub fn strip_suffix(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The shortest name left after removing a syscall wrapper prefix.
pub fn strip_prefix(name: &str) -> &str {
    STRIP_PREFIXES
        .iter()
        .filter_map(|p| name.strip_prefix(p))
        .filter(|s| !s.is_empty())
        .min_by_key(|s| s.len())
        .unwrap_or(name)
}

/// Unreliable `? foo+0x1/0x2` entries are guesses of the unwinder: never part of a trace.
pub fn questionable(line: &str) -> bool {
    if line.contains("<EOI>") {
        return false;
    }
    let t = line.trim_start();
    t.starts_with("? ") || (t.starts_with('[') && t.contains("] ? "))
}

struct Walk<'a> {
    skip: Vec<&'static Regex>,
    lines: std::slice::Iter<'a, &'a str>,
}

impl Walk<'_> {
    fn skipped(&self, name: &str) -> bool {
        skip_re().is_match(name) || self.skip.iter().any(|r| r.is_match(name))
    }

    fn push(&self, frames: &mut Vec<String>, names: Vec<&str>) {
        for n in names {
            let n = strip_suffix(n);
            if !n.is_empty() && !self.skipped(n) {
                frames.push(n.to_string());
            }
        }
    }
}

fn captures<'t>(re: &Regex, line: &'t str) -> Option<Vec<&'t str>> {
    let c = re.captures(line)?;
    Some(c.iter().skip(1).flatten().map(|m| m.as_str()).collect())
}

/// Walk `parts` over the report lines: the guilty frame of each stack, `None` where a stack
/// gave none.
fn walk(lines: &[&str], parts: &[Part], fmt: &StackFmt) -> (Vec<Option<String>>, bool) {
    let mut w = Walk {
        skip: fmt.skip.iter().map(|p| re(p)).collect(),
        lines: lines.iter(),
    };
    let mut frames: Vec<String> = Vec::new();
    let mut results = Vec::new();
    let mut ok = true;
    let mut stacks = 0;
    let mut i = 0;
    loop {
        if i == parts.len() || (matches!(parts[i], Part::Stack) && stacks > 0) {
            let key = pick(fmt.pick, &frames);
            ok &= key.is_some();
            results.push(key);
            frames.clear();
        }
        if i == parts.len() {
            break;
        }
        match parts[i] {
            Part::Stack => {
                stacks += 1;
                let next = parts.get(i + 1).and_then(|p| match p {
                    Part::Line(pat) => Some(re(pat)),
                    Part::Stack => None,
                });
                while let Some(line) = w.lines.next() {
                    if stack_start(line) {
                        // A `Call Trace:` before the first frame introduces this very stack
                        // (old KMSAN reports put it between the head and the frames).
                        if frames.is_empty() && starts_trace(line) {
                            continue;
                        }
                        break;
                    }
                    if let Some(names) = next.and_then(|r| captures(r, line)) {
                        w.push(&mut frames, names);
                        i += 1;
                        break;
                    }
                    w.push(&mut frames, frame_names(line));
                }
            }
            Part::Line(pat) => {
                let r = re(pat);
                for line in w.lines.by_ref() {
                    if let Some(names) = captures(r, line) {
                        w.push(&mut frames, names);
                        break;
                    }
                }
            }
        }
        i += 1;
    }
    (results, ok)
}

/// The guilty frames of a report's lines (the head first), one per stack of the format.
pub fn extract(lines: &[&str], fmt: &StackFmt) -> Vec<Option<String>> {
    let lines: Vec<&str> = lines.iter().copied().filter(|l| !questionable(l)).collect();
    let (results, ok) = walk(&lines, fmt.parts, fmt);
    if ok || fmt.parts2.is_empty() {
        return results;
    }
    walk(&lines, fmt.parts2, fmt).0
}

/// The first guilty frame of a report.
pub fn guilty(lines: &[&str], fmt: &StackFmt) -> Option<String> {
    extract(lines, fmt).into_iter().next().flatten()
}

fn pick(how: Pick, raw: &[String]) -> Option<String> {
    let frames: Vec<&str> = raw.iter().map(|f| strip_prefix(f)).collect();
    // Entry code only where the trace has nothing else.
    let own: Vec<&str> = frames.iter().copied().filter(|f| !is_entry(f)).collect();
    match how {
        Pick::First => own.first().or(frames.first()).map(|f| f.to_string()),
        Pick::Stall => stall(&frames),
        Pick::Hang => hang(&own).or_else(|| hang(&frames)),
    }
}

/// Functions that dispatch work: the frame before the first of them names the stall.
const STALL_ANCHORS: &[&str] = &[
    "process_one_work",
    "do_syscall_",
    "do_fast_syscall_",
    "sysenter_dispatch",
    "tracesys_phase2",
    "el0_svc_handler",
    "invoke_syscall",
    "ret_fast_syscall",
    "netif_receive_skb",
    "do_softirq",
    "call_timer_fn",
    "_run_timers",
    "run_timer_softirq",
    "hrtimer_run",
    "run_ksoftirqd",
    "smpboot_thread_fn",
    "^kthread$",
    "start_secondary",
    "cpu_startup_entry",
    "ret_from_fork",
    "vfs_write",
    "vfs_read",
    "vfs_iter_read",
    "vfs_iter_write",
    "do_iter_read",
    "do_iter_write",
    "call_read_iter",
    "call_write_iter",
    "new_sync_read",
    "new_sync_write",
    "vfs_ioctl",
    "ksys_ioctl",
    "compat_ioctl",
    "compat_sys_ioctl",
    "blkdev_driver_ioctl",
    "blkdev_ioctl",
    "do_iter_readv_writev",
    "^call_mmap",
    "mmap_region",
    "do_mmap",
    "do_dentry_open",
    "vfs_open",
    "^sock_sendmsg",
    "^sock_recvmsg",
    "^sock_release",
    "^__sock_release",
    "^setsockopt$",
    "kernel_setsockopt",
    "sock_common_setsockopt",
    "^listen$",
    "kernel_listen",
    "sk_common_release",
    "^sock_mmap",
    "^accept$",
    "kernel_accept",
    "^sock_do_ioctl",
    "^sock_ioctl",
    "^compat_sock_ioctl",
    "^nfnetlink_rcv_msg",
    "^rtnetlink_rcv_msg",
    "^netlink_dump",
    "^(sys_)?(socketpair|connect|ioctl)",
    "__do_fault",
    "do_page_fault",
    "^page_fault$",
    "__fput",
    "task_work_run",
    "exit_to_usermode",
    "smp_call_function",
    "tasklet_action",
    "tasklet_hi_action",
];

fn stall_anchors() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&STALL_ANCHORS.join("|")).expect("static anchors"))
}

/// The frame before the first dispatching one. Entry frames still anchor (`do_syscall_64`)
/// but never name the stall while another frame comes before them.
fn stall(frames: &[&str]) -> Option<String> {
    let mut prev = *frames.first()?;
    for f in frames {
        if stall_anchors().is_match(f) {
            if f.contains("smp_call_function") {
                return Some("smp_call_function".to_string());
            }
            return Some(prev.to_string());
        }
        if !is_entry(f) || is_entry(prev) {
            prev = f;
        }
    }
    // No dispatching frame (a short or cut trace): the top frame still names it.
    frames
        .iter()
        .find(|f| !is_entry(f))
        .or(frames.first())
        .map(|f| f.to_string())
}

fn hang(frames: &[&str]) -> Option<String> {
    for f in frames {
        if f.contains("rtnl_lock") {
            return Some(f.to_string());
        }
        if [
            "synchronize_rcu",
            "synchronize_srcu",
            "synchronize_net",
            "synchronize_sched",
        ]
        .iter()
        .any(|a| f.contains(a))
        {
            return Some("synchronize_rcu".to_string());
        }
    }
    const WAITING: &[&str] = &[
        "sched",
        "_lock",
        "_slowlock",
        "down",
        "rwsem",
        "completion",
        "kthread",
        "wait",
        "synchronize",
        "context_switch",
        "__switch_to",
        "cancel_delayed_work",
        "rcu_barrier",
    ];
    frames
        .iter()
        .find(|f| !WAITING.iter().any(|w| f.contains(w)))
        .map(|f| f.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: StackFmt = StackFmt::new(&[Part::Line(CALL_TRACE), Part::Stack]);

    #[test]
    fn helpers_unreliable_frames_and_suffixes_are_skipped() {
        let lines = [
            "BUG: sleeping function called from invalid context at mm/slab.c:1",
            "Call Trace:",
            " <TASK>",
            " ? __warn+0x7d/0xc0",
            " dump_stack_lvl+0x44/0x5c",
            " __might_resched.cold+0x1/0x2",
            " memcpy+0x1/0x2",
            " ext4_fill_super.isra.0+0x15/0x1000 [ext4]",
            " do_syscall_64+0x5d/0xb0",
        ];
        assert_eq!(guilty(&lines, &CALL).as_deref(), Some("ext4_fill_super"));
    }

    #[test]
    fn trace_formats_of_four_arches() {
        let arm = [
            "x",
            "Backtrace:",
            "[<c010c2a4>] (dump_backtrace) from [<c010c4e8>] (show_stack+0x20/0x24)",
            "[<c05a0b5c>] (sysrq_handle_crash) from [<c05a1234>] (__handle_sysrq+0x9c/0x170)",
        ];
        assert_eq!(guilty(&arm, &CALL).as_deref(), Some("sysrq_handle_crash"));
        let arm_new = [
            "x",
            "Call trace: ",
            " unwind_backtrace from show_stack+0x10/0x14",
            " sysrq_handle_crash from __handle_sysrq+0x9c/0x170",
        ];
        assert_eq!(
            guilty(&arm_new, &CALL).as_deref(),
            Some("sysrq_handle_crash")
        );
        let riscv = [
            "x",
            "[<ffffffff806c3c1a>] sysrq_handle_crash+0x1a/0x22",
            "[<ffffffff806c4328>] __handle_sysrq+0x8e/0x17e",
        ];
        let stack = StackFmt::new(&[Part::Stack]);
        assert_eq!(
            guilty(&riscv, &stack).as_deref(),
            Some("sysrq_handle_crash")
        );
        let rip = StackFmt::new(&[Part::Line(RIP), Part::Stack]);
        let arm64 = [
            "x",
            "pc : sysrq_handle_crash+0x20/0x28",
            "lr : __handle_sysrq+0xd4/0x1c0",
        ];
        assert_eq!(guilty(&arm64, &rip).as_deref(), Some("sysrq_handle_crash"));
        let x86 = [
            "x",
            "RIP: 0010:bootfarm_trigger_init+0x1a/0x1000 [bootfarm_trigger]",
        ];
        assert_eq!(guilty(&x86, &rip).as_deref(), Some("bootfarm_trigger_init"));
        let riscv_epc = ["x", "epc : sysrq_handle_crash+0x1a/0x22"];
        assert_eq!(
            guilty(&riscv_epc, &rip).as_deref(),
            Some("sysrq_handle_crash")
        );
    }

    #[test]
    fn entry_code_is_skipped_unless_the_trace_has_nothing_else() {
        // x86_64 6.1, a panic in a syscall (`x86_64-sysrq.log`).
        let x86 = [
            "Kernel panic - not syncing: sysrq triggered crash",
            "Call Trace:",
            " <TASK>",
            " dump_stack_lvl+0x44/0x5c",
            " panic+0x118/0x2f4",
            " ? _printk+0x68/0x83",
            " ksys_write+0x6b/0xf0",
            " do_syscall_64+0x5d/0xb0",
            " entry_SYSCALL_64_after_hwframe+0x6e/0xd8",
        ];
        assert_eq!(guilty(&x86, &CALL).as_deref(), Some("write"));
        // arm64 6.12: init exits (`arm64-panic-init-exit.log`), entry frames below.
        let arm64 = [
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
            "Call trace:",
            " dump_backtrace+0xd8/0x130",
            " panic+0x164/0x378",
            " invoke_syscall+0x60/0xe0",
            " el0_svc_common.constprop.0+0x48/0xf0",
            " do_el0_svc+0x24/0x38",
            " el0_svc+0xbc/0x148",
            " el0t_64_sync_handler+0xc8/0xe0",
            " el0t_64_sync+0x190/0x198",
            " ret_from_fork+0x10/0x20",
        ];
        // Nothing but entry code: its first frame, as syzbot names it.
        assert_eq!(guilty(&arm64, &CALL).as_deref(), Some("invoke_syscall"));
        let mut with_caller = arm64.to_vec();
        with_caller.insert(4, " do_group_exit+0x3c/0xa0");
        assert_eq!(
            guilty(&with_caller, &CALL).as_deref(),
            Some("do_group_exit")
        );
        let exc = [
            "x",
            "Call Trace:",
            " irqentry_exit_to_user_mode+0x5/0x40",
            " exc_page_fault+0xc6/0x180",
            " asm_exc_page_fault+0x1e/0x30",
        ];
        assert_eq!(
            guilty(&exc, &CALL).as_deref(),
            Some("irqentry_exit_to_user_mode")
        );
        for f in [
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
            "asm_exc_invalid_op",
            "exc_invalid_op",
            "irqentry_exit",
            "exit_to_user_mode_prepare",
            "exit_to_user_mode_loop",
            "syscall_exit_to_user_mode",
            "el0_svc",
            "el0t_64_sync_handler",
            "invoke_syscall",
            "ret_from_fork_asm",
        ] {
            assert!(is_entry(f), "{f}");
        }
        // Only the entry wrappers: functions that merely contain the words are not.
        for f in [
            "do_exit",
            "handle_exception",
            "kvm_handle_exc_entry",
            "do_syscall_trace_enter",
            "sys_exit_group",
        ] {
            assert!(!is_entry(f), "{f}");
        }
    }

    #[test]
    fn stalls_anchor_on_entry_frames_but_are_never_named_by_them() {
        let frames = [
            "bootfarm_spin",
            "bootfarm_trigger_init",
            "do_one_initcall",
            "finit_module",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ];
        assert_eq!(stall(&frames).as_deref(), Some("finit_module"));
        let frames = ["irqentry_exit", "spin_forever", "do_syscall_64"];
        assert_eq!(stall(&frames).as_deref(), Some("spin_forever"));
        let frames = ["spin_forever", "exc_page_fault", "do_syscall_64"];
        assert_eq!(stall(&frames).as_deref(), Some("spin_forever"));
        let frames = ["exc_nmi", "spin_forever"];
        assert_eq!(stall(&frames).as_deref(), Some("spin_forever"));
        let frames = ["do_syscall_64", "entry_SYSCALL_64_after_hwframe"];
        assert_eq!(stall(&frames).as_deref(), Some("do_syscall_64"));
    }

    #[test]
    fn syscall_wrappers_are_stripped_and_stalls_pick_the_dispatched_frame() {
        assert_eq!(strip_prefix("__x64_sys_ioctl"), "sys_ioctl");
        assert_eq!(strip_prefix("__do_sys_bpf"), "bpf");
        assert_eq!(strip_prefix("ksys_write"), "write");
        let frames = ["snd_seq_write", "vfs_write", "write", "do_syscall_64"];
        assert_eq!(stall(&frames).as_deref(), Some("snd_seq_write"));
        let hung = [
            "__schedule",
            "schedule",
            "io_schedule",
            "folio_wait_bit_common",
            "read_cache_folio",
        ];
        assert_eq!(hang(&hung).as_deref(), Some("read_cache_folio"));
        assert_eq!(
            hang(&["schedule", "synchronize_srcu", "x"]).as_deref(),
            Some("synchronize_rcu")
        );
    }
}
