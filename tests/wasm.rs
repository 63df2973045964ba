//! Level `wasm` against a real `paddock serve` and real modules: the example apps (fresh builds
//! when CI made them, else the committed ones), limits, traps, stop, the compiled-module cache,
//! precise errors for bad modules, density.

mod common;

use common::*;
use paddock::driver::wasm::{HostOptions, Stdio, WasmHost};
use paddock::supervise::Exit;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An example module (see `common::wasm_example`).
fn example(name: &str) -> PathBuf {
    common::wasm_example(Path::new(env!("CARGO_MANIFEST_DIR")), name)
}

/// An app file for `module` with extra TOML lines.
fn app(module: &str, extra: &str) -> String {
    format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\n{extra}",
        example(module).display()
    )
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn log(p: &Paddock, file: &str) -> String {
    std::fs::read_to_string(p.logs_dir().join(file)).unwrap_or_default()
}

fn wait_log(p: &Paddock, file: &str, needle: &str, within: Duration) -> String {
    let mut last = String::new();
    let ok = try_wait(within, || {
        last = log(p, file);
        last.contains(needle)
    });
    assert!(ok, "{file} never contained {needle:?}; it has:\n{last}");
    last
}

fn exit_desc(a: &paddock::control::api::AppStatus) -> String {
    a.last_exit
        .as_ref()
        .map(|e| e.description.clone())
        .unwrap_or_default()
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf takes an integer name only.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn examples_run_supervised() {
    let port = free_port();
    let data = Scratch::new("wasm-data");
    let state = Scratch::new("wasm-state");
    std::fs::write(data.path().join("greeting.txt"), "hi\n").unwrap();
    let p = Paddock::with_apps(
        "wasm-examples",
        &[
            (
                "hello",
                &app(
                    "hello.wasm",
                    "args = [\"one\", \"two\"]\nenv = { GREETING = \"hi\" }\n",
                ),
            ),
            (
                "hello-p2",
                &app(
                    "hello-p2.wasm",
                    &format!(
                        "env = {{ GREETING = \"p2\" }}\n[wasm]\npreopens = {{ \"/\" = \"{}\" }}\n",
                        data.path().display()
                    ),
                ),
            ),
            (
                "worker",
                &app(
                    "worker.wasm",
                    &format!(
                        "args = [\"--interval\", \"100ms\", \"--state\", \"/state\"]\n[wasm]\npreopens = {{ \"/state\" = \"{}:rw\" }}\n[limits]\nmemory = \"16MiB\"\n",
                        state.path().display()
                    ),
                ),
            ),
            (
                "worker-ro",
                &app(
                    "worker.wasm",
                    &format!(
                        "args = [\"--interval\", \"1s\", \"--state\", \"/state\"]\n[wasm]\npreopens = {{ \"/state\" = \"{}\" }}\n",
                        state.path().display()
                    ),
                ),
            ),
            (
                "http",
                &app(
                    "http.wasm",
                    &format!(
                        "env = {{ ADDR = \"127.0.0.1:{port}\" }}\n[sandbox]\nnetwork = \"host\"\ntcp_bind = [\"127.0.0.1:{port}\"]\n"
                    ),
                ),
            ),
        ],
    )
    .start();

    // hello (core module): args and only the environment the file gives; no filesystem.
    let a = p.wait_state("hello", "EXITED", Duration::from_secs(20));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(0));
    assert_eq!(a.isolation, "wasm");
    assert_eq!(a.pid, None);
    let out = wait_log(&p, "hello.out", "no filesystem", Duration::from_secs(10));
    assert!(
        out.contains("hello from wasm! args: [\"one\", \"two\"]"),
        "{out}"
    );
    assert!(
        out.contains("1 environment variables: [(\"GREETING\", \"hi\")]"),
        "{out}"
    );
    assert!(out.contains("no filesystem"), "{out}");
    wait_log(&p, "hello.err", "hello on stderr", Duration::from_secs(10));

    // hello-p2 (component): the same through WASI 0.2, with a read-only preopen.
    let a = p.wait_state("hello-p2", "EXITED", Duration::from_secs(20));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(0));
    let out = wait_log(&p, "hello-p2.out", "entries", Duration::from_secs(10));
    assert!(out.contains("(\"GREETING\", \"p2\")"), "{out}");
    assert!(out.contains("/ has 1 entries"), "{out}");

    // worker: runs, logs, writes through its rw preopen; memory shows in status and metrics.
    let a = p.wait_state("worker", "READY", Duration::from_secs(20));
    assert!(a.uptime_secs.is_some());
    wait_log(&p, "worker.out", "tick 3", Duration::from_secs(20));
    let mem = p
        .app("worker")
        .memory_bytes
        .expect("memory_bytes of a running wasm app");
    assert!(mem > 0 && mem <= 16 << 20, "{mem}");
    wait_for(Duration::from_secs(10), "the worker's state file", || {
        std::fs::read_to_string(state.path().join("ticks"))
            .is_ok_and(|s| s.trim().parse::<u64>().is_ok_and(|n| n >= 1))
    });
    let metrics = p.client.request("GET", "/metrics", None).unwrap().body;
    assert!(
        metrics.contains("paddock_app_memory_bytes{app=\"worker\"}"),
        "{metrics}"
    );
    // A read-only preopen refuses writes.
    wait_log(
        &p,
        "worker-ro.err",
        "cannot write /state/ticks",
        Duration::from_secs(20),
    );

    // http: answers on the port its allow list grants.
    p.wait_state("http", "READY", Duration::from_secs(20));
    let mut resp = None;
    wait_for(
        Duration::from_secs(20),
        "the http example to answer",
        || {
            resp = http_get(port, "/");
            resp.is_some()
        },
    );
    let resp = resp.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.contains("hello from wasm (request 1)"), "{resp}");
    let health = http_get(port, "/health").unwrap_or_default();
    assert!(health.ends_with("ok\n"), "{health}");
    wait_log(&p, "http.out", "GET /health", Duration::from_secs(10));

    // The CLI: status, signal (refused: no process), stop (interrupt), start, tail.
    let o = p.cli(&["status", "worker"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("worker") && table.contains("READY"),
        "{table}"
    );
    let o = p.cli(&["signal", "HUP", "worker"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no process to signal"),
        "{o:?}"
    );
    let o = p.cli(&["stop", "worker"]);
    assert!(o.status.success(), "{o:?}");
    let a = p.app("worker");
    assert_eq!(a.state, "STOPPED");
    assert_eq!(exit_desc(&a), "interrupted by paddock");
    assert_eq!(a.memory_bytes, None);
    let o = p.cli(&["start", "worker"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("worker: started (wasm instance)"),
        "{o:?}"
    );
    let o = p.cli(&["tail", "-n", "1", "worker"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("tick"), "{o:?}");
    assert!(p.shutdown().success());
}

#[test]
fn crasher_restarts_with_backoff_then_fatal() {
    let p = Paddock::with_apps(
        "wasm-crasher",
        &[(
            "crasher",
            &app(
                "crasher.wasm",
                "args = [\"exit\", \"3\"]\n[restart]\nbackoff_initial = \"50ms\"\nmax_failures = 4\n",
            ),
        )],
    )
    .start();
    let a = p.wait_state("crasher", "FATAL", Duration::from_secs(30));
    assert_eq!(a.restarts, 3);
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(3));
    assert_eq!(
        a.message,
        "gave up after 4 failed starts; last: exit status 3"
    );
    // Each start logged its line (the log writer may lag the exit a little).
    let lines = |p: &Paddock| {
        log(p, "crasher.out")
            .matches("crasher: exiting with status 3")
            .count()
    };
    wait_for(Duration::from_secs(10), "4 lines in crasher.out", || {
        lines(&p) == 4
    });
    // A start from FATAL tries again (with a fresh count of failures).
    let o = p.cli(&["start", "crasher"]);
    assert!(o.status.success(), "{o:?}");
    wait_for(Duration::from_secs(30), "8 lines in crasher.out", || {
        lines(&p) == 8
    });
    p.wait_state("crasher", "FATAL", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&p), 8, "{}", log(&p, "crasher.out"));
    assert!(p.shutdown().success());
}

#[test]
fn traps_are_logged_with_message_and_backtrace() {
    let never = "[restart]\npolicy = \"never\"\n";
    let p = Paddock::with_apps(
        "wasm-traps",
        &[
            (
                "panic",
                &app("crasher.wasm", &format!("args = [\"panic\"]\n{never}")),
            ),
            (
                "trap",
                &app("crasher.wasm", &format!("args = [\"trap\"]\n{never}")),
            ),
            (
                "again",
                &app(
                    "crasher.wasm",
                    "args = [\"trap\"]\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 3\n",
                ),
            ),
        ],
    )
    .start();
    for name in ["panic", "trap"] {
        let a = p.wait_state(name, "EXITED", Duration::from_secs(20));
        let d = exit_desc(&a);
        // A panic's message is in the exit, before the trap it ended in.
        if name == "panic" {
            assert!(
                d.starts_with("trap: panicked at src/main.rs:")
                    && d.ends_with(
                        ": crasher: deliberate panic (wasm `unreachable` instruction executed)"
                    ),
                "{d}"
            );
        } else {
            assert_eq!(d, "trap: wasm `unreachable` instruction executed", "{a:?}");
        }
        let err = wait_log(
            &p,
            &format!("{name}.err"),
            "crasher::main",
            Duration::from_secs(10),
        );
        assert!(err.contains("wasm backtrace"), "{err}");
        // The summary is the last line, where `tail` (10 lines) shows it.
        let out = p.cli(&["tail", name, "--stderr"]);
        let tail = String::from_utf8_lossy(&out.stdout);
        let last = tail.lines().last().unwrap_or_default();
        assert!(
            last.ends_with(&format!("paddock: wasm trap: {}", &d["trap: ".len()..])),
            "{tail}"
        );
    }
    assert!(log(&p, "panic.err").contains("crasher: deliberate panic"));
    // A trap is a failure like any other: restarted with backoff, then FATAL.
    let a = p.wait_state("again", "FATAL", Duration::from_secs(20));
    assert_eq!(a.restarts, 2);
    let metrics = p.client.request("GET", "/metrics", None).unwrap().body;
    assert!(
        metrics.contains("paddock_app_last_exit_code{app=\"trap\"} -2"),
        "{metrics}"
    );
    assert!(p.shutdown().success());
}

#[test]
fn memory_limit_holds() {
    let never = "[restart]\npolicy = \"never\"\n";
    let p = Paddock::with_apps(
        "wasm-memory",
        &[
            (
                "grow",
                &app(
                    "crasher.wasm",
                    &format!("args = [\"grow\"]\n[limits]\nmemory = \"32MiB\"\n{never}"),
                ),
            ),
            (
                "fits",
                &app(
                    "worker.wasm",
                    "args = [\"--alloc-mib\", \"8\", \"--interval\", \"1s\"]\n[limits]\nmemory = \"16MiB\"\n",
                ),
            ),
            (
                "too-big",
                &app(
                    "worker.wasm",
                    &format!("args = [\"--alloc-mib\", \"64\"]\n[limits]\nmemory = \"16MiB\"\n{never}"),
                ),
            ),
        ],
    )
    .start();
    // Growing past the limit fails; Rust's allocator aborts; the trap names the limit.
    let a = p.wait_state("grow", "EXITED", Duration::from_secs(30));
    let d = exit_desc(&a);
    assert!(
        d.starts_with("trap: wasm `unreachable` instruction executed (after memory growth to ")
            && d.ends_with("was refused: [limits] memory = 32MiB)"),
        "{d}"
    );
    let err = wait_log(&p, "grow.err", "paddock: note:", Duration::from_secs(10));
    assert!(
        err.contains("memory allocation of 1048576 bytes failed"),
        "{err}"
    );
    let out = wait_log(&p, "grow.out", "holding 24 MiB", Duration::from_secs(10));
    assert!(
        out.contains("holding 24 MiB") && !out.contains("holding 32 MiB"),
        "{out}"
    );

    // Within the limit: runs, and its memory shows.
    p.wait_state("fits", "READY", Duration::from_secs(20));
    wait_log(&p, "fits.out", "holding 8 MiB", Duration::from_secs(10));
    let m = p.app("fits").memory_bytes.unwrap();
    assert!((8 << 20..=16 << 20).contains(&m), "{m}");

    let a = p.wait_state("too-big", "EXITED", Duration::from_secs(20));
    assert!(exit_desc(&a).contains("[limits] memory = 16MiB"), "{a:?}");
    assert!(p.shutdown().success());
}

#[test]
fn cpu_limit_holds() {
    let p = Paddock::with_apps(
        "wasm-cpu",
        &[(
            "spin",
            &app("crasher.wasm", "args = [\"spin\"]\n[limits]\ncpu = 0.25\n"),
        )],
    )
    .start();
    p.wait_state("spin", "READY", Duration::from_secs(20));
    wait_log(&p, "spin.out", "spinning", Duration::from_secs(10));
    let pid = p.pid();
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (used, wall) = (cpu_secs(pid) - c0, t0.elapsed().as_secs_f64());
    // A quarter of a core (the bucket lets a burst of 50 ms × 0.25 through, plus paddock's
    // own few milliseconds). Unthrottled, it would use a whole core.
    assert!(
        used <= 0.25 * wall + 0.2,
        "a spinning module with cpu = 0.25 used {used:.2}s of CPU in {wall:.2}s"
    );
    assert!(used > 0.05, "the spinner did not run at all: {used:.2}s");
    assert!(p.shutdown().success());
}

#[test]
fn spinning_and_growing_modules_do_not_starve_others() {
    let mut apps: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                format!("spin{i}"),
                app("crasher.wasm", "args = [\"spin\"]\n"),
            )
        })
        .collect();
    apps.push((
        "grow".into(),
        app(
            "crasher.wasm",
            "args = [\"grow\"]\n[limits]\nmemory = \"64MiB\"\n[restart]\npolicy = \"always\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"100ms\"\nmax_failures = 0\n",
        ),
    ));
    apps.push((
        "worker".into(),
        app("worker.wasm", "args = [\"--interval\", \"100ms\"]\n"),
    ));
    apps.push((
        "native".into(),
        "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\n[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"100ms\"\nmax_failures = 0\n".into(),
    ));
    let refs: Vec<(&str, &str)> = apps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = Paddock::with_apps("wasm-starve", &refs).start();
    for i in 0..3 {
        p.wait_state(&format!("spin{i}"), "READY", Duration::from_secs(20));
    }
    wait_log(&p, "worker.out", "tick 1", Duration::from_secs(20));
    let restarts0 = p.app("native").restarts;
    let ticks = |s: &str| s.matches("tick ").count();
    let ticks0 = ticks(&log(&p, "worker.out"));
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let st = p.status();
        slowest = slowest.max(t.elapsed());
        assert_eq!(st.len(), 6);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Bounds, not timings: with three modules spinning on two worker threads, the supervisor
    // still answers, restarts a native app every ~100 ms, and a sleeping wasm app still wakes.
    assert!(
        slowest < Duration::from_secs(2),
        "a status request took {slowest:?}"
    );
    let restarts = p.app("native").restarts - restarts0;
    assert!(
        restarts >= 5,
        "the native app restarted only {restarts} times in 3 s"
    );
    let new_ticks = ticks(&log(&p, "worker.out")) - ticks0;
    assert!(
        new_ticks >= 10,
        "the worker ticked only {new_ticks} times in 3 s"
    );
    assert!(p.app("grow").restarts >= 3, "{:?}", p.app("grow"));
    assert!(
        rss_kib(p.pid()) < 512 << 10,
        "paddock RSS {} KiB",
        rss_kib(p.pid())
    );
    let t = Instant::now();
    assert!(p.shutdown().success());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn stop_interrupts_a_spinning_module() {
    let p = Paddock::with_apps(
        "wasm-stop",
        &[(
            "spin",
            &app(
                "crasher.wasm",
                "args = [\"spin\"]\nstop_timeout = \"60s\"\n",
            ),
        )],
    )
    .start();
    p.wait_state("spin", "READY", Duration::from_secs(20));
    wait_log(&p, "spin.out", "spinning", Duration::from_secs(10));
    let t = Instant::now();
    let o = p.cli(&["stop", "spin"]);
    // Far less than stop_timeout: the instance was interrupted, not waited for.
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(o.status.success(), "{o:?}");
    let a = p.app("spin");
    assert_eq!(
        (a.state.as_str(), exit_desc(&a).as_str()),
        ("STOPPED", "interrupted by paddock")
    );
    let o = p.cli(&["restart", "spin"]);
    assert!(o.status.success(), "{o:?}");
    p.wait_state("spin", "READY", Duration::from_secs(5));
    let t = Instant::now();
    assert!(p.shutdown().success());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// Starts paddock, waits for `app` to run, shuts it down; returns paddock's stderr.
fn run_once(p: Paddock, app: &str) -> (Paddock, String) {
    let mut p = p.start();
    p.wait_state(app, "READY", Duration::from_secs(30));
    let mut err = p.child.as_mut().unwrap().stderr.take().unwrap();
    let mut child = p.child.take().unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(30)).success());
    let mut s = String::new();
    err.read_to_string(&mut s).unwrap();
    (p, s)
}

