//! Userspace text a kernel line interrupted mid-line (`<LAVA_SIGNAL_TESTCA[   12.3] msg`):
//! it waits for the rest of its line, but not forever.

use super::report::truncate;
use super::MAX_LINE;

/// Kernel lines a split userspace fragment waits through before it is taken as a line of its own.
const PATIENCE: u32 = 8;

#[derive(Debug)]
pub struct Fragment {
    pub text: String,
    pub line: u64,
    pub prompt_reported: bool,
    kernel_lines: u32,
}

impl Fragment {
    pub fn new(text: &str, line: u64, prompt_reported: bool) -> Self {
        Fragment {
            text: text.to_string(),
            line,
            prompt_reported,
            kernel_lines: 0,
        }
    }

    /// One more kernel line went by: true when the fragment waited long enough.
    pub fn age(&mut self) -> bool {
        self.kernel_lines += 1;
        self.kernel_lines > PATIENCE
    }

    /// The fragment and the rest of its line: the text, its first line number and whether
    /// a prompt was already reported on it.
    pub fn join(self, rest: &str) -> (String, u64, bool) {
        let mut t = self.text;
        t.push_str(truncate(rest, MAX_LINE.saturating_sub(t.len())));
        (t, self.line, self.prompt_reported)
    }
}
