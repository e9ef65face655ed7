//! bootfarm-loadgen: a load generator for the operator, never a runner. It submits N BootJobs
//! over the HTTP API, then R hollow runners speak the runner protocol exactly as a real runner
//! does (claim, heartbeat at the runner's own interval, console chunks at the recorded boot's own
//! pace, the recorded result) without QEMU. It prints one JSON object: what the operator did
//! under that load (claim latency, duplicate claims, lost jobs, wall time against the ideal).

use anyhow::{bail, Context as _};
use bootfarm_blackbox::loadgen::replay::{self, Chunk};
use bootfarm_blackbox::loadgen::stats::{self, Claim};
use bootfarm_core::result::BootResult;
use bootfarm_core::Arch;
use bootfarm_runner::work::client::{Claimed, Client, ClientError, Lease};
use clap::Parser;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The runner's batching window for console chunks.
const WINDOW: Duration = bootfarm_runner::work::BATCH_WINDOW;
/// A claim's long-poll.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "bootfarm-loadgen",
    version,
    about = "Load generator: hollow runners against a bootfarm operator (no QEMU)"
)]
struct Args {
    /// The operator's base URL (loopback).
    #[arg(long)]
    server: String,
    /// BootJobs to submit.
    #[arg(long)]
    jobs: usize,
    /// Hollow runners claiming at once.
    #[arg(long)]
    runners: usize,
    /// A recorded real console log to replay (paced by its printk timestamps).
    #[arg(long)]
    log: PathBuf,
    /// A recorded real result (JSON) to complete every job with.
    #[arg(long)]
    result: PathBuf,
    /// Replay speed: 1 is the recorded boot's own pace.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Job names are PREFIX-NNNNN.
    #[arg(long, default_value = "lg")]
    prefix: String,
    #[arg(long, default_value = "x86_64")]
    arch: Arch,
    /// The pool the hollow runners say they serve.
    #[arg(long, default_value = "default")]
    pool: String,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 16)]
    submit_concurrency: usize,
    /// A user token (Bearer) for submissions, and a runner token for the runner protocol.
    #[arg(long, env = "BOOTFARM_LOADGEN_USER_TOKEN")]
    user_token: Option<String>,
    #[arg(long, env = "BOOTFARM_LOADGEN_RUNNER_TOKEN")]
    runner_token: Option<String>,
    /// Only submit (the jobs stay queued): for measuring a large queue.
    #[arg(long)]
    submit_only: bool,
    /// Submit nothing: one hollow runner claims until it gets a job, prints how long that took
    /// (`first_claim_s`), and gives the job back (for the time to the first claim after a restart).
    #[arg(long, conflicts_with = "submit_only")]
    first_claim: bool,
    /// After the run, GET every job and count the ones not Succeeded as lost.
    #[arg(long)]
    verify: bool,
    /// Give up (and count what did not finish as lost) after this many seconds of runners.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

/// What every hollow runner records into.
struct Shared {
    client: Client,
    pool: String,
    arch: Arch,
    chunks: Vec<Chunk>,
    job_time: Duration,
    result: BootResult,
    jobs: usize,
    submitted: HashMap<String, Instant>,
    claims: Mutex<Vec<Claim>>,
    claim_ms: Mutex<Vec<f64>>,
    to_running_ms: Mutex<Vec<f64>>,
    complete_ms: Mutex<Vec<f64>>,
    finished: Mutex<BTreeSet<String>>,
    finished_n: AtomicUsize,
    claim_errors: AtomicU64,
    log_posts: AtomicU64,
    log_bytes: AtomicU64,
    heartbeats: AtomicU64,
    lost_leases: AtomicU64,
    requeued: AtomicU64,
    errors: Mutex<Vec<String>>,
    last_finish: Mutex<Option<Instant>>,
    stop: CancellationToken,
}

impl Shared {
    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 20 {
            errors.push(e);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn push(v: &Mutex<Vec<f64>>, x: f64) {
    v.lock().unwrap_or_else(|p| p.into_inner()).push(x);
}

fn job_body(name: &str, arch: Arch) -> serde_json::Value {
    // Nothing ever fetches this URL: hollow runners do not boot (port 9 is discard, on loopback).
    serde_json::json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootJob",
        "metadata": {"name": name, "labels": {"bootfarm.dev/loadgen": "true"}},
        "spec": {"arch": arch, "kernel": {"url": "http://127.0.0.1:9/loadgen/vmlinuz"}, "expect": "poweroff"}
    })
}

