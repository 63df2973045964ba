//! `paddock serve`: the driver around the fleet core (`crate::fleet`).
//!
//! One task owns all supervisor state and is woken only by messages (signals forwarded by the
//! signal thread, control requests, readiness notices, health results) and by the fleet's
//! earliest timer. Each message becomes an input of the fleet; the fleet's effects (spawn,
//! signal, kill, health check, state event, reply) are then carried out in order by `pump`
//! (effects.rs), their results fed back as inputs. Decisions (restart policy, dependency order,
//! stop order, waiters, bundle switches) are the fleet's; this module and its children do the
//! I/O: processes, pipes, cgroups, sockets, wasm instances, records.
//!
//! It reaps every exit status itself (`waitpid(-1)` on SIGCHLD), so exits of apps, of
//! health-check commands, of orphans reparented to it and of failed spawns are all told apart by
//! the pid tables, which only hold live children it started.

use crate::config::health::{Probe, ReadyWhen};
use crate::config::{self, AppSpec, StdoutMode};
use crate::control::api::*;
pub use crate::control::api::{Halt, Reply, Request, StateEvent, Verb};
use crate::driver::native::{self, Prepared, Stdio};
use crate::fleet::{Fleet, StopScope, UnitSpec};
use crate::logs::{Ctl, Logs, Stream};
use crate::runner::Runner;
use crate::supervise::{Event, Exit, Health, HealthPolicy, Policy, ReadyMode, State};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot};

mod adoption;
mod board;
mod bundles;
mod checks;
mod effects;
mod generations;
mod http_apps;
mod metrics;
mod publishing;
mod reload;
mod requests;
mod schedules;
mod serve;
mod sockets;
mod spawn;
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

