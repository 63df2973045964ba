//! cgroups of native apps against the real kernel: limits (memory → OOM kill reported as
//! "oom-killed", pids, cpu quota, nofile), the stop that kills the whole cgroup (an escaped,
//! setsid'd grandchild), usage in the API and /metrics, no leaked cgroups after shutdown, and
//! precise errors for bad `[limits]`.
//!
//! They need root (or a delegated cgroup) and the controllers; otherwise each prints
//! `SKIPPED <test>: …` and passes. On a pure cgroup v2 host with controllers they exercise the
//! v2 code (memory.max, cpu.max, pids.max, cgroup.kill); on a hybrid host the v1 controllers
//! plus the controller-less cgroup2's cgroup.kill.

mod common;
use common::*;
use paddock::cgroup::{Layout, detect};
use std::path::PathBuf;
use std::time::Duration;

/// Skips (returns false) unless paddock can use the given controllers here.
fn can(test: &str, ctls: &[&str]) -> bool {
    if !is_root() {
        println!("SKIPPED {test}: needs root (or a cgroup delegated to paddock)");
        return false;
    }
    let host = detect();
    let plan = host.plan("paddock");
    for c in ctls {
        if !plan.limit_controllers.iter().any(|x| x == c) {
            println!(
                "SKIPPED {test}: the {c} controller is not usable here ({} layout; {:?})",
                host.layout.as_str(),
                plan.problems
            );
            return false;
        }
    }
    if let (Layout::V2, Some((_, own)), false) = (host.layout, &host.v2, ctls.is_empty()) {
        // paddock enables controllers for its apps in its own cgroup, which then may hold no
        // other process: here it shares it with this test. Only the real root cgroup (no
        // cgroup.type), e.g. as PID 1 of a VM or container, allows both.
        if own.join("cgroup.type").exists() {
            println!(
                "SKIPPED {test}: on cgroup v2 paddock needs a cgroup of its own for controllers, and this test shares {} (the VM test covers v2)",
                own.display()
            );
            return false;
        }
    }
    if plan.bases.is_empty() {
        println!("SKIPPED {test}: no cgroup hierarchy: {:?}", plan.problems);
        return false;
    }
    true
}

