//! The report rules measured on syzkaller's real reports (`examples/eval_reports.rs`), one test
//! per class of fix: each feeds the shape that was misread and checks the first issue's kind,
//! title and guilty function.

use bootfarm_core::console::{Classifier, ClassifierConfig, Event};
use bootfarm_core::result::{Issue, IssueKind};

fn run(log: &str) -> (Vec<Issue>, Vec<Event>) {
    let mut c = Classifier::new(ClassifierConfig::default());
    let ev = c.feed(log.as_bytes());
    (c.finish().issues, ev)
}

fn first(log: &str) -> Issue {
    let (issues, _) = run(log);
    issues.into_iter().next().expect("an issue")
}

fn named(i: &Issue) -> (IssueKind, &str, Option<&str>) {
    (i.kind, i.title.as_str(), i.function.as_deref())
}

#[test]
fn a_panic_on_warn_before_the_trace_leaves_the_warning_open() {
    // 4.x kernels: the panic line comes right after the WARNING line, the trace after it.
    let log = "\
[  126.768183] ------------[ cut here ]------------
[  126.780219] WARNING: CPU: 1 PID: 4074 at fs/proc/generic.c:330 proc_register+0x2a4/0x370
[  126.788421] Kernel panic - not syncing: panic_on_warn set ...
[  126.788421] 
[  126.795777] CPU: 1 PID: 4074 Comm: syzkaller105937 Not tainted 4.15.0+ #221
[  126.812171] Call Trace:
[  126.814739]  dump_stack+0x194/0x257
[  126.826768]  panic+0x1e4/0x41c
[  126.846596]  __warn+0x1dc/0x200
[  126.853885]  report_bug+0x211/0x2d0
[  126.889432]  invalid_op+0x22/0x40
[  126.892860] RIP: 0010:proc_register+0x2a4/0x370
[  126.897499] RSP: 0018:ffff8801da886e20 EFLAGS: 00010286
[  126.943647]  proc_create_data+0xf8/0x180
[  126.947687]  clusterip_tg_check+0xf9c/0x16d0
[  127.004004]  xt_check_target+0x22c/0x7d0
";
    let (issues, ev) = run(log);
    assert_eq!(
        named(&issues[0]),
        (
            IssueKind::Warning,
            "WARNING: proc registration bug in clusterip_tg_check",
            Some("clusterip_tg_check")
        )
    );
    // The panic is still an issue of its own, and still stops the run.
    assert_eq!(issues[1].kind, IssueKind::Panic);
    assert!(issues[1].fatal);
    assert!(ev.contains(&Event::Panic));
}

#[test]
fn a_warning_at_an_unknown_address_is_named_by_its_registers() {
    // 6.19+: `at 0x0` when the kernel could not name the function; RIP does.
    let log = "\
[   92.518566][ T5982] ------------[ cut here ]------------
[   92.524882][ T5982] WARNING: fs/ext4/xattr.c:1058 at 0x0, CPU#0: syz.0.17/5982
[   92.561124][ T5982] RIP: 0010:ext4_xattr_inode_update_ref+0x4dc/0x570
[   92.660779][ T5982] Call Trace:
[   92.664385][ T5982]  <TASK>
[   92.685672][ T5982]  ext4_xattr_set_entry+0xabb/0x1e20
[   92.691132][ T5982]  ext4_xattr_ibody_set+0x254/0x6a0
";
    assert_eq!(
        named(&first(log)),
        (
            IssueKind::Warning,
            "WARNING in ext4_xattr_inode_update_ref",
            Some("ext4_xattr_inode_update_ref")
        )
    );
}

#[test]
fn syzkallers_memory_leak_marker_is_not_a_report_of_its_own() {
    let log = "\
BUG: memory leak
unreferenced object 0xffff88005a065340 (size 576):
  comm \"syz-executor1\", pid 8262, jiffies 4294976807 (age 33.830s)
  backtrace:
    [<000000008beb86da>] kmem_cache_alloc+0x1bb/0x3d0
    [<0000000039ade84e>] idr_get_free+0x88d/0xe40
    [<000000009768e365>] __kernfs_new_node+0x1cd/0x8f0
    [<000000009a4a314c>] kernfs_new_node+0x95/0x120
";
    let (issues, _) = run(log);
    assert_eq!(issues.len(), 1);
    assert_eq!(
        named(&issues[0]),
        (
            IssueKind::Memleak,
            "memory leak in __kernfs_new_node",
            Some("__kernfs_new_node")
        )
    );
}

