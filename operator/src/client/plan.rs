//! `submit --plan`, `wait --plan` and `compare`: plans as one submission, followed as one table,
//! and compared with another plan, a label selector or a directory of saved results.

use super::{out, progress, Api};
use crate::plans::{PlanJobView, PlanView};
use anyhow::Context;
use bootfarm_core::compare::{self, Run};
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows of the live table at most (the counts line covers the rest).
const MAX_ROWS: usize = 30;

/// One job as a table row: key, phase, verdict, first failure.
fn row(j: &PlanJobView) -> String {
    let mut s = format!("{:<32} {:<9}", j.key, j.phase.as_str());
    if let Some(r) = &j.result {
        s.push_str(&format!(" {:<5}", r.result.as_str()));
        if let Some(f) = &r.first_failure {
            s.push_str(&format!(
                " {}",
                bootfarm_core::result::check::truncate(f, 80)
            ));
        }
    }
    if j.attempts > 1 {
        s.push_str(&format!(" (attempt {})", j.attempts));
    }
    s
}

/// The counts line: `nightly  Running  12/100 finished  3 failed  running 20  queued 68  1m02s`.
pub fn counts_line(v: &PlanView, elapsed: Duration) -> String {
    let st = &v.status;
    let mut s = format!(
        "{}  {}  {}/{} finished",
        v.name,
        st.phase.as_str(),
        st.finished,
        st.jobs
    );
    if st.failed > 0 {
        s.push_str(&format!("  {} failed", st.failed));
    }
    for (phase, n) in &st.phases {
        if !matches!(phase.as_str(), "Succeeded" | "Failed") {
            s.push_str(&format!("  {} {n}", phase.to_lowercase()));
        }
    }
    let secs = elapsed.as_secs();
    s.push_str(&format!("  {}m{:02}s", secs / 60, secs % 60));
    s
}

/// The rows a terminal shows: every job when they fit; else running ones, then those that did
/// not pass, then the rest, with a last line for what is left out.
pub fn table(v: &PlanView, max: usize) -> Vec<String> {
    if v.jobs.len() <= max {
        return v.jobs.iter().map(row).collect();
    }
    let rank = |j: &PlanJobView| match j.phase {
        JobPhase::Running => 0,
        JobPhase::Failed | JobPhase::Error | JobPhase::Canceled => 1,
        JobPhase::Pending | JobPhase::Queued => 2,
        JobPhase::Succeeded => 3,
    };
    let mut jobs: Vec<&PlanJobView> = v.jobs.iter().collect();
    jobs.sort_by_key(|j| rank(j));
    let shown = max.saturating_sub(1);
    let mut rows: Vec<String> = jobs.iter().take(shown).map(|j| row(j)).collect();
    rows.push(format!("… and {} more", v.jobs.len() - shown));
    rows
}

/// Lines for the jobs whose phase changed since `seen` (plain output, for logs and pipes).
pub fn changes(seen: &mut HashMap<String, JobPhase>, v: &PlanView) -> Vec<String> {
    let mut lines = Vec::new();
    for j in &v.jobs {
        if seen.get(&j.name) != Some(&j.phase) {
            seen.insert(j.name.clone(), j.phase);
            lines.push(format!("{}  {}", j.name, row(j)));
        }
    }
    lines
}

/// The closing report on stdout: the plan's outcome, its counts, and each job that did not pass.
pub fn report(v: &PlanView) -> String {
    let st = &v.status;
    let results: Vec<String> = st.results.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let mut s = format!(
        "{}: {} ({} jobs: {})\n",
        v.name,
        st.phase.as_str(),
        st.jobs,
        results.join(", ")
    );
    for j in &v.jobs {
        if matches!(
            j.phase,
            JobPhase::Failed | JobPhase::Error | JobPhase::Canceled
        ) {
            s.push_str(&format!("  {}  {}\n", j.name, row(j)));
        }
    }
    s
}

/// `submit --plan FILE`: prints the plan's name and its job count.
pub async fn submit(api: &Api, path: &Path) -> anyhow::Result<PlanView> {
    let (body, content_type) = super::read_document(Some(path))?;
    let v = api.submit_plan(body, content_type).await?;
    Ok(v)
}

