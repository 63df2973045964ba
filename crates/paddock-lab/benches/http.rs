//! The same HTTP service, side by side in one run, under the same load generator (`wrk`):
//!
//! - **paddock wasm**: `examples/wasm/http-hello` served per request by paddock (`[http]`):
//!   a fresh instance for every request;
//! - **native none**: `paddock-bench-app --http` (a long-running std server, a thread per
//!   connection) supervised by paddock at level `none`;
//! - **native sandbox**: the same at level `sandbox` (root only; SKIPPED otherwise);
//! - **wasmtime serve**: the same component under `wasmtime serve` (48.x), when a `wasmtime`
//!   binary is on PATH (SKIPPED otherwise: it is not installed by this benchmark).
//!
//! For each: requests/s at concurrency 1 and 64 with p50/p99 latency (wrk `--latency`), the
//! first request after 2 s of idle (a new connection; median of 10), and paddock's resident
//! memory idle and after the load.
//!
//!   cargo build --release --workspace && cargo bench -p paddock-lab --bench http [-- --quick]
//!   (--quick: 2 s per load instead of 5 s)

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The paddock built beside this bench (`cargo build --release --workspace`).
const BIN: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/../release/paddock");
const NATIVE: &str = env!("CARGO_BIN_EXE_paddock-bench-app");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16) -> Option<Duration> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = vec![];
    s.read_to_end(&mut out).ok()?;
    out.starts_with(b"HTTP/1.1 200").then(|| t.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Row {
    name: String,
    cells: Vec<String>,
}

/// wrk at `conns` connections: (req/s, p50, p99) as wrk prints them.
fn wrk(port: u16, conns: u32, secs: u32) -> (String, String, String) {
    let threads = conns.clamp(1, 2);
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output();
    let Ok(out) = out else {
        return ("wrk failed".into(), "-".into(), "-".into());
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let find = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_else(|| "-".into())
    };
    let mut rps = find("Requests/sec:");
    if let Some(errs) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        rps.push_str(&format!(" ({})", errs.trim()));
    }
    (rps, find("50%"), find("99%"))
}

fn measure(name: &str, port: u16, pid: Option<u32>, secs: u32) -> Row {
    let idle_before = pid.map(rss_kib);
    let mut firsts: Vec<Duration> = (0..10)
        .filter_map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            get(port)
        })
        .collect();
    // The first request after 2 s of idle.
    std::thread::sleep(Duration::from_secs(2));
    if let Some(d) = get(port) {
        firsts.push(d);
    }
    firsts.sort();
    let first = firsts
        .get(firsts.len() / 2)
        .map_or("-".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6));
    let (r1, p50_1, p99_1) = wrk(port, 1, secs);
    let (r64, p50_64, p99_64) = wrk(port, 64, secs);
    let loaded = pid.map(rss_kib);
    std::thread::sleep(Duration::from_secs(1));
    let idle_after = pid.map(rss_kib);
    let mem = |v: Option<u64>| v.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    Row {
        name: name.into(),
        cells: vec![
            r1,
            format!("{p50_1} / {p99_1}"),
            r64,
            format!("{p50_64} / {p99_64}"),
            first,
            mem(idle_before),
            mem(loaded),
            mem(idle_after),
        ],
    }
}

