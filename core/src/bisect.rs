//! Bisection over an ordered list of kernels (good first, bad last), k-ary: each round boots up
//! to R kernels spread evenly over what is still unknown, so N kernels take about
//! log_(R+1)(N) rounds. "Bad" means the known-bad kernel's own failure (an issue fingerprint or
//! a failed test in common); any other outcome is reported and skipped, never bisected into. Pure.

use crate::result::{BootResult, TestOutcome, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the known-bad kernel's failure looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Signature {
    /// Fingerprints of its fatal issues.
    pub fingerprints: BTreeSet<String>,
    /// Its failed tests (`suite/name`).
    pub tests: BTreeSet<String>,
    /// Its verdict's reason, for a failure with neither (a boot timeout, say).
    pub reason: String,
}

impl Signature {
    pub fn of(bad: &BootResult) -> Signature {
        Signature {
            fingerprints: bad
                .issues
                .iter()
                .filter(|i| i.fatal)
                .map(|i| i.fingerprint.clone())
                .collect(),
            tests: failed_tests(bad),
            reason: bad.reason.clone(),
        }
    }

    /// Whether `r` is this failure.
    pub fn matches(&self, r: &BootResult) -> bool {
        if r.result != Verdict::Fail {
            return false;
        }
        if self.fingerprints.is_empty() && self.tests.is_empty() {
            return r.reason == self.reason;
        }
        r.issues
            .iter()
            .any(|i| i.fatal && self.fingerprints.contains(&i.fingerprint))
            || !self.tests.is_disjoint(&failed_tests(r))
    }
}

fn failed_tests(r: &BootResult) -> BTreeSet<String> {
    r.tests
        .iter()
        .filter(|t| t.result == TestOutcome::Fail)
        .map(|t| {
            if t.suite.is_empty() {
                t.name.clone()
            } else {
                format!("{}/{}", t.suite, t.name)
            }
        })
        .collect()
}

/// One kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    Good,
    Bad,
    /// Another failure, an error, or no verdict: skipped, with why.
    Other(String),
}

/// How a kernel's result counts for a bisection looking for `sig`.
pub fn judge(sig: &Signature, r: Option<&BootResult>) -> Outcome {
    match r {
        None => Outcome::Other("no result".into()),
        Some(r) if r.result == Verdict::Pass => Outcome::Good,
        Some(r) if sig.matches(r) => Outcome::Bad,
        Some(r) => Outcome::Other(format!("{}: {}", r.result.as_str(), r.summary)),
    }
}

/// Where a bisection stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// More rounds to boot.
    Running,
    /// `first_bad` is the first kernel with the failure; `last_good` the one before it.
    Found {
        #[serde(rename = "firstBadIndex")]
        first_bad: usize,
        #[serde(rename = "lastGoodIndex")]
        last_good: usize,
    },
    /// Skipped kernels hide the boundary: the first bad is one of `candidates` (the last one
    /// among them is known bad).
    Ambiguous { candidates: Vec<usize> },
}

/// The search: the outcomes so far and the bounds they give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bisection {
    pub kernels: usize,
    /// Index of the last known good (starts at the first kernel).
    pub good: usize,
    /// Index of the first known bad (starts at the last kernel).
    pub bad: usize,
    pub outcomes: BTreeMap<usize, Outcome>,
}

impl Bisection {
    /// A search over `kernels` kernels (at least two), the first assumed good and the last bad
    /// until their boots say so.
    pub fn new(kernels: usize) -> Result<Bisection, String> {
        if kernels < 2 {
            return Err(format!(
                "a bisection needs at least two kernels (a good one and a bad one), got {kernels}"
            ));
        }
        Ok(Bisection {
            kernels,
            good: 0,
            bad: kernels - 1,
            outcomes: BTreeMap::new(),
        })
    }

    /// Records kernel `i`'s outcome. An outcome that contradicts the bounds (good after a bad)
    /// narrows nothing; it is kept for the report.
    pub fn record(&mut self, i: usize, outcome: Outcome) {
        match outcome {
            Outcome::Good if i > self.good && i < self.bad => self.good = i,
            Outcome::Bad if i < self.bad && i > self.good => self.bad = i,
            _ => {}
        }
        self.outcomes.insert(i, outcome);
    }

    /// Kernels still unknown between the bounds.
    fn unknown(&self) -> Vec<usize> {
        (self.good + 1..self.bad)
            .filter(|i| !self.outcomes.contains_key(i))
            .collect()
    }

