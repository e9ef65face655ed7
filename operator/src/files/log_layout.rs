//! Where a stored log's bytes are, as readers see it: the head, the marker when the tail rolled
//! past bytes, the tail. Pure arithmetic over lengths and stream positions (a position counts
//! the bytes the operator received for the job, from 0; the head holds positions
//! `0..head_len`, the tail `tail_start..tail_end`).

use bootfarm_core::console_cap::marker::{self, Layer};

/// The shape of one stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub head_len: u64,
    /// The marker line (and the line end before it), empty when nothing was left out.
    pub marker: Vec<u8>,
    pub tail_start: u64,
    pub tail_end: u64,
}

/// What is at an offset of the log as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// This position of the head.
    Head(u64),
    /// This byte of the marker.
    Marker(usize),
    /// This stream position in the tail.
    Tail(u64),
    /// At or past the end.
    End,
}

/// What to read from a stream position, for a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Bytes of the head or the tail from this position, up to `until` (exclusive).
    Stored { at: u64, until: u64 },
    /// The tail rolled past the follower: send this marker, then go on from `resume`.
    Marker { bytes: Vec<u8>, resume: u64 },
    /// Nothing yet.
    Wait,
}

/// The record of a rolled tail (`console.cut`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CutRecord {
    /// The first stream position still kept.
    pub tail_start: u64,
    /// Console bytes left out between the head and the tail (dropped markers' counts included).
    pub omitted: u64,
    /// The head's last byte ends a line.
    pub head_ends_line: bool,
}

impl Layout {
    /// A log of `head_len` head bytes and a tail of `tail_start..tail_end` (`tail_start` is
    /// `head_len` when nothing was left out).
    pub fn new(head_len: u64, cut: Option<CutRecord>, tail_end: u64) -> Layout {
        let (marker, tail_start) = match cut {
            Some(c) => (
                marker::render_after(
                    Some(if c.head_ends_line { b'\n' } else { b' ' }),
                    c.omitted,
                    Layer::Operator,
                ),
                c.tail_start,
            ),
            None => (Vec::new(), head_len),
        };
        Layout {
            head_len,
            marker,
            tail_start,
            tail_end: tail_end.max(tail_start),
        }
    }

    pub fn is_cut(&self) -> bool {
        !self.marker.is_empty()
    }

    /// The log's length as served.
    pub fn len(&self) -> u64 {
        self.head_len + self.marker.len() as u64 + (self.tail_end - self.tail_start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn locate(&self, offset: u64) -> Place {
        if offset < self.head_len {
            return Place::Head(offset);
        }
        let past_head = offset - self.head_len;
        let marker_len = self.marker.len() as u64;
        if past_head < marker_len {
            return Place::Marker(usize::try_from(past_head).unwrap_or(usize::MAX));
        }
        let pos = self.tail_start + (past_head - marker_len);
        if pos < self.tail_end {
            Place::Tail(pos)
        } else {
            Place::End
        }
    }

    /// The stream position a follower starting at `offset` of the served log starts from (a
    /// start inside the marker gets the whole marker).
    pub fn position(&self, offset: u64) -> u64 {
        match self.locate(offset) {
            Place::Head(p) | Place::Tail(p) => p,
            Place::Marker(_) => self.head_len,
            Place::End => {
                if offset <= self.head_len {
                    offset
                } else {
                    self.tail_end
                }
            }
        }
    }

    /// What a follower at stream position `pos` reads next.
    pub fn next(&self, pos: u64) -> Next {
        if pos < self.head_len {
            return Next::Stored {
                at: pos,
                until: self.head_len,
            };
        }
        if pos < self.tail_start {
            // Only a follower exactly at the gap has seen everything before it: elsewhere the
            // tail rolled past bytes it had not read, and only their number is known.
            let bytes = if pos == self.head_len {
                self.marker.clone()
            } else {
                marker::render_after(Some(b' '), self.tail_start - pos, Layer::Operator)
            };
            return Next::Marker {
                bytes,
                resume: self.tail_start,
            };
        }
        if pos < self.tail_end {
            return Next::Stored {
                at: pos,
                until: self.tail_end,
            };
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(tail_start: u64, omitted: u64) -> Option<CutRecord> {
        Some(CutRecord {
            tail_start,
            omitted,
            head_ends_line: true,
        })
    }

    #[test]
    fn an_uncut_log_is_its_head_then_its_tail() {
        let l = Layout::new(100, None, 150);
        assert_eq!(l.len(), 150);
        assert!(!l.is_cut());
        assert_eq!(l.locate(99), Place::Head(99));
        assert_eq!(l.locate(100), Place::Tail(100));
        assert_eq!(l.locate(150), Place::End);
        assert_eq!(l.position(120), 120);
        assert_eq!(
            l.next(120),
            Next::Stored {
                at: 120,
                until: 150
            }
        );
        assert_eq!(l.next(150), Next::Wait);
        // A head still filling: nothing past it yet.
        let l = Layout::new(40, None, 0);
        assert_eq!((l.len(), l.next(40)), (40, Next::Wait));
    }

    #[test]
    fn a_cut_log_serves_the_marker_between_head_and_tail() {
        let l = Layout::new(100, cut(1000, 900), 1500);
        let m = l.marker.len() as u64;
        assert_eq!(
            String::from_utf8(l.marker.clone()).unwrap(),
            "[bootfarm: console cut: 900 bytes omitted by the operator]\n"
        );
        assert_eq!(l.len(), 100 + m + 500);
        assert_eq!(l.locate(100), Place::Marker(0));
        assert_eq!(l.locate(100 + m), Place::Tail(1000));
        assert_eq!(l.locate(100 + m + 499), Place::Tail(1499));
        assert_eq!(l.locate(100 + m + 500), Place::End);
        assert_eq!(l.position(100 + m + 10), 1010);
        assert_eq!(l.position(105), 100, "inside the marker: the whole marker");
        let head_mid_line = Layout::new(
            100,
            Some(CutRecord {
                head_ends_line: false,
                ..cut(1000, 900).unwrap()
            }),
            1500,
        );
        assert_eq!(head_mid_line.marker[0], b'\n');
    }

    #[test]
    fn a_follower_overtaken_by_the_tail_gets_a_marker_and_moves_on() {
        let l = Layout::new(100, cut(1000, 900), 1500);
        assert_eq!(
            l.next(100),
            Next::Marker {
                bytes: l.marker.clone(),
                resume: 1000
            }
        );
        match l.next(400) {
            Next::Marker { bytes, resume } => {
                assert_eq!(resume, 1000);
                let text = String::from_utf8(bytes).unwrap();
                assert!(
                    text.starts_with("\n[bootfarm: console cut: 600 bytes"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            l.next(1200),
            Next::Stored {
                at: 1200,
                until: 1500
            }
        );
    }
}
