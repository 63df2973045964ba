#!/usr/bin/env bash
# Builds the example wasm apps from their Rust sources.
#
#   examples/wasm/build.sh [OUT_DIR]
#
# OUT_DIR defaults to examples/wasm itself (the committed .wasm files the quick start uses);
# CI builds into target/wasm-examples and points the tests there (PADDOCK_WASM_EXAMPLES).
# Needs the wasm32-wasip1 and wasm32-wasip2 targets (`rustup target add ...`, done here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../../target/wasm-examples/build}"
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1
build() { # crate target output-name
  cargo build --quiet --release --locked --manifest-path "$here/$1/Cargo.toml" --target "$2"
  cp "$CARGO_TARGET_DIR/$2/release/$1.wasm" "$out/$3"
  echo "built $out/$3 ($(wc -c <"$out/$3") bytes)"
}
build hello wasm32-wasip1 hello.wasm
build hello wasm32-wasip2 hello-p2.wasm
build worker wasm32-wasip1 worker.wasm
build crasher wasm32-wasip1 crasher.wasm
# Preopens used carelessly (descriptor exhaustion, symbolic links): tests/wasm.rs.
build files wasm32-wasip2 files.wasm
build http wasm32-wasip2 http.wasm
# A wasi:http/incoming-handler component (a library crate), served per request: examples/http.
cargo build --quiet --release --locked --manifest-path "$here/http-hello/Cargo.toml" --target wasm32-wasip2
cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/http_hello.wasm" "$out/http-hello.wasm"
echo "built $out/http-hello.wasm ($(wc -c <"$out/http-hello.wasm") bytes)"
# The escape matrix's wasm probe (crates/paddock-lab/src/escape.rs; the native probe is
# crates/paddock-lab/src/bin/paddock-probe.rs).
build probe wasm32-wasip2 probe.wasm
# paddock bench's app (crates/paddock-lab/bench-app), whose native build is paddock-lab's binary
# paddock-bench-app.
cargo build --quiet --release --locked --manifest-path "$here/../../crates/paddock-lab/bench-app/Cargo.toml" --target wasm32-wasip1
cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/bench-app.wasm" "$out/bench-app.wasm"
echo "built $out/bench-app.wasm ($(wc -c <"$out/bench-app.wasm") bytes)"
