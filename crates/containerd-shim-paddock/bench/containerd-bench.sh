#!/usr/bin/env bash
# Figures for docs/containerd.md (not a test): per-container start latency and memory through a
# private containerd, for the paddock shim (wasm, and sandbox under its second name
# containerd-shim-paddock-sandbox-v1) and containerd's default runtime
# (io.containerd.runc.v2 with runc, and with crun as its binary), in one run on one machine.
#
#   sudo crates/containerd-shim-paddock/bench/containerd-bench.sh [N_START] [N_MEM]
#
# Needs root, containerd + runc (Debian), crun (optional), the release shim
# (cargo build --release -p containerd-shim-paddock), and busybox-static (downloaded with
# `apt-get download`, never installed). Everything lives in a scratch directory removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../../.."
N_START=${1:-20}
N_MEM=${2:-10}
SHIM=$PWD/target/release/containerd-shim-paddock-v1
[ -x "$SHIM" ] || { echo "build the shim first: cargo build --release -p containerd-shim-paddock" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
W=$(mktemp -d /tmp/paddock-ctd-bench.XXXXXX)
CTD_PID=
# runc puts ctr's containers in cgroup /default: remove it afterwards unless it was there.
had_default=$(ls -d /sys/fs/cgroup/*/default /sys/fs/cgroup/default 2>/dev/null || true)
cleanup() {
  set +e
  for id in $(ctr -a "$W/c.sock" task ls -q 2>/dev/null); do ctr -a "$W/c.sock" task kill -s SIGKILL "$id"; done
  sleep 0.5
  for id in $(ctr -a "$W/c.sock" c ls -q 2>/dev/null); do ctr -a "$W/c.sock" task rm -f "$id" >/dev/null 2>&1; ctr -a "$W/c.sock" c rm "$id" >/dev/null 2>&1; done
  [ -n "$CTD_PID" ] && kill "$CTD_PID" && wait "$CTD_PID" 2>/dev/null
  for p in $(pgrep -f "containerd-shim.*-address $W/c.sock"); do kill -9 "$p"; done
  grep -o " $W[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$W"
  for d in /sys/fs/cgroup/*/default /sys/fs/cgroup/default; do
    [ -d "$d" ] && ! grep -qx "$d" <<<"$had_default" && rmdir "$d" 2>/dev/null
  done
  true
}
trap cleanup EXIT
mkdir -p "$W/bin" "$W/img"
ln -s "$SHIM" "$W/bin/containerd-shim-paddock-v1"
ln -s "$SHIM" "$W/bin/containerd-shim-paddock-sandbox-v1"
cat > "$W/config.toml" <<CFG
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/c.sock"
[ttrpc]
  address = "$W/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/opt"
CFG
PATH="$W/bin:$PATH" PADDOCK_SHIM_WASM_CACHE="$W/wasm-cache" containerd --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do ctr -a "$W/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
C="ctr -a $W/c.sock"

# image NAME DIR ENTRYPOINT: an OCI archive of DIR's files, imported.
image() {
  local name=$1 dir=$2 entry=$3 d; d=$(mktemp -d "$W/img/x.XXXX"); mkdir -p "$d/blobs/sha256"
  tar --owner=0 --group=0 -C "$dir" -cf "$d/layer.tar" .
  local ld ls; ld=$(sha256sum "$d/layer.tar" | cut -d' ' -f1); ls=$(stat -c %s "$d/layer.tar"); mv "$d/layer.tar" "$d/blobs/sha256/$ld"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$entry" "$ld" >"$d/c"
  local cd cs; cd=$(sha256sum "$d/c" | cut -d' ' -f1); cs=$(stat -c %s "$d/c"); mv "$d/c" "$d/blobs/sha256/$cd"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$cd" "$cs" "$ld" "$ls" >"$d/m"
  local md ms; md=$(sha256sum "$d/m" | cut -d' ' -f1); ms=$(stat -c %s "$d/m"); mv "$d/m" "$d/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s"},"platform":{"architecture":"amd64","os":"linux"}}]}' "$md" "$ms" "$name" >"$d/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  tar -C "$d" -cf "$d.tar" oci-layout index.json blobs
  $C image import "$d.tar" >/dev/null
}
mkdir -p "$W/wasm" "$W/bb/bin"
cp examples/wasm/hello.wasm examples/wasm/worker.wasm "$W/wasm/"
(cd "$W" && apt-get download busybox-static >/dev/null 2>&1 && dpkg -x busybox-static_*.deb bbx) || { echo "cannot download busybox-static" >&2; exit 1; }
cp "$W/bbx/bin/busybox" "$W/bb/bin/busybox"
image docker.io/bench/wasm:latest "$W/wasm" /hello.wasm
image docker.io/bench/busybox:latest "$W/bb" /bin/busybox