    /// The kernels to boot next, at most `parallel`, spread evenly over the unknown ones.
    pub fn next_round(&self, parallel: usize) -> Vec<usize> {
        let unknown = self.unknown();
        let k = parallel.max(1).min(unknown.len());
        let n = unknown.len();
        let mut picks: Vec<usize> = (1..=k)
            .map(|j| unknown[(j * (n + 1) / (k + 1)).saturating_sub(1).min(n - 1)])
            .collect();
        picks.dedup();
        picks
    }

    pub fn state(&self) -> State {
        if !self.unknown().is_empty() {
            return State::Running;
        }
        if self.bad == self.good + 1 {
            State::Found {
                first_bad: self.bad,
                last_good: self.good,
            }
        } else {
            State::Ambiguous {
                candidates: (self.good + 1..=self.bad).collect(),
            }
        }
    }
}

/// Rounds of `parallel` boots that a k-ary search over `kernels` needs at most (the endpoint
/// round not counted): ceil(log_(parallel+1)(kernels - 1)).
pub fn rounds_needed(kernels: usize, parallel: usize) -> u32 {
    let mut left = kernels.saturating_sub(2);
    let mut rounds = 0;
    while left > 0 {
        left /= parallel.max(1) + 1;
        rounds += 1;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a whole search against a series whose first bad kernel is `first_bad`.
    fn search(n: usize, first_bad: usize, parallel: usize, other: &[usize]) -> (State, u32, usize) {
        let mut b = Bisection::new(n).unwrap();
        let (mut rounds, mut boots) = (0, 0);
        loop {
            let picks = b.next_round(parallel);
            if picks.is_empty() {
                return (b.state(), rounds, boots);
            }
            assert!(picks.len() <= parallel);
            rounds += 1;
            boots += picks.len();
            for i in picks {
                let o = if other.contains(&i) {
                    Outcome::Other("fail: another panic".into())
                } else if i >= first_bad {
                    Outcome::Bad
                } else {
                    Outcome::Good
                };
                b.record(i, o);
            }
        }
    }

    #[test]
    fn every_boundary_of_every_series_is_found_in_the_k_ary_number_of_rounds() {
        for n in 2..40 {
            for first_bad in 1..n {
                for parallel in [1, 2, 3, 7] {
                    let (state, rounds, _) = search(n, first_bad, parallel, &[]);
                    assert_eq!(
                        state,
                        State::Found {
                            first_bad,
                            last_good: first_bad - 1
                        },
                        "n={n} first_bad={first_bad} parallel={parallel}"
                    );
                    assert!(
                        rounds <= rounds_needed(n, parallel),
                        "n={n} first_bad={first_bad} parallel={parallel}: {rounds} rounds"
                    );
                }
            }
        }
        assert_eq!(rounds_needed(16, 1), 4);
        assert_eq!(rounds_needed(16, 3), 2);
        assert_eq!(rounds_needed(1000, 9), 3);
    }

    #[test]
    fn another_failure_is_skipped_and_can_leave_the_answer_ambiguous() {
        // Kernel 6 fails differently: the search goes around it.
        let (state, _, _) = search(16, 9, 3, &[6]);
        assert_eq!(
            state,
            State::Found {
                first_bad: 9,
                last_good: 8
            }
        );
        // The kernel just before the first bad one fails differently: the boundary is hidden.
        let (state, _, _) = search(16, 9, 3, &[8]);
        assert_eq!(
            state,
            State::Ambiguous {
                candidates: vec![8, 9]
            }
        );
    }

    #[test]
    fn bad_means_the_known_bad_failure_not_any_failure() {
        use crate::result::{ErrorKind, Issue, IssueKind, Phase};
        let issue = |fp: &str| Issue {
            kind: IssueKind::Panic,
            line: 1,
            summary: "s".into(),
            excerpt: String::new(),
            fingerprint: fp.into(),
            phase: Phase::Boot,
            fatal: true,
            title: "t".into(),
            function: None,
            count: 1,
        };
        let mut bad = BootResult::error(ErrorKind::QemuFailed, "x");
        bad.result = Verdict::Fail;
        bad.error = None;
        bad.issues = vec![issue("f1")];
        let sig = Signature::of(&bad);
        assert_eq!(judge(&sig, Some(&bad)), Outcome::Bad);
        let mut other = bad.clone();
        other.issues = vec![issue("f2")];
        assert!(matches!(judge(&sig, Some(&other)), Outcome::Other(_)));
        let mut good = bad.clone();
        good.result = Verdict::Pass;
        assert_eq!(judge(&sig, Some(&good)), Outcome::Good);
        let err = BootResult::error(ErrorKind::QemuFailed, "qemu died");
        assert!(matches!(judge(&sig, Some(&err)), Outcome::Other(m) if m.contains("qemu died")));
        assert!(matches!(judge(&sig, None), Outcome::Other(_)));
        assert!(Bisection::new(1).is_err());
    }
}
