//! The people's CLI: talk to a running farm (standalone or Kubernetes) over its HTTP API.
//!
//! ```text
//! bootfarm-operator submit job.yaml            # or `-` for stdin; JSON or YAML
//! bootfarm-operator submit --arch x86_64 --kernel file:///boot/vmlinuz --initrd URL --wait
//!                          # any job flag of `bootfarm-runner boot`: --login, --command, --smp...
//! bootfarm-operator list [--phase Running]
//! bootfarm-operator get NAME [-o json|yaml]
//! bootfarm-operator log NAME [--follow]
//! bootfarm-operator wait NAME [--timeout 600]
//! bootfarm-operator cancel NAME
//! bootfarm-operator submit --plan plan.yaml [--wait]   # a BootPlan: many jobs as one
//! bootfarm-operator wait --plan NAME           # a live table; 0 all passed, 1 any failed, 3 any error
//! bootfarm-operator compare BASELINE CANDIDATE # plans, selectors or result directories; 1 on regression
//! bootfarm-operator bisect --kernels series.txt --template job.yaml   # the first bad kernel
//! ```
//! `--server` (BOOTFARM_SERVER, default http://127.0.0.1:8080); a token from BOOTFARM_TOKEN or
//! `--token-file`. `wait` and `submit --wait` exit 0 Succeeded, 1 Failed, 3 Error or Canceled,
//! 4 when `--timeout` passes first.

pub mod bisect;
mod http;
pub mod plan;
pub mod progress;

use anyhow::Context;
use bootfarm_core::cli::{validate_flags, JobArgs};
use bootfarm_core::console::{Classifier, ClassifierConfig, Event};
use bootfarm_core::spec::BootJob;
use clap::error::ErrorKind;
use clap::{Args, Subcommand, ValueEnum};
pub use http::{Api, Conn};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "Exit status of `wait` and `submit --wait`: 0 Succeeded, 1 Failed, \
3 Error or Canceled, 4 wait timed out; other failures 3 with a message on stderr.";

const SUBMIT_AFTER_HELP: &str = "The job flags are those of `bootfarm-runner boot`; one not given \
is left to the farm's defaults (the ones `bootfarm-runner boot --help` shows).\n\n\
Exit status of `submit --wait`: 0 Succeeded, 1 Failed, 3 Error or Canceled, 4 wait timed out; \
2 usage error; other failures 3 with a message on stderr.";

/// Client subcommands (flattened into the operator's command line).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a BootJob: a YAML/JSON document (FILE, or - for stdin), or one built from flags.
    #[command(after_help = SUBMIT_AFTER_HELP)]
    Submit(Box<SubmitArgs>),
    /// List BootJobs, newest first.
    List(ListArgs),
    /// Show one BootJob with its status.
    Get(GetArgs),
    /// Print a job's serial console log; --follow streams it until the job ends.
    Log(LogArgs),
    /// Wait for a job to finish, with a live progress line; exit status from its phase.
    #[command(after_help = AFTER_HELP)]
    Wait(WaitArgs),
    /// Cancel a job (a running boot stops within seconds).
    Cancel(NameArgs),
    /// What regressed from BASELINE to CANDIDATE: each a plan's name, a label selector
    /// (`k=v,...`) or a directory of saved result documents (`KEY.json`).
    #[command(
        after_help = "Jobs are matched by their plan key (KERNEL/ARCH[/VARIANT]; a job \
outside a plan by its name, a file by its name), then tests by name and issues by fingerprint.\n\n\
Exit status: 0 no regression, 1 any regression, 3 the comparison could not be made."
    )]
    Compare(CompareArgs),
    /// Find the first bad kernel of an ordered series (good first, bad last), booting up to R
    /// kernels per round on the farm (k-ary search; each round a plan).
    Bisect(Box<bisect::BisectArgs>),
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub baseline: String,
    pub candidate: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// `submit`: a BootJob document, or one built from the flags `bootfarm-runner boot` takes for
