//! The first phase: everything QEMU needs before it starts. Artifacts fetched (and held in the
//! cache for the boot), the accelerator chosen, the job's resources checked against this
//! runner, the console and QMP sockets listening, QEMU's command line built.

use super::inputs::{self, InfraError, Inputs};
use super::run::{guarded, Facts, OrStop, Stopped};
use super::{BootHooks, BootRequest};
use crate::accel;
use crate::artifacts::InUse;
use crate::qemu::profile::{build_args, Accel, Profile, QemuConfig};
use bootfarm_core::result::ErrorKind;
use bootfarm_core::result::QemuInfo;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::net::UnixListener;

/// Ready to start QEMU.
pub(super) struct Prepared {
    pub facts: Facts,
    /// The boot's own files (sockets, a concatenated initramfs); removed when the boot ends.
    pub work: tempfile::TempDir,
    /// The artifacts' cache entries, kept until the boot ends.
    pub held: Vec<InUse>,
    pub qemu_binary: PathBuf,
    pub args: Vec<String>,
    pub accel: Accel,
    pub console_listener: UnixListener,
    pub qmp_listener: UnixListener,
    pub started: Instant,
    pub total_deadline: tokio::time::Instant,
}

impl Prepared {
    pub async fn new(
        req: &BootRequest,
        hooks: &BootHooks,
        started: Instant,
    ) -> Result<Prepared, Stopped> {
        let mut facts = Facts::default();
        let total_deadline = tokio::time::Instant::from_std(started + req.timeout);
        let profile = Profile::for_arch(req.arch);
        let work = tempfile::Builder::new()
            .prefix("bootfarm-")
            .tempdir()
            .map_err(|e| {
                InfraError::new(
                    ErrorKind::Internal,
                    format!("creating a work directory: {e}"),
                )
            })
            .or_stop(&mut facts)?;

        let qemu_binary =
            inputs::find_qemu(&profile, req.qemu_binary_dir.as_deref()).or_stop(&mut facts)?;
        let fetched = guarded(
            hooks,
            total_deadline,
            "fetching artifacts",
            inputs::fetch_all(req, work.path()),
        )
        .await
        .or_stop(&mut facts)?
        .or_stop(&mut facts)?;
        let Inputs {
            kernel,
            kernel_booted,
            initrd,
            rootfs,
            merge_disk,
            early,
            dtb,
            artifacts,
            held,
            module_versions,
        } = fetched;
        facts.artifacts = artifacts;
        facts.module_versions = module_versions;

        let choice = guarded(
            hooks,
            total_deadline,
            "choosing the accelerator",
            accel::choose(
                req.accel,
                &profile,
                &qemu_binary,
                &kernel,
                req.cache_dir.as_deref(),
            ),
        )
        .await
        .or_stop(&mut facts)?
        .map_err(|e| InfraError::new(ErrorKind::KvmUnavailable, e.to_string()))
        .or_stop(&mut facts)?;
        facts.accel = Some(choice.clone());
        check_resources(req, choice.accel, crate::host::memory_limit()).or_stop(&mut facts)?;

        let sandbox = crate::qemu::sandbox::supported(&qemu_binary, req.cache_dir.as_deref()).await;
        let console_path = work.path().join("console.sock");
        let qmp_path = work.path().join("qmp.sock");
        let bind = |p: &Path| {
            UnixListener::bind(p).map_err(|e| {
                InfraError::new(
                    ErrorKind::Internal,
                    format!("listening on {}: {e}", p.display()),
                )
            })
        };
        let console_listener = bind(&console_path).or_stop(&mut facts)?;
        let qmp_listener = bind(&qmp_path).or_stop(&mut facts)?;
        let args = build_args(&QemuConfig {
            profile: &profile,
            accel: choice.accel,
            kernel: &kernel,
            initrd: initrd.as_deref(),
            rootfs: rootfs.as_ref(),
            merge_disk: merge_disk.as_deref(),
            dtb: dtb.as_deref(),
            boot_args: &req.boot_args,
            machine: req.machine.as_ref(),
            cpu: req.cpu.as_ref(),
            memory: req.memory,
            smp: req.smp,
            console_socket: &console_path,
            qmp_socket: &qmp_path,
            sandbox,
        });
        let mut argv = vec![qemu_binary.display().to_string()];
        argv.extend(args.iter().cloned());
        facts.qemu = Some(QemuInfo {
            version: None,
            argv,
            kernel: Some(kernel_booted),
            early_initramfs: early,
        });
        Ok(Prepared {
            facts,
            work,
            held,
            qemu_binary,
            args,
            accel: choice.accel,
            console_listener,
            qmp_listener,
            started,
            total_deadline,
        })
    }
}

/// A job's options that cannot run here, decided before QEMU starts: the `host` CPU without
/// KVM, more guest memory than this runner has. Permanent (`invalid_job`): retrying elsewhere
/// in the pool gives the same answer.
pub fn check_resources(
    req: &BootRequest,
    accel: Accel,
    memory_limit: Option<u64>,
) -> Result<(), InfraError> {
    if accel == Accel::Tcg && req.cpu.as_ref().is_some_and(|c| c.needs_kvm()) {
        return Err(InfraError::new(
            ErrorKind::InvalidJob,
            "cpu \"host\" needs KVM, and this boot runs under TCG (KVM is not usable here); \
             choose a model such as max",
        ));
    }
    if let (Some(want), Some(limit)) = (req.memory, memory_limit) {
        if want > limit {
            return Err(InfraError::new(
                ErrorKind::InvalidJob,
                format!(
                    "memory {} MiB is more than this runner has ({} MiB)",
                    want >> 20,
                    limit >> 20
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_resources_are_invalid_jobs() {
        let arch = bootfarm_core::Arch::X86_64;
        let req = BootRequest {
            cpu: Some(bootfarm_core::spec::Cpu::parse(arch, "host").unwrap()),
            memory: Some(8 << 30),
            ..BootRequest::default()
        };
        let tcg = Accel::Tcg;
        assert_eq!(
            check_resources(&req, tcg, None).unwrap_err().kind,
            ErrorKind::InvalidJob
        );
        let req = BootRequest { cpu: None, ..req };
        assert!(check_resources(&req, tcg, None).is_ok());
        let err = check_resources(&req, tcg, Some(4 << 30)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJob);
        assert!(err.message.contains("8192 MiB"), "{}", err.message);
    }
}
