//! The app `paddock bench` runs at every level: one Rust source, built natively (the binary
//! `paddock-bench-app` of paddock's crate) and to WebAssembly (`bench-app.wasm`, by
//! examples/wasm/build.sh).
//!
//! - `bench-app`: prints `bench-app ready`, answers each line of stdin with `ok LINE`, and once
//!   stdin is closed (paddock gives apps /dev/null; wasm guests get no stdin) stays up, idle.
//! - `bench-app --exit`: exits at once with status 0 (to measure restarts).

use std::io::BufRead;

fn main() {
    if std::env::args().any(|a| a == "--exit") {
        return;
    }
    println!("bench-app ready");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        println!("ok {line}");
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
