//! Choosing the accelerator: KVM only when it provably runs guests here, else TCG, and why.
//!
//! `/dev/kvm` opening is not enough: under broken nested virtualisation a KVM guest spins
//! with no output forever (and `-cpu host` aborts with "failed to set MSR"). So a bounded probe
//! (`PROBE_TIMEOUT` per stage) runs first. On x86 hosts it boots the machine's own firmware
//! (SeaBIOS) under KVM with no kernel and requires it to finish POST ("Booting from" / "No
//! bootable device" on its debug port): ~0.2 s on a working host and independent of the job.
//! Firmware alone is not proof: some nested hosts run real-mode firmware (slowly) and hang the
//! kernel once it leaves it, with no console output ever. So the job's kernel is booted next,
//! with early console output on (`earlyprintk` on x86, `earlycon` elsewhere), and any console
//! output is required; other hosts have no such firmware in QEMU and run only this stage.
//! QEMU dying during the probe is a failed probe.
//! Verdicts are cached per host (kernel release + QEMU binary identity) for `VERDICT_TTL`, so
//! later boots skip the probe; a failed kernel probe may be that kernel's fault and is kept
//! only for `SUSPECT_VERDICT_TTL`.

use crate::qemu::process::QemuProcess;
use crate::qemu::profile::{Accel, Profile};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// Names what the probe checks (see the module's doc), for the cached verdicts' key.
const PROBE_METHOD: &str = "probe2:firmware+kernel";
const VERDICT_TTL: Duration = Duration::from_secs(24 * 3600);
const SUSPECT_VERDICT_TTL: Duration = Duration::from_secs(600);

/// `--accel` and `spec.accel`: the one type of `bootfarm_core`.
pub use bootfarm_core::spec::AccelMode as AccelRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// `--accel kvm` and KVM cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kvm unavailable: {0}")]
pub struct KvmUnavailable(pub String);

/// Why KVM cannot be used without probing, if it cannot (pure).
pub fn static_kvm_blocker(profile: &Profile, host_arch: &str) -> Option<String> {
    if profile.kvm_host_arch != host_arch {
        return Some(format!(
            "host is {host_arch}, guest is {}: kvm needs the same architecture",
            profile.arch
        ));
    }
    None
}

pub async fn choose(
    request: AccelRequest,
    profile: &Profile,
    qemu_binary: &Path,
    kernel: &Path,
    cache_dir: Option<&Path>,
) -> Result<AccelChoice, KvmUnavailable> {
    if request == AccelRequest::Tcg {
        return Ok(tcg("tcg requested".to_string()));
    }
    let blocked = match static_kvm_blocker(profile, std::env::consts::ARCH) {
        Some(why) => Some(why),
        None => open_dev_kvm().err(),
    };
    let verdict = match blocked {
        Some(why) => Err(why),
        None => {
            let stages = ProbeKind::stages(profile, kernel);
            cached_or_probe(profile, qemu_binary, &stages, cache_dir).await
        }
    };
    match (verdict, request) {
        (Ok(reason), _) => Ok(AccelChoice {
            accel: Accel::Kvm,
            reason,
        }),
        (Err(why), AccelRequest::Kvm) => Err(KvmUnavailable(why)),
        (Err(why), _) => Ok(tcg(format!("{why}, fell back to tcg"))),
    }
}

fn tcg(reason: String) -> AccelChoice {
    AccelChoice {
        accel: Accel::Tcg,
        reason,
    }
}

fn open_dev_kvm() -> Result<(), String> {
    let path = Path::new(KVM_DEVICE);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) => {
            use std::os::unix::fs::MetadataExt;
            let present = std::fs::metadata(path).is_ok();
            // /proc/self belongs to the effective uid.
            let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
            Err(kvm_open_blocker(&e, present, uid))
        }
    }
}

const KVM_DEVICE: &str = "/dev/kvm";