/// A control file of an app's cgroup in the hierarchy that has `ctl` (on v2: the app's one
/// directory).
fn cg_file(p: &Paddock, app: &str, ctl: &str, file: &str) -> PathBuf {
    let host = detect();
    if host.layout == Layout::V2 {
        let dir = p.app(app).cgroup.expect("app has a cgroup");
        return PathBuf::from(dir).join(file);
    }
    let h = host
        .v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == ctl))
        .expect("hierarchy");
    h.own.join(&p.cg_name).join(app).join(file)
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn members(dir: &str) -> Vec<i32> {
    std::fs::read_to_string(PathBuf::from(dir).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

const SLEEPER: &str = "command = [\"/bin/sleep\", \"100007\"]\n";

#[test]
fn a_memory_hog_is_oom_killed_and_reported_and_the_rest_carries_on() {
    if !can(
        "a_memory_hog_is_oom_killed_and_reported_and_the_rest_carries_on",
        &["memory"],
    ) {
        return;
    }
    let hog = "command = [\"python3\", \"-c\", \"import time\\nb = []\\nwhile True:\\n    b.append(bytearray(4 << 20))\\n    time.sleep(0.005)\\n\"]\n[limits]\nmemory = \"32MiB\"\n[restart]\npolicy = \"never\"\n";
    let p = Paddock::with_apps("cg-oom", &[("hog", hog), ("sleeper", SLEEPER)]).start();
    let before = p.wait_state("sleeper", "READY", Duration::from_secs(10));
    let a = p.wait_state("hog", "EXITED", Duration::from_secs(30));
    let e = a.last_exit.expect("last exit");
    assert_eq!(e.description, "oom-killed", "{e:?}");
    assert_eq!(e.signal, Some(9));
    assert_eq!(a.message, "oom-killed");
    assert_eq!(a.limits.and_then(|l| l.memory_bytes), Some(32 << 20));
    // paddock and the other app are untouched.
    let s = p.app("sleeper");
    assert_eq!((s.state.as_str(), s.pid), ("READY", before.pid));
    assert!(alive(p.pid()));
    let m = p.client.request("GET", "/metrics", None).unwrap().body;
    assert!(
        m.contains("paddock_app_last_exit_code{app=\"hog\"} 137"),
        "{m}"
    );
}

#[test]
fn a_fork_bomb_is_bounded_by_pids_and_killed_at_stop() {
    if !can(
        "a_fork_bomb_is_bounded_by_pids_and_killed_at_stop",
        &["pids"],
    ) {
        return;
    }
    let s = Scratch::new("cg-pids-out");
    let out = s.path().join("forked");
    let bomb = format!(
        "command = [\"python3\", \"-c\", \"import os, time\\nn = 0\\nfor i in range(200):\\n    try:\\n        pid = os.fork()\\n    except OSError:\\n        continue\\n    if pid == 0:\\n        time.sleep(30)\\n        os._exit(0)\\n    n += 1\\nopen('{}', 'w').write(str(n))\\ntime.sleep(1000)\\n\"]\n[limits]\npids = 16\n",
        out.display()
    );
    let p = Paddock::with_apps("cg-pids", &[("bomb", &bomb)]).start();
    wait_for(Duration::from_secs(30), "the bomb's count", || {
        std::fs::read_to_string(&out).is_ok_and(|s| !s.is_empty())
    });
    let n: u32 = std::fs::read_to_string(&out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..16).contains(&n), "{n} forks succeeded with pids = 16");
    let a = p.app("bomb");
    assert!(a.pids.is_some_and(|x| x <= 16), "{a:?}");
    let dir = a.cgroup.clone().expect("cgroup");
    assert_eq!(members(&dir).len() as u32, n + 1);
    let r = p.cli(&["stop", "bomb"]);
    assert!(r.status.success(), "{r:?}");
    wait_for(Duration::from_secs(5), "an empty cgroup", || {
        members(&dir).is_empty()
    });
}

#[test]
fn a_busy_loop_gets_about_its_cpu_quota() {
    if !can("a_busy_loop_gets_about_its_cpu_quota", &["cpu"]) {
        return;
    }
    let spin = "command = [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\n[limits]\ncpu = 0.2\n";
    let p = Paddock::with_apps("cg-cpu", &[("spin", spin)]).start();
    p.wait_state("spin", "READY", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let u0 = p.app("spin").cpu_usec.expect("cpu usage");
    std::thread::sleep(Duration::from_secs(3));
    let u1 = p.app("spin").cpu_usec.expect("cpu usage");
    let cores = (u1 - u0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
    // The quota is 20 ms per 100 ms period; allow for period boundaries.
    assert!(
        cores > 0.0 && cores < 0.3,
        "used {cores:.3} cores with cpu = 0.2"
    );
    let q = read(&cg_file(
        &p,
        "spin",
        "cpu",
        if detect().layout == Layout::V2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        },
    ));
    assert!(q.starts_with("20000"), "{q}");
}

#[test]
fn nofile_sets_the_open_file_limit() {
    if !can("nofile_sets_the_open_file_limit", &[]) {
        return;
    }
    let s = Scratch::new("cg-nofile-out");
    let out = s.path().join("n");
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"ulimit -n > {}; ulimit -Hn >> {}; exec sleep 1000\"]\n[limits]\nnofile = 77\n",
        out.display(),
        out.display()
    );
    let p = Paddock::with_apps("cg-nofile", &[("n", &app)]).start();
    wait_for(Duration::from_secs(10), "ulimit output", || {
        read_lines(&out).len() == 2
    });
    assert_eq!(read_lines(&out), ["77", "77"]);
    drop(p);
}

#[test]
fn stop_and_restart_kill_an_escaped_grandchild() {
    if !can("stop_and_restart_kill_an_escaped_grandchild", &[]) {
        return;
    }
    let s = Scratch::new("cg-escape-out");
    let out = s.path().join("gc");
    // The grandchild leaves the process group and session (setsid) and is reparented.
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"setsid sh -c 'echo $$ > {}; exec sleep 1000' & exec sleep 1000\"]\n",
        out.display()
    );
    let p = Paddock::with_apps("cg-escape", &[("esc", &app), ("other", SLEEPER)]).start();
    let grandchild = |old: Option<i32>| {
        let mut pid = 0;
        wait_for(Duration::from_secs(10), "the grandchild's pid", || {
            pid = std::fs::read_to_string(&out)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid > 0 && Some(pid) != old
        });
        pid
    };
    let g1 = grandchild(None);
    assert!(alive(g1));
    let r = p.cli(&["restart", "esc"]);
    assert!(r.status.success(), "{r:?}");
    assert!(
        !alive(g1),
        "the old instance's grandchild survived a restart"
    );
    let g2 = grandchild(Some(g1));
    let other = p.app("other").pid;
    let r = p.cli(&["stop", "esc"]);
    assert!(r.status.success(), "{r:?}");
    wait_for(
        Duration::from_secs(5),
        "the escaped grandchild to die",
        || !alive(g2),
    );
    assert_eq!(p.app("other").pid, other);
    assert!(other.is_some_and(alive));
}