/// the job (the same names and meanings, so a local boot moves to the farm by changing only the
/// command).
///
/// Unlike a local boot, a flag not given leaves its field unset, so the farm's defaults apply:
/// the same values today, and a job's stored spec says only what its submitter asked for.
#[derive(Debug, Args)]
#[command(
    mut_arg("arch", |a| a.required(false).required_unless_present_any(["file", "plan"])),
    mut_arg("kernel", |a| a.required(false).required_unless_present_any(["file", "plan"])),
    mut_arg("boot_args", |a| a.default_value(None)),
    mut_arg("accel", |a| a.default_value(None)),
    mut_arg("kernel_boot", |a| a.default_value(None)),
    mut_arg("expect", |a| a.default_value(None)),
    mut_arg("timeout", |a| a.default_value(None)),
    mut_arg("boot_timeout", |a| a.default_value(None)),
    mut_arg("file", |a| a.conflicts_with_all(JobArgs::ids())),
    mut_arg("plan", |a| a.conflicts_with_all(JobArgs::ids()))
)]
pub struct SubmitArgs {
    /// A BootJob document (`-` reads stdin). Omit it to build the job from flags.
    #[arg(conflicts_with_all = ["name", "labels", "priority", "callback"])]
    pub file: Option<PathBuf>,
    /// A BootPlan document (`-` reads stdin): its jobs are created at once; `--wait` waits for
    /// all of them.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "name", "labels", "priority", "callback"])]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
    /// Job name [default: a generated `boot-xxxxx`].
    #[arg(long)]
    pub name: Option<String>,
    /// Labels, `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Higher runs first.
    #[arg(long)]
    pub priority: Option<i32>,
    /// POST the job's summary here when it ends (http or https).
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
    /// Sign the callback with this secret of the farm's (an HMAC-SHA256 header).
    #[arg(long, value_name = "NAME", requires = "callback")]
    pub callback_secret: Option<String>,
    /// Wait for the verdict (exit status from the final phase).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (exit 4).
    #[arg(long, value_name = "SECONDS")]
    pub wait_timeout: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this phase (Queued, Running, Succeeded, Failed, Error, Canceled).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only jobs with these labels (`k=v,k2=v2`).
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub name: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: Format,
    /// Print the runner's result document instead of the BootJob.
    #[arg(long)]
    pub result: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    pub name: String,
    /// Keep streaming new output until the job finishes.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub name: Option<String>,
    /// Wait for every job of this plan, with a live table (plain lines when piped).
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,
    /// Give up after this many seconds (exit 4).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// Writes to stdout; a closed pipe (`| head`) is the reader's choice, not an error.
fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs a client subcommand; returns the process exit status.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<i32> {
    match cmd {
        ClientCommand::Submit(a) => submit(*a).await,
        ClientCommand::List(a) => list(a).await,
        ClientCommand::Get(a) => get(a).await,
        ClientCommand::Log(a) => log(a).await,
        ClientCommand::Wait(a) => {
            let api = Arc::new(Api::new(&a.conn)?);
            let timeout = a.timeout.map(Duration::from_secs);
            match (&a.plan, &a.name) {
                (Some(p), _) => plan::wait(api, p, timeout).await,
                (None, Some(n)) => wait(api, n, timeout).await,
                (None, None) => anyhow::bail!("wait: a job's name or --plan NAME is required"),
            }
        }
        ClientCommand::Bisect(a) => bisect::run(*a).await,
        ClientCommand::Compare(a) => {
            let api = Api::new(&a.conn)?;
            plan::compare(&api, &a.baseline, &a.candidate, a.json).await
        }
        ClientCommand::Cancel(a) => {
            let job = Api::new(&a.conn)?.cancel(&a.name).await?;
            out(&format!("{}: {}\n", a.name, progress::phase(&job)))?;
            Ok(0)
        }
    }
}

/// The BootJob the submit flags describe, checked by the rules the farm applies to its spec; a
/// problem is a usage error naming the flag. Pure.
pub fn job_from_flags(a: &SubmitArgs) -> Result<BootJob, clap::Error> {
    let usage = |message: String| clap::Error::raw(ErrorKind::ValueValidation, message + "\n");
    let mut spec = a.job.to_spec()?;
    if let Some(p) = a.priority {
        spec.priority = p;
    }
    if let Some(url) = &a.callback {
        let cb = bootfarm_core::callback::CallbackRef {
            url: url.clone(),
            secret_name: a.callback_secret.clone(),
        };
        bootfarm_core::callback::check(&cb).map_err(|(field, m)| {
            usage(format!(
                "--callback{}: {m}",
                if field == "url" { "" } else { "-secret" }
            ))
        })?;
        spec.callback = Some(cb);
    }
    validate_flags(&spec).map_err(usage)?;
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| usage(format!("--label {l:?} is not key=value")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let metadata = ObjectMeta {
        name: a.name.clone(),
        generate_name: a.name.is_none().then(|| "boot-".to_string()),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    Ok(BootJob {
        metadata,
        spec,
        status: None,
    })
}

/// JSON when the file says so (extension or a leading `{`), else YAML.
fn content_type_for(path: Option<&std::path::Path>, body: &[u8]) -> &'static str {
    let by_ext = path.and_then(|p| p.extension()).and_then(|e| e.to_str());
    let json = match by_ext {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if json {
        "application/json"
    } else {
        "application/yaml"
    }
}

/// A document from a file, or stdin for `-`, with its Content-Type.
fn read_document(path: Option<&std::path::Path>) -> anyhow::Result<(Vec<u8>, &'static str)> {
    match path {
        Some(path) if path.as_os_str() != "-" => {
            let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let ct = content_type_for(Some(path), &buf);
            Ok((buf, ct))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            let ct = content_type_for(None, &buf);
            Ok((buf, ct))
        }
    }
}

async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let api = Arc::new(Api::new(&a.conn)?);
    if let Some(path) = &a.plan {
        let v = plan::submit(&api, path).await?;
        out(&format!("{}\n", v.name))?;
        eprintln!("plan {}: {} jobs submitted", v.name, v.jobs.len());
        if !a.wait {
            return Ok(0);
        }
        return plan::wait(api, &v.name, a.wait_timeout.map(Duration::from_secs)).await;
    }
    let (body, content_type) = match &a.file {
        Some(path) => read_document(Some(path))?,
        None => match job_from_flags(&a) {
            Ok(job) => (serde_json::to_vec(&job)?, "application/json"),
            Err(usage) => {
                usage.print()?;
                return Ok(usage.exit_code());
            }
        },
    };
    let job = api.submit(body, content_type).await?;
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    out(&format!("{name}\n"))?;
    if !a.wait {
        return Ok(0);
    }
    wait(api, &name, a.wait_timeout.map(Duration::from_secs)).await
}

fn age(job: &Value) -> String {
    let Some(created) = job["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return "-".into();
    };
    let s = jiff::Timestamp::now()
        .duration_since(created)
        .as_secs()
        .max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn list(a: ListArgs) -> anyhow::Result<i32> {
    let (items, truncated) = Api::new(&a.conn)?
        .list(a.phase.as_deref(), a.selector.as_deref())
        .await?;
    if truncated {
        eprintln!(
            "Only the newest {} jobs are listed; narrow the list with --phase or --selector.",
            items.len()
        );
    }
    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&items)?))?;
        return Ok(0);
    }
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|j| {
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            [
                s(&j["metadata"]["name"]),
                s(&j["spec"]["arch"]),
                s(&j["status"]["phase"]),
                s(&j["status"]["result"]["result"]),
                s(&j["status"]["result"]["stage"]),
                s(&j["status"]["runner"]),
                age(j),
            ]
        })
        .collect();
    let header = ["NAME", "ARCH", "PHASE", "RESULT", "STAGE", "RUNNER", "AGE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut text = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    out(&text)?;
    Ok(0)
}