#[test]
fn a_scheduling_while_atomic_panic_before_its_trace_keeps_the_report_open() {
    // Past the scheduler the trace is entry code only: its first frame names it, as syzbot
    // does (entry frames are skipped only when the trace has another frame).
    let log = "\
[   75.726516][ T8444] BUG: scheduling while atomic: syz-executor607/8444/0x00000002
[   75.734225][ T8444] no locks held by syz-executor607/8444.
[   75.755491][ T8444] Kernel panic - not syncing: scheduling while atomic
[   75.762311][ T8444] CPU: 1 PID: 8444 Comm: syz-executor607 Not tainted 5.13.0-rc6-syzkaller #0
[   75.781401][ T8444] Call Trace:
[   75.784670][ T8444]  dump_stack+0x141/0x1d7
[   75.788994][ T8444]  panic+0x306/0x73d
[   75.812611][ T8444]  __schedule_bug.cold+0x10c/0x143
[   75.817935][ T8444]  __schedule+0x19df/0x23e0
[   75.834439][ T8444]  schedule+0xcf/0x270
[   75.838618][ T8444]  exit_to_user_mode_prepare+0x14d/0x290
[   75.844397][ T8444]  irqentry_exit_to_user_mode+0x5/0x40
[   75.850148][ T8444]  exc_page_fault+0xc6/0x180
[   75.859686][ T8444]  asm_exc_page_fault+0x1e/0x30
";
    let (issues, _) = run(log);
    assert_eq!(
        named(&issues[0]),
        (
            IssueKind::Bug,
            "BUG: scheduling while atomic in exit_to_user_mode_prepare",
            Some("exit_to_user_mode_prepare")
        )
    );
    assert_eq!(issues[1].kind, IssueKind::Panic);
}

#[test]
fn an_oops_panic_after_the_trace_still_ends_the_report() {
    let log = "\
[   83.458005] BUG: unable to handle kernel paging request at ffffffffffffffd8
[   83.505077] RIP: 0010:memcmp+0x9/0x40
[   83.571686] Call Trace:
[   83.574244]  ipcget+0x1a2/0x620
[   83.577503]  SyS_msgget+0x48/0x60
[   83.665352] Kernel panic - not syncing: Fatal exception
[   83.671219] Call Trace:
[   83.674735]  other_function+0x1/0x2
";
    let (issues, _) = run(log);
    assert_eq!(issues[0].function.as_deref(), Some("ipcget"));
    assert_eq!(issues[1].kind, IssueKind::Panic);
    assert_eq!(issues.len(), 2);
}

#[test]
fn arm64_debug_exception_frames_of_an_old_warning_are_skipped() {
    // 4.9 arm64 with panic_on_warn: no `pc :` line, the trace runs through the brk handler.
    let log = "\
[ 1108.192590] WARNING: CPU: 0 PID: 1610 at drivers/trusty/trusty.c:215 trusty_std_call32+0x220/0x240
[ 1108.193306] Kernel panic - not syncing: panic_on_warn set ...
[ 1108.196310] Call trace:
[ 1108.196728] [<ffff200008091958>] dump_backtrace+0x0/0x440
[ 1108.197185] [<ffff200008091db8>] show_stack+0x20/0x30
[ 1108.198005] [<ffff20000832d678>] panic+0x208/0x3e0
[ 1108.198397] [<ffff20000811acb8>] __warn+0x280/0x2f0
[ 1108.198788] [<ffff200008939138>] report_bug+0x1a8/0x270
[ 1108.199198] [<ffff200008092174>] bug_handler.part.2+0x3c/0xf8
[ 1108.199619] [<ffff200008092278>] bug_handler+0x48/0x68
[ 1108.200006] [<ffff200008085c3c>] brk_handler+0x1e4/0x2e0
[ 1108.200401] [<ffff200008081a78>] do_debug_exception+0xd0/0x230
[ 1108.200888] Exception stack(0xffff8000714577f0 to 0xffff800071457920)
[ 1108.201409] 77e0:                                   00000000fffffff5 0001000000000000
[ 1108.206412] [<ffff200008083658>] el1_dbg+0x18/0x74
[ 1108.206786] [<ffff2000093a2fc8>] nop_work_func+0xd8/0x180
[ 1108.207180] [<ffff20000816143c>] process_one_work+0x75c/0x11a0
";
    assert_eq!(
        named(&first(log)),
        (
            IssueKind::Warning,
            "WARNING in nop_work_func",
            Some("nop_work_func")
        )
    );
}

