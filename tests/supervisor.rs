//! The core supervisor against real processes: restart policies, backoff, FATAL, stop escalation,
//! update, reaping, signals to `paddock serve`.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn counting_app(counter: &std::path::Path, tail: &str, extra: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"echo start >> {}; {tail}\"]\n{extra}",
        counter.display()
    )
}

#[test]
fn crash_loop_backs_off_then_goes_fatal() {
    let s = Scratch::new("crashcount");
    let counter = s.path().join("starts");
    let app = counting_app(
        &counter,
        "exit 1",
        "[restart]\nbackoff_initial = \"50ms\"\nmax_failures = 4\n",
    );
    let p = Paddock::with_apps("crash", &[("crash", &app)]).start();
    let st = p.wait_state("crash", "FATAL", Duration::from_secs(10));
    assert_eq!(st.failures, 4);
    assert_eq!(st.restarts, 3);
    assert_eq!(st.last_exit.as_ref().and_then(|e| e.code), Some(1));
    assert!(st.message.contains("gave up"), "{}", st.message);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_lines(&counter).len(),
        4,
        "exactly max_failures starts, then no more"
    );
    // The gaps between starts grow: 50ms, 100ms, 200ms (minus up to 25% jitter).
    let log = std::fs::read_to_string(p.logs_dir().join("crash.err")).unwrap_or_default();
    assert!(log.is_empty(), "nothing on stderr expected: {log}");
    // An operator start from FATAL starts counting afresh.
    let out = p.cli(&["start", "crash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_state("crash", "FATAL", Duration::from_secs(10));
    assert_eq!(read_lines(&counter).len(), 8);
}

#[test]
fn backoff_delays_grow() {
    let s = Scratch::new("gaps");
    let stamps = s.path().join("t");
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"date +%s%N >> {}; exit 2\"]\n[restart]\nbackoff_initial = \"100ms\"\nmax_failures = 4\n",
        stamps.display()
    );
    let p = Paddock::with_apps("gaps", &[("g", &app)]).start();
    p.wait_state("g", "FATAL", Duration::from_secs(10));
    let t: Vec<u64> = read_lines(&stamps)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(t.len(), 4);
    let gaps: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6).collect();
    for (i, g) in gaps.iter().enumerate() {
        let base = 100.0 * f64::from(1u32 << i);
        assert!(
            *g >= base * 0.75 - 5.0,
            "gap {i} = {g:.1} ms, expected at least 0.75 x {base} ms ({gaps:?})"
        );
    }
    assert!(gaps[2] > gaps[0], "backoff must grow: {gaps:?}");
}