#[test]
fn usage_is_in_the_api_and_metrics_and_nothing_leaks_at_shutdown() {
    if !can(
        "usage_is_in_the_api_and_metrics_and_nothing_leaks_at_shutdown",
        &["memory", "pids"],
    ) {
        return;
    }
    let app = "command = [\"/bin/sh\", \"-c\", \"sleep 1000 & exec sleep 1000\"]\n[limits]\nmemory = \"64MiB\"\npids = 32\n";
    let p = Paddock::with_apps("cg-usage", &[("u", app), ("plain", SLEEPER)]).start();
    p.wait_state("u", "READY", Duration::from_secs(10));
    let mut a = p.app("u");
    wait_for(Duration::from_secs(5), "two processes", || {
        a = p.app("u");
        a.pids == Some(2)
    });
    assert!(a.memory_bytes.is_some_and(|m| m > 0), "{a:?}");
    assert!(a.cpu_usec.is_some(), "{a:?}");
    let l = a.limits.clone().unwrap();
    assert_eq!((l.memory_bytes, l.pids), (Some(64 << 20), Some(32)));
    assert_eq!(
        read(&cg_file(&p, "u", "pids", "pids.max")).trim(),
        "32",
        "pids.max"
    );
    let mem_file = if detect().layout == Layout::V2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        read(&cg_file(&p, "u", "memory", mem_file)).trim(),
        (64u64 << 20).to_string()
    );
    // An app without limits has a cgroup too (for the kill), and usage.
    assert!(p.app("plain").cgroup.is_some());
    let m = p.client.request("GET", "/metrics", None).unwrap().body;
    for want in [
        "paddock_app_memory_bytes{app=\"u\"} ",
        "paddock_app_cpu_seconds_total{app=\"u\"} ",
        "paddock_app_pids{app=\"u\"} 2",
        "paddock_app_memory_limit_bytes{app=\"u\"} 67108864",
        "paddock_app_pids_limit{app=\"u\"} 32",
    ] {
        assert!(m.contains(want), "{want} missing:\n{m}");
    }
    let st = p.cli(&["status", "u"]);
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        text.contains("MEMORY") && text.contains("of 64M") && text.contains("pids 2 of 32"),
        "{text}"
    );

    // update with new limits applies them.
    p.write_app("u", &app.replace("pids = 32", "pids = 40"));
    let r = p.cli(&["update"]);
    assert!(r.status.success(), "{r:?}");
    wait_for(Duration::from_secs(10), "the new pids.max", || {
        std::fs::read_to_string(cg_file(&p, "u", "pids", "pids.max"))
            .is_ok_and(|s| s.trim() == "40")
    });

    let dir = PathBuf::from(p.app("u").cgroup.unwrap());
    let base = dir.parent().unwrap().to_path_buf();
    let pids_base = cg_file(&p, "u", "pids", "x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(p.shutdown().success());
    for b in [&base, &pids_base] {
        let subdirs: Vec<_> = std::fs::read_dir(b)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            subdirs.is_empty() || subdirs.iter().all(|d| d.ends_with(".supervisor")),
            "cgroups left behind after shutdown: {subdirs:?}"
        );
    }
}

#[test]
fn a_removed_app_loses_its_cgroup() {
    if !can("a_removed_app_loses_its_cgroup", &[]) {
        return;
    }
    let p = Paddock::with_apps("cg-remove", &[("gone", SLEEPER), ("stays", SLEEPER)]).start();
    p.wait_state("gone", "READY", Duration::from_secs(10));
    let dir = PathBuf::from(p.app("gone").cgroup.unwrap());
    assert!(dir.is_dir());
    std::fs::remove_file(p.apps_dir().join("gone.toml")).unwrap();
    let r = p.cli(&["update"]);
    assert!(r.status.success(), "{r:?}");
    wait_for(Duration::from_secs(10), "the cgroup to go", || {
        !dir.exists()
    });
}