#[test]
fn a_workqueue_lockup_is_named_by_the_stalled_pools_busy_worker() {
    // The dump of every pool comes first (often more than a report's usual window).
    let mut log = String::from(
        "[  286.486862][    C0] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 168s!\n\
[  286.496941][    C0] Showing busy workqueues and worker pools:\n\
[  286.508752][    C0]     in-flight: 5684:reg_todo for 170s\n",
    );
    for i in 0..200 {
        log.push_str(&format!(
            "[  286.9{i:05}][    C0]     pending: wg_packet_handshake_send_worker\n"
        ));
    }
    log.push_str(
        "[  287.489566][    C0] pool 2: cpus=0 node=0 flags=0x0 nice=0 hung=169s workers=8 idle: 9 187 5727\n\
[  287.489762][    C0] Showing backtraces of busy workers in stalled worker pools:\n\
[  287.549176][    C0] pool 2:\n\
[  287.549261][    C0] Workqueue: wg-kex-wg0 wg_packet_handshake_receive_worker\n\
[  287.549310][    C0] Call Trace:\n",
    );
    assert_eq!(
        named(&first(&log)),
        (
            IssueKind::Bug,
            "BUG: workqueue lockup in wg_packet_handshake_receive_worker",
            Some("wg_packet_handshake_receive_worker")
        )
    );
}

#[test]
fn ipv6_addrconf_bug_behind_its_prefix_is_a_bug() {
    let log = "[  184.801206][ T1191] IPv6: BUG: Address 2001:0db8:85a3:0000:0000:8a2e:0370:7334 on device lo is missing its host route.\n";
    let i = first(log);
    assert_eq!(
        named(&i),
        (
            IssueKind::Bug,
            "BUG: Address IPV6ADDR on device lo is missing its host route.",
            None
        )
    );
}

#[test]
fn an_old_kmsan_report_with_a_call_trace_line_is_named_by_its_trace() {
    let log = "\
[   30.172283] BUG: KMSAN: uninit-value in memcmp+0x119/0x180
[   30.177916] CPU: 0 PID: 3 Comm: kworker/0:0 Not tainted 4.16.0+ #82
[   30.198962] Call Trace:
[   30.201561]  dump_stack+0x185/0x1d0
[   30.208673]  kmsan_report+0x142/0x240
[   30.212484]  __msan_warning_32+0x6c/0xb0
[   30.216549]  memcmp+0x119/0x180
[   30.219845]  __dev_mc_add+0x1c2/0x8e0
[   30.227634]  dev_mc_add+0x6d/0x80
[   30.283279] Local variable description: ----buf@igmp6_group_added
[   30.289491] Variable was created at:
[   30.293192]  igmp6_group_added+0x4a/0xa00
";
    assert_eq!(
        named(&first(log)),
        (
            IssueKind::Kmsan,
            "KMSAN: uninit-value in __dev_mc_add",
            Some("__dev_mc_add")
        )
    );
}

#[test]
fn a_panic_named_by_its_trace_gets_the_frame_in_its_title() {
    let log = "\
[  335.974403] Kernel panic - not syncing: corrupted stack end detected inside scheduler
[  335.979784] Call Trace:
[  335.980287]  dump_stack+0x1d3/0x2c6
[  335.982672]  panic+0x2ad/0x55f
[  335.986347]  __schedule+0x1ec6/0x1ed0
[  335.993751]  preempt_schedule_irq+0x87/0x110
[  336.346588]  wb_writeback+0xa73/0xfc0
[  336.356813]  wb_workfn+0xd65/0x1790
[  336.370426]  process_one_work+0xc90/0x1c40
";
    let (issues, ev) = run(log);
    assert_eq!(issues.len(), 1);
    assert_eq!(
        named(&issues[0]),
        (
            IssueKind::Panic,
            "kernel panic: corrupted stack end in wb_workfn",
            Some("wb_workfn")
        )
    );
    assert!(ev.contains(&Event::Panic));
}