#[test]
fn corrupt_cache_entries_are_recovered() {
    let p = Paddock::with_apps(
        "wasm-cache",
        &[
            (
                "worker",
                &app("worker.wasm", "args = [\"--interval\", \"1s\"]\n"),
            ),
            (
                "http",
                &app("hello-p2.wasm", "[restart]\npolicy = \"never\"\n"),
            ),
        ],
    );
    let (p, err) = run_once(p, "worker");
    assert!(!err.contains("wasm cache"), "{err}");
    let cache = p.dir.path().join("state/wasm-cache");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "one entry per module: {entries:?}");
    let good: Vec<Vec<u8>> = entries.iter().map(|e| std::fs::read(e).unwrap()).collect();
    // One entry with a flipped byte in the middle of the code, one truncated.
    let mut flipped = good[0].clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    std::fs::write(&entries[0], &flipped).unwrap();
    std::fs::write(&entries[1], &good[1][..good[1].len() / 3]).unwrap();

    let (p, err) = run_once(p, "worker");
    assert_eq!(err.matches("is corrupt").count(), 2, "{err}");
    assert!(err.contains("SHA-256"), "{err}");
    assert!(err.contains("the cache entry is fixed"), "{err}");
    wait_log(&p, "http.out", "hello from wasm", Duration::from_secs(5));
    // Rewritten intact: a third start uses them silently.
    for (e, g) in entries.iter().zip(&good) {
        assert_eq!(
            &std::fs::read(e).unwrap(),
            g,
            "{} was not rebuilt",
            e.display()
        );
    }
    let (_p, err) = run_once(p, "worker");
    assert!(!err.contains("wasm cache"), "{err}");
}

