//! `[[listen]]` against real processes and real sockets: the handover (LISTEN_FDS, LISTEN_PID,
//! LISTEN_FDNAMES), zero refused connections across restarts and updates with a client
//! hammering (the repo's test server, examples/listen/serve.py, and nginx from Debian),
//! on-demand start and idle stop, the sockets surviving a `kill -9` of paddock, and bad input.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn serve_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/listen/serve.py")
}

/// A Python that starts fast (not a pyenv shim, which is a shell script).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn server_app(port: u16, tag: &str, extra: &str) -> String {
    format!(
        "command = [\"{}\", \"{}\", \"{tag}\"]\nstop_timeout = \"5s\"\n{extra}\n[[listen]]\naddress = \"127.0.0.1:{port}\"\nname = \"web\"\n",
        python(),
        serve_py().display()
    )
}

/// One HTTP request; the response's body line, or what went wrong.
fn get(addr: &str) -> Result<String, String> {
    let mut c = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut b = String::new();
    c.read_to_string(&mut b).map_err(|e| format!("read: {e}"))?;
    if !b.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {b:?}"));
    }
    Ok(b.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_string())
}

/// Clients sending requests in a loop until stopped; counts answers and failures.
struct Hammer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hammer {
    fn start(addr: &str, clients: usize) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(vec![]));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures, addr) =
                    (stop.clone(), ok.clone(), failures.clone(), addr.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(&addr) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Hammer {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Stops the clients: (answers, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
        )
    }
}

fn pid_of(body: &str) -> i32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

#[test]
fn sockets_are_handed_over_with_the_systemd_protocol() {
    let port = free_port();
    let dir = Scratch::new("listen-unix");
    let sock = dir.path().join("web.sock");
    let owner = if is_root() {
        "owner = \"nobody\"\n"
    } else {
        ""
    };
    let app = format!(
        "{}[[listen]]\naddress = \"{}\"\nname = \"local\"\nmode = \"0660\"\n{owner}",
        server_app(port, "v1", ""),
        sock.display()
    );
    let p = Paddock::with_apps("listen-handover", &[("web", &app)]).start();
    let st = p.wait_state("web", "READY", Duration::from_secs(10));
    let body = get(&format!("127.0.0.1:{port}")).unwrap();
    // The server checked LISTEN_PID against its own pid before serving.
    assert_eq!(pid_of(&body), st.pid.unwrap(), "{body}");
    assert!(body.contains("fds=2 names=web:local tag=v1"), "{body}");
    assert_eq!(
        st.listen,
        vec![
            format!("127.0.0.1:{port}"),
            format!("unix:{}", sock.display())
        ]
    );
    // The Unix socket: its mode and owner, and the same server behind it.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(&sock).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.mode() & 0o777, 0o660);
    if is_root() {
        assert_eq!(md.uid(), 65534, "owner = \"nobody\"");
    }
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut b = String::new();
    c.read_to_string(&mut b).unwrap();
    assert!(b.contains(&format!("pid={}", st.pid.unwrap())), "{b}");
    // Nothing else of paddock's leaks into the app: 0-2, the two sockets at 3 and 4, and the
    // server's own pipe (its signal wake-up).
    let dir = format!("/proc/{}/fd", st.pid.unwrap());
    let fds: Vec<(i32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().parse().unwrap(),
                target.to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (n, target) in &fds {
        match n {
            0..=2 => {}
            3 | 4 => assert!(target.starts_with("socket:"), "fd {n}: {target}"),
            _ => assert!(
                target.starts_with("pipe:"),
                "fd {n} leaked into the app: {target}"
            ),
        }
    }
    assert!(
        fds.iter().any(|f| f.0 == 3) && fds.iter().any(|f| f.0 == 4),
        "{fds:?}"
    );
    // Removing the app closes its sockets and the socket file goes.
    std::fs::remove_file(p.apps_dir().join("web.toml")).unwrap();
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(10), "the port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(!sock.exists(), "the socket file is removed with the app");
}

#[test]
fn no_connection_is_refused_across_100_restarts_and_10_updates() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let p = Paddock::with_apps("listen-restarts", &[("web", &server_app(port, "v0", ""))]).start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    let first = pid_of(&get(&addr).unwrap());
    let hammer = Hammer::start(&addr, 3);
    let t = Instant::now();
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..100 {
        let o = p.cli(&["restart", "web"]);
        assert!(
            o.status.success(),
            "restart {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Each new process serves before the next restart.
        pids.insert(pid_of(&get(&addr).unwrap()));
    }
    let restarts = t.elapsed();
    assert_eq!(pids.len(), 100, "every restart was a new process");
    for v in 1..=10 {
        p.write_app("web", &server_app(port, &format!("v{v}"), ""));
        let o = p.cli(&["update"]);
        assert!(
            o.status.success(),
            "update {v}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        wait_for(Duration::from_secs(10), "the new version to answer", || {
            get(&addr).is_ok_and(|b| b.contains(&format!("tag=v{v}")))
        });
    }
    let (ok, failures) = hammer.finish();
    eprintln!(
        "100 restarts in {restarts:?}, 10 updates: {ok} requests answered, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "refused or reset: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 100, "the clients got {ok} answers");
    assert_ne!(pid_of(&get(&addr).unwrap()), first);
}

