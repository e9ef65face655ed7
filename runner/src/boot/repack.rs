//! Kernel image repacking (KIR): a tarball (`modules.tar.xz` as TuxMake writes it, or an overlay)
//! turned into a newc cpio archive that is appended to the initramfs, streamed entry by entry
//! from the (decompressed) tar to the cpio with no unpacked tree on disk. The kernel unpacks
//! concatenated cpio archives in order, so the tarball's files land in the guest's root.
//!
//! Nothing is ever extracted on the host, but the guest must not get a corrupted boot either:
//! paths that climb out of the destination, symlinks that point out of it, device nodes, hard
//! links and archives that expand past the limits are refused with the entry named.

use bootfarm_core::spec::parse_guest_dir;
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};

/// Limits of one repacking (all tarballs of a boot together).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content.
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    /// Generous for a distribution kernel's whole modules tree (~400 MiB, ~6,000 files).
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 30,
            max_entries: 200_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepackError {
    #[error("{entry}: the path climbs out of {dest} (`..`)")]
    Escapes { entry: String, dest: String },
    #[error("{entry}: a symlink to {target}, outside {dest}")]
    SymlinkEscapes {
        entry: String,
        target: String,
        dest: String,
    },
    #[error("{entry}: device nodes and fifos are not allowed in an overlay or modules archive")]
    Device { entry: String },
    #[error("{entry}: hard links are not supported (archive the file itself)")]
    HardLink { entry: String },
    #[error("{entry}: unsupported tar entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("the archives expand past {limit} bytes of files (a tar bomb?)")]
    TooLarge { limit: u64 },
    #[error("the archives hold more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("{entry}: a file of {size} bytes does not fit a cpio archive (4 GiB at most)")]
    FileTooLarge { entry: String, size: u64 },
    #[error("not a readable tar archive: {0}")]
    Corrupt(String),
    #[error("writing the repacked archive: {0}")]
    Write(String),
}

/// A destination directory in the guest: `/` or `/a/b`, normalized to its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDir(Vec<String>);

impl GuestDir {
    pub fn root() -> Self {
        GuestDir(Vec::new())
    }

    /// An absolute path without `..` (the spec's one rule, [`parse_guest_dir`]).
    pub fn parse(path: &str) -> Result<Self, String> {
        parse_guest_dir(path).map(GuestDir)
    }

    fn shown(&self) -> String {
        format!("/{}", self.0.join("/"))
    }
}

/// What a repacking found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    /// `<version>` of every `lib/modules/<version>/` (or `usr/lib/modules/`) in the archives.
    pub module_versions: BTreeSet<String>,
}

/// Writes one newc archive from several tarballs, each into its guest directory.
pub struct Repacker<W: Write> {
    out: Option<W>,
    limits: Limits,
    report: Report,
    entries: u64,
    next_ino: u32,
    /// Directories already in the archive (so parents are made once, before their children).
    dirs: HashSet<String>,
}

impl<W: Write> Repacker<W> {
    pub fn new(out: W, limits: Limits) -> Self {
        Repacker {
            out: Some(out),
            limits,
            report: Report::default(),
            entries: 0,
            next_ino: 1,
            dirs: HashSet::new(),
        }
    }