pub enum Msg {
    Signal(i32),
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
    /// A connection waits on a down on-demand app's socket.
    Connection {
        idx: usize,
    },
    /// The app files, read and checked off the loop for `reread`, `update`, SIGHUP.
    Loaded(Box<reload::Loaded>),
    /// An on-demand app (in its `spawn`th run) had no connection for `idle_stop`.
    Idle {
        idx: usize,
        spawn: u64,
    },
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
    pid: Option<i32>,
    pgid: Option<i32>,
    pipes: Option<Pipes>,
    /// sd_notify socket (the reader task is aborted on drop).
    notify: Option<NotifyChannel>,
    /// s6-style readiness pipe: paddock keeps the write end to hand to each child.
    ready_w: Option<OwnedFd>,
    wasm: wasm_apps::WasmApp,
    /// Why the last bundle switch failed (see `bundles.rs`).
    switch_note: Option<String>,
    /// STATUS= from sd_notify.
    status_text: String,
    /// The app's cgroup (native apps, when the host gives paddock cgroups): created at the
    /// first start, kept across restarts, removed with the app.
    cgroup: Option<crate::cgroup::AppCgroup>,
    /// What its record in the state directory says (pid, ready), so it is rewritten only on a
    /// change (see `adoption.rs`).
    recorded: Option<(i32, bool)>,
    /// The start time of `recorded`'s process (clock ticks after boot), read once per process.
    recorded_ticks: u64,
    /// `[[listen]]`: its sockets and the tasks watching them (see `sockets.rs`).
    sockets: sockets::AppSockets,
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

/// What the fleet needs of an app's definition.
fn unit_spec(spec: &AppSpec) -> UnitSpec {
    UnitSpec {
        name: spec.name.as_str().into(),
        after: spec.after.clone(),
        requires: spec.requires.clone(),
        autostart: spec.autostart,
        essential: spec.essential,
        policy: policy_of(spec),
        group: spec.instance.as_ref().map(|i| i.group.as_str().into()),
        max_unavailable: spec.instance.as_ref().map_or(1, |i| i.max_unavailable),
        schedule: spec.schedule.clone(),
    }
}

pub struct Supervisor {
    opts: Options,
    /// The decisions: every app's machine, dependency and stop order, waiters, switches.
    fleet: Fleet<oneshot::Sender<Reply>>,
    /// The I/O side of each fleet slot (same index).
    apps: Vec<Option<App>>,
    pids: HashMap<i32, usize>,
    /// Running exec health checks: pid → (app, spawn generation).
    checks: HashMap<i32, (usize, u64)>,
    origin: Instant,
    /// When this paddock started.
    started: Instant,
    logs: Logs,
    devnull: OwnedFd,
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
    /// The descriptor holder (log pipes' read ends, the control listener, the apps' sockets),
    /// when it runs.
    pub fdstore: Option<crate::fdstore::Client>,
    /// The sockets given to the holder.
    held_sockets: sockets::HeldSockets,
    /// Loads of the app files under way (see `reload.rs`).
    reloads: reload::Reloads,
    /// STATE_DIR/run: a record of each running app process (see `adoption.rs`).
    records: crate::adopt::Journal,
    boot_id: String,
    /// paddock's own binary as it was started (what `reexec` executes; after a package upgrade
    /// it is the new version).
    exe: Option<PathBuf>,
    /// Set by `reexec`: the run ends without stopping anything.
    reexec: Option<PathBuf>,
    /// `reap` stopped at its batch: let the control socket and the other tasks run first.
    yield_soon: bool,
    /// Each app's generations and their watch (see `generations.rs`).
    gens: generations::Gens,
    /// The statuses the control thread answers from (see `board.rs`).
    pub board: Arc<crate::control::board::Board>,
    board_kept: board::Kept,
}

/// Exits handled per turn of the loop (and at most `REAP_TIME` of handling them). A
/// crash-looping app is restarted while its exit is handled, so with 50 of them a reap that ran
/// until no child was left never ended: the control socket, and SIGTERM, starved. The rest of
/// the exits are handled after a yield, behind the requests that came meanwhile. One exit (and
/// its restart) per turn keeps a turn near a millisecond: with 50 zero-backoff crash loops,
/// `status` p50 1.7 ms (2 per turn: 3.1 ms; 8: 13 ms).
const REAP_BATCH: usize = 1;
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
        // The descriptor holder, and what an earlier paddock left in it.
        (fdstore, held): (
            Option<crate::fdstore::Client>,
            &mut BTreeMap<String, OwnedFd>,
        ),
    ) -> std::io::Result<Supervisor> {
        let (state_dir, wasm_slots) = (opts.state_dir.clone(), opts.wasm_slots);
        crate::sandbox::set_scratch_dir(&state_dir.join("sandbox-root"));
        let mut s = Supervisor {
            opts,
            fleet: Fleet::new(std::process::id() as u64 ^ 0x5DEE_CE66_D1CE_F00D),
            apps: vec![],
            pids: HashMap::new(),
            checks: HashMap::new(),
            // Far enough in the past that an adopted process's start (see adoption.rs) is after
            // it: uptimes of adopted apps count from their real start.
            origin: Instant::now()
                .checked_sub(Duration::from_secs(10 * 366 * 86400))
                .unwrap_or_else(Instant::now),
            started: Instant::now(),
            logs,
            devnull: native::dev_null()?,
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
            fdstore,
            held_sockets: Default::default(),
            reloads: Default::default(),
            records: crate::adopt::Journal::new(&crate::adopt::run_dir(&state_dir)),
            boot_id: crate::adopt::boot_id(),
            exe: std::env::current_exe().ok(),
            reexec: None,
            yield_soon: false,
            gens: generations::Gens::new(&state_dir),
            board: Default::default(),
            board_kept: Default::default(),
        };
        // Sockets an earlier paddock left in the holder, before any app binds its own.
        sockets::adopt_held(
            &s.wasm.listeners,
            held,
            s.fdstore.as_mut(),
            &mut s.held_sockets,
        );
        s.publisher.use_registry(s.wasm.listeners.clone());
        for (_, spec) in specs {
            let spec = s.gens_at_load(spec);
            let name = spec.name.clone();
            let idx = s.add_app(spec);
            s.gens_watch(&name, idx, false);
        }
        s.sync_publish();
        s.sweep_sockets();
        s.sync_wall();
        Ok(s)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// A new app: its I/O side here, its decisions in the fleet (same slot).
    fn add_app(&mut self, spec: AppSpec) -> usize {
        let idx = self.new_app(&spec);
        let slot = self.fleet.add(unit_spec(&spec));
        debug_assert_eq!(slot, idx);
        self.board_restructured();
        self.http_load(idx);
        self.load_sockets(idx);
        idx
    }

    /// The I/O side of an app in the next free slot (the fleet's unit is added by the caller).
    fn new_app(&mut self, spec: &AppSpec) -> usize {
        let idx = self.fleet.capacity();
        let name: Arc<str> = spec.name.as_str().into();
        self.logs.send(Ctl::Configure {
            app: name.clone(),
            spec: spec.logs.clone(),
        });
        let (prepared, check) = self.prepare(spec, idx);
        let app = App {
            name,
            prepared,
            check,
            spec: Arc::new(spec.clone()),
            pending: None,
            pid: None,
            pgid: None,
            pipes: None,
            notify: None,
            ready_w: None,
            wasm: Default::default(),
            switch_note: None,
            status_text: String::new(),
            cgroup: None,
            recorded: None,
            recorded_ticks: 0,
            sockets: Default::default(),
        };
        self.apps.resize_with(idx, || None);
        self.apps.push(Some(app));
        idx
    }

    fn app(&self, idx: usize) -> Option<&App> {
        self.apps.get(idx).and_then(Option::as_ref)
    }

    /// After a burst of work that is over (the fleet's start, a board nobody reads any more,
    /// a thousand histories written): the heap's free pages and paddock's own code go back
    /// to the kernel (`util::trim_heap`, `util::unmap_idle_code`). The code stays mapped
    /// while an app is served per request: its first request after an idle would fault the
    /// request path back in.
    fn tidy_memory(&self) {
        crate::util::trim_heap();
        if !self.apps.iter().flatten().any(|a| a.spec.http.is_some()) {
            crate::util::unmap_idle_code();
        }
    }

    /// Starts every autostart app (each waits for its dependencies by itself).
    pub fn autostart(&mut self) {
        self.restore_schedules();
        self.sync_wall();
        let now = self.now();
        self.fleet.autostart(now);
        self.pump();
    }

    fn apply_pending(&mut self, idx: usize) {
        let Some(spec) = self.apps[idx].as_mut().and_then(|a| a.pending.take()) else {
            return;
        };
        self.board_touch(idx);
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
        self.logs.send(Ctl::Configure {
            app: app.name.clone(),
            spec: spec.logs.clone(),
        });
        self.fleet.reconfigure(idx, unit_spec(&spec));
        app.spec = Arc::new(spec);
        self.load_sockets(idx);
    }

    /// The app's log pipes (unless `with_pipes` is false: an adopted process keeps its own),
    /// notify socket and readiness pipe, created where missing.
    /// Stops every app in reverse dependency order, then ends `run`.
    pub fn begin_shutdown(&mut self) {
        let now = self.now();
        if self.fleet.begin_shutdown(now) {
            self.shutdown_begun();
        }
    }

    /// What paddock says when a shutdown begins (asked for, or an essential app failed).
    fn shutdown_begun(&mut self) {
        eprintln!(
            "paddock: shutting down: stopping {} apps",
            self.fleet.named().len()
        );
        self.parent.send("STOPPING=1\nSTATUS=stopping apps");
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => self.reap(),
            // SIGINT is also Ctrl-Alt-Del when paddock is PID 1; SIGPWR is a VM's power button.
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR => self.begin_shutdown(),
            libc::SIGHUP => self.begin_reload(reload::Then::Sighup),
            libc::SIGUSR2 => self.logs.send(Ctl::Reopen),
            libc::SIGUSR1 => match self.begin_reexec() {
                Ok(exe) => eprintln!("paddock: SIGUSR1: re-executing {}", exe.display()),
                Err(e) => eprintln!("paddock: SIGUSR1: cannot re-execute: {e}"),
            },
            _ => {}
        }
    }

    /// Runs until shutdown completes; returns paddock's exit code. `rx` brings signals,
    /// readiness notices and results of paddock's own tasks; `calls` the control requests.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut calls: mpsc::UnboundedReceiver<Call>,
    ) -> Outcome {
        self.sync_publish();
        self.reloads.refill();
        self.autostart();
        self.tell_parent_when_ready();
        let ready = self
            .fleet
            .units()
            .filter(|(_, u)| u.m.state() == State::Ready)
            .count();
        eprintln!(
            "paddock: {ready} of {} apps ready, {:.1} ms after start",
            self.fleet.named().len(),
            self.started.elapsed().as_secs_f64() * 1000.0
        );
        // What the start used and freed (the app files parsed, their map) goes back to the
        // kernel instead of staying in the heap: 1000 apps left ~2 MB free there. The code
        // that did it (parsing, spawning, cgroup set-up) leaves the page tables the same way.
        self.tidy_memory();
        let mut calls_open = true;
        let mut calls_in_a_row = 0u32;
        while !self.fleet.done() && self.reexec.is_none() {
            let wake = [
                self.fleet.poll_timeout(),
                self.gens_poll_timeout(),
                self.board_poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|t| self.origin + t);
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Control requests first: a crash loop's exits must not keep `status` waiting
            // behind them (each turn handles at most one message's batch of exits). Every 8th
            // request in a row, one message and the due timers go too: a flood of requests
            // cannot stop supervision.
            tokio::select! {
                biased;
                c = calls.recv(), if calls_open => match c {
                    Some(Call(req, reply)) => {
                        self.sync_wall();
                        self.handle(req, reply);
                        calls_in_a_row += 1;
                        if calls_in_a_row.is_multiple_of(8) {
                            if let Ok(m) = rx.try_recv() {
                                self.on_msg(m);
                            }
                            let now = self.now();
                            self.fleet.handle_timeout(now);
                            self.gens_timeout(now);
                        }
                    }
                    None => calls_open = false,
                },
                m = rx.recv() => match m {
                    None => break,
                    Some(m) => {
                        calls_in_a_row = 0;
                        self.sync_wall();
                        self.on_msg(m);
                    }
                },
                () = timer => {
                    self.sync_wall();
                    let now = self.now();
                    self.fleet.handle_timeout(now);
                    self.gens_timeout(now);
                }
            }
            self.pump();
            self.end_turn();
            if std::mem::take(&mut self.yield_soon) {
                // The I/O driver runs before this task again: accepted connections get their
                // requests in.
                tokio::task::yield_now().await;
            }
        }
        // Let the connection tasks woken by the last replies (the shutdown request's 202) write
        // them before the runtime goes away; with nothing left to stop, that is the same turn.
        tokio::task::yield_now().await;
        if let Some(exe) = self.reexec.take() {
            // Everything stays: apps, cgroups, records, the holder's descriptors, the Unix
            // socket files. Only what this process buffered is written out.
            crate::listen::keep_socket_files();
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
            code: self.fleet.exit_code(),
            halt: self.halt,
            reexec: None,
        }
    }

    /// READY=1 to paddock's own parent (systemd `Type=notify`) once every autostart app is READY
    /// or has settled (FATAL, EXITED): paddock has done what it can.
    fn tell_parent_when_ready(&mut self) {
        if self.ready_sent || self.fleet.shutting_down() || !self.parent.wanted() {
            return;
        }
        if self.fleet.settled() {
            self.ready_sent = true;
            let ready = self
                .fleet
                .units()
                .filter(|(_, u)| u.m.state() == State::Ready)
                .count();
            self.parent.send(&format!(
                "READY=1\nSTATUS={ready} of {} apps ready",
                self.fleet.named().len()
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

pub use crate::lock::instance_name as cgroup_name;

pub use serve::{check_config, forward_signals, raise_nofile, serve};
#[cfg(test)]
mod size_guard {
    /// What every supervised app costs in paddock's memory before anything runs: its
    /// definition, its fleet unit and its I/O side, each once per app (issue 17: 1000 apps in
    /// a few MiB). The rare sections (sandbox, wasm, bundle, health, schedule, identity, http)
    /// are boxed: an app that has none pays 8 bytes for each, not their size.
    #[test]
    fn per_app_structures_stay_small() {
        use std::mem::size_of;
        let sizes = [
            ("AppSpec", size_of::<crate::config::AppSpec>(), 700),
            ("fleet::Unit", size_of::<crate::fleet::Unit>(), 720),
            ("daemon::App", size_of::<super::App>(), 600),
        ];
        for (what, size, max) in sizes {
            assert!(
                size <= max,
                "{what} is {size} bytes (at most {max}): box what few apps use"
            );
        }
    }
}