#[test]
fn nginx_from_debian_takes_the_socket_and_restarts_without_refusing() {
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!(
            "SKIPPED nginx_from_debian_takes_the_socket_and_restarts_without_refusing: needs nginx (apt-get install nginx)"
        );
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = Scratch::new("listen-nginx-conf");
    std::fs::write(
        conf.path().join("nginx.conf"),
        nginx_conf(
            &conf.path().display().to_string(),
            is_root().then_some("nobody nogroup"),
            &format!("listen {addr}; location / {{ return 200 \"nginx\\n\"; }}"),
        ),
    )
    .unwrap();
    // nginx does not read LISTEN_FDS, but inherits listening sockets named in $NGINX (its own
    // binary-upgrade protocol): the one socket paddock hands over is descriptor 3.
    let app = |v: u32| {
        format!(
            "command = [\"/usr/sbin/nginx\", \"-e\", \"stderr\", \"-c\", \"{}/nginx.conf\", \"-g\", \"env V{v};\"]\nstop_signal = \"QUIT\"\nstop_timeout = \"5s\"\nenv = {{ NGINX = \"3;\" }}\n[[listen]]\naddress = \"{addr}\"\n",
            conf.path().display()
        )
    };
    let p = Paddock::with_apps("listen-nginx", &[("nginx", &app(0))]).start();
    p.wait_state("nginx", "READY", Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "nginx to answer", || {
        get(&addr).is_ok()
    });
    let hammer = Hammer::start(&addr, 3);
    for i in 0..100 {
        let o = p.cli(&["restart", "nginx"]);
        assert!(
            o.status.success(),
            "restart {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        get(&addr).unwrap();
    }
    for v in 1..=10 {
        p.write_app("nginx", &app(v));
        let o = p.cli(&["update"]);
        assert!(
            o.status.success(),
            "update {v}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let st = p.wait_state("nginx", "READY", Duration::from_secs(10));
        assert!(
            st.command.iter().any(|a| a == &format!("env V{v};")),
            "{st:?}"
        );
        get(&addr).unwrap();
    }
    let (ok, failures) = hammer.finish();
    eprintln!(
        "nginx, 100 restarts and 10 updates: {ok} requests answered, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "refused or reset: {:?}",
        &failures[..failures.len().min(10)]
    );
    let err = std::fs::read_to_string(p.logs_dir().join("nginx.err")).unwrap_or_default();
    assert!(
        !err.contains("bind()"),
        "nginx bound the port itself instead of taking paddock's socket: {err}"
    );
}

#[test]
fn an_on_demand_app_starts_at_the_first_connection_and_stops_when_idle() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = server_app(port, "od", "start = \"on-connection\"\nidle_stop = \"1s\"");
    let p = Paddock::with_apps("listen-on-demand", &[("od", &app)]).start();
    std::thread::sleep(Duration::from_millis(300));
    let st = p.app("od");
    assert_eq!((st.state.as_str(), st.pid), ("STOPPED", None), "{st:?}");
    assert!(
        st.on_demand && st.message.contains("starts at the next connection"),
        "{st:?}"
    );
    // The first connection starts it and is answered by it.
    let body = get(&addr).unwrap();
    let st = p.wait_state("od", "READY", Duration::from_secs(5));
    assert_eq!(pid_of(&body), st.pid.unwrap());
    // A connection held open keeps it running past idle_stop …
    let held = std::net::TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(p.app("od").state, "READY", "stopped with a connection open");
    drop(held);
    // … and without one it stops after idle_stop, and is watched again.
    let st = p.wait_state("od", "STOPPED", Duration::from_secs(10));
    assert!(
        st.message.contains("starts at the next connection"),
        "{st:?}"
    );
    let again = get(&addr).unwrap();
    assert_ne!(pid_of(&again), pid_of(&body), "a new process");
    let st = p.wait_state("od", "READY", Duration::from_secs(5));
    assert_eq!(
        st.restarts, 0,
        "an on-demand start is not a restart: {st:?}"
    );
    let events = p.cli(&["status", "od"]);
    assert!(events.status.success());
}

#[test]
fn the_sockets_survive_a_kill_9_of_paddock() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut p = Paddock::with_apps("listen-crash", &[("web", &server_app(port, "v1", ""))]).start();
    let pid = p
        .wait_state("web", "READY", Duration::from_secs(10))
        .pid
        .unwrap();
    let hammer = Hammer::start(&addr, 2);
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut p = p.start();
    let st = p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(st.pid, Some(pid), "the app was adopted, not restarted");
    // The new paddock took the socket back from the holder: a restart hands over the same one.
    let o = p.cli(&["restart", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let body = get(&addr).unwrap();
    assert_ne!(pid_of(&body), pid);
    let (ok, failures) = hammer.finish();
    assert!(failures.is_empty(), "{ok} answered; failed: {failures:?}");
    let mut child = p.child.take().unwrap();
    let mut err = String::new();
    // SAFETY: kill(2) takes no pointers; the pid is of our child, not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_child(&mut child, Duration::from_secs(15));
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("cannot listen"), "{err}");
}

#[test]
fn bad_listen_tables_are_precise_errors() {
    let dir = Scratch::new("listen-bad");
    let cases: &[(&str, &str)] = &[
        (
            "[[listen]]\nname = \"x\"\n",
            "key `listen.address`: missing",
        ),
        (
            "[[listen]]\naddress = \"localhost:80\"\n",
            "IP address and a port",
        ),
        (
            "[[listen]]\naddress = \"127.0.0.1:80\"\n[[listen]]\naddress = \"127.0.0.1:80\"\n",
            "listed twice",
        ),
        (
            "[[listen]]\naddress = \"127.0.0.1:80\"\nmode = \"0660\"\n",
            "a TCP socket has no mode",
        ),
        (
            "[[listen]]\naddress = \"/run/x.sock\"\nmode = \"rwx\"\n",
            "octal",
        ),
        (
            "[[listen]]\naddress = \"/run/x.sock\"\nowner = \"no-such-user-here\"\n",
            "no such user",
        ),
        (
            "[[listen]]\naddress = \"127.0.0.1:80\"\nname = \"a:b\"\n",
            "LISTEN_FDNAMES",
        ),
        ("start = \"on-connection\"\n", "add a [[listen]] table"),
        (
            "start = \"lazy\"\n",
            "expected \"auto\" or \"on-connection\"",
        ),
        ("idle_stop = \"1m\"\n", "needs start = \"on-connection\""),
        (
            "start = \"on-connection\"\nautostart = true\n[[listen]]\naddress = \"127.0.0.1:80\"\n",
            "contradict",
        ),
        (
            "[readiness]\nnotify_fd = 3\n[[listen]]\naddress = \"127.0.0.1:80\"\n",
            "use 4 or higher",
        ),
        (
            "[[listen]]\naddress = \"127.0.0.1:80\"\nbacklog = 5\n",
            "unknown field `backlog`",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let d = dir.path().join(format!("c{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("a.toml"),
            format!("command = [\"/bin/true\"]\n{text}"),
        )
        .unwrap();
        let o = check(&[&d]);
        let err =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "case {i} passed: {text}");
        assert!(
            err.contains(want) && err.contains("a.toml:"),
            "case {i}: want {want:?} in {err}"
        );
    }
    let many: String = (0..17)
        .map(|i| format!("[[listen]]\naddress = \"127.0.0.1:{}\"\n", 9000 + i))
        .collect();
    let d = dir.path().join("many");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("a.toml"),
        format!("command = [\"/bin/true\"]\n{many}"),
    )
    .unwrap();
    let o = check(&[&d]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("at most 16"));
}

#[test]
fn a_port_taken_by_someone_else_is_a_failed_start_that_disturbs_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let other = free_port();
    let p = Paddock::with_apps(
        "listen-taken",
        &[
            (
                "busy",
                &server_app(port, "x", "[restart]\npolicy = \"never\""),
            ),
            ("fine", &server_app(other, "y", "")),
        ],
    )
    .start();
    let st = p.wait_state("busy", "FATAL", Duration::from_secs(10));
    assert!(
        st.message.contains(&format!("127.0.0.1:{port}")) && st.message.contains("in use"),
        "{st:?}"
    );
    p.wait_state("fine", "READY", Duration::from_secs(10));
    assert!(
        get(&format!("127.0.0.1:{other}"))
            .unwrap()
            .contains("tag=y")
    );
    // Once the port is free, a start binds it.
    drop(taken);
    let o = p.cli(&["start", "busy"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(get(&format!("127.0.0.1:{port}")).unwrap().contains("tag=x"));
}

#[test]
fn a_sandboxed_nginx_without_a_network_serves_the_host_through_its_handed_socket() {
    let test = "a_sandboxed_nginx_without_a_network_serves_the_host_through_its_handed_socket";
    if skip_sandbox(test, "level sandbox needs root (CI runs as root)") {
        return;
    }
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!("SKIPPED {test}: needs nginx (apt-get install nginx)");
        return;
    }
    let store = bundle_store("listen", &[("/usr/sbin/nginx", "nginx")]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = Scratch::new("listen-sbx-nginx-conf");
    std::fs::write(
        conf.path().join("nginx.conf"),
        nginx_conf(
            "/tmp",
            Some("nobody nogroup"),
            &format!("listen {addr}; location / {{ return 200 \"sandboxed\\n\"; }}"),
        ),
    )
    .unwrap();
    // Its own network namespace (the default: loopback only), no tcp_bind: the app cannot
    // listen on the host, yet serves the host through the socket paddock hands it.
    let app = format!(
        "isolation = \"sandbox\"\nbundle = \"nginx\"\ncommand = [\"/usr/sbin/nginx\", \"-e\", \"stderr\", \"-p\", \"/tmp\", \"-c\", \"{c}/nginx.conf\"]\n\
         stop_signal = \"QUIT\"\nenv = {{ NGINX = \"3;\" }}\n\
         [[listen]]\naddress = \"{addr}\"\n\
         [sandbox]\nread_only = [\"{c}\"]\ncapabilities = [\"SETUID\", \"SETGID\", \"CHOWN\"]\n",
        c = conf.path().display()
    );
    let p = Paddock::with_apps("listen-sandbox", &[("nginx", &app)])
        .start_with(&["--store".as_ref(), store.as_os_str()]);
    let st = p.wait_state("nginx", "READY", Duration::from_secs(20));
    assert!(st.sandbox.is_some(), "{st:?}");
    wait_for(
        Duration::from_secs(10),
        "the sandboxed nginx to answer",
        || get(&addr).is_ok(),
    );
    // LISTEN_PID is the app's pid as it sees it: 1, the init of its pid namespace.
    let env = std::fs::read(format!("/proc/{}/environ", st.pid.unwrap())).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.split('\0').any(|v| v == "LISTEN_PID=1"), "{env}");
    assert!(env.split('\0').any(|v| v == "LISTEN_FDS=1"), "{env}");
    // Its network namespace is not the host's.
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(ns(st.pid.unwrap()), ns(std::process::id() as i32));
    let hammer = Hammer::start(&addr, 2);
    for _ in 0..10 {
        let o = p.cli(&["restart", "nginx"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        p.wait_state("nginx", "READY", Duration::from_secs(20));
        get(&addr).unwrap();
    }
    let (ok, failures) = hammer.finish();
    assert!(failures.is_empty(), "{ok} answered; failed: {failures:?}");
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn a_readiness_descriptor_above_the_sockets_and_a_reexec_keep_them_in_place() {
    let port = free_port();
    let dir = Scratch::new("listen-reexec");
    let sock = dir.path().join("app.sock");
    // Readiness on descriptor 10 (one of paddock's reserved slots for sockets): the socket is
    // still descriptor 3.
    let app = format!(
        "command = [\"/bin/bash\", \"-c\", \"echo >&10; exec {} {} r\"]\nstop_timeout = \"5s\"\n[readiness]\nnotify_fd = 10\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n[[listen]]\naddress = \"{}\"\n",
        python(),
        serve_py().display(),
        sock.display()
    );
    let p = Paddock::with_apps("listen-reexec", &[("web", &app)]).start();
    let pid = p.wait_state("web", "READY", Duration::from_secs(10)).pid;
    let body = get(&format!("127.0.0.1:{port}")).unwrap();
    assert!(body.contains("fds=2"), "{body}");
    // paddock re-executes itself: the app keeps running, the Unix socket file stays, and a
    // restart afterwards hands over the same sockets.
    let o = p.cli(&["reexec"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(10), "paddock back", || {
        p.client.request("GET", "/v1/version", None).is_ok()
    });
    assert_eq!(p.app("web").pid, pid);
    assert!(sock.exists(), "the socket file outlives the re-exec");
    let ask_unix = || {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut b = String::new();
        c.read_to_string(&mut b).ok()?;
        Some(b)
    };
    assert!(ask_unix().is_some_and(|b| b.contains("tag=r")));
    let o = p.cli(&["restart", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = p.wait_state("web", "READY", Duration::from_secs(10)).pid;
    assert_ne!(again, pid);
    let b = ask_unix().expect("the Unix socket after the restart");
    assert!(b.contains(&format!("pid={}", again.unwrap())), "{b}");
    assert!(get(&format!("127.0.0.1:{port}")).is_ok());
}
