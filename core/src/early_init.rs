//! The early init of a disk root, shared by the runner (which builds the early initramfs) and
//! the reproducer (which rebuilds it with cpio): one script, so both boot the same way.

/// The early init (busybox sh). `/lib/early/order` lists the modules in load order;
/// `/lib/early/merge` exists when a second disk carries a newc cpio to merge into the root.
/// The merge disk is found by its cpio magic, so disk naming order does not matter.
pub const INIT: &str = r#"#!/bin/busybox sh
# bootfarm's early init for a disk root: load the root's drivers from the job's modules tarball,
# mount the root, merge the job's modules and overlays into it, start the root's own init.
/bin/busybox mkdir -p /proc /sys /dev /root
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "bootfarm-early: $*"; }
# Exiting kills init: the kernel panics, so no expectation can mistake this for a good boot.
die() { say "ERROR: $*"; exit 1; }
n=0
for m in $(cat /lib/early/order); do
  insmod "/lib/early/${m##*/}" || say "insmod ${m##*/} failed"
  n=$((n + 1))
done
say "loaded $n modules"
root=
for w in $(cat /proc/cmdline); do
  case "$w" in root=*) root=${w#root=} ;; esac
done
[ -n "$root" ] || die "no root= on the kernel command line"
merge=
i=0
while [ $i -lt 300 ]; do
  if [ -f /lib/early/merge ] && [ -z "$merge" ]; then
    for d in /dev/vd? /dev/sd?; do
      [ -b "$d" ] || continue
      [ "$(dd if="$d" bs=6 count=1 2>/dev/null)" = 070701 ] && merge=$d
    done
  fi
  if [ -n "$merge" ] && [ "$merge" = "$root" ]; then
    # The disks came up in the other order: the root is the one that is not the archive.
    for d in /dev/vd? /dev/sd?; do
      [ -b "$d" ] && [ "$d" != "$merge" ] && root=$d && break
    done
  fi
  if [ -b "$root" ] && { [ ! -f /lib/early/merge ] || [ -n "$merge" ]; }; then break; fi
  sleep 0.1
  i=$((i + 1))
done
[ -b "$root" ] || die "the root disk $root never appeared"
mount -t ext4 -o rw "$root" /root || die "cannot mount $root (ext4)"
if [ -f /lib/early/merge ]; then
  [ -n "$merge" ] || die "the disk with the modules and overlays never appeared"
  (cd /root && cpio -i -d -m -u <"$merge" 2>/dev/null) || die "merging $merge into the root failed"
  say "merged the modules and overlays from $merge into $root"
fi
umount /proc /sys
mount --move /dev /root/dev 2>/dev/null || umount /dev
say "switching to $root"
exec switch_root /root /sbin/init
"#;

/// A module name as the kernel knows it: the file's base name without `.ko[.xz|.zst|.gz]`, with
/// `-` and `_` the same.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.find(".ko").map_or(base, |i| &base[..i]);
    stem.replace('-', "_")
}

/// A newc archive of one entry, `/dev/console` (char 5:1), as a `printf` format: the kernel opens
/// it for init before any devtmpfs exists, and an unprivileged user cannot mknod it. Headers are
/// ASCII; only the NULs of names and padding need escapes.
pub fn console_archive_printf() -> String {
    fn header(mode: u32, nlink: u32, rdev: (u32, u32), namesize: u32) -> String {
        let fields = [
            1, mode, 0, 0, nlink, 0, 0, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut s = String::from("070701");
        for f in fields {
            s.push_str(&format!("{f:08X}"));
        }
        s
    }
    let nul = |n: usize| "\\000".repeat(n);
    // 110-byte header + name + NUL, padded to a multiple of 4.
    let name = "dev/console";
    let pad = |len: usize| (4 - (110 + len + 1) % 4) % 4;
    let trailer = "TRAILER!!!";
    format!(
        "{}{name}{}{}{trailer}{}",
        header(0o020600, 1, (5, 1), 12),
        nul(1 + pad(name.len())),
        header(0, 1, (0, 0), 11),
        nul(1 + pad(trailer.len())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_archive_is_two_aligned_newc_entries() {
        let f = console_archive_printf();
        let bytes = f.replace("\\000", "\0");
        let b = bytes.as_bytes();
        assert_eq!(b.len() % 4, 0, "{f}");
        assert_eq!(b.len(), 124 + 124);
        assert!(f.starts_with("070701"));
        assert_eq!(&bytes[110..121], "dev/console");
        // mode (char device, 0600) and rdev 5:1
        assert_eq!(&bytes[14..22], "00002180");
        assert_eq!(&bytes[78..86], "00000005");
        assert_eq!(&bytes[86..94], "00000001");
        assert_eq!(&bytes[124..130], "070701");
        assert_eq!(&bytes[124 + 110..124 + 120], "TRAILER!!!");
    }

    #[test]
    fn the_init_finds_the_merge_disk_by_its_magic_and_switches_root() {
        assert!(INIT.starts_with("#!/bin/busybox sh"));
        assert!(INIT.contains("070701") && INIT.contains("exec switch_root /root /sbin/init"));
    }
}