    /// Adds every entry of an uncompressed tar stream under `dest`.
    pub fn add_tar(&mut self, tar: impl Read, dest: &GuestDir) -> Result<(), RepackError> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive
            .entries()
            .map_err(|e| RepackError::Corrupt(e.to_string()))?;
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|e| RepackError::Corrupt(e.to_string()))?;
            any = true;
            self.add_entry(entry, dest)?;
        }
        if !any {
            return Err(RepackError::Corrupt("the archive holds no entry".into()));
        }
        Ok(())
    }

    fn add_entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        dest: &GuestDir,
    ) -> Result<(), RepackError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        // pax and GNU long-name records are folded into the entry by the tar crate; these are
        // metadata of no use in a guest.
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(RepackError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let rel = relative_components(&raw).ok_or_else(|| RepackError::Escapes {
            entry: raw.clone(),
            dest: dest.shown(),
        })?;
        if rel.is_empty() {
            return Ok(()); // `./` itself: the destination, made as a parent when needed
        }
        let mut full = dest.0.clone();
        full.extend(rel.iter().cloned());
        let name = full.join("/");
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let new = |name: &str, ino: u32| {
            cpio::NewcBuilder::new(name)
                .ino(ino)
                .uid(u32::try_from(uid).unwrap_or(0))
                .gid(u32::try_from(gid).unwrap_or(0))
                .mtime(u32::try_from(mtime).unwrap_or(0))
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let len = u32::try_from(size).map_err(|_| RepackError::FileTooLarge {
                    entry: raw.clone(),
                    size,
                })?;
                self.report.bytes = self.report.bytes.saturating_add(size);
                if self.report.bytes > self.limits.max_bytes {
                    return Err(RepackError::TooLarge {
                        limit: self.limits.max_bytes,
                    });
                }
                self.parents(&full)?;
                let ino = self.ino();
                let builder = new(&name, ino)
                    .mode(mode)
                    .set_mode_file_type(cpio::newc::ModeFileType::Regular);
                let out = self.take_out();
                let mut w = builder.write(out, len);
                let copied = io::copy(&mut (&mut entry).take(size), &mut w)
                    .map_err(|e| RepackError::Corrupt(format!("{raw}: {e}")))?;
                if copied != size {
                    return Err(RepackError::Corrupt(format!(
                        "{raw}: {copied} of {size} bytes (the archive is cut)"
                    )));
                }
                self.out = Some(w.finish().map_err(write_err)?);
                self.report.files += 1;
                self.note_module_version(&full, dest);
            }
            tar::EntryType::Directory => {
                self.parents(&full)?;
                self.dir(&name, mode, Some((uid, gid, mtime)))?;
                self.note_module_version(&full, dest);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                check_symlink(&raw, &rel, &target, dest)?;
                self.parents(&full)?;
                let ino = self.ino();
                let builder = new(&name, ino)
                    .mode(0o777)
                    .set_mode_file_type(cpio::newc::ModeFileType::Symlink);
                let data = target.as_bytes();
                let out = self.take_out();
                let mut w = builder.write(out, u32::try_from(data.len()).unwrap_or(0));
                w.write_all(data).map_err(write_err)?;
                self.out = Some(w.finish().map_err(write_err)?);
            }
            tar::EntryType::Link => return Err(RepackError::HardLink { entry: raw }),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(RepackError::Device { entry: raw })
            }
            other => {
                return Err(RepackError::Unsupported {
                    entry: raw,
                    kind: format!("{other:?}"),
                })
            }
        }
        Ok(())
    }

    fn ino(&mut self) -> u32 {
        let i = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1).max(1);
        i
    }

    fn take_out(&mut self) -> W {
        // Always put back before the next entry; only a failed write leaves it empty, and that
        // ends the repacking.
        self.out
            .take()
            .expect("the output is put back after every entry")
    }

    /// Every missing parent of `full` (not `full` itself), root first.
    fn parents(&mut self, full: &[String]) -> Result<(), RepackError> {
        for n in 1..full.len() {
            let name = full[..n].join("/");
            if !self.dirs.contains(&name) {
                self.dir(&name, 0o755, None)?;
            }
        }
        Ok(())
    }

    fn dir(
        &mut self,
        name: &str,
        mode: u32,
        owner: Option<(u64, u64, u64)>,
    ) -> Result<(), RepackError> {
        self.dirs.insert(name.to_string());
        let (uid, gid, mtime) = owner.unwrap_or((0, 0, 0));
        let ino = self.ino();
        let builder = cpio::NewcBuilder::new(name)
            .ino(ino)
            .mode(mode)
            .uid(u32::try_from(uid).unwrap_or(0))
            .gid(u32::try_from(gid).unwrap_or(0))
            .mtime(u32::try_from(mtime).unwrap_or(0))
            .nlink(2)
            .set_mode_file_type(cpio::newc::ModeFileType::Directory);
        let out = self.take_out();
        self.out = Some(builder.write(out, 0).finish().map_err(write_err)?);
        Ok(())
    }

    fn note_module_version(&mut self, full: &[String], dest: &GuestDir) {
        if !dest.0.is_empty() {
            return;
        }
        let v = match full {
            [lib, modules, v, ..] if lib == "lib" && modules == "modules" => v,
            [usr, lib, modules, v, ..] if usr == "usr" && lib == "lib" && modules == "modules" => v,
            _ => return,
        };
        self.report.module_versions.insert(v.clone());
    }

    /// Ends the archive (its trailer) and returns the output and what was added.
    pub fn finish(mut self) -> Result<(W, Report), RepackError> {
        let out = self.take_out();
        let out = cpio::newc::trailer(out).map_err(write_err)?;
        Ok((out, self.report))
    }
}

