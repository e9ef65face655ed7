//! Markers around interactive `--command`s. The session types
//! `echo "BF""_S_<nonce>_<i>"; CMD; echo "BF""_E_<nonce>_<i>_$?"`: the shell prints
//! `BF_S_<nonce>_<i>`, the output, then `BF_E_<nonce>_<i>_<status>`. The echo of the typed line
//! never contains the joined marker (the quotes split it), and the classifier accepts any nonce
//! of the right shape, so `classify` on a saved log finds the same test cases as the live run.

use regex::Regex;
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
