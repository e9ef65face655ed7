//! Property tests (the fuzz pass CI runs): arbitrary bytes never panic or hang, how the bytes
//! are chunked never changes the result, and work grows linearly with the input.

use bootfarm_core::console::{Classification, Classifier, ClassifierConfig};
use proptest::prelude::*;
use std::time::Instant;

/// Pieces of real console text, so random logs reach deep states (open reports, KTAP levels,
/// LAVA captures, command markers, prompts, split fragments) and not only the fast path.
const TOKENS: &[&str] = &[
    "[    1.234567] ",
    "<4>[    2.000000][   T42] ",
    "[  C1] ",
    "------------[ cut here ]------------",
    "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2",
    "kernel BUG at x.c:2!",
    "invalid opcode: 0000 [#1]",
    "Kernel panic - not syncing: x",
    "---[ end trace 0000000000000000 ]---",
    "==================================================================",
    "BUG: KASAN: use-after-free in f+0x1/0x2",
    "Call Trace:",
    "WARNING: possible circular locking dependency detected",
    "ffff8880 (&pipe->mutex/1){+.+.}-{3:3}, at: pipe_write+0x12e/0x1b70",
    "is trying to acquire lock:",
    "BUG: KMSAN: uninit-value in f+0x1/0x2",
    "Uninit was created at:",
    "unreferenced object 0xffff888004b1e3c0 (size 64):",
    "  backtrace (crc 5d2b9f51):",
    "Oops: divide error: 0000 [#1] SMP",
    "RIP: 0010:f+0x1/0x2",
    "pc : f+0x1/0x2",
    "epc : f+0x1/0x2",
    "[<c05a0b5c>] (f) from [<c05a1234>] (g+0x1/0x2)",
    " ? h+0x1/0x2",
    "INFO: task ",
    "x:1 blocked for more than 2 seconds.",
    "probe of thermal-sensor1 failed with error -22",
    "a.out[77]: segfault at 0 ip 0 sp 0 error 6 in a.out[400000+1000]",
    "WARNING: Caches not enabled",
    "[    1.0][    C1] ",
    "[    1.0][ T42] ",
    " <TASK>",
    " <IRQ>",
    " </IRQ>",
    " foo+0x1/0x2 [m]",
    " </TASK>",
    "x invoked oom-killer: gfp_mask=0x0",
    "Out of memory: Killed process 1 (x)",
    "KTAP version 1",
    "TAP version 13",
    "1..3",
    "    ",
    "# ",
    "# Subtest: s",
    "ok 1 a",
    "not ok 2 b # SKIP",
    "Bail out!",
    "<LAVA_SIGNAL_STARTRUN 0_a uuid>",
    "<LAVA_SIGNAL_ENDRUN 0_a uuid>",
    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t RESULT=pass MEASUREMENT=1 UNITS=s>",
    "<LAVA_SIGNAL_STARTTC t>",
    "<LAVA_SIGNAL_ENDTC t>",
    "<LAVA_SIGNAL_TESTSET START s>",
    "<LAVA_SIGNAL_TESTSET STOP>",
    "<LAVA_SIGNAL_TESTRAISE x>",
    "<TEST_CASE_ID=f RESULT=fail>",
    "/ # ",
    "root@h:~# ",
    "bootfarm login: ",
    "Password: ",
    "Login incorrect",
    "echo \"BF\"\"_S_abcdef12_0\"; ls; echo \"BF\"\"_E_abcdef12_0_$?\"",
    "BF_S_abcdef12_0",
    "BF_E_abcdef12_0_0",
    "Linux version 6.1.0 (x@y) #1",
    "Run /init as init process",
    "reboot: Power down",
    "\x1b[1;32m",
    "\x1b]0;t\x07",
    "\x08",
    "\r",
    "\n",
    "\r\n",
    "\u{fffd}é",
];

fn token_log() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0..TOKENS.len()).prop_map(|i| TOKENS[i].as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..24),
        ],
        0..200,
    )
    .prop_map(|parts| parts.concat())
}

fn whole(bytes: &[u8]) -> Classification {
    let mut c = Classifier::new(cfg());
    c.feed(bytes);
    c.finish()
}

fn chunked(bytes: &[u8], cuts: &[usize]) -> Classification {
    let mut c = Classifier::new(cfg());
    let mut rest = bytes;
    for &n in cuts {
        if rest.is_empty() {
            break;
        }
        let n = n.clamp(1, rest.len());
        c.feed(&rest[..n]);
        rest = &rest[n..];
    }
    c.feed(rest);
    c.finish()
}

fn cfg() -> ClassifierConfig {
    ClassifierConfig {
        failure_patterns: vec![regex::Regex::new("x.c:[0-9]").expect("regex")],
        expect_tests: vec!["a".into(), "t".into()],
        ..Default::default()
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer fuzz pass.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let c = whole(&bytes);
        prop_assert_eq!(c.bytes, bytes.len() as u64);
    }

    #[test]
    fn chunking_never_changes_the_result(
        bytes in token_log(),
        cuts in prop::collection::vec(1usize..64, 0..200),
    ) {
        prop_assert_eq!(whole(&bytes), chunked(&bytes, &cuts));
    }
}

/// Seconds per megabyte for a log made of `unit` repeated to `size` bytes.
fn rate(unit: &[u8], size: usize) -> f64 {
    let mut log = Vec::with_capacity(size + unit.len());
    while log.len() < size {
        log.extend_from_slice(unit);
    }
    let t = Instant::now();
    let mut c = Classifier::new(ClassifierConfig::default());
    for chunk in log.chunks(4096) {
        c.feed(chunk);
    }
    let _ = c.finish();
    t.elapsed().as_secs_f64() / (log.len() as f64 / 1e6)
}

#[test]
fn work_is_linear_even_on_pathological_input() {
    let long_brackets = [b"[ 1.2".repeat(2000), b"\n".to_vec()].concat();
    let units: Vec<(&str, Vec<u8>)> = vec![
        ("no line end at all", b"[ [ [ / # abc ".to_vec()),
        ("brackets in very long lines", long_brackets),
        ("report after report", b"[    1.0] ------------[ cut here ]------------\r\n[    1.0] BUG: x\r\n".to_vec()),
        ("deep KTAP", b"KTAP version 1\n1..9\n    KTAP version 1\n        KTAP version 1\n            # Subtest: x\n            ok 1 a\n".to_vec()),
        ("interleaved fragments", b"<LAVA_SIGNAL_TEST[    1.0] x\r\n".to_vec()),
        ("escapes", b"\x1b[1;32m/ # \x1b[0m\x08\x08\r".to_vec()),
    ];
    for (what, unit) in units {
        // The cost per MB must not grow with the input (a quadratic scan would be 8x here).
        // Compared in the same minute, so a loaded machine slows both alike; the best of a few
        // runs drops the worst of the noise.
        let best = |size| (0..3).map(|_| rate(&unit, size)).fold(f64::MAX, f64::min);
        let small = best(256 << 10);
        let large = best(2 << 20);
        assert!(
            large < small * 4.0 + 0.05,
            "{what}: {small:.4} s/MB at 256 KiB but {large:.4} s/MB at 2 MiB"
        );
    }
}
