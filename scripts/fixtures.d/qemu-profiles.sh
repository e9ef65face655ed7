# shellcheck shell=bash
# Plain-QEMU (TCG) command lines for booting the fixtures; sourced by scripts/fixtures and
# scripts/record-logs so verification and recorded logs use the same machine profiles.

# qemu_profile ARCH: sets QEMU_BIN, QEMU_MACHINE (array of machine/cpu/firmware args), CONSOLE
# and QEMU_MEM (the memory the arch's machine needs).
qemu_profile() {
  QEMU_MEM=512M
  case "$1" in
    x86_64)
      QEMU_BIN=qemu-system-x86_64
      QEMU_MACHINE=(-M q35 -cpu Nehalem)
      CONSOLE=ttyS0
      ;;
    i386)
      QEMU_BIN=qemu-system-i386
      QEMU_MACHINE=(-M q35 -cpu coreduo)
      CONSOLE=ttyS0
      ;;
    arm64)
      QEMU_BIN=qemu-system-aarch64
      QEMU_MACHINE=(-M virt,gic-version=3 -cpu max)
      CONSOLE=ttyAMA0
      ;;
    riscv64)
      QEMU_BIN=qemu-system-riscv64
      QEMU_MACHINE=(-M virt -cpu rv64 -bios default)
      CONSOLE=ttyS0
      ;;
    ppc64le)
      QEMU_BIN=qemu-system-ppc64
      QEMU_MACHINE=(-M pseries -cpu POWER8)
      CONSOLE=hvc0
      # SLOF and the pseries kernel want more than the others.
      QEMU_MEM=1G
      ;;
    s390x)
      QEMU_BIN=qemu-system-s390x
      QEMU_MACHINE=(-M s390-ccw-virtio -cpu max,zpci=on)
      CONSOLE=ttyS0
      ;;
    armv7)
      QEMU_BIN=qemu-system-arm
      QEMU_MACHINE=(-M virt,highmem=off -cpu cortex-a15)
      CONSOLE=ttyAMA0
      ;;
    *)
      echo "unknown arch: $1" >&2
      return 1
      ;;
  esac
}

# qemu_argv ARCH KERNEL INITRD|- MEMORY|"" EXTRA_APPEND: sets QEMU_ARGV (console left to the
# caller); an empty MEMORY is the arch's own.
qemu_argv() {
  local arch=$1 kernel=$2 initrd=$3 mem=$4 extra=$5
  qemu_profile "$arch" || return 1
  [[ -n "$mem" ]] || mem=$QEMU_MEM
  QEMU_ARGV=("$QEMU_BIN" "${QEMU_MACHINE[@]}" -m "$mem" -smp 1 -accel tcg -no-reboot -nographic
    -kernel "$kernel")
  if [[ "$initrd" != - ]]; then
    QEMU_ARGV+=(-initrd "$initrd")
  fi
  QEMU_ARGV+=(-append "console=$CONSOLE panic=-1${extra:+ $extra}")
}
