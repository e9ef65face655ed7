//! The people's CLI: talk to a running farm (standalone or Kubernetes) over its HTTP API.
//!
//! ```text
//! bootfarm-operator submit job.yaml            # or `-` for stdin; JSON or YAML
//! bootfarm-operator submit --arch x86_64 --kernel file:///boot/vmlinuz --initrd URL --wait
//! bootfarm-operator list [--phase Running]
//! bootfarm-operator get NAME [-o json|yaml]
//! bootfarm-operator log NAME [--follow]
//! bootfarm-operator wait NAME [--timeout 600]
//! bootfarm-operator cancel NAME
//! ```
//! `--server` (BOOTFARM_SERVER, default http://127.0.0.1:8080); a token from BOOTFARM_TOKEN or
//! `--token-file`. `wait` and `submit --wait` exit 0 Succeeded, 1 Failed, 3 Error or Canceled,
//! 4 when `--timeout` passes first.

mod http;
pub mod progress;

use anyhow::{bail, Context};
use bootfarm_core::console::{Classifier, ClassifierConfig, Event};
use clap::{Args, Subcommand, ValueEnum};
pub use http::{Api, Conn};
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "Exit status of `wait` and `submit --wait`: 0 Succeeded, 1 Failed, \
3 Error or Canceled, 4 wait timed out; other failures 3 with a message on stderr.";

/// Client subcommands (flattened into the operator's command line).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a BootJob: a YAML/JSON document (FILE, or - for stdin), or one built from flags.
    #[command(after_help = AFTER_HELP)]
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
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A BootJob document (`-` reads stdin). Omit it to build the job from flags.
    #[arg(conflicts_with_all = ["arch", "kernel"])]
    pub file: Option<PathBuf>,
    /// Guest architecture (x86_64, i386, arm64, armv7, riscv64, ppc64le, s390x).
    #[arg(long, required_unless_present = "file")]
    pub arch: Option<String>,
    /// Kernel image URL (file://, http(s)://) or path on the runner.
    #[arg(long, required_unless_present = "file")]
    pub kernel: Option<String>,
    #[arg(long)]
    pub initrd: Option<String>,
    #[arg(long)]
    pub rootfs: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub boot_args: Option<String>,
    /// auto, poweroff, login or shell.
    #[arg(long)]
    pub expect: Option<String>,
    /// Job name [default: a generated `boot-xxxxx`].
    #[arg(long)]
    pub name: Option<String>,
    /// Labels, `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Total timeout of the boot, seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long)]
    pub priority: Option<i32>,
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
    pub name: String,
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
            wait(api, &a.name, a.timeout.map(Duration::from_secs)).await
        }
        ClientCommand::Cancel(a) => {
            let job = Api::new(&a.conn)?.cancel(&a.name).await?;
            out(&format!("{}: {}\n", a.name, progress::phase(&job)))?;
            Ok(0)
        }
    }
}

/// The BootJob document the submit flags describe. Pure.
pub fn job_from_flags(a: &SubmitArgs) -> anyhow::Result<Value> {
    let (Some(arch), Some(kernel)) = (&a.arch, &a.kernel) else {
        bail!("give a BootJob file, or at least --arch and --kernel");
    };
    let mut spec = json!({"arch": arch, "kernel": {"url": kernel}});
    let artifact = |url: &Option<String>| url.as_ref().map(|u| json!({"url": u}));
    if let Some(v) = artifact(&a.initrd) {
        spec["initrd"] = v;
    }
    if let Some(v) = artifact(&a.rootfs) {
        spec["rootfs"] = v;
    }
    if let Some(b) = &a.boot_args {
        spec["bootArgs"] = json!(b);
    }
    if let Some(e) = &a.expect {
        spec["expect"] = json!(e);
    }
    if let Some(t) = a.timeout {
        spec["timeouts"] = json!({"total": t});
    }
    if let Some(p) = a.priority {
        spec["priority"] = json!(p);
    }
    let mut metadata = match &a.name {
        Some(n) => json!({"name": n}),
        None => json!({"generateName": "boot-"}),
    };
    if !a.labels.is_empty() {
        let mut labels = serde_json::Map::new();
        for l in &a.labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--label {l:?} is not key=value"))?;
            labels.insert(k.to_string(), json!(v));
        }
        metadata["labels"] = Value::Object(labels);
    }
    Ok(json!({
        "apiVersion": bootfarm_core::spec::API_VERSION,
        "kind": "BootJob",
        "metadata": metadata,
        "spec": spec,
    }))
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

async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let api = Arc::new(Api::new(&a.conn)?);
    let (body, content_type) = match &a.file {
        Some(path) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            let ct = content_type_for(None, &buf);
            (buf, ct)
        }
        Some(path) => {
            let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let ct = content_type_for(Some(path), &buf);
            (buf, ct)
        }
        None => (
            serde_json::to_vec(&job_from_flags(&a)?)?,
            "application/json",
        ),
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
        Format::Yaml => out(&serde_yaml::to_string(&v)?)?,
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

/// Polls the job until it finishes, showing progress; returns the exit status for its phase.
pub async fn wait(api: Arc<Api>, name: &str, timeout: Option<Duration>) -> anyhow::Result<i32> {
    // Live line only for a person at a terminal; plain lines for logs and pipes.
    let tty = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let started = Instant::now();
    let (stage, follower) = watch_stage(api.clone(), name.to_string());
    let mut last_key = String::new();
    let mut failures = 0u32;
    let code = loop {
        let job = match api.get(name).await {
            Ok(j) => {
                failures = 0;
                j
            }
            // The operator restarting is not the job failing: ride out a short outage.
            Err(e) if failures < 30 && format!("{e:#}").contains("cannot reach") => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
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
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    #[test]
    fn flags_build_a_valid_document() {
        let cli = Cli::try_parse_from([
            "x",
            "submit",
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
        ])
        .unwrap();
        let ClientCommand::Submit(a) = cli.cmd else {
            panic!("not submit")
        };
        let doc = job_from_flags(&a).unwrap();
        assert_eq!(doc["metadata"]["generateName"], "boot-");
        assert_eq!(doc["metadata"]["labels"]["team"], "kernel");
        assert_eq!(doc["spec"]["initrd"]["url"], "file:///i");
        assert_eq!(doc["spec"]["bootArgs"], "-- quiet");
        assert_eq!(doc["spec"]["timeouts"]["total"], 60);
        // The document is one the server accepts.
        let body = serde_json::to_vec(&doc).unwrap();
        crate::api::document::parse_bootjob(Some("application/json"), &body).unwrap();
    }

    #[test]
    fn submit_needs_a_file_or_arch_and_kernel() {
        assert!(Cli::try_parse_from(["x", "submit", "--arch", "x86_64"]).is_err());
        assert!(Cli::try_parse_from(["x", "submit", "job.yaml"]).is_ok());
        assert!(Cli::try_parse_from(["x", "submit", "job.yaml", "--kernel", "k"]).is_err());
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
