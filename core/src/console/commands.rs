//! Markers around interactive `--command`s. The session types
//! `echo "BF""_S_<nonce>_<i>"; CMD; echo "BF""_E_<nonce>_<i>_$?"`: the shell prints
//! `BF_S_<nonce>_<i>`, the output, then `BF_E_<nonce>_<i>_<status>`. The echo of the typed line
//! never contains the joined marker (the quotes split it), and the classifier accepts any nonce
//! of the right shape, so `classify` on a saved log finds the same test cases as the live run.

use crate::result::{TestCase, TestOutcome};
use regex::Regex;
use std::collections::VecDeque;
use std::sync::OnceLock;

pub const SUITE: &str = "commands";
/// Captured output per command.
pub const OUTPUT_MAX: usize = 16 * 1024;

/// The line the session types for command `index`.
pub fn command_line(nonce: &str, index: usize, cmd: &str) -> String {
    format!("echo \"BF\"\"_S_{nonce}_{index}\"; {cmd}; echo \"BF\"\"_E_{nonce}_{index}_$?\"")
}

/// A fresh nonce: lowercase hex, the shape the classifier accepts.
pub fn is_nonce(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

struct Res {
    start: Regex,
    end: Regex,
    echo: Regex,
}

fn res() -> &'static Res {
    static RES: OnceLock<Res> = OnceLock::new();
    RES.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("static regex");
        Res {
            start: re(r"BF_S_([0-9a-z]{6,32})_(\d{1,6})\b"),
            end: re(r"BF_E_([0-9a-z]{6,32})_(\d{1,6})_(\d{1,3})\b"),
            echo: re(r#"echo "BF""_S_([0-9a-z]{6,32})_(\d{1,6})"; (.*); echo "BF""_E_"#),
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub nonce: String,
    pub index: u32,
}

/// `BF_S_<nonce>_<i>` printed by the shell.
pub fn start(text: &str) -> Option<Marker> {
    let c = res().start.captures(text)?;
    Some(Marker {
        nonce: c[1].to_string(),
        index: c[2].parse().ok()?,
    })
}

/// `BF_E_<nonce>_<i>_<status>`: the marker, the status, and where the marker starts (output
/// without a trailing newline runs into it).
pub fn end(text: &str) -> Option<(Marker, i32, usize)> {
    let c = res().end.captures(text)?;
    let at = c.get(0)?.start();
    Some((
        Marker {
            nonce: c[1].to_string(),
            index: c[2].parse().ok()?,
        },
        c[3].parse().ok()?,
        at,
    ))
}

/// The echo of a typed command line: its marker and the command itself (the test name).
pub fn echo(text: &str) -> Option<(Marker, String)> {
    let c = res().echo.captures(text)?;
    Some((
        Marker {
            nonce: c[1].to_string(),
            index: c[2].parse().ok()?,
        },
        c[3].to_string(),
    ))
}

/// A command between its start marker and its end marker.
#[derive(Debug)]
struct Running {
    marker: Marker,
    name: String,
    output: String,
    truncated: bool,
}

/// The interactive commands seen so far: the names typed (from their echo), the command
/// running and its captured output.
#[derive(Debug, Default)]
pub struct Commands {
    running: Option<Running>,
    /// Names parsed from the echo of typed command lines.
    names: VecDeque<(Marker, String)>,
    /// The start of a command echo the terminal wrapped, with the lines joined so far.
    pending_echo: Option<(String, u32)>,
}

/// What a marker line did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    NotAMarker,
    Marker,
    /// A command finished: its test case and the end marker's status.
    Ended(Box<TestCase>, Marker, i32),
}

impl Commands {
    /// Whether a wrapped echo is being joined (the line continues a typed command).
    pub fn joining_echo(&self) -> bool {
        self.pending_echo.is_some()
    }

    fn name(&mut self, m: Marker, cmd: String) {
        if self.names.len() >= 8 {
            self.names.pop_front();
        }
        self.names.push_back((m, cmd));
    }

    /// A line after the first part of a wrapped command echo.
    pub fn continue_echo(&mut self, text: &str, max: usize) {
        let Some((mut joined, n)) = self.pending_echo.take() else {
            return;
        };
        joined.push_str(text);
        if let Some((m, cmd)) = echo(&joined) {
            self.name(m, cmd);
        } else if n < 8 && joined.len() < max && start(text).is_none() {
            self.pending_echo = Some((joined, n + 1));
        }
    }

    /// A userspace line that may be a marker (or the echo of a typed command line).
    pub fn marker(&mut self, text: &str, prompt_echo: bool, out: &mut Vec<TestCase>) -> Outcome {
        if prompt_echo || text.contains("\"BF\"\"_S_") {
            if let Some((m, cmd)) = echo(text) {
                self.name(m, cmd);
                return Outcome::Marker;
            }
            if text.contains("\"BF\"\"_S_") {
                // The terminal wrapped the echo of a long line: join the following lines.
                self.pending_echo = Some((text.to_string(), 0));
            }
            return Outcome::NotAMarker;
        }
        if let Some((m, status, at)) = end(text) {
            let Some(mut c) = self.running.take() else {
                return Outcome::Marker;
            };
            if c.marker != m {
                self.running = Some(c);
                return Outcome::Marker;
            }
            if at > 0 && !c.truncated {
                c.truncated = !super::push_line_capped(&mut c.output, &text[..at], OUTPUT_MAX);
            }
            let mut reason = (status != 0).then(|| format!("exit status {status}"));
            if c.truncated {
                reason = Some(match reason {
                    Some(r) => format!("{r}; output truncated"),
                    None => "output truncated".to_string(),
                });
            }
            let case = TestCase {
                name: c.name,
                result: if status == 0 {
                    TestOutcome::Pass
                } else {
                    TestOutcome::Fail
                },
                suite: SUITE.to_string(),
                measurement: None,
                units: None,
                reason,
                output: Some(c.output),
            };
            return Outcome::Ended(Box::new(case), m, status);
        }
        if let Some(m) = start(text) {
            let name = self
                .names
                .iter()
                .rev()
                .find(|(n, _)| *n == m)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| format!("command-{}", m.index));
            if let Some(prev) = self.running.take() {
                out.push(unfinished(prev));
            }
            self.running = Some(Running {
                marker: m,
                name,
                output: String::new(),
                truncated: false,
            });
            return Outcome::Marker;
        }
        Outcome::NotAMarker
    }

    /// A line the shell printed: the running command's output.
    pub fn output(&mut self, text: &str) {
        if let Some(c) = &mut self.running {
            if !c.truncated {
                c.truncated = !super::push_line_capped(&mut c.output, text, OUTPUT_MAX);
            }
        }
    }

    /// The log ended: a command still running did not finish.
    pub fn finish(&mut self) -> Option<TestCase> {
        self.running.take().map(unfinished)
    }
}

fn unfinished(c: Running) -> TestCase {
    TestCase {
        name: c.name,
        result: TestOutcome::Fail,
        suite: SUITE.to_string(),
        measurement: None,
        units: None,
        reason: Some("no exit status: the command did not finish".to_string()),
        output: Some(c.output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_line_does_not_contain_its_markers() {
        let l = command_line("a1b2c3d4", 0, "uname -a");
        assert_eq!(start(&l), None);
        assert_eq!(end(&l), None);
        let (m, cmd) = echo(&format!("/ # {l}")).expect("echo parses");
        assert_eq!(m.index, 0);
        assert_eq!(cmd, "uname -a");
        assert_eq!(
            start("BF_S_a1b2c3d4_0"),
            Some(Marker {
                nonce: "a1b2c3d4".into(),
                index: 0
            })
        );
        let (m, status, at) = end("partialBF_E_a1b2c3d4_3_127").expect("end parses");
        assert_eq!((m.index, status, at), (3, 127, 7));
    }
}
