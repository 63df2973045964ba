#!/usr/bin/env bash
# Builds a bootable VM image for paddock: a Debian cloud kernel and an initramfs in which paddock
# is /init (PID 1) and runs the apps of packaging/vm/apps/.
#
#   packaging/vm/build-initramfs.sh [OUT_DIR]        (default: target/vm)
#
# Outputs OUT_DIR/vmlinuz and OUT_DIR/initrd.gz; boot them with packaging/vm/run.sh.
#
# What goes into the initramfs:
#   /usr/bin/paddock, /init -> usr/bin/paddock
#       target/release/paddock (PADDOCK_BIN to use another build), with the shared libraries it
#       needs at their original paths. The libraries are found by paddock's own bundle builder
#       (recipe packaging/vm/paddock.toml; it reads the ELF files, it never runs ldd): the
#       bundle's root tree is copied into the image.
#   /usr/bin/busybox (+ sh, sleep, cat, … as symlinks), /bin -> usr/bin
#       Debian's busybox, also from its bundle (bundles/busybox.toml), for the apps' scripts.
#   /var/lib/paddock/bundles
#       a bundle store holding the busybox bundle, so an app can run at isolation = "bundle".
#   /etc/paddock/apps/*.toml, /etc/paddock/paddock.toml
#       from packaging/vm/apps/ and packaging/vm/paddock-vm.toml (hostname, on_exit = "poweroff"):
#       apps at levels none (cgroups, shutdown), bundle (hello), sandbox and wasm (with
#       examples/wasm/hello.wasm as /etc/paddock/apps/wasm-hello.wasm).
#   /dev/console, /dev/null (when run as root), and empty mount points /proc /sys /dev /run /tmp.
#
# Needs: a built target/release/paddock; qemu-system-x86_64, cpio, busybox and apt (installed
# here when missing and running as root). The kernel package is downloaded once and cached in
# OUT_DIR/kernel; reruns only rebuild the initramfs (a second or two).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/packaging/vm"
out=${1:-"$repo/target/vm"}
paddock=${PADDOCK_BIN:-"$repo/target/release/paddock"}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { echo "build-initramfs: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[ -x "$paddock" ] || die "$paddock not found: run \`cargo build --release\` first (or set PADDOCK_BIN)"

# --- tools -----------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
[ -x /usr/bin/busybox ] || need+=(busybox)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages: ${need[*]} (install them, or run as root)"
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's dynamically linked busybox (package busybox, not busybox-static, which would replace it
# on the host): bundled below like any other program.
file_is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }
file_is_elf /usr/bin/busybox || die "/usr/bin/busybox is not an ELF program"

# --- kernel (cached) ------------------------------------------------------------------------
if ! ls "$out"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$pkg" ]; then
    [ "$(id -u)" = 0 ] || die "apt does not know linux-image-cloud-amd64: run apt-get update as root"
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  [ -n "$pkg" ] || die "cannot find the kernel package that linux-image-cloud-amd64 depends on"
  say "downloading $pkg"
  rm -rf "$out/kernel" "$out/debs"
  mkdir -p "$out/debs"
  # apt downloads as user _apt where it can (else it warns that it runs unsandboxed).
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$out/debs"; fi
  (cd "$out/debs" && apt-get download "$pkg" >/dev/null)
  dpkg -x "$out"/debs/"$pkg"_*.deb "$out/kernel.tmp"
  mv "$out/kernel.tmp" "$out/kernel"
fi
vmlinuz=$(ls "$out"/kernel/boot/vmlinuz-* | head -n 1)
ln -sf "${vmlinuz#"$out"/}" "$out/vmlinuz"
say "kernel $(basename "$vmlinuz")"

# --- bundles: paddock's and busybox's closures ------------------------------------------------
# Two stores: the host-side one only feeds the image's root tree; the VM store holds just what
# the image's apps may name (busybox), and is copied into the image as the default store.
recipe_dir="$out/recipes"
mkdir -p "$recipe_dir"
# The recipe names the binary by a path relative to itself; with PADDOCK_BIN the entry changes.
if [ -n "${PADDOCK_BIN:-}" ]; then
  printf 'entry = "%s"\n' "$(cd "$(dirname "$paddock")" && pwd)/$(basename "$paddock")" >"$recipe_dir/paddock.toml"
  paddock_recipe="$recipe_dir/paddock.toml"
else
  paddock_recipe="$here/paddock.toml"
fi
"$paddock" bundle build "$paddock_recipe" --store "$out/host-store" >"$out/bundle-build.log"
"$paddock" bundle build "$repo/bundles/busybox.toml" --store "$out/vm-store" >>"$out/bundle-build.log"
paddock_id=$(cat "$out/host-store/refs/paddock")
busybox_id=$(cat "$out/vm-store/refs/busybox")
say "bundles: paddock $paddock_id, busybox $busybox_id"

# --- the image's tree ------------------------------------------------------------------------
root="$out/initramfs"
rm -rf "$root"
mkdir -p "$root"
cp -a "$out/host-store/$paddock_id/root/." "$root/"
cp -a "$out/vm-store/$busybox_id/root/." "$root/"
# The paddock bundle holds the binary at its build path (e.g. /work/paddock/target/release/):
# drop that copy, and the directories that only held it; paddock goes to /usr/bin.
real_paddock=$(readlink -f "$paddock")
rm -f "$root$real_paddock"
rmdir -p --ignore-fail-on-non-empty "$root$(dirname "$real_paddock")" 2>/dev/null || true
chmod -R u+w "$root" # bundle files are read-only; the image's copies need not be
install -D -m 0755 "$paddock" "$root/usr/bin/paddock"
ln -s usr/bin/paddock "$root/init"
ln -s usr/bin "$root/bin"
ln -s usr/bin "$root/sbin"
for applet in sh cat echo sleep ls grep sed tr kill mount umount ps uname hostname stat dmesg sync poweroff; do
  ln -s busybox "$root/usr/bin/$applet"
done
mkdir -p "$root"/{proc,sys,dev,run,tmp,root,var/lib/paddock,etc/paddock/apps}
chmod 1777 "$root/tmp"
if [ "$(id -u)" = 0 ]; then
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp "$here"/apps/*.toml "$root/etc/paddock/apps/"
# The wasm app's module (a committed build of examples/wasm/hello).
cp "$repo/examples/wasm/hello.wasm" "$root/etc/paddock/apps/wasm-hello.wasm"
cp "$here/paddock-vm.toml" "$root/etc/paddock/paddock.toml"
# The bundle store, as built (objects are hard links: cpio stores their data once).
cp -a "$out/vm-store" "$root/var/lib/paddock/bundles"
rm -f "$root/var/lib/paddock/bundles/.lock"

# The apps must be valid for the paddock that will run them (the store path is the image's).
"$paddock" check "$root/etc/paddock/apps" --store "$out/vm-store" >/dev/null ||
  die "the apps in $here/apps are not valid (see above)"

# --- the initramfs ----------------------------------------------------------------------------
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
  gzip -1 >"$out/initrd.gz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
say "initramfs $out/initrd.gz ($(du -k "$out/initrd.gz" | cut -f1) KiB, $(find "$root" | wc -l) entries)"
echo "$out"