#[test]
fn restart_policies() {
    let s = Scratch::new("policies");
    let c = |n: &str| s.path().join(n);
    let fast = "[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 0\n";
    let apps = [
        (
            "always",
            counting_app(
                &c("always"),
                "exit 0",
                &format!("{fast}policy = \"always\"\n"),
            ),
        ),
        (
            "onfail_ok",
            counting_app(
                &c("onfail_ok"),
                "exit 0",
                &format!("{fast}policy = \"on-failure\"\n"),
            ),
        ),
        (
            "onfail_bad",
            counting_app(
                &c("onfail_bad"),
                "exit 1",
                &format!("{fast}policy = \"on-failure\"\n"),
            ),
        ),
        (
            "never",
            counting_app(
                &c("never"),
                "exit 1",
                &format!("{fast}policy = \"never\"\n"),
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = apps.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let p = Paddock::with_apps("policies", &refs).start();
    wait_for(Duration::from_secs(10), "always to restart", || {
        read_lines(&c("always")).len() >= 3
    });
    wait_for(
        Duration::from_secs(10),
        "on-failure to restart a failure",
        || read_lines(&c("onfail_bad")).len() >= 3,
    );
    let ok = p.wait_state("onfail_ok", "EXITED", Duration::from_secs(5));
    assert_eq!(ok.last_exit.unwrap().code, Some(0));
    let never = p.wait_state("never", "EXITED", Duration::from_secs(5));
    assert_eq!(never.last_exit.unwrap().code, Some(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_lines(&c("onfail_ok")).len(), 1);
    assert_eq!(read_lines(&c("never")).len(), 1);
}

#[test]
fn stable_uptime_resets_the_failure_count() {
    let s = Scratch::new("stable");
    let c1 = s.path().join("stable");
    let c2 = s.path().join("unstable");
    // Each run lasts 300 ms. With stable_after 100ms every run counts as a good one and the app
    // never goes FATAL; with stable_after 10s the same app is FATAL after 2 failures.
    let stable = counting_app(
        &c1,
        "sleep 0.3; exit 1",
        "[restart]\nbackoff_initial = \"10ms\"\nstable_after = \"100ms\"\nmax_failures = 2\n",
    );
    let unstable = counting_app(
        &c2,
        "sleep 0.3; exit 1",
        "[restart]\nbackoff_initial = \"10ms\"\nstable_after = \"10s\"\nmax_failures = 2\n",
    );
    let p = Paddock::with_apps("stable", &[("stable", &stable), ("unstable", &unstable)]).start();
    p.wait_state("unstable", "FATAL", Duration::from_secs(10));
    assert_eq!(read_lines(&c2).len(), 2);
    wait_for(
        Duration::from_secs(10),
        "stable app to restart 5 times",
        || read_lines(&c1).len() >= 6,
    );
    let st = p.app("stable");
    assert_ne!(st.state, "FATAL");
    assert!(st.failures <= 1, "{st:?}");
}

#[test]
fn stop_escalates_to_sigkill_and_kills_grandchildren() {
    let s = Scratch::new("stubborn");
    let pids = s.path().join("pids");
    // The shell and both sleeps ignore SIGTERM (SIG_IGN is inherited).
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000 & echo $! >> {0}; sleep 1000 & echo $! >> {0}; wait\"]\nstop_timeout = \"400ms\"\n",
        pids.display()
    );
    let p = Paddock::with_apps("stubborn", &[("stubborn", &app)]).start();
    let st = p.wait_state("stubborn", "READY", Duration::from_secs(5));
    wait_for(Duration::from_secs(5), "grandchildren", || {
        read_lines(&pids).len() == 2
    });
    let mut all: Vec<i32> = read_lines(&pids)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    all.push(st.pid.unwrap());
    let t = Instant::now();
    let out = p.cli(&["stop", "stubborn"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_millis(400),
        "SIGTERM was ignored, so the stop must wait for stop_timeout (took {took:?})"
    );
    let st = p.app("stubborn");
    assert_eq!(st.state, "STOPPED");
    assert_eq!(st.last_exit.unwrap().signal, Some(libc::SIGKILL));
    wait_for(
        Duration::from_secs(5),
        "every process of the group to be gone",
        || all.iter().all(|&pid| !alive(pid)),
    );
}

#[test]
fn stop_signal_is_honoured() {
    let s = Scratch::new("stopsig");
    let marker = s.path().join("got-int");
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"trap 'echo int > {}; exit 0' INT; while :; do sleep 0.05; done\"]\nstop_signal = \"INT\"\n",
        marker.display()
    );
    let p = Paddock::with_apps("stopsig", &[("a", &app)]).start();
    p.wait_state("a", "READY", Duration::from_secs(5));
    let out = p.cli(&["stop", "a"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "int");
    assert_eq!(p.app("a").last_exit.unwrap().code, Some(0));
}

#[test]
fn update_adds_removes_and_restarts_only_changed_apps() {
    let p = Paddock::with_apps(
        "update",
        &[
            ("keep", "command = [\"/bin/sleep\", \"1001\"]"),
            ("change", "command = [\"/bin/sleep\", \"1002\"]"),
            ("gone", "command = [\"/bin/sleep\", \"1003\"]"),
        ],
    )
    .start();
    for a in ["keep", "change", "gone"] {
        p.wait_state(a, "READY", Duration::from_secs(5));
    }
    let keep_pid = p.app("keep").pid.unwrap();
    let change_pid = p.app("change").pid.unwrap();
    let gone_pid = p.app("gone").pid.unwrap();

    // Comments and formatting alone are not a change.
    p.write_app(
        "keep",
        "# same app, new comment\ncommand = [ \"/bin/sleep\",   \"1001\" ]\n",
    );
    p.write_app("change", "command = [\"/bin/sleep\", \"2002\"]");
    std::fs::remove_file(p.apps_dir().join("gone.toml")).unwrap();
    p.write_app("added", "command = [\"/bin/sleep\", \"1004\"]");

    let out = p.cli(&["reread"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("added: available")
            && text.contains("change: changed")
            && text.contains("gone: disappeared"),
        "{text}"
    );
    assert!(!text.contains("keep"), "{text}");
    assert_eq!(p.app("change").pid, Some(change_pid), "reread must not act");

    let out = p.cli(&["update"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_state("added", "READY", Duration::from_secs(5));
    wait_for(Duration::from_secs(5), "changed app restarted", || {
        p.app("change").pid.is_some_and(|x| x != change_pid)
    });
    let ch = p.app("change");
    assert_eq!(ch.command, vec!["/bin/sleep", "2002"]);
    assert_eq!(ch.state, "READY");
    assert_eq!(
        p.app("keep").pid,
        Some(keep_pid),
        "unchanged app keeps running"
    );
    wait_for(Duration::from_secs(5), "removed app gone", || {
        !p.status().iter().any(|a| a.name == "gone")
    });
    assert!(!alive(gone_pid));
    assert!(!alive(change_pid));
}

#[test]
fn broken_file_on_update_changes_nothing() {
    let p = Paddock::with_apps(
        "broken",
        &[
            ("a", "command = [\"/bin/sleep\", \"1001\"]"),
            ("b", "command = [\"/bin/sleep\", \"1002\"]"),
        ],
    )
    .start();
    p.wait_state("a", "READY", Duration::from_secs(5));
    p.wait_state("b", "READY", Duration::from_secs(5));
    let before: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    p.write_app(
        "a",
        "command = [\"/bin/sleep\", \"9\"]\n[restart]\npolicy = \"sometimes\"\n",
    );
    p.write_app("c", "command = [\"/bin/sleep\", \"3\"]"); // valid, but must not be added either
    std::fs::remove_file(p.apps_dir().join("b.toml")).unwrap();
    let out = p.cli(&["update"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.toml:3:")
            && err.contains("restart.policy")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let after: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    assert_eq!(before, after);
    // SIGHUP (= update) with the same broken file also changes nothing.
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(p.pid(), libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(200));
    let after: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    assert_eq!(before, after);
}

#[test]
fn sighup_updates() {
    let p = Paddock::with_apps("hup", &[("a", "command = [\"/bin/sleep\", \"1001\"]")]).start();
    p.wait_state("a", "READY", Duration::from_secs(5));
    p.write_app("b", "command = [\"/bin/sleep\", \"1002\"]");
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(p.pid(), libc::SIGHUP) };
    p.wait_state("b", "READY", Duration::from_secs(5));
}

#[test]
fn orphans_are_reaped_and_never_taken_for_apps() {
    // The app leaves an orphan that exits with status 7 a little later; paddock (a subreaper)
    // inherits and reaps it, and the app itself is untouched.
    let app = "command = [\"/bin/sh\", \"-c\", \"(sh -c 'sleep 0.2; exit 7' &); exec sleep 1000\"]";
    let p = Paddock::with_apps("orphans", &[("a", app)]).start();
    let st = p.wait_state("a", "READY", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    let st2 = p.app("a");
    assert_eq!(st2.pid, st.pid);
    assert_eq!(st2.state, "READY");
    assert_eq!(st2.restarts, 0);
    let zombies: Vec<_> = children_of(p.pid())
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .collect();
    assert!(zombies.is_empty(), "unreaped children: {zombies:?}");
}

#[test]
fn sigterm_stops_every_app_and_exits_zero() {
    let p = Paddock::with_apps(
        "term",
        &[
            ("a", "command = [\"/bin/sleep\", \"1001\"]"),
            ("b", "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000\"]\nstop_timeout = \"300ms\""),
        ],
    )
    .start();
    let a = p
        .wait_state("a", "READY", Duration::from_secs(5))
        .pid
        .unwrap();
    let b = p
        .wait_state("b", "READY", Duration::from_secs(5))
        .pid
        .unwrap();
    let sock = p.socket();
    let t = Instant::now();
    let status = p.shutdown();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "apps are stopped in parallel"
    );
    assert!(!alive(a) && !alive(b));
    assert!(!sock.exists(), "the socket is removed on exit");
}

#[test]
fn cli_start_stop_restart_signal_pid() {
    let p = Paddock::with_apps(
        "cli",
        &[
            ("a", "command = [\"/bin/sleep\", \"1001\"]\nautostart = false"),
            ("b", "command = [\"/bin/sleep\", \"1002\"]"),
            ("bad", "command = [\"/bin/sh\", \"-c\", \"exit 4\"]\nautostart = false\n[restart]\npolicy = \"never\""),
        ],
    )
    .start();
    p.wait_state("b", "READY", Duration::from_secs(5));
    assert_eq!(p.app("a").state, "STOPPED");
    let out = p.cli(&["start", "a"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("a: started"));
    let out = p.cli(&["start", "a"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already running"));
    let pid_a = p.app("a").pid.unwrap();
    let out = p.cli(&["pid", "a"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pid_a.to_string()
    );
    let out = p.cli(&["pid"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        p.pid().to_string()
    );
    let out = p.cli(&["restart", "a"]);
    assert!(out.status.success());
    let new_a = p.app("a").pid.unwrap();
    assert_ne!(new_a, pid_a);
    assert!(!alive(pid_a));
    let out = p.cli(&["signal", "KILL", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(5), "a restarted after SIGKILL", || {
        p.app("a").pid.is_some_and(|x| x != new_a)
    });
    assert_eq!(p.app("a").last_exit.unwrap().signal, Some(libc::SIGKILL));
    let out = p.cli(&["signal", "NOPE", "a"]);
    assert_eq!(out.status.code(), Some(2));
    // A start that fails at once reports the failure and exits non-zero.
    let out = p.cli(&["start", "bad"]);
    if out.status.success() {
        // The process may be seen running before it exits; then status shows the exit.
        p.wait_state("bad", "EXITED", Duration::from_secs(5));
    } else {
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad: ERROR"));
    }
    let out = p.cli(&["stop", "all"]);
    assert!(out.status.success());
    assert!(p.status().iter().all(|a| a.state != "READY"));
    let out = p.cli(&["start", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such app: nosuch"));
    let out = p.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "status is non-zero when an app is not running"
    );
    let out = p.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apps"].as_array().unwrap().len(), 3);
}

#[test]
fn spawn_failures_are_reported() {
    let s = Scratch::new("vanish");
    let prog = s.path().join("prog");
    std::fs::write(&prog, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = format!(
        "command = [\"{}\"]\nautostart = false\n[restart]\nmax_failures = 2\nbackoff_initial = \"10ms\"\n",
        prog.display()
    );
    let p = Paddock::with_apps("vanish", &[("v", &app)]).start();
    std::fs::remove_file(&prog).unwrap(); // valid when loaded, gone when started
    let out = p.cli(&["start", "v"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("execve: No such file or directory"), "{err}");
    let st = p.wait_state("v", "FATAL", Duration::from_secs(5));
    assert!(st.message.contains("spawn failed"), "{}", st.message);
}

#[test]
fn check_command() {
    let s = Scratch::new("check");
    std::fs::write(s.path().join("ok.toml"), "command = [\"/bin/true\"]").unwrap();
    let out = check(&[s.path()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 apps"));
    std::fs::write(
        s.path().join("bad.toml"),
        "command = [\"/bin/true\"]\nstop_timeout = \"soon\"\n",
    )
    .unwrap();
    std::fs::write(s.path().join("worse.toml"), "comand = [\"/bin/true\"]\n").unwrap();
    let out = check(&[s.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:16: key `stop_timeout`"), "{err}");
    assert!(
        err.contains("worse.toml:1:1: key `comand`: unknown field `comand`"),
        "{err}"
    );
    assert!(err.contains("2 errors found"), "{err}");
    // Duplicate names across config directories.
    let s2 = Scratch::new("check2");
    std::fs::write(s2.path().join("ok.toml"), "command = [\"/bin/true\"]").unwrap();
    let out = check(&[&s.path().join("nope"), s2.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read config directory"), "{err}");
    std::fs::remove_file(s.path().join("bad.toml")).unwrap();
    std::fs::remove_file(s.path().join("worse.toml")).unwrap();
    let out = check(&[s.path(), s2.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duplicate app name \"ok\""), "{err}");
    // serve refuses a broken directory and starts nothing.
    std::fs::write(s.path().join("bad.toml"), "command = 5\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .arg(s.path())
        .arg("--socket")
        .arg(s.path().join("sock"))
        .arg("--state-dir")
        .arg(s.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml:1:11: key `command`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn second_paddock_on_the_same_socket_is_refused() {
    let p = Paddock::with_apps("twice", &[]).start();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .arg(p.apps_dir())
        .arg("--socket")
        .arg(p.socket())
        .arg("--state-dir")
        .arg(p.dir.path().join("state2")) // the same state dir is refused before (its lock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serving"));
    assert!(
        p.client.request("GET", "/v1/version", None).is_ok(),
        "the first one is unaffected"
    );
}

#[test]
fn user_and_group_drop_privileges() {
    if !is_root() {
        eprintln!("SKIPPED user_and_group_drop_privileges: needs root");
        return;
    }
    let s = Scratch::new("user");
    let out = s.path().join("id");
    std::fs::set_permissions(
        s.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"id -u > {0}; id -g >> {0}; echo $HOME $USER >> {0}; exec sleep 1000\"]\nuser = \"nobody\"\n",
        out.display()
    );
    let p = Paddock::with_apps("user", &[("u", &app)]).start();
    p.wait_state("u", "READY", Duration::from_secs(5));
    wait_for(Duration::from_secs(5), "id output", || {
        read_lines(&out).len() == 3
    });
    let l = read_lines(&out);
    assert_eq!(l[0], "65534");
    assert!(l[2].ends_with("nobody"), "{l:?}");
}

#[test]
fn children_get_only_stdio_and_the_original_fd_limit() {
    let p = Paddock::with_apps(
        "fds",
        &[
            ("a", "command = [\"/bin/sleep\", \"1001\"]"),
            ("b", "command = [\"/bin/sleep\", \"1002\"]"),
        ],
    )
    .start();
    for app in ["a", "b"] {
        let pid = p
            .wait_state(app, "READY", Duration::from_secs(5))
            .pid
            .unwrap();
        // `sleep` may briefly hold its locale file open while it starts; a leaked descriptor
        // would stay.
        let fds = || {
            let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            fds.sort();
            fds
        };
        let settled = try_wait(Duration::from_secs(3), || fds() == vec![0, 1, 2]);
        assert!(
            settled,
            "{app} inherited paddock's descriptors: {:?}",
            fds()
        );
        let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        assert_eq!(stdin, std::path::Path::new("/dev/null"));
        let out = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
        let err = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
        assert!(
            out.to_string_lossy().starts_with("pipe:")
                && err.to_string_lossy().starts_with("pipe:")
        );
        assert_ne!(out, err, "stdout and stderr are separate pipes");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `rl`, a live local.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        assert_eq!(
            soft, rl.rlim_cur,
            "children get the fd limit paddock was started with"
        );
    }
    // paddock itself does not hold the children's pipe write ends in its parking slots.
    for slot in 3..=6 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{slot}", p.pid())).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"), "slot {slot}");
    }
}

#[test]
fn an_idle_paddock_never_wakes_up() {
    let app = "command = [\"/bin/sleep\", \"1000\"]\n[restart]\nstable_after = \"100ms\"\n";
    let p = Paddock::with_apps("idle", &[("a", app), ("b", app), ("c", app)]).start();
    for a in ["a", "b", "c"] {
        p.wait_state(a, "READY", Duration::from_secs(5));
    }
    // Stable timers fire, connections close, and the status board, rewritten every second
    // while someone reads it, is dropped once nobody has for `WANTED_FOR`.
    std::thread::sleep(paddock::control::board::WANTED_FOR + Duration::from_millis(700));
    let before = ctxt_switches(p.pid());
    std::thread::sleep(Duration::from_secs(2));
    let after = ctxt_switches(p.pid());
    assert_eq!(
        after - before,
        0,
        "paddock woke up {} times in 2 s with nothing to do",
        after - before
    );
}

#[test]
fn a_chatty_app_does_not_slow_down_supervision() {
    let chatty = "command = [\"/usr/bin/yes\", \"a line of output that goes on and on and on\"]\n[logs]\nmax_size = \"1MiB\"\nkeep = 1\n";
    let s = Scratch::new("chatty");
    let counter = s.path().join("starts");
    let crasher = counting_app(
        &counter,
        "sleep 0.05; exit 1",
        "[restart]\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\nmax_failures = 0\n",
    );
    let p = Paddock::with_apps("chatty", &[("chatty", chatty), ("crasher", &crasher)]).start();
    p.wait_state("chatty", "READY", Duration::from_secs(5));
    let n0 = read_lines(&counter).len();
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    while t.elapsed() < Duration::from_secs(2) {
        let q = Instant::now();
        let st = p.status();
        slowest = slowest.max(q.elapsed());
        assert_eq!(st.len(), 2);
        std::thread::sleep(Duration::from_millis(50));
    }
    let restarts = read_lines(&counter).len() - n0;
    assert!(
        restarts >= 10,
        "the crasher was restarted only {restarts} times in 2 s while another app flooded its log"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a status request took {slowest:?}"
    );
    // Between a rotation's rename and the next write there is briefly no chatty.out.
    let out = std::fs::metadata(p.logs_dir().join("chatty.out")).map_or(0, |m| m.len());
    assert!(out <= 1 << 20, "log rotation bounds the file: {out}");
    assert!(!p.logs_dir().join("chatty.out.2").exists());
}

#[test]
fn fifos_devices_and_huge_app_files_are_refused_without_hanging() {
    let p = Paddock::with_apps("hostile", &[("a", "command = [\"/bin/sleep\", \"1001\"]")]).start();
    p.wait_state("a", "READY", Duration::from_secs(5));
    let before: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    let dir = p.apps_dir();
    let fifo =
        std::ffi::CString::new(dir.join("fifo.toml").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with `fifo`, a NUL-terminated CString alive for the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).unwrap();
    let big = std::fs::File::create(dir.join("big.toml")).unwrap();
    big.set_len(100 << 20).unwrap();
    // `check` and `update` answer at once, name each file and its type, and change nothing.
    let t = std::time::Instant::now();
    let o = check(&[&dir]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("fifo.toml") && err.contains("is a FIFO, not a regular file"),
        "{err}"
    );
    assert!(
        err.contains("zero.toml") && err.contains("is a character device"),
        "{err}"
    );
    assert!(
        err.contains("big.toml") && err.contains("is larger than 1MiB"),
        "{err}"
    );
    let out = p.cli(&["update"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let after: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    assert_eq!(before, after);
}

#[test]
fn a_second_paddock_on_the_same_state_dir_is_refused() {
    let p = Paddock::with_apps("twice", &[("a", "command = [\"/bin/sleep\", \"1001\"]")]).start();
    let st = p.wait_state("a", "READY", Duration::from_secs(5));
    // The same state directory, another socket: refused with the holder's pid, nothing started.
    let state = p.apps_dir().parent().unwrap().join("state");
    let o = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(p.apps_dir())
        .arg("--socket")
        .arg(p.apps_dir().parent().unwrap().join("other.sock"))
        .arg("--state-dir")
        .arg(&state)
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!("another paddock (pid {})", p.pid()))
            && err.contains("this state directory"),
        "{err}"
    );
    assert_eq!(p.app("a").pid, st.pid, "the running app is untouched");
    // (paddock's other child is its descriptor holder, docs/survive.md)
    let sleepers = children_of(p.pid())
        .into_iter()
        .filter(|(pid, _)| {
            !std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__fdholder"))
        })
        .count();
    assert_eq!(sleepers, 1, "one copy of the app");
}
