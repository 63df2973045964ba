#!/bin/sh
# Makes the build context for Containerfile.local: a root filesystem made of this host's own
# files, so the image builds with no registry and no network (`FROM scratch`):
#
#   sh packaging/container/make-rootfs.sh CONTEXT target/release/paddock
#   podman build --format docker -f packaging/container/Containerfile.local -t paddock:local CONTEXT
#
# CONTEXT/rootfs/ gets paddock (stripped), BusyBox with a link per applet in /bin (the example
# apps' shell and web server), the shared libraries both need (as ldd lists them, with the
# loader), the example apps of packaging/container/apps/ and a page for the web app to serve.
# Tests/container.rs builds and runs the image this way; Containerfile (Debian images from a
# registry) is the same image for hosts that can pull.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 CONTEXT PADDOCK_BINARY" >&2; exit 2; }
ctx=$1
bin=$2
here=$(cd "$(dirname "$0")" && pwd)
busybox=$(command -v busybox) || { echo "$0: busybox not found (apt-get install busybox)" >&2; exit 1; }
[ -x "$bin" ] || { echo "$0: $bin is not an executable (cargo build --release)" >&2; exit 1; }

root=$ctx/rootfs
rm -rf "$root"
mkdir -p "$root/usr/bin" "$root/bin" "$root/tmp" "$root/run" "$root/var/lib/paddock" \
  "$root/etc/paddock/apps" "$root/srv/www"
chmod 1777 "$root/tmp"
strip -o "$root/usr/bin/paddock" "$bin" 2>/dev/null || cp "$bin" "$root/usr/bin/paddock"
cp "$busybox" "$root/usr/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s /usr/bin/busybox "$root/bin/$applet"
done
# Every library either program loads, at the path the loader looks for it.
for lib in $(ldd "$bin" "$busybox" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$here"/apps/*.toml "$root/etc/paddock/apps/"
echo 'hello from a paddock container' > "$root/srv/www/index.html"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