# stats LABEL < ms values: median and p90.
stats() { sort -n | awk -v l="$1" '{a[NR]=$1} END {printf "%-32s n=%d  median %.1f ms  p90 %.1f ms\n", l, NR, a[int((NR+1)/2)], a[int(NR*0.9+0.5)]}'; }

# start RUNTIME-ARGS… -- IMAGE ARGS…: N_START sequential `ctr run --rm`, wall time of each.
start_bench() {
  local label=$1; shift
  local pre=() post=()
  while [ "$1" != -- ]; do pre+=("$1"); shift; done; shift
  post=("$@")
  $C run --rm "${pre[@]}" "${post[0]}" warm "${post[@]:1}" >/dev/null 2>&1 || { echo "$label: does not run here: $($C run --rm "${pre[@]}" "${post[0]}" warm2 "${post[@]:1}" 2>&1 | tail -1)"; return; }
  for i in $(seq "$N_START"); do
    local t0 t1; t0=$(date +%s%N)
    $C run --rm "${pre[@]}" "${post[0]}" "s$i" "${post[@]:1}" >/dev/null 2>&1
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
  done | awk '{print $1/1000}' | stats "$label"
}

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# Sum of PSS of the shims of this containerd and all their descendants.
mem_sum() {
  local total=0 p
  for s in $(pgrep -f "containerd-shim.*-address $W/c.sock"); do
    for p in $s $(pgrep -P "$s") $(for c in $(pgrep -P "$s"); do pgrep -P "$c"; done); do
      total=$((total + $(pss_kib "$p")))
    done
  done
  echo $total
}
mem_bench() {
  local label=$1; shift
  local pre=() post=()
  while [ "$1" != -- ]; do pre+=("$1"); shift; done; shift
  post=("$@")
  for i in $(seq "$N_MEM"); do
    $C run -d "${pre[@]}" "${post[0]}" "m$i" "${post[@]:1}" >/dev/null 2>&1 || { echo "$label: does not run here"; return; }
  done
  sleep 2
  local kib; kib=$(mem_sum)
  printf "%-32s %d containers: %d KiB PSS in all (shims + containers), %.2f MiB each\n" "$label" "$N_MEM" "$kib" "$(echo "$kib / $N_MEM / 1024" | bc -l)"
  for i in $(seq "$N_MEM"); do $C task kill -s SIGKILL "m$i" >/dev/null 2>&1 || true; done
  sleep 1
  for i in $(seq "$N_MEM"); do $C task rm -f "m$i" >/dev/null 2>&1; $C c rm "m$i" >/dev/null 2>&1 || true; done
}

echo "== $(date -u +%F) $(uname -r), $(nproc) cores, containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}'), crun $(crun --version 2>/dev/null | head -1 | awk '{print $3}')"
echo "== start: ctr run --rm, sequential, wall time per container (exit included)"
start_bench "paddock (wasm hello)" --runtime io.containerd.paddock.v1 -- docker.io/bench/wasm:latest /hello.wasm
start_bench "paddock-sandbox (busybox true)" --runtime io.containerd.paddock-sandbox.v1 -- docker.io/bench/busybox:latest /bin/busybox true
start_bench "runc (busybox true)" -- docker.io/bench/busybox:latest /bin/busybox true
start_bench "crun (busybox true)" --runc-binary /usr/bin/crun -- docker.io/bench/busybox:latest /bin/busybox true
echo "== memory: $N_MEM running containers (ctr run -d), PSS of shims and their processes"
mem_bench "paddock (wasm worker)" --runtime io.containerd.paddock.v1 -- docker.io/bench/wasm:latest /worker.wasm --interval 1s
mem_bench "paddock-sandbox (busybox sleep)" --runtime io.containerd.paddock-sandbox.v1 -- docker.io/bench/busybox:latest /bin/busybox sleep 3600
mem_bench "runc (busybox sleep)" -- docker.io/bench/busybox:latest /bin/busybox sleep 3600
mem_bench "crun (busybox sleep)" --runc-binary /usr/bin/crun -- docker.io/bench/busybox:latest /bin/busybox sleep 3600