#[test]
fn v2_controllers_are_used_where_the_host_has_them() {
    let test = "v2_controllers_are_used_where_the_host_has_them";
    if detect().layout != Layout::V2 {
        println!(
            "SKIPPED {test}: this host's cgroup layout is {} (the VM test covers v2: PADDOCK_VM_TEST=1 cargo test --release --test vm)",
            detect().layout.as_str()
        );
        return;
    }
    if !can(test, &["memory", "cpu", "pids"]) {
        return;
    }
    let app = "command = [\"/bin/sleep\", \"100007\"]\n[limits]\nmemory = \"48MiB\"\ncpu = 0.25\npids = 9\n";
    let p = Paddock::with_apps("cg-v2", &[("v", app)]).start();
    p.wait_state("v", "READY", Duration::from_secs(10));
    let dir = PathBuf::from(p.app("v").cgroup.unwrap());
    assert_eq!(
        read(&dir.join("memory.max")).trim(),
        (48u64 << 20).to_string()
    );
    assert_eq!(read(&dir.join("cpu.max")).trim(), "25000 100000");
    assert_eq!(read(&dir.join("pids.max")).trim(), "9");
    assert!(dir.join("cgroup.kill").exists());
}

#[test]
fn bad_limits_are_precise_config_errors() {
    let s = Scratch::new("cg-bad");
    for (name, body, want) in [
        (
            "p",
            "pids = -1\n",
            "p.toml:3:8: key `limits.pids`: must be a number of processes",
        ),
        ("n", "nofile = \"x\"\n", "n.toml:3:10: key `limits.nofile`"),
        (
            "m",
            "memory = \"12 parsecs\"\n",
            "m.toml:3:10: key `limits.memory`",
        ),
        (
            "c",
            "cpu = 0\n",
            "c.toml:3:7: key `limits.cpu`: must be a share",
        ),
    ] {
        std::fs::write(
            s.path().join(format!("{name}.toml")),
            format!("command = [\"/bin/true\"]\n[limits]\n{body}"),
        )
        .unwrap();
        let out = check(&[s.path()]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        std::fs::remove_file(s.path().join(format!("{name}.toml"))).unwrap();
    }
}

#[test]
fn a_limit_that_cannot_be_enforced_is_refused_not_ignored() {
    // Without root (here: as nobody) paddock gets no cgroups: the app with a limit is refused
    // with the key and the reason, the one without runs.
    let test = "a_limit_that_cannot_be_enforced_is_refused_not_ignored";
    let s = Scratch::new("cg-refuse");
    std::fs::create_dir_all(s.path().join("apps")).unwrap();
    std::fs::write(
        s.path().join("apps/lim.toml"),
        "command = [\"/bin/sleep\", \"1000\"]\n[limits]\npids = 5\n",
    )
    .unwrap();
    std::fs::write(s.path().join("apps/plain.toml"), SLEEPER).unwrap();
    let mut cmd = if is_root() {
        use std::os::unix::fs::PermissionsExt;
        for p in [s.path(), &s.path().join("apps")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(s.path().join("apps"))
        .arg("--socket")
        .arg(s.path().join("sock"))
        .arg("--state-dir")
        .arg(s.path().join("state"))
        .env("PADDOCK_CGROUP_NAME", cgroup_name())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setpriv (util-linux) or paddock");
    let client = paddock::control::client::Client::new(&s.path().join("sock"));
    let up = try_wait(Duration::from_secs(20), || {
        client.request("GET", "/v1/version", None).is_ok()
    });
    let status = || {
        client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .map(|l| l.1.apps)
            .unwrap_or_default()
    };
    let mut apps = vec![];
    let settled = up
        && try_wait(Duration::from_secs(10), || {
            apps = status();
            apps.len() == 2 && apps.iter().all(|a| a.state != "STARTING")
        });
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_child(&mut child, Duration::from_secs(15));
    assert!(settled, "paddock did not come up: {apps:?}");
    let lim = apps.iter().find(|a| a.name == "lim").unwrap();
    if lim.state == "READY" {
        println!("SKIPPED {test}: paddock got a cgroup without root here (delegated)");
        return;
    }
    assert_eq!(lim.state, "FATAL", "{lim:?}");
    assert!(
        lim.message
            .contains("key `limits.pids`: cannot be enforced: paddock cannot use cgroups here")
            && lim.message.contains("refusing to run the app without it"),
        "{}",
        lim.message
    );
    let plain = apps.iter().find(|a| a.name == "plain").unwrap();
    assert_eq!(plain.state, "READY");
    assert_eq!(plain.cgroup, None);
}