struct Serve {
    child: Child,
    _dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// paddock serving `app` (an app file), with a bundle store when `store` is given.
fn paddock(tag: &str, app: &str, store: Option<&Path>) -> Serve {
    let dir = std::env::temp_dir().join(format!("paddock-bench-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    std::fs::write(dir.join("apps/web.toml"), app).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    if let Some(store) = store {
        cmd.arg("--store").arg(store);
    }
    let child = cmd
        .arg("--config")
        .arg(dir.join("apps"))
        .arg("--socket")
        .arg(dir.join("p.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("PADDOCK_CGROUP_NAME", format!("paddock-bench-http-{tag}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("paddock serve");
    Serve { child, _dir: dir }
}

fn wait_up(port: u16) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if get(port).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 2 } else { 5 };
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("SKIPPED bench http: wrk is not installed (Debian: apt-get install wrk)");
        return;
    }
    assert!(
        Path::new(BIN).is_file(),
        "{BIN} is missing: build it first with `cargo build --release --workspace`"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let component = root.join("examples/wasm/http-hello.wasm");
    let mut rows = vec![];
    let skip = |name: &str, why: &str| Row {
        name: name.into(),
        cells: vec![format!("SKIPPED: {why}")],
    };

    let port = free_port();
    let s = paddock(
        "wasm",
        &format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n[http]\nlisten = [\"127.0.0.1:{port}\"]\nmax_concurrent = 128\n[limits]\nmemory = \"32MiB\"\n",
            component.display()
        ),
        None,
    );
    rows.push(if wait_up(port) {
        measure("paddock, per-request wasm", port, Some(s.child.id()), secs)
    } else {
        skip("paddock, per-request wasm", "did not come up")
    });
    drop(s);

    // The sandboxed server runs from a bundle of the bench app (built into a scratch store),
    // on the host's network, allowed to bind its one port.
    let scratch = std::env::temp_dir().join(format!("paddock-bench-http-{}", std::process::id()));
    let store = scratch.join("store");
    for level in ["none", "sandbox"] {
        let name = format!("paddock, native at {level}");
        // SAFETY: geteuid takes no arguments and cannot fail.
        if level == "sandbox" && unsafe { libc::geteuid() } != 0 {
            rows.push(skip(&name, "needs root"));
            continue;
        }
        let port = free_port();
        let (app, store) = if level == "sandbox" {
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch).unwrap();
            let recipe = scratch.join("benchapp.toml");
            std::fs::write(&recipe, format!("entry = \"{NATIVE}\"\n")).unwrap();
            let o = Command::new(BIN)
                .args(["bundle", "build"])
                .arg(&recipe)
                .arg("--store")
                .arg(&store)
                .output()
                .expect("paddock bundle build");
            if !o.status.success() {
                rows.push(skip(
                    &name,
                    &format!(
                        "bundle build failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ));
                continue;
            }
            (
                format!(
                    "isolation = \"sandbox\"\nbundle = \"benchapp\"\ncommand = [\"paddock-bench-app\", \"--http\", \"127.0.0.1:{port}\"]\n[sandbox]\nnetwork = \"host\"\ntcp_bind = [{port}]\n"
                ),
                Some(store.as_path()),
            )
        } else {
            (
                format!("command = [\"{NATIVE}\", \"--http\", \"127.0.0.1:{port}\"]\n"),
                None,
            )
        };
        let s = paddock(level, &app, store);
        rows.push(if wait_up(port) {
            // The server's memory is its own process's, not paddock's: paddock's RSS is shown.
            measure(&name, port, Some(s.child.id()), secs)
        } else {
            skip(&name, "did not come up (see `paddock check`)")
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let wasmtime = Command::new("wasmtime").arg("--version").output();
    match wasmtime {
        Ok(v) if v.status.success() => {
            let port = free_port();
            let mut c = Command::new("wasmtime")
                .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
                .arg(&component)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("wasmtime serve");
            let name = format!(
                "wasmtime serve ({})",
                String::from_utf8_lossy(&v.stdout).trim()
            );
            rows.push(if wait_up(port) {
                measure(&name, port, Some(c.id()), secs)
            } else {
                skip(&name, "did not come up")
            });
            let _ = c.kill();
            let _ = c.wait();
        }
        _ => rows.push(skip(
            "wasmtime serve",
            "wasmtime is not installed (cargo install wasmtime-cli --version 48.0.8 --locked)",
        )),
    }

    println!(
        "| service | req/s c=1 | p50 / p99 c=1 | req/s c=64 | p50 / p99 c=64 | first request after idle (median) | RSS idle | RSS after load | RSS idle again |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} |", r.name, r.cells.join(" | "));
    }
    println!(
        "\nRSS is the serving process's (paddock's own for the paddock rows: a native app's memory is its own process's, not shown). wrk {secs} s per load."
    );
}