/// Submits every job; returns when each was accepted, and how long the whole took.
async fn submit_all(
    args: &Args,
    http: &reqwest::Client,
) -> anyhow::Result<(HashMap<String, Instant>, Duration)> {
    let names: Vec<String> = (0..args.jobs)
        .map(|i| format!("{}-{i:05}", args.prefix))
        .collect();
    let url = format!("{}/api/v1/bootjobs", args.server.trim_end_matches('/'));
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<(String, Instant)>> = futures::stream::iter(names)
        .map(|name| {
            let mut req = http
                .post(&url)
                .timeout(Duration::from_secs(60))
                .json(&job_body(&name, args.arch));
            if let Some(t) = &args.user_token {
                req = req.bearer_auth(t);
            }
            async move {
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("submitting {name}"))?;
                let status = resp.status();
                if status != reqwest::StatusCode::CREATED {
                    let body = resp.text().await.unwrap_or_default();
                    bail!("submitting {name}: HTTP {status}: {body}");
                }
                Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(args.submit_concurrency.max(1))
        .collect()
        .await;
    let took = t0.elapsed();
    let mut submitted = HashMap::new();
    for r in results {
        let (name, at) = r?;
        submitted.insert(name, at);
    }
    Ok((submitted, took))
}

async fn hollow_runner(id: String, s: Arc<Shared>) {
    let arches = [s.arch];
    loop {
        if s.stop.is_cancelled() || s.finished_n.load(Ordering::SeqCst) >= s.jobs {
            return;
        }
        let t0 = Instant::now();
        let claimed = tokio::select! {
            r = s.client.claim(&id, &s.pool, &arches, CLAIM_WAIT, None) => r,
            () = s.stop.cancelled() => return,
        };
        match claimed {
            Ok(None) => {}
            Ok(Some(c)) => {
                let t1 = Instant::now();
                match s.submitted.get(&c.name) {
                    Some(&at) => {
                        push(&s.claim_ms, ms(t1 - t0.max(at)));
                        push(&s.to_running_ms, ms(t1 - at));
                    }
                    None => s.error(format!(
                        "claimed {}, which this load generator did not submit",
                        c.name
                    )),
                }
                s.claims
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Claim {
                        job: c.name.clone(),
                        attempt: c.attempt,
                        runner: id.clone(),
                    });
                run_job(&s, c).await;
            }
            Err(e) => {
                s.claim_errors.fetch_add(1, Ordering::Relaxed);
                s.error(format!("claim by {id}: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One claimed job, as a runner does it: heartbeats beside the console replay, then the result.
async fn run_job(s: &Arc<Shared>, c: Claimed) {
    let start = tokio::time::Instant::now();
    let gone = Arc::new(AtomicBool::new(false));
    let beat = {
        let s = s.clone();
        let (name, lease) = (c.name.clone(), c.lease_id.clone());
        let gone = gone.clone();
        let every = bootfarm_runner::work::heartbeat_interval(c.lease_ttl);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                s.heartbeats.fetch_add(1, Ordering::Relaxed);
                match s.client.heartbeat(&name, &lease).await {
                    Ok(Lease::Active) => {}
                    Ok(Lease::Canceled | Lease::Lost) => {
                        s.lost_leases.fetch_add(1, Ordering::Relaxed);
                        s.error(format!("{name}: lease lost or canceled"));
                        gone.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => s.error(format!("{name}: heartbeat: {e}")),
                }
            }
        })
    };
    for chunk in &s.chunks {
        tokio::time::sleep_until(start + chunk.at).await;
        if gone.load(Ordering::SeqCst) {
            break;
        }
        s.log_posts.fetch_add(1, Ordering::Relaxed);
        s.log_bytes
            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        match s
            .client
            .append_log(
                &c.name,
                &c.lease_id,
                bytes::Bytes::from(chunk.bytes.clone()),
            )
            .await
        {
            Ok(()) => {}
            Err(ClientError::Stale(_)) => break,
            Err(e) => s.error(format!("{}: log: {e}", c.name)),
        }
    }
    tokio::time::sleep_until(start + s.job_time).await;
    // Heartbeats stop before the verdict goes, as a runner's do: one still in flight could be
    // answered after the complete, when the lease is (rightly) gone, and would count as lost.
    beat.abort();
    if !gone.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match s.client.complete(&c.name, &c.lease_id, &s.result).await {
                Ok(reply) => {
                    push(&s.complete_ms, ms(t0.elapsed()));
                    match reply {
                        bootfarm_core::protocol::CompleteReply::Finished { .. } => {
                            s.finished
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(c.name.clone());
                            s.finished_n.fetch_add(1, Ordering::SeqCst);
                            *s.last_finish.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(Instant::now());
                        }
                        bootfarm_core::protocol::CompleteReply::Retrying { .. } => {
                            s.requeued.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    break;
                }
                Err(e) if e.is_retryable() && attempt < 3 => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    s.error(format!("{}: complete: {e}", c.name));
                    break;
                }
            }
        }
    }
}

/// GETs every job; returns the ones not Succeeded.
async fn not_succeeded(
    args: &Args,
    http: &reqwest::Client,
    names: Vec<String>,
) -> anyhow::Result<usize> {
    let base = args.server.trim_end_matches('/').to_string();
    let phases: Vec<anyhow::Result<bool>> = futures::stream::iter(names)
        .map(|name| {
            let mut req = http
                .get(format!("{base}/api/v1/bootjobs/{name}"))
                .timeout(Duration::from_secs(30));
            if let Some(t) = &args.user_token {
                req = req.bearer_auth(t);
            }
            async move {
                let job: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
                Ok(job["status"]["phase"] == "Succeeded")
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut n = 0;
    for p in phases {
        if !p? {
            n += 1;
        }
    }
    Ok(n)
}

/// Claims until a job comes (or the timeout), then gives it back.
async fn first_claim(args: &Args) -> anyhow::Result<()> {
    let client = Client::new(&args.server, args.runner_token.clone())?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(args.timeout);
    let mut errors = 0u64;
    let claimed = loop {
        if t0.elapsed() > limit {
            bail!(
                "no job claimed in {} s ({errors} failed claims)",
                args.timeout
            );
        }
        match client
            .claim("loadgen-first", &args.pool, &[args.arch], CLAIM_WAIT, None)
            .await
        {
            Ok(Some(c)) => break c,
            Ok(None) => {}
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let took = t0.elapsed();
    client
        .release(
            &claimed.name,
            &claimed.lease_id,
            "load generator: first-claim probe",
        )
        .await
        .with_context(|| format!("releasing {}", claimed.name))?;
    println!(
        "{}",
        serde_json::json!({"first_claim_s": round(Some(took.as_secs_f64())), "job": claimed.name, "failed_claims": errors})
    );
    Ok(())
}

fn round(x: Option<f64>) -> serde_json::Value {
    x.map_or(serde_json::Value::Null, |v| {
        serde_json::json!((v * 100.0).round() / 100.0)
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.first_claim && (args.jobs == 0 || (args.runners == 0 && !args.submit_only)) {
        bail!("--jobs and --runners must be at least 1");
    }
    let log =
        std::fs::read(&args.log).with_context(|| format!("reading {}", args.log.display()))?;
    let result: BootResult = serde_json::from_slice(
        &std::fs::read(&args.result)
            .with_context(|| format!("reading {}", args.result.display()))?,
    )
    .with_context(|| format!("{} is not a bootfarm result", args.result.display()))?;
    let chunks = replay::chunks(&log, WINDOW, args.speed);
    if chunks.is_empty() {
        bail!("{} is empty", args.log.display());
    }
    // As long as the recorded boot took (its console may end before QEMU did), at this speed.
    let recorded = result
        .durations
        .total
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(Duration::ZERO, |t| {
            Duration::from_secs_f64(t / args.speed.max(1e-3))
        });
    let job_time = replay::duration(&chunks, WINDOW).max(recorded);
    let http = reqwest::Client::builder().build()?;
    if args.first_claim {
        return first_claim(&args).await;
    }

    let (submitted, submit_took) = submit_all(&args, &http).await?;
    let submit_s = submit_took.as_secs_f64();
    let mut out = serde_json::json!({
        "jobs": args.jobs,
        "runners": args.runners,
        "submitted": submitted.len(),
        "submit_s": (submit_s * 1000.0).round() / 1000.0,
        "submits_per_s": round(Some(submitted.len() as f64 / submit_s.max(1e-6))),
    });
    if args.submit_only {
        println!("{out}");
        return Ok(());
    }

    let names: Vec<String> = submitted.keys().cloned().collect();
    let shared = Arc::new(Shared {
        client: Client::new(&args.server, args.runner_token.clone())?,
        pool: args.pool.clone(),
        arch: args.arch,
        chunks,
        job_time,
        result,
        jobs: args.jobs,
        submitted,
        claims: Mutex::default(),
        claim_ms: Mutex::default(),
        to_running_ms: Mutex::default(),
        complete_ms: Mutex::default(),
        finished: Mutex::default(),
        finished_n: AtomicUsize::new(0),
        claim_errors: AtomicU64::new(0),
        log_posts: AtomicU64::new(0),
        log_bytes: AtomicU64::new(0),
        heartbeats: AtomicU64::new(0),
        lost_leases: AtomicU64::new(0),
        requeued: AtomicU64::new(0),
        errors: Mutex::default(),
        last_finish: Mutex::new(None),
        stop: CancellationToken::new(),
    });
    let t0 = Instant::now();
    let runners: Vec<_> = (0..args.runners)
        .map(|i| tokio::spawn(hollow_runner(format!("loadgen-{i:04}"), shared.clone())))
        .collect();
    let deadline = {
        let stop = shared.stop.clone();
        let timeout = Duration::from_secs(args.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            stop.cancel();
        })
    };
    for r in runners {
        r.await.context("a hollow runner panicked")?;
    }
    deadline.abort();
    let s = &shared;
    let wall = s
        .last_finish
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(t0.elapsed(), |t| t - t0);
    let claims = s.claims.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let finished = s.finished.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lost = stats::lost(names.iter().map(String::as_str), &finished);
    if args.verify {
        lost = lost.max(not_succeeded(&args, &http, names).await?);
    }
    let rounds = args.jobs.div_ceil(args.runners);
    let ideal = job_time.as_secs_f64() * args.jobs as f64 / args.runners as f64;
    let v = |m: &Mutex<Vec<f64>>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (claim_ms, to_running, complete_ms) =
        (v(&s.claim_ms), v(&s.to_running_ms), v(&s.complete_ms));
    let extra = serde_json::json!({
        "claims": claims.len(),
        "claims_per_s": round(Some(claims.len() as f64 / wall.as_secs_f64().max(1e-6))),
        "claim_errors": s.claim_errors.load(Ordering::Relaxed),
        "duplicate_claims": stats::duplicate_claims(&claims),
        "retried_jobs": stats::retried(&claims),
        "lost_jobs": lost,
        "lost_leases": s.lost_leases.load(Ordering::Relaxed),
        "requeued_results": s.requeued.load(Ordering::Relaxed),
        "claim_p50_ms": round(stats::percentile(&claim_ms, 50.0)),
        "claim_p99_ms": round(stats::percentile(&claim_ms, 99.0)),
        "submit_to_running_p50_ms": round(stats::percentile(&to_running, 50.0)),
        "submit_to_running_p99_ms": round(stats::percentile(&to_running, 99.0)),
        "complete_p99_ms": round(stats::percentile(&complete_ms, 99.0)),
        "heartbeats": s.heartbeats.load(Ordering::Relaxed),
        "log_posts": s.log_posts.load(Ordering::Relaxed),
        "log_bytes": s.log_bytes.load(Ordering::Relaxed),
        "job_s": job_time.as_secs_f64(),
        "rounds": rounds,
        "wall_s": round(Some(wall.as_secs_f64())),
        "ideal_s": round(Some(ideal)),
        "errors": s.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    });
    if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{out}");
    Ok(())
}
