//! Synthetic console edge cases: line ends, prefixes, escapes, interleaving, cut logs, policy,
//! LAVA and KTAP streams, and faithful samples (`samples/`) of kernel reports that the test
//! kernels here cannot produce (KASAN, KFENCE, KCSAN, UBSAN, hard lockup, RCU stall, ...).

use bootfarm_core::console::{Classification, Classifier, ClassifierConfig, Event};
use bootfarm_core::result::{IssueKind, Phase, Stage, TestOutcome};
use bootfarm_core::verdict::{decide, End, Expect};
use std::path::Path;

fn run(cfg: ClassifierConfig, bytes: &[u8]) -> (Classification, Vec<Event>) {
    let mut c = Classifier::new(cfg);
    let ev = c.feed(bytes);
    (c.finish(), ev)
}

fn classify(bytes: &[u8]) -> Classification {
    run(ClassifierConfig::default(), bytes).0
}

fn sample(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const BOOT: &str = "[    0.000000] Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)\n\
[    0.000000] Command line: console=ttyS0 panic=-1\n\
[    0.010000] Kernel command line: console=ttyS0 panic=-1\n\
[    0.200000] PCI: MMCONFIG at [mem 0xb0000000-0xbfffffff] reserved as E820 entry; fail to add MMCONFIG information\n\
[    0.300000] ACPI Error: AE_NOT_FOUND, While resolving a named reference package element (20220331/dspkginit-438)\n\
[    0.400000] pci 0000:00:01.0: BAR 0: failed to assign [mem size 0x01000000 pref]\n\
[    1.000000] Run /init as init process\n";

#[test]
fn a_clean_boot_with_error_words_has_no_issue() {
    let mut log = BOOT.to_string();
    log.push_str("[    2.000000] reboot: Power down\n");
    let c = classify(log.as_bytes());
    assert_eq!(c.issues, vec![]);
    assert_eq!(c.stage, Stage::Userspace);
    assert!(c.powered_off);
    assert_eq!(c.kernel_version.as_deref(), Some("6.1.0-13-amd64"));
    let d = decide(&c, Expect::Auto, End::LogEnded);
    assert_eq!(
        (d.verdict.as_str(), d.reason.as_str()),
        ("pass", "poweroff")
    );
}

#[test]
fn line_ends_do_not_change_the_result() {
    let lf = format!("{BOOT}[    1.500000] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\n/ # ");
    let crlf = lf.replace('\n', "\r\n");
    let cr = lf.replace('\n', "\r");
    let crcrlf = lf.replace('\n', "\r\r\n");
    let a = classify(lf.as_bytes());
    assert_eq!(a.issues[0].line, 8);
    assert_eq!(a.lines, 9, "8 lines and the unterminated prompt");
    for other in [crlf, crcrlf] {
        let b = classify(other.as_bytes());
        assert_eq!(a.issues, b.issues);
        assert_eq!((a.stage, a.lines), (b.stage, b.lines));
    }
    assert_eq!(a.stage, Stage::Shell);
    // A log of bare `\r` line ends is numbered line by line, like the others.
    let b = classify(cr.as_bytes());
    assert_eq!(
        (b.issues[0].kind, b.issues[0].line, b.stage, b.lines),
        (a.issues[0].kind, 8, a.stage, 9)
    );
    let mut c = Classifier::new(ClassifierConfig::default());
    c.feed(b"Press Ctrl-B...\r      \r\n\n\n[    1.0] Kernel panic - not syncing: x\r\n");
    let c = c.finish();
    assert_eq!((c.issues[0].line, c.lines), (4, 4));
}

#[test]
fn syslog_prefixes_and_caller_ids_are_stripped() {
    let log = "<5>[    0.000000][    T0] Linux version 6.1.0 (x@y) #1\r\n\
<6>[    1.000000][    T1] Run /init as init process\r\n\
<4>[    2.000000][   T42] ------------[ cut here ]------------\r\n\
<4>[    2.000001][   T42] WARNING: CPU: 0 PID: 42 at x.c:1 f+0x1/0x2\r\n\
<4>[    2.000002][   T42] ---[ end trace 0000000000000000 ]---\r\n\
<0>[    3.000000][    C0] Kernel panic - not syncing: boom\r\n";
    let (c, ev) = run(ClassifierConfig::default(), log.as_bytes());
    assert_eq!(c.kernel_version.as_deref(), Some("6.1.0"));
    let kinds: Vec<_> = c.issues.iter().map(|i| (i.kind, i.line)).collect();
    assert_eq!(kinds, vec![(IssueKind::Warning, 3), (IssueKind::Panic, 6)]);
    assert_eq!(
        c.issues[0].summary,
        "WARNING: CPU: 0 PID: 42 at x.c:1 f+0x1/0x2"
    );
    assert!(ev.contains(&Event::Panic));
}

#[test]
fn ansi_prompts_are_seen_once_per_occurrence_whatever_the_chunking() {
    let log = b"[    1.0] Run /init as init process\r\n\x1b[1;32mroot@bootfarm:~#\x1b[0m ls\r\nbin\r\n\x1b[1;32mroot@bootfarm:~#\x1b[0m ";
    let prompts = |evs: &[Event]| evs.iter().filter(|e| **e == Event::ShellPrompt).count();
    let mut whole = Classifier::new(ClassifierConfig::default());
    assert_eq!(prompts(&whole.feed(log)), 2);
    let mut bytewise = Classifier::new(ClassifierConfig::default());
    let mut n = 0;
    for b in log.iter() {
        n += prompts(&bytewise.feed(std::slice::from_ref(b)));
    }
    assert_eq!(n, 2);
    assert_eq!(whole.finish(), bytewise.finish());
}

#[test]
fn kernel_lines_never_look_like_prompts() {
    let log = "[    1.0] / # \r\n[    1.1] $ x\r\n";
    let (c, ev) = run(ClassifierConfig::default(), log.as_bytes());
    assert_eq!(c.stage, Stage::None);
    assert!(!ev.contains(&Event::ShellPrompt));
}

#[test]
fn a_log_cut_mid_line_still_reports_what_it_shows() {
    let log = "[    1.0] Run /init as init process\r\n[    2.0] Kernel panic - not syncing: Attempted to kill in";
    let c = classify(log.as_bytes());
    assert_eq!(c.issues.len(), 1);
    assert_eq!(c.issues[0].kind, IssueKind::Panic);
    let d = decide(&c, Expect::Auto, End::LogEnded);
    assert_eq!(d.reason, "panic");
    // Cut before the kind is known: nothing invented.
    let c = classify(b"[    2.0] Kernel panic - not syn");
    assert_eq!(c.issues, vec![]);
    let d = decide(&c, Expect::Auto, End::LogEnded);
    assert_eq!((d.reason.as_str(), c.stage), ("incomplete", Stage::None));
}

#[test]
fn invalid_utf8_and_huge_lines_are_bounded() {
    let mut log = b"[    0.0] Linux version 6.1.0 #1\n".to_vec();
    log.extend(std::iter::repeat_n(0xffu8, 3_000_000));
    log.extend(b"\n[    1.0] Run /init as init process\n\xc3\x28 / # \n");
    let c = classify(&log);
    assert_eq!(c.lines, 4);
    assert_eq!(c.stage, Stage::Userspace);
}

#[test]
fn policy_decides_which_issues_are_fatal() {
    let log = "[    1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\n\
[    1.1] ---[ end trace 0000000000000000 ]---\n\
[    2.0] Kernel panic - not syncing: boom\n\
[    3.0] my-test: FATAL thing happened\n";
    let c = classify(log.as_bytes());
    assert_eq!(
        c.issues
            .iter()
            .map(|i| (i.kind, i.fatal))
            .collect::<Vec<_>>(),
        vec![(IssueKind::Warning, false), (IssueKind::Panic, true)]
    );
    let cfg = ClassifierConfig {
        fail_on: vec![IssueKind::Warning],
        ignore: vec![IssueKind::Panic],
        failure_patterns: vec![regex::Regex::new("FATAL").expect("regex")],
        ..Default::default()
    };
    let (c, ev) = run(cfg, log.as_bytes());
    assert_eq!(
        c.issues
            .iter()
            .map(|i| (i.kind, i.fatal, i.line))
            .collect::<Vec<_>>(),
        vec![
            (IssueKind::Warning, true, 1),
            (IssueKind::Panic, false, 3),
            (IssueKind::Pattern, true, 4)
        ]
    );
    assert!(
        !ev.contains(&Event::Panic),
        "an ignored panic does not stop the run"
    );
    assert_eq!(decide(&c, Expect::Auto, End::LogEnded).reason, "warning");
}

#[test]
fn issues_after_the_first_prompt_are_in_the_test_phase() {
    let log = "[    1.0] Run /init as init process\r\n/ # insmod x.ko\r\n[    5.0] BUG: scheduling while atomic: insmod/80/0x00000002\r\n/ # ";
    let c = classify(log.as_bytes());
    assert_eq!(c.issues.len(), 1);
    assert_eq!(
        (c.issues[0].kind, c.issues[0].phase),
        (IssueKind::Bug, Phase::Test)
    );
}

/// (sample, kind, line, summary prefix, excerpt must end with)
const SAMPLES: &[(&str, IssueKind, u64, &str, &str)] = &[
    (
        "kasan.log",
        IssueKind::Kasan,
        2,
        "BUG: KASAN: slab-out-of-bounds in kmalloc_oob_right",
        "======",
    ),
    (
        "kfence.log",
        IssueKind::Kfence,
        2,
        "BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read",
        "======",
    ),
    (
        "kcsan.log",
        IssueKind::Kcsan,
        2,
        "BUG: KCSAN: data-race in test_kernel_read / test_kernel_write",
        "======",
    ),
    (
        "ubsan-framed.log",
        IssueKind::Ubsan,
        2,
        "UBSAN: array-index-out-of-bounds in drivers/misc/lkdtm/bugs.c:332:16",
        "======",
    ),
    (
        "ubsan-cut-here.log",
        IssueKind::Ubsan,
        1,
        "UBSAN: array-index-out-of-bounds in drivers/misc/lkdtm/bugs.c:392:16",
        "---[ end trace ]---",
    ),
    (
        "hard-lockup.log",
        IssueKind::HardLockup,
        1,
        "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
        "</TASK>",
    ),
    (
        "rcu-stall.log",
        IssueKind::RcuStall,
        1,
        "rcu: INFO: rcu_preempt self-detected stall on CPU",
        "</TASK>",
    ),
    (
        "invalid-opcode.log",
        IssueKind::InvalidOpcode,
        1,
        "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
        "---[ end trace 0000000000000000 ]---",
    ),
    (
        "arm32-unhandled-fault.log",
        IssueKind::Fault,
        1,
        "Unhandled fault: page domain fault (0x81b) at 0x00000000",
        "---[ end trace 0000000000000000 ]---",
    ),
    (
        "arm64-oops.log",
        IssueKind::Oops,
        1,
        "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000",
        "---[ end trace 0000000000000000 ]---",
    ),
    (
        "gpf.log",
        IssueKind::Fault,
        1,
        "general protection fault, probably for non-canonical address",
        "---[ end trace 0000000000000000 ]---",
    ),
];

#[test]
fn faithful_samples_of_every_other_kind() {
    for (name, kind, line, summary, tail) in SAMPLES {
        let c = classify(&sample(name));
        let first = c
            .issues
            .first()
            .unwrap_or_else(|| panic!("{name}: no issue"));
        assert_eq!(first.kind, *kind, "{name}");
        assert_eq!(first.line, *line, "{name}");
        assert!(
            first.summary.starts_with(summary),
            "{name}: {}",
            first.summary
        );
        assert!(
            first.excerpt.trim_end().ends_with(tail),
            "{name}: excerpt\n{}",
            first.excerpt
        );
        assert!(first.fatal, "{name}: {kind:?} fails by default");
        assert_eq!(first.fingerprint.len(), 16);
    }
    // The hard lockup and the arm64 Oops end in a panic: a second issue, not part of the first.
    let c = classify(&sample("hard-lockup.log"));
    assert_eq!(
        c.issues.iter().map(|i| i.kind).collect::<Vec<_>>(),
        [IssueKind::HardLockup, IssueKind::Panic]
    );
    assert_eq!(
        c.issues[1].summary,
        "Kernel panic - not syncing: Hard LOCKUP"
    );
    let c = classify(&sample("arm64-oops.log"));
    assert_eq!(
        c.issues.iter().map(|i| i.kind).collect::<Vec<_>>(),
        [IssueKind::Oops, IssueKind::Panic]
    );
}

/// Same report, another run: other timestamps, addresses, pids, CPU numbers and taint.
fn another_run(log: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(log);
    let re_ts = regex::Regex::new(r"\[\s*(\d+)\.(\d+)\]").expect("regex");
    let re_hex = regex::Regex::new(r"\b(?:0x)?[0-9a-f]{8,16}\b").expect("regex");
    let re_pid = regex::Regex::new(r"(PID: |task |insmod/|cpu )\d+").expect("regex");
    let t = re_ts.replace_all(&text, |c: &regex::Captures| {
        format!("[{:>5}.{}]", c[1].parse::<u64>().unwrap_or(0) + 4321, &c[2])
    });
    let t = re_hex.replace_all(&t, |c: &regex::Captures| {
        let s = &c[0];
        let (pre, digits) = s.split_at(if s.starts_with("0x") { 2 } else { 0 });
        let digits: String = digits
            .chars()
            .map(|ch| if ch == 'f' { ch } else { 'a' })
            .collect();
        format!("{pre}{digits}")
    });
    let t = re_pid.replace_all(&t, "${1}4242");
    let t = t.replace("Not tainted", "Tainted: G        W  ");
    t.into_bytes()
}

#[test]
fn fingerprints_are_stable_across_runs_and_differ_between_bugs() {
    let mut seen = std::collections::BTreeMap::new();
    let fp = |name: &str| classify(&sample(name)).issues[0].fingerprint.clone();
    // The same lkdtm bug reported by a 5.10 kernel (framed) and a 6.9 kernel (cut here).
    assert_eq!(fp("ubsan-framed.log"), fp("ubsan-cut-here.log"));
    for (name, ..) in SAMPLES.iter().filter(|s| s.0 != "ubsan-cut-here.log") {
        let log = sample(name);
        let a = classify(&log);
        let b = classify(&another_run(&log));
        assert_eq!(a.issues[0].fingerprint, b.issues[0].fingerprint, "{name}");
        assert_ne!(
            a.issues[0].excerpt, b.issues[0].excerpt,
            "{name}: the variant must differ"
        );
        if let Some(other) = seen.insert(a.issues[0].fingerprint.clone(), name) {
            panic!("{name} and {other} share a fingerprint");
        }
    }
}

#[test]
fn lava_signals_in_all_their_forms() {
    let log = "[    1.0] Run /init as init process\r\n\
<LAVA_SIGNAL_STARTRUN 0_smoke 9a1c-uuid>\r\n\
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=uname RESULT=pass>\r\n\
[    3.123456] <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=kmsg RESULT=fail>\r\n\
<LAVA_SIGNAL_TESTSET START net>\r\n\
<LAVA_SIGNAL_STARTTC ping>\r\n\
PING 10.0.0.1: 56 data bytes\r\n\
[    4.000000] e1000: eth0 NIC Link is Up\r\n\
<LAVA_SIGNAL_ENDTC ping>\r\n\
<LAVA_SIGNAL_TESTCASE UNITS=ms MEASUREMENT=0.25 RESULT=pass TEST_CASE_ID=ping>\r\n\
<LAVA_SIGNAL_TESTSET STOP>\r\n\
<LAVA_SIGNAL_TESTCA[    5.000000] random: crng init done\r\nSE TEST_CASE_ID=split RESULT=skip>\r\n\
<TEST_CASE_ID=fallback RESULT=pass MEASUREMENT=3 UNITS=s>\r\n\
<LAVA_SIGNAL_ENDRUN 0_smoke 9a1c-uuid>\r\n\
<LAVA_SIGNAL_STARTRUN 1_ltp 77-uuid>\r\n\
<LAVA_SIGNAL_TESTRAISE ltp setup failed>\r\n";
    let cfg = ClassifierConfig {
        expect_tests: vec!["uname".into(), "0_smoke/split".into(), "never".into()],
        ..Default::default()
    };
    let c = run(cfg, log.as_bytes()).0;
    let got: Vec<_> = c
        .tests
        .iter()
        .map(|t| {
            (
                t.suite.as_str(),
                t.name.as_str(),
                t.result,
                t.measurement,
                t.reason.as_deref(),
            )
        })
        .collect();
    use TestOutcome::*;
    assert_eq!(
        got,
        vec![
            ("0_smoke", "uname", Pass, None, None),
            ("0_smoke", "kmsg", Fail, None, None),
            ("0_smoke/net", "ping", Pass, Some(0.25), None),
            ("0_smoke", "split", Skip, None, None),
            ("0_smoke", "fallback", Pass, Some(3.0), None),
            ("1_ltp", "testraise", Fail, None, Some("ltp setup failed")),
            (
                "1_ltp",
                "1_ltp: incomplete",
                Fail,
                None,
                Some("STARTRUN without ENDRUN: the test run did not finish")
            ),
            ("", "never", Fail, None, Some("missing")),
        ]
    );
    let ping = &c.tests[2];
    assert_eq!(ping.units.as_deref(), Some("ms"));
    assert_eq!(
        ping.output.as_deref(),
        Some("PING 10.0.0.1: 56 data bytes\ne1000: eth0 NIC Link is Up\n")
    );
}

#[test]
fn a_typed_signal_echoed_at_the_prompt_is_not_a_result() {
    let log = "[    1.0] Run /init as init process\r\n/ # echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>'\r\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>\r\n/ # ";
    assert_eq!(classify(log.as_bytes()).tests.len(), 1);
}

#[test]
fn kunit_on_the_kernel_console_with_a_crash() {
    let log = "[    1.000000] KTAP version 1\r\n\
[    1.000001] 1..2\r\n\
[    1.000002]     KTAP version 1\r\n\
[    1.000003]     # Subtest: list-kunit-test\r\n\
[    1.000004]     1..2\r\n\
[    1.000005]     ok 1 list_test_list_init\r\n\
[    1.000006]     ok 2 list_test_list_add # SKIP not today\r\n\
[    1.000007] # list-kunit-test: pass:1 fail:0 skip:1 total:2\r\n\
[    1.000008] ok 1 list-kunit-test\r\n\
[    1.000009]     KTAP version 1\r\n\
[    1.000010]     # Subtest: crashy\r\n\
[    1.000011]     1..3\r\n\
[    1.000012]     not ok 1 first # ERROR oops\r\n\
[    1.000013] BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n\
[    1.000014] Kernel panic - not syncing: Fatal exception\r\n";
    let c = classify(log.as_bytes());
    let got: Vec<_> = c
        .tests
        .iter()
        .map(|t| (t.suite.as_str(), t.name.as_str(), t.result))
        .collect();
    use TestOutcome::*;
    assert_eq!(
        got,
        vec![
            ("list-kunit-test", "list_test_list_init", Pass),
            ("list-kunit-test", "list_test_list_add", Skip),
            ("crashy", "first", Fail),
            ("crashy", "crashy: missing results (1 of 3)", Fail),
            ("", "ktap: missing results (1 of 2)", Fail),
        ]
    );
    assert_eq!(c.issues.len(), 2);
}

#[test]
fn command_markers_in_a_saved_log_become_test_cases() {
    let log = "[    1.0] Run /init as init process\r\n\
/ # echo \"BF\"\"_S_0a1b2c3d_0\"; uname -a; echo \"BF\"\"_E_0a1b2c3d_0_$?\"\r\n\
BF_S_0a1b2c3d_0\r\n\
Linux (none) 6.1.0-56-amd64 #1 SMP x86_64 GNU/Linux\r\n\
[    9.100000] random: crng init done\r\n\
BF_E_0a1b2c3d_0_0\r\n\
/ # echo \"BF\"\"_S_0a1b2c3d_1\"; cat /nope; echo \"BF\"\"_E_0a1b2c3d_1_$?\"\r\n\
BF_S_0a1b2c3d_1\r\n\
cat: can't open '/nope': No such file or directory\r\n\
BF_E_0a1b2c3d_1_1\r\n\
/ # ";
    let (c, ev) = run(ClassifierConfig::default(), log.as_bytes());
    let got: Vec<_> = c
        .tests
        .iter()
        .map(|t| {
            (
                t.suite.as_str(),
                t.name.as_str(),
                t.result,
                t.reason.as_deref(),
                t.output.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "commands",
                "uname -a",
                TestOutcome::Pass,
                None,
                Some("Linux (none) 6.1.0-56-amd64 #1 SMP x86_64 GNU/Linux\n")
            ),
            (
                "commands",
                "cat /nope",
                TestOutcome::Fail,
                Some("exit status 1"),
                Some("cat: can't open '/nope': No such file or directory\n")
            ),
        ]
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::CommandEnd { .. }))
            .count(),
        2
    );
    assert_eq!(
        decide(&c, Expect::Auto, End::LogEnded).reason,
        "test_failed"
    );
}

