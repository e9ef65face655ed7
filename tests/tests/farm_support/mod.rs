//! A real standalone farm for black-box tests: `bootfarm-operator standalone` on a free port
//! with a tempdir, driven through the operator's own client commands (and raw HTTP where the
//! test is about the wire). Stopped with SIGTERM (then SIGKILL) when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Builds both binaries once per test process, so the tests never run stale ones
/// (`BOOTFARM_BIN_DIR` points at prebuilt ones instead, e.g. a release build).
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Ok(dir) = std::env::var("BOOTFARM_BIN_DIR") {
                return PathBuf::from(dir);
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(workspace())
                .args(["build", "-p", "bootfarm-operator", "-p", "bootfarm-runner"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the binaries failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace().join("target"));
            target.join("debug")
        })
        .clone()
}

/// Where the fixtures directory is, when it exists.
pub fn fixtures_dir() -> Option<PathBuf> {
    bootfarm_core::paths::fixtures_dir().filter(|d| d.is_dir())
}

/// The fixtures directory; a missing one fails the test.
pub fn fixtures() -> PathBuf {
    bootfarm_core::paths::require_fixtures()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Farm {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    token: Option<String>,
}

pub struct Options {
    pub max_runners: u32,
    pub lease_ttl: u64,
    /// User token file contents; None: authentication off.
    pub tokens: Option<String>,
    /// More directories local artifacts may come from (the fixtures always may).
    pub allow_local: Vec<PathBuf>,
    /// More command-line arguments for `bootfarm-operator standalone`.
    pub extra: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_runners: 2,
            lease_ttl: 6,
            tokens: None,
            allow_local: Vec::new(),
            extra: Vec::new(),
        }
    }
}

impl Farm {
    pub fn start(opts: Options) -> Farm {
        let bins = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bins.join("bootfarm-operator"));
        cmd.args(["standalone", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--max-runners", &opts.max_runners.to_string()])
            .args(["--lease-ttl", &opts.lease_ttl.to_string()])
            .args(["--idle-timeout", "30"])
            .env("RUST_LOG", "info")
            .env_remove("BOOTFARM_ALLOW_LOCAL_ARTIFACTS")
            .env_remove("BOOTFARM_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("operator.log")).expect("log file"));
        if let Some(fx) = fixtures_dir() {
            // The farm refuses local artifacts outside the directories it is given.
            cmd.arg("--allow-local-artifacts").arg(fx);
        }
        for d in &opts.allow_local {
            cmd.arg("--allow-local-artifacts").arg(d);
        }
        cmd.args(&opts.extra);
        if let Some(tokens) = &opts.tokens {
            let path = dir.path().join("tokens");
            std::fs::write(&path, tokens).expect("write tokens");
            cmd.arg("--token-file").arg(path);
        }
        let child = cmd.spawn().expect("start bootfarm-operator standalone");
        let farm = Farm {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: Some(child),
            token: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while farm.http("GET", "/readyz", None, None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "operator not ready:\n{}",
                farm.operator_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        farm
    }

    pub fn with_token(mut self, token: &str) -> Farm {
        self.token = Some(token.to_string());
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default()
    }

    /// Runs `bootfarm-operator <args>` against this farm.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin_dir().join("bootfarm-operator"));
        cmd.args(args)
            .env("BOOTFARM_SERVER", &self.url)
            .env_remove("BOOTFARM_TOKEN_FILE")
            .env_remove("BOOTFARM_TOKEN");
        if let Some(t) = &self.token {
            cmd.env("BOOTFARM_TOKEN", t);
        }
        let out = cmd.output().expect("run the client");
        eprintln!(
            "$ bootfarm-operator {}\n-> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The job as JSON (through `get -o json`).
    pub fn job(&self, name: &str) -> serde_json::Value {
        let out = self.cli(&["get", name, "-o", "json"]);
        assert!(out.status.success(), "get {name} failed");
        serde_json::from_slice(&out.stdout).expect("get -o json prints JSON")
    }

    pub fn phase(&self, name: &str) -> String {
        self.job(name)["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the job's phase is `phase` (bounded).
    pub fn wait_phase(&self, name: &str, phase: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let p = self.phase(name);
            if p == phase {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still {p}, not {phase}:\n{}",
                self.operator_log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A raw HTTP/1.1 request; returns (status, body).
    /// Submits `name`: an x86_64 guest that never finishes on its own, and returns once its
    /// QEMU runs (the job is Running and a QEMU descends from the operator).
    pub fn start_endless_boot(&self, fx: &Path, name: &str) {
        let kernel = url(fx, "x86_64/kernel");
        let initrd = url(fx, "x86_64/initrd-silent.cpio.gz");
        let out = self.cli(&[
            "submit",
            "--name",
            name,
            "--arch",
            "x86_64",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--timeout",
            "600",
        ]);
        assert!(out.status.success(), "{out:?}");
        self.wait_phase(name, "Running", Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        while qemu_descendants(self.pid()).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no QEMU started:\n{}",
                self.operator_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let payload = body.map(|(ct, b)| {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
            b
        });
        req.push_str(&format!(
            "Content-Length: {}\r\n\r\n",
            payload.map_or(0, <[u8]>::len)
        ));
        if s.write_all(req.as_bytes()).is_err() || s.write_all(payload.unwrap_or_default()).is_err()
        {
            return (0, Vec::new());
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => raw[i + 4..].to_vec(),
            None => Vec::new(),
        };
        (status, body)
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// PIDs of QEMU processes descending from `ancestor`.
pub fn qemu_descendants(ancestor: u32) -> Vec<u32> {
    descendants_named(ancestor, "qemu-system")
}

/// PIDs of processes descending from `ancestor` whose command name starts with `prefix`.
pub fn descendants_named(ancestor: u32, prefix: &str) -> Vec<u32> {
    let mut parents = std::collections::HashMap::new();
    let mut qemus = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
        if head.contains(&format!("({prefix}")) {
            qemus.push(pid);
        }
    }
    qemus
        .into_iter()
        .filter(|&q| {
            let mut p = q;
            for _ in 0..64 {
                match parents.get(&p) {
                    Some(&pp) if pp == ancestor => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Fixture paths as file:// URLs.
pub fn url(fixtures: &Path, rel: &str) -> String {
    format!("file://{}", fixtures.join(rel).display())
}
