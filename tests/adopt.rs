//! paddock's own failure as a fault to survive: `kill -9` of paddock and a restart, with and
//! without cgroups; `paddock reexec`; apps removed or dead while paddock was away; hostile
//! records in the state directory. Real processes throughout.

mod common;
use common::*;
use std::time::Duration;

/// Live processes whose command line holds `marker`, not counting a shell's fork that has not
/// exec'd yet (it carries its parent's command line for a moment).
fn with_marker(marker: &str) -> Vec<i32> {
    let all = with_marker_all(marker);
    all.iter()
        .copied()
        .filter(|&pid| {
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")?
                        .1
                        .split(' ')
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                });
            !ppid.is_some_and(|pp| all.contains(&pp))
        })
        .collect()
}

fn with_marker_all(marker: &str) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&c).contains(marker)
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// An app that prints 1, 2, 3, … every 20 ms (its sh carries `marker` in its command line).
fn talker(marker: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done # {marker}\"]\nstop_timeout = \"2s\"\n"
    )
}

/// An app that only sleeps.
fn sleeper(marker: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"while :; do sleep 5; done # {marker}\"]\nstop_timeout = \"2s\"\n"
    )
}

/// The numbers a talker printed, in log order: consecutive means no line was lost.
fn counted(p: &Paddock, app: &str) -> Vec<u64> {
    read_lines(&p.logs_dir().join(format!("{app}.out")))
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// No line repeated, none lost, except what paddock had already read but not yet written at
/// the instant it was killed (a partial line, normally nothing else): one short gap right after
/// `crash`, the last line logged before the kill.
fn assert_consecutive(app: &str, n: &[u64], crash: Option<u64>) {
    assert!(!n.is_empty(), "{app}: nothing logged");
    for w in n.windows(2) {
        if w[1] != w[0] + 1 {
            assert!(
                crash == Some(w[0]) && w[1] > w[0] && w[1] - w[0] <= 4,
                "{app}: a line was lost or repeated: {w:?} (last line before the crash: {crash:?})"
            );
        }
    }
}

/// The last number each talker had logged.
fn last_logged(p: &Paddock, apps: usize) -> Vec<Option<u64>> {
    (0..apps)
        .map(|i| counted(p, &format!("talk{i}")).last().copied())
        .collect()
}

fn crash_and_restart(tag: &str, uid: Option<u32>) {
    let marker = format!("adopt-{tag}-{}", std::process::id());
    let mut apps = vec![];
    for i in 0..10 {
        apps.push((format!("talk{i}"), talker(&format!("{marker}-talk{i}"))));
        apps.push((format!("idle{i}"), sleeper(&format!("{marker}-idle{i}"))));
    }
    let refs: Vec<(&str, &str)> = apps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = Paddock::with_apps(tag, &refs);
    let start = |p: Paddock| match uid {
        Some(u) => p.start_as(u, &[]),
        None => p.start(),
    };
    let mut p = start(p);
    for (name, _) in &apps {
        p.wait_state(name, "READY", Duration::from_secs(20));
    }
    // idle2 has been restarted once: its count survives the crash.
    let first = p.app("idle2").pid.unwrap();
    // SAFETY: kill(2) takes no pointers; `first` is the app process paddock reports.
    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_for(Duration::from_secs(10), "idle2 restarted", || {
        let a = p.app("idle2");
        a.state == "READY" && a.pid.is_some_and(|x| x != first)
    });
    let before: std::collections::BTreeMap<String, i32> = p
        .status()
        .into_iter()
        .map(|a| (a.name, a.pid.expect("a pid")))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // kill -9 of paddock.
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let crash = last_logged(&p, 10);
    let at_crash = crash[0].unwrap_or(0);
    // While paddock is away the apps go on; the talkers' pipes are kept by the holder.
    std::thread::sleep(Duration::from_millis(600));
    for (name, pid) in &before {
        assert!(
            alive(*pid),
            "{name} (pid {pid}) died while paddock was away"
        );
    }
    let p = start(p);
    for (name, pid) in &before {
        let a = p.wait_state(name, "READY", Duration::from_secs(20));
        assert_eq!(a.pid, Some(*pid), "{name} was not adopted: {a:?}");
        let restarts = if name == "idle2" { 1 } else { 0 };
        assert_eq!(a.restarts, restarts, "{name}: {a:?}");
        let n = with_marker(&format!("{marker}-{name} ")).len()
            + with_marker(&format!("{marker}-{name}\0")).len();
        assert_eq!(n, 1, "{name}: {n} copies run");
    }
    // The lines written while paddock was away reach the log, none lost or doubled.
    wait_for(
        Duration::from_secs(5),
        "talk0's lines after the crash",
        || counted(&p, "talk0").last().copied().unwrap_or(0) > at_crash + 30,
    );
    for (i, c) in crash.iter().enumerate() {
        assert_consecutive(&format!("talk{i}"), &counted(&p, &format!("talk{i}")), *c);
    }
    // An adopted app is supervised: stop and start work, and a kill is noticed and restarted.
    let out = p.cli(&["restart", "idle0"]);
    assert!(out.status.success(), "{out:?}");
    assert_ne!(p.app("idle0").pid, before.get("idle0").copied());
    let victim = before["idle1"];
    // SAFETY: kill(2) takes no pointers; `victim` is an app process this test checked alive.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_for(Duration::from_secs(10), "idle1 restarted", || {
        let a = p.app("idle1");
        a.state == "READY" && a.pid.is_some_and(|x| x != victim)
    });
    assert!(
        p.app("idle1")
            .last_exit
            .is_some_and(|e| e.description.contains("status unknown")),
        "{:?}",
        p.app("idle1")
    );
    let state = format!("{}/state/fdholder.sock", p.dir.0.display());
    let st = p.shutdown();
    assert!(st.success(), "{st:?}");
    // 0 orphans, and the holder is gone with paddock.
    wait_for(Duration::from_secs(5), "no app process left", || {
        with_marker(&marker).is_empty()
    });
    wait_for(Duration::from_secs(5), "the holder to exit", || {
        with_marker(&state).is_empty()
    });
}

