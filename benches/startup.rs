//! Core supervisor figures on this host (run: `cargo bench --bench startup`):
//! - time until 1000 one-line apps all run under one `paddock serve`, beside the floor: the
//!   same 1000 processes spawned by one bare loop in the same round;
//! - paddock's own memory per supervised app (PSS with 1000 apps minus PSS with none), right
//!   after they are ready (the status board just read, see `control/board.rs`) and once idle
//!   (the board dropped after `WANTED_FOR` without a read), with paddock's total idle PSS;
//! - restart gap of a crash-looping app with `backoff_initial = "0s"`: the cycle time under
//!   paddock minus the bare fork+exec+wait cycle of the same program;
//! - `paddock status` for 1000 apps, whole CLI process.
//!
//! Figures are printed, never asserted. `--quick` uses fewer apps and shorter loops.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{BIN, Serve, pss_kib};

fn scratch(tag: &str) -> PathBuf {
    common::scratch(tag, &[])
}

/// The floor of a start of `n` apps on this host: `n` `/bin/sleep` processes spawned by one
/// loop (each `spawn` returns once the child has executed), in seconds; then killed.
fn bare_spawns(n: usize) -> f64 {
    let t = Instant::now();
    let mut kids = vec![];
    for _ in 0..n {
        let c = Command::new("/bin/sleep")
            .arg("100007")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match c {
            Ok(c) => kids.push(c),
            Err(_) => break,
        }
    }
    let took = t.elapsed().as_secs_f64();
    for mut c in kids {
        let _ = c.kill();
        let _ = c.wait();
    }
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 200 } else { 1000 };
    let rounds = if quick { 1 } else { 3 };
    println!("paddock core benchmark — {} apps, {} rounds", n, rounds);

    // Baseline memory: paddock with no apps, just after its start and once idle the way the
    // fleets below are measured (a status read, then nobody reads it for `WANTED_FOR`: the
    // board dropped, the heap trimmed, paddock's code out of its page tables).
    let d0 = scratch("empty");
    let s0 = Serve::start(&d0);
    std::thread::sleep(Duration::from_millis(200));
    let pss0 = pss_kib(s0.child.id());
    let _ = Command::new(BIN)
        .arg("status")
        .env("PADDOCK_SOCKET", d0.join("sock"))
        .stdout(Stdio::null())
        .status();
    std::thread::sleep(paddock::control::board::WANTED_FOR + Duration::from_millis(1500));
    let pss0_idle = pss_kib(s0.child.id());
    s0.stop(false);

    let mut times = vec![];
    let mut floor = vec![];
    let mut per_app = vec![];
    let mut status_ms = vec![];
    let (mut idle_per_app, mut idle_total) = (vec![], vec![]);
    for r in 0..rounds {
        let d = scratch(&format!("n{r}"));
        for i in 0..n {
            std::fs::write(
                d.join("apps").join(format!("app{i:04}.toml")),
                "command = [\"/bin/sleep\", \"100007\"]\n",
            )
            .unwrap();
        }
        floor.push(bare_spawns(n));
        let t = Instant::now();
        let s = Serve::start(&d);
        s.wait_running(n);
        times.push(t.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(300));
        let pss = pss_kib(s.child.id());
        per_app.push((pss.saturating_sub(pss0)) as f64 * 1024.0 / n as f64);
        for _ in 0..5 {
            let t = Instant::now();
            let out = Command::new(BIN)
                .arg("status")
                .env("PADDOCK_SOCKET", d.join("sock"))
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(out.success() || out.code() == Some(3));
            status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // Nobody reads: the board goes, and the heap is trimmed.
        std::thread::sleep(paddock::control::board::WANTED_FOR + Duration::from_millis(1500));
        let pss = pss_kib(s.child.id());
        idle_total.push(pss as f64 / 1024.0);
        idle_per_app.push((pss as f64 - pss0_idle as f64) * 1024.0 / n as f64);
        s.stop(false);
    }
    println!(
        "  {n} apps all READY after:  :         {:.3} s (median; from exec of paddock serve)",
        median(times.clone())
    );
    println!(
        "  the same {n} processes, one loop:   {:.3} s (median; the floor: spawn each, no pipes, no cgroup) => paddock {:.2}x",
        median(floor.clone()),
        median(times) / median(floor).max(1e-9)
    );
    println!(
        "  paddock memory per app (PSS):      {:.0} bytes just after ready, {:.0} bytes idle (paddock alone: {pss0} KiB, {pss0_idle} KiB idle)",
        median(per_app),
        median(idle_per_app)
    );
    println!(
        "  paddock total PSS, {n} apps, idle:  {:.1} MiB",
        median(idle_total)
    );
    println!(
        "  `paddock status`, {n} apps, CLI:   {:.1} ms (median)",
        median(status_ms)
    );

    // Restart gap.
    let secs = if quick { 1.0 } else { 3.0 };
    let true_bin = paddock::config::resolve_program("true", None, None).unwrap();
    let spec = paddock::config::parse_app(
        "t",
        Path::new("t.toml"),
        &format!("command = [\"{}\"]", true_bin.display()),
    )
    .unwrap();
    let prepared = paddock::driver::native::Prepared::new(
        &spec,
        &paddock::driver::native::BaseEnv::from_process(),
    )
    .unwrap();
    let io = paddock::driver::native::Stdio::default();
    let t = Instant::now();
    let mut cycles = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        let pid = paddock::driver::native::spawn(&prepared, &io).unwrap();
        let mut st = 0;
        // SAFETY: waitpid writes only to `st`; `pid` is the child spawn just started, reaped here.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        cycles += 1;
    }
    let bare_us = t.elapsed().as_secs_f64() * 1e6 / cycles as f64;

    let d = scratch("loop");
    std::fs::write(
        d.join("apps").join("loop.toml"),
        format!("command = [\"{}\"]\n[restart]\npolicy = \"always\"\nbackoff_initial = \"0s\"\nbackoff_max = \"0s\"\nmax_failures = 0\n", true_bin.display()),
    )
    .unwrap();
    let s = Serve::start(&d);
    std::thread::sleep(Duration::from_millis(200));
    let restarts = |s: &Serve| s.status().apps.first().map_or(0, |a| a.restarts);
    let r0 = restarts(&s);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let r1 = restarts(&s);
    let el = t.elapsed().as_secs_f64();
    s.stop(false);
    let cycle_us = el * 1e6 / (r1 - r0).max(1) as f64;
    println!(
        "  crash loop of /bin/true, 0s backoff: {:.0} restarts/s, cycle {:.0} us",
        (r1 - r0) as f64 / el,
        cycle_us
    );
    println!(
        "  bare fork+exec+wait of /bin/true:  cycle {:.0} us",
        bare_us
    );
    println!(
        "  => restart gap added by paddock:   {:.0} us",
        (cycle_us - bare_us).max(0.0)
    );
}
