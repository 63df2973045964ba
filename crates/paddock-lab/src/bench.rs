//! `paddock bench`: one app (crates/paddock-lab/bench-app, built natively, bundled, and to wasm from the
//! same source) run at every requested isolation level under one real `paddock serve`, with
//! every figure taken from paddock's own event timestamps (`mono_ns` of `GET /v1/events`) and
//! from the kernel's memory accounting (PSS), never from the CLI's side:
//!
//! - cold start: `STOPPED → STARTING` to `→ READY` of one app, started and stopped again and
//!   again, the levels interleaved (one start of each level in turn);
//! - restart: an app that exits at once, `policy = "always"`, zero backoff: from the event that
//!   leaves `READY` (paddock saw the exit) to the next `READY`;
//! - memory per instance: N instances at once; host memory added = the PSS of their processes
//!   plus the growth of paddock's own PSS (all of it, for wasm, whose instances live in
//!   paddock), divided by N;
//! - density: instances added in growing batches until the memory added passes the budget (or a
//!   cap): the largest count measured within the budget;
//! - escapes blocked: the escape matrix of escape.rs (needs root), with the probe's evidence
//!   line per attempt;
//! - supervisor overhead: paddock's PSS growth and CPU time over 2 s of idle, per app.

use crate::escape;
use paddock::control::client::Client;
use paddock::daemon::StateEvent;
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const LEVELS: &[&str] = &["none", "bundle", "sandbox", "wasm"];

pub struct Options {
    pub paddock: PathBuf,
    /// The native build of the bench app.
    pub native: PathBuf,
    /// Its wasm build.
    pub wasm: PathBuf,
    /// `paddock-probe`, for the escape matrix.
    pub probe: PathBuf,
    /// `probe.wasm`, the escape matrix's wasm column (None: skipped).
    pub wasm_probe: Option<PathBuf>,
    pub levels: Vec<String>,
    /// Concurrent instances for the memory figure.
    pub instances: usize,
    /// Cold starts per level.
    pub starts: usize,
    /// Restarts per level.
    pub restarts: usize,
    /// Memory budget for the density figure, bytes.
    pub budget: u64,
    /// Density caps: processes (none, bundle, sandbox) and wasm instances.
    pub max_processes: usize,
    pub max_wasm: usize,
    pub escapes: bool,
    /// Progress on stderr: a bar when `tty`, else a line per phase.
    pub progress: bool,
    pub tty: bool,
    /// Seconds of idle over which paddock's own CPU time is measured.
    pub idle_secs: f64,
    /// Also run the peers (bench_peers.rs).
    pub peers: bool,
    /// `--quick`: fewer samples, no escape matrix (said in the report).
    pub quick: bool,
    pub work: PathBuf,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub samples: usize,
    pub median_us: f64,
    pub p99_us: f64,
}

