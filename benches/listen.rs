//! Sockets paddock owns (`[[listen]]`), measured on this host (run: `cargo bench --bench
//! listen`):
//! - first-connection latency of an on-demand app (`start = "on-connection"`: the connection
//!   waits while paddock starts the app), side by side with `systemd-socket-activate` starting
//!   the same server, and the latency of a request to the server already running;
//! - connections refused or reset while an app is restarted 50 times under load (two clients,
//!   each retrying 1 ms after a failure): the app handed paddock's socket, side by side with
//!   the same kind of server binding its own port (Python's http.server, as a supervisord user
//!   would run it).
//!
//! The server is examples/listen/serve.py (Python: most of a cold start is Python's). Figures
//! are printed, never asserted. `--quick` runs fewer rounds.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::Serve;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn serve_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/listen/serve.py")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16) -> Result<(), String> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut b = Vec::new();
    c.read_to_end(&mut b).map_err(|e| e.to_string())?;
    if b.starts_with(b"HTTP/1.") && b.windows(4).any(|w| w == b" 200") {
        Ok(())
    } else {
        Err(format!("answer {:?}", String::from_utf8_lossy(&b)))
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn first_connection(rounds: usize) {
    let port = free_port();
    let app = format!(
        "command = [\"{}\", \"{}\"]\nstart = \"on-connection\"\nidle_stop = \"200ms\"\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n",
        python(),
        serve_py().display()
    );
    let s = Serve::start(&common::scratch("listen-od", &[("od", app)]));
    let mut cold = vec![];
    let mut warm = vec![];
    for _ in 0..rounds {
        s.wait("od", "STOPPED");
        let t = Instant::now();
        get(port).unwrap();
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        for _ in 0..5 {
            let t = Instant::now();
            get(port).unwrap();
            warm.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(s);
    let mut peer = vec![];
    if Path::new("/usr/bin/systemd-socket-activate").exists() {
        for _ in 0..rounds {
            let port = free_port();
            let mut c = Command::new("/usr/bin/systemd-socket-activate")
                .args(["-l", &format!("127.0.0.1:{port}"), python()])
                .arg(serve_py())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // It listens, then waits for the first connection to start the server.
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            get(port).unwrap();
            peer.push(t.elapsed().as_secs_f64() * 1000.0);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    println!(
        "  first connection, on-demand app (start + answer): p50 {:.1} ms, p99 {:.1} ms ({rounds} cold starts)",
        percentile(cold.clone(), 0.5),
        percentile(cold, 0.99)
    );
    if !peer.is_empty() {
        println!(
            "  first connection, systemd-socket-activate, same server: p50 {:.1} ms, p99 {:.1} ms",
            percentile(peer.clone(), 0.5),
            percentile(peer, 0.99)
        );
    }
    println!(
        "  a request to the running server: p50 {:.2} ms, p99 {:.2} ms",
        percentile(warm.clone(), 0.5),
        percentile(warm, 0.99)
    );
}

/// Requests answered and failed while `app` is restarted `n` times.
fn under_restarts(s: &Serve, app: &str, port: u16, n: usize) -> (u64, u64) {
    s.wait(app, "READY");
    while get(port).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(port) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            // A refused connect fails at once: count it, then try again
                            // 1 ms later rather than spin.
                            std::thread::sleep(Duration::from_millis(1));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for _ in 0..n {
        s.cli(&["restart", app]);
        // Until the new process answers (a port it binds itself may not be bound yet).
        let t = Instant::now();
        while get(port).is_err() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn restarts(n: usize) {
    let (p1, p2) = (free_port(), free_port());
    let handed = format!(
        "command = [\"{}\", \"{}\"]\n[[listen]]\naddress = \"127.0.0.1:{p1}\"\n",
        python(),
        serve_py().display()
    );
    let own = format!(
        "command = [\"{}\", \"-m\", \"http.server\", \"{p2}\", \"--bind\", \"127.0.0.1\"]\nworkdir = \"/tmp\"\nstop_signal = \"INT\"\n",
        python()
    );
    let s = Serve::start(&common::scratch(
        "listen-restarts",
        &[("handed", handed), ("own", own)],
    ));
    let (ok, failed) = under_restarts(&s, "handed", p1, n);
    println!(
        "  {n} restarts under load, [[listen]] socket:      {failed} of {} requests refused or reset",
        ok + failed
    );
    let (ok, failed) = under_restarts(&s, "own", p2, n);
    println!(
        "  {n} restarts under load, server binds its port: {failed} of {} requests refused or reset",
        ok + failed
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("paddock [[listen]] benchmark");
    first_connection(if quick { 5 } else { 30 });
    restarts(if quick { 10 } else { 50 });
}