#[test]
fn login_failures() {
    let c = classify(b"[    1.0] Run /init as init process\r\nbootfarm login: root\r\nPassword: \r\nLogin incorrect\r\nbootfarm login: ");
    assert!(c.login_incorrect);
    assert_eq!(
        decide(&c, Expect::Auto, End::LogEnded).reason,
        "login_incorrect"
    );
    let c = classify(b"bootfarm login: \r\nLogin timed out after 60 seconds\r\n");
    assert_eq!(
        decide(&c, Expect::Auto, End::LogEnded).reason,
        "login_timed_out"
    );
}

#[test]
fn a_command_echo_wrapped_by_the_terminal_still_names_the_test() {
    // As busybox echoed it on an 80-column serial console.
    let log = b"root@bootfarm:~# \x1b[6necho \"BF\"\"_S_f00dcafe_1\"; echo to-kmsg > /dev/kmsg; echo out; f\r\r\nalse; echo \"BF\"\"_E_f00dcafe_1_$?\"\r\nBF_S_f00dcafe_1\r\n[   32.826501] to-kmsg\r\nout\r\nBF_E_f00dcafe_1_1\r\nroot@bootfarm:~# ";
    let c = classify(log);
    assert_eq!(c.tests.len(), 1);
    assert_eq!(c.tests[0].name, "echo to-kmsg > /dev/kmsg; echo out; false");
    assert_eq!(c.tests[0].output.as_deref(), Some("out\n"));
}

