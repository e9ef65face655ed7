//! The QEMU child process: its own process group, killed with the runner whatever happens.
//!
//! Three layers, so no QEMU outlives the runner: `PR_SET_PDEATHSIG(SIGKILL)` (the runner is
//! SIGKILLed), a kill-on-drop guard that SIGKILLs the whole process group (an error or a
//! panic unwinds through our code), and an explicit `kill` on timeouts and signals.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// How much of QEMU's stderr we keep for error messages.
const STDERR_TAIL: usize = 4096;

pub struct QemuProcess {
    child: Child,
    pid: i32,
    reaped: Option<ExitStatus>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl QemuProcess {
    /// Spawn `binary args...` in a new process group, stdin closed, stderr captured.
    pub fn spawn<I, S>(binary: &OsStr, args: I, capture_stdout: bool) -> io::Result<QemuProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let parent = nix::unistd::getpid().as_raw();
        let mut cmd = Command::new(binary);
        // QEMU needs nothing of our environment (which may hold the runner token); only TMPDIR,
        // where snapshot=on puts its overlay.
        cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", tmp);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (prctl, getppid, kill/raise) with no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| io::Error::other("QEMU exited before its pid was known"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_task = child.stderr.take().map(|mut pipe| {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Ok(mut tail) = sink.lock() {
                                tail.extend_from_slice(&buf[..n]);
                                let excess = tail.len().saturating_sub(STDERR_TAIL);
                                tail.drain(..excess);
                            }
                        }
                    }
                }
            })
        });
        tracing::debug!(pid, "QEMU spawned");
        Ok(QemuProcess {
            child,
            pid,
            reaped: None,
            stderr,
            stderr_task,
        })
    }

    /// QEMU's stdout, when spawned with `capture_stdout`.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for QEMU to exit (cancel-safe).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        let status = self.child.wait().await?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// SIGKILL the whole process group and reap QEMU.
    pub async fn kill(&mut self) {
        self.kill_group();
        let _ = self.wait().await;
    }

    fn kill_group(&self) {
        if self.reaped.is_none() {
            // Negative pid: the group QEMU leads (it is its own group leader).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The last few KiB QEMU wrote to stderr, once it has exited (waits briefly for the pipe).
    pub async fn stderr_tail(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), task).await;
        }
        let tail = self.stderr.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&tail).trim().to_string()
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}
