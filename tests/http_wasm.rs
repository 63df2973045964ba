//! Per-request wasm apps (`[http]`) against a real `paddock serve`, the real example component
//! (examples/wasm/http-hello) and real sockets: answers, traps, timeouts, the memory limit,
//! scale to zero, isolation between requests, reuse, update under load, the restart policy on
//! a failing run, bad configurations.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(dir) = std::env::var("PADDOCK_WASM_EXAMPLES") {
        return root.join(dir).join(name);
    }
    let fresh = root.join("target/wasm-examples").join(name);
    if fresh.is_file() {
        return fresh;
    }
    root.join("examples/wasm").join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn web(module: &Path, port: u16, extra: &str) -> String {
    format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\n{extra}\n[http]\nlisten = [\"127.0.0.1:{port}\"]\n",
        module.display()
    )
}

/// One request on a new connection: (status, body). Errors are connection-level failures.
fn request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(&mut s, method, path, body)
}

fn exchange<S: Read + Write>(
    s: &mut S,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = vec![];
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    Ok((status, body))
}

fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, "").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn stderr_log(p: &Paddock, app: &str) -> String {
    std::fs::read_to_string(p.logs_dir().join(format!("{app}.err"))).unwrap_or_default()
}

#[test]
fn serves_traps_times_out_limits_and_scales_to_zero() {
    let port = free_port();
    let dir = Scratch::new("httpsock");
    let sock = dir.path().join("web.sock");
    let mut text = web(
        &example("http-hello.wasm"),
        port,
        "[limits]\nmemory = \"16MiB\"\n[readiness]\nhealth = true\n",
    );
    text = text.replace(
        &format!("listen = [\"127.0.0.1:{port}\"]"),
        &format!(
            "listen = [\"127.0.0.1:{port}\", \"{}\"]\nrequest_timeout = \"500ms\"\nfailures = 100",
            sock.display()
        ),
    );
    text.push_str(&format!(
        "[health]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/status?code=200\"\ninterval = \"200ms\"\n"
    ));
    let p = Paddock::with_apps("http1", &[("web", &text)]).start();
    let st = p.wait_state("web", "READY", Duration::from_secs(20));
    let h = st.http.expect("http figures");
    assert_eq!(h.listen.len(), 2, "{h:?}");

    assert_eq!(get(port, "/"), (200, "hello from paddock\n".into()));
    let (code, body) = request(port, "POST", "/echo", "echo me").unwrap();
    assert_eq!((code, body.as_str()), (200, "echo me"));
    // The Unix socket serves the same app.
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    assert_eq!(exchange(&mut u, "GET", "/", "").unwrap().0, 200);

    // A trap: 500, logged with the request id and the wasm backtrace; the app keeps serving.
    let (code, body) = get(port, "/trap");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("wasm trap"), "{body}");
    let id: String = body
        .split("request ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    wait_for(Duration::from_secs(5), "the trap in the log", || {
        stderr_log(&p, "web").contains(&format!("paddock: request {id}: wasm trap"))
    });
    let log = stderr_log(&p, "web");
    assert!(log.contains("trap requested by /trap"), "{log}");
    assert!(
        log.contains(&format!(
            "paddock: request {id}: error while executing at wasm backtrace"
        )),
        "{log}"
    );
    assert_eq!(get(port, "/").0, 200);

    // A loop: 504 at request_timeout, and the app keeps serving.
    let t = Instant::now();
    let (code, body) = get(port, "/loop");
    assert_eq!(code, 504, "{body}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(get(port, "/").0, 200);

    // A memory bomb: refused at [limits] memory.
    let (code, body) = get(port, "/alloc");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("memory growth") && body.contains("16MiB"),
        "{body}"
    );

    // Isolation: a fresh instance per request, also under concurrency.
    let counts: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..10).map(|_| get(port, "/count").1).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(counts.iter().all(|c| c == "1\n"), "{counts:?}");

    // Scale to zero, through the API; the figures.
    wait_for(Duration::from_secs(5), "0 instances", || {
        let h = p.app("web").http.unwrap();
        h.instances == 0 && h.in_flight == 0
    });
    let st = p.app("web");
    assert_eq!(st.state, "READY");
    let h = st.http.unwrap();
    assert!(h.requests >= 86 && h.traps >= 2 && h.timeouts == 1, "{h:?}");
    assert!(
        h.latency_p50_ms.is_some() && h.instantiation_p50_us.is_some(),
        "{h:?}"
    );
    assert!(
        h.memory_high_bytes > 8 << 20 && h.memory_high_bytes <= 16 << 20,
        "{h:?}"
    );
    let m = p.client.request("GET", "/metrics", None).unwrap().body;
    assert!(m.contains("paddock_http_instances{app=\"web\"} 0"), "{m}");
    assert!(
        m.contains("paddock_http_timeouts_total{app=\"web\"} 1"),
        "{m}"
    );
    let json = p.cli(&["status", "--json"]);
    let out = String::from_utf8_lossy(&json.stdout);
    assert!(out.contains("\"instances\": 0"), "{out}");
    // Stopped: 503 at once, the socket still open (no refused connection).
    assert!(p.cli(&["stop", "web"]).status.success());
    p.wait_state("web", "STOPPED", Duration::from_secs(10));
    let (code, body) = get(port, "/");
    assert_eq!(code, 503, "{body}");
    assert!(p.cli(&["start", "web"]).status.success());
    p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(get(port, "/").0, 200);
}

