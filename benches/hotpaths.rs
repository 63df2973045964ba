//! Hot paths of paddock, micro-benchmarked (run: `cargo bench --bench hotpaths`; `-- --quick`
//! for CI): each is warmed up, then timed over many iterations, and printed as median and p99
//! per operation.
//! - state-machine step: one event through `supervise::Machine::handle` (a crash-loop cycle:
//!   spawned, exited, backoff timer, spawn), per event;
//! - log line handling: one line from an in-process sink (a wasm guest's stdout) through the log
//!   writer to its file (timestamp, write), per line, measured over batches with a flush;
//! - API status with 1000 apps: `GET /v1/apps` on the control socket of a `paddock serve` with
//!   1000 apps (not started: the same status path without 1000 processes), per request.
//!
//! The other hot paths of issue 8 are measured by their own benches: native spawn at each level
//! (spawn to exec) by `benches/sandbox.rs`, wasm instantiation by `benches/wasm.rs`.
//! Figures are printed, never asserted. No criterion: it did not fit this project's build
//! budget; the method is the same (warm-up, many samples, order statistics).

use paddock::config::RestartSpec;
use paddock::control::client::Client;
use paddock::supervise::{Action, Event, Exit, Machine, Policy, TimerKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

/// (median, p99) of per-operation times in nanoseconds.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (
        v[v.len() / 2],
        v[((v.len() - 1) as f64 * 0.99).round() as usize],
    )
}

fn show(what: &str, ns: (f64, f64), samples: usize) {
    let f = |x: f64| {
        if x >= 1e6 {
            format!("{:.2} ms", x / 1e6)
        } else if x >= 1e3 {
            format!("{:.2} µs", x / 1e3)
        } else {
            format!("{x:.0} ns")
        }
    };
    println!(
        "  {what:<46} median {:>10}   p99 {:>10}   ({samples} samples)",
        f(ns.0),
        f(ns.1)
    );
}

fn machine_step(quick: bool) {
    let policy = Policy::simple(
        RestartSpec {
            backoff_initial: Duration::ZERO,
            backoff_max: Duration::ZERO,
            max_failures: 0,
            ..RestartSpec::default()
        },
        libc::SIGTERM,
        Duration::from_secs(1),
    );
    let mut m = Machine::new(policy, 1);
    let mut out: Vec<Action> = Vec::with_capacity(8);
    let mut now = Duration::ZERO;
    m.handle(Event::Start, now, &mut out);
    let cycle = [
        Event::Spawned,
        Event::Exited(Exit::Code(1)),
        Event::Timer(TimerKind::Backoff),
    ];
    let (warm, n) = if quick {
        (10_000, 50_000)
    } else {
        (100_000, 1_000_000)
    };
    // Per event, timed in groups of 3 (one cycle) to stay above the clock's resolution.
    let mut samples = Vec::with_capacity(n / 3);
    for i in 0..warm + n / 3 {
        let t = Instant::now();
        for ev in &cycle {
            now += Duration::from_micros(1);
            out.clear();
            m.handle(ev.clone(), now, &mut out);
        }
        let e = t.elapsed().as_nanos() as f64 / 3.0;
        if i >= warm {
            samples.push(e);
        }
    }
    assert!(m.alive(), "the crash loop should still be running");
    let len = samples.len();
    show("state-machine step (per event)", stats(samples), len);
}

fn log_lines(quick: bool) {
    let dir = scratch("logs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let logs = paddock::logs::Logs::start(dir.join("logs")).unwrap();
    let app: std::sync::Arc<str> = "bench".into();
    logs.send(paddock::logs::Ctl::Configure {
        app: app.clone(),
        spec: paddock::config::LogSpec::default(),
    });
    let sink = logs.sink(app, paddock::logs::Stream::Out);
    let line = b"GET /index.html 200 512 bytes in 0.3 ms from 127.0.0.1\n".to_vec();
    let (batches, per) = if quick { (40, 500) } else { (400, 1000) };
    let mut samples = vec![];
    rt.block_on(async {
        for b in 0..batches + batches / 10 {
            let t = Instant::now();
            for _ in 0..per {
                sink.write(line.clone()).await;
            }
            logs.flush().await;
            if b >= batches / 10 {
                samples.push(t.elapsed().as_nanos() as f64 / per as f64);
            }
        }
    });
    let len = samples.len() * per;
    show("log line, sink to file (per line)", stats(samples), len);
    let _ = std::fs::remove_dir_all(&dir);
}

fn api_status(quick: bool) {
    let dir = scratch("status");
    for i in 0..1000 {
        std::fs::write(
            dir.join("apps").join(format!("a{i:04}.toml")),
            "command = [\"/bin/sleep\", \"1000\"]\nautostart = false\n",
        )
        .unwrap();
    }
    let sock = dir.join("paddock.sock");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("apps"))
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(&sock);
    let t = Instant::now();
    while client.request("GET", "/v1/version", None).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "paddock serve did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (warm, n) = if quick { (10, 100) } else { (50, 1000) };
    let mut samples = vec![];
    for i in 0..warm + n {
        let t = Instant::now();
        let r = client.request("GET", "/v1/apps", None).unwrap();
        let e = t.elapsed().as_nanos() as f64;
        assert_eq!(r.status, 200);
        if i == 0 {
            assert_eq!(r.body.matches("\"name\"").count(), 1000);
        }
        if i >= warm {
            samples.push(e);
        }
    }
    show(
        "API GET /v1/apps, 1000 apps (per request)",
        stats(samples),
        n,
    );
    // SAFETY: kill(2) takes no pointers; the pid is of the child this bench started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("paddock-bench-hot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("apps")).unwrap();
    d
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "paddock hot paths{} (spawn per level: benches/sandbox.rs; wasm instantiation: benches/wasm.rs)",
        if quick { ", quick" } else { "" }
    );
    machine_step(quick);
    log_lines(quick);
    api_status(quick);
}
