//! `bisect`: the first bad kernel of an ordered series, k-ary, each round one plan booted in
//! parallel on the farm (visible with `wait --plan`, cancelable with `cancel`), every verdict
//! kept. The search itself is [`bootfarm_core::bisect`]; this is its I/O.

use super::{out, Api, Conn};
use anyhow::{bail, Context};
use bootfarm_core::bisect::{self, Bisection, Outcome, Signature, State};
use bootfarm_core::result::BootResult;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `bisect --kernels FILE --template JOB`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The kernels file has one build per line, good first and bad last: \
`NAME URL [modules=URL]` (or only `URL`); `#` starts a comment.\n\n\
Exit status: 0 the first bad kernel was found, 1 skipped kernels hide it (the candidates are \
listed), 3 the bisection could not run (the good kernel fails, the bad one passes...), 4 a \
round timed out."
)]
pub struct BisectArgs {
    /// The series, in order: good first, bad last.
    #[arg(long, value_name = "FILE")]
    pub kernels: PathBuf,
    /// A BootJob document: every boot is this job with its kernel (and modules) replaced.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,
    /// The bisection's name: its rounds are plans NAME-r0, NAME-r1, ... [default: bisect-xxxxx].
    #[arg(long)]
    pub name: Option<String>,
    /// Kernels booted at once per round [default: the runners the farm's pools may run for the
    /// arch, else 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: Option<u32>,
    /// Give up on a round after this many seconds (its jobs are canceled).
    #[arg(long, default_value_t = 3600)]
    pub round_timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// One build of the series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
}

/// Reads the series: `NAME URL [modules=URL]` or `URL` per line.
pub fn parse_kernels(text: &str) -> Result<Vec<Build>, String> {
    let mut builds = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, url, rest) = match words.as_slice() {
            [url] => (format!("#{}", builds.len()), url.to_string(), &[][..]),
            [name, url, rest @ ..] => (name.to_string(), url.to_string(), rest),
            [] => continue,
        };
        let mut modules = None;
        for r in rest {
            match r.split_once('=') {
                Some(("modules", m)) => modules = Some(m.to_string()),
                _ => return Err(format!("line {}: {r:?}: expected modules=URL", n + 1)),
            }
        }
        builds.push(Build { name, url, modules });
    }
    if builds.len() < 2 {
        return Err(format!(
            "{} builds: a bisection needs a good one first and a bad one last",
            builds.len()
        ));
    }
    Ok(builds)
}

/// One kernel's boot in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Booted {
    pub index: usize,
    pub build: String,
    pub job: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub plan: String,
    pub boots: Vec<Booted>,
}

/// The answer (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub kernels: usize,
    pub parallel: u32,
    #[serde(flatten)]
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<Build>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good: Option<Build>,
    /// The known-bad kernel's failure, what "bad" meant.
    pub signature: Signature,
    pub rounds: Vec<Round>,
    pub boots: usize,
    /// Kernels that failed otherwise (or errored): reported, not bisected into.
    pub skipped: Vec<Booted>,
}

