//! The runner's stored log: the head is written as it comes, the tail is held in a [`Tail`]
//! and written, after a marker when bytes were left out, when the run ends. So a guest printing
//! forever costs at most the limit in memory and on disk.

use super::marker::{render_after, Layer};
use super::{Cap, Tail};

#[derive(Debug)]
pub struct HeadTail {
    head_left: u64,
    /// The last byte written, for the marker's line start.
    last: Option<u8>,
    tail: Tail,
    cut: bool,
}

impl HeadTail {
    pub fn new(limit: u64) -> HeadTail {
        let cap = Cap::new(limit);
        HeadTail {
            head_left: cap.head,
            last: None,
            tail: Tail::new(cap.tail),
            cut: false,
        }
    }

    /// Accepts a chunk; returns the part to write now (the head's). The rest waits in the tail.
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let live = chunk
            .len()
            .min(usize::try_from(self.head_left).unwrap_or(usize::MAX));
        let (now, later) = chunk.split_at(live);
        self.head_left -= live as u64;
        if let Some(&b) = now.last() {
            self.last = Some(b);
        }
        if !later.is_empty() {
            self.tail.push(later);
        }
        now
    }

    /// The head is full: bytes now wait for the end of the run.
    pub fn head_full(&self) -> bool {
        self.head_left == 0
    }

    /// Whether bytes were (or are being) left out.
    pub fn truncated(&self) -> bool {
        self.cut || self.tail.dropped_any()
    }

    /// The run ended: what to write after the head (the marker when bytes were left out, then
    /// the tail). Later calls return nothing.
    pub fn finish(&mut self) -> Vec<u8> {
        let kept = self.tail.take();
        if !kept.cut {
            return kept.bytes;
        }
        self.cut = true;
        let mut out = render_after(self.last, kept.omitted, Layer::Runner);
        out.extend_from_slice(&kept.bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{filter::MarkerFilter, marker};
    use super::*;

    fn run(limit: u64, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut ht = HeadTail::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(ht.push(c));
        }
        out.extend(ht.finish());
        (out, ht.truncated())
    }

    #[test]
    fn small_logs_pass_through_untouched() {
        let (out, cut) = run(8192, &[b"hello ", b"world\n"]);
        assert_eq!(out, b"hello world\n");
        assert!(!cut);
        // Over the head but within the limit: nothing is lost, nothing is marked.
        let big = vec![b'x'; 6000];
        let (out, cut) = run(8192, &[&big]);
        assert_eq!(out, big);
        assert!(!cut);
    }

    #[test]
    fn overflow_keeps_head_and_tail_with_one_marker_that_counts_the_gap() {
        let mut fed = Vec::new();
        let mut ht = HeadTail::new(8192);
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            let line = format!("line {i}\n");
            fed.extend_from_slice(line.as_bytes());
            out.extend_from_slice(ht.push(line.as_bytes()));
        }
        out.extend(ht.finish());
        assert!(ht.truncated());
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("line 0\nline 1\n"));
        assert!(text.ends_with("line 9998\nline 9999\n"));
        assert_eq!(text.matches("[bootfarm: console cut: ").count(), 1);
        // The marker's count plus what is shown is the whole console (and the line end put
        // before the marker, when the head ended inside a line).
        let mut f = MarkerFilter::new();
        let mut shown = 0u64;
        f.feed(&out, &mut |b| shown += b.len() as u64);
        f.finish(&mut |b| shown += b.len() as u64);
        let total = fed.len() as u64;
        assert!(
            (total..=total + 1).contains(&(shown + f.omitted())),
            "{text}"
        );
        assert!(out.len() < 8192 + 100, "{}", out.len());
        // The tail starts at a line.
        let at = text.find("by the runner]\n").unwrap() + "by the runner]\n".len();
        assert!(text[at..].starts_with("line "), "{}", &text[at..at + 20]);
    }

    #[test]
    fn the_marker_starts_a_line_even_when_the_head_ends_inside_one() {
        let big = vec![b'x'; 100_000];
        let (out, cut) = run(4096, &[&big]);
        assert!(cut);
        assert_eq!(out.iter().filter(|&&b| b == b'x').count(), 4096);
        let text = String::from_utf8(out).unwrap();
        let marker_at = text.find("[bootfarm").unwrap();
        assert_eq!(&text[marker_at - 1..marker_at], "\n");
        let line = text[marker_at..].lines().next().unwrap();
        assert_eq!(
            marker::parse(line.as_bytes()).map(|c| c.omitted),
            Some(100_000 - 4096)
        );
    }
}
