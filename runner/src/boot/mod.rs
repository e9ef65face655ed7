//! One boot, start to verdict: the library entry point behind `bootfarm-runner boot` and the
//! operator's `work` loop.
//!
//! ```ignore
//! pub async fn run_boot(req: BootRequest, hooks: BootHooks) -> bootfarm_core::BootResult
//! ```
//!
//! `run_boot` never panics and always returns a result: infrastructure problems become
//! `result: error` with a stable `error.kind` (artifact_missing, download_failed,
//! checksum_mismatch, qemu_missing, qemu_failed, kvm_unavailable, interrupted, internal, ...),
//! kernel problems `result: fail`. Console bytes go to `req.console_out` and, if set, to
//! `hooks.console` (the same capped stream: head, cut marker, tail). Cancelling `hooks.cancel`
//! kills QEMU and returns error kind `interrupted`. No QEMU outlives the call.
//!
//! Phases, each a type ([`run`]): `prepare` (artifacts through `inputs`, the accelerator from
//! `accel`, QEMU's command line) → `start` (QEMU paused, sockets connected) → `running` (the
//! guest watched by `watch` until the verdict is known) → finished.

mod early;
mod early_initramfs;
mod inputs;
mod prepare;
mod repack;
mod run;
mod running;
mod start;
mod watch;

pub use inputs::default_cache_dir;

use crate::accel::AccelRequest;
use crate::artifacts::FetchPolicy;
use bootfarm_core::console::ClassifierConfig;
use bootfarm_core::result::ErrorKind;
use bootfarm_core::spec::KernelBoot;
use bootfarm_core::spec::{Cpu, Machine};
use bootfarm_core::verdict::Expect;
use bootfarm_core::{Arch, BootResult};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where an artifact comes from: a path, `file://` or `http(s)://` URL, and optionally the
/// sha256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSource {
    pub source: String,
    pub sha256: Option<String>,
}

impl ArtifactSource {
    pub fn new(source: impl Into<String>) -> Self {
        ArtifactSource {
            source: source.into(),
            sha256: None,
        }
    }
}

/// Credentials for a `login:` prompt (`USER[:PASSWORD]` parses into one).
pub use bootfarm_core::console::session::Login;

/// Where the live console goes (besides the hook).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConsoleOut {
    /// Only to the hook, if any.
    #[default]
    Discard,
    Stderr,
    File(PathBuf),
}

/// Everything one boot needs. `Default` gives an x86_64 boot of an empty kernel path with the
/// CLI's defaults; set at least `arch` and `kernel`.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub arch: Arch,
    pub kernel: ArtifactSource,
    pub initrd: Option<ArtifactSource>,
    /// A `.cpio*` initramfs (passed with `-initrd`) or a disk image (attached read-only with
    /// `snapshot=on`, `root=` set).
    pub rootfs: Option<ArtifactSource>,
    pub dtb: Option<ArtifactSource>,
    /// A `.cpio*` archive of modules, or a modules tarball repacked into one; appended to the
    /// initramfs.
    pub modules: Option<ArtifactSource>,
    /// Tarballs for the guest's root filesystem, each with its (validated) guest directory.
    pub overlays: Vec<(ArtifactSource, String)>,
    /// Appended after `console=<dev>,115200 panic=-1` (so the user's `panic=` wins).
    pub boot_args: String,
    pub machine: Option<Machine>,
    pub cpu: Option<Cpu>,
    /// Guest memory in bytes.
    pub memory: Option<u64>,
    pub smp: Option<u32>,
    pub accel: AccelRequest,
    /// As given, or the fastest equivalent form of the image (a bzImage's PVH ELF).
    pub kernel_boot: KernelBoot,
    pub expect: Expect,
    /// Everything, artifacts included.
    pub timeout: Duration,
    /// From `cont` until the expected prompt or power-off.
    pub boot_timeout: Duration,
    /// Cap of the stored console log (head and tail kept).
    pub console_limit: u64,
    pub console_out: ConsoleOut,
    pub classifier: ClassifierConfig,
    pub login: Option<Login>,
    /// Shell commands to run at the prompt, one test case each.
    pub commands: Vec<String>,
    /// Artifact cache and the host's KVM verdict live here; None: no caching of either.
    pub cache_dir: Option<PathBuf>,
    /// The artifact cache's size budget, kept after each boot's fetches; None: unbounded.
    pub cache_max: Option<u64>,
    /// Where a static busybox for each guest arch is (`<dir>/<arch>/busybox`), for the early
    /// initramfs of a disk root; None: the default places.
    pub guest_tools: Option<PathBuf>,
    /// Where the `qemu-system-*` binaries are; None: PATH.
    pub qemu_binary_dir: Option<PathBuf>,
    /// What artifacts may be fetched from: anything (by hand) or the farm's rules.
    pub fetch_policy: FetchPolicy,
}

impl Default for BootRequest {
    fn default() -> Self {
        BootRequest {
            arch: Arch::X86_64,
            kernel: ArtifactSource::new(""),
            initrd: None,
            rootfs: None,
            dtb: None,
            modules: None,
            overlays: Vec::new(),
            boot_args: String::new(),
            machine: None,
            cpu: None,
            memory: None,
            smp: None,
            accel: AccelRequest::Auto,
            kernel_boot: KernelBoot::Auto,
            expect: Expect::Auto,
            timeout: bootfarm_core::spec::validate::DEFAULT_TOTAL_TIMEOUT,
            boot_timeout: bootfarm_core::spec::validate::DEFAULT_BOOT_TIMEOUT,
            console_limit: bootfarm_core::console_cap::DEFAULT_BOOT_LIMIT,
            console_out: ConsoleOut::Discard,
            classifier: ClassifierConfig::default(),
            login: None,
            commands: Vec::new(),
            cache_dir: None,
            cache_max: Some(crate::artifacts::DEFAULT_CACHE_MAX),
            guest_tools: None,
            qemu_binary_dir: None,
            fetch_policy: FetchPolicy::Unrestricted,
        }
    }
}

/// How the caller watches and steers a boot.
#[derive(Debug, Clone, Default)]
pub struct BootHooks {
    /// Receives the stored console stream as it is written (backpressure slows the guest).
    pub console: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    /// Cancel to stop the boot: QEMU is killed, the result is error kind `interrupted`.
    pub cancel: CancellationToken,
}

/// Boot one kernel and return its result. Never panics; see the module docs.
pub async fn run_boot(req: BootRequest, hooks: BootHooks) -> BootResult {
    let arch = req.arch;
    // A panic in our code must still give a result (and QEMU dies with the task's guard).
    // The boot logs under the caller's span (a farm runner's job, attempt and lease).
    let mut task = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(
        run::boot(req, hooks),
    )));
    let mut result = match task.await_result().await {
        Ok(r) => r,
        Err(e) => BootResult::error(ErrorKind::Internal, format!("boot task failed: {e}")),
    };
    result.arch.get_or_insert(arch);
    result
}

struct AbortOnDrop(tokio::task::JoinHandle<BootResult>);

impl AbortOnDrop {
    async fn await_result(&mut self) -> Result<BootResult, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
