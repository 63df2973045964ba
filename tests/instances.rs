//! `instances = N` against real servers: N copies of an app with their own ports (`%i`), pids
//! and log files; a rolling `restart` that keeps all but one answering; `update` changing N;
//! bad files that change nothing.

mod common;
use common::*;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port prefix P such that ports P0..P9 are free now (`%i` appends the instance number).
fn port_prefix() -> u32 {
    for _ in 0..200 {
        let p = free_port() as u32 / 10;
        if !(1000..=6553).contains(&p) {
            continue;
        }
        let free = (0..10)
            .all(|i| std::net::TcpListener::bind(("127.0.0.1", (p * 10 + i) as u16)).is_ok());
        if free {
            return p;
        }
    }
    panic!("no free block of 10 ports");
}

/// busybox httpd on 127.0.0.1:P%i (after a line naming its instance on stdout), READY once
/// its port accepts connections.
fn web_app(prefix: u32, www: &std::path::Path, extra: &str) -> String {
    format!(
        "instances = 4\n\
         command = [\"/bin/sh\", \"-c\", \"echo instance $INSTANCE; exec /usr/bin/busybox httpd -f -p 127.0.0.1:{prefix}%i -h {}\"]\n\
         env = {{ INSTANCE = \"%i\" }}\n\
         stop_timeout = \"2s\"\n\
         {extra}\
         [readiness]\nhealth = true\ntimeout = \"5s\"\n\
         [health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{prefix}%i\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\n",
        www.display()
    )
}

fn answering(prefix: u32, n: u32) -> u32 {
    (0..n)
        .filter(|i| {
            let a: SocketAddr = format!("127.0.0.1:{prefix}{i}").parse().unwrap();
            TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
        })
        .count() as u32
}

fn pids(p: &Paddock, n: u32) -> Vec<i32> {
    (0..n)
        .map(|i| p.app(&format!("web@{i}")).pid.expect("a pid"))
        .collect()
}

fn ok(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_rolling_restart_keeps_three_of_four_answering() {
    let s = Scratch::new("inst-www");
    let prefix = port_prefix();
    let p = Paddock::with_apps("inst-roll", &[("web", &web_app(prefix, s.path(), ""))]).start();
    for i in 0..4 {
        p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
    }
    let before = pids(&p, 4);
    let mut unique = before.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "each instance has its own pid: {before:?}");
    assert_eq!(answering(prefix, 4), 4);
    // `%i` reached the command line and the environment of each.
    for (i, pid) in before.iter().enumerate() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            String::from_utf8_lossy(&cmdline).contains(&format!("127.0.0.1:{prefix}{i}")),
            "web@{i}: {cmdline:?}"
        );
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            env.split(|b| *b == 0)
                .any(|v| v == format!("INSTANCE={i}").as_bytes()),
            "web@{i}: no INSTANCE={i}"
        );
    }
    // `status web` lists the group's instances.
    let st = String::from_utf8_lossy(&p.cli(&["status", "web"]).stdout).to_string();
    for i in 0..4 {
        assert!(st.contains(&format!("web@{i}")), "{st}");
    }

    // A client polls all four ports every ~20 ms throughout the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(vec![]));
    let poller = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = answering(prefix, 4);
                seen.lock().unwrap().push(n);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t0 = Instant::now();
    let out = ok(&p.cli(&["restart", "web"]));
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    eprintln!(
        "rolling restart of 4 took {took:?}; {} samples, min answering {}",
        seen.len(),
        seen.iter().min().unwrap()
    );
    assert!(seen.len() >= 10, "too few samples: {seen:?}");
    assert!(
        seen.iter().all(|&n| n >= 3),
        "fewer than 3 of 4 answered at some moment: {seen:?}"
    );
    assert_eq!(answering(prefix, 4), 4, "all four again at the end");
    for i in 0..4 {
        assert!(out.contains(&format!("web@{i}: started (pid")), "{out}");
    }
    let after = pids(&p, 4);
    for i in 0..4 {
        assert_ne!(before[i], after[i], "web@{i} was restarted");
        assert!(!alive(before[i]));
    }
    // Each instance has its own log file.
    for i in 0..4 {
        let log = p.logs_dir().join(format!("web@{i}.out"));
        wait_for(Duration::from_secs(5), "the instance's log", || {
            read_lines(&log)
                .iter()
                .filter(|l| l.ends_with(&format!("instance {i}")))
                .count()
                == 2
        });
    }

    // One instance alone.
    ok(&p.cli(&["restart", "web@2"]));
    let one = pids(&p, 4);
    assert_eq!(
        (one[0], one[1], one[3]),
        (after[0], after[1], after[3]),
        "only web@2 restarted"
    );
    assert_ne!(one[2], after[2]);
    // stop and start act on the whole group.
    ok(&p.cli(&["stop", "web"]));
    assert_eq!(answering(prefix, 4), 0);
    ok(&p.cli(&["start", "web"]));
    assert_eq!(answering(prefix, 4), 4);
}

