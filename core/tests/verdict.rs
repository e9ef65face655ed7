//! The pass/fail decision, from classifications of small real-shaped consoles.

use bootfarm_core::console::{Classification, Classifier, ClassifierConfig};
use bootfarm_core::result::Verdict;
use bootfarm_core::verdict::{decide, result_from, End, Expect};

fn class(log: &str) -> Classification {
    let mut c = Classifier::new(ClassifierConfig::default());
    c.feed(log.as_bytes());
    c.finish()
}

const KERNEL: &str = "[    0.000000] Linux version 6.1.0-56-amd64 (x@y) #1\r\n";
const INIT: &str = "[    1.000000] Run /init as init process\r\n";

fn reason(log: &str, expect: Expect, end: End) -> (Verdict, String) {
    let d = decide(&class(log), expect, end);
    (d.verdict, d.reason)
}

#[test]
fn auto_passes_on_a_prompt_or_userspace_then_poweroff() {
    let off = format!("{KERNEL}{INIT}[    2.0] reboot: Power down\r\n");
    assert_eq!(
        reason(&off, Expect::Auto, End::PowerOff),
        (Verdict::Pass, "poweroff".into())
    );
    assert_eq!(
        reason(&off, Expect::Auto, End::LogEnded),
        (Verdict::Pass, "poweroff".into())
    );
    let login = format!("{KERNEL}{INIT}bootfarm login: ");
    assert_eq!(
        reason(&login, Expect::Auto, End::PromptReached),
        (Verdict::Pass, "prompt".into())
    );
    assert_eq!(
        reason(&login, Expect::Shell, End::PromptReached).0,
        Verdict::Fail
    );
    let shell = format!("{KERNEL}{INIT}/ # ");
    assert_eq!(
        reason(&shell, Expect::Shell, End::PromptReached),
        (Verdict::Pass, "prompt".into())
    );
}

#[test]
fn a_poweroff_before_userspace_is_not_a_pass() {
    let log = format!("{KERNEL}[    2.0] reboot: Power down\r\n");
    let (v, r) = reason(&log, Expect::Auto, End::PowerOff);
    assert_eq!((v, r.as_str()), (Verdict::Fail, "expectation_not_met"));
}

#[test]
fn endings_name_their_reason() {
    let log = format!("{KERNEL}{INIT}");
    assert_eq!(reason(&log, Expect::Auto, End::BootTimeout).1, "timeout");
    assert_eq!(reason(&log, Expect::Auto, End::TotalTimeout).1, "timeout");
    assert_eq!(reason(&log, Expect::Auto, End::Reset).1, "reset");
    assert_eq!(reason(&log, Expect::Auto, End::QemuExited).1, "qemu_exit");
    assert_eq!(reason(&log, Expect::Auto, End::LogEnded).1, "incomplete");
    assert_eq!(reason(&log, Expect::Auto, End::Panic).1, "panic");
    let d = decide(&class(&log), Expect::Auto, End::BootTimeout);
    assert_eq!(d.summary, "boot timeout at stage userspace");
}

#[test]
fn a_fatal_issue_beats_a_reached_prompt_and_a_recorded_one_does_not() {
    let bug = format!("{KERNEL}{INIT}[    1.5] BUG: scheduling while atomic: x/1/0x2\r\n/ # ");
    let d = decide(&class(&bug), Expect::Auto, End::PromptReached);
    assert_eq!((d.verdict, d.reason.as_str()), (Verdict::Fail, "bug"));
    assert_eq!(d.summary, "bug: BUG: scheduling while atomic: x/1/0x2");
    let oom = format!("{KERNEL}{INIT}[    1.5] Out of memory: Killed process 9 (dd)\r\n/ # ");
    assert_eq!(
        reason(&oom, Expect::Auto, End::PromptReached).0,
        Verdict::Pass
    );
}

#[test]
fn the_result_document_carries_the_classification() {
    let log = format!("{KERNEL}{INIT}[    1.5] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\r\n/ # ");
    let c = class(&log);
    let d = decide(&c, Expect::Auto, End::PromptReached);
    let r = result_from(c, d);
    let v = serde_json::to_value(&r).expect("json");
    assert_eq!(v["schema"], "bootfarm.result/v1");
    assert_eq!(v["result"], "pass");
    assert_eq!(v["stage"], "shell");
    assert_eq!(v["kernel_version"], "6.1.0-56-amd64");
    assert_eq!(v["issues"][0]["kind"], "warning");
    assert_eq!(v["issues"][0]["fatal"], false);
    assert_eq!(v["issues"][0]["line"], 3);
    assert_eq!(v["console"]["lines"], 4);
    assert!(v["accel"].is_null() && v["qemu"].is_null() && v["durations"]["total"].is_null());
}

#[test]
fn the_result_document_counts_what_the_classifier_dropped() {
    let mut log = KERNEL.to_string();
    for i in 0..1_005 {
        log.push_str(&format!("[    1.000000] BUG: bug_{i} happened\r\n"));
    }
    let c = class(&log);
    let d = decide(&c, Expect::Auto, End::LogEnded);
    let v = serde_json::to_value(result_from(c, d)).expect("json");
    assert_eq!(v["issues"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(v["console"]["dropped_issues"], 5, "{}", v["console"]);
    assert_eq!(v["console"]["dropped_tests"], 0);
}