/// Writes a module compiled from WAT text.
fn wat_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, wat::parse_str(wat).unwrap()).unwrap();
    p
}

#[test]
fn bad_modules_give_precise_errors_and_change_nothing() {
    let d = Scratch::new("wasm-bad");
    let m = d.path();
    std::fs::write(m.join("text.wasm"), "hello, I am not wasm\n").unwrap();
    wat_module(
        m,
        "import.wasm",
        r#"(module (import "env" "log_line" (func (param i32))) (func (export "_start")))"#,
    );
    wat_module(
        m,
        "p1.wasm",
        r#"(module (import "wasi_snapshot_preview1" "sock_teleport" (func)) (func (export "_start")))"#,
    );
    wat_module(
        m,
        "reactor.wasm",
        r#"(module (func (export "_initialize")))"#,
    );
    wat_module(m, "world.wasm", r#"(component)"#);
    // Valid header, broken body.
    let mut broken = wat::parse_str("(module (func (export \"_start\")))").unwrap();
    broken.truncate(broken.len() - 3);
    std::fs::write(m.join("invalid.wasm"), &broken).unwrap();
    let cases = [
        (
            "text",
            "text.wasm",
            "text.wasm is not a WebAssembly module: it is text starting with \"hello, I am not wasm\"",
        ),
        (
            "elf",
            "/bin/true",
            "/bin/true is not a WebAssembly module: it is an ELF file",
        ),
        (
            "import",
            "import.wasm",
            "import.wasm imports `env::log_line` (a function), which paddock does not provide",
        ),
        (
            "p1",
            "p1.wasm",
            "p1.wasm imports `wasi_snapshot_preview1::sock_teleport`, which is not a WASI preview 1 function",
        ),
        (
            "reactor",
            "reactor.wasm",
            "reactor.wasm exports no `_start` function (it is a reactor/library module",
        ),
        (
            "world",
            "world.wasm",
            "world.wasm is a component of an unsupported world: it exports nothing, and neither `wasi:cli/run@0.2.x` nor `wasi:http/incoming-handler@0.2.x`",
        ),
        (
            "invalid",
            "invalid.wasm",
            "invalid.wasm is not a valid WebAssembly module",
        ),
    ];
    let bad = Scratch::new("wasm-bad-apps");
    for (name, module, _) in &cases {
        let path = if module.starts_with('/') {
            PathBuf::from(module)
        } else {
            m.join(module)
        };
        std::fs::write(
            bad.path().join(format!("{name}.toml")),
            format!("isolation = \"wasm\"\nmodule = \"{}\"\n", path.display()),
        )
        .unwrap();
    }
    // `paddock check`: one precise error per file, at its `module` key.
    let o = check(&[bad.path()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for (name, _, want) in &cases {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("/{name}.toml:2:10: key `module`: ")))
            .unwrap_or_else(|| panic!("no error for {name}:\n{err}"));
        assert!(line.contains(want), "{name}: {line}");
    }
    assert!(
        err.contains(&format!("{} errors found", cases.len())),
        "{err}"
    );

    // `serve` refuses to start with them, and says the same.
    let o = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .arg(bad.path())
        .arg("--socket")
        .arg(bad.path().join("s.sock"))
        .arg("--state-dir")
        .arg(bad.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the configuration has errors; nothing was started"),
        "{err}"
    );
    assert!(err.contains("imports `env::log_line`"), "{err}");

    // `update` with a bad module changes nothing that runs.
    let p = Paddock::with_apps(
        "wasm-bad-update",
        &[(
            "worker",
            &app("worker.wasm", "args = [\"--interval\", \"100ms\"]\n"),
        )],
    )
    .start();
    p.wait_state("worker", "READY", Duration::from_secs(20));
    let since = p.app("worker").uptime_secs.unwrap();
    p.write_app(
        "import",
        &format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n",
            m.join("import.wasm").display()
        ),
    );
    std::fs::write(
        p.apps_dir().join("worker.toml"),
        format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n",
            m.join("text.wasm").display()
        ),
    )
    .unwrap();
    let o = p.cli(&["update"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("import.toml:2:10: key `module`") && err.contains("worker.toml:2:10"),
        "{err}"
    );
    let a = p.app("worker");
    assert_eq!(a.state, "READY");
    assert!(a.uptime_secs.unwrap() >= since, "the worker was restarted");
    assert_eq!(p.status().len(), 1, "nothing was added");
    assert!(p.shutdown().success());
}

