//! Choosing the accelerator: KVM only when it provably runs guests here, else TCG, and why.
//!
//! `/dev/kvm` opening is not enough: under broken nested virtualisation a KVM guest spins
//! with no output forever (and `-cpu host` aborts with "failed to set MSR"). So on x86 hosts a
//! bounded probe boots the machine's own firmware (SeaBIOS) under KVM with no kernel and
//! requires it to finish POST ("Booting from" / "No bootable device" on its debug port)
//! within `PROBE_TIMEOUT`; under TCG that takes ~0.2 s, so the probe never costs the full
//! timeout on a working host. The verdict is cached per host (kernel release + QEMU binary
//! identity) for `VERDICT_TTL`, so later boots skip the probe.

use crate::qemu::process::QemuProcess;
use crate::qemu::profile::{Accel, Profile};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
const VERDICT_TTL: Duration = Duration::from_secs(24 * 3600);

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelRequest {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelRequest::Auto),
            "kvm" => Ok(AccelRequest::Kvm),
            "tcg" => Ok(AccelRequest::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?} (expected auto, kvm or tcg)"
            )),
        }
    }
}

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
        None => cached_or_probe(profile, qemu_binary, cache_dir).await,
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
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm: {e}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedVerdict {
    key: String,
    kvm_works: bool,
    reason: String,
    checked_unix: u64,
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
    format!(
        "{} {} {size} {mtime}",
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
    cache_dir: Option<&Path>,
) -> Result<String, String> {
    let key = host_key(qemu_binary);
    let path = cache_dir.map(|d| verdict_path(d, profile));
    if let Some(path) = &path {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CachedVerdict>(&b).ok())
        {
            let fresh = now_unix().saturating_sub(v.checked_unix) < VERDICT_TTL.as_secs();
            if v.key == key && fresh {
                let reason = format!("{} (cached verdict)", v.reason);
                return if v.kvm_works { Ok(reason) } else { Err(reason) };
            }
        }
    }
    let verdict = probe(profile, qemu_binary).await;
    if let (Some(path), Some(verdict)) = (&path, &verdict) {
        let (kvm_works, reason) = match verdict {
            Ok(r) => (true, r.clone()),
            Err(r) => (false, r.clone()),
        };
        let doc = CachedVerdict {
            key,
            kvm_works,
            reason,
            checked_unix: now_unix(),
        };
        if let Err(e) = write_atomically(path, &doc) {
            tracing::warn!(path = %path.display(), error = %e, "Could not cache the KVM verdict");
        }
    }
    // No probe for this host architecture: trust /dev/kvm (not cached).
    verdict.unwrap_or_else(|| Ok("/dev/kvm opens (no probe for this host architecture)".into()))
}

fn write_atomically(path: &Path, doc: &CachedVerdict) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, doc)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The firmware probe; None when there is none for this host.
async fn probe(profile: &Profile, qemu_binary: &Path) -> Option<Result<String, String>> {
    if !matches!(profile.kvm_host_arch, "x86_64" | "x86") {
        return None;
    }
    let args = [
        "-machine",
        profile.machine_kvm,
        "-accel",
        "kvm",
        "-cpu",
        profile.cpu_kvm,
        "-m",
        "64M",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        "stdio,id=dbg",
        "-device",
        "isa-debugcon,iobase=0x402,chardev=dbg",
    ];
    let started = std::time::Instant::now();
    let mut qemu = match QemuProcess::spawn(qemu_binary.as_os_str(), args, true) {
        Ok(q) => q,
        Err(e) => return Some(Err(format!("kvm probe: cannot run QEMU: {e}"))),
    };
    let Some(mut out) = qemu.take_stdout() else {
        return Some(Err("kvm probe: no QEMU stdout".into()));
    };
    let watch = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if text.contains("Booting from") || text.contains("No bootable device") {
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
    Some(match outcome {
        Ok(true) => Ok(format!(
            "kvm probe passed (firmware ran in {:.2} s)",
            started.elapsed().as_secs_f64()
        )),
        Ok(false) => {
            let tail = qemu.stderr_tail().await;
            let last = tail.lines().last().unwrap_or("exited").to_string();
            Err(format!("kvm probe: QEMU failed under kvm ({last})"))
        }
        Err(_) => Err(format!("kvm probe: no firmware output in {secs} s")),
    })
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

    #[tokio::test]
    async fn tcg_request_never_probes() {
        let p = Profile::for_arch(Arch::X86_64);
        let c = choose(AccelRequest::Tcg, &p, Path::new("/nonexistent"), None)
            .await
            .unwrap();
        assert_eq!(c.accel, Accel::Tcg);
    }

    #[tokio::test]
    async fn kvm_request_for_a_foreign_guest_is_unavailable() {
        let p = Profile::for_arch(Arch::S390x);
        let err = choose(AccelRequest::Kvm, &p, Path::new("/nonexistent"), None)
            .await
            .unwrap_err();
        assert!(err.0.contains("needs the same architecture"), "{}", err.0);
    }
}
