//! What the claims and completions the hollow runners saw add up to.

use std::collections::{BTreeMap, BTreeSet};

/// The `p`-th percentile (0..=100) of `values` by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).ceil();
    // rank is in 1..=len (0 only for p = 0, which means the smallest).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (rank as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// One claim that returned a job: which, and its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub job: String,
    pub attempt: u32,
    pub runner: String,
}

/// Claims of a job beyond its first for the same attempt: two runners handed the same work.
/// (Hollow runners never lose a lease, so a second attempt would also be suspect; it is counted
/// by [`retried`].)
pub fn duplicate_claims(claims: &[Claim]) -> usize {
    let mut seen = BTreeSet::new();
    claims
        .iter()
        .filter(|c| !seen.insert((c.job.as_str(), c.attempt)))
        .count()
}

/// Jobs claimed more than once in all (any attempt).
pub fn retried(claims: &[Claim]) -> usize {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for c in claims {
        *n.entry(c.job.as_str()).or_default() += 1;
    }
    n.values().filter(|&&k| k > 1).count()
}

/// Submitted jobs that never got a finished verdict.
pub fn lost<'a>(
    submitted: impl IntoIterator<Item = &'a str>,
    finished: &BTreeSet<String>,
) -> usize {
    submitted
        .into_iter()
        .filter(|j| !finished.contains(*j))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(job: &str, attempt: u32, runner: &str) -> Claim {
        Claim {
            job: job.into(),
            attempt,
            runner: runner.into(),
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_same_attempt_handed_out_twice_is_a_duplicate() {
        let c = [
            claim("a", 1, "r1"),
            claim("b", 1, "r2"),
            claim("a", 1, "r3"),
            claim("b", 2, "r2"),
        ];
        assert_eq!(duplicate_claims(&c), 1);
        assert_eq!(retried(&c), 2);
        assert_eq!(duplicate_claims(&c[..2]), 0);
    }

    #[test]
    fn lost_counts_submitted_jobs_without_a_verdict() {
        let finished: BTreeSet<String> = ["a".to_string(), "c".to_string()].into();
        assert_eq!(lost(["a", "b", "c", "d"], &finished), 2);
    }
}
