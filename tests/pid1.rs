//! paddock as PID 1 of a fresh PID namespace (a container's init), and as a `Type=notify`
//! service of its parent.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `paddock serve` as PID 1 of new PID (and mount, UTS) namespaces, via util-linux `unshare`.
struct Init {
    _dir: Scratch,
    unshare: Child,
    client: paddock::control::client::Client,
}

impl Init {
    fn start(tag: &str, apps: &[(&str, &str)], global: &str) -> Option<Init> {
        if !is_root() {
            eprintln!("SKIPPED {tag}: needs root for PID namespaces");
            return None;
        }
        let dir = Scratch::new(tag);
        std::fs::create_dir_all(dir.path().join("apps")).unwrap();
        for (n, t) in apps {
            std::fs::write(dir.path().join("apps").join(format!("{n}.toml")), t).unwrap();
        }
        std::fs::write(dir.path().join("paddock.toml"), global).unwrap();
        let unshare = Command::new("unshare")
            .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--uts",
                "--kill-child",
                BIN,
                "serve",
                "--config",
            ])
            .arg(dir.path().join("apps"))
            .arg("--socket")
            .arg(dir.path().join("sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--global")
            .arg(dir.path().join("paddock.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let client = paddock::control::client::Client::new(&dir.path().join("sock"));
        wait_for(Duration::from_secs(20), "paddock as PID 1", || {
            client.request("GET", "/v1/version", None).is_ok()
        });
        Some(Init {
            _dir: dir,
            unshare,
            client,
        })
    }

    /// paddock's pid as seen from here (the child of `unshare`).
    fn host_pid(&self) -> i32 {
        let me = self.unshare.id() as i32;
        let mut found = None;
        wait_for(Duration::from_secs(5), "paddock under unshare", || {
            found = children_of(me).first().map(|c| c.0);
            found.is_some()
        });
        found.unwrap()
    }

    fn app(&self, name: &str) -> paddock::control::api::AppStatus {
        let l = self
            .client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .unwrap()
            .1;
        l.apps.into_iter().find(|a| a.name == name).unwrap()
    }

    fn wait_ready(&self, name: &str) {
        wait_for(Duration::from_secs(10), &format!("{name} READY"), || {
            self.app(name).state == "READY"
        });
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // An orderly shutdown first (paddock removes its cgroups), then the hard way.
        if let Some((pid, _)) = children_of(self.unshare.id() as i32).first() {
            // SAFETY: kill(2) takes no pointers; `pid` was just read as a child of our `unshare`
            // process, which is still running.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
            try_wait(Duration::from_secs(10), || {
                matches!(self.unshare.try_wait(), Ok(Some(_)))
            });
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[test]
fn pid1_reports_pid_1_and_reaps_orphans_of_orphans() {
    // Each run leaves grandchildren and great-grandchildren that exit later, reparented to PID 1.
    let app = "command = [\"/bin/sh\", \"-c\", \"while :; do (sh -c '(sleep 0.2; exit 3) & sleep 0.1; exit 5' &); sleep 0.3; done\"]";
    let Some(init) = Init::start("pid1-reap", &[("spawner", app)], "") else {
        return;
    };
    let v = init
        .client
        .json::<paddock::control::api::VersionInfo>("GET", "/v1/version")
        .unwrap()
        .1;
    assert_eq!(v.pid, 1, "paddock is PID 1 of its namespace");
    init.wait_ready("spawner");
    let pid = init.host_pid();
    std::thread::sleep(Duration::from_millis(1500));
    let zombies: Vec<_> = children_of(pid)
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .collect();
    // A zombie may exist for an instant between exit and reaping; it must not stay.
    let lasting = zombies.iter().filter(|(z, _)| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(format!("/proc/{z}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert_eq!(lasting.count(), 0, "PID 1 leaves zombies: {zombies:?}");
    let st = init.app("spawner");
    assert_eq!(st.restarts, 0, "orphans are never taken for the app");
    assert_eq!(st.state, "READY");
}

#[test]
fn sigterm_from_outside_the_namespace_stops_everything_in_order_and_exits_0() {
    let s = Scratch::new("pid1-term-log");
    let log = s.path().join("log");
    let mk = |name: &str, extra: &str| {
        format!(
            "{extra}command = [\"/bin/sh\", \"-c\", \"trap 'echo {name}-stop >> {0}; exit 0' TERM; echo >&3; while :; do sleep 0.05; done\"]\n[readiness]\nnotify_fd = 3\n",
            log.display()
        )
    };
    let stubborn = "command = [\"/bin/sh\", \"-c\", \"trap '' TERM; exec sleep 1000\"]\nstop_timeout = \"300ms\"\n";
    let Some(mut init) = Init::start(
        "pid1-term",
        &[
            ("db", &mk("db", "")),
            ("web", &mk("web", "requires = [\"db\"]\n")),
            ("stubborn", stubborn),
        ],
        "shutdown_timeout = \"1s\"\n",
    ) else {
        return;
    };
    init.wait_ready("web");
    init.wait_ready("stubborn");
    let t = Instant::now();
    // SAFETY: kill(2) takes no pointers; paddock as PID 1 of the test's namespace, seen from here,
    // still running.
    unsafe { libc::kill(init.host_pid(), libc::SIGTERM) };
    let status = wait_child(&mut init.unshare, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "a container stop ends with status 0"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the stubborn app had its stop_timeout"
    );
    assert_eq!(
        read_lines(&log),
        vec!["web-stop", "db-stop"],
        "reverse dependency order"
    );
}

#[test]
fn essential_failure_as_pid1_exits_nonzero() {
    let apps = [
        (
            "core",
            "command = [\"/bin/sh\", \"-c\", \"exit 1\"]\nessential = true\n[restart]\nbackoff_initial = \"10ms\"\nmax_failures = 2\n",
        ),
        ("other", "command = [\"/bin/sleep\", \"1000\"]"),
    ];
    let Some(mut init) = Init::start("pid1-essential", &apps, "") else {
        return;
    };
    let status = wait_child(&mut init.unshare, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
}

#[test]
fn hostname_comes_from_paddock_toml() {
    let s = Scratch::new("pid1-host-out");
    let out = s.path().join("hostname");
    let app = format!(
        "command = [\"/bin/sh\", \"-c\", \"hostname > {}; exec sleep 1000\"]",
        out.display()
    );
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let Some(init) = Init::start(
        "pid1-hostname",
        &[("h", &app)],
        "hostname = \"paddock-vm-1\"\n",
    ) else {
        return;
    };
    init.wait_ready("h");
    wait_for(Duration::from_secs(5), "hostname output", || {
        read_lines(&out).len() == 1
    });
    assert_eq!(read_lines(&out), vec!["paddock-vm-1"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before,
        "the host's name is untouched (own UTS namespace)"
    );
}

#[test]
fn a_broken_paddock_toml_is_reported() {
    let s = Scratch::new("badglobal");
    std::fs::create_dir_all(s.path().join("apps")).unwrap();
    std::fs::write(s.path().join("paddock.toml"), "on_exit = \"explode\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .arg(s.path().join("apps"))
        .arg("--socket")
        .arg(s.path().join("sock"))
        .arg("--state-dir")
        .arg(s.path().join("state"))
        .arg("--global")
        .arg(s.path().join("paddock.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("paddock.toml:1:11:") && err.contains("on_exit"),
        "{err}"
    );
}

#[test]
fn bare_paddock_outside_pid1_prints_help() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

#[test]
fn tells_its_parent_ready_and_stopping_and_hides_notify_socket_from_apps() {
    let s = Scratch::new("sdnotify-parent");
    let sock_path = s.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let env_out = s.path().join("env");
    let p = Paddock::with_apps(
        "sdnotify-parent",
        &[
            (
                "slow",
                "command = [\"/bin/sh\", \"-c\", \"sleep 0.5; echo >&3; exec sleep 1000\"]\n[readiness]\nnotify_fd = 3\n",
            ),
            (
                "env",
                &format!(
                    "command = [\"/bin/sh\", \"-c\", \"env > {}; exec sleep 1000\"]",
                    env_out.display()
                ),
            ),
        ],
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .env("PADDOCK_CGROUP_NAME", common::cgroup_name())
        .arg(p.apps_dir())
        .arg("--socket")
        .arg(p.socket())
        .arg("--state-dir")
        .arg(p.dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 from paddock");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        msg.contains("READY=1") && msg.contains("STATUS=2 of 2 apps ready"),
        "{msg}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "READY=1 only once the slow app is ready"
    );
    wait_for(Duration::from_secs(5), "env dump", || {
        !read_lines(&env_out).is_empty()
    });
    assert!(
        !read_lines(&env_out)
            .iter()
            .any(|l| l.starts_with("NOTIFY_SOCKET=")),
        "paddock's NOTIFY_SOCKET leaked to an app"
    );
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(wait_child(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn doctor_reports_this_hosts_facts() {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Facts of this kernel, checked independently of paddock.
    let layout = v["cgroup"]["layout"].as_str().unwrap();
    let v2_at_root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    if v2_at_root {
        assert_eq!(layout, "v2");
    } else {
        assert!(layout == "hybrid" || layout == "v1", "{layout}");
    }
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if lsm.contains("landlock") {
        assert!(v["landlock_abi"].as_i64().unwrap() >= 1);
    }
    let names: Vec<&str> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"]
    );
    if is_root() {
        assert!(
            v["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["ok"] == true),
            "{v}"
        );
    }
    let text = Command::new(BIN).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("isolation levels:")
            && text.contains("bundle   available")
            && text.contains("wasm     available"),
        "{text}"
    );
}
