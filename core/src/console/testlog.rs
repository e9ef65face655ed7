//! The bounded record of test results: at most `MAX_TESTS` cases, names cut to `NAME_MAX`,
//! captured output within one budget for the whole log.

use super::report::truncate;
use crate::result::TestCase;

const MAX_TESTS: usize = 20_000;
/// Bound on test and suite names.
const NAME_MAX: usize = 512;
/// Bound on all captured test output together.
const OUTPUT_BUDGET: usize = 8 << 20;

#[derive(Debug)]
pub struct TestLog {
    /// Captured output bytes still allowed.
    budget: usize,
}

impl Default for TestLog {
    fn default() -> Self {
        TestLog {
            budget: OUTPUT_BUDGET,
        }
    }
}

impl TestLog {
    /// Keep a case (bounded), or count it in `dropped` beyond the bound.
    pub fn push(&mut self, tests: &mut Vec<TestCase>, dropped: &mut u64, mut t: TestCase) {
        if tests.len() >= MAX_TESTS {
            *dropped += 1;
            return;
        }
        for s in [&mut t.name, &mut t.suite] {
            if s.len() > NAME_MAX {
                let keep = truncate(s, NAME_MAX).len();
                s.truncate(keep);
            }
        }
        if let Some(out) = &mut t.output {
            let keep = truncate(out, self.budget).len();
            out.truncate(keep);
            self.budget -= keep;
        }
        tests.push(t);
    }
}