fn write_err(e: io::Error) -> RepackError {
    RepackError::Write(e.to_string())
}

/// The entry's path as components relative to the archive root, `None` when it climbs out.
/// A leading `/` or `./` is dropped (tar and TuxMake write both).
fn relative_components(path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c.to_string()),
        }
    }
    Some(out)
}

/// A symlink may point anywhere inside the destination: relative targets are resolved from the
/// link's own directory, absolute ones must lie under the destination (always true for `/`).
fn check_symlink(
    raw: &str,
    rel: &[String],
    target: &str,
    dest: &GuestDir,
) -> Result<(), RepackError> {
    let escapes = || RepackError::SymlinkEscapes {
        entry: raw.to_string(),
        target: target.to_string(),
        dest: dest.shown(),
    };
    if target.is_empty() || target.contains('\0') {
        return Err(escapes());
    }
    if let Some(abs) = target.strip_prefix('/') {
        let parts = relative_components(abs).ok_or_else(escapes)?;
        return if parts.starts_with(&dest.0) {
            Ok(())
        } else {
            Err(escapes())
        };
    }
    // Relative: from the link's directory, never above the archive's root.
    let mut at: Vec<&str> = rel[..rel.len().saturating_sub(1)]
        .iter()
        .map(String::as_str)
        .collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                at.pop().ok_or_else(escapes)?;
            }
            c => at.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Dev(&'a str),
    }

    fn tarball(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::File(p, data, mode) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(*mode);
                    h.set_entry_type(tar::EntryType::Regular);
                    if p.contains("..") {
                        // The tar crate refuses to write such a name, as it should: by hand.
                        h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
                        h.set_cksum();
                        b.append(&h, *data).unwrap();
                    } else {
                        h.set_cksum();
                        b.append_data(&mut h, p, *data).unwrap();
                    }
                }
                E::Dir(p) => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::Link(p, t) | E::Hard(p, t) => {
                    h.set_size(0);
                    h.set_entry_type(if matches!(e, E::Link(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Dev(p) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// (name, mode, data) of every entry of a newc archive.
    fn read_cpio(mut data: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(data).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let (name, mode) = (r.entry().name().to_string(), r.entry().mode());
            let mut body = Vec::new();
            r.read_to_end(&mut body).unwrap();
            out.push((name, mode, body));
            data = r.finish().unwrap();
        }
        out
    }

    fn repack(tars: &[(&[u8], &str)], limits: Limits) -> Result<(Vec<u8>, Report), RepackError> {
        let mut r = Repacker::new(Vec::new(), limits);
        for (t, dest) in tars {
            r.add_tar(*t, &GuestDir::parse(dest).unwrap())?;
        }
        r.finish()
    }

    #[test]
    fn a_modules_tarball_becomes_a_cpio_with_its_parents_first() {
        let t = tarball(&[
            E::Dir("./lib/"),
            E::File("./lib/modules/6.1.0-57-amd64/extra/m.ko", b"ELF...", 0o644),
            E::File(
                "lib/modules/6.1.0-57-amd64/modules.dep",
                b"extra/m.ko:\n",
                0o644,
            ),
            E::Link("lib/modules/6.1.0-57-amd64/build", "../../../usr/src/linux"),
        ]);
        let (out, report) = repack(&[(&t, "/")], Limits::default()).unwrap();
        let entries = read_cpio(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1.0-57-amd64",
                "lib/modules/6.1.0-57-amd64/extra",
                "lib/modules/6.1.0-57-amd64/extra/m.ko",
                "lib/modules/6.1.0-57-amd64/modules.dep",
                "lib/modules/6.1.0-57-amd64/build",
            ]
        );
        assert_eq!(entries[4].2, b"ELF...");
        assert_eq!(entries[4].1 & 0o170000, 0o100000, "a regular file");
        assert_eq!(entries[4].1 & 0o7777, 0o644);
        assert_eq!(entries[0].1 & 0o170000, 0o040000, "a directory");
        assert_eq!(entries[6].1 & 0o170000, 0o120000, "a symlink");
        assert_eq!(entries[6].2, b"../../../usr/src/linux");
        assert_eq!(report.files, 2);
        assert_eq!(report.bytes, 6 + 12);
        assert_eq!(
            report.module_versions.into_iter().collect::<Vec<_>>(),
            ["6.1.0-57-amd64"]
        );
    }

    #[test]
    fn an_overlay_lands_under_its_path_and_two_archives_share_parents() {
        let a = tarball(&[E::File("bin/tool", b"#!/bin/sh\n", 0o755)]);
        let b = tarball(&[E::File("etc/tool.conf", b"x=1\n", 0o600)]);
        let (out, report) =
            repack(&[(&a, "/opt/suite"), (&b, "/opt/suite")], Limits::default()).unwrap();
        let names: Vec<String> = read_cpio(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "opt",
                "opt/suite",
                "opt/suite/bin",
                "opt/suite/bin/tool",
                "opt/suite/etc",
                "opt/suite/etc/tool.conf"
            ]
        );
        assert!(report.module_versions.is_empty(), "not a modules tree");
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let cases: Vec<(Vec<u8>, &str, RepackError)> = vec![
            (
                tarball(&[E::File("../etc/passwd", b"x", 0o644)]),
                "/",
                RepackError::Escapes {
                    entry: "../etc/passwd".into(),
                    dest: "/".into(),
                },
            ),
            (
                tarball(&[E::Link("a/up", "../../../etc")]),
                "/opt",
                RepackError::SymlinkEscapes {
                    entry: "a/up".into(),
                    target: "../../../etc".into(),
                    dest: "/opt".into(),
                },
            ),
            (
                tarball(&[E::Link("shadow", "/etc/shadow")]),
                "/opt/suite",
                RepackError::SymlinkEscapes {
                    entry: "shadow".into(),
                    target: "/etc/shadow".into(),
                    dest: "/opt/suite".into(),
                },
            ),
            (
                tarball(&[E::Dev("dev/sda")]),
                "/",
                RepackError::Device {
                    entry: "dev/sda".into(),
                },
            ),
            (
                tarball(&[E::File("a", b"1", 0o644), E::Hard("b", "a")]),
                "/",
                RepackError::HardLink { entry: "b".into() },
            ),
        ];
        for (t, dest, want) in cases {
            assert_eq!(repack(&[(&t, dest)], Limits::default()).unwrap_err(), want);
        }
        // An absolute symlink inside the destination is fine, and anything absolute is for `/`.
        let ok = tarball(&[E::Link("cur", "/opt/suite/bin")]);
        repack(&[(&ok, "/opt/suite")], Limits::default()).unwrap();
        let ok = tarball(&[E::Link("sh", "/bin/busybox")]);
        repack(&[(&ok, "/")], Limits::default()).unwrap();
    }

    #[test]
    fn a_tar_bomb_stops_at_the_limits() {
        let big = vec![0u8; 4096];
        let t = tarball(&[E::File("a", &big, 0o644), E::File("b", &big, 0o644)]);
        let limits = Limits {
            max_bytes: 6000,
            max_entries: 10,
        };
        assert_eq!(
            repack(&[(&t, "/")], limits).unwrap_err(),
            RepackError::TooLarge { limit: 6000 }
        );
        let many: Vec<E<'_>> = (0..5).map(|_| E::Dir("d")).collect();
        let t = tarball(&many);
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 3,
        };
        assert_eq!(
            repack(&[(&t, "/")], limits).unwrap_err(),
            RepackError::TooManyEntries { limit: 3 }
        );
    }

    #[test]
    fn garbage_and_cut_archives_are_errors_not_panics() {
        assert!(matches!(
            repack(
                &[(
                    b"this is not a tar archive at all".repeat(40).as_slice(),
                    "/"
                )],
                Limits::default()
            ),
            Err(RepackError::Corrupt(_))
        ));
        let t = tarball(&[E::File("a", &[7u8; 5000], 0o644)]);
        assert!(matches!(
            repack(&[(&t[..2048], "/")], Limits::default()),
            Err(RepackError::Corrupt(_))
        ));
        assert!(matches!(
            repack(&[(&[][..], "/")], Limits::default()),
            Err(RepackError::Corrupt(_))
        ));
    }

    #[test]
    fn destinations_are_absolute_and_never_climb() {
        assert_eq!(GuestDir::parse("/").unwrap(), GuestDir::root());
        assert_eq!(GuestDir::parse("/opt//x/").unwrap().shown(), "/opt/x");
        assert!(GuestDir::parse("opt").is_err());
        assert!(GuestDir::parse("/opt/../etc").is_err());
    }
}
