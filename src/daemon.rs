//! `paddock serve`: the I/O loop around the pure state machines.
//!
//! One task owns all supervisor state and is woken only by messages (signals forwarded by the
//! signal thread, control requests, readiness notices, health results) and by the earliest armed
//! timer. It reaps every exit status itself (`waitpid(-1)` on SIGCHLD), so exits of apps, of
//! health-check commands, of orphans reparented to it and of failed spawns are all told apart by
//! the pid tables, which only hold live children it started.
//!
//! Ordering lives here, as events for the machines: an app's dependencies are "ready" when every
//! app in its `after`/`requires` is READY and none of them is being stopped; stops wait for the
//! apps that depend on the stopped app (all of them at shutdown and `stop all`, the `requires`
//! ones for a single stop), so apps stop in reverse dependency order.

use crate::config::health::{Probe, ReadyWhen};
use crate::config::{self, AppSpec, StdoutMode};
use crate::control::api::*;
use crate::driver::native::{self, Prepared, Stdio};
use crate::logs::{Ctl, Logs, Stream};
use crate::supervise::{
    Action, Event, Exit, Health, HealthPolicy, Machine, Policy, ReadyMode, State, TIMER_KINDS,
    TimerKind,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot};

mod adoption;
mod bundles;
mod http_apps;
mod metrics;
mod publishing;
mod update;
mod wasm_apps;

#[derive(Clone, Debug)]
pub struct Options {
    pub config_dirs: Vec<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Wasm instance pool size (`--wasm-slots`); default from the number of wasm apps.
    pub wasm_slots: Option<u32>,
    /// Host-wide settings (`/etc/paddock/paddock.toml`).
    pub global: crate::pid1::Global,
    /// `--metrics-listen`: a TCP address serving `GET /metrics` only (read-only).
    pub metrics_listen: Option<String>,
}

/// What happens to the machine once paddock has stopped everything (`paddock poweroff`,
/// `paddock reboot`; only honoured when paddock is PID 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    Poweroff,
    Reboot,
}

/// How `paddock serve` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// 0, or 1 when an essential app went FATAL.
    pub code: i32,
    /// A poweroff or reboot was asked for.
    pub halt: Option<Halt>,
    /// `paddock reexec`: the caller executes this binary in place of paddock, apps kept.
    pub reexec: Option<PathBuf>,
}

/// A reply to a control request: HTTP status, content type, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json<T: serde::Serialize>(status: u16, v: &T) -> Reply {
        let body =
            serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Reply {
            status,
            content_type: "application/json",
            body: body + "\n",
        }
    }
    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &ErrorBody { error: msg.into() })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

#[derive(Debug)]
pub enum Request {
    /// `table`: the CLI's table (`?format=table`) instead of JSON.
    Status(Vec<String>, bool),
    Action {
        names: Vec<String>,
        verb: Verb,
        wait: bool,
    },
    Signal {
        names: Vec<String>,
        signal: i32,
    },
    Reread,
    Update,
    Shutdown(Option<Halt>),
    ReopenLogs,
    Metrics,
    Version,
    /// Checks that an app exists and writes its logs to files.
    LogTarget(String),
    /// `paddock reexec`: execute the paddock binary anew, keeping every app.
    Reexec,
}

pub enum Msg {
    Signal(i32),
    Request(Request, oneshot::Sender<Reply>),
    /// A wasm instance ended (sent from the wasm runtime).
    WasmExited {
        app: usize,
        generation: u64,
        exit: Exit,
    },
    /// A datagram on an app's notify socket.
    Notify {
        idx: usize,
        text: String,
    },
    /// A newline on an app's readiness descriptor.
    ReadyFd {
        idx: usize,
    },
    /// A tcp/http health probe finished. `spawn` is the app's spawn count when it started.
    Probe {
        idx: usize,
        spawn: u64,
        result: Result<(), String>,
    },
    /// An exec health check ran out of time.
    CheckTimeout {
        pid: i32,
    },
    /// The pidfd of an adopted process (not necessarily our child) says it has ended.
    PidGone {
        pid: i32,
    },
}

/// A state change, as streamed by `GET /v1/events`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StateEvent {
    pub time: String,
    /// CLOCK_MONOTONIC in nanoseconds when paddock made the change: for precise intervals
    /// between events (`paddock bench`); `time` has milliseconds only.
    #[serde(default)]
    pub mono_ns: u64,
    pub app: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

struct Pipes {
    out_w: OwnedFd,
    err_w: Option<OwnedFd>,
}

struct App {
    name: Arc<str>,
    spec: Arc<AppSpec>,
    prepared: Result<Arc<Prepared>, String>,
    /// The exec health check, prepared like the app (same user, environment, directory).
    check: Option<Result<Arc<Prepared>, String>>,
    /// A new spec from `update`, applied at the next spawn (or at once when the app is down).
    pending: Option<Box<AppSpec>>,
    m: Machine,
    pid: Option<i32>,
    pgid: Option<i32>,
    pipes: Option<Pipes>,
    /// sd_notify socket (the reader task is aborted on drop).
    notify: Option<NotifyChannel>,
    /// s6-style readiness pipe: paddock keeps the write end to hand to each child.
    ready_w: Option<OwnedFd>,
    remove_when_down: bool,
    wasm: wasm_apps::WasmApp,
    /// Bundle switch on `update` (see `bundles.rs`): the instance starting with the new bundle,
    /// the instance it replaces, and why the last switch failed.
    successor: Option<usize>,
    predecessor: Option<usize>,
    switch_note: Option<String>,
    /// STATUS= from sd_notify.
    status_text: String,
    /// What the last health check said.
    health_detail: String,
    /// Why the current stop happens (for events and status).
    stop_why: String,
    /// The app's cgroup (native apps, when the host gives paddock cgroups): created at the
    /// first start, kept across restarts, removed with the app.
    cgroup: Option<crate::cgroup::AppCgroup>,
    /// What its record in the state directory says (pid, ready), so it is rewritten only on a
    /// change (see `adoption.rs`).
    recorded: Option<(i32, bool)>,
}

/// How to start an app (or its exec health check), or why it cannot be started.
type Launch = Result<Arc<Prepared>, String>;

struct NotifyChannel {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NotifyChannel {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn policy_of(spec: &AppSpec) -> Policy {
    let mut p = Policy::simple(spec.restart.clone(), spec.stop_signal, spec.stop_timeout);
    p.ready = match spec.readiness.when {
        ReadyWhen::Running => ReadyMode::Immediate,
        ReadyWhen::Notify | ReadyWhen::Fd { .. } => ReadyMode::Signal,
        ReadyWhen::Health => ReadyMode::Health,
    };
    p.ready_timeout = spec.readiness.timeout;
    p.watchdog = spec.readiness.watchdog;
    p.health = spec.health.as_ref().map(|h| HealthPolicy {
        interval: h.interval,
        start_period: h.start_period,
        failures: h.failures,
        successes: h.successes,
    });
    p.stop_with_deps = !spec.requires.is_empty();
    p
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    Up,
    Down,
}

struct WaitItem {
    idx: usize,
    name: String,
    goal: Goal,
    min_spawns: u64,
    result: Option<ActionResult>,
}

struct Waiter {
    items: Vec<WaitItem>,
    reply: oneshot::Sender<Reply>,
}

/// Which dependants a queued stop waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StopScope {
    /// Apps that `require` it (a single `stop`).
    Requirers,
    /// Every app that depends on it (`stop all`, shutdown).
    AllDependants,
}

pub struct Supervisor {
    opts: Options,
    apps: Vec<Option<App>>,
    by_name: BTreeMap<String, usize>,
    pids: HashMap<i32, usize>,
    /// Running exec health checks: pid → (app, spawn generation).
    checks: HashMap<i32, (usize, u64)>,
    timers: BTreeSet<(Instant, usize, TimerKind)>,
    timer_of: HashMap<(usize, TimerKind), Instant>,
    origin: Instant,
    /// When this paddock started.
    started: Instant,
    logs: Logs,
    devnull: OwnedFd,
    waiters: Vec<Waiter>,
    /// Stops waiting for dependants to go down first.
    stop_queue: BTreeMap<usize, StopScope>,
    /// `run_stop_queue` is on the stack: a nested call (from the `feed` of a stop) returns at once
    /// and the outer loop picks up what changed; otherwise the stops of N apps nest N deep and
    /// a shutdown of a few thousand apps overflows the stack.
    stop_queue_running: bool,
    shutting_down: bool,
    done: bool,
    exit_code: i32,
    seed: u64,
    base_env: native::BaseEnv,
    wasm: wasm_apps::WasmState,
    bundle_cache: crate::bundle::verify::Cache,
    tx: mpsc::UnboundedSender<Msg>,
    events: broadcast::Sender<String>,
    halt: Option<Halt>,
    parent: crate::pid1::ParentNotify,
    ready_sent: bool,
    /// paddock's cgroups (see `crate::cgroup`); set up by `serve`.
    pub cgroups: crate::cgroup::Cgroups,
    /// Directory names of the app cgroups in use (two instances of an app during a bundle
    /// switch, or a removed app still stopping next to its re-added namesake, need two).
    cg_names: std::collections::HashSet<String>,
    /// `[sandbox] publish`: host listeners forwarded into apps' network namespaces.
    publisher: crate::publish::Publisher,
    /// The descriptor holder (log pipes' read ends, the control listener), when it runs.
    pub fdstore: Option<crate::fdstore::Client>,
    /// STATE_DIR/run: a record of each running app process (see `adoption.rs`).
    run_dir: PathBuf,
    boot_id: String,
    /// paddock's own binary as it was started (what `reexec` executes; after a package upgrade
    /// it is the new version).
    exe: Option<PathBuf>,
    /// Set by `reexec`: the run ends without stopping anything.
    reexec: Option<PathBuf>,
    /// The slots of apps with `after`/`requires`, for `refresh_deps` (None: to be listed again
    /// after an app was added, changed or removed). Walking all apps on every READY made a
    /// start of 1000 apps quadratic.
    with_deps: Option<Vec<usize>>,
    /// `reap` stopped at its batch: let the control socket and the other tasks run first.
    yield_soon: bool,
}

/// Exits handled per turn of the loop (and at most `REAP_TIME` of handling them). A
/// crash-looping app is restarted while its exit is handled, so with 50 of them a reap that ran
/// until no child was left never ended: the control socket, and SIGTERM, starved. The rest of
/// the exits are handled after a yield, behind the requests that came meanwhile.
const REAP_BATCH: usize = 8;
const REAP_TIME: Duration = Duration::from_millis(2);

/// A SIGCHLD message is queued: the signal thread sends no other (50 crash-looping apps made
/// hundreds a second, and a request queued behind them waited for ever).
static CHLD_QUEUED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Queues one SIGCHLD message unless one is queued already.
fn queue_sigchld(tx: &mpsc::UnboundedSender<Msg>) -> bool {
    if CHLD_QUEUED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return true;
    }
    tx.send(Msg::Signal(libc::SIGCHLD)).is_ok()
}

