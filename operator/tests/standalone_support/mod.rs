//! A real standalone farm for reliability tests: the built `bootfarm-operator standalone` with
//! real `bootfarm-runner work` children booting real kernels under QEMU (TCG).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the fixtures are, when the directory exists.
pub fn fixtures_dir() -> Option<PathBuf> {
    bootfarm_core::paths::fixtures_dir().filter(|d| d.is_dir())
}

/// The fixtures directory; a missing one fails the test.
pub fn fixtures() -> PathBuf {
    bootfarm_core::paths::require_fixtures()
}

pub fn operator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bootfarm-operator"))
}

/// `bootfarm-runner` in `BOOTFARM_BIN_DIR`, else beside the operator binary (the test command
/// builds the workspace first).
pub fn runner_bin() -> PathBuf {
    let dir = std::env::var_os("BOOTFARM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            operator_bin()
                .parent()
                .expect("the operator binary is in a directory")
                .to_path_buf()
        });
    let bin = dir.join("bootfarm-runner");
    assert!(
        bin.is_file(),
        "{} does not exist: build the workspace first (cargo build --workspace) so the standalone \
         tests can start real runners",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A poweroff boot of the x86_64 fixture kernel (~7 s under TCG).
pub fn poweroff_job(fixtures: &Path, name: &str) -> Value {
    let f = fixtures.join("x86_64");
    json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootJob",
        "metadata": {"name": name},
        "spec": {
            "arch": "x86_64",
            "kernel": {"url": f.join("kernel")},
            "initrd": {"url": f.join("initrd-poweroff.cpio.gz")},
            "bootArgs": "console=ttyS0 panic=-1",
            "accel": "tcg",
            "expect": "poweroff",
            "timeouts": {"boot": 120, "total": 180}
        }
    })
}

pub struct Farm {
    pub data_dir: PathBuf,
    pub url: String,
    pub port: u16,
    extra: Vec<String>,
    pub child: Option<Child>,
    runner: PathBuf,
    http: reqwest::Client,
    pub log: PathBuf,
    /// A command the operator runs under (e.g. `unshare` for a private mount namespace).
    wrapper: Vec<String>,
}

impl Farm {
    /// Starts a farm in `data_dir` with extra flags, and waits until it answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Farm {
        Self::start_with_runner(data_dir, extra, runner_bin()).await
    }

    /// Like `start`, with another runner binary (a fake, to test the supervisor).
    pub async fn start_with_runner(
        data_dir: &Path,
        extra: &[&str],
        runner: impl Into<PathBuf>,
    ) -> Farm {
        let port = free_port();
        let mut farm = Farm {
            data_dir: data_dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            runner: runner.into(),
            http: reqwest::Client::new(),
            log: data_dir.join("operator.log"),
            wrapper: Vec::new(),
        };
        farm.launch().await;
        farm
    }

    /// Like `start`, with the data directory on a private tmpfs of `size_mib`: a small disk
    /// that fills up, visible only to the operator and gone with it whatever happens.
    pub async fn start_on_tmpfs(data_dir: &Path, size_mib: u32, extra: &[&str]) -> Farm {
        let port = free_port();
        let mount = format!(
            "mount -t tmpfs -o size={size_mib}m,mode=0700 bootfarm-test \"$1\" && shift && exec \"$@\""
        );
        let mut farm = Farm {
            data_dir: data_dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            runner: runner_bin(),
            http: reqwest::Client::new(),
            log: data_dir.with_extension("log"),
            wrapper: vec![
                "unshare".into(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "sh".into(),
                "-c".into(),
                mount,
                "sh".into(),
                data_dir.display().to_string(),
            ],
        };
        farm.launch().await;
        farm
    }

    /// Runs `cmd` inside the operator's mount namespace (where its tmpfs is).
    pub fn in_operator_mounts(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["--mount", "--target", &self.pid().to_string(), "--"])
            .args(cmd)
            .output()
            .expect("nsenter")
    }

    async fn launch(&mut self) {
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(operator_bin());
                c
            }
            None => Command::new(operator_bin()),
        };
        let child = cmd
            .arg("standalone")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--runner-bin")
            .arg(&self.runner)
            // The farm refuses local artifacts outside the directories it is given.
            .args(
                fixtures_dir()
                    .into_iter()
                    .flat_map(|d| ["--allow-local-artifacts".into(), d.into_os_string()]),
            )
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start bootfarm-operator standalone");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not become ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| i32::try_from(c.id()).expect("a pid"))
            .expect("running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the operator and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the operator again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }

    pub async fn submit(&self, doc: &Value) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/bootjobs", self.url))
            .json(doc)
            .send()
            .await
            .expect("submit");
        let status = r.status();
        let body: Value = r.json().await.expect("json answer");
        assert_eq!(status.as_u16(), 201, "submit refused: {body}");
        body["metadata"]["name"]
            .as_str()
            .expect("stored name")
            .to_string()
    }

    pub async fn job(&self, name: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/bootjobs/{name}", self.url))
            .send()
            .await
            .expect("get job")
            .json()
            .await
            .expect("job json")
    }

    pub async fn jobs(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/bootjobs", self.url))
            .send()
            .await
            .expect("list jobs")
            .json()
            .await
            .expect("list json");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn result(&self, name: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/api/v1/bootjobs/{name}/result", self.url))
            .send()
            .await
            .expect("get result");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Polls `name` until `done(job)` or the timeout (then panics with the job and the log).
    pub async fn wait_job(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(name).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {name}: {job:#}\noperator log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        // Runners and their QEMUs die with the operator (PR_SET_PDEATHSIG).
        self.kill9();
    }
}

pub fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("")
}

pub fn finished(job: &Value) -> bool {
    matches!(phase(job), "Succeeded" | "Failed" | "Error" | "Canceled")
}

/// A live process, from /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub cmdline: String,
}

pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces and parentheses: fields follow the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            if state == "Z" {
                return None;
            }
            let ppid = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some(Proc { pid, ppid, cmdline })
        })
        .collect()
}

/// All live descendants of `root`.
pub fn descendants(root: i32) -> Vec<Proc> {
    let all = processes();
    let mut found: BTreeSet<i32> = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for p in &all {
            if found.contains(&p.ppid) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    all.into_iter()
        .filter(|p| p.pid != root && found.contains(&p.pid))
        .collect()
}

pub fn is_qemu(p: &Proc) -> bool {
    p.cmdline
        .split_whitespace()
        .next()
        .is_some_and(|argv0| argv0.contains("qemu-system"))
}

pub fn is_runner(p: &Proc) -> bool {
    p.cmdline.contains("bootfarm-runner") && p.cmdline.contains(" work ")
}

pub fn alive(pid: i32) -> bool {
    processes().iter().any(|p| p.pid == pid)
}

/// Waits until none of `pids` is alive (they may be orphans by then).
pub async fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of a counter family's samples in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
