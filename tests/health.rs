//! Readiness, health checks and ordering against real processes.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// A python3 program that speaks sd_notify (in a TOML literal string: no escapes).
fn notify_py(body: &str) -> String {
    format!(
        "command = [\"python3\", \"-c\", '''\nimport os, socket, time\ndef notify(m):\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n    s.sendto(m.encode(), os.environ['NOTIFY_SOCKET'])\n{body}\n''']\n"
    )
}

fn stamp(file: &std::path::Path, what: &str) -> String {
    format!("echo {what} $(date +%s%N) >> {}", file.display())
}

fn stamps(file: &std::path::Path) -> Vec<(String, u64)> {
    read_lines(file)
        .iter()
        .filter_map(|l| {
            let (w, t) = l.rsplit_once(' ')?;
            Some((w.to_string(), t.parse().ok()?))
        })
        .collect()
}

fn when(file: &std::path::Path, what: &str) -> u64 {
    // READY of a plain app means "spawned": give its shell a moment to write.
    wait_for(Duration::from_secs(5), what, || {
        stamps(file).iter().any(|(w, _)| w == what)
    });
    stamps(file)
        .into_iter()
        .find(|(w, _)| w == what)
        .unwrap_or_else(|| panic!("no {what} in {:?}", read_lines(file)))
        .1
}

#[test]
fn sd_notify_readiness_gates_dependants() {
    let s = Scratch::new("notify");
    let log = s.path().join("log");
    let db = notify_py(&format!(
        "time.sleep(0.5)\nopen('{0}', 'a').write('db-ready %d\\n' % time.time_ns())\nnotify('STATUS=accepting connections\\nREADY=1')\ntime.sleep(1000)",
        log.display()
    ));
    let web = format!(
        "command = [\"/bin/sh\", \"-c\", \"{}; exec sleep 1000\"]\nafter = [\"db\"]\n",
        stamp(&log, "web-start")
    );
    let p = Paddock::with_apps(
        "notify",
        &[
            ("db", &format!("{db}[readiness]\nnotify = true\n")),
            ("web", &web),
        ],
    )
    .start();
    let st = p.app("web");
    assert_eq!(st.state, "STARTING");
    assert!(
        st.waiting_for.iter().any(|w| w.starts_with("db: ")),
        "{st:?}"
    );
    assert!(st.message.starts_with("waiting for db: "), "{}", st.message);
    let db_st = p.app("db");
    assert!(
        db_st.state == "RUNNING" || db_st.state == "READY",
        "{db_st:?}"
    );
    p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(
        p.app("db").message,
        "accepting connections",
        "STATUS= is shown"
    );
    assert!(
        when(&log, "web-start") >= when(&log, "db-ready"),
        "web started before db was ready: {:?}",
        read_lines(&log)
    );
}

