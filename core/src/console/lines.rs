//! Cutting the console byte stream into lines, whatever the chunking, and numbering them.
//!
//! `\n`, `\r\n` and `\r\r\n` end a line. A bare `\r` ends a segment for matching (terminals
//! redraw the line after it) but starts a new line number only in a log that has not used
//! `\n` yet, and only when the text after it is not blank: a log written with bare `\r` line
//! ends is numbered line by line, while `Press Ctrl-B...\r      \r\n` stays one line and logs
//! with `\n` line ends keep the numbers `grep -n` shows.

use super::MAX_LINE;

/// One segment ended by a line end (or the end of the log).
#[derive(Debug)]
pub struct Segment<'a> {
    pub bytes: &'a [u8],
    /// 1-based line number.
    pub line: u64,
}

#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// A `\r` was the last byte seen: `\n` or more `\r` may follow.
    pending_cr: bool,
    /// The last segment ended with a bare `\r` in a log without `\n` so far: the next
    /// non-blank segment starts a new line number.
    bare_cr: bool,
    /// Line ends counted so far.
    ends: u64,
    seen_lf: bool,
    /// Highest line number handed out.
    last_line: u64,
}

impl LineSplitter {
    /// Split `bytes`, calling `on_line` for every completed segment in order.
    pub fn feed(&mut self, bytes: &[u8], mut on_line: impl FnMut(Segment<'_>)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.pending_cr {
                // `\r\n`, `\r\r\n`: one line end.
                if rest[0] == b'\n' {
                    self.ends += 1;
                    self.seen_lf = true;
                    self.pending_cr = false;
                    rest = &rest[1..];
                    continue;
                }
                if rest[0] == b'\r' {
                    rest = &rest[1..];
                    continue;
                }
                self.pending_cr = false;
                self.bare_cr = !self.seen_lf;
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(p) => {
                    if self.partial.is_empty() {
                        let seg = &rest[..p.min(MAX_LINE)];
                        let line = self.number(seg);
                        on_line(Segment { bytes: seg, line });
                    } else {
                        let mut buf = std::mem::take(&mut self.partial);
                        push_capped(&mut buf, &rest[..p]);
                        let line = self.number(&buf);
                        on_line(Segment { bytes: &buf, line });
                        buf.clear();
                        self.partial = buf;
                    }
                    if rest[p] == b'\n' {
                        self.ends += 1;
                        self.seen_lf = true;
                    } else {
                        self.pending_cr = true;
                    }
                    rest = &rest[p + 1..];
                }
                None => {
                    push_capped(&mut self.partial, rest);
                    break;
                }
            }
        }
    }

    /// The unterminated rest of the current line (for prompt checks).
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// The log ended: the unterminated last segment, if any.
    pub fn finish(&mut self, on_line: impl FnOnce(Segment<'_>)) {
        if self.partial.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.partial);
        let line = self.number(&buf);
        on_line(Segment { bytes: &buf, line });
    }

    /// Lines the log has: every numbered line, terminated or not.
    pub fn lines(&self) -> u64 {
        self.ends.max(self.last_line)
    }

    fn number(&mut self, seg: &[u8]) -> u64 {
        if std::mem::take(&mut self.bare_cr) && !seg.iter().all(u8::is_ascii_whitespace) {
            self.ends += 1;
        }
        let line = self.ends + 1;
        self.last_line = self.last_line.max(line);
        line
    }
}

fn push_capped(buf: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<(String, u64)>, u64) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |seg| {
                out.push((String::from_utf8_lossy(seg.bytes).into_owned(), seg.line))
            });
        }
        s.finish(|seg| out.push((String::from_utf8_lossy(seg.bytes).into_owned(), seg.line)));
        (out, s.lines())
    }

    #[test]
    fn lf_crlf_and_crcrlf_are_one_line_end() {
        let (l, n) = split(&[b"a\nb\r\nc\r\r\nd"]);
        assert_eq!(
            l,
            vec![
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 3),
                ("d".into(), 4)
            ]
        );
        assert_eq!(n, 4);
        assert_eq!(split(&[b"a\r", b"\n", b"b\r", b"\r", b"\n"]).1, 2);
    }

    #[test]
    fn a_log_of_bare_cr_line_ends_is_numbered_line_by_line() {
        let (l, n) = split(&[b"one\rtwo\r", b"three\r"]);
        assert_eq!(
            l,
            vec![("one".into(), 1), ("two".into(), 2), ("three".into(), 3)]
        );
        assert_eq!(n, 3);
    }

    #[test]
    fn a_redraw_before_the_first_lf_and_bare_cr_after_it_keep_grep_numbers() {
        let (l, n) = split(&[b"Press Ctrl-B...\r      \r\n\n\nx\r\nok\ry\n"]);
        let lines: Vec<u64> = l.iter().map(|(_, n)| *n).collect();
        assert_eq!(lines, vec![1, 1, 2, 3, 4, 5, 5]);
        assert_eq!(n, 5);
    }
}
