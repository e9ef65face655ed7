//! A boot as a self-contained shell script, for a machine without bootfarm: it fetches each
//! artifact from its source, checks its sha256, prepares the files exactly as the runner did
//! (gzip/xz/zstd artifacts decompressed, initramfs pieces concatenated, a bzImage's PVH ELF
//! extracted) and runs the QEMU command of the result's `qemu.argv`, its console on stdio.
//! Pure: made from the result document alone, so the farm serves it for any stored result.

use super::{ArtifactInfo, BootResult};
use crate::spec::location::Location;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReproError {
    #[error("the result has no QEMU command line (the boot ended before QEMU started)")]
    NoQemu,
    #[error("QEMU was given the {0}, but the result records no such artifact")]
    MissingArtifact(&'static str),
}

/// Quotes `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One shell comment line (no line breaks can end the comment early).
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

const FUNCTIONS: &str = r#"fetch() { # NAME SOURCE SHA256: the artifact as fetched, checked, then decompressed like the runner does
    case $2 in
        http://* | https://*) curl -fsSL --retry 3 --connect-timeout 30 -o "$WORK/$1.fetched" -- "$2" ;;
        *) cp -- "$2" "$WORK/$1.fetched" ;;
    esac
    if [ -n "$3" ]; then
        echo "$3  $WORK/$1.fetched" | sha256sum -c --quiet - || { echo "reproduce: $1 ($2) is not the file the farm booted" >&2; exit 1; }
    fi
    case $(od -An -tx1 -N6 "$WORK/$1.fetched" | tr -d ' \n') in
        1f8b*) gzip -dc "$WORK/$1.fetched" >"$WORK/$1" ;;
        fd377a585a00) xz -dc "$WORK/$1.fetched" >"$WORK/$1" ;;
        28b52ffd*) zstd -qdc "$WORK/$1.fetched" >"$WORK/$1" ;;
        *) mv -- "$WORK/$1.fetched" "$WORK/$1" ;;
    esac
    rm -f -- "$WORK/$1.fetched"
}
le32() { # FILE OFFSET: a little-endian 32-bit number
    od -An -tu1 -j"$2" -N4 "$1" | awk '{ print $1 + 256 * ($2 + 256 * ($3 + 256 * $4)) }'
}
extract_pvh() { # BZIMAGE CODEC OUT: the ELF a bzImage carries (its payload, per the boot protocol)
    sects=$(od -An -tu1 -j497 -N1 "$1" | tr -d ' ')
    [ "$sects" != 0 ] || sects=4
    start=$(( (sects + 1) * 512 + $(le32 "$1" 584) ))
    len=$(le32 "$1" 588)
    # Every codec but gzip is followed by the 4-byte size the kernel's build appends.
    case $2 in
        gzip) unpack="gzip -dc" ;;
        xz) unpack="xz -dc"; len=$((len - 4)) ;;
        lzma) unpack="xz --format=lzma -dc"; len=$((len - 4)) ;;
        zstd) unpack="zstd -qdc"; len=$((len - 4)) ;;
        bzip2) unpack="bzip2 -dc"; len=$((len - 4)) ;;
        lz4) unpack="lz4 -dc"; len=$((len - 4)) ;;
        lzo) unpack="lzop -dc"; len=$((len - 4)) ;;
        *) echo "reproduce: unknown payload codec $2" >&2; exit 1 ;;
    esac
    tail -c +$((start + 1)) "$1" | head -c "$len" | $unpack >"$3"
}
"#;

/// The script's line fetching artifact `name` from its source (checked against its sha256).
fn fetch_line(s: &mut String, name: &str, a: &ArtifactInfo) {
    // What the runner read: a file:// URL is its (decoded) path.
    let source = match Location::parse(&a.source) {
        Ok(Location::Local(p)) => p.display().to_string(),
        _ => a.source.clone(),
    };
    let _ = writeln!(s, "fetch {name} {} {}", quote(&source), quote(&a.sha256));
}

