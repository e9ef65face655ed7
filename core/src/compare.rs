//! What changed between two sets of boots: regressions, fixes, what still fails, what is flaky.
//!
//! Runs are matched by key (a plan's `KERNEL/ARCH[/VARIANT]`, or a file name), then boot
//! verdicts, tests by suite and name, and issues by fingerprint (stable across kernels). A side
//! may hold several runs of one key (a plan's `repeat`, a resubmission): when they disagree the
//! case is flaky, and it is reported as that, never as a regression or a fix. Pure.

use crate::result::{BootResult, TestOutcome, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[cfg(feature = "schema")]
use schemars::JsonSchema;

/// One finished (or not) run of a side.
#[derive(Debug, Clone)]
pub struct Run {
    pub key: String,
    /// The job's name, or the file's.
    pub name: String,
    /// None: the run has no result document (not finished, or lost before it had one).
    pub result: Option<BootResult>,
}

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// The job as a whole: missing from a side, or without a verdict to compare.
    Job,
    /// The boot's verdict.
    Boot,
    /// A test, by `suite/name`.
    Test,
    /// A kernel issue, by fingerprint (named by its title).
    Issue,
}

/// One difference (or one sameness, for `still_failing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub key: String,
    pub subject: Subject,
    /// `boot`, the test's `suite/name`, or the issue's title.
    pub name: String,
    /// The state on each side: pass, fail, skip, present, absent, missing, error, flaky...
    pub baseline: String,
    pub candidate: String,
    /// The failure's summary, the issue's fingerprint, the error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_jobs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidate_jobs: Vec<String>,
}

/// The report (`bootfarm-operator compare --json`, `GET /api/v1/compare`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Keys present on both sides.
    pub matched: u32,
    /// pass → fail, a new fatal issue, a test that failed or went missing, a job gone missing.
    pub regressions: Vec<Change>,
    /// fail → pass, a fatal issue gone, a failing test that passes.
    pub fixes: Vec<Change>,
    /// Failing on both sides.
    pub still_failing: Vec<Change>,
    /// Runs of one side disagree (a retry or a repeat gave another answer).
    pub flaky: Vec<Change>,
    /// New issues the job's policy does not count as failures (warnings and the like).
    pub new_warnings: Vec<Change>,
    /// Keys that cannot be compared: no verdict on a side (an infrastructure error, not finished).
    pub incomplete: Vec<Change>,
    /// Keys only the candidate has.
    pub added: Vec<Change>,
}

impl Comparison {
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }
}

/// The outcome of one case on one side over its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    One(&'static str),
    Flaky(BTreeSet<&'static str>),
}

impl Seen {
    fn label(&self) -> String {
        match self {
            Seen::One(s) => (*s).to_string(),
            Seen::Flaky(all) => format!(
                "flaky ({})",
                all.iter().copied().collect::<Vec<_>>().join("/")
            ),
        }
    }
}

/// What one side says about one key: each case's outcome over the side's runs with a verdict.
struct Observed<'a> {
    runs: Vec<&'a Run>,
    judged: Vec<&'a BootResult>,
}

impl<'a> Observed<'a> {
    fn new(runs: Vec<&'a Run>) -> Self {
        let judged = runs
            .iter()
            .filter_map(|r| r.result.as_ref())
            .filter(|r| r.result != Verdict::Error)
            .collect();
        Observed { runs, judged }
    }

    fn names(&self) -> Vec<String> {
        self.runs.iter().map(|r| r.name.clone()).collect()
    }

    fn seen(&self, f: impl Fn(&BootResult) -> &'static str) -> Seen {
        let all: BTreeSet<&'static str> = self.judged.iter().map(|r| f(r)).collect();
        if all.len() == 1 {
            Seen::One(all.into_iter().next().unwrap_or("absent"))
        } else {
            Seen::Flaky(all)
        }
    }

    fn boot(&self) -> Seen {
        self.seen(|r| r.result.as_str())
    }

