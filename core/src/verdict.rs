//! The verdict: a pure decision from what the console showed and how the run ended.

use crate::console::Classification;
use crate::result::{BootResult, ConsoleInfo, Stage, TestOutcome, Verdict, SCHEMA};
use serde::{Deserialize, Serialize};

/// What the job expects the guest to reach (`--expect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// A login or shell prompt, or userspace then a clean power-off.
    #[default]
    Auto,
    Poweroff,
    Login,
    Shell,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Auto => "auto",
            Expect::Poweroff => "poweroff",
            Expect::Login => "login",
            Expect::Shell => "shell",
        }
    }
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Expect::Auto),
            "poweroff" => Ok(Expect::Poweroff),
            "login" => Ok(Expect::Login),
            "shell" => Ok(Expect::Shell),
            other => Err(format!(
                "unknown expectation {other:?} (expected auto, poweroff, login or shell)"
            )),
        }
    }
}

/// How the run ended, as seen by whoever drove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The guest powered off / QEMU reported a guest shutdown.
    PowerOff,
    /// The guest reset or rebooted (with -no-reboot QEMU exits).
    Reset,
    /// The driver stopped because the expected prompt was reached (and any commands ran).
    PromptReached,
    /// A fatal panic was seen (console or pvpanic) and the run was stopped.
    Panic,
    /// The boot timeout (until the expected prompt or power-off) expired.
    BootTimeout,
    /// The total timeout expired.
    TotalTimeout,
    /// QEMU exited on its own for another reason.
    QemuExited,
    /// An offline log simply ended (`classify`).
    LogEnded,
}

/// The decision with its short reason and one human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    pub summary: String,
}

impl Decision {
    fn new(verdict: Verdict, reason: &str, summary: impl Into<String>) -> Self {
        Decision {
            verdict,
            reason: reason.to_string(),
            summary: summary.into(),
        }
    }
}

/// Decide pass or fail. Infrastructure errors never reach here: they are `Verdict::Error`
/// decided by the runner before or around the boot.
pub fn decide(c: &Classification, expect: Expect, end: End) -> Decision {
    if let Some(issue) = c.issues.iter().find(|i| i.fatal) {
        return Decision::new(
            Verdict::Fail,
            issue.kind.as_str(),
            format!("{}: {}", issue.kind.as_str(), issue.summary),
        );
    }
    if c.login_incorrect {
        return Decision::new(Verdict::Fail, "login_incorrect", "Login incorrect");
    }
    if c.login_timed_out {
        return Decision::new(Verdict::Fail, "login_timed_out", "Login timed out");
    }
    if let Some(t) = c.tests.iter().find(|t| t.result == TestOutcome::Fail) {
        let name = if t.suite.is_empty() {
            t.name.clone()
        } else {
            format!("{}/{}", t.suite, t.name)
        };
        return Decision::new(Verdict::Fail, "test_failed", format!("test {name} failed"));
    }
    match end {
        End::BootTimeout | End::TotalTimeout => {
            let which = if end == End::BootTimeout {
                "boot"
            } else {
                "total"
            };
            return Decision::new(
                Verdict::Fail,
                "timeout",
                format!("{which} timeout at stage {}", c.stage.as_str()),
            );
        }
        End::Panic => return Decision::new(Verdict::Fail, "panic", "kernel panic"),
        _ => {}
    }
    let reached = |s: Stage| c.stage >= s;
    let powered_off = c.powered_off || end == End::PowerOff;
    let ok = match expect {
        Expect::Auto => reached(Stage::Login) || (reached(Stage::Userspace) && powered_off),
        Expect::Poweroff => reached(Stage::Userspace) && powered_off,
        Expect::Login => reached(Stage::Login),
        Expect::Shell => c.stage == Stage::Shell,
    };
    if ok {
        let how = if powered_off && !reached(Stage::Login) {
            "poweroff"
        } else {
            "prompt"
        };
        return Decision::new(
            Verdict::Pass,
            how,
            format!("reached {} with no failing issue", c.stage.as_str()),
        );
    }
    let reason = match end {
        End::Reset => "reset",
        End::QemuExited => "qemu_exit",
        End::LogEnded => "incomplete",
        _ => "expectation_not_met",
    };
    Decision::new(
        Verdict::Fail,
        reason,
        format!(
            "expected {:?} but the guest only reached stage {}",
            expect,
            c.stage.as_str()
        )
        .to_lowercase(),
    )
}

/// The result document for a classified console and its decision. Fields that only a live run
/// knows (arch, accel, durations, qemu, artifacts, whether the stored log was cut) are left
/// empty for the caller to fill.
pub fn result_from(c: Classification, d: Decision) -> BootResult {
    let mut r = BootResult {
        schema: SCHEMA.to_string(),
        result: d.verdict,
        reason: d.reason,
        summary: d.summary,
        stage: Stage::None,
        kernel_version: None,
        arch: None,
        accel: None,
        accel_reason: None,
        durations: Default::default(),
        issues: Vec::new(),
        tests: Vec::new(),
        error: None,
        qemu: None,
        artifacts: Default::default(),
        console: ConsoleInfo::default(),
        warnings: Vec::new(),
    };
    record_console(&mut r, c);
    r
}

/// Puts what the console showed into `r` (stage, kernel version, issues, tests, console
/// counts), whatever the verdict: an infrastructure error keeps how far the guest got.
/// `console.truncated` is left as it is: only the log's writer knows it.
pub fn record_console(r: &mut BootResult, c: Classification) {
    r.stage = c.stage;
    r.kernel_version = c.kernel_version;
    r.issues = c.issues;
    r.tests = c.tests;
    r.console = ConsoleInfo {
        bytes: c.bytes,
        lines: c.lines,
        truncated: r.console.truncated,
        dropped_issues: c.dropped_issues,
        dropped_tests: c.dropped_tests,
    };
}
