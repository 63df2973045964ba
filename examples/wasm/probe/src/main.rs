//! The escape probe for level `wasm` (the native one is src/bin/paddock-probe.rs): the same 14
//! attempts, as far as WASI lets a guest express them, with the same parameters (environment
//! variables `PROBE_*`) and the same output line per attempt:
//!
//! `paddock-probe attempt=NAME result=blocked|escaped|error|skipped detail="…"`
//!
//! Attempts that need a system call WASI does not have (signals, ptrace, mount, hostname,
//! setuid, modules, fork) are reported as blocked with that reason: the level has no way to
//! express them. Nothing here can abort the guest: memory is reserved with `try_reserve`.

use std::time::{Duration, Instant};

fn line(attempt: &str, result: &str, detail: &str) {
    let detail = detail.replace('\\', "\\\\").replace('"', "\\\"");
    println!("paddock-probe attempt={attempt} result={result} detail=\"{detail}\"");
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn no_such_call(attempt: &str, what: &str) {
    line(attempt, "blocked", &format!("WASI has no {what}: a wasm guest cannot ask for it"));
}

fn main() {
    // read-secret
    match env("PROBE_SECRET") {
        None => line("read-secret", "skipped", "PROBE_SECRET not set"),
        Some(p) => match std::fs::read(&p) {
            Ok(b) => line("read-secret", "escaped", &format!("read {} bytes of {p}", b.len())),
            Err(e) => line("read-secret", "blocked", &format!("{p}: {e}")),
        },
    }
    // write-outside
    match env("PROBE_OUTSIDE") {
        None => line("write-outside", "skipped", "PROBE_OUTSIDE not set"),
        Some(d) => {
            let f = format!("{d}/written-by-wasm-probe");
            match std::fs::write(&f, "x") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&f);
                    line("write-outside", "escaped", &format!("created {f}; deleted again"));
                }
                Err(e) => line("write-outside", "blocked", &format!("{f}: {e}")),
            }
        }
    }
    // list-processes
    match std::fs::read_dir("/proc") {
        Ok(d) => line(
            "list-processes",
            "escaped",
            &format!("/proc lists {} entries", d.count()),
        ),
        Err(e) => line("list-processes", "blocked", &format!("/proc: {e}")),
    }
    no_such_call("signal-host", "kill()");
    // connect-host
    match env("PROBE_CONNECT_PORT") {
        None => line("connect-host", "skipped", "PROBE_CONNECT_PORT not set"),
        Some(port) => {
            let addr = format!("127.0.0.1:{port}");
            match std::net::TcpStream::connect(&addr) {
                Ok(_) => line("connect-host", "escaped", &format!("connected to {addr}")),
                Err(e) => line("connect-host", "blocked", &format!("{addr}: {e}")),
            }
        }
    }
    // bind-port
    match env("PROBE_BIND_PORT") {
        None => line("bind-port", "skipped", "PROBE_BIND_PORT not set"),
        Some(port) => {
            let addr = format!("0.0.0.0:{port}");
            match std::net::TcpListener::bind(&addr) {
                Ok(_) => line("bind-port", "escaped", &format!("bound {addr}; closed")),
                Err(e) => line("bind-port", "blocked", &format!("{addr}: {e}")),
            }
        }
    }
    no_such_call("ptrace", "ptrace()");
    no_such_call("mount", "mount()");
    no_such_call("hostname", "sethostname()");
    no_such_call("setuid", "exec or setuid (a guest cannot run another program)");
    no_such_call("kernel-module", "init_module()");
    no_such_call("fork-bomb", "fork() or threads of its own");
    // memory-bomb: 256 MiB, touched, unless the store's limit refuses the growth.
    // black_box: without it the optimizer removes an allocation nobody reads.
    let mut v: Vec<u8> = std::hint::black_box(Vec::new());
    match v.try_reserve_exact(std::hint::black_box(256 << 20)) {
        Ok(()) => {
            v.resize(256 << 20, 1);
            let v = std::hint::black_box(v);
            let sum: u64 = v.iter().step_by(4096).map(|&b| b as u64).sum();
            line(
                "memory-bomb",
                "escaped",
                &format!("touched 256 MiB ({sum} pages); freed"),
            );
        }
        Err(e) => line("memory-bomb", "blocked", &format!("256 MiB refused: {e}")),
    }
    // cpu-hog: spin for 1 s of wall time; the share of it the guest actually ran is the sum of
    // the short gaps between clock readings (a long gap is time it was paused).
    let start = Instant::now();
    let (mut last, mut ran) = (start, Duration::ZERO);
    let mut x = 0u64;
    while last.duration_since(start) < Duration::from_secs(1) {
        for i in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        let now = Instant::now();
        let gap = now.duration_since(last);
        if gap < Duration::from_millis(2) {
            ran += gap;
        }
        last = now;
    }
    std::hint::black_box(x);
    let share = ran.as_secs_f64() / last.duration_since(start).as_secs_f64();
    line(
        "cpu-hog",
        if share > 0.5 { "escaped" } else { "blocked" },
        &format!("spun 1 s and ran {share:.2} of it (escape above 0.5)"),
    );
}