#[test]
fn a_cut_here_block_with_no_more_specific_line_is_an_exception() {
    let log = "[    1.0] ------------[ cut here ]------------\r\n\
[    1.0] refcount_t: underflow; use-after-free.\r\n\
[    1.0] Modules linked in:\r\n\
[    1.0] Call Trace:\r\n\
[    1.0]  <TASK>\r\n\
[    1.0]  put_thing+0x12/0x40 [thing]\r\n\
[    1.0]  </TASK>\r\n\
[    1.0] ---[ end trace 0000000000000000 ]---\r\n\
[    2.0] Run /init as init process\r\n";
    let (c, ev) = run(ClassifierConfig::default(), log.as_bytes());
    assert_eq!(c.issues.len(), 1);
    let i = &c.issues[0];
    assert_eq!((i.kind, i.line, i.fatal), (IssueKind::Exception, 1, true));
    assert_eq!(i.summary, "refcount_t: underflow; use-after-free.");
    assert_eq!(i.excerpt.lines().count(), 8);
    // The event comes once the kind is known, never as a premature guess.
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Issue { .. }))
            .count(),
        1
    );
}

#[test]
fn ktap_directives() {
    let log = "TAP version 14\n1..6\nok 1 a # SKIP no hw\nnot ok 2 b # TODO later\nok 3 c # XFAIL known\nnot ok 4 d # TIMEOUT 30s\nok 5 e # ERROR setup\nnot ok 6 f\n";
    let c = classify(log.as_bytes());
    let got: Vec<_> = c
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.result, t.reason.as_deref()))
        .collect();
    use TestOutcome::*;
    assert_eq!(
        got,
        vec![
            ("a", Skip, Some("SKIP no hw")),
            ("b", Skip, Some("TODO later")),
            ("c", Pass, Some("XFAIL known")),
            ("d", Fail, Some("TIMEOUT 30s")),
            ("e", Fail, Some("ERROR setup")),
            ("f", Fail, None),
        ]
    );
}

