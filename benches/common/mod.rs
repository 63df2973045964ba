//! What the benches that run a real `paddock serve` share: the server itself (`Serve`), a
//! scratch directory of app files, and the supervisor's PSS. Each bench is its own crate and
//! uses part of this (hence `dead_code` allowed).
#![allow(dead_code)]

use paddock::control::api::StatusList;
use paddock::control::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_paddock");

/// Proportional set size of a process, in KiB (0 if it cannot be read).
pub fn pss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A fresh `paddock-bench-TAG-PID` directory in the temporary directory, with `apps/` holding
/// `NAME.toml` for each of `apps`.
pub fn scratch(tag: &str, apps: &[(&str, String)]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("paddock-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("apps")).unwrap();
    for (name, text) in apps {
        std::fs::write(d.join("apps").join(format!("{name}.toml")), text).unwrap();
    }
    d
}

/// `paddock serve` on `DIR/apps`, with its socket and state in `DIR`. Dropped: SIGTERM, waited
/// for, and `DIR` removed (unless `keep`).
pub struct Serve {
    pub child: Child,
    pub client: Client,
    pub dir: PathBuf,
    keep: bool,
}

impl Serve {
    /// Starts paddock and waits until its control socket answers.
    pub fn start(dir: &Path) -> Serve {
        let sock = dir.join("sock");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.join("apps"))
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("paddock serve");
        let mut child = child;
        let client = Client::new(&sock);
        let t = Instant::now();
        while client.request("GET", "/v1/version", None).is_err() {
            // A paddock that cannot start (another one holds the cgroup name, …) ends the
            // bench with its reason, not a wait for ever.
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "paddock serve exited ({st}) before its socket answered: run it by hand to see why (is another paddock running?)"
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "paddock serve did not answer on {} within 60 s",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Serve {
            child,
            client,
            dir: dir.to_path_buf(),
            keep: false,
        }
    }

    pub fn status(&self) -> StatusList {
        self.client
            .json::<StatusList>("GET", "/v1/apps")
            .map(|x| x.1)
            .unwrap_or(StatusList { apps: vec![] })
    }

    /// The state of one app ("" if paddock does not know it).
    pub fn state(&self, app: &str) -> String {
        self.status()
            .apps
            .into_iter()
            .find(|a| a.name == app)
            .map(|a| a.state)
            .unwrap_or_default()
    }

    /// Until `app` is in `state` (30 s at most).
    pub fn wait(&self, app: &str, state: &str) {
        let t = Instant::now();
        while self.state(app) != state {
            assert!(t.elapsed() < Duration::from_secs(30), "{app} never {state}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Until paddock has `n` apps, all READY.
    /// Waits until `n` apps are all `READY`. Polls every 5 ms with the CLI's table (its content
    /// type says whether all are ready), not the JSON: decoding 1000 statuses every 2 ms took
    /// most of a core from the start being measured.
    pub fn wait_running(&self, n: usize) {
        loop {
            if let Ok((ctype, body)) = self.client.text("/v1/apps?format=table")
                && ctype == paddock::control::table::ALL_READY
                && body.lines().count() == n + 1
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `paddock ARGS` against this paddock; it must succeed.
    pub fn cli(&self, args: &[&str]) {
        let o = Command::new(BIN)
            .args(args)
            .env("PADDOCK_SOCKET", self.dir.join("sock"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Stops paddock; `keep` keeps its directory (state and caches) for another start.
    pub fn stop(mut self, keep: bool) {
        self.keep = keep;
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is of the child this bench started and has
        // not waited for yet, so it cannot have been reused.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