#[test]
fn notify_fd_readiness_gates_dependants() {
    let s = Scratch::new("notifyfd");
    let log = s.path().join("log");
    let db = format!(
        "command = [\"/bin/sh\", \"-c\", \"sleep 0.5; {}; echo >&5; exec sleep 1000\"]\n[readiness]\nnotify_fd = 5\n",
        stamp(&log, "db-ready")
    );
    let web = format!(
        "command = [\"/bin/sh\", \"-c\", \"{}; exec sleep 1000\"]\nrequires = [\"db\"]\n",
        stamp(&log, "web-start")
    );
    let p = Paddock::with_apps("notifyfd", &[("db", &db), ("web", &web)]).start();
    assert_eq!(
        p.app("db").state,
        "RUNNING",
        "not ready before it writes to fd 5"
    );
    p.wait_state("web", "READY", Duration::from_secs(10));
    assert!(when(&log, "web-start") >= when(&log, "db-ready"));
    // `paddock start web` while it is up answers at once; `start` of a fresh app waits for READY.
    let out = p.cli(&["restart", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.app("db").state, "READY", "restart waits for readiness");
}

#[test]
fn tcp_health_readiness_gates_dependants() {
    let s = Scratch::new("tcpready");
    let log = s.path().join("log");
    let port = free_port();
    let db = format!(
        "command = [\"python3\", \"-c\", \"import socket,time; time.sleep(0.6); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',{port})); s.listen(); open('{0}','a').write('db-listening %d\\\\n' % time.time_ns()); time.sleep(1000)\"]\n[readiness]\nhealth = true\n[health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"100ms\"\n",
        log.display()
    );
    let web = format!(
        "command = [\"/bin/sh\", \"-c\", \"{}; exec sleep 1000\"]\nafter = [\"db\"]\n",
        stamp(&log, "web-start")
    );
    let p = Paddock::with_apps("tcpready", &[("db", &db), ("web", &web)]).start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    assert!(when(&log, "web-start") >= when(&log, "db-listening"));
    let db = p.app("db");
    assert_eq!(db.health, Some(paddock::supervise::Health::Healthy));
}

#[test]
fn failing_health_check_restarts_after_exactly_n_misses() {
    let s = Scratch::new("misses");
    let ok = s.path().join("ok");
    let checks = s.path().join("checks");
    std::fs::write(&ok, "").unwrap();
    let app = format!(
        "command = [\"/bin/sleep\", \"1000\"]\n[health]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"if [ -f {0} ]; then echo pass >> {1}; else echo fail >> {1}; exit 1; fi\"]\ninterval = \"200ms\"\nfailures = 3\n",
        ok.display(),
        checks.display()
    );
    let p = Paddock::with_apps("misses", &[("a", &app)]).start();
    let pid = p.wait_state("a", "READY", Duration::from_secs(5)).pid;
    wait_for(Duration::from_secs(5), "healthy", || {
        p.app("a").health == Some(paddock::supervise::Health::Healthy)
    });
    std::fs::remove_file(&ok).unwrap();
    wait_for(Duration::from_secs(10), "restart", || {
        p.app("a").pid.is_some_and(|x| Some(x) != pid)
    });
    std::fs::write(&ok, "").unwrap();
    let lines = read_lines(&checks);
    let fails = lines.iter().rev().take_while(|l| *l == "fail").count();
    assert_eq!(
        fails, 3,
        "restarted after exactly 3 failed checks: {lines:?}"
    );
    let st = p.app("a");
    assert_eq!(st.restarts, 1);
    assert!(
        st.last_exit
            .unwrap()
            .description
            .contains("health check failed 3 times in a row")
    );
    wait_for(Duration::from_secs(5), "healthy again", || {
        p.app("a").health == Some(paddock::supervise::Health::Healthy)
    });
}

#[test]
fn http_health_check_passes_and_fails() {
    let s = Scratch::new("http");
    std::fs::write(s.path().join("healthz"), "all ok\n").unwrap();
    let port = free_port();
    let app = format!(
        "command = [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\nworkdir = \"{}\"\n[readiness]\nhealth = true\n[health]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/healthz\"\nexpect_body = \"ok\"\ninterval = \"100ms\"\nfailures = 2\n",
        s.path().display()
    );
    let p = Paddock::with_apps("http", &[("web", &app)]).start();
    let st = p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(st.health_detail.as_deref(), Some("ok"));
    let m = p.client.request("GET", "/metrics", None).unwrap().body;
    assert!(m.contains("paddock_app_healthy{app=\"web\"} 1"), "{m}");
    std::fs::write(s.path().join("healthz"), "degraded\n").unwrap();
    wait_for(Duration::from_secs(10), "restart on a bad body", || {
        p.app("web").restarts == 1
    });
    let st = p.app("web");
    assert!(
        st.last_exit
            .unwrap()
            .description
            .contains("health check failed 2 times"),
        "{:?}",
        p.app("web")
    );
}

#[test]
fn flapping_health_check_ends_fatal() {
    let s = Scratch::new("flap");
    let n = s.path().join("n");
    // Passes every other time: healthy, then failing, forever.
    let app = format!(
        "command = [\"/bin/sleep\", \"1000\"]\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 3\n[health]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo x >> {0}; [ $(( $(wc -l < {0}) % 2 )) = 1 ]\"]\ninterval = \"100ms\"\nfailures = 1\n",
        n.display()
    );
    let p = Paddock::with_apps("flap", &[("a", &app)]).start();
    let st = p.wait_state("a", "FATAL", Duration::from_secs(20));
    assert_eq!(st.failures, 3);
    assert!(
        st.message.contains("gave up after 3 failed starts"),
        "{}",
        st.message
    );
}

#[test]
fn never_ready_is_retried_then_fatal() {
    let app = "command = [\"/bin/sleep\", \"1000\"]\n[readiness]\nnotify = true\ntimeout = \"300ms\"\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 2\n";
    let p = Paddock::with_apps("neverready", &[("a", app)]).start();
    let t = Instant::now();
    let out = p.cli(&["start", "a"]);
    assert!(!out.status.success());
    let st = p.wait_state("a", "FATAL", Duration::from_secs(10));
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "two timeouts of 300ms"
    );
    assert!(
        st.last_exit
            .unwrap()
            .description
            .contains("not ready within 300ms")
    );
    assert_eq!(st.failures, 2);
}

#[test]
fn watchdog_expiry_restarts() {
    let app = notify_py(
        "notify('READY=1')\nfor i in range(5):\n    time.sleep(0.1)\n    notify('WATCHDOG=1')\ntime.sleep(1000)",
    );
    let app = format!("{app}[readiness]\nnotify = true\nwatchdog = \"400ms\"\n");
    let p = Paddock::with_apps("watchdog", &[("a", &app)]).start();
    let first = p.wait_state("a", "READY", Duration::from_secs(5)).pid;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        p.app("a").pid,
        first,
        "pinged in time: still the same process"
    );
    wait_for(Duration::from_secs(5), "watchdog restart", || {
        p.app("a").restarts >= 1
    });
    let st = p.app("a");
    assert!(
        st.last_exit
            .unwrap()
            .description
            .contains("watchdog: no WATCHDOG=1 for 400ms")
    );
}