#[test]
fn results_and_issues_are_bounded_and_counted() {
    let mut log = String::new();
    for i in 0..25_000 {
        log.push_str(&format!(
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t{i} RESULT=pass>\n"
        ));
    }
    for i in 0..1_200 {
        log.push_str(&format!("BUG: bug_{i} happened\n"));
    }
    // Repeats of a kept bug are counted on it, also beyond the bound.
    log.push_str("BUG: bug_0 happened\nBUG: bug_1100 happened\n");
    let c = classify(log.as_bytes());
    assert_eq!((c.tests.len(), c.dropped_tests), (20_000, 5_000));
    assert_eq!((c.issues.len(), c.dropped_issues), (1_000, 201));
    assert_eq!(c.issues[0].count, 2);
}

/// (sample, issue index, kind, title, function, count)
type Named = (
    &'static str,
    usize,
    IssueKind,
    &'static str,
    Option<&'static str>,
    u64,
);
const NAMED: &[Named] = &[
    (
        "lockdep-circular.log",
        0,
        IssueKind::Lockdep,
        "possible deadlock in pipe_write",
        Some("pipe_write"),
        1,
    ),
    (
        "memleak.log",
        1,
        IssueKind::Memleak,
        "memory leak in leaky_table_init",
        Some("leaky_table_init"),
        1,
    ),
    (
        "divide-error.log",
        0,
        IssueKind::Oops,
        "divide error in ratio_init",
        Some("ratio_init"),
        1,
    ),
    (
        "riscv64-oops.log",
        0,
        IssueKind::Oops,
        "BUG: unable to handle kernel NULL pointer dereference in sysrq_handle_crash",
        Some("sysrq_handle_crash"),
        1,
    ),
    (
        "arm64-oops.log",
        0,
        IssueKind::Oops,
        "BUG: unable to handle kernel NULL pointer dereference in sysrq_handle_crash",
        Some("sysrq_handle_crash"),
        1,
    ),
    (
        "arm32-unhandled-fault.log",
        0,
        IssueKind::Fault,
        "Unhandled fault in sysrq_handle_crash",
        Some("sysrq_handle_crash"),
        1,
    ),
    (
        "gpf.log",
        0,
        IssueKind::Fault,
        "general protection fault in broken_list_init",
        Some("broken_list_init"),
        1,
    ),
    (
        "invalid-opcode.log",
        0,
        IssueKind::InvalidOpcode,
        "invalid opcode in broken_init",
        Some("broken_init"),
        1,
    ),
    (
        "kcsan.log",
        0,
        IssueKind::Kcsan,
        "KCSAN: data-race in test_kernel_read / test_kernel_write",
        Some("test_kernel_read"),
        1,
    ),
    (
        "kfence.log",
        0,
        IssueKind::Kfence,
        "KFENCE: out-of-bounds read in test_out_of_bounds_read",
        Some("test_out_of_bounds_read"),
        1,
    ),
    (
        "ubsan-framed.log",
        0,
        IssueKind::Ubsan,
        "UBSAN: array-index-out-of-bounds in lkdtm_ARRAY_BOUNDS",
        Some("lkdtm_ARRAY_BOUNDS"),
        1,
    ),
    (
        "rcu-stall.log",
        0,
        IssueKind::RcuStall,
        "INFO: rcu detected stall in spin_forever",
        Some("spin_forever"),
        1,
    ),
    (
        "hard-lockup.log",
        0,
        IssueKind::HardLockup,
        "hard LOCKUP in test_lockup_init",
        Some("test_lockup_init"),
        1,
    ),
    (
        "hard-lockup.log",
        1,
        IssueKind::Panic,
        "kernel panic: Hard LOCKUP",
        None,
        1,
    ),
    // test_kasan's `kmalloc_oob_right` and `kmalloc_tests_init` match the allocator skip
    // pattern `k?v?(?:m|z|c)alloc` (syzkaller's), so syzbot's rule names the next frame.
    (
        "kasan.log",
        0,
        IssueKind::Kasan,
        "KASAN: slab-out-of-bounds Write in do_one_initcall",
        Some("do_one_initcall"),
        1,
    ),
    // The lockdep samples are real reports as their kernels printed them: an i386 QEMU
    // boot of 5.6-rc7 (kernel test robot), an arm64 5.18-rc1 kgdb session (cut after the
    // held locks), syzbot's 5.18-rc6 io_uring report (without syzbot's symbolization) and a
    // 7.0 QEMU x86_64 dmesg (cut inside the trace).
    (
        "lockdep-held-lock-freed.log",
        0,
        IssueKind::Lockdep,
        "WARNING: held lock freed in __device_driver_lock",
        Some("__device_driver_lock"),
        1,
    ),
    (
        "lockdep-bad-unlock.log",
        0,
        IssueKind::Lockdep,
        "WARNING: bad unlock balance in kgdb_cpu_enter",
        Some("kgdb_cpu_enter"),
        1,
    ),
    (
        "lockdep-still-held.log",
        0,
        IssueKind::Lockdep,
        "WARNING: still has locks held in io_ring_submit_lock",
        Some("io_ring_submit_lock"),
        1,
    ),
    (
        "lockdep-suspicious-rcu.log",
        0,
        IssueKind::Lockdep,
        "WARNING: suspicious RCU usage in mas_start",
        Some("mas_start"),
        1,
    ),
    (
        "firmware.log",
        0,
        IssueKind::ErrorCode,
        "Direct firmware load for regulatory.db failed with error -2",
        None,
        1,
    ),
    (
        "firmware.log",
        1,
        IssueKind::ErrorCode,
        "probe of thermal-sensor1 failed with error -22",
        None,
        2,
    ),
    (
        "firmware.log",
        2,
        IssueKind::UserFault,
        "a.out: segfault in a.out",
        None,
        1,
    ),
];

