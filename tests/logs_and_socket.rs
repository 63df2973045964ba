//! Logs (rotation, tail, follow, reopen) and the control socket under bad input, plus scale.

mod common;
use common::*;
use paddock::control::api::{AppStatus, StatusList};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn logs_are_timestamped_and_rotated() {
    // 5000 numbered lines of ~60 bytes (≈ 420 KiB with timestamps) into 64 KiB files, keep 3.
    let app = "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 5000 ]; do echo \\\"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\\"; i=$((i+1)); done; echo done >&2; exec sleep 1000\"]\n[logs]\nmax_size = \"64KiB\"\nkeep = 3\n";
    let p = Paddock::with_apps("rotate", &[("chatty", app)]).start();
    let dir = p.logs_dir();
    wait_for(Duration::from_secs(10), "stderr line", || {
        std::fs::read_to_string(dir.join("chatty.err")).is_ok_and(|s| s.contains("done"))
    });
    wait_for(Duration::from_secs(10), "last line", || {
        std::fs::read_to_string(dir.join("chatty.out")).is_ok_and(|s| s.contains("line 4999 "))
    });
    let names = ["chatty.out.3", "chatty.out.2", "chatty.out.1", "chatty.out"];
    for n in names {
        let m = std::fs::metadata(dir.join(n)).unwrap_or_else(|_| panic!("{n} missing"));
        assert!(
            m.len() <= 64 * 1024,
            "{n} is {} bytes, over max_size",
            m.len()
        );
    }
    assert!(
        !dir.join("chatty.out.4").exists(),
        "only `keep` rotated files are kept"
    );
    // The kept files hold the newest lines, in order, each with an RFC 3339 timestamp.
    let mut nums = vec![];
    for n in names {
        for l in read_lines(&dir.join(n)) {
            let (ts, rest) = l.split_once(' ').unwrap();
            assert_eq!(ts.len(), 24, "timestamp {ts}");
            assert!(
                ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "timestamp {ts}"
            );
            let num: u32 = rest
                .strip_prefix("line ")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            nums.push(num);
        }
    }
    assert_eq!(*nums.last().unwrap(), 4999);
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "lines lost or reordered across rotation"
    );
    assert!(nums[0] > 0, "the oldest lines were rotated away");
    // tail -n through the CLI.
    let out = p.cli(&["tail", "-n", "2", "chatty"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].contains("line 4999 "));
    let out = p.cli(&["tail", "--stderr", "chatty"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
}

#[test]
fn tail_follow_sees_new_lines() {
    let app = "command = [\"/bin/sh\", \"-c\", \"i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done\"]";
    let p = Paddock::with_apps("follow", &[("ticker", app)]).start();
    wait_for(Duration::from_secs(5), "a few ticks", || {
        read_lines(&p.logs_dir().join("ticker.out")).len() >= 3
    });
    let mut child = std::process::Command::new(BIN)
        .args(["tail", "-f", "-n", "1", "ticker"])
        .env("PADDOCK_SOCKET", p.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut seen = vec![];
    for _ in 0..10 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        seen.push(
            l.split(' ')
                .nth(2)
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap(),
        );
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "follow must deliver every line in order: {seen:?}"
    );
    // Followers survive a restart of the app and a log reopen.
    let out = p.cli(&["logs", "reopen"]);
    assert!(out.status.success());
    std::fs::rename(
        p.logs_dir().join("ticker.out"),
        p.logs_dir().join("ticker.out.moved"),
    )
    .unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(p.pid(), libc::SIGUSR2) };
    wait_for(Duration::from_secs(5), "a fresh file after SIGUSR2", || {
        p.logs_dir().join("ticker.out").exists()
    });
}

#[test]
fn combined_and_inherited_output() {
    let p = Paddock::with_apps(
        "combine",
        &[
            ("both", "command = [\"/bin/sh\", \"-c\", \"echo out; echo err >&2; exec sleep 1000\"]\n[logs]\ncombine = true\n"),
            ("inh", "command = [\"/bin/sh\", \"-c\", \"echo to-paddock-stdout; exec sleep 1000\"]\n[logs]\nstdout = \"inherit\"\n"),
        ],
    )
    .start();
    wait_for(Duration::from_secs(5), "both lines in one file", || {
        let s = std::fs::read_to_string(p.logs_dir().join("both.out")).unwrap_or_default();
        s.contains(" out\n") && s.contains(" err\n")
    });
    assert!(!p.logs_dir().join("both.err").exists());
    assert!(!p.logs_dir().join("inh.out").exists());
    let out = p.cli(&["tail", "inh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inherit"));
}