    fn test(&self, name: &str) -> Seen {
        self.seen(|r| {
            r.tests
                .iter()
                .find(|t| test_name(t) == name)
                .map_or("missing", |t| match t.result {
                    TestOutcome::Pass => "pass",
                    TestOutcome::Fail => "fail",
                    TestOutcome::Skip => "skip",
                    TestOutcome::Unknown => "unknown",
                })
        })
    }

    fn issue(&self, fingerprint: &str) -> Seen {
        self.seen(|r| {
            r.issues
                .iter()
                .find(|i| i.fingerprint == fingerprint)
                .map_or("absent", |i| if i.fatal { "present" } else { "warning" })
        })
    }

    /// Why the side has no verdict: the first error message, or that nothing finished.
    fn why_unjudged(&self) -> String {
        self.runs
            .iter()
            .filter_map(|r| r.result.as_ref())
            .find_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message))
            })
            .unwrap_or_else(|| "no result".to_string())
    }
}

fn test_name(t: &crate::result::TestCase) -> String {
    if t.suite.is_empty() {
        t.name.clone()
    } else {
        format!("{}/{}", t.suite, t.name)
    }
}

fn first_failure(results: &[&BootResult]) -> Option<String> {
    results
        .iter()
        .find(|r| r.result == Verdict::Fail)
        .map(|r| r.summary.clone())
}

fn by_key(runs: &[Run]) -> BTreeMap<String, Vec<&Run>> {
    let mut m: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        m.entry(r.key.clone()).or_default().push(r);
    }
    m
}

/// Compares `candidate` against `baseline`.
pub fn compare(baseline: &[Run], candidate: &[Run]) -> Comparison {
    let (base, cand) = (by_key(baseline), by_key(candidate));
    let mut out = Comparison::default();
    for (key, b_runs) in &base {
        let b = Observed::new(b_runs.clone());
        let Some(c_runs) = cand.get(key) else {
            out.regressions.push(Change {
                key: key.clone(),
                subject: Subject::Job,
                name: "job".into(),
                baseline: b
                    .judged
                    .first()
                    .map_or("present", |r| r.result.as_str())
                    .into(),
                candidate: "missing".into(),
                detail: Some("the candidate has no run of this key".into()),
                baseline_jobs: b.names(),
                candidate_jobs: Vec::new(),
            });
            continue;
        };
        out.matched += 1;
        let c = Observed::new(c_runs.clone());
        compare_key(key, &b, &c, &mut out);
    }
    for (key, c_runs) in &cand {
        if base.contains_key(key) {
            continue;
        }
        let c = Observed::new(c_runs.clone());
        out.added.push(Change {
            key: key.clone(),
            subject: Subject::Job,
            name: "job".into(),
            baseline: "absent".into(),
            candidate: if c.judged.is_empty() {
                "no verdict".into()
            } else {
                c.boot().label()
            },
            detail: first_failure(&c.judged),
            baseline_jobs: Vec::new(),
            candidate_jobs: c.names(),
        });
    }
    out
}

