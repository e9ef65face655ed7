//! `bootfarm-runner classify FILE`: the offline classifier. It feeds a saved console log to the
//! same classifier a live boot uses and prints the same result document (fields only a live
//! run knows are null), so a log classifies the same way offline as it did live.

use crate::cli::{parse_expect, PolicyArgs};
use anyhow::Context;
use bootfarm_core::console::{Classifier, ClassifierConfig};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Text,
}

/// The marker the runner writes where it cut an over-long stored log.
const CUT_MARKER: &str = "[bootfarm: console log limit reached";

/// Classify a whole log from a reader, in bounded memory.
pub fn classify_reader(
    mut input: impl Read,
    cfg: ClassifierConfig,
    expect: Expect,
) -> std::io::Result<BootResult> {
    let mut classifier = Classifier::new(cfg);
    let cut = regex::bytes::Regex::new(&regex::escape(CUT_MARKER)).expect("escaped literal");
    let mut truncated = false;
    let mut buf = vec![0u8; 256 * 1024];
    // The tail of the previous chunk, so a marker split across reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if !truncated {
            carry.extend_from_slice(&chunk[..chunk.len().min(CUT_MARKER.len())]);
            truncated = cut.is_match(&carry) || cut.is_match(chunk);
            carry.clear();
            carry.extend_from_slice(&chunk[chunk.len().saturating_sub(CUT_MARKER.len())..]);
        }
        classifier.feed(chunk);
    }
    let class = classifier.finish();
    let decision = decide(&class, expect, End::LogEnded);
    let mut result = result_from(class, decision);
    result.console.truncated = truncated;
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
    Ok(result.result.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_powered_off_log_passes_and_a_cut_log_is_marked() {
        let log = b"[    0.000000] Linux version 6.1.0 (x@y) #1\r\n[    1.0] Run /init as init process\r\n\
[bootfarm: console log limit reached after 10 bytes; output is cut here and resumes]\n\
[    2.0] reboot: Power down\r\n";
        let r = classify_reader(&log[..], ClassifierConfig::default(), Expect::Auto).unwrap();
        assert_eq!(r.result.as_str(), "pass");
        assert_eq!(r.reason, "poweroff");
        assert_eq!(r.kernel_version.as_deref(), Some("6.1.0"));
        assert!(r.console.truncated);
        assert_eq!(r.accel, None);
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