#[test]
fn kill9_of_paddock_with_20_apps_loses_and_duplicates_nothing() {
    crash_and_restart("crash", None);
}

#[test]
fn kill9_of_an_unprivileged_paddock_without_cgroups_too() {
    if !is_root() {
        println!(
            "SKIPPED kill9_of_an_unprivileged_paddock_without_cgroups_too: needs root to run paddock as another user (as non-root the test above runs without cgroups)"
        );
        return;
    }
    crash_and_restart("crash-user", Some(65534));
}

#[test]
fn reexec_keeps_100_apps_running_with_the_same_pids() {
    let marker = format!("adopt-reexec-{}", std::process::id());
    let mut apps = vec![("talk".to_string(), talker(&format!("{marker}-talk")))];
    for i in 0..100 {
        apps.push((format!("s{i}"), sleeper(&format!("{marker}-s{i}"))));
    }
    let refs: Vec<(&str, &str)> = apps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = Paddock::with_apps("reexec", &refs).start();
    for (name, _) in &apps {
        p.wait_state(name, "READY", Duration::from_secs(30));
    }
    let before: Vec<(String, Option<i32>)> =
        p.status().into_iter().map(|a| (a.name, a.pid)).collect();
    let lines_before = counted(&p, "talk").len();
    let out = p.cli(&["reexec"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("(pid {})", p.pid())),
        "{out:?}"
    );
    let after: Vec<(String, Option<i32>)> = p
        .status()
        .into_iter()
        .map(|a| {
            assert_eq!(a.restarts, 0, "{a:?}");
            assert_eq!(a.state, "READY", "{a:?}");
            (a.name, a.pid)
        })
        .collect();
    assert_eq!(before, after, "pids changed across reexec");
    wait_for(Duration::from_secs(5), "the talker's log to go on", || {
        counted(&p, "talk").len() > lines_before + 20
    });
    // A re-exec writes out what it read first: nothing may be lost.
    assert_consecutive("talk", &counted(&p, "talk"), None);
    // The re-executed paddock still reaps its children with their exit status.
    let s0 = after
        .iter()
        .find(|a| a.0 == "s0")
        .and_then(|a| a.1)
        .unwrap();
    // SAFETY: kill(2) takes no pointers; s0's pid is a live child of the paddock under test.
    unsafe { libc::kill(s0, libc::SIGKILL) };
    wait_for(Duration::from_secs(10), "s0 restarted", || {
        p.app("s0").pid.is_some_and(|x| x != s0)
    });
    assert!(
        p.app("s0")
            .last_exit
            .is_some_and(|e| e.description.contains("SIGKILL")),
        "{:?}",
        p.app("s0")
    );
    // SIGUSR1 does the same.
    // SAFETY: kill(2) takes no pointers; the pid is paddock's, our unwaited child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        p.app("s1").pid,
        after.iter().find(|a| a.0 == "s1").unwrap().1
    );
    assert!(p.shutdown().success());
    wait_for(Duration::from_secs(5), "no app process left", || {
        with_marker(&marker).is_empty()
    });
}