/// Why opening `/dev/kvm` failed, in words that say what to change (pure). `present`: the device
/// node exists. In a container, a node that exists but answers EPERM is the device cgroup
/// refusing it: a hostPath `/dev/kvm` in a non-privileged pod (only a device plugin or a
/// privileged container grants the device). EACCES is the file mode: the user lacks the
/// device's group.
pub fn kvm_open_blocker(err: &std::io::Error, present: bool, uid: u32) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) if present => format!(
            "{KVM_DEVICE}: present but not permitted in this container ({err}: the device cgroup \
             denies it; a KVM device plugin or a privileged container grants it)"
        ),
        Some(libc::EACCES) if present => format!(
            "{KVM_DEVICE}: present but uid {uid} may not open it ({err}: add the device's group \
             to the runner's supplementary groups)"
        ),
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) if !present => {
            format!("{KVM_DEVICE}: not present ({err})")
        }
        _ => format!("{KVM_DEVICE}: {err}"),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedVerdict {
    key: String,
    kvm_works: bool,
    reason: String,
    checked_unix: u64,
    ttl_secs: u64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a verdict depends on: the host kernel and the exact QEMU binary.
fn host_key(qemu_binary: &Path) -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (size, mtime) = std::fs::metadata(qemu_binary)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (m.len(), mtime)
        })
        .unwrap_or((0, 0));
    // The probe's method is part of the key: a verdict of an older, weaker probe is not reused.
    format!(
        "{PROBE_METHOD} {} {} {size} {mtime}",
        release.trim(),
        qemu_binary.display()
    )
}

fn verdict_path(cache_dir: &Path, profile: &Profile) -> PathBuf {
    cache_dir
        .join("host")
        .join(format!("kvm-{}.json", profile.binary))
}

async fn cached_or_probe(
    profile: &Profile,
    qemu_binary: &Path,
    stages: &[ProbeKind<'_>],
    cache_dir: Option<&Path>,
) -> Result<String, String> {
    let key = host_key(qemu_binary);
    let path = cache_dir.map(|d| verdict_path(d, profile));
    if let Some(path) = &path {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CachedVerdict>(&b).ok())
        {
            let fresh = now_unix().saturating_sub(v.checked_unix) < v.ttl_secs;
            if v.key == key && fresh {
                let reason = format!("{} (cached verdict)", v.reason);
                return if v.kvm_works { Ok(reason) } else { Err(reason) };
            }
        }
    }
    let mut passed = Vec::new();
    let mut verdict = Ok(String::new());
    let mut failed_on = None;
    for &kind in stages {
        match probe(profile, qemu_binary, kind).await {
            Ok(how) => passed.push(how),
            Err(why) => {
                verdict = Err(why);
                failed_on = Some(kind);
                break;
            }
        }
    }
    if verdict.is_ok() {
        verdict = Ok(format!("kvm probe passed ({})", passed.join(", ")));
    }
    // A kernel probe failing may be the kernel's fault: remember that only briefly.
    let ttl = match failed_on {
        Some(ProbeKind::Kernel(_)) => SUSPECT_VERDICT_TTL,
        _ => VERDICT_TTL,
    };
    if let Some(path) = &path {
        let (kvm_works, reason) = match &verdict {
            Ok(r) => (true, r.clone()),
            Err(r) => (false, r.clone()),
        };
        let doc = CachedVerdict {
            key,
            kvm_works,
            reason,
            checked_unix: now_unix(),
            ttl_secs: ttl.as_secs(),
        };
        if let Err(e) = write_atomically(path, &doc) {
            tracing::warn!(path = %path.display(), error = %e, "Could not cache the KVM verdict");
        }
    }
    verdict
}

fn write_atomically(path: &Path, doc: &CachedVerdict) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, doc)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What the probe boots under KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind<'a> {
    /// x86: SeaBIOS alone, watched on its debug port; independent of the job's kernel.
    Firmware,
    /// Elsewhere: the job's own kernel with `earlycon`; any console output within the bound.
    Kernel(&'a Path),
}