async fn get(a: GetArgs) -> anyhow::Result<i32> {
    let api = Api::new(&a.conn)?;
    let v = if a.result {
        api.result(&a.name).await?
    } else {
        api.get(&a.name).await?
    };
    match a.output {
        Format::Json => out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?,
        Format::Yaml => out(&serde_yaml_ng::to_string(&v)?)?,
    }
    Ok(0)
}

async fn log(a: LogArgs) -> anyhow::Result<i32> {
    let mut resp = Api::new(&a.conn)?.log(&a.name, a.follow).await?;
    while let Some(chunk) = resp.chunk().await.context("reading the log")? {
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            other => other?,
        }
    }
    Ok(0)
}

/// Follows the console in the background and keeps the stage the classifier saw last.
fn watch_stage(
    api: Arc<Api>,
    name: String,
) -> (
    Arc<Mutex<Option<&'static str>>>,
    tokio::task::JoinHandle<()>,
) {
    let stage = Arc::new(Mutex::new(None));
    let seen = stage.clone();
    let task = tokio::spawn(async move {
        let Ok(mut resp) = api.log(&name, true).await else {
            return;
        };
        let mut classifier = Classifier::new(ClassifierConfig::default());
        while let Ok(Some(chunk)) = resp.chunk().await {
            for event in classifier.feed(&chunk) {
                if let Event::Stage(s) = event {
                    if let Ok(mut g) = seen.lock() {
                        *g = Some(s.as_str());
                    }
                }
            }
        }
    });
    (stage, task)
}

