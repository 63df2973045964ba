//! A long-running worker that logs: prints `tick N` every interval, forever (or `--ticks N`).
//!
//! Options: `--interval 1s` (or `500ms`), `--ticks N` (exit 0 after N ticks), `--alloc-mib N`
//! (allocate and touch N MiB at start, to see `[limits] memory` at work), `--state DIR` (write
//! the tick count to DIR/ticks each tick: needs a preopened, writable DIR).

use std::time::Duration;

fn duration(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?.parse::<f64>().ok().map(Duration::from_secs_f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let interval = opt("--interval")
        .map(|s| duration(&s).unwrap_or_else(|| {
            eprintln!("worker: bad --interval {s:?}");
            std::process::exit(2)
        }))
        .unwrap_or(Duration::from_secs(1));
    let ticks: Option<u64> = opt("--ticks").and_then(|s| s.parse().ok());
    let state = opt("--state");
    let mut ballast = Vec::new();
    if let Some(mib) = opt("--alloc-mib").and_then(|s| s.parse::<usize>().ok()) {
        ballast = vec![1u8; mib << 20];
        println!("worker: holding {} MiB", ballast.len() >> 20);
    }
    println!("worker: started, a tick every {interval:?}");
    let mut n = 0u64;
    loop {
        n += 1;
        println!("tick {n}");
        if let Some(dir) = &state {
            if let Err(e) = std::fs::write(format!("{dir}/ticks"), format!("{n}\n")) {
                eprintln!("worker: cannot write {dir}/ticks: {e}");
            }
        }
        if ticks.is_some_and(|t| n >= t) {
            println!("worker: done after {n} ticks");
            std::hint::black_box(&ballast);
            return;
        }
        std::thread::sleep(interval);
    }
}