impl ProbeKind<'_> {
    /// The probe's stages, in order: on x86 the firmware (cheap, job-independent), then the
    /// kernel; elsewhere the kernel.
    pub fn stages<'a>(profile: &Profile, kernel: &'a Path) -> Vec<ProbeKind<'a>> {
        if is_x86(profile) {
            vec![ProbeKind::Firmware, ProbeKind::Kernel(kernel)]
        } else {
            vec![ProbeKind::Kernel(kernel)]
        }
    }
}

fn is_x86(profile: &Profile) -> bool {
    matches!(profile.kvm_host_arch, "x86_64" | "x86")
}

/// The probe's QEMU arguments (pure); its output goes to stdout.
pub fn probe_args(profile: &Profile, kind: ProbeKind<'_>) -> Vec<String> {
    let mut a: Vec<String> = [
        "-machine",
        profile.machine_kvm,
        "-accel",
        "kvm",
        "-cpu",
        profile.cpu_kvm,
        "-m",
        "256M",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match kind {
        ProbeKind::Firmware => a.extend(
            [
                "-chardev",
                "stdio,id=dbg",
                "-device",
                "isa-debugcon,iobase=0x402,chardev=dbg",
            ]
            .map(String::from),
        ),
        ProbeKind::Kernel(kernel) => {
            a.extend(["-serial", "stdio"].map(String::from));
            if let Some(bios) = profile.bios {
                a.extend(["-bios".to_string(), bios.to_string()]);
            }
            // x86 has no firmware table naming the console for a bare `earlycon`.
            let early = if is_x86(profile) {
                format!("earlyprintk=serial,{},115200", profile.console)
            } else {
                "earlycon".to_string()
            };
            a.extend([
                "-kernel".to_string(),
                kernel.display().to_string(),
                "-append".to_string(),
                format!("console={},115200 {early} panic=-1", profile.console),
            ]);
        }
    }
    a
}

/// Whether the probe's output so far proves the guest runs.
fn probe_passed(kind: ProbeKind<'_>, seen: &[u8]) -> bool {
    match kind {
        ProbeKind::Firmware => {
            let text = String::from_utf8_lossy(seen);
            text.contains("Booting from") || text.contains("No bootable device")
        }
        ProbeKind::Kernel(_) => seen.iter().any(|b| !b.is_ascii_whitespace()),
    }
}

async fn probe(
    profile: &Profile,
    qemu_binary: &Path,
    kind: ProbeKind<'_>,
) -> Result<String, String> {
    let args = probe_args(profile, kind);
    let started = std::time::Instant::now();
    let mut qemu = QemuProcess::spawn(qemu_binary.as_os_str(), &args, true)
        .map_err(|e| format!("kvm probe: cannot run QEMU: {e}"))?;
    let Some(mut out) = qemu.take_stdout() else {
        return Err("kvm probe: no QEMU stdout".into());
    };
    let watch = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if probe_passed(kind, &seen) {
                        return true;
                    }
                    if seen.len() > 1 << 20 {
                        seen.drain(..seen.len() / 2);
                    }
                }
            }
        }
    };
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, watch).await;
    qemu.kill().await;
    let secs = PROBE_TIMEOUT.as_secs();
    let what = match kind {
        ProbeKind::Firmware => "firmware",
        ProbeKind::Kernel(_) => "console",
    };
    match outcome {
        Ok(true) => Ok(format!(
            "{what} output in {:.2} s",
            started.elapsed().as_secs_f64()
        )),
        Ok(false) => {
            let tail = qemu.stderr_tail().await;
            let last = tail.lines().last().unwrap_or("exited").to_string();
            Err(format!("kvm probe: QEMU failed under kvm ({last})"))
        }
        Err(_) => Err(format!("kvm probe: no {what} output in {secs} s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::Arch;

    #[test]
    fn kvm_needs_the_host_architecture() {
        let arm = Profile::for_arch(Arch::Arm64);
        let why = static_kvm_blocker(&arm, "x86_64").unwrap();
        assert!(why.contains("host is x86_64, guest is arm64"), "{why}");
        assert_eq!(
            static_kvm_blocker(&Profile::for_arch(Arch::X86_64), "x86_64"),
            None
        );
    }

    #[test]
    fn a_device_the_container_may_not_open_is_reported_as_such() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let why = kvm_open_blocker(&eperm, true, 65532);
        assert!(
            why.starts_with("/dev/kvm: present but not permitted in this container"),
            "{why}"
        );
        assert!(why.contains("device cgroup"), "{why}");

        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        let why = kvm_open_blocker(&eacces, true, 65532);
        assert!(why.contains("uid 65532 may not open it"), "{why}");
        assert!(why.contains("group"), "{why}");

        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(kvm_open_blocker(&enoent, false, 0).starts_with("/dev/kvm: not present"));
        // EPERM without a device node is not the container case: said as it is.
        let why = kvm_open_blocker(&eperm, false, 0);
        assert!(!why.contains("container"), "{why}");
    }

    #[test]
    fn x86_probes_the_firmware_then_its_kernel_others_their_kernel() {
        let k = Path::new("/k/Image");
        let x86 = Profile::for_arch(Arch::X86_64);
        let stages = ProbeKind::stages(&x86, k);
        assert_eq!(stages, [ProbeKind::Firmware, ProbeKind::Kernel(k)]);
        let args = probe_args(&x86, stages[0]);
        assert!(args.windows(2).any(|w| w == ["-cpu", "host"]));
        assert!(args
            .iter()
            .any(|a| a == "isa-debugcon,iobase=0x402,chardev=dbg"));
        assert!(!args.iter().any(|a| a == "-kernel"));
        // The kernel stage prints from its first instructions on the serial port.
        let args = probe_args(&x86, stages[1]);
        assert!(args.windows(2).any(|w| w == ["-kernel", "/k/Image"]));
        assert!(args
            .iter()
            .any(|a| a == "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 panic=-1"));
        let arm = Profile::for_arch(Arch::Arm64);
        let stages = ProbeKind::stages(&arm, k);
        assert_eq!(stages, [ProbeKind::Kernel(k)]);
        let kind = stages[0];
        let args = probe_args(&arm, kind);
        assert!(args.windows(2).any(|w| w == ["-kernel", "/k/Image"]));
        assert!(args.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(args
            .iter()
            .any(|a| a == "console=ttyAMA0,115200 earlycon panic=-1"));
    }

    #[test]
    fn probe_success_needs_post_for_firmware_and_any_text_for_kernels() {
        let fw = ProbeKind::Firmware;
        assert!(!probe_passed(fw, b"SeaBIOS (version 1.16)\nQEMU "));
        assert!(probe_passed(fw, b"SeaBIOS\nBooting from Floppy...\n"));
        let k = ProbeKind::Kernel(Path::new("/k"));
        assert!(!probe_passed(k, b"\r\n"));
        assert!(probe_passed(k, b"[    0.000000] Booting Linux"));
    }

    #[tokio::test]
    async fn tcg_request_never_probes() {
        let p = Profile::for_arch(Arch::X86_64);
        let c = choose(
            AccelRequest::Tcg,
            &p,
            Path::new("/nonexistent"),
            Path::new("/k"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(c.accel, Accel::Tcg);
    }

    #[tokio::test]
    async fn kvm_request_for_a_foreign_guest_is_unavailable() {
        let p = Profile::for_arch(Arch::S390x);
        let err = choose(
            AccelRequest::Kvm,
            &p,
            Path::new("/nonexistent"),
            Path::new("/k"),
            None,
        )
        .await
        .unwrap_err();
        assert!(err.0.contains("needs the same architecture"), "{}", err.0);
    }
}