fn compare_key(key: &str, b: &Observed, c: &Observed, out: &mut Comparison) {
    let change = |subject, name: &str, bs: String, cs: String, detail: Option<String>| Change {
        key: key.to_string(),
        subject,
        name: name.to_string(),
        baseline: bs,
        candidate: cs,
        detail,
        baseline_jobs: b.names(),
        candidate_jobs: c.names(),
    };
    if b.judged.is_empty() || c.judged.is_empty() {
        let (bs, cs) = (
            if b.judged.is_empty() {
                "no verdict".to_string()
            } else {
                b.boot().label()
            },
            if c.judged.is_empty() {
                "no verdict".to_string()
            } else {
                c.boot().label()
            },
        );
        let why = if c.judged.is_empty() {
            c.why_unjudged()
        } else {
            b.why_unjudged()
        };
        out.incomplete
            .push(change(Subject::Job, "job", bs, cs, Some(why)));
        return;
    }

    // The boot's verdict.
    let (bb, cb) = (b.boot(), c.boot());
    let detail = first_failure(&c.judged).or_else(|| first_failure(&b.judged));
    match (&bb, &cb) {
        (Seen::Flaky(_), _) | (_, Seen::Flaky(_)) => out.flaky.push(change(
            Subject::Boot,
            "boot",
            bb.label(),
            cb.label(),
            detail,
        )),
        (Seen::One("pass"), Seen::One("fail")) => out.regressions.push(change(
            Subject::Boot,
            "boot",
            bb.label(),
            cb.label(),
            detail,
        )),
        (Seen::One("fail"), Seen::One("pass")) => out.fixes.push(change(
            Subject::Boot,
            "boot",
            bb.label(),
            cb.label(),
            detail,
        )),
        (Seen::One("fail"), Seen::One("fail")) => out.still_failing.push(change(
            Subject::Boot,
            "boot",
            bb.label(),
            cb.label(),
            detail,
        )),
        _ => {}
    }

    // Tests, by name.
    let tests: BTreeSet<String> = b
        .judged
        .iter()
        .chain(&c.judged)
        .flat_map(|r| r.tests.iter().map(test_name))
        .collect();
    for t in &tests {
        let (bt, ct) = (b.test(t), c.test(t));
        let ch = || change(Subject::Test, t, bt.label(), ct.label(), None);
        match (&bt, &ct) {
            (Seen::Flaky(_), _) | (_, Seen::Flaky(_)) => out.flaky.push(ch()),
            (Seen::One(x), Seen::One("fail")) if *x != "fail" => out.regressions.push(ch()),
            (Seen::One("pass" | "fail"), Seen::One("missing")) => out.regressions.push(ch()),
            (Seen::One("fail"), Seen::One("pass")) => out.fixes.push(ch()),
            (Seen::One("fail"), Seen::One("fail")) => out.still_failing.push(ch()),
            _ => {}
        }
    }

    // Issues, by fingerprint; named by their title (the kind and summary, for documents
    // written before titles existed).
    let mut issues: BTreeMap<&str, String> = BTreeMap::new();
    for r in b.judged.iter().chain(&c.judged) {
        for i in &r.issues {
            issues.entry(i.fingerprint.as_str()).or_insert_with(|| {
                if i.title.is_empty() {
                    format!("{}: {}", i.kind.as_str(), i.summary)
                } else {
                    i.title.clone()
                }
            });
        }
    }
    for (fp, title) in &issues {
        let (bi, ci) = (b.issue(fp), c.issue(fp));
        let ch = || {
            change(
                Subject::Issue,
                title,
                bi.label(),
                ci.label(),
                Some(fp.to_string()),
            )
        };
        match (&bi, &ci) {
            (Seen::Flaky(_), _) | (_, Seen::Flaky(_)) => out.flaky.push(ch()),
            (Seen::One("absent" | "warning"), Seen::One("present")) => out.regressions.push(ch()),
            (Seen::One("absent"), Seen::One("warning")) => out.new_warnings.push(ch()),
            (Seen::One("present"), Seen::One("absent" | "warning")) => out.fixes.push(ch()),
            (Seen::One("present"), Seen::One("present")) => out.still_failing.push(ch()),
            _ => {}
        }
    }
}