#[test]
fn requires_stops_and_restarts_dependants_in_order() {
    let s = Scratch::new("requires");
    let log = s.path().join("log");
    let trap = |name: &str| {
        format!(
            // READY once the trap is set and the start stamped (fd 3: readiness descriptor).
            "command = [\"/bin/sh\", \"-c\", \"trap '{}; exit 0' TERM; {}; echo >&3; while :; do sleep 0.05; done\"]\n[readiness]\nnotify_fd = 3\n",
            stamp(&log, &format!("{name}-stop")),
            stamp(&log, &format!("{name}-start"))
        )
    };
    let web = format!("requires = [\"db\"]\n{}", trap("web"));
    let p = Paddock::with_apps("requires", &[("db", &trap("db")), ("web", &web)]).start();
    p.wait_state("web", "READY", Duration::from_secs(5));
    let out = p.cli(&["stop", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web_st = p.wait_state("web", "STARTING", Duration::from_secs(5));
    assert_eq!(web_st.waiting_for, vec!["db: stopped"]);
    assert!(
        when(&log, "web-stop") <= when(&log, "db-stop"),
        "the dependant stops first: {:?}",
        read_lines(&log)
    );
    let out = p.cli(&["start", "db"]);
    assert!(out.status.success());
    p.wait_state("web", "READY", Duration::from_secs(5));
    // `start web` while db is stopped explains what it waits for.
    p.cli(&["stop", "db"]);
    let out = p.cli(&["start", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for db, which is not running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shutdown_order_is_the_reverse_of_start_order() {
    let s = Scratch::new("order");
    let log = s.path().join("log");
    let app = |name: &str, deps: &str| {
        format!(
            "after = [{deps}]\ncommand = [\"/bin/sh\", \"-c\", \"trap '{}; exit 0' TERM; {}; echo >&3; while :; do sleep 0.05; done\"]\n[readiness]\nnotify_fd = 3\n",
            stamp(&log, &format!("{name}-stop")),
            stamp(&log, &format!("{name}-start"))
        )
    };
    let p = Paddock::with_apps(
        "order",
        &[
            ("c", &app("c", "\"b\"")),
            ("a", &app("a", "")),
            ("b", &app("b", "\"a\"")),
        ],
    )
    .start();
    p.wait_state("c", "READY", Duration::from_secs(5));
    assert!(p.shutdown().success());
    let order: Vec<String> = stamps(&log).into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        order,
        vec![
            "a-start", "b-start", "c-start", "c-stop", "b-stop", "a-stop"
        ]
    );
}

#[test]
fn dependency_cycle_is_rejected_with_the_cycle_named() {
    let s = Scratch::new("cycle");
    std::fs::write(
        s.path().join("a.toml"),
        "command = [\"/bin/true\"]\nafter = [\"b\"]\n",
    )
    .unwrap();
    std::fs::write(
        s.path().join("b.toml"),
        "command = [\"/bin/true\"]\n\nrequires = [\"a\"]\n",
    )
    .unwrap();
    let out = check(&[s.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.toml:2:1: dependency cycle: a -> b -> a"),
        "{err}"
    );
    std::fs::write(
        s.path().join("b.toml"),
        "command = [\"/bin/true\"]\nafter = [\"nope\"]\n",
    )
    .unwrap();
    let out = check(&[s.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.toml:2:1: depends on \"nope\", but no app has that name"),
        "{err}"
    );
}

#[test]
fn essential_app_failure_stops_everything_and_exits_nonzero() {
    let p = Paddock::with_apps(
        "essential",
        &[
            ("core", "command = [\"/bin/sh\", \"-c\", \"sleep 0.2; exit 1\"]\nessential = true\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 2\n"),
            ("other", "command = [\"/bin/sleep\", \"1000\"]"),
        ],
    )
    .start();
    let other = p
        .wait_state("other", "READY", Duration::from_secs(5))
        .pid
        .unwrap();
    let mut p = p;
    let mut child = p.child.take().unwrap();
    let status = wait_child(&mut child, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(1),
        "paddock exits non-zero when an essential app goes FATAL"
    );
    assert!(!alive(other), "everything was stopped first");
}

#[test]
fn events_stream_shows_transitions() {
    let p = Paddock::with_apps(
        "events",
        &[(
            "a",
            "command = [\"/bin/sleep\", \"1000\"]\nautostart = false",
        )],
    )
    .start();
    let mut child = std::process::Command::new(BIN)
        .arg("events")
        .env("PADDOCK_SOCKET", p.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.cli(&["start", "a"]).status.success());
    assert!(p.cli(&["stop", "a"]).status.success());
    let mut seen = vec![];
    while seen.len() < 4 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["app"], "a");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        seen.push(format!(
            "{}>{}",
            v["from"].as_str().unwrap(),
            v["to"].as_str().unwrap()
        ));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        seen,
        vec![
            "STOPPED>STARTING",
            "STARTING>READY",
            "READY>STOPPING",
            "STOPPING>STOPPED"
        ]
    );
}