/// One poll's answer, riding out a short outage of the operator (a restart is not the job
/// failing): `None` after a second's pause while fewer than 30 polls in a row could not reach it.
async fn ride_out<T>(failures: &mut u32, answer: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(v) => {
            *failures = 0;
            Ok(Some(v))
        }
        Err(e) if *failures < 30 && format!("{e:#}").contains("cannot reach") => {
            *failures += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Polls the job until it finishes, showing progress; returns the exit status for its phase.
pub async fn wait(api: Arc<Api>, name: &str, timeout: Option<Duration>) -> anyhow::Result<i32> {
    // Live line only for a person at a terminal; plain lines for logs and pipes.
    let tty = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let started = Instant::now();
    let (stage, follower) = watch_stage(api.clone(), name.to_string());
    let mut last_key = String::new();
    let mut failures = 0u32;
    let code = loop {
        let job = match ride_out(&mut failures, api.get(name).await).await {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                follower.abort();
                return Err(e);
            }
        };
        let live = stage.lock().ok().and_then(|g| *g);
        let phase = progress::phase(&job).to_string();
        let line = progress::line(&job, live, started.elapsed());
        if tty {
            eprint!("\r\x1b[K{line}");
        } else {
            let key = format!("{phase}/{}", live.unwrap_or(""));
            if key != last_key {
                eprintln!("{line}");
                last_key = key;
            }
        }
        if let Some(code) = progress::exit_code(&phase) {
            if tty {
                eprint!("\r\x1b[K");
            }
            out(&format!("{}\n", progress::verdict(&job)))?;
            break code;
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            if tty {
                eprintln!();
            }
            eprintln!(
                "{name}: still {phase} after {}s; giving up waiting",
                started.elapsed().as_secs()
            );
            break progress::EXIT_TIMEOUT;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    follower.abort();
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::{validate, BootJobSpec};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    /// The job half of `bootfarm-runner boot`'s command line: the very type it flattens.
    #[derive(Debug, Parser)]
    struct Boot {
        #[command(flatten)]
        job: JobArgs,
    }

    fn submit_args(argv: &[&str]) -> Result<SubmitArgs, clap::Error> {
        let cli = Cli::try_parse_from(["x", "submit"].iter().chain(argv))?;
        let ClientCommand::Submit(a) = cli.cmd else {
            panic!("not submit")
        };
        Ok(*a)
    }

    fn boot_spec(argv: &[&str]) -> BootJobSpec {
        Boot::try_parse_from(["boot"].iter().chain(argv))
            .unwrap()
            .job
            .to_spec()
            .unwrap()
    }

    /// Every flag of `bootfarm-runner boot` that describes the job, with a value (the contract
    /// list: a flag missing from either command fails here).
    const SHA: &str = "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a";
    const JOB_FLAGS: &[(&str, &str)] = &[
        ("--arch", "arm64"),
        ("--kernel", "file:///k"),
        ("--kernel-sha256", SHA),
        ("--initrd", "/i.cpio.gz"),
        ("--initrd-sha256", SHA),
        ("--rootfs", "/r.img"),
        ("--rootfs-sha256", SHA),
        ("--dtb", "/d.dtb"),
        ("--dtb-sha256", SHA),
        ("--modules", "/m.cpio"),
        ("--modules-sha256", SHA),
        ("--overlay", "/o.tar.gz:/opt/o"),
        ("--boot-args", "-- quiet"),
        ("--memory", "1G"),
        ("--smp", "2"),
        ("--machine", "virt"),
        ("--cpu", "max"),
        ("--accel", "tcg"),
        ("--kernel-boot", "as-is"),
        ("--expect", "shell"),
        ("--timeout", "60"),
        ("--boot-timeout", "30"),
        ("--fail-on", "warning,oom"),
        ("--ignore", "bug"),
        ("--failure-pattern", "^FAIL"),
        ("--expect-tests", "a,b"),
        ("--login", "root:pw"),
        ("--command", "uname -a"),
    ];

    fn job_argv() -> Vec<&'static str> {
        JOB_FLAGS.iter().flat_map(|(f, v)| [*f, *v]).collect()
    }

    #[test]
    fn a_boot_command_line_submitted_is_the_same_job() {
        let argv = job_argv();
        let submitted = job_from_flags(&submit_args(&argv).unwrap()).unwrap();
        assert_eq!(submitted.spec, boot_spec(&argv));
    }

    #[test]
    fn flags_left_out_are_left_to_the_farm_with_the_same_outcome() {
        let argv = [
            "--arch",
            "x86_64",
            "--kernel",
            "file:///k",
            "--timeout",
            "60",
        ];
        let submitted = job_from_flags(&submit_args(&argv).unwrap()).unwrap().spec;
        let local = boot_spec(&argv);
        // Unset in the stored job, spelled out by a local boot...
        assert_eq!(
            (submitted.accel.as_deref(), submitted.expect.as_deref()),
            (None, None)
        );
        assert_eq!(local.accel.as_deref(), Some("auto"));
        // ...and the same boot once validated.
        let (s, l) = (validate(&submitted).unwrap(), validate(&local).unwrap());
        assert_eq!((s.accel, s.expect), (l.accel, l.expect));
        assert_eq!(s.kernel_boot, l.kernel_boot);
        assert_eq!(
            (s.boot_timeout, s.total_timeout),
            (l.boot_timeout, l.total_timeout)
        );
        assert_eq!(s.boot_args, l.boot_args);
    }

    #[test]
    fn every_boot_flag_describing_the_job_is_accepted_by_submit() {
        use clap::{Args as _, CommandFactory as _};
        let boot = JobArgs::augment_args(clap::Command::new("boot"));
        let cli = Cli::command();
        let submit = cli.find_subcommand("submit").unwrap();
        let longs = |c: &clap::Command| -> Vec<String> {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        };
        let (boot_longs, submit_longs) = (longs(&boot), longs(submit));
        let listed: Vec<&str> = JOB_FLAGS.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            boot_longs, listed,
            "JOB_FLAGS is the list of the job's flags"
        );
        for flag in &boot_longs {
            assert!(submit_longs.contains(flag), "submit lacks {flag}");
            let arg = submit
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap();
            assert!(
                arg.get_default_values().is_empty(),
                "{flag} has a default in submit"
            );
        }
        // Each one parses in submit, alone with the two it needs.
        for (flag, value) in &JOB_FLAGS[2..] {
            let mut argv = vec!["--arch", "x86_64", "--kernel", "k"];
            argv.extend([*flag, *value]);
            submit_args(&argv).unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
    }

    #[test]
    fn flags_build_a_valid_document() {
        let a = submit_args(&[
            "--arch",
            "arm64",
            "--kernel",
            "file:///k",
            "--initrd",
            "file:///i",
            "--boot-args",
            "-- quiet",
            "--label",
            "team=kernel",
            "--timeout",
            "60",
            "--priority",
            "5",
        ])
        .unwrap();
        let doc = serde_json::to_value(job_from_flags(&a).unwrap()).unwrap();
        assert_eq!(doc["apiVersion"], bootfarm_core::spec::API_VERSION);
        assert_eq!(doc["kind"], "BootJob");
        assert_eq!(doc["metadata"]["generateName"], "boot-");
        assert_eq!(doc["metadata"]["labels"]["team"], "kernel");
        assert_eq!(doc["spec"]["initrd"]["url"], "file:///i");
        assert_eq!(doc["spec"]["bootArgs"], "-- quiet");
        assert_eq!(doc["spec"]["timeouts"], serde_json::json!({"total": 60}));
        assert_eq!(doc["spec"]["priority"], 5);
        assert!(doc.get("status").is_none_or(Value::is_null), "{doc}");
        // The document is one the server accepts.
        let body = serde_json::to_vec(&doc).unwrap();
        crate::api::document::parse_bootjob(Some("application/json"), &body).unwrap();
        let named = job_from_flags(
            &submit_args(&["--arch", "x86_64", "--kernel", "k", "--name", "n1"]).unwrap(),
        )
        .unwrap();
        assert_eq!(named.metadata.name.as_deref(), Some("n1"));
        assert_eq!(named.metadata.generate_name, None);
    }

    #[test]
    fn submit_needs_a_file_or_arch_and_kernel() {
        use clap::error::ErrorKind;
        for argv in [
            &["--arch", "x86_64"][..],
            &["--kernel", "k"],
            &[],
            &["--wait"],
        ] {
            let err = submit_args(argv).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{argv:?}");
            assert_eq!(err.exit_code(), 2);
        }
        assert!(submit_args(&["job.yaml"]).is_ok());
        assert!(submit_args(&["job.yaml", "--wait", "--wait-timeout", "9"]).is_ok());
        assert!(submit_args(&["--plan", "plan.yaml", "--wait"]).is_ok());
        for both in [
            &["--plan", "plan.yaml", "job.yaml"][..],
            &["--plan", "plan.yaml", "--arch", "x86_64"],
            &["--plan", "plan.yaml", "--name", "x"],
        ] {
            let err = submit_args(both).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{both:?}");
        }
        // And a job without them is refused by the mapping too (clap's usage error).
        let unparsed = SubmitArgs {
            file: None,
            plan: None,
            job: JobArgs::default(),
            name: None,
            labels: Vec::new(),
            priority: None,
            callback: None,
            callback_secret: None,
            wait: false,
            wait_timeout: None,
            conn: submit_args(&["job.yaml"]).unwrap().conn,
        };
        assert_eq!(job_from_flags(&unparsed).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn submit_refuses_a_file_with_flags_that_build_a_job() {
        for flags in [
            &["--arch", "x86_64"][..],
            &["--kernel", "k"],
            &["--memory", "1G"],
            &["--fail-on", "warning"],
            &["--command", "true"],
            &["--name", "n"],
            &["--label", "a=b"],
            &["--priority", "3"],
        ] {
            let argv: Vec<&str> = ["job.yaml"].iter().chain(flags).copied().collect();
            let err = submit_args(&argv).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flags:?}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        for (flags, named) in [
            (&["--smp", "1000"][..], "--smp"),
            (&["--memory", "1T"], "--memory"),
            (&["--label", "team"], "--label"),
        ] {
            let argv: Vec<&str> = ["--arch", "x86_64", "--kernel", "k"]
                .iter()
                .chain(flags)
                .copied()
                .collect();
            let err = job_from_flags(&submit_args(&argv).unwrap()).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(named), "{err}");
        }
        // Values clap parses itself fail at once, as in a local boot.
        for flags in [
            &["--arch", "mips", "--kernel", "k"][..],
            &["--arch", "x86_64", "--kernel", "k", "--accel", "hvf"],
        ] {
            assert_eq!(submit_args(flags).unwrap_err().exit_code(), 2, "{flags:?}");
        }
    }

    #[test]
    fn content_type_by_extension_or_content() {
        use std::path::Path;
        assert_eq!(
            content_type_for(Some(Path::new("a.json")), b"x"),
            "application/json"
        );
        assert_eq!(
            content_type_for(Some(Path::new("a.yml")), b"{"),
            "application/yaml"
        );
        assert_eq!(content_type_for(None, b"  {\"a\":1}"), "application/json");
        assert_eq!(content_type_for(None, b"apiVersion: x"), "application/yaml");
    }
}
