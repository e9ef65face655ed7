//! Turning one raw console line into the text the matchers see: terminal escapes removed,
//! invalid UTF-8 replaced, and the kernel's `<N>` / `[ t.tttttt]` / `[T123]` prefixes stripped.

use std::borrow::Cow;

/// Decode a raw line: drop ANSI escape sequences and backspaces, replace invalid UTF-8.
/// Most lines are plain text and are borrowed as they are.
///
/// Backspaces are dropped rather than applied so that decoding a prefix of a line gives a
/// prefix of the decoded line: what is seen on a partial line never contradicts the full line.
pub fn decode(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr2(0x1b, 0x08, raw).is_none() {
        return String::from_utf8_lossy(raw);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            0x1b => i = skip_escape(raw, i),
            0x08 => i += 1,
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Apply backspaces as a terminal shows them (the previous character is overwritten), for
/// comparing typed input with its echo.
pub fn apply_backspaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// Index just past the escape sequence starting at `raw[start] == ESC`.
fn skip_escape(raw: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    match raw.get(i) {
        // CSI: parameters and intermediates, then one final byte in 0x40..=0x7e.
        Some(b'[') => {
            i += 1;
            while let Some(&b) = raw.get(i) {
                i += 1;
                if (0x40..=0x7e).contains(&b) {
                    break;
                }
            }
            i
        }
        // OSC: until BEL or ESC '\'.
        Some(b']') => {
            i += 1;
            while let Some(&b) = raw.get(i) {
                if b == 0x07 {
                    return i + 1;
                }
                if b == 0x1b {
                    return if raw.get(i + 1) == Some(&b'\\') {
                        i + 2
                    } else {
                        i
                    };
                }
                i += 1;
            }
            i
        }
        // Charset selection and similar two-byte forms: ESC ( B.
        Some(b'(') | Some(b')') => (i + 2).min(raw.len()),
        Some(_) => i + 1,
        None => i,
    }
}

/// A decoded line split into the kernel's prefixes and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripped<'a> {
    /// The message with `<N>`, timestamp and caller id removed.
    pub text: &'a str,
    /// The line carried a printk timestamp, so the kernel wrote it.
    pub kernel: bool,
    /// The printk caller id (`T123`, `C1`): which task or CPU printed the line.
    pub caller: Option<&'a str>,
}

/// Strip `<N>` syslog prefixes, `[ t.tttttt]` timestamps and `[T123]`/`[C1]` caller ids.
pub fn strip(line: &str) -> Stripped<'_> {
    let mut s = line;
    if let Some(rest) = syslog_prefix(s) {
        s = rest;
    }
    let mut kernel = false;
    let mut caller = None;
    if let Some(rest) = timestamp_prefix(s) {
        s = rest;
        kernel = true;
        if let Some((id, rest)) = caller_prefix(s.strip_prefix(' ').unwrap_or(s)) {
            s = rest;
            caller = Some(id);
        }
    } else if let Some((id, rest)) = caller_prefix(s) {
        // console_msg_format without time but with the caller id.
        s = rest;
        kernel = true;
        caller = Some(id);
    }
    if kernel {
        s = s.strip_prefix(' ').unwrap_or(s);
    }
    Stripped {
        text: s,
        kernel,
        caller,
    }
}

fn syslog_prefix(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let digits = b[1..]
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || b.get(1 + digits) != Some(&b'>') {
        return None;
    }
    Some(&s[digits + 2..])
}

/// `[    1.234567]` (any amount of padding, any number of fraction digits).
fn timestamp_prefix(s: &str) -> Option<&str> {
    let len = timestamp_len(s.as_bytes())?;
    Some(&s[len..])
}

/// Length of a printk timestamp at the start of `b`.
pub fn timestamp_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let int = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 {
        return None;
    }
    i += int;
    if b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let frac = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if frac == 0 {
        return None;
    }
    i += frac;
    if b.get(i) != Some(&b']') {
        return None;
    }
    Some(i + 1)
}

/// `[T123]`, `[    C1]`: the id (`T123`) and the rest of the line.
fn caller_prefix(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if !matches!(b.get(i), Some(b'T') | Some(b'C')) {
        return None;
    }
    let id_start = i;
    i += 1;
    let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || b.get(i + n) != Some(&b']') {
        return None;
    }
    Some((&s[id_start..i + n], &s[i + n + 1..]))
}

/// Where a kernel line starts inside a line that does not begin with one: userspace output
/// interrupted by printk (`<LAVA_SIGNAL_TESTCA[   12.3] msg`). Returns the byte index of the
/// interrupting `[` (or of its `<N>` syslog prefix).
pub fn embedded_kernel_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    for pos in memchr::memchr_iter(b'[', b) {
        if pos == 0 || timestamp_len(&b[pos..]).is_none() {
            continue;
        }
        // Include a directly preceding `<N>` syslog prefix.
        if b[pos - 1] == b'>' {
            if let Some(lt) = b[..pos - 1].iter().rposition(|&c| c == b'<') {
                let inner = &b[lt + 1..pos - 1];
                if !inner.is_empty() && inner.len() <= 4 && inner.iter().all(u8::is_ascii_digit) {
                    return if lt == 0 { None } else { Some(lt) };
                }
            }
        }
        return Some(pos);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_syslog_timestamp_and_caller() {
        let s = strip("<6>[    0.000000][    T0] Linux version 6.1.0");
        assert_eq!(s.text, "Linux version 6.1.0");
        assert!(s.kernel);
        let s = strip("[   12.345678] [C1] foo");
        assert_eq!(s.text, "foo");
        assert!(s.kernel);
        assert_eq!(s.caller, Some("C1"));
        assert_eq!(strip("[  1.0][   T42] x").caller, Some("T42"));
        let s = strip("[  OK  ] Started foo");
        assert_eq!(s.text, "[  OK  ] Started foo");
        assert!(!s.kernel);
        let s = strip("<13>hello");
        assert_eq!(s.text, "hello");
        assert!(!s.kernel);
    }

    #[test]
    fn decodes_ansi_backspace_and_bad_utf8() {
        assert_eq!(decode(b"\x1b[1;32mroot\x1b[0m@h:~# "), "root@h:~# ");
        assert_eq!(decode(b"ab \x08c"), "ab c");
        assert_eq!(apply_backspaces("ab \u{8}c"), "abc");
        assert_eq!(decode(b"\x1b]0;title\x07x"), "x");
        assert_eq!(decode(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode(b"\x1b"), "");
    }

    #[test]
    fn finds_an_interrupting_kernel_line() {
        assert_eq!(embedded_kernel_start("<LAVA_SIG[   1.2] x"), Some(9));
        assert_eq!(embedded_kernel_start("abc<4>[   1.2] x"), Some(3));
        assert_eq!(embedded_kernel_start("[   1.2] x"), None);
        assert_eq!(embedded_kernel_start("a [mem 0x1-0x2]"), None);
    }
}