impl Stats {
    pub(crate) fn of(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Stats {
            samples: v.len(),
            median_us: at(0.5),
            p99_us: at(0.99),
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Density {
    /// Largest number of instances measured running within the budget.
    pub instances: usize,
    /// Host memory they added, bytes.
    pub bytes: u64,
    /// Why the ramp stopped: "budget" (the next batch went past it), "cap", or the host limit
    /// that refused the next batch (`vm.max_map_count`, `descriptors`, `pids`, `memory`, or the
    /// refusal itself): the ramp ends there, the rest of the bench goes on.
    pub stopped_by: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LevelResult {
    pub level: String,
    /// Why the level did not run (paddock refused it), if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub cold_start: Option<Stats>,
    pub restart: Option<Stats>,
    /// Instances measured for `memory_per_instance`.
    pub instances: usize,
    pub memory_per_instance: Option<u64>,
    pub density: Option<Density>,
    /// "13/14 blocked", or why the matrix did not run at this level.
    pub escapes: Option<String>,
    /// paddock's own PSS growth per supervised app (native levels; for wasm it is the instance).
    pub supervisor_bytes_per_app: Option<u64>,
    /// paddock's CPU time per second of idle, per supervised app, in microseconds.
    pub supervisor_cpu_us_per_app_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub cgroup: String,
    pub landlock: String,
    pub root: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub host: Host,
    pub budget: u64,
    pub levels: Vec<LevelResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escape_matrix: Vec<escape::LevelReport>,
    /// `--peers`: the same app under other runners, measured in the same run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<crate::bench_peers::PeerResult>,
    /// `--quick` (fewer samples, no escape matrix).
    pub quick: bool,
}

pub fn host() -> Host {
    let d = paddock::doctor::probe();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|k| paddock::config::units::format_size(k * 1024))
        .unwrap_or_default();
    let c = &d.cgroup;
    Host {
        date: paddock::util::rfc3339_string(std::time::SystemTime::now()),
        kernel: d.kernel.clone(),
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory: mem,
        cgroup: match c.layout.as_str() {
            "hybrid" => format!(
                "hybrid (v1 controllers, cgroup2 at {})",
                c.v2_mount.as_deref().unwrap_or("?")
            ),
            l => l.to_string(),
        },
        landlock: match (&d.landlock_abi, &d.landlock_error) {
            (Some(v), _) => format!("ABI {v}"),
            (None, e) => format!("none ({})", e.as_deref().unwrap_or("?")),
        },
        root: d.root,
    }
}

fn pss_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time of every thread of a process, in nanoseconds.
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Progress {
    on: bool,
    tty: bool,
    total: usize,
    done: usize,
    /// The phase last printed (a line per phase when stderr is not a terminal).
    phase: String,
    t0: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done = (self.done + 1).min(self.total);
        if self.on && !self.tty {
            if what != self.phase {
                eprintln!(
                    "paddock bench: {what} ({}/{} steps, {:.1} s)",
                    self.done,
                    self.total,
                    self.t0.elapsed().as_secs_f64()
                );
                self.phase = what.to_string();
            }
            return;
        }
        if self.on {
            let w = 30;
            let fill = self.done * w / self.total.max(1);
            eprint!(
                "\r[{}{}] {:>3}% {:<50}",
                "#".repeat(fill),
                " ".repeat(w - fill),
                self.done * 100 / self.total.max(1),
                what.chars().take(50).collect::<String>()
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&self) {
        if self.on && self.tty {
            eprintln!();
        } else if self.on {
            eprintln!(
                "paddock bench: done in {:.1} s",
                self.t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// The app file of the bench app at `level`.
fn app_file(level: &str, o: &Options, args: &[&str], extra: &str) -> String {
    let args_toml = args
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cmd = |prog: &str| {
        if args.is_empty() {
            format!("command = [{prog:?}]\n")
        } else {
            format!("command = [{prog:?}, {args_toml}]\n")
        }
    };
    let head = match level {
        "none" => cmd(&o.native.display().to_string()),
        "wasm" => format!(
            "isolation = \"wasm\"\nmodule = {:?}\nargs = [{args_toml}]\n",
            o.wasm.display().to_string()
        ),
        // bundle, sandbox and any level to come: the bench app's bundle.
        l => format!("isolation = {l:?}\nbundle = \"bench-app\"\n") + &cmd(&basename(&o.native)),
    };
    format!("{head}{extra}")
}

fn basename(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let t = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        Ok(t)
    } else {
        Err(t.trim().to_string())
    }
}

struct Serve {
    child: Child,
    client: Client,
    events: mpsc::Receiver<StateEvent>,
    apps: PathBuf,
}

impl Serve {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn post(&self, path: &str) -> Result<(), String> {
        let r = self.client.request("POST", path, None)?;
        if r.status >= 300 {
            return Err(format!("POST {path}: HTTP {}: {}", r.status, r.body.trim()));
        }
        Ok(())
    }

    /// The next event matching `f`, within `within`.
    fn wait_event(
        &self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&StateEvent) -> bool,
    ) -> Result<StateEvent, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if f(&e) => return Ok(e),
                Ok(_) => {}
                Err(_) => return Err(format!("timed out after {within:?} waiting for {what}")),
            }
        }
    }

    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Pids of running apps whose name starts with `prefix`.
    fn pids(&self, prefix: &str) -> Vec<i32> {
        self.client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .map(|(_, l)| {
                l.apps
                    .iter()
                    .filter(|a| a.name.starts_with(prefix))
                    .filter_map(|a| a.pid)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is of the child this bench started and has not
        // waited for yet, so it cannot have been reused.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(o: &Options, store: &Path) -> Result<Serve, String> {
    let apps = o.work.join("apps");
    let sock = o.work.join("paddock.sock");
    let child = Command::new(&o.paddock)
        .arg("serve")
        .arg("--config")
        .arg(&apps)
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(o.work.join("state"))
        .arg("--store")
        .arg(store)
        .arg("--wasm-slots")
        .arg((o.max_wasm.max(o.instances) + 300).to_string())
        // A cgroup name of its own: the host's paddock (or another bench) holds `paddock`'s.
        .env(
            "PADDOCK_CGROUP_NAME",
            format!("paddock-bench-{}", std::process::id()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("paddock serve: {e}"))?;
    let mut child = child;
    let client = Client::new(&sock);
    let t = Instant::now();
    while client.request("GET", "/v1/version", None).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "paddock serve exited at start ({st}); run `paddock serve --config {} --state-dir {}` to see why",
                apps.display(),
                o.work.join("state").display()
            ));
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err("paddock serve did not open its socket within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, body) = client.open("GET", "/v1/events", None)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in body.lines() {
            let Ok(line) = line else { break };
            let Ok(ev) = serde_json::from_str::<StateEvent>(&line) else {
                continue;
            };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    Ok(Serve {
        child,
        client,
        events: rx,
        apps,
    })
}

fn us(a: &StateEvent, b: &StateEvent) -> f64 {
    b.mono_ns.saturating_sub(a.mono_ns) as f64 / 1000.0
}

const T: Duration = Duration::from_secs(60);

fn cold_start(s: &Serve, level: &str) -> Result<f64, String> {
    let app = format!("cold-{level}");
    s.drain();
    s.post(&format!("/v1/apps/{app}/start?wait=false"))?;
    let a = s.wait_event(T, &format!("{app} starting"), |e| {
        e.app == app && e.to == "STARTING"
    })?;
    let b = s.wait_event(T, &format!("{app} ready"), |e| {
        e.app == app && (e.to == "READY" || e.to == "BACKOFF" || e.to == "FATAL")
    })?;
    if b.to != "READY" {
        return Err(format!("{app} did not start: {}", b.reason));
    }
    s.post(&format!("/v1/apps/{app}/stop?wait=true"))?;
    Ok(us(&a, &b))
}

fn restarts(s: &Serve, level: &str, n: usize) -> Result<Vec<f64>, String> {
    let app = format!("restart-{level}");
    s.drain();
    s.post(&format!("/v1/apps/{app}/start?wait=false"))?;
    let mut out = vec![];
    let mut left: Option<StateEvent> = None;
    while out.len() < n {
        let e = s.wait_event(T, &format!("{app} restarting"), |e| e.app == app)?;
        if e.to == "FATAL" {
            return Err(format!("{app} went FATAL: {}", e.reason));
        }
        if e.from == "READY" {
            left = Some(e);
        } else if e.to == "READY"
            && let Some(l) = left.take()
        {
            out.push(us(&l, &e));
        }
    }
    s.post(&format!("/v1/apps/{app}/stop?wait=true"))?;
    Ok(out)
}

/// Adds instances `from..to` of `level` (app files + update) and waits until all are READY.
fn add_instances(
    s: &Serve,
    o: &Options,
    level: &str,
    from: usize,
    to: usize,
) -> Result<(), String> {
    s.drain();
    for i in from..to {
        std::fs::write(
            s.apps.join(format!("d-{level}-{i}.toml")),
            app_file(level, o, &[], "stop_timeout = \"2s\"\n"),
        )
        .map_err(|e| e.to_string())?;
    }
    let r = s.client.request("POST", "/v1/update", None)?;
    if r.status >= 300 || r.body.contains("\"ok\":false") {
        return Err(format!("update: {}", r.body.trim()));
    }
    // Count READY apps from the status (the event stream may drop events for a slow reader
    // when thousands of apps change at once).
    let prefix = format!("d-{level}-");
    let t = Instant::now();
    loop {
        let (ready, failed) = s
            .client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .map(|(_, l)| {
                let mine = l.apps.iter().filter(|a| a.name.starts_with(&prefix));
                let ready = mine.clone().filter(|a| a.state == "READY").count();
                let failed = mine
                    .filter(|a| matches!(a.state.as_str(), "BACKOFF" | "FATAL"))
                    .map(|a| format!("{}: {}", a.name, a.message))
                    .next();
                (ready, failed)
            })
            .unwrap_or((0, None));
        if let Some(f) = failed {
            let name = f.split(':').next().unwrap_or_default();
            let log = ["out", "err"]
                .iter()
                .filter_map(|x| {
                    std::fs::read_to_string(o.work.join(format!("state/logs/{name}.{x}"))).ok()
                })
                .flat_map(|t| {
                    let v: Vec<String> = t.lines().map(str::to_string).collect();
                    v[v.len().saturating_sub(3)..].to_vec()
                })
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(format!(
                "an instance did not start: {f}{}",
                if log.is_empty() {
                    String::new()
                } else {
                    format!("; its log: {log}")
                }
            ));
        }
        if ready >= to {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "only {ready} of {to} instances of {level} READY after 300 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn remove_instances(s: &Serve, level: &str, n: usize) -> Result<(), String> {
    for i in 0..n {
        let _ = std::fs::remove_file(s.apps.join(format!("d-{level}-{i}.toml")));
    }
    s.client.request("POST", "/v1/update", None)?;
    let prefix = format!("d-{level}-");
    let t = Instant::now();
    loop {
        let left = s
            .client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .map(|(_, l)| {
                l.apps
                    .iter()
                    .filter(|a| a.name.starts_with(&prefix))
                    .count()
            })
            .unwrap_or(1);
        if left == 0 {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{left} instances of {level} still there after 120 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host memory added by the running instances of `level`: their processes' PSS plus paddock's
/// growth since `base`.
fn added(s: &Serve, level: &str, base: u64) -> (u64, u64) {
    let procs: u64 = s
        .pids(&format!("d-{level}-"))
        .into_iter()
        .map(pss_bytes)
        .sum();
    let growth = pss_bytes(s.pid()).saturating_sub(base);
    (procs + growth, growth)
}

/// The host limit an error of a refused batch names, in a few words.
fn host_limit(e: &str) -> String {
    if e.contains("max_map_count") {
        "vm.max_map_count".into()
    } else if e.contains("descriptor") || e.contains("Too many open files") {
        "descriptors".into()
    } else if e.contains("pids") || e.contains("Resource temporarily unavailable") {
        "pids".into()
    } else if e.contains("memory") || e.contains("Cannot allocate") {
        "memory".into()
    } else {
        let mut short: String = e.chars().take(80).collect();
        if short.len() < e.len() {
            short.push('…');
        }
        format!("stopped: {short}")
    }
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Memory, density and idle overhead of one level.
fn memory_and_density(s: &Serve, o: &Options, r: &mut LevelResult) -> Result<(), String> {
    let level = r.level.clone();
    settle();
    let base = pss_bytes(s.pid());
    let n = o.instances.max(1);
    add_instances(s, o, &level, 0, n)?;
    settle();
    let (bytes, growth) = added(s, &level, base);
    r.instances = n;
    r.memory_per_instance = Some(bytes / n as u64);
    r.supervisor_bytes_per_app = Some(growth / n as u64);
    // Idle: paddock's CPU over 2 s with n apps up.
    let c0 = cpu_ns(s.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.idle_secs));
    let cpu = (cpu_ns(s.pid()) - c0) as f64 / 1000.0 / t0.elapsed().as_secs_f64();
    r.supervisor_cpu_us_per_app_per_s = Some(cpu / n as f64);
    // Density: grow by half each step until the budget is passed or the cap is reached.
    let cap = if level == "wasm" {
        o.max_wasm
    } else {
        o.max_processes
    };
    let mut d = Density {
        instances: 0,
        bytes: 0,
        stopped_by: "cap".into(),
    };
    let mut count = n;
    if bytes <= o.budget {
        d.instances = n;
        d.bytes = bytes;
    } else {
        d.stopped_by = "budget".into();
    }
    while bytes <= o.budget && count < cap {
        let next = (count + count / 2).max(count + 1).min(cap);
        let grown = add_instances(s, o, &level, count, next);
        count = next;
        if let Err(e) = grown {
            // A host limit ended the ramp: the figure is what ran before it, with the reason.
            d.stopped_by = host_limit(&e);
            break;
        }
        settle();
        let (b, _) = added(s, &level, base);
        if b > o.budget {
            d.stopped_by = "budget".into();
            break;
        }
        d.instances = count;
        d.bytes = b;
    }
    r.density = Some(d);
    remove_instances(s, &level, count)
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

pub(crate) fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

pub fn run_bench(o: &Options) -> Result<Report, String> {
    let _ = std::fs::remove_dir_all(&o.work);
    std::fs::create_dir_all(o.work.join("apps")).map_err(|e| e.to_string())?;
    let store = o.work.join("store");
    let recipe = o.work.join("bench-app.toml");
    std::fs::write(
        &recipe,
        format!("entry = {:?}\n", o.native.display().to_string()),
    )
    .map_err(|e| e.to_string())?;
    let bundle_err = run(Command::new(&o.paddock)
        .args(["bundle", "build"])
        .arg(&recipe)
        .arg("--store")
        .arg(&store))
    .err();
    // Which levels this paddock gives: `paddock check` on each level's app file.
    let mut results: Vec<LevelResult> = vec![];
    let check_dir = o.work.join("check");
    for level in &o.levels {
        let mut r = LevelResult {
            level: level.clone(),
            ..Default::default()
        };
        let _ = std::fs::remove_dir_all(&check_dir);
        let _ = std::fs::create_dir_all(&check_dir);
        let _ = std::fs::write(check_dir.join("x.toml"), app_file(level, o, &[], ""));
        if let Err(e) = run(Command::new(&o.paddock)
            .arg("check")
            .arg(&check_dir)
            .arg("--store")
            .arg(&store))
        {
            let why = e
                .lines()
                .find(|l| l.contains("key `isolation`"))
                .or_else(|| e.lines().next())
                .unwrap_or("")
                .to_string();
            let why = match &bundle_err {
                Some(b) if level != "none" && level != "wasm" => {
                    format!("building the bench app's bundle failed: {b}")
                }
                _ => why
                    .split("key `isolation`: ")
                    .last()
                    .unwrap_or(&why)
                    .to_string(),
            };
            r.skipped = Some(why);
        }
        results.push(r);
    }
    let live: Vec<String> = results
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| r.level.clone())
        .collect();
    for l in &live {
        let apps = o.work.join("apps");
        let w = |name: String, text: String| std::fs::write(apps.join(name), text);
        w(
            format!("cold-{l}.toml"),
            app_file(l, o, &[], "autostart = false\nstop_timeout = \"2s\"\n"),
        )
        .map_err(|e| e.to_string())?;
        w(
            format!("restart-{l}.toml"),
            app_file(
                l,
                o,
                &["--exit"],
                "autostart = false\n[restart]\npolicy = \"always\"\nbackoff_initial = \"0s\"\nbackoff_max = \"0s\"\nmax_failures = 0\n",
            ),
        )
        .map_err(|e| e.to_string())?;
    }
    let mut p = Progress {
        on: o.progress,
        tty: o.tty,
        total: live.len() * (o.starts + 2) + usize::from(o.escapes) + if o.peers { 5 } else { 0 },
        done: 0,
        phase: String::new(),
        t0: Instant::now(),
    };
    p.step("starting paddock serve");
    let s = serve(o, &store)?;
    let res = (|| -> Result<(), String> {
        // Cold starts, interleaved: one start of each level in turn.
        let mut cold: Vec<Vec<f64>> = vec![vec![]; live.len()];
        for _ in 0..o.starts {
            for (i, l) in live.iter().enumerate() {
                cold[i].push(cold_start(&s, l)?);
            }
            p.step("cold starts");
        }
        for (i, l) in live.iter().enumerate() {
            let r = results.iter_mut().find(|r| &r.level == l).unwrap();
            r.cold_start = Stats::of(std::mem::take(&mut cold[i]));
            r.restart = Stats::of(restarts(&s, l, o.restarts)?);
            p.step(&format!("restarts {l}"));
        }
        for l in &live {
            let r = results.iter_mut().find(|r| &r.level == l).unwrap();
            memory_and_density(&s, o, r)?;
            p.step(&format!("memory and density {l}"));
        }
        Ok(())
    })();
    s.stop();
    res?;
    let mut matrix = vec![];
    if o.escapes {
        let lv: Vec<String> = o.levels.clone();
        if !paddock::util::is_root() {
            for r in &mut results {
                r.escapes = Some("not run: needs root".into());
            }
        } else {
            let runs = escape::run_matrix(&escape::MatrixOptions {
                paddock: o.paddock.clone(),
                probe: o.probe.clone(),
                wasm_probe: o.wasm_probe.clone(),
                levels: lv,
                work: o.work.join("escape"),
                verbose: false,
            })?;
            for run in runs {
                if let Some(r) = results.iter_mut().find(|r| r.level == run.report.level) {
                    r.escapes = Some(run.report.summary());
                }
                matrix.push(run.report);
            }
        }
        p.step("escape matrix");
    }
    let mut peers = vec![];
    if o.peers {
        let bundle = std::fs::read_to_string(store.join("refs/bench-app"))
            .ok()
            .map(|id| store.join(id.trim()))
            .filter(|b| bundle_err.is_none() && b.join("root").is_dir());
        peers = crate::bench_peers::run(
            &crate::bench_peers::Options {
                native: o.native.clone(),
                wasm: o.wasm.clone(),
                bundle,
                work: o.work.clone(),
                runs: o.starts,
                instances: o.instances.clamp(1, 50),
            },
            |what| p.step(what),
        );
    }
    p.finish();
    let _ = std::fs::remove_dir_all(&o.work);
    Ok(Report {
        host: host(),
        budget: o.budget,
        levels: results,
        escape_matrix: matrix,
        peers,
        quick: o.quick,
    })
}

/// The report as an aligned table, with the host first.
pub fn table(r: &Report) -> String {
    let h = &r.host;
    let mut s = format!(
        "host: {}; {} ({} cores), {}; cgroup {}; Landlock {}; {}; {}\n\n",
        h.kernel,
        h.cpu,
        h.cores,
        h.memory,
        h.cgroup,
        h.landlock,
        if h.root { "root" } else { "not root" },
        h.date
    );
    let head = [
        "level",
        "cold start med/p99",
        "restart med/p99",
        "mem/instance",
        &format!("density in {}", fmt_bytes(r.budget)),
        "escapes",
        "paddock mem/app",
        "paddock cpu/app idle",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|x| x.to_string()).collect()];
    for l in &r.levels {
        if let Some(why) = &l.skipped {
            rows.push(vec![l.level.clone(), format!("skipped: {why}")]);
            continue;
        }
        let st = |x: &Option<Stats>| {
            x.as_ref().map_or("-".into(), |x| {
                format!("{} / {}", fmt_us(x.median_us), fmt_us(x.p99_us))
            })
        };
        rows.push(vec![
            l.level.clone(),
            st(&l.cold_start),
            st(&l.restart),
            l.memory_per_instance.map_or("-".into(), fmt_bytes),
            l.density.as_ref().map_or("-".into(), |d| {
                format!(
                    "{}{} ({})",
                    if d.stopped_by == "budget" { "" } else { "≥ " },
                    d.instances,
                    if d.stopped_by == "budget" || d.stopped_by == "cap" {
                        fmt_bytes(d.bytes)
                    } else {
                        format!("{}, {}", fmt_bytes(d.bytes), d.stopped_by)
                    }
                )
            }),
            // A skipped column's reason is printed in full under the matrix.
            l.escapes.as_deref().map_or("-".into(), |e| {
                if e.starts_with("skipped") {
                    "skipped (below)".into()
                } else {
                    e.to_string()
                }
            }),
            if l.level == "wasm" {
                // The instance lives in paddock: its growth is the instance itself.
                "= mem/instance".into()
            } else {
                l.supervisor_bytes_per_app.map_or("-".into(), fmt_bytes)
            },
            l.supervisor_cpu_us_per_app_per_s.map_or("-".into(), |c| {
                if c >= 0.1 {
                    format!("{c:.2} µs/s")
                } else {
                    format!("{:.1} ns/s", c * 1000.0)
                }
            }),
        ]);
    }
    let cols = head.len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() == cols)
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if row.len() == cols {
                    format!("{v}{}", " ".repeat(width[c] - v.chars().count()))
                } else {
                    v.clone()
                }
            })
            .collect();
        s += line.join("  ").trim_end();
        s.push('\n');
    }
    s += &format!(
        "\ncold start: STOPPED→STARTING to READY; restart: exit seen to READY again (zero backoff); \
         mem/instance: PSS of the app processes + paddock's PSS growth, over {} instances; \
         density: the most instances measured within the budget (≥ when a cap or the named host limit stopped the ramp)\n",
        r.levels.iter().map(|l| l.instances).max().unwrap_or(0)
    );
    s += &crate::bench_peers::notes(r);
    s += &crate::bench_peers::table(r);
    if !r.escape_matrix.is_empty() {
        s += "\nescape matrix (· : the column does not make that attempt):\n";
        s += &escape::matrix(&r.escape_matrix);
        s += "\nthe probe's evidence per attempt (every line at sandbox and wasm; at none and bundle what they blocked):\n";
        s += &escape::evidence(&r.escape_matrix);
    }
    s
}

/// A bar chart per figure (cold start, restart, memory per instance, density), one bar per
/// level, as a standalone SVG.
pub fn svg(r: &Report) -> String {
    let live: Vec<&LevelResult> = r.levels.iter().filter(|l| l.skipped.is_none()).collect();
    type Get = fn(&LevelResult) -> Option<f64>;
    type Fmt = fn(f64) -> String;
    let panels: [(&str, Get, Fmt); 4] = [
        (
            "cold start, median",
            |l| l.cold_start.as_ref().map(|s| s.median_us),
            fmt_us,
        ),
        (
            "restart, median",
            |l| l.restart.as_ref().map(|s| s.median_us),
            fmt_us,
        ),
        (
            "memory per instance",
            |l| l.memory_per_instance.map(|b| b as f64),
            |v| fmt_bytes(v as u64),
        ),
        (
            "instances in the budget",
            |l| l.density.as_ref().map(|d| d.instances as f64),
            |v| format!("{v:.0}"),
        ),
    ];
    let (pw, ph, bar_h) = (420.0, 40.0 + live.len() as f64 * 28.0, 20.0);
    let width = pw * 2.0 + 30.0;
    let height = ph * 2.0 + 70.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">paddock bench — {} — {}</text>\n",
        xml(&r.host.kernel),
        xml(&r.host.date)
    );
    let colors = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#76b7b2"];
    for (k, (title, get, fmt)) in panels.iter().enumerate() {
        let (x0, y0) = (
            10.0 + (k % 2) as f64 * (pw + 10.0),
            40.0 + (k / 2) as f64 * (ph + 10.0),
        );
        out += &format!(
            "<text x=\"{x0}\" y=\"{}\" font-weight=\"bold\">{}</text>\n",
            y0 + 14.0,
            xml(title)
        );
        let max = live.iter().filter_map(|l| get(l)).fold(0.0f64, f64::max);
        for (i, l) in live.iter().enumerate() {
            let y = y0 + 26.0 + i as f64 * 28.0;
            out += &format!(
                "<text x=\"{x0}\" y=\"{}\">{}</text>\n",
                y + 14.0,
                xml(&l.level)
            );
            if let Some(v) = get(l) {
                let w = if max > 0.0 {
                    v / max * (pw - 170.0)
                } else {
                    0.0
                };
                out += &format!(
                    "<rect x=\"{}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\"/>\n\
                     <text x=\"{}\" y=\"{}\">{}</text>\n",
                    x0 + 60.0,
                    colors[i % colors.len()],
                    x0 + 64.0 + w,
                    y + 14.0,
                    xml(&fmt(v))
                );
            }
        }
    }
    out += "</svg>\n";
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_batch_names_the_host_limit() {
        assert_eq!(
            host_limit(
                "an instance did not start: d-wasm-9: wasm: no room for another instance: paddock has 65000 memory mappings and the kernel allows 65530 (vm.max_map_count)"
            ),
            "vm.max_map_count"
        );
        assert_eq!(
            host_limit("spawn failed: Too many open files"),
            "descriptors"
        );
        assert!(host_limit(&"x".repeat(200)).starts_with("stopped: xxx"));
        assert!(host_limit(&"x".repeat(200)).ends_with('…'));
    }
}
