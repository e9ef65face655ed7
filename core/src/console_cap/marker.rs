//! The cut marker: one line, `[bootfarm: console cut: N bytes omitted by the LAYER]`, written
//! at the start of a line where a layer left N bytes of the guest's console out.
//!
//! [`parse`] also reads the markers older runners and operators wrote, so saved logs from
//! before this format still read as cut.

use std::fmt;

/// Who cut: says where to look (which limit to raise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The runner's stored log (`--console-limit`).
    Runner,
    /// The runner's upload to the operator (the operator was too slow or unreachable).
    Upload,
    /// The operator's stored log (its `--console-limit`).
    Operator,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Runner => "runner",
            Layer::Upload => "upload",
            Layer::Operator => "operator",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every marker line starts with (and every other bootfarm note, e.g. attempt lines).
pub const NOTE_PREFIX: &[u8] = b"[bootfarm: ";
const PREFIX: &str = "[bootfarm: console cut: ";
/// Longest line [`parse`] considers: markers are short, a longer line is console.
pub const MAX_LINE: usize = 256;

/// A marker read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Console bytes left out where the marker stands (0 when an old marker did not say).
    pub omitted: u64,
}

/// The marker line, line end included.
pub fn render(omitted: u64, by: Layer) -> String {
    format!("{PREFIX}{omitted} bytes omitted by the {by}]\n")
}

/// The marker to write after a byte `last` (None: at the very start): on a line of its own.
pub fn render_after(last: Option<u8>, omitted: u64, by: Layer) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if last.is_some_and(|b| b != b'\n') {
        out.push(b'\n');
    }
    out.extend_from_slice(render(omitted, by).as_bytes());
    out
}

/// Reads one line (its line end may be there or not) as a marker.
pub fn parse(line: &[u8]) -> Option<Cut> {
    if line.len() > MAX_LINE || !line.starts_with(NOTE_PREFIX) {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let text = text.trim_end_matches(['\n', '\r']);
    let body = text.strip_prefix("[bootfarm: ")?.strip_suffix(']')?;
    if let Some(rest) = body.strip_prefix("console cut: ") {
        let (n, rest) = leading_number(rest)?;
        return rest
            .starts_with(" bytes omitted")
            .then_some(Cut { omitted: n });
    }
    // Older runners: `console log limit reached after N bytes; ...` at the cut, then
    // `N bytes omitted; the last M bytes follow` before the tail; older uploads:
    // `N bytes of console dropped: ...`; older operators: `console log cut here: ...`.
    if body.starts_with("console log limit reached") || body.starts_with("console log cut here") {
        return Some(Cut { omitted: 0 });
    }
    let (n, rest) = leading_number(body)?;
    (rest.starts_with(" bytes omitted;") || rest.starts_with(" bytes of console dropped"))
        .then_some(Cut { omitted: n })
}

fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_as_what_it_says() {
        for by in [Layer::Runner, Layer::Upload, Layer::Operator] {
            let line = render(123_456, by);
            assert!(line.ends_with("]\n"));
            assert_eq!(parse(line.as_bytes()), Some(Cut { omitted: 123_456 }));
        }
        assert_eq!(
            render(5, Layer::Operator),
            "[bootfarm: console cut: 5 bytes omitted by the operator]\n"
        );
        assert_eq!(
            parse(b"[bootfarm: console cut: 7 bytes omitted by the runner]\r\n"),
            Some(Cut { omitted: 7 })
        );
    }

    #[test]
    fn it_goes_on_a_line_of_its_own() {
        assert!(render_after(None, 1, Layer::Runner).starts_with(b"[bootfarm"));
        assert!(render_after(Some(b'\n'), 1, Layer::Runner).starts_with(b"[bootfarm"));
        assert!(render_after(Some(b'x'), 1, Layer::Runner).starts_with(b"\n[bootfarm"));
    }

    #[test]
    fn the_old_markers_are_still_cuts() {
        for (line, omitted) in [
            (&b"[bootfarm: console log limit reached after 10 bytes; output is cut here and only the last 5 bytes are kept]"[..], 0),
            (b"[bootfarm: 42 bytes omitted; the last 5 bytes follow]", 42),
            (b"[bootfarm: 6 bytes of console dropped: the operator was too slow]", 6),
            (b"[bootfarm: console log cut here: size limit reached]", 0),
        ] {
            assert_eq!(parse(line), Some(Cut { omitted }), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn other_lines_are_not_markers() {
        for line in [
            &b"[bootfarm: attempt 2 on runner r1 at 2026-01-01T00:00:00Z]"[..],
            b"[    0.000000] Linux version 6.1.0",
            b"------------[ cut here ]------------",
            b"[bootfarm: console cut: many bytes omitted by the runner]",
            b"[bootfarm: console cut: 5 bytes omitted by the runner] and more",
            b"echo '[bootfarm: console cut: 5 bytes omitted by the runner]'",
            b"",
        ] {
            assert_eq!(parse(line), None, "{}", String::from_utf8_lossy(line));
        }
        let long = format!(
            "[bootfarm: console cut: 5 bytes omitted{}]",
            "x".repeat(300)
        );
        assert_eq!(parse(long.as_bytes()), None);
    }
}