#[test]
fn update_picks_up_a_replaced_module() {
    let d = Scratch::new("wasm-replace");
    let module = d.path().join("app.wasm");
    std::fs::copy(example("worker.wasm"), &module).unwrap();
    let text = format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\nargs = [\"exit\", \"0\"]\n",
        module.display()
    );
    let p = Paddock::with_apps("wasm-replace-apps", &[("app", &text)]).start();
    // The worker ignores "exit 0" and keeps ticking.
    p.wait_state("app", "READY", Duration::from_secs(20));
    wait_log(&p, "app.out", "tick 1", Duration::from_secs(10));
    let o = p.cli(&["reread"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no changes"),
        "{o:?}"
    );
    // The same path now holds the crasher: the app counts as changed and restarts with it.
    std::fs::copy(example("crasher.wasm"), &module).unwrap();
    let o = p.cli(&["update"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("app: changed"),
        "{o:?}"
    );
    let a = p.wait_state("app", "EXITED", Duration::from_secs(20));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(0));
    wait_log(
        &p,
        "app.out",
        "crasher: exiting with status 0",
        Duration::from_secs(5),
    );
    assert!(p.shutdown().success());
}

#[test]
fn a_thousand_wasm_apps_in_one_paddock() {
    let n = 1000;
    let text = app("worker.wasm", "args = [\"--interval\", \"600s\"]\n");
    let names: Vec<String> = (0..n).map(|i| format!("w{i:04}")).collect();
    let apps: Vec<(&str, &str)> = names.iter().map(|s| (s.as_str(), text.as_str())).collect();
    let p = Paddock::with_apps("wasm-1000", &apps).start();
    wait_for(Duration::from_secs(120), "1000 wasm apps running", || {
        let st = p.status();
        st.len() == n && st.iter().all(|a| a.state == "READY")
    });
    // Each has logged its first tick: they really run.
    wait_for(Duration::from_secs(60), "every worker's first tick", || {
        names
            .iter()
            .all(|a| log(&p, &format!("{a}.out")).contains("tick 1"))
    });
    let rss = rss_kib(p.pid());
    eprintln!("paddock RSS with {n} running wasm apps: {} MiB", rss >> 10);
    assert!(rss < 400 << 10, "paddock RSS {rss} KiB with {n} wasm apps");
    let t = Instant::now();
    assert!(p.shutdown().success());
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn health_hook_calls_an_exported_function_under_a_budget() {
    let d = Scratch::new("wasm-health");
    wat_module(
        d.path(),
        "ok.wasm",
        r#"(module (func (export "_start")) (func (export "health") (result i32) i32.const 7))"#,
    );
    wat_module(
        d.path(),
        "slow.wasm",
        r#"(module (func (export "_start")) (func (export "health") (result i32) (loop br 0) i32.const 0))"#,
    );
    wat_module(
        d.path(),
        "none.wasm",
        r#"(module (func (export "_start")))"#,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let host = WasmHost::new(
        HostOptions {
            cache_dir: Some(d.path().join("cache")),
            slots: 8,
            workers: 1,
        },
        Arc::new(move |app, generation, exit| {
            let _ = tx.send((app, generation, exit));
        }),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = vec![];
    for (i, name) in ["ok", "slow", "none"].iter().enumerate() {
        let file = d.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!("isolation = \"wasm\"\nmodule = \"{name}.wasm\"\n"),
        )
        .unwrap();
        let spec = paddock::config::load_file(&file).unwrap();
        let program = host.program(&spec).unwrap();
        assert_eq!(program.has_health(), *name != "none");
        let inst = host.start(&program, i, 1, Stdio::default()).unwrap();
        let (app, generation, exit) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!((app, generation, exit), (i, 1, Exit::Code(0)));
        results.push(rt.block_on(inst.call_health(Duration::from_millis(50))));
    }
    assert_eq!(results[0], Ok(7));
    let e = results[1].clone().unwrap_err();
    assert!(e.contains("ran past its budget of 50ms"), "{e}");
    let e = results[2].clone().unwrap_err();
    assert!(e.contains("exports no `health` function"), "{e}");
}

#[test]
fn idle_wasm_apps_wake_nobody() {
    // Sleeping guests: no epoch ticks, no worker wake-ups, no polling anywhere in paddock.
    let app = app(
        "worker.wasm",
        "args = [\"--interval\", \"600s\"]\n[restart]\nstable_after = \"100ms\"\n[limits]\ncpu = 0.5\n",
    );
    let p = Paddock::with_apps("wasm-idle", &[("a", &app), ("b", &app), ("c", &app)]).start();
    for a in ["a", "b", "c"] {
        p.wait_state(a, "READY", Duration::from_secs(20));
        wait_log(&p, &format!("{a}.out"), "tick 1", Duration::from_secs(10));
    }
    // The status board read by `wait_state` is rewritten every second until nobody has read
    // it for `WANTED_FOR`.
    std::thread::sleep(paddock::control::board::WANTED_FOR + Duration::from_millis(700));
    let before = ctxt_switches(p.pid());
    std::thread::sleep(Duration::from_secs(2));
    let after = ctxt_switches(p.pid());
    assert_eq!(
        after - before,
        0,
        "paddock woke up {} times in 2 s with only sleeping wasm apps",
        after - before
    );
}

#[test]
fn capabilities_and_budgets_are_enforced() {
    let never = "[restart]\npolicy = \"never\"\n";
    let (p1, p2) = (free_port(), free_port());
    let p = Paddock::with_apps(
        "wasm-caps",
        &[
            (
                "fuel",
                &app("crasher.wasm", &format!("args = [\"spin\"]\n[wasm]\nfuel = 10000000\n{never}")),
            ),
            (
                "fuel-ok",
                &app("hello.wasm", &format!("[wasm]\nfuel = 1000000000\n{never}")),
            ),
            (
                "denied",
                &app(
                    "http.wasm",
                    &format!(
                        "env = {{ ADDR = \"127.0.0.1:{p1}\" }}\n[sandbox]\nnetwork = \"host\"\ntcp_bind = [\"127.0.0.1:{p2}\"]\n{never}"
                    ),
                ),
            ),
            (
                "no-network",
                &app("http.wasm", &format!("env = {{ ADDR = \"127.0.0.1:{p1}\" }}\n{never}")),
            ),
            (
                "few-instances",
                &app("hello-p2.wasm", &format!("[wasm]\nmax_instances = 1\n{never}")),
            ),
        ],
    )
    .start();
    // Fuel: a deterministic budget, then a trap.
    let a = p.wait_state("fuel", "EXITED", Duration::from_secs(30));
    assert_eq!(
        exit_desc(&a),
        "trap: all fuel consumed ([wasm] fuel = 10000000)"
    );
    let a = p.wait_state("fuel-ok", "EXITED", Duration::from_secs(30));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(0));
    wait_log(&p, "fuel-ok.out", "hello from wasm", Duration::from_secs(5));
    // Network: only what tcp_bind allows, nothing without network = "host".
    for name in ["denied", "no-network"] {
        let a = p.wait_state(name, "EXITED", Duration::from_secs(30));
        assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(1), "{a:?}");
        let err = wait_log(
            &p,
            &format!("{name}.err"),
            &format!("cannot listen on 127.0.0.1:{p1}"),
            Duration::from_secs(10),
        );
        assert!(err.to_lowercase().contains("permission denied"), "{err}");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", p1)).is_err());
    // max_instances bounds the core instances of the app's store.
    let a = p.wait_state("few-instances", "FATAL", Duration::from_secs(30));
    let d = exit_desc(&a);
    assert!(
        d.starts_with("spawn failed: instantiation failed:")
            && d.ends_with("([wasm] max_instances = 1)"),
        "{d}"
    );
    assert!(p.shutdown().success());
}

#[test]
fn http_example_passes_an_http_health_check() {
    let (good, bad) = (free_port(), free_port());
    let http = |port: u16, body: &str| {
        let ready = if body == "ok" {
            "[readiness]\nhealth = true\n"
        } else {
            ""
        };
        app(
            "http.wasm",
            &format!(
                "env = {{ ADDR = \"127.0.0.1:{port}\" }}\n[sandbox]\nnetwork = \"host\"\ntcp_bind = [\"127.0.0.1:{port}\"]\n{ready}[health]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/health\"\nexpect_body = \"{body}\"\ninterval = \"100ms\"\nfailures = 2\n[restart]\nbackoff_initial = \"10ms\"\n"
            ),
        )
    };
    let p = Paddock::with_apps(
        "wasm-health-http",
        &[
            ("good", &http(good, "ok")),
            ("bad", &http(bad, "never this")),
        ],
    )
    .start();
    // Ready once its health check first passes.
    let a = p.wait_state("good", "READY", Duration::from_secs(20));
    assert_eq!(a.health_detail.as_deref(), Some("ok"), "{a:?}");
    wait_log(&p, "good.out", "GET /health", Duration::from_secs(10));
    // A failing check stops (interrupts) the instance and restarts it, like a process.
    wait_for(
        Duration::from_secs(20),
        "a restart after failed checks",
        || p.app("bad").restarts >= 1,
    );
    let a = p.app("bad");
    assert!(
        exit_desc(&a).contains("health check failed 2 times"),
        "{a:?}"
    );
    assert_eq!(p.app("good").restarts, 0);
    assert!(p.shutdown().success());
}

/// A core module that opens `f` in its first preopen until an open fails, then prints
/// `opened N errno E` and, with `hold`, keeps them open (sleeping), else exits with status E.
fn open_loop_wat(hold: bool) -> String {
    let end = if hold {
        // poll_oneoff on a one-hour monotonic clock, forever.
        "(i32.store8 (i32.const 520) (i32.const 0))
         (i32.store (i32.const 528) (i32.const 1))
         (i64.store (i32.const 536) (i64.const 3600000000000))
         (loop $h (drop (call $poll (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 768))) (br $h))"
    } else {
        "(call $exit (local.get $e))"
    };
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "f")
  (data (i32.const 100) "opened ")
  (data (i32.const 120) " errno ")
  ;; Writes the decimal digits of $n to end just before $end; returns where they start.
  (func $num (param $n i32) (param $end i32) (result i32)
    (loop $l
      (local.set $end (i32.sub (local.get $end) (i32.const 1)))
      (i32.store8 (local.get $end) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $l (local.get $n)))
    (local.get $end))
  (func (export "_start") (local $e i32) (local $n i32) (local $p i32) (local $q i32)
    (block $done (loop $again
      (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
      (br_if $done (local.get $e))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $done (i32.ge_u (local.get $n) (i32.const 100000)))
      (br $again)))
    ;; "opened N errno E\n" at 400
    (memory.copy (i32.const 400) (i32.const 100) (i32.const 7))
    (local.set $p (call $num (local.get $n) (i32.const 220)))
    (memory.copy (i32.const 407) (local.get $p) (i32.sub (i32.const 220) (local.get $p)))
    (local.set $q (i32.add (i32.const 407) (i32.sub (i32.const 220) (local.get $p))))
    (memory.copy (local.get $q) (i32.const 120) (i32.const 7))
    (local.set $q (i32.add (local.get $q) (i32.const 7)))
    (local.set $p (call $num (local.get $e) (i32.const 250)))
    (memory.copy (local.get $q) (local.get $p) (i32.sub (i32.const 250) (local.get $p)))
    (local.set $q (i32.add (local.get $q) (i32.sub (i32.const 250) (local.get $p))))
    (i32.store8 (local.get $q) (i32.const 10))
    (i32.store (i32.const 300) (i32.const 400))
    (i32.store (i32.const 304) (i32.sub (i32.add (local.get $q) (i32.const 1)) (i32.const 400)))
    (drop (call $write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)))
    {end}))"#
    )
}