/// The script reproducing the boot of `r`; `title` names it (a job name or the kernel).
pub fn reproducer(r: &BootResult, title: &str) -> Result<String, ReproError> {
    let qemu = r.qemu.as_ref().ok_or(ReproError::NoQemu)?;
    let (binary, args) = qemu.argv.split_first().ok_or(ReproError::NoQemu)?;
    let binary = binary.rsplit('/').next().unwrap_or(binary);
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let has_disk = has("-drive");

    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/sh");
    let _ = writeln!(s, "# Reproduces bootfarm boot {}", comment(title));
    let _ = writeln!(
        s,
        "# {} {}: {} ({}), stage {}: {}",
        r.arch.map(|a| a.to_string()).unwrap_or_default(),
        comment(r.kernel_version.as_deref().unwrap_or("")),
        r.result.as_str(),
        comment(&r.reason),
        r.stage.as_str(),
        comment(&r.summary),
    );
    let _ = writeln!(
        s,
        "# Fetches the artifacts (curl for http(s) sources), checks their sha256 and runs the QEMU\n\
         # command the runner ran, the console on stdio. WORK=DIR keeps the files there,\n\
         # QEMU=PATH picks the binary. Needs sha256sum, od, awk and the decompressors used."
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "WORK=${{WORK:-$(mktemp -d)}}");
    let _ = writeln!(s, "mkdir -p \"$WORK\"");
    let _ = writeln!(s, "QEMU=${{QEMU:-{}}}", quote(binary));
    s.push_str(FUNCTIONS);

    let fetch = |s: &mut String, name: &'static str| -> Result<(), ReproError> {
        let a = r
            .artifacts
            .get(name)
            .ok_or(ReproError::MissingArtifact(name))?;
        fetch_line(s, name, a);
        Ok(())
    };
    if has("-kernel") {
        fetch(&mut s, "kernel")?;
        match qemu.kernel.as_ref().filter(|k| k.format == "pvh-elf") {
            Some(k) => {
                let codec = k.codec.as_deref().unwrap_or("");
                let _ = writeln!(
                    s,
                    "# The farm booted the ELF inside the bzImage at its PVH entry point (no KASLR)."
                );
                let _ = writeln!(
                    s,
                    "extract_pvh \"$WORK/kernel\" {} \"$WORK/kernel.boot\"",
                    quote(codec)
                );
                if let Some(sha) = &k.sha256 {
                    let _ = writeln!(
                        s,
                        "echo {}'  '\"$WORK/kernel.boot\" | sha256sum -c --quiet -",
                        quote(sha)
                    );
                }
            }
            None => {
                let _ = writeln!(s, "mv -- \"$WORK/kernel\" \"$WORK/kernel.boot\"");
            }
        }
    }
    if let Some(early) = &qemu.early_initramfs {
        early_initramfs(&mut s, r, early)?;
    } else if has("-initrd") {
        // In the order the runner concatenates them.
        let mut parts = Vec::new();
        for name in ["initrd", "rootfs", "modules"] {
            if name == "rootfs" && has_disk {
                continue;
            }
            let Some(artifact) = r.artifacts.get(name) else {
                continue;
            };
            fetch(&mut s, name)?;
            if name == "modules" && !crate::spec::is_cpio_name(&artifact.source) {
                // A modules tarball: the runner repacked it into a newc cpio; tar and cpio do
                // the same here (in WORK, which is the user's own).
                let _ = writeln!(
                    s,
                    "mkdir -p \"$WORK/modules.d\"\n\
                     tar -xf \"$WORK/modules\" -C \"$WORK/modules.d\"\n\
                     (cd \"$WORK/modules.d\" && find . -mindepth 1 | cpio -o -H newc --quiet) >\"$WORK/modules.cpio\""
                );
                parts.push("\"$WORK/modules.cpio\"".to_string());
            } else {
                parts.push(format!("\"$WORK/{name}\""));
            }
        }
        // Then the overlays, in their order, each extracted at its guest directory.
        for (name, a) in overlays(r) {
            fetch_line(&mut s, name, a);
            let dir = quote(a.path.as_deref().unwrap_or("/"));
            let _ = writeln!(
                s,
                "mkdir -p \"$WORK/{name}.d\"{dir}\n\
                 tar -xf \"$WORK/{name}\" -C \"$WORK/{name}.d\"{dir}\n\
                 (cd \"$WORK/{name}.d\" && find . -mindepth 1 | cpio -o -H newc --quiet) >\"$WORK/{name}.cpio\""
            );
            parts.push(format!("\"$WORK/{name}.cpio\""));
        }
        if parts.is_empty() {
            return Err(ReproError::MissingArtifact("initrd"));
        }
        let _ = writeln!(s, "cat {} >\"$WORK/initramfs\"", parts.join(" "));
    }
    if has_disk {
        fetch(&mut s, "rootfs")?;
    }
    if has("-dtb") {
        fetch(&mut s, "dtb")?;
    }

    let mut words: Vec<String> = Vec::new();
    let mut drives = 0;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let next = it.peek().map(|v| v.as_str());
        match (a.as_str(), next) {
            ("-S", _) => {}
            ("-chardev", Some(v))
                if v.starts_with("socket,id=con,") || v.starts_with("socket,id=qmp,") =>
            {
                it.next();
            }
            ("-serial", Some("chardev:con")) => {
                it.next();
                words.extend(["-serial".into(), "stdio".into()]);
            }
            ("-mon", Some(v)) if v.starts_with("chardev=qmp") => {
                it.next();
            }
            ("-kernel", Some(_)) => {
                it.next();
                words.extend(["-kernel".into(), "\"$WORK/kernel.boot\"".into()]);
            }
            ("-initrd", Some(_)) => {
                it.next();
                words.extend(["-initrd".into(), "\"$WORK/initramfs\"".into()]);
            }
            ("-dtb", Some(_)) => {
                it.next();
                words.extend(["-dtb".into(), "\"$WORK/dtb\"".into()]);
            }
            ("-drive", Some(v)) if v.starts_with("file=") => {
                it.next();
                let rest = v
                    .split_once(',')
                    .map(|(_, r)| format!(",{r}"))
                    .unwrap_or_default();
                words.push("-drive".into());
                // The disk root, then (with an early initramfs) the archive it merges.
                let file = if drives == 0 { "rootfs" } else { "merge.cpio" };
                drives += 1;
                words.push(format!("file=\"$WORK/{file}\"{}", quote_tail(&rest)));
            }
            (other, _) => words.push(quote(other)),
        }
    }
    // One option (and its value) per line.
    let mut lines: Vec<String> = Vec::new();
    for w in words {
        match lines.last_mut() {
            Some(last) if !w.starts_with('-') && last.starts_with('-') && !last.contains(' ') => {
                last.push(' ');
                last.push_str(&w);
            }
            _ => lines.push(w),
        }
    }
    let _ = writeln!(s, "exec \"$QEMU\" \\");
    let _ = writeln!(s, "    {}", lines.join(" \\\n    "));
    Ok(s)
}

