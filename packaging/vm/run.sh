#!/usr/bin/env bash
# Boots the image built by packaging/vm/build-initramfs.sh under qemu-system-x86_64, with the
# serial console on stdout (and in OUT_DIR/console.log). paddock is /init, PID 1; the VM powers
# off by itself when paddock shuts down (the image's `shutdown` app asks for it after a few
# seconds).
#
#   packaging/vm/run.sh [OUT_DIR]                    (default: target/vm)
#
# Environment:
#   PADDOCK_VM_TIMEOUT  seconds before qemu is killed (default 300; exit status 124 then)
#   PADDOCK_VM_ACCEL    auto (default), kvm or tcg. auto uses KVM only when /dev/kvm is usable
#                       and a probe boot of the kernel under KVM prints anything within 10 s
#                       (nested KVM hangs on some hosts); the verdict is cached in
#                       OUT_DIR/accel. Otherwise software emulation (tcg): slower, always works.
#   PADDOCK_VM_MEM      memory in MiB (default 512)
#   PADDOCK_VM_APPEND   more kernel command line parameters, before the `--` that ends them
#   PADDOCK_VM_MONITOR  a path: qemu's monitor listens there (a Unix socket), e.g. to press
#                       Ctrl-Alt-Del with `echo "sendkey ctrl-alt-delete" | socat - UNIX:PATH`
#   PADDOCK_VM_INIT_ARGS  arguments for /init, i.e. paddock (default: none: as PID 1, a bare
#                       `paddock` serves with the defaults /etc/paddock/{apps,paddock.toml})
#
# Exit status: qemu's (0 after a power off or a reboot, thanks to -no-reboot), 124 on timeout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-"$repo/target/vm"}
timeout_s=${PADDOCK_VM_TIMEOUT:-300}
accel=${PADDOCK_VM_ACCEL:-auto}
mem=${PADDOCK_VM_MEM:-512}
init_args=${PADDOCK_VM_INIT_ARGS:-}

say() { echo "vm/run: $*" >&2; }
[ -e "$out/vmlinuz" ] && [ -e "$out/initrd.gz" ] ||
  { say "no image in $out: run packaging/vm/build-initramfs.sh first"; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { say "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"; exit 2; }

kernel=$(readlink -f "$out/vmlinuz")
# No network card: the apps need none, and the PC's default NIC makes the BIOS probe iPXE.
qemu=(qemu-system-x86_64 -M pc -m "$mem" -nographic -no-reboot -nic none -kernel "$kernel")

if [ "$accel" = auto ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    if [ -f "$out/accel" ] && [ "$(sed -n 2p "$out/accel")" = "$kernel" ]; then
      accel=$(sed -n 1p "$out/accel")
    else
      # A kernel with no root file system boots, panics and (panic=-1, -no-reboot) exits at once
      # under a working KVM. A hanging one prints nothing.
      probe=$(timeout 10 "${qemu[@]}" -accel kvm -append "console=ttyS0 panic=-1" 2>&1 </dev/null || true)
      if grep -aq "Linux version" <<<"$probe"; then accel=kvm; fi
      printf '%s\n%s\n' "$accel" "$kernel" >"$out/accel"
    fi
  fi
fi
if [ -n "${PADDOCK_VM_MONITOR:-}" ]; then
  rm -f "$PADDOCK_VM_MONITOR"
  qemu+=(-monitor "unix:$PADDOCK_VM_MONITOR,server=on,wait=off")
fi
case "$accel" in
  kvm | tcg) ;;
  *) say "PADDOCK_VM_ACCEL must be auto, kvm or tcg, not $accel"; exit 2 ;;
esac

append="console=ttyS0 panic=-1 quiet${PADDOCK_VM_APPEND:+ $PADDOCK_VM_APPEND}${init_args:+ -- $init_args}"
say "booting $(basename "$kernel") with accel=$accel, timeout ${timeout_s}s; append: $append"
start=$(date +%s%N)
set +e
timeout "$timeout_s" "${qemu[@]}" -accel "$accel" -initrd "$out/initrd.gz" -append "$append" \
  </dev/null 2>&1 | tee "$out/console.log"
status=${PIPESTATUS[0]}
set -e
ms=$((($(date +%s%N) - start) / 1000000))
say "qemu exited with status $status after $((ms / 1000)).$(printf %03d $((ms % 1000))) s"
exit "$status"