/// A core module that creates `made-rel -> ../secret.txt` in its first preopen and exits with
/// the errno (0: created).
const SYMLINK_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_symlink" (func $sym (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "../secret.txt")
  (data (i32.const 32) "made-rel")
  (func (export "_start")
    (call $exit (call $sym (i32.const 0) (i32.const 13) (i32.const 3) (i32.const 32) (i32.const 8)))))"#;

/// Descriptors paddock holds.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A native app that exits after 50 ms and is restarted at once, forever.
const RESTARTING: &str = "command = [\"/bin/sh\", \"-c\", \"sleep 0.05\"]\n[restart]\npolicy = \"always\"\nbackoff_initial = \"10ms\"\nstable_after = \"0s\"\nmax_failures = 0\n";

/// The native app keeps restarting (nothing refused for lack of descriptors) and `status`
/// answers, while the guests hold what they could open.
fn native_keeps_restarting(p: &Paddock) {
    let before = p.app("native").restarts;
    wait_for(
        Duration::from_secs(20),
        "10 more restarts of the native app",
        || p.app("native").restarts >= before + 10,
    );
    let a = p.app("native");
    assert_ne!(a.state, "FATAL", "{a:?}");
    assert!(!a.message.contains("Too many open files"), "{a:?}");
    // It answers (and exits 3 when not every app is READY).
    let o = p.cli(&["status"]);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("native"),
        "{o:?}"
    );
}