#[test]
fn issues_are_named_as_syzbot_names_them() {
    for (name, i, kind, title, function, count) in NAMED {
        let c = classify(&sample(name));
        let issue = c
            .issues
            .get(*i)
            .unwrap_or_else(|| panic!("{name}: no issue {i} in {:#?}", c.issues));
        assert_eq!(
            (
                issue.kind,
                issue.title.as_str(),
                issue.function.as_deref(),
                issue.count
            ),
            (*kind, *title, *function, *count),
            "{name}"
        );
    }
}

#[test]
fn firmware_output_never_makes_issues_and_new_kinds_do_not_fail() {
    let c = classify(&sample("firmware.log"));
    // Nine firmware lines before the kernel (WARNING:, an errno line) are kept out.
    assert!(c.issues.iter().all(|i| i.line > 12), "{:#?}", c.issues);
    assert_eq!(c.issues.len(), 3);
    assert!(c.issues.iter().all(|i| !i.fatal));
    let d = decide(&c, Expect::Auto, End::LogEnded);
    assert_eq!(
        (d.verdict.as_str(), d.reason.as_str()),
        ("pass", "poweroff")
    );
    // A log whose kernel never started has no issue at all.
    let log = sample("firmware.log");
    let text = String::from_utf8_lossy(&log);
    let firmware_only: String = text.lines().take(11).map(|l| format!("{l}\r\n")).collect();
    let c = classify(firmware_only.as_bytes());
    assert_eq!((c.issues.len(), c.stage), (0, Stage::None));
    // Kernel-shaped reports still count without timestamps (a report pasted alone).
    let c = classify(
        b"WARNING: CPU: 0 PID: 1 at net/core/dev.c:123 foo+0x1/0x2\nCall Trace:\n bar+0x1/0x2\n",
    );
    assert_eq!(
        (c.issues[0].kind, c.issues[0].title.as_str()),
        (IssueKind::Warning, "WARNING in bar")
    );
    let c = classify(b"WARNING: Caches not enabled\n");
    assert_eq!(c.issues, vec![]);
}