/// Polls the plan until every job finished: a live table on a terminal, a line per change
/// otherwise. Exit status 0 all passed, 1 any failed, 3 any error or canceled, 4 timeout.
pub async fn wait(api: Arc<Api>, name: &str, timeout: Option<Duration>) -> anyhow::Result<i32> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let live = tty.then(LiveTable::new);
    let mut seen = HashMap::new();
    let mut failures = 0u32;
    let code = loop {
        let Some(v) = super::ride_out(&mut failures, api.plan(name).await).await? else {
            continue;
        };
        match &live {
            Some(t) => t.show(&v, started.elapsed()),
            None => {
                for line in changes(&mut seen, &v) {
                    eprintln!("{line}");
                }
            }
        }
        if let Some(code) = v.status.phase.exit_code() {
            if let Some(t) = &live {
                t.clear();
            }
            out(&report(&v))?;
            break code;
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            if let Some(t) = &live {
                t.clear();
            }
            eprintln!("{}", counts_line(&v, started.elapsed()));
            eprintln!(
                "{name}: not finished after {}s; giving up waiting",
                started.elapsed().as_secs()
            );
            break progress::EXIT_TIMEOUT;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    Ok(code)
}

/// The table redrawn in place on stderr.
struct LiveTable {
    bars: MultiProgress,
    head: ProgressBar,
    rows: Vec<ProgressBar>,
}

impl LiveTable {
    fn new() -> Self {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let head = bars.add(ProgressBar::new_spinner());
        let plain = ProgressStyle::with_template("{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        head.set_style(
            ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| plain.clone()),
        );
        head.enable_steady_tick(Duration::from_millis(200));
        let height = console_rows().saturating_sub(3).clamp(3, MAX_ROWS);
        let rows = (0..height)
            .map(|_| {
                let b = bars.add(ProgressBar::new_spinner());
                b.set_style(plain.clone());
                b
            })
            .collect();
        LiveTable { bars, head, rows }
    }

    fn show(&self, v: &PlanView, elapsed: Duration) {
        self.head.set_message(counts_line(v, elapsed));
        let lines = table(v, self.rows.len());
        for (i, bar) in self.rows.iter().enumerate() {
            bar.set_message(lines.get(i).cloned().unwrap_or_default());
        }
    }

    fn clear(&self) {
        self.head.finish_and_clear();
        for b in &self.rows {
            b.finish_and_clear();
        }
        let _ = self.bars.clear();
    }
}

/// The terminal's height, from `LINES` or a usual default.
fn console_rows() -> usize {
    std::env::var("LINES")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(24)
}

/// One side of `compare`: a directory of saved result documents (`KEY.json`), a label selector,
/// or a plan's name.
pub async fn side_runs(api: &Api, side: &str) -> anyhow::Result<Vec<Run>> {
    let path = Path::new(side);
    if path.is_dir() {
        return dir_runs(path);
    }
    let selector = crate::plans::side_selector(side);
    let (items, truncated) = api.list(None, Some(&selector)).await?;
    if truncated {
        anyhow::bail!("{side}: more jobs match than one page holds; narrow the selector");
    }
    if items.is_empty() {
        anyhow::bail!("{side}: no job matches (not a directory, a plan or a selector of jobs)");
    }
    let jobs: Vec<BootJob> = items
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .context("reading the jobs' list")?;
    let wanted: Vec<String> = jobs
        .iter()
        .filter(|j| {
            crate::queue::phase(j).is_finished()
                && j.status.as_ref().is_some_and(|s| s.result.is_some())
        })
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    let fetched: Vec<(String, anyhow::Result<serde_json::Value>)> =
        futures::stream::iter(wanted.into_iter().map(|n| async move {
            let r = api.result(&n).await;
            (n, r)
        }))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut results = HashMap::new();
    for (name, r) in fetched {
        let doc = r.with_context(|| format!("the result of {name}"))?;
        let doc: BootResult =
            serde_json::from_value(doc).with_context(|| format!("the result of {name}"))?;
        results.insert(name, doc);
    }
    Ok(crate::plans::runs(&jobs, |n| results.remove(n)))
}

/// The runs of a directory: each `*.json` a result document, its key the file's name without
/// `.json`.
fn dir_runs(dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let path = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let result: BootResult = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a bootfarm result document", path.display()))?;
        runs.push(Run {
            key: key.to_string(),
            name: path.display().to_string(),
            result: Some(result),
        });
    }
    if runs.is_empty() {
        anyhow::bail!("{}: no result documents (*.json)", dir.display());
    }
    runs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(runs)
}