const EARLY_FUNCTIONS: &str = r#"early_module() { # VERSION PATH NAME: a driver of the modules tarball, decompressed, into the early initramfs
    for d in "$WORK/merge.d/lib/modules/$1" "$WORK/merge.d/usr/lib/modules/$1"; do
        [ -f "$d/$2" ] || continue
        case $(od -An -tx1 -N6 "$d/$2" | tr -d ' \n') in
            1f8b*) gzip -dc "$d/$2" ;;
            fd377a585a00) xz -dc "$d/$2" ;;
            28b52ffd*) zstd -qdc "$d/$2" ;;
            *) cat "$d/$2" ;;
        esac >"$WORK/early/lib/early/$3"
        echo "$3" >>"$WORK/early/lib/early/order"
        return 0
    done
    echo "reproduce: the modules tarball has no lib/modules/$1/$2" >&2
    exit 1
}
"#;

/// A disk root booted through bootfarm's early initramfs: the job's modules tarball and overlays
/// extracted and archived for the second disk, and the early initramfs rebuilt from a static
/// busybox (`BUSYBOX`), the shared init and the drivers the runner loaded.
fn early_initramfs(
    s: &mut String,
    r: &BootResult,
    early: &super::EarlyInitramfs,
) -> Result<(), ReproError> {
    let arch = r.arch.map(|a| a.to_string()).unwrap_or_default();
    let _ = writeln!(
        s,
        "# bootfarm booted the disk root through its early initramfs: a static busybox for {arch}\n\
         # (Debian's busybox-static) is needed, BUSYBOX=PATH.\n\
         : \"${{BUSYBOX:?set BUSYBOX to a static busybox for {arch}}}\""
    );
    s.push_str(EARLY_FUNCTIONS);
    let _ = writeln!(s, "mkdir -p \"$WORK/merge.d\"");
    if let Some(m) = r.artifacts.get("modules") {
        fetch_line(s, "modules", m);
        let _ = writeln!(s, "tar -xf \"$WORK/modules\" -C \"$WORK/merge.d\"");
    }
    for (name, a) in overlays(r) {
        fetch_line(s, name, a);
        let dir = quote(a.path.as_deref().unwrap_or("/"));
        let _ = writeln!(
            s,
            "mkdir -p \"$WORK/merge.d\"{dir}\ntar -xf \"$WORK/{name}\" -C \"$WORK/merge.d\"{dir}"
        );
    }
    let _ = writeln!(
        s,
        "(cd \"$WORK/merge.d\" && find . -mindepth 1 | cpio -o -H newc --quiet) >\"$WORK/merge.cpio\"\n\
         truncate -s %512 \"$WORK/merge.cpio\"\n\
         mkdir -p \"$WORK/early/bin\" \"$WORK/early/dev\" \"$WORK/early/proc\" \"$WORK/early/sys\" \"$WORK/early/root\" \"$WORK/early/lib/early\"\n\
         cp -- \"$BUSYBOX\" \"$WORK/early/bin/busybox\"\n\
         chmod 0755 \"$WORK/early/bin/busybox\"\n\
         : >\"$WORK/early/lib/early/order\"\n\
         : >\"$WORK/early/lib/early/merge\"\n\
         cat >\"$WORK/early/init\" <<'BOOTFARM_EARLY_INIT'\n{}BOOTFARM_EARLY_INIT\n\
         chmod 0755 \"$WORK/early/init\"",
        crate::early_init::INIT
    );
    let version = early.version.as_deref().unwrap_or("");
    for m in &early.modules {
        let name = format!("{}.ko", crate::early_init::module_name(m));
        let _ = writeln!(
            s,
            "early_module {} {} {}",
            quote(version),
            quote(m),
            quote(&name)
        );
    }
    let _ = writeln!(
        s,
        "(cd \"$WORK/early\" && find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet) >\"$WORK/initramfs\"\n\
         printf '{}' >>\"$WORK/initramfs\"",
        crate::early_init::console_archive_printf()
    );
    Ok(())
}