#[test]
fn descriptor_exhaustion_stops_at_the_cap() {
    let s = Scratch::new("wasm-nofile-files");
    let ro = s.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("f"), "x").unwrap();
    let hold = wat_module(s.path(), "hold.wasm", &open_loop_wat(true));
    let exit = wat_module(s.path(), "exit.wasm", &open_loop_wat(false));
    let pre = format!("[wasm]\npreopens = {{ \"/d\" = \"{}\" }}\n", ro.display());
    let never = "[restart]\npolicy = \"never\"\n";
    let wasm = |m: &Path, extra: &str| {
        format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n{extra}",
            m.display()
        )
    };
    let p = Paddock::with_apps("wasm-nofile", &[("native", RESTARTING)]).start();
    p.wait_state("native", "READY", Duration::from_secs(10));
    let base = fd_count(p.pid());
    // No [limits]: the default cap, 256 (the preopen is one of them).
    p.write_app("hog", &wasm(&hold, &pre));
    p.write_app(
        "hog-exit",
        &wasm(&exit, &format!("{pre}[limits]\nnofile = 16\n{never}")),
    );
    p.write_app(
        "hog-p2",
        &format!(
            "{}args = [\"open-loop\", \"/d/f\", \"hold\"]\n{pre}[limits]\nnofile = 64\n",
            app("files.wasm", "")
        ),
    );
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{o:?}");
    // The core module: EMFILE (33) at its cap, as an ordinary error.
    let out = wait_log(&p, "hog.out", "opened", Duration::from_secs(30));
    assert!(out.contains("opened 255 errno 33\n"), "{out}");
    let a = p.wait_state("hog-exit", "EXITED", Duration::from_secs(30));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(33), "{a:?}");
    assert!(log(&p, "hog-exit.out").contains("opened 15 errno 33\n"));
    // The component: error-code `quota` (EDQUOT in wasi-libc) at its cap.
    let out = wait_log(&p, "hog-p2.out", "opened", Duration::from_secs(30));
    assert!(out.contains("opened 63: then "), "{out}");
    assert!(out.to_lowercase().contains("quota"), "{out}");
    // paddock holds what the guests hold, plus the new apps' log files and the wasm runtime
    // (about a dozen), no more.
    let n = fd_count(p.pid());
    eprintln!("guests at their caps: paddock holds {n} descriptors ({base} at the start)");
    assert!(
        n <= base + 255 + 63 + 24,
        "paddock has {n} descriptors ({base} at the start)"
    );
    let a = p.app("hog");
    assert_eq!(a.state, "READY", "{a:?} {}", log(&p, "hog.err"));
    native_keeps_restarting(&p);
    assert!(p.shutdown().success());
}

