//! One policy for capping a console log, applied alike by every layer that keeps or forwards
//! one: the runner's stored log, the runner's upload to the operator, the operator's stored
//! log. Each keeps the **head** (the first half of its cap, as it came: how the boot started)
//! and at least the last half as the **tail** (how it ended: the panic), and writes one
//! [`marker`] line where it left bytes out, saying how many console bytes are missing there.
//!
//! A layer that drops bytes holding another layer's marker adds that marker's count to its own
//! ([`filter::MarkerFilter`] reads markers back), so a marker always counts bytes of the guest's
//! console, however many layers cut. `bootfarm-runner classify` recognises markers: the log is
//! reported as truncated and the marker lines never reach the classifier.
//!
//! Everything here is pure: bytes in, bytes out.

pub mod filter;
pub mod head_tail;
pub mod marker;
pub mod tail;

pub use filter::MarkerFilter;
pub use head_tail::HeadTail;
pub use marker::{Cut, Layer};
pub use tail::Tail;

/// `bootfarm-runner boot`'s default: a person's own boot may keep a lot.
pub const DEFAULT_BOOT_LIMIT: u64 = 64 << 20;
/// The farm's default, for each job: the runner's log and the operator's stored copy alike.
pub const DEFAULT_FARM_LIMIT: u64 = 16 << 20;
/// Smaller limits are raised to this: a marker and a few lines of head and tail must fit.
pub const MIN_LIMIT: u64 = 4096;
/// A tail that starts inside a line starts at the next line instead, when one begins this soon
/// (a cut half-line only confuses readers and the classifier).
pub const ALIGN_MAX: usize = 4096;

/// How a limit splits into head and tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Bytes kept from the start.
    pub head: u64,
    /// Bytes kept from the end (at least).
    pub tail: u64,
}

impl Cap {
    pub fn new(limit: u64) -> Cap {
        let limit = limit.max(MIN_LIMIT);
        let head = limit / 2;
        Cap {
            head,
            tail: limit - head,
        }
    }

    pub fn limit(&self) -> u64 {
        self.head + self.tail
    }
}

/// How many bytes to skip at the start of a tail so it begins at a line: none when the byte
/// before it ended a line (or there is none), else up to and including the first line end in
/// the first [`ALIGN_MAX`] bytes (none when there is no line end that soon).
pub fn line_start_skip(before: Option<u8>, tail: &[u8]) -> usize {
    if before.is_none_or(|b| b == b'\n') {
        return 0;
    }
    let window = &tail[..tail.len().min(ALIGN_MAX)];
    memchr::memchr(b'\n', window).map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_split_in_halves_and_tiny_ones_are_raised() {
        assert_eq!(
            Cap::new(16 << 20),
            Cap {
                head: 8 << 20,
                tail: 8 << 20
            }
        );
        assert_eq!(Cap::new(10_001).limit(), 10_001);
        assert_eq!(Cap::new(10_001).tail, 5001);
        assert_eq!(Cap::new(0).limit(), MIN_LIMIT);
    }

    #[test]
    fn tails_start_at_a_line_when_one_begins_soon() {
        assert_eq!(line_start_skip(None, b"abc\ndef"), 0);
        assert_eq!(line_start_skip(Some(b'\n'), b"abc\ndef"), 0);
        assert_eq!(line_start_skip(Some(b'x'), b"abc\ndef"), 4);
        assert_eq!(line_start_skip(Some(b'x'), b"no line end"), 0);
        let far = [vec![b'a'; ALIGN_MAX], b"\nz".to_vec()].concat();
        assert_eq!(line_start_skip(Some(b'x'), &far), 0);
    }
}