impl Supervisor {
    pub fn new(
        opts: Options,
        specs: BTreeMap<String, AppSpec>,
        logs: Logs,
        tx: mpsc::UnboundedSender<Msg>,
        events: broadcast::Sender<String>,
        parent: crate::pid1::ParentNotify,
    ) -> std::io::Result<Supervisor> {
        let (state_dir, wasm_slots) = (opts.state_dir.clone(), opts.wasm_slots);
        crate::sandbox::set_scratch_dir(&state_dir.join("sandbox-root"));
        let mut s = Supervisor {
            opts,
            apps: vec![],
            by_name: BTreeMap::new(),
            pids: HashMap::new(),
            checks: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            // Far enough in the past that an adopted process's start (see adoption.rs) is after
            // it: uptimes of adopted apps count from their real start.
            origin: Instant::now()
                .checked_sub(Duration::from_secs(10 * 366 * 86400))
                .unwrap_or_else(Instant::now),
            started: Instant::now(),
            logs,
            devnull: native::dev_null()?,
            waiters: vec![],
            stop_queue: BTreeMap::new(),
            stop_queue_running: false,
            shutting_down: false,
            done: false,
            exit_code: 0,
            seed: std::process::id() as u64 ^ 0x5DEE_CE66_D1CE_F00D,
            base_env: native::BaseEnv::from_process(),
            wasm: wasm_apps::WasmState::new(&state_dir, wasm_slots, tx.clone()),
            bundle_cache: Default::default(),
            tx,
            events,
            halt: None,
            parent,
            ready_sent: false,
            cgroups: crate::cgroup::Cgroups::disabled("not set up"),
            cg_names: Default::default(),
            publisher: Default::default(),
            fdstore: None,
            run_dir: crate::adopt::run_dir(&state_dir),
            boot_id: crate::adopt::boot_id(),
            exe: std::env::current_exe().ok(),
            reexec: None,
            with_deps: None,
            yield_soon: false,
        };
        for (_, spec) in specs {
            s.add_app(spec);
        }
        Ok(s)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn notify_path(&self, name: &str, idx: usize) -> PathBuf {
        // A second instance of an app (during a bundle switch) gets a socket of its own.
        let file = match self.by_name.get(name) {
            Some(&i) if i != idx => format!("{name}.{idx}.sock"),
            _ => format!("{name}.sock"),
        };
        self.opts.state_dir.join("notify").join(file)
    }

    /// The launch recipe of an app, with NOTIFY_SOCKET added when it signals readiness that way.
    fn prepare(&self, spec: &AppSpec, idx: usize) -> (Launch, Option<Launch>) {
        let mut s = spec.clone();
        if s.readiness.when == ReadyWhen::Notify {
            s.env.insert(
                "NOTIFY_SOCKET".into(),
                self.notify_path(&spec.name, idx)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let app = Prepared::new(&s, &self.base_env).map(Arc::new);
        let check = match spec.health.as_ref().map(|h| &h.probe) {
            Some(Probe::Exec { command }) => {
                let mut c = spec.clone();
                c.program = match config::resolve_program(
                    &command[0],
                    spec.env.get("PATH").map(String::as_str),
                    spec.workdir.as_deref(),
                ) {
                    Ok(p) => p,
                    Err(e) => return (app, Some(Err(e))),
                };
                // A sandboxed app's check is a program of its bundle, run inside its sandbox.
                if let Ok(a) = &app
                    && let Some(check) = Prepared::check_in(a, &s, command, &self.base_env)
                {
                    return (app, Some(check.map(Arc::new)));
                }
                c.command = command.clone();
                // Other levels: the check is a host program, run as the app's user.
                c.bundle = None;
                c.isolation = config::Isolation::None;
                c.sandbox = None;
                c.fallback = None;
                Some(Prepared::new(&c, &self.base_env).map(Arc::new))
            }
            _ => None,
        };
        (app, check)
    }

    fn add_app(&mut self, spec: AppSpec) -> usize {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let name: Arc<str> = spec.name.as_str().into();
        self.logs.send(Ctl::Configure {
            app: name.clone(),
            spec: spec.logs.clone(),
        });
        let (prepared, check) = self.prepare(&spec, self.apps.len());
        let app = App {
            name,
            prepared,
            check,
            m: Machine::new(policy_of(&spec), self.seed),
            spec: Arc::new(spec),
            pending: None,
            pid: None,
            pgid: None,
            pipes: None,
            notify: None,
            ready_w: None,
            remove_when_down: false,
            wasm: Default::default(),
            successor: None,
            predecessor: None,
            switch_note: None,
            status_text: String::new(),
            health_detail: String::new(),
            stop_why: String::new(),
            cgroup: None,
            recorded: None,
        };
        let idx = self.apps.len();
        self.by_name.insert(app.spec.name.clone(), idx);
        self.apps.push(Some(app));
        self.http_load(idx);
        self.with_deps = None;
        idx
    }

    fn app_idxs(&self) -> Vec<usize> {
        self.by_name.values().copied().collect()
    }

    /// Starts every autostart app (each waits for its dependencies by itself).
    pub fn autostart(&mut self) {
        self.refresh_deps();
        for idx in self.app_idxs() {
            if self.apps[idx].as_ref().is_some_and(|a| a.spec.autostart) {
                self.feed(idx, Event::Start);
            }
        }
    }

    fn apply_pending(&mut self, idx: usize) {
        let Some(spec) = self.apps[idx].as_mut().and_then(|a| a.pending.take()) else {
            return;
        };
        let spec = *spec;
        let (prepared, check) = self.prepare(&spec, idx);
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        if spec.logs.stdout != app.spec.logs.stdout
            || spec.logs.combine != app.spec.logs.combine
            || spec.isolation != app.spec.isolation
        {
            app.pipes = None; // recreated for the new mode at the next spawn
        }
        Self::wasm_reconfigured(app);
        if spec.readiness != app.spec.readiness || spec.identity != app.spec.identity {
            app.notify = None;
            app.ready_w = None;
        }
        if spec.limits != app.spec.limits
            && let Some(cg) = app.cgroup.as_mut()
            && let Err(e) = cg.apply(&spec.limits.cgroup())
        {
            eprintln!("paddock: {}: new [limits]: {e}", app.name);
        }
        app.prepared = prepared;
        app.check = check;
        app.m.policy = policy_of(&spec);
        self.logs.send(Ctl::Configure {
            app: app.name.clone(),
            spec: spec.logs.clone(),
        });
        app.spec = Arc::new(spec);
        self.with_deps = None;
    }

    /// The app's log pipes (unless `with_pipes` is false: an adopted process keeps its own),
    /// notify socket and readiness pipe, created where missing.
    fn ensure_channels(&mut self, idx: usize, with_pipes: bool) -> std::io::Result<()> {
        let notify_path = self.apps[idx]
            .as_ref()
            .map(|a| self.notify_path(&a.name, idx));
        let tx = self.tx.clone();
        let Some(app) = self.apps[idx].as_mut() else {
            return Ok(());
        };
        // A wasm app's output goes to the logs without a pipe (`wasm_apps::spawn_wasm`).
        if with_pipes
            && app.pipes.is_none()
            && app.spec.logs.stdout != StdoutMode::Inherit
            && app.spec.isolation != config::Isolation::Wasm
        {
            // The read ends also go to the descriptor holder, so that the app's output
            // outlives a crash of paddock (a newer pipe of the app replaces the older there).
            let (out_r, out_w) = native::output_pipe()?;
            if let Some(fs) = self.fdstore.as_mut() {
                use std::os::fd::AsFd;
                fs.put(&adoption::pipe_name(&app.name, Stream::Out), out_r.as_fd());
            }
            self.logs
                .spawn_reader(out_r, app.name.clone(), Stream::Out)?;
            let err_w = if app.spec.logs.combine {
                if let Some(fs) = self.fdstore.as_mut() {
                    fs.del(&adoption::pipe_name(&app.name, Stream::Err));
                }
                None
            } else {
                let (err_r, err_w) = native::output_pipe()?;
                if let Some(fs) = self.fdstore.as_mut() {
                    use std::os::fd::AsFd;
                    fs.put(&adoption::pipe_name(&app.name, Stream::Err), err_r.as_fd());
                }
                self.logs
                    .spawn_reader(err_r, app.name.clone(), Stream::Err)?;
                Some(err_w)
            };
            app.pipes = Some(Pipes { out_w, err_w });
        }
        match app.spec.readiness.when {
            ReadyWhen::Notify if app.notify.is_none() => {
                let path = notify_path.unwrap_or_default();
                // The socket belongs to the uid the app runs as on the host.
                let owner = app
                    .prepared
                    .as_ref()
                    .ok()
                    .and_then(|p| p.sandbox_host_uid())
                    .or(app.spec.identity.as_ref().map(|i| i.uid));
                let sock = crate::health::notify_socket(&path, owner)?;
                let task = tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = sock.recv(&mut buf).await {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if tx.send(Msg::Notify { idx, text }).is_err() {
                            return;
                        }
                    }
                });
                app.notify = Some(NotifyChannel { path, task });
            }
            ReadyWhen::Fd { .. } if app.ready_w.is_none() => {
                let (r, w) = native::output_pipe()?;
                // SAFETY: the AsyncFd owns the descriptor for its whole life.
                let afd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        r,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(std::io::Error::from)?;
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    loop {
                        let Ok(mut guard) = afd.readable().await else {
                            return;
                        };
                        match guard.try_io(|fd| {
                            nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
                        }) {
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(n)) => {
                                if buf[..n].contains(&b'\n')
                                    && tx.send(Msg::ReadyFd { idx }).is_err()
                                {
                                    return;
                                }
                            }
                            Err(_would_block) => {}
                        }
                    }
                });
                app.ready_w = Some(w);
            }
            _ => {}
        }
        Ok(())
    }

    fn do_spawn(&mut self, idx: usize) -> Result<i32, String> {
        self.apply_pending(idx);
        self.ensure_channels(idx, true).map_err(|e| {
            format!(
                "setting up pipes and sockets: {}",
                crate::util::io_reason(&e)
            )
        })?;
        if self.apps[idx]
            .as_ref()
            .is_some_and(|a| a.spec.isolation == config::Isolation::Wasm)
        {
            return self.spawn_wasm(idx);
        }
        let devnull = self.devnull.as_raw_fd();
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let prepared = app.prepared.clone()?;
        self.publish_before_spawn(idx)?;
        let join = self.ensure_cgroup(idx)?;
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let mut io = match &app.pipes {
            Some(p) => {
                let out = p.out_w.as_raw_fd();
                Stdio {
                    stdin: Some(devnull),
                    stdout: Some(out),
                    stderr: Some(p.err_w.as_ref().map_or(out, |e| e.as_raw_fd())),
                    extra: None,
                }
            }
            None => Stdio {
                stdin: Some(devnull),
                stdout: None,
                stderr: None,
                extra: None,
            },
        };
        if let (ReadyWhen::Fd { fd }, Some(w)) = (&app.spec.readiness.when, &app.ready_w) {
            io.extra = Some((w.as_raw_fd(), *fd));
        }
        let join: Vec<std::os::fd::RawFd> = join.iter().map(|f| f.as_raw_fd()).collect();
        let pid = native::spawn_joined(&prepared, &io, &join).map_err(|e| {
            match (&e.step, &app.cgroup) {
                (Some(native::Failed::Spawn(native::Step::JoinCgroup)), Some(cg)) => format!(
                    "{e} ({}; paddock must be able to write each cgroup.procs)",
                    cg.paths()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => e.to_string(),
            }
        })?;
        app.pid = Some(pid);
        app.pgid = Some(pid);
        app.status_text.clear();
        app.health_detail.clear();
        self.pids.insert(pid, idx);
        Ok(pid)
    }

    /// The app's cgroup, created at its first start: returns the `cgroup.procs` descriptors its
    /// child joins. Before a restart, whatever the previous instance left in it is killed and
    /// waited for.
    fn ensure_cgroup(&mut self, idx: usize) -> Result<Vec<std::os::fd::OwnedFd>, String> {
        let Some(app) = self.apps[idx].as_ref() else {
            return Err("app removed".into());
        };
        if app.cgroup.is_none() {
            let limits = app.spec.limits.cgroup();
            if self.cgroups.unavailable.is_some() && !limits.any() {
                return Ok(vec![]); // an app without limits runs without a cgroup then
            }
            let name = app.name.to_string();
            let dir = if self.cg_names.contains(&name) {
                format!("{name}.{idx}")
            } else {
                name
            };
            let cg = self.cgroups.create(&dir, &limits)?;
            self.cg_names.insert(dir);
            if let Some(app) = self.apps[idx].as_mut() {
                app.cgroup = Some(cg);
            }
        }
        let Some(cg) = self.apps[idx].as_mut().and_then(|a| a.cgroup.as_mut()) else {
            return Ok(vec![]);
        };
        cg.kill_and_wait(Duration::from_secs(2))?;
        cg.mark_start();
        cg.open_procs()
    }

    /// A start is refused (not retried) when a limit of the app cannot be enforced here.
    fn check_limits(&self, idx: usize) -> Result<(), String> {
        let Some(app) = self.apps[idx].as_ref() else {
            return Ok(());
        };
        let spec = app.pending.as_deref().unwrap_or(&app.spec);
        if spec.isolation == config::Isolation::Wasm {
            return Ok(());
        }
        match self.cgroups.refuse(&spec.limits.cgroup()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Drops an app's cgroup: kills what is left in it and removes its directories.
    fn drop_cgroup(&mut self, app: &mut App) {
        if let Some(cg) = app.cgroup.take() {
            if let Err(e) = cg.kill_and_wait(Duration::from_secs(2)) {
                eprintln!("paddock: {}: {e}", app.name);
            }
            if let Some(dir) = cg.paths().first().and_then(|p| p.file_name()) {
                self.cg_names.remove(&*dir.to_string_lossy());
            }
            if let Err(e) = cg.remove() {
                eprintln!("paddock: {}: removing its cgroup: {e}", app.name);
            }
        }
    }

    /// Starts one health check of an app; its result comes back as an event.
    fn run_check(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        let Some(h) = app.spec.health.clone() else {
            return;
        };
        let spawn = app.m.spawns();
        let tx = self.tx.clone();
        match &h.probe {
            Probe::Exec { .. } => {
                let prepared = match app.check.clone() {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        return self.feed_health(idx, Err(format!("cannot run the check: {e}")));
                    }
                    None => return,
                };
                let d = self.devnull.as_raw_fd();
                let io = Stdio {
                    stdin: Some(d),
                    stdout: Some(d),
                    stderr: Some(d),
                    extra: None,
                };
                let started = if prepared.joins_app() {
                    // Inside the app's sandbox: its namespaces, root and cgroup.
                    let Some(pid) = app.pid else {
                        return self.feed_health(idx, Err("the app is not running".into()));
                    };
                    let join = match app.cgroup.as_ref().map(|cg| cg.open_procs()).transpose() {
                        Ok(j) => j.unwrap_or_default(),
                        Err(e) => {
                            return self
                                .feed_health(idx, Err(format!("cannot run the check: {e}")));
                        }
                    };
                    let join: Vec<_> = join.iter().map(|f| f.as_raw_fd()).collect();
                    native::spawn_in_app(&prepared, &io, &join, pid)
                } else {
                    native::spawn(&prepared, &io)
                };
                match started {
                    Ok(pid) => {
                        self.checks.insert(pid, (idx, spawn));
                        tokio::spawn(async move {
                            tokio::time::sleep(h.timeout).await;
                            let _ = tx.send(Msg::CheckTimeout { pid });
                        });
                    }
                    Err(e) => self.feed_health(idx, Err(format!("cannot run the check: {e}"))),
                }
            }
            Probe::Tcp { address } => {
                let address = address.clone();
                tokio::spawn(async move {
                    let result = crate::health::probe_tcp(&address, h.timeout).await;
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
            Probe::Http {
                host,
                port,
                path,
                expect_body,
            } => {
                let (host, port, path, expect) =
                    (host.clone(), *port, path.clone(), expect_body.clone());
                tokio::spawn(async move {
                    let result =
                        crate::health::probe_http(&host, port, &path, expect.as_deref(), h.timeout)
                            .await;
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
            Probe::Wasm => {
                let Some(call) = self.wasm_health_call(idx, h.timeout) else {
                    return self.feed_health(idx, Err("the app's module is not loaded".into()));
                };
                tokio::spawn(async move {
                    let result = match call.await {
                        Ok(0) => Ok(()),
                        Ok(n) => Err(format!("the module's health function returned {n}")),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
        }
    }

    fn feed_health(&mut self, idx: usize, result: Result<(), String>) {
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        app.health_detail = match &result {
            Ok(()) => "ok".into(),
            Err(e) => e.clone(),
        };
        self.feed(idx, Event::Health(result.is_ok()));
    }

    fn arm(&mut self, idx: usize, kind: TimerKind, after: Duration) {
        self.cancel(idx, kind);
        let at = Instant::now() + after;
        self.timers.insert((at, idx, kind));
        self.timer_of.insert((idx, kind), at);
    }

    fn cancel(&mut self, idx: usize, kind: TimerKind) {
        if let Some(at) = self.timer_of.remove(&(idx, kind)) {
            self.timers.remove(&(at, idx, kind));
        }
    }

    /// Feeds an event to one app's machine and carries out the actions, including the events
    /// they cause (a spawn's result).
    fn feed(&mut self, idx: usize, ev: Event) {
        let Some(before) = self.apps[idx].as_ref().map(|a| a.m.state()) else {
            return;
        };
        let mut queue = VecDeque::from([ev]);
        let mut acts = Vec::with_capacity(4);
        while let Some(ev) = queue.pop_front() {
            let now = self.now();
            let Some(app) = self.apps[idx].as_mut() else {
                return;
            };
            acts.clear();
            let step_from = app.m.state();
            app.m.handle(ev, now, &mut acts);
            // The time of the change itself, before its actions (a spawn) run.
            let step_t = crate::util::mono_ns();
            if app.m.state() != step_from
                && app.m.state() == State::Stopping
                && app.stop_why.is_empty()
            {
                app.stop_why = "stop requested".into();
            }
            for a in acts.drain(..) {
                match a {
                    Action::Spawn => match self
                        .check_bundle(idx)
                        .and_then(|()| self.check_limits(idx))
                        .map_err(Event::SpawnRefused)
                        .and_then(|()| self.do_spawn(idx).map_err(Event::SpawnFailed))
                    {
                        Ok(_) => queue.push_back(Event::Spawned),
                        Err(ev) => {
                            if let (Some(app), Event::SpawnFailed(e) | Event::SpawnRefused(e)) =
                                (&self.apps[idx], &ev)
                            {
                                eprintln!("paddock: {}: {e}", app.name);
                            }
                            queue.push_back(ev)
                        }
                    },
                    Action::Signal(_) if self.wasm_interrupt(idx, false) => {}
                    Action::KillGroup if self.wasm_interrupt(idx, true) => {}
                    Action::Signal(sig) => {
                        if let Some(app) = self.apps[idx].as_ref() {
                            // A sandboxed app is PID 1 of its namespace, where the kernel
                            // drops a signal it does not handle: give it what a plain process
                            // would get from that signal.
                            if let (Some(pid), Ok(p)) = (app.pid, &app.prepared)
                                && p.sandbox_summary().is_some()
                                && crate::sandbox::init_drops(pid, sig)
                            {
                                // SAFETY: kill(2) takes no pointers; `pid` is our child and not yet
                                // reaped (reap() clears app.pid on this same thread when it
                                // collects it), so it names no other process.
                                unsafe { libc::kill(pid, libc::SIGKILL) };
                            }
                        }
                        // SAFETY: kill(2) takes no pointers; `pg` is the group our unreaped child
                        // leads (gone() sends KillGroup, which clears pgid, right after the exit).
                        if let Some(pg) = self.apps[idx].as_ref().and_then(|a| a.pgid)
                            && unsafe { libc::kill(-pg, sig) } != 0
                        {
                            // SAFETY: as above: `pg` is also the leader's pid, the same unreaped
                            // child.
                            unsafe { libc::kill(pg, sig) };
                        }
                    }
                    Action::KillGroup => {
                        if let Some(app) = self.apps[idx].as_mut() {
                            if let Some(pg) = app.pgid {
                                // SAFETY: kill(2) takes no pointers; the group of our child (after
                                // its exit this is the final sweep, run in the same feed() call as
                                // the reap, and pgid is cleared).
                                unsafe { libc::kill(-pg, libc::SIGKILL) };
                                if app.pid.is_none() {
                                    app.pgid = None; // main process gone: this was the final sweep
                                }
                            }
                            // The whole cgroup: also what left the process group (setsid,
                            // double forks). A restart waits for it to be empty (ensure_cgroup).
                            if let Some(cg) = &app.cgroup
                                && let Err(e) = cg.kill()
                            {
                                eprintln!("paddock: {}: killing its cgroup: {e}", app.name);
                            }
                        }
                    }
                    Action::Arm(k, d) => self.arm(idx, k, d),
                    Action::Cancel(k) => self.cancel(idx, k),
                    Action::RunHealthCheck => self.run_check(idx),
                }
            }
            if let Some(app) = self.apps[idx].as_ref()
                && app.m.state() != step_from
            {
                self.publish(app, step_from, step_t);
            }
        }
        self.sync_record(idx);
        self.after_change(idx, before);
    }

    fn publish(&self, app: &App, from: State, mono_ns: u64) {
        let to = app.m.state();
        let reason = match to {
            State::Starting if app.m.waiting() => {
                format!("waiting for {}", self.waiting_for(app).join(", "))
            }
            State::Starting => "starting".into(),
            State::Running => format!("pid {}; waiting for readiness", app.pid.unwrap_or(0)),
            State::Ready => format!("pid {}", app.pid.unwrap_or(0)),
            State::Stopping => app.stop_why.clone(),
            State::Backoff | State::Exited | State::Fatal | State::Stopped => {
                app.m.last_exit().map(|e| e.describe()).unwrap_or_default()
            }
        };
        if self.events.receiver_count() > 0 {
            let ev = StateEvent {
                time: crate::util::rfc3339_string(SystemTime::now()),
                mono_ns,
                app: app.name.to_string(),
                from: from.as_str().into(),
                to: to.as_str().into(),
                reason,
            };
            if let Ok(line) = serde_json::to_string(&ev) {
                let _ = self.events.send(line);
            }
        }
    }

    fn after_change(&mut self, idx: usize, before: State) {
        if !self.ready_sent {
            self.tell_parent_when_ready();
        }
        self.switch_progress(idx);
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        let (state, down, remove) = (app.m.state(), app.m.state().is_down(), app.remove_when_down);
        if state != before {
            self.http_state_changed(idx);
            if state != State::Stopping
                && let Some(a) = self.apps[idx].as_mut()
            {
                a.stop_why.clear();
            }
            if state == State::Fatal
                && !self.shutting_down
                && self.apps[idx].as_ref().is_some_and(|a| a.spec.essential)
            {
                eprintln!(
                    "paddock: essential app {} is FATAL: stopping everything",
                    self.apps[idx].as_ref().map_or("?", |a| &a.name)
                );
                self.exit_code = 1;
                self.begin_shutdown();
            }
            // Dependants see READY come and go.
            if (state == State::Ready) != (before == State::Ready) || state == State::Fatal || down
            {
                self.refresh_deps();
            }
            self.run_stop_queue();
        }
        if down && self.apps[idx].as_ref().is_some_and(|a| a.pending.is_some()) {
            self.apply_pending(idx);
        }
        if down && remove {
            self.remove_app(idx);
        }
        self.check_waiters();
        if self.shutting_down
            && self.stop_queue.is_empty()
            && self.apps.iter().flatten().all(|a| !a.m.alive())
        {
            self.done = true;
        }
    }

    /// Names of an app's dependencies that are not ready, with their states.
    fn waiting_for(&self, app: &App) -> Vec<String> {
        app.spec
            .after
            .iter()
            .chain(&app.spec.requires)
            .filter_map(
                |d| match self.by_name.get(d).and_then(|&i| self.apps[i].as_ref()) {
                    Some(a)
                        if a.m.state() == State::Ready
                            && !self.stop_queue.contains_key(&self.by_name[d]) =>
                    {
                        None
                    }
                    Some(a) => Some(format!("{d}: {}", a.m.state().as_str().to_lowercase())),
                    None => Some(format!("{d}: missing")),
                },
            )
            .collect()
    }

    /// Tells every app whether its dependencies are ready, where that changed.
    fn refresh_deps(&mut self) {
        // By slot, not by name: this runs on every READY transition and must stay cheap.
        let with_deps = match self.with_deps.take() {
            Some(v) => v,
            None => (0..self.apps.len())
                .filter(|&i| {
                    self.apps[i]
                        .as_ref()
                        .is_some_and(|a| !a.spec.after.is_empty() || !a.spec.requires.is_empty())
                })
                .collect(),
        };
        // feed() below may add, change or remove apps (and clear the list): keep it only then.
        self.with_deps = Some(with_deps.clone());
        for idx in with_deps {
            let Some(app) = self.apps[idx].as_ref() else {
                continue;
            };
            let ok = self.waiting_for(app).is_empty();
            if ok != app.m.deps_ok() {
                if !ok && let Some(a) = self.apps[idx].as_mut() {
                    a.stop_why = "a required app went away".into();
                }
                self.feed(idx, Event::Deps(ok));
            }
        }
    }

    /// Whether live apps that depend on `idx` (within `scope`) must go down before it may stop.
    /// `alive_dependants` maps an app name to its live dependants (`true`: by `requires`).
    fn blocked(
        &self,
        idx: usize,
        scope: StopScope,
        alive_dependants: &HashMap<&str, Vec<bool>>,
    ) -> bool {
        let Some(app) = self.apps[idx].as_ref() else {
            return false;
        };
        alive_dependants
            .get(app.spec.name.as_str())
            .is_some_and(|ds| {
                ds.iter()
                    .any(|&by_requires| by_requires || scope == StopScope::AllDependants)
            })
    }

    /// Queues a stop; it starts once the apps depending on this one are down.
    fn request_stop(&mut self, idx: usize, scope: StopScope) {
        let prev = self.stop_queue.get(&idx).copied();
        if prev != Some(StopScope::AllDependants) {
            self.stop_queue.insert(idx, scope);
        }
        self.refresh_deps(); // dependants that `require` it stop now
        self.run_stop_queue();
    }

    fn run_stop_queue(&mut self) {
        if self.stop_queue_running {
            return;
        }
        self.stop_queue_running = true;
        self.run_stop_queue_pass();
        self.stop_queue_running = false;
    }

    fn run_stop_queue_pass(&mut self) {
        while !self.stop_queue.is_empty() {
            // One pass over the apps builds the reverse dependency map; every queued stop is then
            // checked against it (not against every app: shutdown of 1000 apps must stay cheap).
            let mut alive_dependants: HashMap<&str, Vec<bool>> = HashMap::new();
            for d in self.apps.iter().flatten().filter(|d| d.m.alive()) {
                for r in &d.spec.requires {
                    alive_dependants.entry(r.as_str()).or_default().push(true);
                }
                for a in &d.spec.after {
                    alive_dependants.entry(a.as_str()).or_default().push(false);
                }
            }
            let ready: Vec<usize> = self
                .stop_queue
                .iter()
                .filter(|&(&i, &s)| !self.blocked(i, s, &alive_dependants))
                .map(|(&i, _)| i)
                .collect();
            drop(alive_dependants);
            if ready.is_empty() {
                return;
            }
            for idx in ready {
                self.stop_queue.remove(&idx);
                self.feed(idx, Event::Stop);
            }
        }
    }

    fn remove_app(&mut self, idx: usize) {
        self.with_deps = None;
        if let Some(mut app) = self.apps[idx].take() {
            self.drop_cgroup(&mut app);
            for k in TIMER_KINDS {
                self.cancel(idx, k);
            }
            self.stop_queue.remove(&idx);
            // `update` may have added a new app of the same name meanwhile: leave that one be.
            if self.by_name.get(&*app.name) == Some(&idx) {
                self.by_name.remove(&*app.name);
                self.forget_app(&app.name);
                self.logs.send(Ctl::Remove {
                    app: app.name.clone(),
                });
            }
            // Dropping the pipes closes paddock's write ends: the readers end at EOF.
        }
        self.refresh_deps();
    }

    fn reap(&mut self) {
        let t0 = Instant::now();
        for _ in 0..REAP_BATCH {
            if t0.elapsed() > REAP_TIME {
                break;
            }
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`, a live local; it reaps children of ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(exit) = exit_of(status) else {
                continue;
            };
            if let Some((idx, spawn)) = self.checks.remove(&pid) {
                if self.apps[idx]
                    .as_ref()
                    .is_some_and(|a| a.m.spawns() == spawn)
                {
                    let r = if exit.success() {
                        Ok(())
                    } else {
                        Err(format!("check command: {}", exit.describe()))
                    };
                    self.feed_health(idx, r);
                }
                continue;
            }
            self.exited(pid, exit);
        }
        // More may be waiting: continued after the messages that came meanwhile.
        queue_sigchld(&self.tx);
        self.yield_soon = true;
    }

    /// A child that paddock started is gone. Unknown pids (orphans reparented to paddock, failed
    /// spawns already accounted for) are ignored.
    fn exited(&mut self, pid: i32, exit: Exit) {
        let Some(idx) = self.pids.remove(&pid) else {
            return;
        };
        let mut exit = exit;
        if let Some(app) = self.apps[idx].as_mut() {
            app.pid = None;
            if exit == Exit::Signal(libc::SIGKILL)
                && app
                    .cgroup
                    .as_mut()
                    .is_some_and(|c| c.oom_killed_since_start())
            {
                exit = Exit::OomKilled;
                eprintln!(
                    "paddock: {}: exited: oom-killed (memory limit {})",
                    app.name,
                    app.spec
                        .limits
                        .memory
                        .map_or("?".into(), crate::config::units::format_size)
                );
            }
        }
        self.feed(idx, Event::Exited(exit));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(at, idx, kind)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, idx, kind));
            self.timer_of.remove(&(idx, kind));
            if let Some(app) = self.apps[idx].as_mut() {
                app.stop_why = match kind {
                    TimerKind::ReadyTimeout => "not ready in time".into(),
                    TimerKind::Watchdog => "watchdog expired".into(),
                    _ => std::mem::take(&mut app.stop_why),
                };
            }
            self.feed(idx, Event::Timer(kind));
        }
    }

    fn on_notify(&mut self, idx: usize, text: &str) {
        for n in crate::health::parse_notify(text) {
            match n {
                crate::health::Notice::Ready => self.feed(idx, Event::Ready),
                crate::health::Notice::Watchdog => self.feed(idx, Event::WatchdogPing),
                crate::health::Notice::Status(s) => {
                    if let Some(a) = self.apps[idx].as_mut() {
                        a.status_text = s;
                    }
                }
                crate::health::Notice::Stopping | crate::health::Notice::MainPid(_) => {}
            }
        }
    }

    fn status_of(&self, app: &App) -> AppStatus {
        let now = self.now();
        let usage = app.cgroup.as_ref().map(|c| c.usage()).unwrap_or_default();
        let m = &app.m;
        let last_exit = m.last_exit().map(|e| ExitInfo {
            code: if let Exit::Code(c) = e {
                Some(*c)
            } else {
                None
            },
            signal: match e {
                Exit::Signal(s) => Some(*s),
                Exit::OomKilled => Some(libc::SIGKILL),
                _ => None,
            },
            description: e.describe(),
        });
        let message = match m.state() {
            State::Backoff => {
                let left = m
                    .backoff_until()
                    .map(|t| t.saturating_sub(now))
                    .unwrap_or_default();
                format!(
                    "{}; start attempt {} in {}",
                    m.last_exit().map(|e| e.describe()).unwrap_or_default(),
                    m.failures() + 1,
                    crate::config::units::format_duration(Duration::from_millis(
                        left.as_millis() as u64
                    ))
                )
            }
            State::Fatal if m.refused() => format!(
                "not started, and not retried until `paddock start`: {}",
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            ),
            State::Fatal => format!(
                "gave up after {} failed starts; last: {}",
                m.failures(),
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            ),
            State::Exited | State::Stopped => {
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            }
            State::Starting if m.waiting() => {
                format!("waiting for {}", self.waiting_for(app).join(", "))
            }
            State::Running | State::Ready if self.switch_message(app).is_some() => {
                self.switch_message(app).unwrap_or_default()
            }
            State::Running => "waiting for readiness".into(),
            State::Stopping => app.stop_why.clone(),
            _ if m.health() == Health::Unhealthy || m.checks_failed() > 0 => format!(
                "health check failing ({} in a row): {}",
                m.checks_failed(),
                app.health_detail
            ),
            _ => app.status_text.clone(),
        };
        AppStatus {
            name: app.name.to_string(),
            state: m.state().as_str().into(),
            pid: app.pid,
            uptime_secs: m.uptime(now).map(|d| d.as_secs_f64()),
            since_secs: now.saturating_sub(m.state_since()).as_secs_f64(),
            restarts: m.restarts(),
            failures: m.failures(),
            last_exit,
            message,
            isolation: match &app.prepared {
                Ok(p) => p.level.as_str().into(),
                Err(_) => app.spec.isolation.as_str().into(),
            },
            sandbox: app
                .prepared
                .as_ref()
                .ok()
                .and_then(|p| p.sandbox_summary().map(str::to_string)),
            fallback: app.prepared.as_ref().ok().and_then(|p| p.fallback.clone()),
            memory_bytes: wasm_apps::memory_bytes(app).or(usage.memory_bytes),
            cpu_usec: usage.cpu_usec,
            pids: usage.pids,
            cgroup: app
                .cgroup
                .as_ref()
                .and_then(|c| c.paths().first().map(|p| p.display().to_string())),
            limits: limits_info(&app.spec.limits),
            autostart: app.spec.autostart,
            restart_policy: app.spec.restart.policy,
            command: app.spec.command.clone(),
            health: app.spec.health.as_ref().map(|_| m.health()),
            health_detail: app.spec.health.as_ref().map(|_| app.health_detail.clone()),
            waiting_for: if m.waiting() {
                self.waiting_for(app)
            } else {
                vec![]
            },
            published: self.publisher.status(&app.name),
            http: http_apps::figures(app),
            log_lines_dropped: self.logs.dropped(&app.name),
        }
    }

    /// App indexes for a list of names; `all` means every app. An empty list is an error (a
    /// stray empty argument must not mean "everything"), and so is any unknown name, also
    /// beside `all`: nothing is done then.
    fn resolve(&self, names: &[String]) -> Result<Vec<usize>, Reply> {
        if names.is_empty() {
            return Err(Reply::error(400, "name at least one app, or `all`"));
        }
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| *n != "all" && !self.by_name.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known = self.by_name.keys().map(String::as_str);
            return Err(Reply::error(
                404,
                config::suggest::no_such_apps(&unknown, known),
            ));
        }
        if names.iter().any(|n| n == "all") {
            return Ok(self.app_idxs());
        }
        Ok(names.iter().map(|n| self.by_name[n]).collect())
    }

    fn check_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            let mut items = std::mem::take(&mut self.waiters[i].items);
            for it in items.iter_mut().filter(|it| it.result.is_none()) {
                it.result = self.wait_result(it);
            }
            let w = &mut self.waiters[i];
            w.items = items;
            if w.items.iter().all(|it| it.result.is_some()) || w.reply.is_closed() {
                let w = self.waiters.swap_remove(i);
                let results: Vec<ActionResult> =
                    w.items.into_iter().filter_map(|it| it.result).collect();
                let ok = results.iter().all(|r| r.ok);
                let _ = w.reply.send(Reply::json(
                    if ok { 200 } else { 409 },
                    &ActionResponse { ok, results },
                ));
            } else {
                i += 1;
            }
        }
    }

    fn wait_result(&self, it: &WaitItem) -> Option<ActionResult> {
        let res = |ok: bool, st: State, message: String| {
            Some(ActionResult {
                app: it.name.clone(),
                ok,
                state: st.as_str().into(),
                message,
            })
        };
        let Some(app) = self.apps[it.idx].as_ref() else {
            return Some(ActionResult {
                app: it.name.clone(),
                ok: false,
                state: "REMOVED".into(),
                message: "removed".into(),
            });
        };
        let st = app.m.state();
        let why = || app.m.last_exit().map(|e| e.describe()).unwrap_or_default();
        match it.goal {
            Goal::Up if st == State::Ready && app.m.spawns() > it.min_spawns => res(
                true,
                st,
                match app.pid {
                    Some(pid) => format!("started (pid {pid})"),
                    None => "started (wasm instance)".into(),
                },
            ),
            Goal::Up if st == State::Backoff => res(false, st, format!("{}; retrying", why())),
            Goal::Up if st == State::Fatal => res(false, st, format!("{}; gave up (FATAL)", why())),
            Goal::Up if st == State::Exited => res(false, st, format!("exited at once: {}", why())),
            Goal::Up if st == State::Stopped => res(false, st, "stopped before it was up".into()),
            Goal::Up if app.m.waiting() => {
                // Waiting is fine while the dependencies are on their way; not if one is down.
                let dead: Vec<String> = app
                    .spec
                    .after
                    .iter()
                    .chain(&app.spec.requires)
                    .filter(|d| {
                        self.by_name
                            .get(*d)
                            .and_then(|&i| self.apps[i].as_ref())
                            .is_none_or(|a| a.m.state().is_down())
                    })
                    .cloned()
                    .collect();
                if dead.is_empty() {
                    None
                } else {
                    res(
                        false,
                        st,
                        format!(
                            "waiting for {}, which {} not running: start {} first",
                            dead.join(", "),
                            if dead.len() == 1 { "is" } else { "are" },
                            if dead.len() == 1 { "it" } else { "them" }
                        ),
                    )
                }
            }
            Goal::Down if st.is_down() => res(true, st, "stopped".into()),
            _ => None,
        }
    }

    fn act(&mut self, names: Vec<String>, verb: Verb, wait: bool, reply: oneshot::Sender<Reply>) {
        if self.shutting_down && verb != Verb::Stop {
            let _ = reply.send(Reply::error(409, "paddock is shutting down"));
            return;
        }
        let all = names.iter().any(|n| n == "all");
        let idxs = match self.resolve(&names) {
            Ok(i) => i,
            Err(r) => {
                let _ = reply.send(r);
                return;
            }
        };
        let mut items = vec![];
        for idx in idxs {
            let Some(app) = self.apps[idx].as_ref() else {
                continue;
            };
            let (name, st, spawns) = (app.name.to_string(), app.m.state(), app.m.spawns());
            let mut item = WaitItem {
                idx,
                name: name.clone(),
                goal: Goal::Up,
                min_spawns: spawns,
                result: None,
            };
            match verb {
                Verb::Start if st == State::Ready => {
                    item.result = Some(ActionResult {
                        app: name,
                        ok: true,
                        state: st.as_str().into(),
                        message: "already running".into(),
                    });
                }
                Verb::Start => self.feed(idx, Event::Start),
                Verb::Restart => self.feed(idx, Event::Restart),
                Verb::Stop => {
                    item.goal = Goal::Down;
                    if st.is_down() {
                        item.result = Some(ActionResult {
                            app: name,
                            ok: true,
                            state: st.as_str().into(),
                            message: "not running".into(),
                        });
                    } else {
                        self.request_stop(
                            idx,
                            if all {
                                StopScope::AllDependants
                            } else {
                                StopScope::Requirers
                            },
                        );
                    }
                }
            }
            items.push(item);
        }
        if wait {
            self.waiters.push(Waiter { items, reply });
            self.check_waiters();
        } else {
            let results = items
                .into_iter()
                .map(|it| {
                    let st = self.apps[it.idx]
                        .as_ref()
                        .map_or("REMOVED", |a| a.m.state().as_str());
                    it.result.unwrap_or(ActionResult {
                        app: it.name,
                        ok: true,
                        state: st.into(),
                        message: "requested".into(),
                    })
                })
                .collect();
            let _ = reply.send(Reply::json(200, &ActionResponse { ok: true, results }));
        }
    }

    fn handle(&mut self, req: Request, reply: oneshot::Sender<Reply>) {
        let r = match req {
            Request::Status(names, table) => match if names.is_empty() {
                Ok(self.app_idxs())
            } else {
                self.resolve(&names)
            } {
                Ok(idxs) => {
                    let apps: Vec<AppStatus> = idxs
                        .iter()
                        .filter_map(|&i| self.apps[i].as_ref())
                        .map(|a| self.status_of(a))
                        .collect();
                    if table {
                        let ready = crate::control::table::all_ready(&apps);
                        Reply {
                            status: 200,
                            content_type: if ready {
                                crate::control::table::ALL_READY
                            } else {
                                crate::control::table::NOT_ALL_READY
                            },
                            body: crate::control::table::render(&apps, !names.is_empty()),
                        }
                    } else {
                        Reply::json(200, &StatusList { apps })
                    }
                }
                Err(r) => r,
            },
            Request::Action { names, verb, wait } => return self.act(names, verb, wait, reply),
            Request::Signal { names, signal } => match self.resolve(&names) {
                Ok(idxs) => {
                    let mut results = vec![];
                    for idx in idxs {
                        let Some(app) = self.apps[idx].as_ref() else {
                            continue;
                        };
                        let (ok, message) = match app.pid {
                            None if app.spec.isolation == config::Isolation::Wasm => {
                                (false, wasm_apps::NO_SIGNALS.to_string())
                            }
                            // SAFETY: kill(2) takes no pointers; `pid` is our unreaped child
                            // (reap() clears it); a bad signal number is refused by the kernel
                            // (EINVAL).
                            Some(pid) if unsafe { libc::kill(pid, signal) } == 0 => (
                                true,
                                format!(
                                    "sent {} to pid {pid}",
                                    crate::config::units::signal_name(signal)
                                ),
                            ),
                            Some(pid) => (
                                false,
                                format!("kill {pid}: {}", nix::errno::Errno::last().desc()),
                            ),
                            None => (false, "not running".into()),
                        };
                        results.push(ActionResult {
                            app: app.name.to_string(),
                            ok,
                            state: app.m.state().as_str().into(),
                            message,
                        });
                    }
                    let ok = results.iter().all(|r| r.ok);
                    Reply::json(if ok { 200 } else { 409 }, &ActionResponse { ok, results })
                }
                Err(r) => r,
            },
            Request::Reread => {
                let (_, r) = self.reread();
                Reply::json(if r.ok { 200 } else { 422 }, &r)
            }
            Request::Update => self.update(),
            Request::Shutdown(halt) => {
                if halt.is_some() {
                    self.halt = halt;
                }
                self.begin_shutdown();
                Reply::json(
                    202,
                    &serde_json::json!({"ok": true, "message": "shutting down"}),
                )
            }
            Request::Reexec => match self.begin_reexec() {
                Ok(exe) => Reply::json(
                    202,
                    &serde_json::json!({"ok": true, "message": format!("re-executing {}", exe.display())}),
                ),
                Err(e) => Reply::error(409, e),
            },
            Request::ReopenLogs => {
                self.logs.send(Ctl::Reopen);
                Reply::json(200, &serde_json::json!({"ok": true}))
            }
            Request::Metrics => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics(),
            },
            Request::Version => Reply::json(
                200,
                &VersionInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pid: std::process::id() as i32,
                    apps: self.by_name.len(),
                },
            ),
            Request::LogTarget(name) => {
                match self.by_name.get(&name).and_then(|&i| self.apps[i].as_ref()) {
                    None => Reply::error(
                        404,
                        config::suggest::no_such_apps(
                            &[name.as_str()],
                            self.by_name.keys().map(String::as_str),
                        ),
                    ),
                    Some(a) if a.spec.logs.stdout == StdoutMode::Inherit => Reply::error(
                        409,
                        format!(
                            "{name} writes to paddock's own stdout (logs.stdout = \"inherit\"): read paddock's output instead"
                        ),
                    ),
                    Some(_) => Reply::json(200, &serde_json::json!({"ok": true})),
                }
            }
        };
        let _ = reply.send(r);
    }

    /// Stops every app in reverse dependency order, then ends `run`.
    pub fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        eprintln!(
            "paddock: shutting down: stopping {} apps",
            self.by_name.len()
        );
        self.shutting_down = true;
        self.parent.send("STOPPING=1\nSTATUS=stopping apps");
        self.cancel_switches();
        for idx in self.app_idxs() {
            if self.apps[idx]
                .as_ref()
                .is_some_and(|a| !a.m.state().is_down())
            {
                self.stop_queue.insert(idx, StopScope::AllDependants);
            }
        }
        self.refresh_deps();
        self.run_stop_queue();
        if self.stop_queue.is_empty() && self.apps.iter().flatten().all(|a| !a.m.alive()) {
            self.done = true;
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => self.reap(),
            // SIGINT is also Ctrl-Alt-Del when paddock is PID 1; SIGPWR is a VM's power button.
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR => self.begin_shutdown(),
            libc::SIGHUP => {
                let r = self.update();
                eprintln!("paddock: SIGHUP: update: {}", r.body.trim());
            }
            libc::SIGUSR2 => self.logs.send(Ctl::Reopen),
            libc::SIGUSR1 => match self.begin_reexec() {
                Ok(exe) => eprintln!("paddock: SIGUSR1: re-executing {}", exe.display()),
                Err(e) => eprintln!("paddock: SIGUSR1: cannot re-execute: {e}"),
            },
            _ => {}
        }
    }

    /// Runs until shutdown completes; returns paddock's exit code.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Outcome {
        self.sync_publish();
        self.autostart();
        self.tell_parent_when_ready();
        let ready = self
            .apps
            .iter()
            .flatten()
            .filter(|a| a.m.state() == State::Ready)
            .count();
        eprintln!(
            "paddock: {ready} of {} apps ready, {:.1} ms after start",
            self.by_name.len(),
            self.started.elapsed().as_secs_f64() * 1000.0
        );
        // What the start used and freed (the app files parsed, their map) goes back to the
        // kernel instead of staying in the heap: 1000 apps left ~2 MB free there.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim takes a size and only gives free heap pages back to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
        while !self.done {
            let msg = match self.timers.first().map(|t| t.0) {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at.into()) => {
                        self.fire_timers();
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match msg {
                None => break,
                Some(Msg::Signal(sig)) => {
                    if sig == libc::SIGCHLD {
                        // A SIGCHLD from now on queues a new message.
                        CHLD_QUEUED.store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    self.on_signal(sig);
                    if std::mem::take(&mut self.yield_soon) {
                        // The I/O driver runs before this task again: accepted connections
                        // get their requests in.
                        tokio::task::yield_now().await;
                    }
                }
                Some(Msg::Request(req, reply)) => self.handle(req, reply),
                Some(Msg::WasmExited {
                    app,
                    generation,
                    exit,
                }) => self.wasm_exited(app, generation, exit),
                Some(Msg::Notify { idx, text }) => self.on_notify(idx, &text),
                Some(Msg::ReadyFd { idx }) => self.feed(idx, Event::Ready),
                Some(Msg::Probe { idx, spawn, result }) => {
                    if self.apps[idx]
                        .as_ref()
                        .is_some_and(|a| a.m.spawns() == spawn)
                    {
                        self.feed_health(idx, result);
                    }
                }
                Some(Msg::PidGone { pid }) => self.pid_gone(pid),
                Some(Msg::CheckTimeout { pid }) => {
                    if let Some((idx, spawn)) = self.checks.remove(&pid) {
                        // SAFETY: kill(2) takes no pointers; `pid` was still in `checks`, so the
                        // check is not reaped yet (reap() removes it first); it leads its own group
                        // (setsid in the child).
                        unsafe { libc::kill(-pid, libc::SIGKILL) };
                        let timeout = self.apps[idx]
                            .as_ref()
                            .and_then(|a| a.spec.health.as_ref())
                            .map(|h| h.timeout)
                            .unwrap_or_default();
                        if self.apps[idx]
                            .as_ref()
                            .is_some_and(|a| a.m.spawns() == spawn)
                        {
                            self.feed_health(
                                idx,
                                Err(format!(
                                    "check command timed out after {}",
                                    crate::config::units::format_duration(timeout)
                                )),
                            );
                        }
                    }
                }
            }
        }
        // Let the connection tasks woken by the last replies (the shutdown request's 202) write
        // them before the runtime goes away; with nothing left to stop, that is the same turn.
        tokio::task::yield_now().await;
        if let Some(exe) = self.reexec.take() {
            // Everything stays: apps, cgroups, records, the holder's descriptors. Only what
            // this process buffered is written out.
            self.logs.flush().await;
            return Outcome {
                code: 0,
                halt: None,
                reexec: Some(exe),
            };
        }
        for idx in 0..self.apps.len() {
            if let Some(mut app) = self.apps[idx].take() {
                self.drop_cgroup(&mut app);
                self.apps[idx] = Some(app);
            }
        }
        self.cgroups.remove_bases();
        self.logs.flush().await;
        let _ = std::fs::remove_file(&self.opts.socket);
        if let Some(fs) = self.fdstore.take() {
            fs.bye();
        }
        Outcome {
            code: self.exit_code,
            halt: self.halt,
            reexec: None,
        }
    }

    /// READY=1 to paddock's own parent (systemd `Type=notify`) once every autostart app is READY
    /// or has settled (FATAL, EXITED): paddock has done what it can.
    fn tell_parent_when_ready(&mut self) {
        if self.ready_sent || self.shutting_down || !self.parent.wanted() {
            return;
        }
        let settled = self
            .apps
            .iter()
            .flatten()
            .filter(|a| a.spec.autostart)
            .all(|a| {
                let st = a.m.state();
                st == State::Ready || st == State::Fatal || st == State::Exited
            });
        if settled {
            self.ready_sent = true;
            let ready = self
                .apps
                .iter()
                .flatten()
                .filter(|a| a.m.state() == State::Ready)
                .count();
            self.parent.send(&format!(
                "READY=1\nSTATUS={ready} of {} apps ready",
                self.by_name.len()
            ));
        }
    }
}

/// How a waited-for child ended (None: stopped or continued, not ended).
fn exit_of(status: i32) -> Option<Exit> {
    if libc::WIFEXITED(status) {
        Some(Exit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Exit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// `[limits]` as shown in the API (None without any).
fn limits_info(l: &config::wasm::Limits) -> Option<LimitsInfo> {
    (l.memory.is_some() || l.cpu.is_some() || l.pids.is_some() || l.nofile.is_some()).then_some(
        LimitsInfo {
            memory_bytes: l.memory,
            cpu: l.cpu,
            pids: l.pids,
            nofile: l.nofile,
        },
    )
}

/// The cgroup name under paddock's own cgroup: `PADDOCK_CGROUP_NAME`, default `paddock` (tests
/// and side-by-side instances give each paddock its own).
pub fn cgroup_name() -> Result<String, String> {
    match std::env::var("PADDOCK_CGROUP_NAME") {
        Err(_) => Ok("paddock".into()),
        Ok(n) if crate::config::valid_app_name(&n).is_ok() => Ok(n),
        Ok(n) => Err(format!(
            "PADDOCK_CGROUP_NAME={n:?}: give 1 to 64 letters, digits, '-', '_', '.', '@', not starting with '.'"
        )),
    }
}

/// Starts the signal thread: every signal paddock handles becomes a message.
pub fn forward_signals(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPWR,
    ])?;
    std::thread::Builder::new()
        .name("paddock-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let sent = if sig == libc::SIGCHLD {
                    queue_sigchld(&tx)
                } else {
                    tx.send(Msg::Signal(sig)).is_ok()
                };
                if !sent {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one: each app holds a few descriptors.
pub fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `rl`, a live local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            native::set_child_nofile(rl.rlim_cur, rl.rlim_max);
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// `paddock check`: the app files of `dirs`, validated as `serve` would (wasm modules loaded
/// and linked too), or every error found.
pub fn check_config(
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, AppSpec>, Vec<config::ConfigError>> {
    let (specs, mut errs) = config::load_dirs_all(dirs);
    errs.extend(wasm_apps::check_standalone(&specs));
    config::sort_errors(&mut errs);
    if errs.is_empty() {
        Ok(specs)
    } else {
        Err(errs)
    }
}

/// `paddock serve`: supervises until shutdown. As PID 1 it first mounts what a bare filesystem
/// lacks and sets the hostname; the caller does the final act (see `pid1`).
pub fn serve(opts: Options) -> Result<Outcome, String> {
    // Before any thread exists: paddock's own NOTIFY_SOCKET is for paddock, not for its apps.
    let parent = crate::pid1::ParentNotify::from_env();
    let cg_name = cgroup_name()?;
    if crate::pid1::is_pid1() {
        for note in crate::pid1::early_mounts() {
            eprintln!("paddock: {note}");
        }
        crate::pid1::disable_cad();
    }
    if let Some(h) = &opts.global.hostname {
        crate::pid1::set_hostname(h)?;
    }
    let specs = config::load_dirs(&opts.config_dirs).map_err(|mut errs| {
        // Refusing anyway: also report what is wrong with the modules of the valid files.
        let (valid, _) = config::load_dirs_all(&opts.config_dirs);
        errs.extend(wasm_apps::check_standalone(&valid));
        config::sort_errors(&mut errs);
        let mut s = String::from("the configuration has errors; nothing was started:\n");
        for e in errs {
            s.push_str(&format!("  {e}\n"));
        }
        s
    })?;
    raise_nofile();
    native::reserve_low_fds().map_err(|e| {
        format!(
            "cannot set up descriptors for spawning: {}",
            crate::util::io_reason(&e)
        )
    })?;
    // One paddock per state directory and cgroup name, or both would start every app. After
    // the descriptor slots are reserved, so the lock files get descriptors of their own.
    let _locks = crate::lock::serve_locks(&opts.state_dir, &cg_name)?;
    if !crate::pid1::is_pid1() {
        // Orphans of our apps (double-forking daemons) are reparented to us, not to init.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only and changes only who inherits
        // orphans.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let log_dir = opts
        .global
        .log_dir
        .clone()
        .unwrap_or_else(|| opts.state_dir.join("logs"));
    // One thread runs the supervisor, the control socket, probes and the pipe readers: the
    // supervisor is one task that owns all state, and a single thread keeps its memory in one
    // malloc arena.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        forward_signals(tx.clone()).map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let logs = Logs::start(log_dir.clone()).map_err(|e| {
            format!(
                "cannot create {}: {}",
                log_dir.display(),
                crate::util::io_reason(&e)
            )
        })?;
        let (events, _) = broadcast::channel(1024);
        let sup = Supervisor::new(
            opts.clone(),
            specs,
            logs.clone(),
            tx.clone(),
            events.clone(),
            parent,
        )
        .map_err(|e| format!("cannot start: {e}"))?;
        // Wasm apps: load and link every module before anything starts.
        let specs: BTreeMap<String, AppSpec> = sup
            .apps
            .iter()
            .flatten()
            .map(|a| (a.spec.name.clone(), (*a.spec).clone()))
            .collect();
        let errs = sup.wasm.check(&specs);
        if !errs.is_empty() {
            let mut s = String::from("the configuration has errors; nothing was started:\n");
            for e in errs {
                s.push_str(&format!("  {e}\n"));
            }
            return Err(s);
        }
        let metrics_listener = match &opts.metrics_listen {
            Some(a) => Some(crate::control::metrics_tcp::bind(a)?),
            None => None,
        };
        let mut sup = sup;
        // The descriptor holder: started now, or found running after a crash or a re-exec
        // with the descriptors an earlier paddock left in it.
        let mut held = BTreeMap::new();
        match crate::fdstore::Client::connect_or_start(&opts.state_dir) {
            Ok((mut fs, existing)) => {
                if existing {
                    match fs.get_all() {
                        Ok(h) => held = h,
                        Err(e) => eprintln!("paddock: the descriptor holder: {e}"),
                    }
                }
                sup.fdstore = Some(fs);
            }
            Err(e) => eprintln!(
                "paddock: {e}; going on without it: app output will not survive a crash of paddock"
            ),
        }
        let listener = match held.remove("control") {
            Some(fd) if crate::control::server::listens_on(&fd, &opts.socket) => {
                crate::control::server::from_held(fd)?
            }
            _ => {
                let l = crate::control::server::bind(&opts.socket)?;
                if let Some(fs) = sup.fdstore.as_mut() {
                    use std::os::fd::AsFd;
                    fs.put("control", l.as_fd());
                }
                l
            }
        };
        // Only once nothing can refuse the start any more: the directories are removed at
        // shutdown.
        sup.cgroups = crate::cgroup::Cgroups::init(&cg_name);
        sup.cgroups.precreate(
            sup.apps
                .iter()
                .flatten()
                .filter(|a| a.spec.autostart && a.spec.isolation != config::Isolation::Wasm)
                .map(|a| a.name.to_string())
                .collect(),
        );
        eprintln!("paddock: {}", sup.cgroups.summary());
        eprintln!(
            "paddock {}: supervising {} apps from {}; control socket {}{}",
            env!("CARGO_PKG_VERSION"),
            sup.by_name.len(),
            opts.config_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            opts.socket.display(),
            if crate::pid1::is_pid1() {
                " (PID 1)"
            } else {
                ""
            }
        );
        let server = tokio::spawn(crate::control::server::serve(
            listener,
            tx.clone(),
            logs,
            events,
        ));
        sup.adopt_all(held);
        if let Some(l) = metrics_listener {
            tokio::spawn(crate::control::metrics_tcp::serve(l, tx.clone()));
        }
        let out = sup.run(rx).await;
        if out.reexec.is_some() {
            // New connections wait in the listener's backlog (the holder keeps it) for the
            // next paddock; only the answers already decided are written.
            server.abort();
        }
        crate::control::server::drain(Duration::from_secs(2)).await;
        if out.reexec.is_some() {
            return Ok(out);
        }
        eprintln!(
            "paddock: all apps stopped{}",
            if out.code != 0 {
                "; exit status 1 (an essential app failed)"
            } else {
                ""
            }
        );
        Ok(out)
    })
}