#[test]
fn apps_removed_or_dead_while_paddock_was_away() {
    let marker = format!("adopt-away-{}", std::process::id());
    let p = Paddock::with_apps(
        "away",
        &[
            ("keep", &sleeper(&format!("{marker}-keep"))),
            ("gone", &sleeper(&format!("{marker}-gone"))),
            ("dead", &sleeper(&format!("{marker}-dead"))),
        ],
    );
    let mut p = p.start();
    for n in ["keep", "gone", "dead"] {
        p.wait_state(n, "READY", Duration::from_secs(10));
    }
    let pid = |p: &Paddock, n: &str| p.app(n).pid.unwrap();
    let (keep, gone, dead) = (pid(&p, "keep"), pid(&p, "gone"), pid(&p, "dead"));
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(p.apps_dir().join("gone.toml")).unwrap();
    // SAFETY: kill(2) takes no pointers; `dead` is an app process of this test, alive just now.
    unsafe { libc::kill(dead, libc::SIGKILL) };
    let p = p.start();
    assert_eq!(
        p.wait_state("keep", "READY", Duration::from_secs(10)).pid,
        Some(keep)
    );
    let d = p.wait_state("dead", "READY", Duration::from_secs(10));
    assert_ne!(d.pid, Some(dead));
    wait_for(
        Duration::from_secs(10),
        "the removed app's process to stop",
        || !alive(gone),
    );
    assert!(p.status().iter().all(|a| a.name != "gone"));
    assert!(p.shutdown().success());
    wait_for(Duration::from_secs(5), "no app process left", || {
        with_marker(&marker).is_empty()
    });
}

#[test]
fn hostile_records_are_refused_and_nothing_else_is_touched() {
    // A process that is not paddock's: a record naming it with the wrong start time, or
    // naming pid 1, must not make paddock signal or adopt it.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let by = bystander.id() as i32;
    let p = Paddock::with_apps(
        "hostile",
        &[
            ("a", "command = [\"/bin/sleep\", \"600\"]\n"),
            ("b", "command = [\"/bin/sleep\", \"600\"]\n"),
        ],
    );
    let run = p.dir.0.join("state/run");
    std::fs::create_dir_all(&run).unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let rec = |app: &str, pid: i32, ticks: u64| {
        format!(
            r#"{{"app":"{app}","pid":{pid},"pgid":{pid},"start_ticks":{ticks},"boot_id":"{}","ready":true,"stop_signal":9,"stop_timeout_ms":0}}"#,
            boot.trim()
        )
    };
    // The journal: a forged line for "b" (the bystander with the wrong start time), garbage.
    let journal = format!(
        "{{\"Up\":{}}}\n\0\x01garbage\n{{\"Up\":{{\"app\":1}}}}\n",
        rec("b", by, 2)
    );
    std::fs::write(run.join("records"), journal).unwrap();
    // Files as earlier builds wrote them.
    std::fs::write(run.join("a.json"), rec("a", by, 1)).unwrap(); // wrong start time
    std::fs::write(run.join("gone.json"), rec("gone", 1, 0)).unwrap(); // pid 1
    std::fs::write(run.join("x.json"), b"\0\xff garbage").unwrap();
    std::fs::write(run.join("y.json"), "x".repeat(1 << 20)).unwrap();
    let fifo = std::ffi::CString::new(run.join("z.json").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path, a live CString.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let p = p.start();
    for app in ["a", "b"] {
        let a = p.wait_state(app, "READY", Duration::from_secs(10));
        assert_ne!(
            a.pid,
            Some(by),
            "{app}: adopted a process by a forged record"
        );
    }
    assert!(alive(by), "the bystander was signalled");
    assert!(p.shutdown().success());
    assert!(alive(by), "the bystander was signalled at shutdown");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn records_of_an_earlier_build_are_adopted_and_a_fifo_journal_does_not_hang() {
    // paddock builds before the journal wrote `run/APP.json`, one record per file: a new
    // binary started after them (an upgrade) must adopt those processes.
    let marker = format!("adopt-legacy-{}", std::process::id());
    let p = Paddock::with_apps(
        "legacy",
        &[
            ("one", &sleeper(&format!("{marker}-one"))),
            ("two", &sleeper(&format!("{marker}-two"))),
        ],
    );
    let mut p = p.start();
    let pids: Vec<i32> = ["one", "two"]
        .iter()
        .map(|n| {
            p.wait_state(n, "READY", Duration::from_secs(10))
                .pid
                .unwrap()
        })
        .collect();
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let run = p.dir.0.join("state/run");
    let journal = std::fs::read_to_string(run.join("records")).unwrap();
    let mut last = std::collections::BTreeMap::new();
    for line in journal.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(r) = v.get("Up") {
            last.insert(r["app"].as_str().unwrap().to_string(), r.clone());
        }
    }
    assert_eq!(last.len(), 2, "journal: {journal}");
    for (app, r) in &last {
        std::fs::write(run.join(format!("{app}.json")), r.to_string()).unwrap();
    }
    // The journal itself is a FIFO now: not read (it would block), moved aside.
    std::fs::remove_file(run.join("records")).unwrap();
    let fifo = std::ffi::CString::new(run.join("records").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path, a live CString.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let p = p.start();
    for (n, pid) in ["one", "two"].iter().zip(&pids) {
        assert_eq!(
            p.wait_state(n, "READY", Duration::from_secs(10)).pid,
            Some(*pid),
            "{n} was not adopted"
        );
    }
    assert!(run.join("records.bad").exists());
    assert!(!run.join("one.json").exists(), "the old record files stay");
    assert!(p.shutdown().success());
    wait_for(Duration::from_secs(5), "no app process left", || {
        with_marker(&marker).is_empty()
    });
}
