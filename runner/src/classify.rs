//! `bootfarm-runner classify FILE`: the offline classifier. It feeds a saved console log to the
//! same classifier a live boot uses and prints the same result document (fields only a live
//! run knows are null), so a log classifies the same way offline as it did live.

use anyhow::Context;
use bootfarm_core::cli::{parse_expect, PolicyArgs};
use bootfarm_core::console::{Classifier, ClassifierConfig};
use bootfarm_core::console_cap::MarkerFilter;
use bootfarm_core::result::BootResult;
use bootfarm_core::verdict::{decide, result_from, End, Expect};
use clap::{Args, ValueEnum};
use std::io::Read;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// A saved serial console log (`-` for standard input).
    pub file: std::path::PathBuf,
    /// What the guest had to reach: auto (a prompt, or userspace then power-off), poweroff,
    /// login or shell.
    #[arg(long, default_value = "auto", value_parser = parse_expect)]
    pub expect: Expect,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// `json` (the bootfarm.result/v1 document) or `text` (one line).
    #[arg(long, value_enum, default_value = "json")]
    pub output: Output,
    #[command(flatten)]
    pub reports: crate::output::ReportArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Text,
}

/// Classify a whole log from a reader, in bounded memory. Cut markers
/// ([`bootfarm_core::console_cap`]) make the log truncated and are not classified: the
/// classifier sees only what the guest printed.
pub fn classify_reader(
    mut input: impl Read,
    cfg: ClassifierConfig,
    expect: Expect,
) -> std::io::Result<BootResult> {
    let mut classifier = Classifier::new(cfg);
    let mut markers = MarkerFilter::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        markers.feed(&buf[..n], &mut |console| {
            classifier.feed(console);
        });
    }
    markers.finish(&mut |console| {
        classifier.feed(console);
    });
    let class = classifier.finish();
    let decision = decide(&class, expect, End::LogEnded);
    let mut result = result_from(class, decision);
    result.console.truncated = markers.cuts() > 0;
    Ok(result)
}

/// Returns the process exit status: 0 pass, 1 fail.
pub fn run(args: ClassifyArgs) -> anyhow::Result<i32> {
    let cfg = args.policy.classifier_config();
    let result = if args.file.as_os_str() == "-" {
        classify_reader(std::io::stdin().lock(), cfg, args.expect)
            .context("reading the console log from standard input")?
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("opening console log {}", args.file.display()))?;
        classify_reader(f, cfg, args.expect)
            .with_context(|| format!("reading console log {}", args.file.display()))?
    };
    let text = match args.output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&result)?),
        Output::Text => format!(
            "{}: {} (stage {}, {} issue(s), {} test(s))\n",
            result.result.as_str(),
            result.summary,
            result.stage.as_str(),
            result.issues.len(),
            result.tests.len()
        ),
    };
    // A full disk or a closed pipe is an error to report, not a panic (print! would panic).
    crate::output::write_stdout(&text).context("writing the result")?;
    let suite = args
        .file
        .file_name()
        .map_or("stdin".into(), |n| n.to_string_lossy().into_owned());
    args.reports.write(&result, &suite)?;
    Ok(result.result.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_powered_off_log_passes_and_a_cut_log_is_marked() {
        let log = b"[    0.000000] Linux version 6.1.0 (x@y) #1\r\n[    1.0] Run /init as init process\r\n\
[bootfarm: console cut: 10 bytes omitted by the runner]\n\
[    2.0] reboot: Power down\r\n";
        let r = classify_reader(&log[..], ClassifierConfig::default(), Expect::Auto).unwrap();
        assert_eq!(r.result.as_str(), "pass");
        assert_eq!(r.reason, "poweroff");
        assert_eq!(r.kernel_version.as_deref(), Some("6.1.0"));
        assert!(r.console.truncated);
        assert_eq!(r.accel, None);
        // The marker is not console: neither its bytes nor its line are counted.
        let marker_len = "[bootfarm: console cut: 10 bytes omitted by the runner]\n".len() as u64;
        assert_eq!(r.console.bytes, log.len() as u64 - marker_len);
        assert_eq!(r.console.lines, 3);
    }

    #[test]
    fn the_old_markers_mean_truncated_too() {
        for marker in [
            "[bootfarm: console log limit reached after 10 bytes; output is cut here and only the last 5 bytes are kept]",
            "[bootfarm: 6 bytes of console dropped: the operator was too slow]",
            "[bootfarm: console log cut here: size limit reached]",
        ] {
            // Userspace was reached: a power-off then passes (in the kernel stage it would not).
            let log = format!(
                "[    0.000000] Linux version 6.1.0 (x@y) #1\n[    1.0] Run /init as init process\n\
                 {marker}\n[    2.0] reboot: Power down\n"
            );
            let r = classify_reader(log.as_bytes(), ClassifierConfig::default(), Expect::Auto).unwrap();
            assert!(r.console.truncated, "{marker}");
            assert_eq!(r.reason, "poweroff", "{marker}");
            // The marker line is not the guest's: not counted.
            assert_eq!(r.console.lines, 3, "{marker}");
        }
    }

    #[test]
    fn a_panic_after_the_cut_is_found_and_nothing_is_made_of_the_marker() {
        // The cut fell inside a report: the head's half-line ends before the marker, the tail
        // starts at a line.
        let log =
            b"[    0.000000] Linux version 6.1.0 (x@y) #1\n[    1.0] Run /init as init process\n\
[    3.0] ------------[ cut here ]------------\n[    3.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x\n\
[bootfarm: console cut: 4000000 bytes omitted by the operator]\n\
[    9.0] Kernel panic - not syncing: sysrq triggered crash\n";
        let r = classify_reader(&log[..], ClassifierConfig::default(), Expect::Auto).unwrap();
        assert_eq!(r.result.as_str(), "fail");
        assert_eq!(r.reason, "panic");
        assert!(r.console.truncated);
        assert!(
            r.issues.iter().all(|i| !i.excerpt.contains("bootfarm")),
            "{:#?}",
            r.issues
        );
    }

    #[test]
    fn a_log_that_just_stops_is_incomplete() {
        let log = b"[    0.000000] Linux version 6.1.0 (x@y) #1\r\n[    0.1] foo";
        let r = classify_reader(&log[..], ClassifierConfig::default(), Expect::Auto).unwrap();
        assert_eq!(r.result.as_str(), "fail");
        assert_eq!(r.reason, "incomplete");
        assert_eq!(r.stage.as_str(), "kernel");
        assert!(!r.console.truncated);
    }
}
