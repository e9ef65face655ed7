//! The last bytes of a stream, in a bounded ring: what a layer keeps once its head is full. It
//! counts what it drops (reading dropped markers back), and hands its bytes over starting at a
//! line.

use super::filter::MarkerFilter;
use std::collections::VecDeque;

#[derive(Debug)]
pub struct Tail {
    cap: usize,
    buf: VecDeque<u8>,
    dropped: MarkerFilter,
    last_dropped: Option<u8>,
}

/// What a tail held, ready to write after a marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Bytes were left out before `bytes`: a marker goes first.
    pub cut: bool,
    /// Console bytes left out (what the marker says).
    pub omitted: u64,
    pub bytes: Vec<u8>,
}

impl Tail {
    pub fn new(cap: u64) -> Tail {
        Tail {
            cap: usize::try_from(cap).unwrap_or(usize::MAX).max(1),
            buf: VecDeque::new(),
            dropped: MarkerFilter::new(),
            last_dropped: None,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether bytes were dropped since the last [`Tail::take`].
    pub fn dropped_any(&self) -> bool {
        self.last_dropped.is_some()
    }

    pub fn push(&mut self, data: &[u8]) {
        let mut noop = |_: &[u8]| {};
        if data.len() >= self.cap {
            let (a, b) = self.buf.as_slices();
            self.dropped.feed(a, &mut noop);
            self.dropped.feed(b, &mut noop);
            let (gone, keep) = data.split_at(data.len() - self.cap);
            self.dropped.feed(gone, &mut noop);
            self.last_dropped = gone
                .last()
                .or(self.buf.back())
                .copied()
                .or(self.last_dropped);
            self.buf.clear();
            self.buf.extend(keep);
            return;
        }
        self.buf.extend(data);
        let excess = self.buf.len().saturating_sub(self.cap);
        if excess > 0 {
            let (a, b) = self.buf.as_slices();
            let from_a = excess.min(a.len());
            self.dropped.feed(&a[..from_a], &mut noop);
            self.dropped.feed(&b[..excess - from_a], &mut noop);
            self.last_dropped = self.buf.get(excess - 1).copied();
            self.buf.drain(..excess);
        }
    }

    /// Empties the tail: its bytes from the first line start (when bytes were dropped) and what
    /// was left out before them. The tail is then as new.
    pub fn take(&mut self) -> Kept {
        let mut bytes: Vec<u8> = self.buf.drain(..).collect();
        let Some(before) = self.last_dropped.take() else {
            return Kept {
                cut: false,
                omitted: 0,
                bytes,
            };
        };
        let mut noop = |_: &[u8]| {};
        let skip = super::line_start_skip(Some(before), &bytes);
        self.dropped.feed(&bytes[..skip], &mut noop);
        self.dropped.finish(&mut noop);
        bytes.drain(..skip);
        let omitted = std::mem::take(&mut self.dropped).represented();
        Kept {
            cut: true,
            omitted,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::marker::{render, Layer};
    use super::*;

    #[test]
    fn it_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail::new(10);
        t.push(b"0123");
        t.push(b"456789ab\n");
        t.push(b"cd");
        assert!(t.dropped_any());
        let kept = t.take();
        // Kept "56789ab\ncd", from the first line start: "cd"; 3 + 2 dropped, 8 skipped.
        assert_eq!(kept.bytes, b"cd");
        assert!(kept.cut);
        assert_eq!(kept.omitted, 13);
        assert!(!t.dropped_any() && t.is_empty());
    }

    #[test]
    fn without_drops_nothing_is_cut() {
        let mut t = Tail::new(10);
        t.push(b"abc");
        assert_eq!(
            t.take(),
            Kept {
                cut: false,
                omitted: 0,
                bytes: b"abc".to_vec()
            }
        );
    }

    #[test]
    fn a_dropped_marker_adds_its_count() {
        let mut t = Tail::new(8);
        t.push(b"x\n");
        t.push(render(1000, Layer::Runner).as_bytes());
        t.push(b"y\nlast\n");
        let kept = t.take();
        assert_eq!(kept.bytes, b"y\nlast\n");
        assert_eq!(kept.omitted, 2 + 1000);
    }

    #[test]
    fn a_huge_push_keeps_its_end() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"0123456789");
        assert_eq!(t.len(), 4);
        let kept = t.take();
        assert_eq!(kept.bytes, b"6789");
        assert_eq!(kept.omitted, 8);
    }
}