/// The overlay artifacts in their order.
fn overlays(r: &BootResult) -> Vec<(&String, &ArtifactInfo)> {
    let mut v: Vec<(usize, &String, &ArtifactInfo)> = r
        .artifacts
        .iter()
        .filter_map(|(name, a)| {
            let i = name.strip_prefix("overlay-")?.parse().ok()?;
            Some((i, name, a))
        })
        .collect();
    v.sort_by_key(|(i, _, _)| *i);
    v.into_iter().map(|(_, n, a)| (n, a)).collect()
}

/// `,if=virtio,...` quoted to follow a double-quoted variable in the same word.
fn quote_tail(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{ArtifactInfo, ErrorKind, KernelBooted, QemuInfo};

    fn result() -> BootResult {
        let mut r = BootResult::error(ErrorKind::Internal, "x");
        r.arch = Some(crate::Arch::X86_64);
        r.qemu = Some(QemuInfo {
            version: None,
            argv: [
                "/usr/bin/qemu-system-x86_64",
                "-machine",
                "q35",
                "-S",
                "-no-reboot",
                "-chardev",
                "socket,id=con,path=/tmp/w/console.sock",
                "-serial",
                "chardev:con",
                "-chardev",
                "socket,id=qmp,path=/tmp/w/qmp.sock",
                "-mon",
                "chardev=qmp,mode=control",
                "-kernel",
                "/cache/pvh1-abc",
                "-initrd",
                "/tmp/w/initramfs.cpio",
                "-append",
                "console=ttyS0,115200 panic=-1 it's",
            ]
            .map(String::from)
            .to_vec(),
            kernel: Some(KernelBooted {
                format: "pvh-elf".into(),
                codec: Some("xz".into()),
                sha256: Some("e".repeat(64)),
                ..KernelBooted::default()
            }),
            early_initramfs: None,
        });
        for (name, source) in [
            ("kernel", "file:///srv/my%20kernels/bzImage"),
            ("initrd", "https://example.org/i.cpio.gz"),
            ("modules", "/m'; rm -rf /;'.cpio"),
        ] {
            r.artifacts.insert(
                name.into(),
                ArtifactInfo {
                    source: source.into(),
                    sha256: "a".repeat(64),
                    size: 1,
                    path: None,
                },
            );
        }
        r
    }

    #[test]
    fn tarballs_are_repacked_with_tar_and_cpio_in_the_runners_order() {
        let mut r = result();
        let info = |source: &str, path: Option<&str>| ArtifactInfo {
            source: source.into(),
            sha256: "a".repeat(64),
            size: 1,
            path: path.map(str::to_string),
        };
        r.artifacts
            .insert("modules".into(), info("/srv/modules.tar.xz", None));
        for i in [10, 2] {
            r.artifacts.insert(
                format!("overlay-{i}"),
                info(&format!("/srv/o{i}.tar"), Some("/opt/my suite")),
            );
        }
        let s = reproducer(&r, "job x").unwrap();
        assert!(
            s.contains("tar -xf \"$WORK/modules\" -C \"$WORK/modules.d\"\n"),
            "{s}"
        );
        assert!(
            s.contains("tar -xf \"$WORK/overlay-2\" -C \"$WORK/overlay-2.d\"'/opt/my suite'\n"),
            "{s}"
        );
        assert!(
            s.contains("cat \"$WORK/initrd\" \"$WORK/modules.cpio\" \"$WORK/overlay-2.cpio\" \"$WORK/overlay-10.cpio\" >\"$WORK/initramfs\""),
            "{s}"
        );
    }

    #[test]
    fn the_runners_plumbing_is_replaced_and_every_file_is_made_from_its_source() {
        let s = reproducer(&result(), "job x").unwrap();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("fetch kernel '/srv/my kernels/bzImage' "), "{s}");
        assert!(
            s.contains("fetch initrd https://example.org/i.cpio.gz "),
            "{s}"
        );
        assert!(s.contains("extract_pvh \"$WORK/kernel\" xz \"$WORK/kernel.boot\""));
        assert!(s.contains(&format!("echo {}'  '", "e".repeat(64))));
        assert!(s.contains("cat \"$WORK/initrd\" \"$WORK/modules\" >\"$WORK/initramfs\""));
        let exec = &s[s.find("exec ").unwrap()..];
        for gone in ["-S", "console.sock", "qmp", "chardev:con", "/cache/"] {
            assert!(!exec.contains(gone), "{gone} left in {exec}");
        }
        assert!(exec.contains("\n    -serial stdio \\\n"), "{exec}");
        assert!(
            exec.contains("'console=ttyS0,115200 panic=-1 it'\\''s'"),
            "{exec}"
        );
    }

    #[test]
    fn hostile_sources_stay_one_quoted_word() {
        let s = reproducer(&result(), "job\n rm -rf /").unwrap();
        assert!(
            s.contains(r"fetch modules '/m'\''; rm -rf /;'\''.cpio' "),
            "{s}"
        );
        assert!(s.lines().nth(1).unwrap().ends_with("job  rm -rf /"));
    }

    #[test]
    fn disks_and_plain_kernels_and_missing_parts() {
        let mut r = result();
        let q = r.qemu.as_mut().unwrap();
        q.kernel = None;
        q.argv
            .retain(|a| a != "-initrd" && a != "/tmp/w/initramfs.cpio");
        q.argv.extend([
            "-drive".into(),
            "file=/c/disk,if=virtio,format=raw,snapshot=on".into(),
        ]);
        r.artifacts
            .insert("rootfs".into(), r.artifacts["initrd"].clone());
        let s = reproducer(&r, "d").unwrap();
        assert!(s.contains("mv -- \"$WORK/kernel\" \"$WORK/kernel.boot\""));
        assert!(
            s.contains("file=\"$WORK/rootfs\"',if=virtio,format=raw,snapshot=on'"),
            "{s}"
        );
        r.artifacts.remove("rootfs");
        assert_eq!(
            reproducer(&r, "d"),
            Err(ReproError::MissingArtifact("rootfs"))
        );
        r.qemu = None;
        assert_eq!(reproducer(&r, "d"), Err(ReproError::NoQemu));
    }

    #[test]
    fn a_disk_root_rebuilds_the_early_initramfs_and_the_merge_disk() {
        let mut r = result();
        let q = r.qemu.as_mut().unwrap();
        q.kernel = None;
        q.early_initramfs = Some(crate::result::EarlyInitramfs {
            version: Some("6.1.0-9-amd64".into()),
            modules: vec![
                "kernel/drivers/ata/ahci.ko".into(),
                "kernel/fs/ext4/ext4.ko.xz".into(),
            ],
        });
        q.argv.extend([
            "-drive".into(),
            "file=/c/disk,if=ide,format=raw,snapshot=on".into(),
            "-drive".into(),
            "file=/tmp/w/merge.cpio,if=ide,format=raw,snapshot=on".into(),
        ]);
        r.artifacts.remove("initrd");
        r.artifacts
            .insert("rootfs".into(), r.artifacts["kernel"].clone());
        r.artifacts.get_mut("modules").unwrap().source = "/m/modules.tar.xz".into();
        let mut overlay = r.artifacts["kernel"].clone();
        overlay.path = Some("/opt".into());
        r.artifacts.insert("overlay-0".into(), overlay);
        let s = reproducer(&r, "disk").unwrap();
        for want in [
            ": \"${BUSYBOX:?set BUSYBOX to a static busybox for x86_64}\"",
            "tar -xf \"$WORK/modules\" -C \"$WORK/merge.d\"",
            "tar -xf \"$WORK/overlay-0\" -C \"$WORK/merge.d\"/opt",
            "early_module 6.1.0-9-amd64 kernel/drivers/ata/ahci.ko ahci.ko",
            "early_module 6.1.0-9-amd64 kernel/fs/ext4/ext4.ko.xz ext4.ko",
            "truncate -s %512 \"$WORK/merge.cpio\"",
            "exec switch_root /root /sbin/init\nBOOTFARM_EARLY_INIT",
            "file=\"$WORK/rootfs\"',if=ide,format=raw,snapshot=on'",
            "file=\"$WORK/merge.cpio\"',if=ide,format=raw,snapshot=on'",
            "-initrd \"$WORK/initramfs\"",
        ] {
            assert!(s.contains(want), "{want} not in\n{s}");
        }
        assert!(
            !s.contains("modules.cpio"),
            "the tarball goes to the disk, not the initramfs"
        );
        // The script is valid sh.
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