/// The report for people.
pub fn to_text(r: &Report, builds: &[Build]) -> String {
    let mut s = match &r.state {
        State::Found {
            first_bad,
            last_good,
        } => format!(
            "bisect {}: the first bad kernel is {} ({}); the last good is {}\n",
            r.name, builds[*first_bad].name, builds[*first_bad].url, builds[*last_good].name
        ),
        State::Ambiguous { candidates } => format!(
            "bisect {}: the first bad kernel is one of {} (skipped kernels hide the boundary)\n",
            r.name,
            candidates
                .iter()
                .map(|i| builds[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        State::Running => format!("bisect {}: unfinished\n", r.name),
    };
    s.push_str(&format!(
        "  {} kernels, {} rounds of up to {} boots, {} boots in all (a binary search: up to {} rounds)\n",
        r.kernels,
        r.rounds.len(),
        r.parallel,
        r.boots,
        bisect::rounds_needed(r.kernels, 1) + 1
    ));
    for round in &r.rounds {
        let boots: Vec<String> = round
            .boots
            .iter()
            .map(|b| {
                let o = match &b.outcome {
                    Outcome::Good => "good",
                    Outcome::Bad => "bad",
                    Outcome::Other(_) => "skipped",
                };
                format!("{} {o}", b.build)
            })
            .collect();
        s.push_str(&format!(
            "  round {} ({}): {}\n",
            round.round,
            round.plan,
            boots.join(", ")
        ));
    }
    for b in &r.skipped {
        if let Outcome::Other(why) = &b.outcome {
            s.push_str(&format!("  skipped {}: {why}\n", b.build));
        }
    }
    s
}

struct Template {
    arch: String,
    defaults: Map<String, Value>,
}

fn read_template(path: &Path) -> anyhow::Result<Template> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a YAML or JSON document", path.display()))?;
    if doc["kind"] != "BootJob" {
        bail!("{}: the template must be a BootJob", path.display());
    }
    let Some(mut spec) = doc["spec"].as_object().cloned() else {
        bail!("{}: the template has no spec", path.display());
    };
    let Some(arch) = spec
        .remove("arch")
        .and_then(|a| a.as_str().map(str::to_string))
    else {
        bail!("{}: the template's spec.arch is required", path.display());
    };
    spec.remove("kernel");
    Ok(Template {
        arch,
        defaults: spec,
    })
}

/// The kernel's name in a round's plan: its index (names in the file need not be label values).
fn plan_kernel(i: usize) -> String {
    format!("k{i}")
}

fn round_plan(name: &str, round: u32, t: &Template, builds: &[Build], picks: &[usize]) -> Value {
    let kernels: Vec<Value> = picks
        .iter()
        .map(|&i| {
            let b = &builds[i];
            let mut k = json!({"name": plan_kernel(i), "url": b.url});
            if let Some(m) = &b.modules {
                k["spec"] = json!({"modules": {"url": m}});
            }
            k
        })
        .collect();
    json!({
        "apiVersion": bootfarm_core::spec::API_VERSION,
        "kind": "BootPlan",
        "metadata": {"name": format!("{name}-r{round}")},
        "spec": {
            "arches": [t.arch],
            "defaults": t.defaults,
            "kernels": kernels,
            "labels": {"bootfarm.dev/bisect": name},
        }
    })
}

/// The runners the farm may run for `arch` (its pools' maximum), if it says.
async fn capacity(api: &Api, arch: &str) -> Option<u32> {
    let pools = api.pools().await.ok()?;
    let total: u64 = pools["items"]
        .as_array()?
        .iter()
        .filter(|p| {
            p["arches"]
                .as_array()
                .is_none_or(|a| a.is_empty() || a.iter().any(|x| x == arch))
        })
        .filter_map(|p| p["maxRunners"].as_u64())
        .sum();
    u32::try_from(total).ok().filter(|n| *n > 0)
}

/// Boots one round's plan and answers each kernel's result (None: no result document).
async fn boot_round(
    api: &Api,
    plan: Value,
    timeout: Duration,
) -> anyhow::Result<Option<Vec<(usize, String, Option<BootResult>)>>> {
    let name = plan["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body = serde_json::to_vec(&plan)?;
    api.submit_plan(body, "application/json")
        .await
        .with_context(|| format!("submitting {name}"))?;
    let started = Instant::now();
    let view = loop {
        let v = api.plan(&name).await?;
        if v.status.phase.is_finished() {
            break v;
        }
        if started.elapsed() >= timeout {
            for j in &v.jobs {
                let _ = api.cancel(&j.name).await;
            }
            return Ok(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                for j in &v.jobs {
                    let _ = api.cancel(&j.name).await;
                }
                bail!("interrupted: the jobs of {name} were canceled");
            }
        }
    };
    let mut out = Vec::new();
    for j in &view.jobs {
        let index = j
            .key
            .split('/')
            .next()
            .and_then(|k| k.strip_prefix('k'))
            .and_then(|i| i.parse::<usize>().ok())
            .with_context(|| format!("{}: not a job of this bisection (key {})", j.name, j.key))?;
        let result = match &j.result {
            Some(_) => match api.result(&j.name).await {
                Ok(doc) => Some(
                    serde_json::from_value(doc)
                        .with_context(|| format!("the result of {}", j.name))?,
                ),
                Err(_) => None,
            },
            None => None,
        };
        out.push((index, j.name.clone(), result));
    }
    Ok(Some(out))
}

pub async fn run(a: BisectArgs) -> anyhow::Result<i32> {
    let api = Api::new(&a.conn)?;
    let text = std::fs::read_to_string(&a.kernels)
        .with_context(|| format!("reading {}", a.kernels.display()))?;
    let builds =
        parse_kernels(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.kernels.display()))?;
    let template = read_template(&a.template)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => format!("bisect-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
    };
    let parallel = match a.parallel {
        Some(p) => p,
        None => capacity(&api, &template.arch).await.unwrap_or(4),
    };
    let timeout = Duration::from_secs(a.round_timeout.max(1));
    let mut search = Bisection::new(builds.len()).map_err(anyhow::Error::msg)?;
    let mut report = Report {
        name: name.clone(),
        kernels: builds.len(),
        parallel,
        state: State::Running,
        first_bad: None,
        last_good: None,
        signature: Signature::default(),
        rounds: Vec::new(),
        boots: 0,
        skipped: Vec::new(),
    };
    let mut signature: Option<Signature> = None;
    for round in 0u32.. {
        // Round 0 boots the two ends: the good must pass, and the bad's failure is what "bad" is.
        let picks = if round == 0 {
            vec![0, builds.len() - 1]
        } else {
            search.next_round(parallel as usize)
        };
        if picks.is_empty() {
            break;
        }
        let plan = round_plan(&name, round, &template, &builds, &picks);
        let plan_name = format!("{name}-r{round}");
        eprintln!(
            "bisect {name}: round {round} ({plan_name}): booting {}",
            picks
                .iter()
                .map(|i| builds[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let Some(results) = boot_round(&api, plan, timeout).await? else {
            eprintln!(
                "bisect {name}: round {round} timed out after {}s; its jobs were canceled",
                timeout.as_secs()
            );
            return Ok(super::progress::EXIT_TIMEOUT);
        };
        report.boots += results.len();
        if round == 0 {
            let find = |i: usize| results.iter().find(|r| r.0 == i).and_then(|r| r.2.as_ref());
            let (good, bad) = (find(0), find(builds.len() - 1));
            match good {
                Some(r) if r.result == bootfarm_core::result::Verdict::Pass => {}
                other => bail!(
                    "the good kernel {} does not pass ({}): nothing to bisect from",
                    builds[0].name,
                    other.map_or("no result".to_string(), |r| format!(
                        "{}: {}",
                        r.result.as_str(),
                        r.summary
                    ))
                ),
            }
            match bad {
                Some(r) if r.result == bootfarm_core::result::Verdict::Fail => {
                    signature = Some(Signature::of(r));
                }
                other => bail!(
                    "the bad kernel {} does not fail ({}): nothing to bisect to",
                    builds[builds.len() - 1].name,
                    other.map_or("no result".to_string(), |r| format!(
                        "{}: {}",
                        r.result.as_str(),
                        r.summary
                    ))
                ),
            }
        }
        let sig = signature.clone().unwrap_or_default();
        let mut boots = Vec::new();
        for (index, job, result) in results {
            let outcome = bisect::judge(&sig, result.as_ref());
            search.record(index, outcome.clone());
            let booted = Booted {
                index,
                build: builds[index].name.clone(),
                job,
                outcome,
            };
            if matches!(booted.outcome, Outcome::Other(_)) {
                report.skipped.push(booted.clone());
            }
            boots.push(booted);
        }
        boots.sort_by_key(|b| b.index);
        report.rounds.push(Round {
            round,
            plan: plan_name,
            boots,
        });
    }
    report.signature = signature.unwrap_or_default();
    report.state = search.state();
    if let State::Found {
        first_bad,
        last_good,
    } = &report.state
    {
        report.first_bad = Some(builds[*first_bad].clone());
        report.last_good = Some(builds[*last_good].clone());
    }
    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        out(&to_text(&report, &builds))?;
    }
    Ok(match report.state {
        State::Found { .. } => 0,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_is_names_urls_and_modules_in_order() {
        let b = parse_kernels(
            "# a series\nv1 file:///k1\nfile:///k2\n\nv3 file:///k3 modules=file:///m3 # bad\n",
        )
        .unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[0],
            Build {
                name: "v1".into(),
                url: "file:///k1".into(),
                modules: None
            }
        );
        assert_eq!(b[1].name, "#1");
        assert_eq!(b[2].modules.as_deref(), Some("file:///m3"));
        assert!(parse_kernels("only file:///k\n")
            .unwrap_err()
            .contains("1 builds"));
        assert!(parse_kernels("a file:///a\nb file:///b initrd=x\n")
            .unwrap_err()
            .contains("line 2"));
    }

    #[test]
    fn a_round_is_a_plan_of_the_picked_kernels_on_the_templates_arch() {
        let t = Template {
            arch: "x86_64".into(),
            defaults: Map::from_iter([("expect".to_string(), json!("poweroff"))]),
        };
        let builds =
            parse_kernels("a file:///a\nb file:///b modules=file:///mb\nc file:///c\n").unwrap();
        let p = round_plan("bs", 2, &t, &builds, &[1, 2]);
        assert_eq!(p["metadata"]["name"], "bs-r2");
        assert_eq!(p["spec"]["arches"], json!(["x86_64"]));
        assert_eq!(
            p["spec"]["kernels"][0],
            json!({"name": "k1", "url": "file:///b", "spec": {"modules": {"url": "file:///mb"}}})
        );
        assert_eq!(p["spec"]["kernels"][1]["name"], "k2");
        assert_eq!(p["spec"]["labels"]["bootfarm.dev/bisect"], "bs");
        let spec: bootfarm_core::plan::BootPlanSpec =
            serde_json::from_value(p["spec"].clone()).unwrap();
        assert_eq!(
            bootfarm_core::plan::expand("bs-r2", &spec).unwrap().len(),
            2
        );
    }
}
