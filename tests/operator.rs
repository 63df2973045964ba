//! What an operator coming from supervisord or systemd runs into: every config error in one
//! run, unknown names refused, what `update` did, the status table and probe, Prometheus over
//! TCP, `paddock import`. Against a real `paddock serve` and real processes.

mod common;
use common::*;
use std::time::Duration;

const SLEEPER: &str = "command = [\"/bin/sleep\", \"1000\"]\nstop_timeout = \"2s\"\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The four broken files of issue 18, plus a cycle between two others: one run of `check`
/// names every error, in file and line order, with the likely key or app.
#[test]
fn check_reports_every_error_of_every_file_in_one_run() {
    let s = Scratch::new("allerrs");
    let d = s.path();
    let w = |n: &str, t: &str| std::fs::write(d.join(format!("{n}.toml")), t).unwrap();
    w(
        "a-web",
        "command = [\"/bin/true\"]\nstop_timout = \"5s\"\nstopsignal = \"INT\"\n",
    );
    w(
        "b-cache",
        "command = [\"/bin/true\"]\n[restart]\npolcy = \"always\"\nbackoff_max = 30\n",
    );
    w(
        "c-worker",
        "command = [\"/bin/true\"]\nafter = [\"zzz\", \"a-wbe\"]\n",
    );
    w("d-syntax", "command = [\"/bin/true\"\n");
    w(
        "e-loop",
        "command = [\"/bin/true\"]\nrequires = [\"f-loop\"]\n",
    );
    w(
        "f-loop",
        "command = [\"/bin/true\"]\n\nafter = [\"e-loop\"]\n",
    );
    let out = check(&[d]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let want = [
        "a-web.toml:2:1: key `stop_timout`: unknown field `stop_timout`; did you mean `stop_timeout`?",
        "a-web.toml:3:1: key `stopsignal`: unknown field `stopsignal`; did you mean `stop_signal`?",
        "b-cache.toml:3:1: key `restart.polcy`: unknown field `polcy`; did you mean `policy`?",
        "b-cache.toml:4:15: key `restart.backoff_max`:",
        "c-worker.toml:2:1: depends on \"zzz\", but no app has that name (known:",
        "c-worker.toml:2:1: depends on \"a-wbe\", but no app has that name; did you mean \"a-web\"?",
        "d-syntax.toml:",
        "e-loop.toml:2:1: dependency cycle: e-loop -> f-loop -> e-loop",
    ];
    let mut at = 0;
    for w in want {
        let Some(i) = err[at..].find(w) else {
            panic!("missing or out of order: {w}\n---\n{err}");
        };
        at += i + w.len();
    }
    assert!(err.contains("8 errors found"), "{err}");
    // serve refuses the same directory with the same list, and starts nothing.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(d)
        .arg("--socket")
        .arg(d.join("sock"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .env("PADDOCK_CGROUP_NAME", cgroup_name())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("did you mean `stop_signal`?"), "{err}");
    assert!(err.contains("dependency cycle: e-loop -> f-loop"), "{err}");
}

/// `paddock stop nosuch all` used to stop everything and exit 0. Every verb refuses unknown
/// names, beside `all` too, names the likely app, and changes nothing.
#[test]
fn unknown_names_are_refused_in_every_verb_and_nothing_changes() {
    let p = Paddock::with_apps("unknown", &[("web", SLEEPER), ("db", SLEEPER)]).start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    p.wait_state("db", "READY", Duration::from_secs(10));
    let pids: Vec<_> = p.status().iter().map(|a| a.pid).collect();
    for args in [
        &["stop", "nosuch", "all"][..],
        &["stop", "all", "wbe"],
        &["restart", "web", "nosuch"],
        &["start", "nosuch"],
        &["signal", "HUP", "all", "nosuch"],
        &["status", "web", "nosuch"],
        &["pid", "nosuch"],
        &["tail", "nosuch"],
    ] {
        let out = p.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("no such app"), "{args:?}: {err}");
        assert!(!err.contains("no such app: all"), "{args:?}: {err}");
    }
    let out = p.cli(&["stop", "all", "wbe"]);
    assert!(
        text(&out.stderr).contains("no such app: wbe (did you mean web?)"),
        "{}",
        text(&out.stderr)
    );
    let out = p.cli(&["restart", "nosuch", "nope"]);
    assert!(
        text(&out.stderr).contains("no such apps: nosuch, nope"),
        "{}",
        text(&out.stderr)
    );
    let now: Vec<_> = p.status().iter().map(|a| a.pid).collect();
    assert_eq!(pids, now, "nothing was stopped or restarted");
    assert!(p.status().iter().all(|a| a.state == "READY"));
}

/// `update` says per app what it did, and brings back an autostart app that went FATAL once
/// its file changed (supervisorctl's `update` habit).
#[test]
fn update_reports_per_app_and_starts_a_fixed_fatal_app() {
    let broken = "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 1\n";
    let p = Paddock::with_apps(
        "updreport",
        &[
            ("keep", SLEEPER),
            ("change", SLEEPER),
            ("fatal", broken),
            ("held", SLEEPER),
            ("gone", SLEEPER),
        ],
    )
    .start();
    for a in ["keep", "change", "held", "gone"] {
        p.wait_state(a, "READY", Duration::from_secs(10));
    }
    p.wait_state("fatal", "FATAL", Duration::from_secs(10));
    assert!(p.cli(&["stop", "held"]).status.success());
    let sleeper2 = SLEEPER.replace("1000", "1001");
    p.write_app("change", &sleeper2);
    p.write_app("fatal", &sleeper2);
    p.write_app("held", &sleeper2);
    std::fs::remove_file(p.apps_dir().join("gone.toml")).unwrap();
    p.write_app("added", SLEEPER);
    p.write_app("manual", &format!("{SLEEPER}autostart = false\n"));
    let out = p.cli(&["update"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = text(&out.stdout);
    for line in [
        "added: added, started",
        "change: changed, restarted",
        "fatal: changed, started",
        "gone: stopped and removed",
        "held: changed, not running: applies at next start",
        "keep: unchanged",
        "manual: added, not started (autostart = false)",
    ] {
        assert!(
            got.lines().any(|l| l == line),
            "missing {line:?} in:\n{got}"
        );
    }
    p.wait_state("fatal", "READY", Duration::from_secs(10));
    p.wait_state("added", "READY", Duration::from_secs(10));
    assert_eq!(p.app("held").state, "STOPPED");
    assert_eq!(p.app("manual").state, "STOPPED");
    // --json: the same, as data; a second update changes nothing.
    let out = p.cli(&["update", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps = v["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 6, "{v}");
    assert!(
        apps.iter()
            .all(|a| a["change"] == "unchanged" && a["did"] == "nothing"),
        "{v}"
    );
    assert_eq!(v["applied"], true);
}

/// The status table has HEALTH, one size format, INFO cut to the terminal width (`COLUMNS`
/// here) and whole for a named app; `status --probe` is 0 only when every app is as its file
/// wants it, and names the ones that are not.
#[test]
fn status_table_and_probe() {
    let long = format!(
        "command = [\"/bin/sh\", \"-c\", \"exit 7\"]\n[restart]\npolicy = \"never\"\n# {}\n",
        "x".repeat(10)
    );
    let p = Paddock::with_apps(
        "statusprobe",
        &[
            ("web", SLEEPER),
            (
                "checked",
                &format!("{SLEEPER}[health]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\ninterval = \"100ms\"\n"),
            ),
            ("manual", &format!("{SLEEPER}autostart = false\n")),
            ("oneshot", "command = [\"/bin/true\"]\n[restart]\npolicy = \"on-failure\"\n"),
        ],
    )
    .start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    p.wait_state("oneshot", "EXITED", Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "health verdict", || {
        p.app("checked").health == Some(paddock::supervise::Health::Healthy)
    });
    let out = p.cli(&["status", "--probe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "ok: 4 apps as their files want\n");
    let out = p.cli(&["status"]);
    let t = text(&out.stdout);
    assert!(t.lines().next().unwrap().contains(" HEALTH "), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("checked") && l.contains(" healthy")),
        "{t}"
    );
    // The API's table (`?format=table`) is the CLI's, rendered by the server; any other format
    // is refused.
    let r = p
        .client
        .request("GET", "/v1/apps?format=table", None)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.lines().next().unwrap().contains(" HEALTH "),
        "{}",
        r.body
    );
    assert!(
        r.body
            .lines()
            .any(|l| l.starts_with("checked") && l.contains(" healthy")),
        "{}",
        r.body
    );
    let r = p
        .client
        .request("GET", "/v1/apps?format=xml", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    // `width` (the CLI's terminal) is for the table only, and a number of columns.
    for (q, says) in [
        (
            "format=table&width=0",
            "width=0: expected a number of columns",
        ),
        (
            "format=table&width=wide",
            "width=wide: expected a number of columns",
        ),
        (
            "format=table&width=99999",
            "width=99999: expected a number of columns",
        ),
        ("width=80", "width= is for format=table only"),
    ] {
        let r = p
            .client
            .request("GET", &format!("/v1/apps?{q}"), None)
            .unwrap();
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains(says), "{q}: {}", r.body);
    }
    // An autostart app stopped by hand, and one that failed: the probe says so, exit 1.
    assert!(p.cli(&["stop", "web"]).status.success());
    p.write_app("bad", &long);
    assert!(p.cli(&["update"]).status.success());
    p.wait_state("bad", "EXITED", Duration::from_secs(10));
    let out = p.cli(&["status", "--probe"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out.stdout);
    assert!(
        t.contains("web: STOPPED, but its file says autostart: start it"),
        "{t}"
    );
    assert!(t.contains("bad: EXITED, not READY: exit status 7"), "{t}");
    assert!(!t.contains("manual") && !t.contains("oneshot"), "{t}");
    // A failing health check: INFO is cut to COLUMNS
    // in the table, and whole for the named app.
    let long = "y".repeat(300);
    p.write_app(
        "sick",
        &format!("{SLEEPER}[health]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo {long}; exit 1\"]\ninterval = \"100ms\"\nfailures = 1000\n"),
    );
    assert!(p.cli(&["update"]).status.success());
    wait_for(Duration::from_secs(10), "a failing check", || {
        p.app("sick").message.contains("health check failing")
    });
    let wide = std::process::Command::new(BIN)
        .args(["status"])
        .env("PADDOCK_SOCKET", p.socket())
        .env("COLUMNS", "130")
        .output()
        .unwrap();
    let t = text(&wide.stdout);
    assert_eq!(wide.status.code(), Some(3));
    for l in t.lines() {
        assert!(l.chars().count() <= 130, "{l:?}");
    }
    let sick = t.lines().find(|l| l.starts_with("sick")).unwrap();
    assert!(sick.ends_with('…') && sick.contains(" unknown "), "{sick}");
    let t = text(&p.cli(&["status", "sick"]).stdout);
    assert!(
        t.contains("in a row): check command: exit status 1\n"),
        "{t}"
    );
    // Not reachable: a probe says unhealthy (1), never 2 (reserved by container engines).
    let out = std::process::Command::new(BIN)
        .args(["status", "--probe"])
        .env("PADDOCK_SOCKET", "/nonexistent/paddock.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn http(port: u16, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `serve --metrics-listen`: Prometheus scrapes over TCP; GET /metrics only, nothing that
/// controls; one series per app and state; bounded connections; a bad address refused.
#[test]
fn metrics_over_tcp_are_read_only_and_stable() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let p = Paddock::with_apps("metricstcp", &[("web", SLEEPER)])
        .start_with(&["--metrics-listen".as_ref(), addr.as_ref()]);
    p.wait_state("web", "READY", Duration::from_secs(10));
    let pid = p.app("web").pid;
    let r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    for st in [
        "STOPPED", "STARTING", "RUNNING", "READY", "BACKOFF", "STOPPING", "EXITED", "FATAL",
    ] {
        let want = format!(
            "paddock_app_state{{app=\"web\",state=\"{st}\"}} {}",
            u8::from(st == "READY")
        );
        assert!(r.contains(&want), "{want} missing:\n{r}");
    }
    assert!(
        r.contains("paddock_app_restarts_total{app=\"web\"} 0"),
        "{r}"
    );
    assert!(r.contains("paddock_app_uptime_seconds{app=\"web\"}"), "{r}");
    assert!(r.contains("paddock_build_info{version=\""), "{r}");
    // After a stop, the same series, the 1 moved.
    assert!(p.cli(&["stop", "web"]).status.success());
    let r = http(port, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.contains("paddock_app_state{app=\"web\",state=\"READY\"} 0"),
        "{r}"
    );
    assert!(
        r.contains("paddock_app_state{app=\"web\",state=\"STOPPED\"} 1"),
        "{r}"
    );
    assert!(p.cli(&["start", "web"]).status.success());
    let pid = p.app("web").pid.or(pid);
    // Nothing else is served: no control verb, no status, other methods refused.
    for (req, code) in [
        (
            "POST /v1/apps/web/stop HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "404",
        ),
        ("GET /v1/apps HTTP/1.1\r\n\r\n", "404"),
        (
            "POST /v1/shutdown HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "404",
        ),
        ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"),
        ("garbage\r\n\r\n", "400"),
    ] {
        let r = http(port, req);
        assert!(r.starts_with(&format!("HTTP/1.1 {code}")), "{req:?}: {r}");
    }
    assert_eq!(p.app("web").pid, pid, "still running, untouched");
    assert_eq!(p.app("web").state, "READY");
    // Bounded: idle connections hold at most 64 slots; more are answered 503 at once, and
    // a scrape works again once they are gone.
    let idle: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = http(port, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    drop(idle);
    wait_for(Duration::from_secs(10), "a slot again", || {
        http(port, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200")
    });
    // A bad or busy address: serve refuses to start, saying why.
    for (a, want) in [
        ("localhost", "expected an address and port"),
        (addr.as_str(), "cannot listen: Address already in use"),
    ] {
        let s = Scratch::new("metricsbad");
        std::fs::create_dir_all(s.path().join("apps")).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(s.path().join("apps"))
            .arg("--socket")
            .arg(s.path().join("sock"))
            .arg("--state-dir")
            .arg(s.path().join("state"))
            .args(["--metrics-listen", a])
            .env("PADDOCK_CGROUP_NAME", cgroup_name())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
    // kill -9 of paddock: the descriptor holder keeps the metrics listener, so a scrape meanwhile
    // waits in its backlog and is answered by the next paddock, on the same socket.
    let mut p = p;
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let scrape = std::thread::spawn(move || http(port, "GET /metrics HTTP/1.1\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    let p = p.start_with(&["--metrics-listen".as_ref(), addr.as_ref()]);
    let r = scrape.join().unwrap();
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(
        r.contains("paddock_app_state{app=\"web\",state=\"READY\"} 1"),
        "{r}"
    );
    assert_eq!(p.app("web").pid, pid, "adopted, not restarted");
    // Without --metrics-listen the next paddock lets the held socket go.
    let mut p = p;
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let p = p.start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    wait_for(Duration::from_secs(5), "the port to be free", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
}

/// Issue 18's port: a supervisord config with redis on 6390, memcached with `-u nobody` and a
/// shell worker with env and a working directory (two processes) gives running apps with no
/// hand edits; what could not be mapped is reported with its line and why.
#[test]
fn import_a_supervisord_config_and_run_it() {
    if !is_root() {
        eprintln!(
            "SKIPPED import_a_supervisord_config_and_run_it: needs root (memcached -u nobody)"
        );
        return;
    }
    for p in ["/usr/bin/redis-server", "/usr/bin/memcached"] {
        if !std::path::Path::new(p).exists() {
            eprintln!(
                "SKIPPED import_a_supervisord_config_and_run_it: needs {p} (apt-get install redis-server memcached)"
            );
            return;
        }
    }
    if std::net::TcpStream::connect(("127.0.0.1", 6390)).is_ok() {
        eprintln!("SKIPPED import_a_supervisord_config_and_run_it: port 6390 is in use");
        return;
    }
    let s = Scratch::new("import");
    let work = s.path().join("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let mc_port = free_port();
    let conf = format!(
        r#"; a typical supervisord.conf
[unix_http_server]
file=/var/run/supervisor.sock

[supervisord]
logfile=/var/log/supervisord.log
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:redis]
command=/usr/bin/redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no
autostart=true
autorestart=true
startsecs=2
stdout_logfile={logs}/redis.log
stderr_logfile={logs}/missing/redis.err
priority=10

[program:memcached]
command=/usr/bin/memcached -u nobody -l 127.0.0.1 -p {mc_port} -m 16
autorestart=true
stopwaitsecs=5
stopsignal=TERM

[program:worker]
command=/bin/sh -c 'while true; do echo "$GREETING from $(pwd) as %(process_num)d"; sleep 0.2; done'
directory={work}
environment=GREETING="hello world",MODE=test
numprocs=2
process_name=%(program_name)s_%(process_num)02d
redirect_stderr=true
stopasgroup=true
stdout_logfile={logs}/worker-%(process_num)d.log
"#,
        work = work.display(),
        logs = s.path().display(),
    );
    let conf_path = s.path().join("supervisord.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let p = Paddock::with_apps("import-run", &[]);
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg(&conf_path)
        .arg("--out")
        .arg(p.apps_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report = text(&out.stdout);
    for want in [
        "wrote ",
        "supervisord.conf:1", // the [unix_http_server] section is noted, by line
        "[program:redis] startsecs: mapped to [restart] stable_after",
        "[program:redis] stderr_logfile: not mapped: the directory",
        "[program:redis] priority: not mapped: paddock orders by `after`/`requires`",
        "[program:worker] numprocs: mapped to instances = 2: apps worker@0 … worker@1",
        "[program:worker] process_name: not mapped: instances are named worker@0 … worker@1",
        "[rpcinterface:supervisor]: not mapped",
    ] {
        assert!(report.contains(want), "{want:?} missing:\n{report}");
    }
    for f in ["redis", "memcached", "worker"] {
        assert!(p.apps_dir().join(format!("{f}.toml")).is_file(), "{f}");
    }
    // A second import does not overwrite.
    let again = std::process::Command::new(BIN)
        .arg("import")
        .arg(&conf_path)
        .arg("--out")
        .arg(p.apps_dir())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("exists; nothing was written (use --force"));
    // Run them, as written.
    let p = p.start();
    for a in ["redis", "memcached", "worker@0", "worker@1"] {
        p.wait_state(a, "READY", Duration::from_secs(20));
    }
    wait_for(Duration::from_secs(10), "redis answers on 6390", || {
        std::process::Command::new("redis-cli")
            .args(["-p", "6390", "ping"])
            .output()
            .is_ok_and(|o| text(&o.stdout).trim() == "PONG")
    });
    wait_for(Duration::from_secs(10), "memcached answers", || {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", mc_port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 64];
        c.write_all(b"version\r\n").is_ok()
            && c.read(&mut b).is_ok_and(|n| b[..n].starts_with(b"VERSION"))
    });
    // memcached dropped to nobody itself.
    let mc = p.app("memcached").pid.unwrap();
    let st = std::fs::read_to_string(format!("/proc/{mc}/status")).unwrap();
    let uid = st
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(!uid.contains("\t0\t"), "{uid}");
    // stdout_logfile: each instance writes its own file, named by %(process_num) (now %i),
    // and stderr goes with it (redirect_stderr); redis's stdout is in the file it named.
    for n in [0, 1] {
        let want = format!("hello world from {} as {n}", work.display());
        wait_for(Duration::from_secs(10), "the worker's line", || {
            std::fs::read_to_string(s.path().join(format!("worker-{n}.log")))
                .is_ok_and(|l| l.contains(&want))
        });
    }
    wait_for(Duration::from_secs(10), "redis's log in redis.log", || {
        std::fs::read_to_string(s.path().join("redis.log"))
            .is_ok_and(|l| l.contains("Ready to accept connections"))
    });
    assert!(p.shutdown().success());
}

/// A systemd unit imports too; a file that is neither format is refused precisely.
#[test]
fn import_a_systemd_unit_and_refuse_the_unknown() {
    let s = Scratch::new("import-unit");
    let unit = s.path().join("ticker.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=Ticker\nAfter=network.target\n\n[Service]\nExecStart=/bin/sh -c 'echo tick; sleep 1000'\nEnvironment=A=1\nRestart=always\nRestartSec=1\nProtectSystem=strict\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let p = Paddock::with_apps("import-unit-run", &[]);
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg(&unit)
        .arg("--out")
        .arg(p.apps_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = text(&out.stdout);
    assert!(
        r.contains("ticker.service:10: [Service] ProtectSystem: not mapped"),
        "{r}"
    );
    assert!(
        r.contains("ticker.service:3: [Unit] After: not mapped"),
        "{r}"
    );
    let p = p.start();
    p.wait_state("ticker", "READY", Duration::from_secs(10));
    let other = s.path().join("x.ini");
    std::fs::write(&other, "[section]\nk=v\n").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg(&other)
        .arg("--out")
        .arg(s.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("neither a systemd unit (NAME.service) nor a supervisord config"),
        "{}",
        text(&out.stderr)
    );
    assert!(!s.path().join("o").exists());
}