/// `compare BASELINE CANDIDATE`: text (or `--json`) on stdout; exit 1 on any regression.
pub async fn compare(
    api: &Api,
    baseline: &str,
    candidate: &str,
    json: bool,
) -> anyhow::Result<i32> {
    let base = side_runs(api, baseline)
        .await
        .with_context(|| format!("baseline {baseline}"))?;
    let cand = side_runs(api, candidate)
        .await
        .with_context(|| format!("candidate {candidate}"))?;
    let report = compare::compare(&base, &cand);
    if json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        out(&compare::to_text(&report))?;
    }
    Ok(i32::from(report.has_regressions()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::plan::{PlanPhase, PlanSummary};
    use bootfarm_core::result::{Stage, Verdict};
    use bootfarm_core::spec::ResultSummary;
    use std::collections::BTreeMap;

    fn job(key: &str, phase: JobPhase, fail: Option<&str>) -> PlanJobView {
        PlanJobView {
            name: format!("p-{}", key.replace('/', "-")),
            key: key.into(),
            phase,
            attempts: 1,
            result: phase.is_finished().then(|| ResultSummary {
                result: if fail.is_some() {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                reason: "x".into(),
                stage: Stage::Kernel,
                kernel_version: None,
                accel: None,
                issues: BTreeMap::new(),
                tests_passed: 0,
                tests_failed: 0,
                tests_skipped: 0,
                first_failure: fail.map(str::to_string),
            }),
        }
    }

    fn view(jobs: Vec<PlanJobView>) -> PlanView {
        PlanView {
            name: "p".into(),
            status: PlanSummary {
                phase: PlanPhase::Running,
                jobs: 4,
                finished: 2,
                failed: 1,
                phases: BTreeMap::from([
                    ("Running".into(), 1),
                    ("Queued".into(), 1),
                    ("Failed".into(), 1),
                    ("Succeeded".into(), 1),
                ]),
                results: BTreeMap::from([("pass".into(), 1), ("fail".into(), 1)]),
                ..PlanSummary::default()
            },
            jobs,
        }
    }

    fn sample() -> PlanView {
        view(vec![
            job("a/x86_64", JobPhase::Succeeded, None),
            job(
                "b/x86_64",
                JobPhase::Failed,
                Some("panic: Kernel panic - not syncing"),
            ),
            job("c/x86_64", JobPhase::Running, None),
            job("d/x86_64", JobPhase::Queued, None),
        ])
    }

    #[test]
    fn the_counts_line_says_where_the_plan_stands() {
        assert_eq!(
            counts_line(&sample(), Duration::from_secs(62)),
            "p  Running  2/4 finished  1 failed  queued 1  running 1  1m02s"
        );
    }

    #[test]
    fn a_table_too_long_shows_running_and_failing_jobs_first() {
        let v = sample();
        assert_eq!(table(&v, 10).len(), 4);
        let short = table(&v, 3);
        assert!(
            short[0].starts_with("c/x86_64") && short[0].contains("Running"),
            "{short:?}"
        );
        assert!(
            short[1].starts_with("b/x86_64") && short[1].contains("Kernel panic"),
            "{short:?}"
        );
        assert_eq!(short[2], "… and 2 more");
    }

    #[test]
    fn plain_output_prints_each_change_once_and_the_report_lists_failures() {
        let mut seen = HashMap::new();
        let mut v = sample();
        assert_eq!(changes(&mut seen, &v).len(), 4);
        assert!(changes(&mut seen, &v).is_empty());
        v.jobs[2] = job("c/x86_64", JobPhase::Succeeded, None);
        let again = changes(&mut seen, &v);
        assert_eq!(again.len(), 1);
        assert!(
            again[0].starts_with("p-c-x86_64  c/x86_64") && again[0].contains("Succeeded"),
            "{again:?}"
        );
        let r = report(&v);
        assert!(
            r.starts_with("p: Running (4 jobs: 1 fail, 1 pass)\n"),
            "{r}"
        );
        assert_eq!(r.lines().count(), 2, "{r}");
        assert!(r.contains("p-b-x86_64"), "{r}");
    }

    #[test]
    fn a_directory_side_keys_runs_by_file_name_and_refuses_other_documents() {
        let dir = tempfile::tempdir().unwrap();
        let doc = BootResult::error(bootfarm_core::result::ErrorKind::QemuFailed, "x");
        std::fs::write(
            dir.path().join("v6.1-x86_64.json"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let runs = dir_runs(dir.path()).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].key, "v6.1-x86_64");
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        let e = format!("{:#}", dir_runs(dir.path()).unwrap_err());
        assert!(
            e.contains("bad.json is not a bootfarm result document"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            format!("{:#}", dir_runs(empty.path()).unwrap_err()).contains("no result documents")
        );
    }
}