#[test]
fn reuse_shares_an_instance() {
    let port = free_port();
    let text = web(&example("http-hello.wasm"), port, "") + "reuse = 100\nmax_concurrent = 1\n";
    let p = Paddock::with_apps("http2", &[("web", &text)]).start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    let counts: Vec<u64> = (0..5)
        .map(|_| get(port, "/count").1.trim().parse().unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![1, 2, 3, 4, 5],
        "one instance serves them in turn"
    );
    assert_eq!(p.app("web").http.unwrap().instances, 1, "kept for reuse");
}

/// A copy of `src` with a custom section appended: the same code, a different module hash.
fn variant(src: &Path, dst: &Path, tag: &str) {
    let mut b = std::fs::read(src).unwrap();
    let name = b"paddock-test";
    let payload = tag.as_bytes();
    let len = 1 + name.len() + payload.len();
    assert!(len < 128);
    b.push(0);
    b.push(len as u8);
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(payload);
    std::fs::write(dst, b).unwrap();
}

#[test]
fn update_under_load_refuses_no_connection() {
    let port = free_port();
    let dir = Scratch::new("httpupd");
    let module = dir.path().join("web.wasm");
    variant(&example("http-hello.wasm"), &module, "v1");
    let text = |g: &str| web(&module, port, &format!("env = {{ GREETING = \"{g}\" }}"));
    let p = Paddock::with_apps("http3", &[("web", &text("v1"))]).start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    assert_eq!(get(port, "/").1, "hello from paddock: v1\n");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad, v2) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
        Arc::new(AtomicU64::new(0)),
    );
    use std::sync::Mutex;
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, bad, v2) = (stop.clone(), ok.clone(), bad.clone(), v2.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let path = if i % 2 == 0 { "/" } else { "/sleep?ms=30" };
                    match request(port, "GET", path, "") {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if body.contains("v2") {
                                v2.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok((code, body)) => bad.lock().unwrap().push(format!("{code} {body}")),
                        Err(e) => bad.lock().unwrap().push(format!("connection: {e}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for round in 2..5 {
        variant(&example("http-hello.wasm"), &module, &format!("v{round}"));
        p.write_app("web", &text(if round % 2 == 0 { "v2" } else { "v3" }));
        let r = p.post("/v1/update");
        assert_eq!(r.status, 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for(
        Duration::from_secs(10),
        "answers from the new module",
        || v2.load(Ordering::SeqCst) > 0,
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let bad = bad.lock().unwrap();
    assert!(bad.is_empty(), "failed requests during updates: {bad:?}");
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "{}",
        ok.load(Ordering::SeqCst)
    );
    let st = p.app("web");
    assert_eq!((st.state.as_str(), st.restarts), ("READY", 0), "{st:?}");
    assert_eq!(get(port, "/").1, "hello from paddock: v2\n");
}

#[test]
fn a_failing_run_counts_against_the_restart_policy() {
    let port = free_port();
    let text = web(
        &example("http-hello.wasm"),
        port,
        "[restart]\npolicy = \"always\"\nbackoff_initial = \"1500ms\"\nmax_failures = 2\nstable_after = \"1m\"",
    ) + "failures = 2\nfailure_window = \"10s\"\n";
    let p = Paddock::with_apps("http4", &[("web", &text)]).start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    assert_eq!(get(port, "/trap").0, 500);
    assert_eq!(get(port, "/").0, 200, "a success ends the run of failures");
    assert_eq!(get(port, "/trap").0, 500);
    assert_eq!(get(port, "/trap").0, 500);
    let st = p.wait_state("web", "BACKOFF", Duration::from_secs(5));
    assert!(
        st.last_exit
            .as_ref()
            .is_some_and(|e| format!("{e:?}").contains("2 requests failed in a row")),
        "{st:?}"
    );
    let (code, body) = get(port, "/");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("backing off"), "{body}");
    p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(get(port, "/").0, 200);
    assert_eq!(get(port, "/trap").0, 500);
    assert_eq!(get(port, "/trap").0, 500);
    p.wait_state("web", "FATAL", Duration::from_secs(5));
    let (code, body) = get(port, "/");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("FATAL"), "{body}");
    let log = stderr_log(&p, "web");
    assert!(log.contains("the app's run ends"), "{log}");
}

#[test]
fn bad_configurations_are_precise_errors() {
    let dir = Scratch::new("httpcfg");
    let check = |name: &str, text: &str| -> String {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("app.toml"), text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check"])
            .arg(&d)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} passed the check");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let hello = example("http-hello.wasm");
    let e = check(
        "nohttp",
        &format!("isolation = \"wasm\"\nmodule = \"{}\"\n", hello.display()),
    );
    assert!(
        e.contains("app.toml:2:10: key `module`")
            && e.contains("is a wasi:http component")
            && e.contains("add an [http] table"),
        "{e}"
    );
    let e = check("cmd", &web(&example("hello-p2.wasm"), 8080, ""));
    assert!(
        e.contains("key `module`") && e.contains("wasi:cli/command component"),
        "{e}"
    );
    let e = check("core", &web(&example("hello.wasm"), 8080, ""));
    assert!(e.contains("key `http`") && e.contains("core module"), "{e}");
    let e = check(
        "native",
        "command = [\"/bin/true\"]\n[http]\nlisten = [\"127.0.0.1:1\"]\n",
    );
    assert!(
        e.contains("app.toml:2:1: key `http`: [http] is for wasm apps"),
        "{e}"
    );
    let e = check(
        "badaddr",
        &web(&hello, 8080, "").replace("127.0.0.1:8080", "localhost:80"),
    );
    assert!(
        e.contains("key `http.listen`") && e.contains("\"localhost:80\" is not an address"),
        "{e}"
    );
    let e = check("nohealth", &web(&hello, 8080, "[health]\nkind = \"wasm\""));
    assert!(e.contains("exports no `health` function"), "{e}");
}

#[test]
fn a_request_sent_while_paddock_is_down_is_served_by_the_next_one() {
    let port = free_port();
    let mut p = Paddock::with_apps(
        "http-crash",
        &[("web", &web(&example("http-hello.wasm"), port, ""))],
    )
    .start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    assert_eq!(get(port, "/"), (200, "hello from paddock\n".into()));
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The descriptor holder keeps the socket listening: the request waits in its backlog.
    let client = std::thread::spawn(move || request(port, "GET", "/", ""));
    std::thread::sleep(Duration::from_millis(300));
    let p = p.start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    let (code, body) = client
        .join()
        .unwrap()
        .expect("the request sent while paddock was down");
    assert_eq!((code, body.as_str()), (200, "hello from paddock\n"));
}

/// A stopped `[http]` app answers 503 at once, also after `update` gave it a new definition
/// (its requests do not wait for a start that is not coming).
#[test]
fn a_stopped_app_answers_503_also_after_an_update() {
    let port = free_port();
    let p = Paddock::with_apps(
        "http-stopped",
        &[("web", &web(&example("http-hello.wasm"), port, ""))],
    )
    .start();
    p.wait_state("web", "READY", Duration::from_secs(20));
    assert!(p.cli(&["stop", "web"]).status.success());
    let quick = |why: &str| {
        let t = std::time::Instant::now();
        let (code, body) = get(port, "/");
        assert_eq!(code, 503, "{why}: {body}");
        assert!(body.contains("stopped"), "{why}: {body}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{why}: waited {:?}",
            t.elapsed()
        );
    };
    quick("stopped");
    let text = web(&example("http-hello.wasm"), port, "") + "request_timeout = \"7s\"\n";
    std::fs::write(p.apps_dir().join("web.toml"), text).unwrap();
    let out = p.cli(&["update"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applies at next start"),
        "{out:?}"
    );
    quick("stopped, then updated");
    assert!(p.cli(&["start", "web"]).status.success());
    assert_eq!(get(port, "/").0, 200);
}
