//! The kernel QEMU is given: the image as the job named it, or the same kernel in the form
//! that boots fastest. An x86 bzImage spends most of a TCG boot in firmware and in its own
//! decompressor; the ELF it carries, extracted on the host, is entered by QEMU at its PVH entry
//! point with neither. The one difference: the decompressor's KASLR does not run, so the
//! kernel runs at its link address (`--kernel-boot as-is` keeps the image as given).
//!
//! [`plan`] decides from the image's first bytes (pure); [`choose`] reads, extracts into the
//! artifact cache once per kernel (keyed by its sha256) and never fails the boot: whatever goes
//! wrong, the image is booted as given and `qemu.kernel.reason` says why.

pub mod format;
pub mod payload;
pub mod pvh;

use crate::artifacts::{is_limit_exceeded, ArtifactCache, ArtifactError, HashingWriter, InUse};
use bootfarm_core::result::KernelBooted;
use bootfarm_core::spec::KernelBoot;
use bootfarm_core::Arch;
use format::ImageFormat;
use payload::PayloadCodec;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Boot the image as given, for this reason.
    AsIs(String),
    /// Extract the bzImage's ELF (its payload is at `payload`, compressed with `codec`).
    Extract {
        payload: std::ops::Range<u64>,
        codec: PayloadCodec,
    },
}

/// The fast path, decided from the image's first [`format::HEADER_LEN`] bytes and the first
/// bytes of its payload (`payload_head`, read at the range the header gives; empty if none).
pub fn plan(
    arch: Arch,
    mode: KernelBoot,
    header: &[u8],
    file_len: u64,
    payload_head: &[u8],
) -> Plan {
    let format = format::detect(header);
    if mode == KernelBoot::AsIs {
        return Plan::AsIs("kernel boot as-is was asked for".into());
    }
    match (arch, format) {
        (Arch::X86_64 | Arch::I386, ImageFormat::BzImage) => {}
        (Arch::X86_64 | Arch::I386, f) => {
            return Plan::AsIs(format!(
                "not a bzImage ({}): booted as given",
                f.as_str()
            ))
        }
        (Arch::Armv7, ImageFormat::ZImage) => {
            // Measured: QEMU 7.2 has no loader for a 32-bit ARM Image, and one wrapped as a
            // uImage hangs in early boot; the zImage's own decompressor stays.
            return Plan::AsIs("armv7 zImages boot as given (QEMU has no loader for the extracted Image)".into());
        }
        (Arch::Arm64 | Arch::Riscv64, _) => {
            return Plan::AsIs(format!(
                "{arch} kernels boot as given (QEMU loads an Image, and decompresses Image.gz, on the host)"
            ))
        }
        (_, _) => return Plan::AsIs(format!("{arch} kernels boot as given")),
    }
    let payload = match format::bzimage_payload(header, file_len) {
        Ok(p) => p,
        Err(e) => return Plan::AsIs(format!("bzImage payload not found: {e}")),
    };
    match payload::detect(payload_head) {
        Some(codec) => Plan::Extract { payload, codec },
        None => Plan::AsIs("the bzImage's payload is compressed with no known codec".into()),
    }
}

/// The kernel to give QEMU.
#[derive(Debug)]
pub struct Chosen {
    pub path: PathBuf,
    pub booted: KernelBooted,
    /// Holds the extracted kernel's cache entry for the boot.
    pub held: Option<InUse>,
}

impl Chosen {
    fn as_is(path: &Path, format: ImageFormat, reason: String) -> Chosen {
        Chosen {
            path: path.to_path_buf(),
            booted: KernelBooted {
                format: format.as_str().to_string(),
                reason: Some(reason),
                ..KernelBooted::default()
            },
            held: None,
        }
    }
}

/// The cached form of a kernel that has no PVH entry: a marker line and the reason, so the
/// decompression is not repeated for every boot of it.
const NOT_PVH: &[u8] = b"bootfarm: not bootable by PVH\n";

/// The kernel for this boot: `kernel` (the fetched image, `sha256` its digest) or its
/// extracted PVH ELF. Never an error: a failed fast path boots the image as given.
pub async fn choose(
    arch: Arch,
    mode: KernelBoot,
    cache: &ArtifactCache,
    kernel: &Path,
    sha256: &str,
) -> Chosen {
    let (header, head, len) = match read_heads(kernel) {
        Ok(h) => h,
        Err(e) => {
            return Chosen::as_is(
                kernel,
                ImageFormat::Unknown,
                format!("could not read the kernel: {e}"),
            )
        }
    };
    let format = format::detect(&header);
    let (payload, codec) = match plan(arch, mode, &header, len, &head) {
        Plan::AsIs(reason) => return Chosen::as_is(kernel, format, reason),
        Plan::Extract { payload, codec } => (payload, codec),
    };
    let started = Instant::now();
    let key = format!("pvh1-{sha256}");
    let (src, limit) = (kernel.to_path_buf(), cache.limits().max_size);
    let derived = cache
        .derive(&key, &format!("pvh:{sha256}"), move |tmp_dir| {
            extract(&src, payload, arch, tmp_dir, limit)
        })
        .await;
    let derived = match derived {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "Could not extract the bzImage's ELF, booting it as given");
            return Chosen::as_is(kernel, format, format!("extraction failed: {e}"));
        }
    };
    let extract_ms = if derived.made {
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
    } else {
        0
    };
    if let Some(reason) = not_pvh_reason(&derived.path) {
        return Chosen::as_is(kernel, format, reason);
    }
    tracing::info!(
        codec = codec.as_str(),
        extract_ms,
        cached = !derived.made,
        "Booting the bzImage's ELF by PVH"
    );
    Chosen {
        path: derived.path,
        booted: KernelBooted {
            format: "pvh-elf".into(),
            from: Some(format.as_str().to_string()),
            codec: Some(codec.as_str().to_string()),
            extract_ms: Some(extract_ms),
            cached: Some(!derived.made),
            kaslr: Some(false),
            sha256: Some(derived.sha256),
            reason: None,
        },
        held: Some(derived.in_use),
    }
}