#[test]
fn guests_cannot_take_paddocks_reserve() {
    let s = Scratch::new("wasm-reserve-files");
    let ro = s.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("f"), "x").unwrap();
    let hold = wat_module(s.path(), "hold.wasm", &open_loop_wat(true));
    let hog = format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\n[wasm]\npreopens = {{ \"/d\" = \"{}\" }}\n[limits]\nnofile = 100000\n",
        hold.display(),
        ro.display()
    );
    let p = Paddock::with_apps(
        "wasm-reserve",
        &[("native", RESTARTING), ("hog1", &hog), ("hog2", &hog)],
    );
    // paddock with a limit of 1024 descriptors (it raises its soft limit to the hard one).
    let p = p.start_cmd(&[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the child being spawned.
        unsafe {
            c.pre_exec(|| {
                let rl = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // Both guests stop with ENFILE (41): the top 256 of paddock's 1024 are not theirs.
    for h in ["hog1", "hog2"] {
        let out = wait_log(&p, &format!("{h}.out"), "opened", Duration::from_secs(30));
        assert!(out.contains(" errno 41\n"), "{h}: {out}");
    }
    let n = fd_count(p.pid());
    eprintln!("two guests with nofile = 100000: paddock holds {n} of its 1024 descriptors");
    assert!(
        (1024 - 256 - 8..=1024 - 256 + 8).contains(&n),
        "paddock has {n} descriptors"
    );
    native_keeps_restarting(&p);
    assert!(fd_count(p.pid()) < 1024 - 64);
    assert!(p.shutdown().success());
}

#[test]
fn memory_without_limits_stops_at_the_default() {
    let p = Paddock::with_apps(
        "wasm-memory-default",
        &[(
            "grow",
            &app(
                "crasher.wasm",
                "args = [\"grow\"]\n[restart]\npolicy = \"never\"\n",
            ),
        )],
    )
    .start();
    let a = p.wait_state("grow", "EXITED", Duration::from_secs(60));
    let d = exit_desc(&a);
    assert!(
        d.ends_with("was refused: [limits] memory = 128MiB (the default for wasm apps; set [limits] memory to change it))"),
        "{d}"
    );
    let out = log(&p, "grow.out");
    assert!(
        out.contains("holding 120 MiB") && !out.contains("holding 128 MiB"),
        "{out}"
    );
    assert!(p.shutdown().success());
}

#[test]
fn symlinks_are_refused_unless_allowed() {
    let s = Scratch::new("wasm-symlinks-files");
    std::fs::write(s.path().join("secret.txt"), "secret").unwrap();
    let wat = wat_module(s.path(), "symlink.wasm", SYMLINK_WAT);
    let mut apps = vec![];
    for (name, allow) in [
        ("p1-default", false),
        ("p1-allowed", true),
        ("p2-default", false),
        ("p2-allowed", true),
    ] {
        let dir = s.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let keys = format!(
            "[wasm]\npreopens = {{ \"/d\" = \"{}:rw\" }}\n{}[restart]\npolicy = \"never\"\n",
            dir.display(),
            if allow { "symlinks = true\n" } else { "" }
        );
        let text = if name.starts_with("p1") {
            format!(
                "isolation = \"wasm\"\nmodule = \"{}\"\n{keys}",
                wat.display()
            )
        } else {
            app(
                "files.wasm",
                &format!("args = [\"symlink\", \"../secret.txt\", \"/d/made-rel\"]\n{keys}"),
            )
        };
        apps.push((name, text));
    }
    let list: Vec<(&str, &str)> = apps.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let p = Paddock::with_apps("wasm-symlinks", &list).start();
    let link = |name: &str| std::fs::read_link(s.path().join(name).join("made-rel")).ok();
    // Refused by default: EPERM (63) for a core module, `not-permitted` for a component.
    let a = p.wait_state("p1-default", "EXITED", Duration::from_secs(30));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(63), "{a:?}");
    assert_eq!(link("p1-default"), None);
    let a = p.wait_state("p2-default", "EXITED", Duration::from_secs(30));
    assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(1), "{a:?}");
    let out = wait_log(&p, "p2-default.out", "symlink", Duration::from_secs(10));
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(link("p2-default"), None);
    // Allowed with `[wasm] symlinks = true`.
    for name in ["p1-allowed", "p2-allowed"] {
        let a = p.wait_state(name, "EXITED", Duration::from_secs(30));
        assert_eq!(a.last_exit.as_ref().and_then(|e| e.code), Some(0), "{a:?}");
        assert_eq!(link(name), Some(PathBuf::from("../secret.txt")), "{name}");
    }
    assert!(p.shutdown().success());
}

/// A command module that sleeps forever, exporting a `health` that answers 0 (healthy) until the
/// realtime clock passes `unhealthy_after_ns` (Unix time), 1 from then on.
fn health_wat(unhealthy_after_ns: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; poll_oneoff on a one-hour monotonic clock, forever.
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 3600000000000))
    (loop $h (drop (call $poll (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 768))) (br $h)))
  (func (export "health") (result i32)
    (drop (call $clock (i32.const 0) (i64.const 0) (i32.const 0)))
    (i64.gt_u (i64.load (i32.const 0)) (i64.const {unhealthy_after_ns}))))"#
    )
}