fn raw(p: &Paddock, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(p.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn socket_survives_garbage() {
    let p = Paddock::with_apps("garbage", &[("a", "command = [\"/bin/sleep\", \"1001\"]")]).start();
    let pid = p.wait_state("a", "READY", Duration::from_secs(5)).pid;
    assert!(raw(&p, b"\x00\x01\x02garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(
        raw(
            &p,
            b"GET /v1/apps HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
        )
        .starts_with("HTTP/1.1 413")
    );
    let huge = format!(
        "GET /v1/apps HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "x".repeat(100_000)
    );
    assert!(raw(&p, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(raw(&p, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(raw(&p, b"DELETE /v1/apps HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(raw(&p, b"GET /v1/apps/zzz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(
        raw(&p, b"POST /v1/apps/a/signal?signal=BOGUS HTTP/1.1\r\n\r\n")
            .starts_with("HTTP/1.1 400")
    );
    assert!(
        raw(
            &p,
            b"POST /v1/apps/a/signal HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope"
        )
        .starts_with("HTTP/1.1 400")
    );
    // A client that connects and stays silent is cut off, and does not block anyone meanwhile.
    let t = Instant::now();
    let slow = std::thread::spawn({
        let sock = p.socket();
        move || {
            let mut s = UnixStream::connect(sock).unwrap();
            let _ = s.write_all(b"GET /v1/apps HTTP/1.1\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.app("a").pid, pid, "served while a slow client hangs");
    let out = slow.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(15));
    // Many clients that connect and vanish.
    for _ in 0..200 {
        drop(UnixStream::connect(p.socket()).unwrap());
    }
    let st = p.app("a");
    assert_eq!(st.pid, pid);
    assert_eq!(st.state, "READY");
    let m = p.client.request("GET", "/metrics", None).unwrap();
    assert!(
        m.body.contains("paddock_app_restarts_total{app=\"a\"} 0"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("paddock_app_state{app=\"a\",state=\"READY\"} 1")
    );
}

#[test]
fn other_uids_are_refused() {
    if !is_root() {
        eprintln!("SKIPPED other_uids_are_refused: needs root to act as another uid");
        return;
    }
    use std::os::unix::process::CommandExt;
    let p = Paddock::with_apps("uid", &[("a", "command = [\"/bin/sleep\", \"1001\"]")]).start();
    let mode = std::fs::metadata(p.socket())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(
        p.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let as_nobody = || {
        std::process::Command::new(BIN)
            .arg("status")
            .env("PADDOCK_SOCKET", p.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // The file mode stops another uid at connect().
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the mode opened up, SO_PEERCRED still refuses it.
    std::fs::set_permissions(
        p.socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uid 65534 may not control"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.app("a").state, "READY");
}

#[test]
fn a_thousand_apps() {
    let p = Paddock::with_apps("thousand", &[]);
    for i in 0..1000 {
        p.write_app(
            &format!("app{i:04}"),
            "command = [\"/bin/sleep\", \"100007\"]",
        );
    }
    let t = Instant::now();
    let p = p.start();
    wait_for(Duration::from_secs(60), "1000 apps running", || {
        let s = p.status();
        s.len() == 1000 && s.iter().all(|a| a.state == "READY")
    });
    eprintln!(
        "1000 apps running after {:?} (includes test polling)",
        t.elapsed()
    );
    let rss = rss_kib(p.pid());
    eprintln!("paddock RSS with 1000 apps: {rss} KiB");
    assert!(rss < 64 * 1024, "paddock uses {rss} KiB for 1000 apps");
    let pids: Vec<i32> = p.status().iter().filter_map(|a| a.pid).collect();
    assert_eq!(pids.len(), 1000);
    let status = p.shutdown();
    assert!(status.success());
    assert!(
        pids.iter().all(|&x| !alive(x)),
        "every app stopped at shutdown"
    );
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens a streaming request and reads its response head.
fn stream(p: &Paddock, path: &str) -> UnixStream {
    let mut s = UnixStream::connect(p.socket()).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: paddock\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{path}");
    s
}

#[test]
fn abandoned_streams_are_freed_and_trickling_clients_do_not_stop_status() {
    let app = "command = [\"/bin/sleep\", \"100007\"]\n";
    let p = Paddock::with_apps("abandon", &[("quiet", app)]).start();
    p.wait_state("quiet", "READY", Duration::from_secs(10));
    let pid = p.pid();
    let before = open_fds(pid);
    // 200 event streams and 50 `tail -f` of an app that writes nothing, then their clients go
    // away without a word: nothing would ever be written to them again.
    let mut clients: Vec<UnixStream> = (0..200).map(|_| stream(&p, "/v1/events")).collect();
    clients.extend((0..50).map(|_| stream(&p, "/v1/apps/quiet/logs?follow=1")));
    let during = open_fds(pid);
    assert!(during >= before + 240, "{before} -> {during}");
    drop(clients);
    let t = Instant::now();
    wait_for(Duration::from_secs(1), "abandoned streams closed", || {
        open_fds(pid) <= before + 2
    });
    println!("250 abandoned streams closed in {:?}", t.elapsed());
    // A client that half-closes after its request still gets the stream until it hangs up.
    let mut half = stream(&p, "/v1/events");
    half.shutdown(std::net::Shutdown::Write).unwrap();
    p.cli(&["restart", "quiet"]);
    let mut line = String::new();
    BufReader::new(&mut half).read_line(&mut line).unwrap();
    assert!(line.contains("quiet"), "{line}");
    drop(half);

    // Slowloris: 1000 clients that trickle their requests. `status` is still answered, at once.
    let mut slow: Vec<UnixStream> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(p.socket()).unwrap();
            s.write_all(b"GET /v1/ap").unwrap();
            s
        })
        .collect();
    for _ in 0..10 {
        let t = Instant::now();
        let o = p.cli(&["status", "quiet"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("quiet"),
            "status under slowloris: {o:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        for s in slow.iter_mut().take(100) {
            let _ = s.write_all(b"p");
        }
    }
    // They are cut off after the request deadline (3 s) with 408, and their descriptors freed.
    wait_for(Duration::from_secs(8), "trickling clients cut off", || {
        open_fds(pid) <= before + 2
    });
    let mut reply = String::new();
    let _ = slow[500].read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

#[test]
fn stalled_followers_stay_within_a_bound() {
    // An app writing as fast as it can, and 50 `tail -f` readers that never read.
    let app = "command = [\"/bin/sh\", \"-c\", \"yes 'a line of about eighty bytes, written again and again as fast as the app can write'\"]\n[logs]\nmax_size = \"4MiB\"\nkeep = 1\n";
    let p = Paddock::with_apps("stalled", &[("firehose", app)]).start();
    p.wait_state("firehose", "READY", Duration::from_secs(10));
    let pid = p.pid();
    let readers: Vec<UnixStream> = (0..50)
        .map(|_| stream(&p, "/v1/apps/firehose/logs?follow=1&lines=0"))
        .collect();
    let mut peak = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("paddock RSS with 50 stalled followers: peak {peak} KiB");
    // Each follower holds at most 256 KiB in paddock (plus its socket's buffer in the kernel).
    assert!(peak < 64 * 1024, "paddock grew to {peak} KiB");
    // A reader that catches up is told what it missed.
    let mut r = readers.into_iter().next().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5)
        && !String::from_utf8_lossy(&seen).contains("bytes dropped")
    {
        let n = r.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
        if seen.len() > 64 << 20 {
            break;
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("bytes dropped, the reader was too slow"),
        "no drop notice in {} bytes",
        seen.len()
    );
    let o = p.cli(&["status", "firehose"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("firehose"));
}

/// The status the control thread answers from its board (see src/control/board.rs) is never
/// behind an answer already given: `stop`, `start`, `restart` and `update` show at once, an app
/// removed by `update` is 404 at once, and `status` keeps answering while 40 apps crash-loop
/// without backoff.
#[test]
fn status_from_the_board_is_never_behind_an_answer() {
    let looping = "command = [\"/bin/false\"]\n[restart]\npolicy = \"always\"\nbackoff_initial = \"0s\"\nmax_failures = 0\n";
    let mut apps: Vec<(String, String)> = (0..40)
        .map(|i| (format!("c{i}"), looping.to_string()))
        .collect();
    apps.push(("s".into(), "command = [\"sleep\", \"1000\"]\n".into()));
    apps.push(("gone".into(), "command = [\"sleep\", \"1000\"]\n".into()));
    let refs: Vec<(&str, &str)> = apps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = Paddock::with_apps("board", &refs).start();
    p.wait_state("s", "READY", Duration::from_secs(10));
    let one = |name: &str| -> (u16, Option<AppStatus>) {
        let (code, body) = p
            .client
            .request("GET", &format!("/v1/apps/{name}"), None)
            .map(|r| (r.status, r.body))
            .expect("status");
        let app = serde_json::from_str::<StatusList>(&body)
            .ok()
            .and_then(|l| l.apps.into_iter().next());
        (code, app)
    };
    // Keep the board read (it is kept only while someone reads it).
    for _ in 0..5 {
        let _ = one("s");
    }
    let mut last_pid = p.app("s").pid;
    for round in 0..15 {
        assert!(p.post("/v1/apps/s/stop").status < 300);
        let (_, a) = one("s");
        let a = a.unwrap();
        assert!(
            a.state == "STOPPED" && a.pid.is_none(),
            "round {round}: status after `stop` answered: {a:?}"
        );
        assert!(p.post("/v1/apps/s/start").status < 300);
        let (_, a) = one("s");
        let a = a.unwrap();
        assert!(
            a.pid.is_some() && a.pid != last_pid && alive(a.pid.unwrap()),
            "round {round}: status after `start` answered: {a:?}"
        );
        last_pid = a.pid;
        // And the whole list agrees with the one app.
        assert_eq!(p.app("s").pid, last_pid);
    }
    // A new definition for a stopped app is applied by `update` at once: shown at once.
    assert!(p.post("/v1/apps/s/stop").status < 300);
    p.write_app("s", "command = [\"sleep\", \"1001\"]\n");
    assert!(p.post("/v1/update").status < 300);
    let (_, a) = one("s");
    assert_eq!(
        a.unwrap().command,
        ["sleep", "1001"],
        "status after `update`"
    );
    // Removed by `update`: stopping at once (`update` answers when the stop has begun), then
    // gone from every answer.
    std::fs::remove_file(p.apps_dir().join("gone.toml")).unwrap();
    assert!(p.post("/v1/update").status < 300);
    let (code, a) = one("gone");
    assert!(
        code == 404 || a.as_ref().is_some_and(|a| a.state == "STOPPING"),
        "status of an app removed by update: {code} {a:?}"
    );
    wait_for(Duration::from_secs(5), "the removed app to be 404", || {
        one("gone").0 == 404
    });
    assert!(p.status().iter().all(|a| a.name != "gone"));
    // Responsive under the crash loops: every request answered, none slow enough to be starved
    // (a generous bound: timings are in the benches).
    let mut worst = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        let (code, a) = one("c1");
        worst = worst.max(t.elapsed());
        assert_eq!(code, 200);
        assert!(a.unwrap().restarts > 0);
    }
    assert!(
        worst < Duration::from_millis(500),
        "a status took {worst:?}"
    );
    let restarts = p.app("c1").restarts;
    assert!(
        restarts > 5,
        "the apps did crash-loop: c1 restarted {restarts} times"
    );
}

#[test]
fn what_apps_write_as_they_stop_is_in_their_logs_after_shutdown() {
    // Each app answers SIGTERM with 60 KB of output and a last line, then exits: paddock's
    // shutdown must read all of it from the pipes before it flushes the logs and exits.
    let app = "command = [\"/bin/sh\", \"-c\", \"trap 'head -c 60000 /dev/zero | tr \\\"\\\\\\\\0\\\" x; echo; echo the-last-line; exit 0' TERM; echo started; while :; do sleep 0.05; done\"]\n";
    let names: Vec<String> = (0..20).map(|i| format!("stopper{i}")).collect();
    let apps: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), app)).collect();
    let mut p = Paddock::with_apps("lastwords", &apps).start();
    let dir = p.logs_dir();
    for n in &names {
        p.wait_state(n, "READY", Duration::from_secs(10));
    }
    wait_for(Duration::from_secs(10), "every app's first line", || {
        names.iter().all(|n| {
            std::fs::read_to_string(dir.join(format!("{n}.out")))
                .is_ok_and(|s| s.contains("started"))
        })
    });
    // Shut down, keeping the scratch directory (`shutdown` would drop it).
    let mut child = p.child.take().unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(30)).success());
    for n in &names {
        let text = std::fs::read_to_string(dir.join(format!("{n}.out"))).unwrap();
        let xs = text.bytes().filter(|&b| b == b'x').count();
        assert!(
            text.contains("the-last-line") && xs >= 60_000,
            "{n}: {xs} of 60000 bytes and no last line in its log after shutdown"
        );
    }
}
