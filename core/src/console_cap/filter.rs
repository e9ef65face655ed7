//! Marker lines taken out of a console stream, in chunks of any size: console bytes are handed
//! on as they come, [`marker`](super::marker) lines are counted instead. Used to read a saved
//! log (`classify`) and to count what a layer drops (a dropped marker's bytes are added to the
//! new marker's count).

use super::marker::{self, Cut, MAX_LINE, NOTE_PREFIX};

#[derive(Debug, Clone)]
pub struct MarkerFilter {
    /// The next byte starts a line (markers are whole lines).
    line_start: bool,
    /// The start of a line that may be a marker, until its line ends or it cannot be one.
    held: Vec<u8>,
    passed: u64,
    cuts: u64,
    omitted: u64,
}

impl Default for MarkerFilter {
    fn default() -> Self {
        MarkerFilter {
            line_start: true,
            held: Vec::new(),
            passed: 0,
            cuts: 0,
            omitted: 0,
        }
    }
}

/// What a line start turns out to be.
enum Start {
    Console,
    /// A marker line of this many bytes, line end included.
    Marker(Cut, usize),
    /// Not known before more bytes come.
    Undecided,
}

/// Looks at bytes that start a line.
fn look(rest: &[u8]) -> Start {
    let n = rest.len().min(NOTE_PREFIX.len());
    if rest[..n] != NOTE_PREFIX[..n] {
        return Start::Console;
    }
    let window = &rest[..rest.len().min(MAX_LINE + 1)];
    match memchr::memchr(b'\n', window) {
        Some(i) => match marker::parse(&rest[..i]) {
            Some(cut) => Start::Marker(cut, i + 1),
            None => Start::Console,
        },
        None if rest.len() > MAX_LINE => Start::Console,
        None => Start::Undecided,
    }
}

impl MarkerFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; `out` receives the console bytes among them (possibly in several pieces,
    /// possibly later: a line that may be a marker waits for its end).
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) {
        if !self.held.is_empty() {
            let room = (MAX_LINE + 1).saturating_sub(self.held.len());
            let window = &input[..input.len().min(room)];
            let upto = memchr::memchr(b'\n', window).map_or(window.len(), |i| i + 1);
            self.held.extend_from_slice(&input[..upto]);
            input = &input[upto..];
            match look(&self.held) {
                Start::Undecided => return,
                Start::Marker(cut, _) => {
                    self.count(cut);
                    self.held.clear();
                    self.line_start = true;
                }
                Start::Console => {
                    let held = std::mem::take(&mut self.held);
                    self.line_start = held.last() == Some(&b'\n');
                    self.pass(&held, out);
                }
            }
        }
        let (mut run, mut i) = (0, 0);
        while i < input.len() {
            if self.line_start && input[i] == b'[' {
                match look(&input[i..]) {
                    Start::Console => {}
                    Start::Marker(cut, len) => {
                        self.pass(&input[run..i], out);
                        self.count(cut);
                        i += len;
                        run = i;
                        continue;
                    }
                    Start::Undecided => {
                        self.pass(&input[run..i], out);
                        self.held = input[i..].to_vec();
                        return;
                    }
                }
            }
            match memchr::memchr(b'\n', &input[i..]) {
                Some(p) => {
                    i += p + 1;
                    self.line_start = true;
                }
                None => {
                    i = input.len();
                    self.line_start = false;
                }
            }
        }
        self.pass(&input[run..], out);
    }

    /// The stream ended: a held line start is console, or a marker without its line end.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) {
        let held = std::mem::take(&mut self.held);
        match marker::parse(&held) {
            Some(cut) if !held.is_empty() => self.count(cut),
            _ => self.pass(&held, out),
        }
    }

    /// Marker lines seen.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Console bytes the markers seen say were left out.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// Console bytes handed on.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Console bytes the input stands for: those handed on and those its markers left out.
    pub fn represented(&self) -> u64 {
        self.passed.saturating_add(self.omitted)
    }

    fn count(&mut self, cut: Cut) {
        self.cuts += 1;
        self.omitted = self.omitted.saturating_add(cut.omitted);
    }

    fn pass(&mut self, bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        if !bytes.is_empty() {
            self.passed += bytes.len() as u64;
            out(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::marker::{render, Layer};
    use super::*;

    fn filtered(chunks: &[&[u8]]) -> (Vec<u8>, MarkerFilter) {
        let mut f = MarkerFilter::new();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut |b| out.extend_from_slice(b));
        }
        f.finish(&mut |b| out.extend_from_slice(b));
        (out, f)
    }

    #[test]
    fn markers_are_taken_out_and_counted() {
        let log = format!(
            "[    0.0] Linux version 6.1\nhead\n{}tail\n[bootfarm: attempt 2 on runner r at t]\n{}",
            render(100, Layer::Runner),
            render(5, Layer::Operator).trim_end()
        );
        let (out, f) = filtered(&[log.as_bytes()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[    0.0] Linux version 6.1\nhead\ntail\n[bootfarm: attempt 2 on runner r at t]\n"
        );
        assert_eq!((f.cuts(), f.omitted()), (2, 105));
        assert_eq!(f.represented(), f.passed() + 105);
    }

    #[test]
    fn only_whole_lines_are_markers() {
        let line = render(9, Layer::Runner);
        let mid = format!("console {line}");
        let (out, f) = filtered(&[mid.as_bytes()]);
        assert_eq!(out, mid.as_bytes());
        assert_eq!(f.cuts(), 0);
    }

    #[test]
    fn any_chunking_gives_the_same_stream() {
        let log = format!(
            "a\n{}[bootfarm: x\n[[b\n{}z",
            render(7, Layer::Upload),
            render(8, Layer::Runner)
        );
        let (whole, f) = filtered(&[log.as_bytes()]);
        assert_eq!(f.cuts(), 2);
        let bytes = log.as_bytes();
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let (out, g) = filtered(&[a, b]);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!((g.cuts(), g.omitted()), (2, 15));
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(filtered(&singles).0, whole);
    }
}