#[test]
fn wasm_health_check_restarts_an_unhealthy_app_and_needs_the_export() {
    let d = Scratch::new("wasm-health-kind");
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let sours = wat_module(d.path(), "sours.wasm", &health_wat(now_ns + 5_000_000_000));
    let fine = wat_module(d.path(), "fine.wasm", &health_wat(u64::MAX / 2));
    let conf = |m: &Path| {
        format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n[readiness]\nhealth = true\n[health]\nkind = \"wasm\"\ninterval = \"100ms\"\nfailures = 2\n[restart]\nbackoff_initial = \"10ms\"\n",
            m.display()
        )
    };
    let p = Paddock::with_apps(
        "wasm-health-kind",
        &[("sours", &conf(&sours)), ("fine", &conf(&fine))],
    )
    .start();
    // Ready once the exported function first answers 0.
    p.wait_state("sours", "READY", Duration::from_secs(20));
    p.wait_state("fine", "READY", Duration::from_secs(20));
    // Once it answers 1, the app is stopped and restarted like a process with a failing check.
    wait_for(
        Duration::from_secs(30),
        "a restart after failed wasm checks",
        || p.app("sours").restarts >= 1,
    );
    let a = p.app("sours");
    assert!(
        exit_desc(&a).contains("health check failed 2 times"),
        "{a:?}"
    );
    assert_eq!(p.app("fine").restarts, 0, "{:?}", p.app("fine"));
    assert!(p.shutdown().success());

    // Without a `health` export, kind = "wasm" is refused at load, naming the file and key.
    let bare = wat_module(
        d.path(),
        "bare.wasm",
        r#"(module (func (export "_start")))"#,
    );
    let apps = d.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(apps.join("bare.toml"), conf(&bare)).unwrap();
    let o = check(&[&apps]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bare.toml") && err.contains("exports no `health` function"),
        "{err}"
    );
}

/// `update` loads and compiles new modules off the supervisor's loop: `status` answers while a
/// large module compiles.
#[test]
fn status_answers_while_update_compiles_a_large_module() {
    let d = Scratch::new("wasm-big");
    // Thousands of functions: cranelift takes a while on this machine's two cores.
    let mut wat = String::from("(module (func (export \"_start\"))\n");
    for i in 0..6000 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i64) (result i64) (local i64) local.get 0 i64.const {i} i64.mul local.get 0 i64.const 7 i64.rem_s i64.add local.tee 1 local.get 1 i64.mul local.get 0 i64.xor)\n"
        ));
    }
    wat.push(')');
    let big = wat_module(d.path(), "big.wasm", &wat);
    let p = Paddock::with_apps(
        "wasm-big",
        &[("sleeper", "command = [\"/bin/sleep\", \"1000\"]\n")],
    )
    .start();
    p.wait_state("sleeper", "READY", Duration::from_secs(10));
    p.write_app(
        "big",
        &format!(
            "isolation = \"wasm\"\nmodule = \"{}\"\n[restart]\npolicy = \"never\"\n",
            big.display()
        ),
    );
    let sock = p.socket();
    let t = Instant::now();
    let update = std::thread::spawn(move || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .arg("update")
            .env("PADDOCK_SOCKET", sock)
            .output()
            .unwrap();
        (o, t.elapsed())
    });
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while !update.is_finished() {
        let s = Instant::now();
        assert_eq!(p.app("sleeper").state, "READY");
        slowest = slowest.max(s.elapsed());
        asked += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let (o, took) = update.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("update took {took:?}; {asked} status requests meanwhile, the slowest {slowest:?}");
    assert!(
        slowest < Duration::from_millis(250) && slowest * 3 < took,
        "status waited {slowest:?} during an update of {took:?}"
    );
    p.wait_state("big", "EXITED", Duration::from_secs(20));
}

/// A shutdown while `update` compiles a large module does not wait for the compile.
#[test]
fn shutdown_does_not_wait_for_a_module_compile() {
    let d = Scratch::new("wasm-big-stop");
    let mut wat = String::from("(module (func (export \"_start\"))\n");
    for i in 0..30000 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i64) (result i64) (local i64) local.get 0 i64.const {i} i64.mul local.get 0 i64.const 7 i64.rem_s i64.add local.tee 1 local.get 1 i64.mul local.get 0 i64.xor)\n"
        ));
    }
    wat.push(')');
    let big = wat_module(d.path(), "big.wasm", &wat);
    let mut p = Paddock::with_apps(
        "wasm-big-stop",
        &[("sleeper", "command = [\"/bin/sleep\", \"1000\"]\n")],
    )
    .start();
    p.wait_state("sleeper", "READY", Duration::from_secs(10));
    p.write_app(
        "big",
        &format!("isolation = \"wasm\"\nmodule = \"{}\"\n", big.display()),
    );
    let sock = p.socket();
    let update = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .arg("update")
            .env("PADDOCK_SOCKET", sock)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !update.is_finished(),
        "the module compiled in under 0.5 s: make it bigger for this test to mean something"
    );
    let mut child = p.child.take().unwrap();
    let t = Instant::now();
    // SAFETY: kill(2) takes no pointers; the pid is paddock's, a child of this test.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = wait_child(&mut child, Duration::from_secs(30));
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took < Duration::from_millis(1500),
        "paddock waited {took:?} for the compile before exiting"
    );
    let o = update.join().unwrap();
    assert!(
        !o.status.success(),
        "the update cannot have been applied: {o:?}"
    );
}