#[test]
fn a_roll_stops_at_an_instance_that_does_not_come_back() {
    // An instance exits at once while its marker file exists.
    let s = Scratch::new("inst-bad");
    let prefix = port_prefix();
    let app = format!(
        "instances = 4\n\
         command = [\"/bin/sh\", \"-c\", \"test -e {dir}/broken%i && exit 1; exec /usr/bin/busybox httpd -f -p 127.0.0.1:{prefix}%i -h {dir}\"]\n\
         stop_timeout = \"2s\"\n\
         [restart]\nbackoff_initial = \"1s\"\n\
         [readiness]\nhealth = true\ntimeout = \"5s\"\n\
         [health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{prefix}%i\"\ninterval = \"50ms\"\n",
        dir = s.path().display()
    );
    let p = Paddock::with_apps("inst-stop", &[("web", &app)]).start();
    for i in 0..4 {
        p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
    }
    let before = pids(&p, 4);
    std::fs::write(s.path().join("broken1"), "").unwrap();
    let out = p.cli(&["restart", "web"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("web@0: started (pid"), "{text}");
    assert!(text.contains("web@1: ERROR"), "{text}");
    for i in [2, 3] {
        assert!(
            text.contains(&format!("web@{i}: ERROR (READY): not restarted: the rolling restart stopped: web@1 did not become READY again")),
            "{text}"
        );
    }
    // The instances after the failed one kept their processes and still answer.
    let now = pids_or_none(&p);
    assert_ne!(now[0], Some(before[0]));
    assert_eq!(
        (now[2], now[3]),
        (Some(before[2]), Some(before[3])),
        "{text}"
    );
    assert_eq!(answering(prefix, 4), 3);
    // Fixed, a new roll goes through.
    std::fs::remove_file(s.path().join("broken1")).unwrap();
    ok(&p.cli(&["restart", "web"]));
    assert_eq!(answering(prefix, 4), 4);
}

fn pids_or_none(p: &Paddock) -> Vec<Option<i32>> {
    (0..4).map(|i| p.app(&format!("web@{i}")).pid).collect()
}

#[test]
fn update_changes_the_number_of_instances() {
    let s = Scratch::new("inst-upd");
    let prefix = port_prefix();
    let p = Paddock::with_apps("inst-upd", &[("web", &web_app(prefix, s.path(), ""))]).start();
    for i in 0..4 {
        p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
    }
    let before = pids(&p, 4);

    // Bad files change nothing: each is refused with a precise error, everything keeps running.
    let good = web_app(prefix, s.path(), "");
    let bad: &[(&str, &str, &str)] = &[
        (
            "web",
            &good.replace("instances = 4", "instances = 0"),
            "web.toml:1:13: key `instances`: 0 is out of range",
        ),
        (
            "web",
            &good.replace("instances = 4", "instances = \"x\""),
            "web.toml:1:13: key `instances`: invalid type: string \"x\"",
        ),
        (
            "web",
            &good.replace("instances = 4", "instances = 100000"),
            "key `instances`: 100000 is out of range: run 1 to 256",
        ),
        (
            "web@1",
            "command = [\"/bin/sleep\", \"100\"]\n",
            "web@1.toml: duplicate app name \"web@1\": it is an instance of \"web\"",
        ),
    ];
    for (name, text, want) in bad {
        p.write_app(name, text);
        let out = p.cli(&["update"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{name}: {text}");
        assert!(err.contains(want), "want {want}\ngot {err}");
        if *name == "web" {
            p.write_app("web", &good);
        } else {
            std::fs::remove_file(p.apps_dir().join(format!("{name}.toml"))).unwrap();
        }
        assert_eq!(pids(&p, 4), before, "a bad file disturbed nothing");
    }

    // 4 -> 2: web@2 and web@3 stop and go; web@0 and web@1 keep their processes.
    p.write_app("web", &good.replace("instances = 4", "instances = 2"));
    let out = ok(&p.cli(&["update"]));
    assert!(out.contains("web@0: unchanged"), "{out}");
    assert!(out.contains("web@2: stopped and removed"), "{out}");
    wait_for(Duration::from_secs(10), "web@2 and web@3 gone", || {
        let names: Vec<String> = p.status().into_iter().map(|a| a.name).collect();
        names == ["web@0", "web@1"]
    });
    assert_eq!(pids(&p, 2), before[..2]);
    assert!(!alive(before[2]) && !alive(before[3]));
    assert_eq!(answering(prefix, 4), 2);

    // 2 -> 3: web@2 comes back.
    p.write_app("web", &good.replace("instances = 4", "instances = 3"));
    let out = ok(&p.cli(&["update"]));
    assert!(out.contains("web@2: added, started"), "{out}");
    p.wait_state("web@2", "READY", Duration::from_secs(10));
    assert_eq!(pids(&p, 2), before[..2]);
}

#[test]
fn instances_are_adopted_one_by_one_after_a_crash_of_paddock() {
    let marker = format!("inst-adopt-{}", std::process::id());
    let app = format!(
        "instances = 3\ncommand = [\"/bin/sh\", \"-c\", \"while :; do sleep 5; done # {marker}-%i\"]\nstop_timeout = \"2s\"\n"
    );
    let mut p = Paddock::with_apps("inst-adopt", &[("web", &app)]).start();
    for i in 0..3 {
        p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
    }
    let before = pids(&p, 3);
    // kill -9 of paddock; each instance has its own record in the state directory.
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let p = p.start();
    for (i, pid) in before.iter().enumerate() {
        let a = p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
        assert_eq!(a.pid, Some(*pid), "web@{i} was not adopted: {a:?}");
        assert_eq!(a.restarts, 0);
    }
    // And the adopted group still rolls.
    ok(&p.cli(&["restart", "web"]));
    let after = pids(&p, 3);
    for i in 0..3 {
        assert_ne!(after[i], before[i]);
        assert!(!alive(before[i]));
    }
}

/// One HTTP/1.0 request; the body, or what went wrong.
fn get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let a: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let mut c = TcpStream::connect_timeout(&a, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut b = String::new();
    c.read_to_string(&mut b).map_err(|e| format!("read: {e}"))?;
    Ok(b.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_string())
}

#[test]
fn instances_share_the_apps_listen_sockets() {
    // Three instances of the repo's LISTEN_FDS server (examples/listen/serve.py) on one socket
    // paddock owns: every instance serves it, and a rolling restart refuses no connection.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let serve = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/listen/serve.py");
    let port = free_port();
    let app = format!(
        "instances = 3\ncommand = [\"{python}\", \"{}\", \"inst%i\"]\nstop_timeout = \"5s\"\n[[listen]]\naddress = \"127.0.0.1:{port}\"\nname = \"web\"\n",
        serve.display()
    );
    let p = Paddock::with_apps("inst-listen", &[("web", &app)]).start();
    for i in 0..3 {
        p.wait_state(&format!("web@{i}"), "READY", Duration::from_secs(10));
    }
    let addr = format!("127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new((vec![], vec![])));
    let client = {
        let (stop, answers, addr) = (stop.clone(), answers.clone(), addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&addr);
                let mut a = answers.lock().unwrap();
                match r {
                    Ok(body) => a.0.push(body),
                    Err(e) => a.1.push(e),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    ok(&p.cli(&["restart", "web"]));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (bodies, errors) = answers.lock().unwrap().clone();
    eprintln!(
        "{} answers through the roll, {} failed",
        bodies.len(),
        errors.len()
    );
    assert!(errors.is_empty(), "refused or failed: {errors:?}");
    assert!(bodies.len() > 10, "{bodies:?}");
    for i in 0..3 {
        assert!(
            bodies.iter().any(|b| b.contains(&format!("tag=inst{i}"))),
            "web@{i} never answered on the shared socket: {bodies:?}"
        );
        assert!(bodies.iter().all(|b| b.contains("fds=1")), "{bodies:?}");
    }
}
