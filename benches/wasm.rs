//! Level `wasm` figures on this host (run: `cargo bench --bench wasm`, `-- --quick` for less):
//! - instantiation latency with the pooling allocator, median and p99: what a (re)start of a
//!   wasm app costs once its module is loaded (store + WASI context + instantiation + drop);
//! - loading a module: compiling it (empty cache) vs loading the cached artifact;
//! - restart gap of a crash-looping wasm app with `backoff_initial = "0s"` under paddock, minus
//!   the bare instantiate-run-exit cycle of the same module through the driver;
//! - paddock's memory per idle wasm app (PSS with N running workers minus PSS with one).
//!
//! Figures are printed, never asserted.

use paddock::driver::wasm::{HostOptions, Stdio, WasmHost};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{Serve, pss_kib};

fn example(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(dir) = std::env::var("PADDOCK_WASM_EXAMPLES") {
        return root.join(dir).join(name);
    }
    let fresh = root.join("target/wasm-examples").join(name);
    if fresh.is_file() {
        fresh
    } else {
        root.join("examples/wasm").join(name)
    }
}

fn scratch(tag: &str) -> PathBuf {
    common::scratch(&format!("wasm-{tag}"), &[])
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn spec(dir: &Path, name: &str, module: &Path, extra: &str) -> paddock::config::AppSpec {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n{extra}",
            module.display()
        ),
    )
    .unwrap();
    paddock::config::load_file(&file).unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 2_000 } else { 20_000 };
    let n_apps: usize = if quick { 200 } else { 1000 };
    println!(
        "paddock wasm benchmark ({})",
        if quick { "quick" } else { "full" }
    );

    // 1. Instantiation latency, and module loading.
    let d = scratch("inst");
    let host = WasmHost::new(
        HostOptions {
            cache_dir: Some(d.join("cache")),
            slots: 64,
            workers: 1,
        },
        Arc::new(|_, _, _| {}),
    )
    .unwrap();
    for (label, module) in [
        ("hello.wasm (WASI p1 core module)", "hello.wasm"),
        ("hello-p2.wasm (WASI p2 component)", "hello-p2.wasm"),
    ] {
        let s = spec(&d, "app", &example(module), "");
        let t = Instant::now();
        let program = host.program(&s).unwrap();
        let compile = t.elapsed();
        // A second host with the same cache: the module comes from disk.
        let host2 = WasmHost::new(
            HostOptions {
                cache_dir: Some(d.join("cache")),
                slots: 4,
                workers: 1,
            },
            Arc::new(|_, _, _| {}),
        )
        .unwrap();
        let t = Instant::now();
        let _ = host2.program(&s).unwrap();
        let cached = t.elapsed();
        drop(host2);
        let _ = host.bench_instantiate(&program, 200); // warm the slots
        let mut v = host.bench_instantiate(&program, iters);
        let med = percentile(&mut v, 0.5);
        let p99 = percentile(&mut v, 0.99);
        println!("  {label}:");
        println!(
            "    instantiation (store + WASI ctx + instantiate + drop), pooling, {iters} runs: median {:.1} us, p99 {:.1} us",
            med.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        println!(
            "    module load: compile {:.1} ms, from the disk cache {:.2} ms",
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3
        );
    }

    // 2. Restart gap: a module whose _start returns at once, restarted with no backoff.
    let empty = d.join("empty.wasm");
    std::fs::write(
        &empty,
        wat::parse_str("(module (func (export \"_start\")))").unwrap(),
    )
    .unwrap();
    let s = spec(&d, "empty", &empty, "");
    let program = host.program(&s).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let host3 = WasmHost::new(
        HostOptions {
            cache_dir: Some(d.join("cache")),
            slots: 4,
            workers: 1,
        },
        Arc::new(move |_, _, e| {
            let _ = tx.send(e);
        }),
    )
    .unwrap();
    let secs = if quick { 1.0 } else { 3.0 };
    let t = Instant::now();
    let mut cycles = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        let _inst = host3.start(&program, 0, cycles, Stdio::default()).unwrap();
        let _ = rx.recv().unwrap();
        cycles += 1;
    }
    let bare_us = t.elapsed().as_secs_f64() * 1e6 / cycles as f64;
    drop(host3);
    drop(host);
    let _ = std::fs::remove_dir_all(&d);

    let d = scratch("loop");
    let empty = d.join("empty.wasm");
    std::fs::write(
        &empty,
        wat::parse_str("(module (func (export \"_start\")))").unwrap(),
    )
    .unwrap();
    std::fs::write(
        d.join("apps/loop.toml"),
        format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n[restart]\npolicy = \"always\"\nbackoff_initial = \"0s\"\nbackoff_max = \"0s\"\nmax_failures = 0\n",
            empty.display()
        ),
    )
    .unwrap();
    let srv = Serve::start(&d);
    std::thread::sleep(Duration::from_millis(200));
    let restarts = |s: &Serve| s.status().apps.first().map_or(0, |a| a.restarts);
    let r0 = restarts(&srv);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let r1 = restarts(&srv);
    let el = t.elapsed().as_secs_f64();
    srv.stop(false);
    let cycle_us = el * 1e6 / (r1 - r0).max(1) as f64;
    println!(
        "  crash loop of a wasm app, 0s backoff: {:.0} restarts/s, cycle {:.1} us",
        (r1 - r0) as f64 / el,
        cycle_us
    );
    println!(
        "  bare start-run-exit through the driver: cycle {bare_us:.1} us (a loop on another thread: two cross-thread wake-ups per cycle)"
    );
    println!(
        "  => restart gap added by paddock:     {:.1} us{}",
        (cycle_us - bare_us).max(0.0),
        if cycle_us < bare_us {
            " (paddock's whole cycle is shorter than the bare loop: within noise)"
        } else {
            ""
        }
    );

    // 3. Memory per idle wasm app, and time until N are running.
    let worker = example("worker.wasm");
    let app = format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\nargs = [\"--interval\", \"600s\"]\n",
        worker.display()
    );
    // Each paddock starts twice: the first start compiles the module into the cache (Cranelift
    // leaves memory behind), the measured second start loads it, as every later start does.
    let measure = |tag: &str, n: usize| -> (u64, Duration) {
        let d = scratch(tag);
        for i in 0..n {
            std::fs::write(d.join(format!("apps/w{i:04}.toml")), &app).unwrap();
        }
        let s = Serve::start(&d);
        s.wait_running(n);
        s.stop(true);
        let t = Instant::now();
        let s = Serve::start(&d);
        s.wait_running(n);
        let up = t.elapsed();
        std::thread::sleep(Duration::from_millis(1500));
        let pss = pss_kib(s.child.id());
        s.stop(false);
        (pss, up)
    };
    let (pss1, _) = measure("one", 1);
    let (pssn, up) = measure("many", n_apps);
    println!(
        "  {n_apps} idle wasm apps (worker.wasm) all READY after: {:.3} s (from exec of paddock serve, cached module)",
        up.as_secs_f64()
    );
    println!(
        "  paddock memory per idle wasm app (PSS): {:.1} KiB (paddock with one: {pss1} KiB, with {n_apps}: {pssn} KiB)",
        (pssn.saturating_sub(pss1)) as f64 / (n_apps - 1) as f64
    );
}
