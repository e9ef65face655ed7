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
