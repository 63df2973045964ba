//! Test harness: a real `paddock serve` on a private config dir, socket and state dir.
#![allow(dead_code)]

use paddock::control::api::*;
use paddock::control::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The paddock binary: cargo's build of it for paddock's own tests; for paddock-lab's tests
/// (crates/paddock-lab/tests, which share this file), the one built beside them in the same
/// profile directory (`cargo test --release --workspace` builds it).
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_paddock") {
    Some(p) => p,
    None => concat!(env!("CARGO_TARGET_TMPDIR"), "/../release/paddock"),
};

pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("paddock-t-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cgroup name of its own for each paddock a test starts (`PADDOCK_CGROUP_NAME`): tests run
/// in parallel with apps of the same names.
pub fn cgroup_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("paddock-test-{}-{n}", std::process::id())
}

pub struct Paddock {
    pub dir: Scratch,
    /// Its `PADDOCK_CGROUP_NAME`.
    pub cg_name: String,
    pub child: Option<Child>,
    pub client: Client,
}

impl Paddock {
    /// A config dir with the given apps (name, TOML text), not yet serving.
    pub fn with_apps(tag: &str, apps: &[(&str, &str)]) -> Paddock {
        let dir = Scratch::new(tag);
        std::fs::create_dir_all(dir.0.join("apps")).unwrap();
        for (name, text) in apps {
            std::fs::write(dir.0.join("apps").join(format!("{name}.toml")), text).unwrap();
        }
        let client = Client::new(&dir.0.join("paddock.sock"));
        Paddock {
            dir,
            cg_name: cgroup_name(),
            child: None,
            client,
        }
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.dir.0.join("apps")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("paddock.sock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.0.join("state/logs")
    }

    pub fn write_app(&self, name: &str, text: &str) {
        std::fs::write(self.apps_dir().join(format!("{name}.toml")), text).unwrap();
    }

    /// Starts `paddock serve` and waits for its socket.
    pub fn start(self) -> Paddock {
        self.start_with(&[])
    }

    /// Starts `paddock serve` with extra arguments (e.g. `--store DIR`).
    pub fn start_with(self, extra: &[&std::ffi::OsStr]) -> Paddock {
        self.start_cmd(extra, |_| {})
    }

    /// Starts `paddock serve` as an unprivileged user (its scratch dir is given to that user,
    /// with a copy of the binary: the checkout may be in a directory that user cannot enter).
    pub fn start_as(self, uid: u32, extra: &[&std::ffi::OsStr]) -> Paddock {
        let bin = self.dir.0.join("paddock-bin");
        if !bin.exists() {
            // (A second start after a crash: the first copy may still run as the holder.)
            std::fs::copy(BIN, &bin).expect("copy the paddock binary");
        }
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(&self.dir.0)
            .status()
            .expect("chown");
        assert!(st.success());
        self.start_bin(&bin, extra, |c| {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(uid);
        })
    }

    /// Starts `paddock serve` with extra arguments and `f` applied to its command first.
    pub fn start_cmd(self, extra: &[&std::ffi::OsStr], f: impl FnOnce(&mut Command)) -> Paddock {
        self.start_bin(Path::new(BIN), extra, f)
    }

    fn start_bin(
        mut self,
        bin: &Path,
        extra: &[&std::ffi::OsStr],
        f: impl FnOnce(&mut Command),
    ) -> Paddock {
        let mut cmd = Command::new(bin);
        f(&mut cmd);
        let child = cmd
            .args(["serve", "--config"])
            .arg(self.apps_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.0.join("state"))
            .args(extra)
            .env("PADDOCK_CGROUP_NAME", &self.cg_name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paddock serve");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), "paddock socket", || {
            self.client.request("GET", "/v1/version", None).is_ok()
        });
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("PADDOCK_SOCKET", self.socket())
            .output()
            .expect("run paddock cli")
    }

    pub fn status(&self) -> Vec<AppStatus> {
        self.client
            .json::<StatusList>("GET", "/v1/apps")
            .expect("status")
            .1
            .apps
    }

    pub fn app(&self, name: &str) -> AppStatus {
        self.status()
            .into_iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no app {name}"))
    }

    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> AppStatus {
        let mut last = None;
        let ok = try_wait(within, || {
            let Some(a) = self.status().into_iter().find(|a| a.name == name) else {
                return false;
            };
            let hit = a.state == state;
            last = Some(a);
            hit
        });
        let Some(last) = last else {
            panic!("no app {name} appeared within {within:?}")
        };
        assert!(
            ok,
            "{name} did not reach {state} within {within:?}; last status: {last:?}"
        );
        last
    }