/// The report for people.
pub fn to_text(c: &Comparison) -> String {
    let mut s = format!(
        "{} matched: {} regressions, {} fixes, {} still failing, {} flaky, {} new warnings, {} incomplete, {} added\n",
        c.matched,
        c.regressions.len(),
        c.fixes.len(),
        c.still_failing.len(),
        c.flaky.len(),
        c.new_warnings.len(),
        c.incomplete.len(),
        c.added.len()
    );
    for (title, list) in [
        ("REGRESSIONS", &c.regressions),
        ("FIXES", &c.fixes),
        ("STILL FAILING", &c.still_failing),
        ("FLAKY", &c.flaky),
        ("NEW WARNINGS", &c.new_warnings),
        ("INCOMPLETE", &c.incomplete),
        ("ADDED", &c.added),
    ] {
        if list.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{title}\n"));
        for ch in list {
            let subject = match ch.subject {
                Subject::Job => "job",
                Subject::Boot => "boot",
                Subject::Test => "test",
                Subject::Issue => "issue",
            };
            let name = if matches!(ch.subject, Subject::Job | Subject::Boot) {
                String::new()
            } else {
                format!(" {}", ch.name)
            };
            s.push_str(&format!(
                "  {}  {subject}{name}: {} -> {}",
                ch.key, ch.baseline, ch.candidate
            ));
            if let Some(d) = ch
                .detail
                .as_deref()
                .filter(|_| ch.subject != Subject::Issue)
            {
                s.push_str(&format!("  ({})", crate::result::check::truncate(d, 160)));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{ErrorKind, Issue, IssueKind, Phase, Stage, TestCase};

    fn result(verdict: Verdict) -> BootResult {
        let mut r = BootResult::error(ErrorKind::QemuFailed, "x");
        r.result = verdict;
        r.error = None;
        r.stage = Stage::Userspace;
        r.summary = format!("{} summary", verdict.as_str());
        r
    }

    fn panic_issue(fp: &str, fatal: bool) -> Issue {
        Issue {
            kind: IssueKind::Panic,
            line: 1,
            summary: "Kernel panic - not syncing: boom".into(),
            excerpt: String::new(),
            fingerprint: fp.into(),
            phase: Phase::Boot,
            fatal,
            title: "Kernel panic - not syncing: boom".into(),
            function: None,
            count: 1,
        }
    }

    fn test(name: &str, outcome: TestOutcome) -> TestCase {
        TestCase {
            name: name.into(),
            result: outcome,
            suite: "smoke".into(),
            measurement: None,
            units: None,
            reason: None,
            output: None,
        }
    }

    fn run(key: &str, name: &str, r: Option<BootResult>) -> Run {
        Run {
            key: key.into(),
            name: name.into(),
            result: r,
        }
    }

    fn keys(list: &[Change]) -> Vec<(String, Subject, String)> {
        list.iter()
            .map(|c| (c.key.clone(), c.subject, c.name.clone()))
            .collect()
    }

    #[test]
    fn pass_to_fail_with_a_new_panic_is_a_regression_and_the_reverse_a_fix() {
        let mut panicked = result(Verdict::Fail);
        panicked.issues.push(panic_issue("f1", true));
        let base = [
            run("a/x86_64", "b-a", Some(result(Verdict::Pass))),
            run("b/x86_64", "b-b", Some(panicked.clone())),
        ];
        let cand = [
            run("a/x86_64", "c-a", Some(panicked.clone())),
            run("b/x86_64", "c-b", Some(result(Verdict::Pass))),
        ];
        let c = compare(&base, &cand);
        assert_eq!(c.matched, 2);
        assert_eq!(
            keys(&c.regressions),
            [
                ("a/x86_64".into(), Subject::Boot, "boot".into()),
                (
                    "a/x86_64".into(),
                    Subject::Issue,
                    "Kernel panic - not syncing: boom".into()
                ),
            ]
        );
        assert_eq!(c.regressions[0].detail.as_deref(), Some("fail summary"));
        assert_eq!(c.regressions[0].candidate_jobs, ["c-a"]);
        assert_eq!(c.regressions[1].detail.as_deref(), Some("f1"));
        assert_eq!(keys(&c.fixes).len(), 2);
        assert!(c.has_regressions());
        // Swapped sides swap the answer; the same side twice has nothing to say.
        let back = compare(&cand, &base);
        assert_eq!(keys(&back.regressions).len(), 2);
        assert_eq!(keys(&back.regressions)[0].0, "b/x86_64");
        let same = compare(&base, &base);
        assert!(!same.has_regressions() && same.fixes.is_empty());
        assert_eq!(
            keys(&same.still_failing).len(),
            2,
            "the failing boot and its panic"
        );
    }

    #[test]
    fn tests_are_matched_by_name_and_a_missing_one_is_a_regression() {
        let mut b = result(Verdict::Pass);
        b.tests = vec![
            test("t1", TestOutcome::Pass),
            test("t2", TestOutcome::Pass),
            test("t3", TestOutcome::Fail),
            test("t4", TestOutcome::Skip),
        ];
        b.result = Verdict::Fail;
        let mut c = result(Verdict::Fail);
        c.tests = vec![
            test("t1", TestOutcome::Fail),
            test("t3", TestOutcome::Pass),
            test("t5", TestOutcome::Fail),
        ];
        let out = compare(&[run("k", "b", Some(b))], &[run("k", "c", Some(c))]);
        let regress: Vec<(String, String)> = out
            .regressions
            .iter()
            .map(|c| (c.name.clone(), format!("{}->{}", c.baseline, c.candidate)))
            .collect();
        assert_eq!(
            regress,
            [
                ("smoke/t1".to_string(), "pass->fail".to_string()),
                ("smoke/t2".to_string(), "pass->missing".to_string()),
                ("smoke/t5".to_string(), "missing->fail".to_string()),
            ]
        );
        assert_eq!(
            keys(&out.fixes),
            [("k".into(), Subject::Test, "smoke/t3".into())]
        );
        assert_eq!(
            keys(&out.still_failing),
            [("k".into(), Subject::Boot, "boot".into())]
        );
    }

    #[test]
    fn disagreeing_repeats_are_flaky_not_regressions() {
        let base = [run("k", "b1", Some(result(Verdict::Pass)))];
        let cand = [
            run("k", "c1", Some(result(Verdict::Pass))),
            run("k", "c2", Some(result(Verdict::Fail))),
        ];
        let out = compare(&base, &cand);
        assert!(!out.has_regressions(), "{out:?}");
        assert_eq!(
            keys(&out.flaky),
            [("k".into(), Subject::Boot, "boot".into())]
        );
        assert_eq!(out.flaky[0].candidate, "flaky (fail/pass)");
        assert_eq!(out.flaky[0].candidate_jobs, ["c1", "c2"]);
    }

    #[test]
    fn errors_missing_and_added_keys_are_reported_apart() {
        let base = [
            run("gone", "b1", Some(result(Verdict::Pass))),
            run("err", "b2", Some(result(Verdict::Pass))),
        ];
        let cand = [
            run(
                "err",
                "c2",
                Some(BootResult::error(ErrorKind::QemuFailed, "qemu died")),
            ),
            run("new", "c3", Some(result(Verdict::Fail))),
        ];
        let out = compare(&base, &cand);
        assert_eq!(
            keys(&out.regressions),
            [("gone".into(), Subject::Job, "job".into())]
        );
        assert_eq!(out.regressions[0].candidate, "missing");
        assert_eq!(
            keys(&out.incomplete),
            [("err".into(), Subject::Job, "job".into())]
        );
        assert!(out.incomplete[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("qemu died"));
        assert_eq!(
            keys(&out.added),
            [("new".into(), Subject::Job, "job".into())]
        );
        assert_eq!(out.added[0].candidate, "fail");
        assert_eq!(out.matched, 1);
    }

    #[test]
    fn a_new_warning_is_noted_and_a_warning_turned_fatal_regresses() {
        let mut warned = result(Verdict::Pass);
        warned.issues.push(panic_issue("w", false));
        let mut fatal = result(Verdict::Fail);
        fatal.issues.push(panic_issue("w", true));
        let out = compare(
            &[run("k", "b", Some(result(Verdict::Pass)))],
            &[run("k", "c", Some(warned.clone()))],
        );
        assert!(!out.has_regressions());
        assert_eq!(out.new_warnings.len(), 1);
        let out = compare(
            &[run("k", "b", Some(warned))],
            &[run("k", "c", Some(fatal))],
        );
        assert_eq!(
            keys(&out.regressions)
                .iter()
                .map(|k| k.1)
                .collect::<Vec<_>>(),
            [Subject::Boot, Subject::Issue]
        );
        let text = to_text(&out);
        assert!(text.starts_with("1 matched: 2 regressions"), "{text}");
        assert!(
            text.contains("REGRESSIONS\n  k  boot: pass -> fail  (fail summary)\n"),
            "{text}"
        );
    }
}