/// The image's header, the first bytes of its payload (if the header locates one) and its size.
fn read_heads(kernel: &Path) -> std::io::Result<(Vec<u8>, Vec<u8>, u64)> {
    let mut f = std::fs::File::open(kernel)?;
    let len = f.metadata()?.len();
    let mut header = Vec::with_capacity(format::HEADER_LEN);
    (&mut f)
        .take(format::HEADER_LEN as u64)
        .read_to_end(&mut header)?;
    let mut head = Vec::new();
    if let Ok(range) = format::bzimage_payload(&header, len) {
        f.seek(SeekFrom::Start(range.start))?;
        f.take(16).read_to_end(&mut head)?;
    }
    Ok((header, head, len))
}

/// The reason a cached entry records, when it is a [`NOT_PVH`] marker rather than an ELF.
fn not_pvh_reason(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    let f = std::fs::File::open(path).ok()?;
    f.take(4096).read_to_end(&mut head).ok()?;
    let reason = head.strip_prefix(NOT_PVH)?;
    Some(String::from_utf8_lossy(reason).trim().to_string())
}

/// Blocking: the bzImage's payload decoded into a new file in `tmp_dir`, or a [`NOT_PVH`]
/// marker when the result is a kernel QEMU cannot enter by PVH.
fn extract(
    src: &Path,
    payload: std::ops::Range<u64>,
    arch: Arch,
    tmp_dir: &Path,
    limit: u64,
) -> Result<(tempfile::NamedTempFile, u64, String), ArtifactError> {
    let origin = src.display().to_string();
    let unreadable = |reason: String| ArtifactError::Unreadable {
        origin: origin.clone(),
        reason,
    };
    let mut f = std::fs::File::open(src).map_err(|e| ArtifactError::io("opening the kernel", e))?;
    f.seek(SeekFrom::Start(payload.start))
        .map_err(|e| ArtifactError::io("reading the kernel", e))?;
    let mut compressed = Vec::new();
    f.take(payload.end - payload.start)
        .read_to_end(&mut compressed)
        .map_err(|e| ArtifactError::io("reading the kernel", e))?;
    let mut out = tempfile::Builder::new()
        .prefix(".vmlinux-")
        .tempfile_in(tmp_dir)
        .map_err(|e| ArtifactError::io("creating a temporary file", e))?;
    let mut w = HashingWriter::new(std::io::BufWriter::new(out.as_file_mut()), limit);
    payload::decode(&compressed, &mut w).map_err(|e| match e {
        payload::DecodeError::Write(io) if is_limit_exceeded(&io) => ArtifactError::TooLarge {
            origin: origin.clone(),
            what: "the extracted kernel",
            limit,
        },
        payload::DecodeError::Write(io) => ArtifactError::io("writing the extracted kernel", io),
        other => unreadable(other.to_string()),
    })?;
    let (mut size, mut sha256, _) = w
        .finish()
        .map_err(|e| ArtifactError::io("writing the extracted kernel", e))?;
    drop(compressed);
    let file = out
        .reopen()
        .map_err(|e| ArtifactError::io("reading the extracted kernel", e))?;
    let refusal = match pvh::inspect(&object::ReadCache::new(file)) {
        Err(e) => Some(format!("the bzImage's payload is {e}")),
        Ok(elf) if !elf.pvh => Some("the kernel has no PVH entry point (CONFIG_PVH is off)".into()),
        Ok(elf) if elf.machine != elf_machine(arch) => Some(format!(
            "the kernel is built for ELF machine {}, not {arch}",
            elf.machine
        )),
        Ok(_) => None,
    };
    if let Some(reason) = refusal {
        let mut marker = tempfile::Builder::new()
            .prefix(".vmlinux-")
            .tempfile_in(tmp_dir)
            .map_err(|e| ArtifactError::io("creating a temporary file", e))?;
        let mut w = HashingWriter::new(marker.as_file_mut(), limit);
        w.write_all(NOT_PVH)
            .and_then(|()| w.write_all(reason.as_bytes()))
            .map_err(|e| ArtifactError::io("writing a cache marker", e))?;
        (size, sha256, _) = w
            .finish()
            .map_err(|e| ArtifactError::io("writing a cache marker", e))?;
        return Ok((marker, size, sha256));
    }
    Ok((out, size, sha256))
}

fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::I386 => object::elf::EM_386,
        _ => object::elf::EM_X86_64,
    }
}

#[cfg(test)]
mod tests;