    /// paddock's stderr from now on, collected by a thread.
    pub fn collect_stderr(&mut self) -> std::sync::Arc<std::sync::Mutex<String>> {
        use std::io::Read;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = self.child.as_mut().unwrap().stderr.take().unwrap();
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        buf
    }

    pub fn post(&self, path: &str) -> paddock::control::client::Response {
        self.client.request("POST", path, None).expect("request")
    }

    /// Shuts paddock down and returns its exit status.
    pub fn shutdown(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
        // waited for yet, so it cannot have been reused.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_child(&mut child, Duration::from_secs(30))
    }
}

impl Drop for Paddock {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has
            // not waited for yet, so it cannot have been reused.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = wait_child(&mut c, Duration::from_secs(15));
        }
    }
}

pub fn wait_child(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > within {
            let _ = child.kill();
            panic!("process {} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn try_wait(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_for(within: Duration, what: &str, f: impl FnMut() -> bool) {
    assert!(
        try_wait(within, f),
        "timed out after {within:?} waiting for {what}"
    );
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at its state too.
    // SAFETY: kill with signal 0 only checks that the pid exists; it takes no pointers.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Children of `ppid` (from /proc), with their state letter.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split(' ');
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let parent: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if parent == ppid {
            out.push((pid, state));
        }
    }
    out
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches of every thread of a process (to show that an idle paddock sleeps).
pub fn ctxt_switches(pid: i32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines().filter(|l| l.contains("ctxt_switches")) {
            total += l
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// An nginx.conf for tests: in the foreground, one worker (running as `user`, e.g.
/// "nobody nogroup", when given), its pid and temporary files under `dir`, errors on stderr,
/// and one server block holding `server`.
pub fn nginx_conf(dir: &str, user: Option<&str>, server: &str) -> String {
    let user = user.map_or(String::new(), |u| format!("user {u};\n"));
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {dir}/nginx.pid;\nerror_log stderr notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
         server {{ {server} }} }}\n"
    )
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `paddock check DIR…`, its output.
pub fn check(dirs: &[&Path]) -> std::process::Output {
    Command::new(BIN)
        .arg("check")
        .args(dirs)
        .output()
        .expect("run paddock check")
}

/// Skips a test of level sandbox where it cannot run: not root, or no busybox (the bundle its
/// apps run). `why_root` says what needs root.
pub fn skip_sandbox(test: &str, why_root: &str) -> bool {
    if !is_root() {
        eprintln!("SKIPPED {test}: {why_root}");
        return true;
    }
    if !Path::new("/usr/bin/busybox").exists() {
        eprintln!("SKIPPED {test}: needs /usr/bin/busybox (apt-get install busybox)");
        return true;
    }
    false
}

/// A bundle store of this test process (`tag` names it), holding the bundles of `recipes`
/// (names in bundles/) whose program is installed, readable by an unprivileged user too.
pub fn bundle_store(tag: &str, recipes: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paddock-t-{tag}-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = recipes
        .iter()
        .filter(|(program, _)| Path::new(program).exists())
        .map(|(_, recipe)| format!("{}/bundles/{recipe}.toml", env!("CARGO_MANIFEST_DIR")))
        .collect();
    let o = Command::new(BIN)
        .args(["bundle", "build"])
        .args(&files)
        .arg("--store")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&dir)
        .status();
    dir
}

/// An example wasm module of the repository at `root`: from `$PADDOCK_WASM_EXAMPLES` (set by
/// `.ci/run` to its fresh builds; every file must be there), else `target/wasm-examples/` when
/// `examples/wasm/build.sh` put fresh builds there, else the committed `examples/wasm/NAME`.
pub fn wasm_example(root: &Path, name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PADDOCK_WASM_EXAMPLES") {
        let p = root.join(dir).join(name);
        assert!(
            p.is_file(),
            "PADDOCK_WASM_EXAMPLES is set but {} is missing",
            p.display()
        );
        return p;
    }
    let fresh = root.join("target/wasm-examples").join(name);
    if fresh.is_file() {
        return fresh;
    }
    root.join("examples/wasm").join(name)
}