#[test]
fn lockdep_memleak_error_code_and_user_faults_are_recorded_not_failed() {
    for k in [
        IssueKind::Lockdep,
        IssueKind::Memleak,
        IssueKind::ErrorCode,
        IssueKind::UserFault,
    ] {
        assert!(!k.fails_by_default(), "{k:?}");
    }
    assert!(IssueKind::Kmsan.fails_by_default());
    let log = "[    1.0] traps: a.out[123] general protection fault ip:401136 sp:7ffd8 error:0 in libc.so.6[7f00+1000]\r\n";
    let c = classify(log.as_bytes());
    assert_eq!(
        (
            c.issues[0].kind,
            c.issues[0].fatal,
            c.issues[0].title.as_str()
        ),
        (
            IssueKind::UserFault,
            false,
            "traps: a.out: general protection fault in libc.so.6"
        )
    );
}

#[test]
fn repeated_reports_of_one_bug_are_one_issue_with_a_count() {
    let one = "[    1.0] ------------[ cut here ]------------\r\n\
[    1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\r\n\
[    1.0] RIP: 0010:f+0x1/0x2\r\n\
[    1.0] ---[ end trace 0000000000000000 ]---\r\n";
    let other = one.replace("f+0x1", "g+0x1").replace("CPU: 0", "CPU: 1");
    let log = format!("{one}{}{one}{other}", one.replace("PID: 1", "PID: 7"));
    let c = classify(log.as_bytes());
    let got: Vec<_> = c
        .issues
        .iter()
        .map(|i| (i.title.as_str(), i.count, i.line))
        .collect();
    assert_eq!(got, vec![("WARNING in f", 3, 1), ("WARNING in g", 1, 13)]);
}

#[test]
fn interleaved_lines_of_other_cpus_stay_out_of_the_report() {
    let log = "[    1.0][    C1] BUG: KMSAN: uninit-value in virtqueue_add+0x20e2/0x60f0\r\n\
[    1.0][T12093] other_cpu_func+0x1/0x2\r\n\
[    1.0][    C1]  virtqueue_add+0x20e2/0x60f0\r\n";
    let c = classify(log.as_bytes());
    assert_eq!(c.issues[0].title, "KMSAN: uninit-value in virtqueue_add");
    assert!(!c.issues[0].excerpt.contains("other_cpu_func"));
}
