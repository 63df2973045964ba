//! paddock-lab: the tooling around paddock that the product does not ship (neither
//! `cargo install --path .` nor the .deb installs it). It uses the `paddock` library.
//!
//! - `bench`: `paddock bench` (the program `paddock-bench`, which `paddock bench` executes):
//!   the isolation levels measured side by side;
//! - `bench_peers`: the same app under the other runners installed (bwrap, crun, wasmtime,
//!   systemd-run);
//! - `escape`: the escape matrix: `paddock-probe` (src/bin/paddock-probe.rs) run as an app at
//!   every level, its attempts parsed and judged.

pub mod bench;
pub mod bench_peers;
pub mod escape;
