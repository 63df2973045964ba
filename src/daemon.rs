//! `paddock serve`: the I/O loop around the pure state machines.
//!
//! One task owns all supervisor state and is woken only by messages (signals forwarded by the
//! signal thread, control requests) and by the earliest armed timer. It reaps every exit status
//! itself (`waitpid(-1)` on SIGCHLD), so exits of apps, of orphans reparented to it and of failed
//! spawns are all told apart by the pid table, which only holds live children it started.

use crate::config::{self, AppSpec, StdoutMode};
use crate::control::api::*;
use crate::driver::native::{self, Prepared, Stdio};
use crate::logs::{Ctl, Logs, Stream};
use crate::supervise::{Action, Event, Exit, Machine, Policy, State, TimerKind};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod bundles;

#[derive(Clone, Debug)]
pub struct Options {
    pub config_dirs: Vec<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
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
    Status(Vec<String>),
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
    Shutdown,
    ReopenLogs,
    Metrics,
    Version,
    /// Checks that an app exists and writes its logs to files.
    LogTarget(String),
}

pub enum Msg {
    Signal(i32),
    Request(Request, oneshot::Sender<Reply>),
}

struct Pipes {
    out_w: OwnedFd,
    err_w: Option<OwnedFd>,
}

struct App {
    name: Arc<str>,
    spec: Arc<AppSpec>,
    prepared: Result<Arc<Prepared>, String>,
    /// A new spec from `update`, applied at the next spawn (or at once when the app is down).
    pending: Option<AppSpec>,
    m: Machine,
    pid: Option<i32>,
    pgid: Option<i32>,
    pipes: Option<Pipes>,
    remove_when_down: bool,
    /// Bundle switch on `update` (see `bundles.rs`): the instance starting with the new bundle,
    /// the instance it replaces, and why the last switch failed.
    successor: Option<usize>,
    predecessor: Option<usize>,
    switch_note: Option<String>,
}

fn policy_of(spec: &AppSpec) -> Policy {
    Policy {
        restart: spec.restart.clone(),
        stop_signal: spec.stop_signal,
        stop_timeout: spec.stop_timeout,
    }
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

pub struct Supervisor {
    opts: Options,
    apps: Vec<Option<App>>,
    by_name: BTreeMap<String, usize>,
    pids: HashMap<i32, usize>,
    timers: BTreeSet<(Instant, usize, TimerKind)>,
    timer_of: HashMap<(usize, TimerKind), Instant>,
    origin: Instant,
    logs: Logs,
    devnull: OwnedFd,
    waiters: Vec<Waiter>,
    shutting_down: bool,
    done: bool,
    seed: u64,
    base_env: native::BaseEnv,
    bundle_cache: crate::bundle::verify::Cache,
}

impl Supervisor {
    pub fn new(
        opts: Options,
        specs: BTreeMap<String, AppSpec>,
        logs: Logs,
    ) -> std::io::Result<Supervisor> {
        let mut s = Supervisor {
            opts,
            apps: vec![],
            by_name: BTreeMap::new(),
            pids: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            origin: Instant::now(),
            logs,
            devnull: native::dev_null()?,
            waiters: vec![],
            shutting_down: false,
            done: false,
            seed: std::process::id() as u64 ^ 0x5DEE_CE66_D1CE_F00D,
            base_env: native::BaseEnv::from_process(),
            bundle_cache: Default::default(),
        };
        for (_, spec) in specs {
            s.add_app(spec);
        }
        Ok(s)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
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
        let app = App {
            name,
            prepared: Prepared::new(&spec, &self.base_env).map(Arc::new),
            m: Machine::new(policy_of(&spec), self.seed),
            spec: Arc::new(spec),
            pending: None,
            pid: None,
            pgid: None,
            pipes: None,
            remove_when_down: false,
            successor: None,
            predecessor: None,
            switch_note: None,
        };
        let idx = self.apps.len();
        self.by_name.insert(app.spec.name.clone(), idx);
        self.apps.push(Some(app));
        idx
    }

    /// Starts every autostart app.
    pub fn autostart(&mut self) {
        let idxs: Vec<usize> = self.by_name.values().copied().collect();
        for idx in idxs {
            if self.apps[idx].as_ref().is_some_and(|a| a.spec.autostart) {
                self.feed(idx, Event::Start);
            }
        }
    }

    fn apply_pending(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        let Some(spec) = app.pending.take() else {
            return;
        };
        if spec.logs.stdout != app.spec.logs.stdout || spec.logs.combine != app.spec.logs.combine {
            app.pipes = None; // recreated for the new mode at the next spawn
        }
        app.prepared = Prepared::new(&spec, &self.base_env).map(Arc::new);
        app.m.policy = policy_of(&spec);
        self.logs.send(Ctl::Configure {
            app: app.name.clone(),
            spec: spec.logs.clone(),
        });
        app.spec = Arc::new(spec);
    }

    fn ensure_pipes(&mut self, idx: usize) -> std::io::Result<()> {
        let Some(app) = self.apps[idx].as_mut() else {
            return Ok(());
        };
        if app.pipes.is_some() || app.spec.logs.stdout == StdoutMode::Inherit {
            return Ok(());
        }
        let (out_r, out_w) = native::output_pipe()?;
        self.logs
            .spawn_reader(out_r, app.name.clone(), Stream::Out)?;
        let err_w = if app.spec.logs.combine {
            None
        } else {
            let (err_r, err_w) = native::output_pipe()?;
            self.logs
                .spawn_reader(err_r, app.name.clone(), Stream::Err)?;
            Some(err_w)
        };
        app.pipes = Some(Pipes { out_w, err_w });
        Ok(())
    }

    fn do_spawn(&mut self, idx: usize) -> Result<i32, String> {
        self.apply_pending(idx);
        self.ensure_pipes(idx)
            .map_err(|e| format!("creating output pipes: {}", crate::util::io_reason(&e)))?;
        let devnull = self.devnull.as_raw_fd();
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let prepared = app.prepared.clone()?;
        let io = match &app.pipes {
            Some(p) => {
                let out = p.out_w.as_raw_fd();
                Stdio {
                    stdin: Some(devnull),
                    stdout: Some(out),
                    stderr: Some(p.err_w.as_ref().map_or(out, |e| e.as_raw_fd())),
                }
            }
            None => Stdio {
                stdin: Some(devnull),
                stdout: None,
                stderr: None,
            },
        };
        let pid = native::spawn(&prepared, &io).map_err(|e| e.to_string())?;
        app.pid = Some(pid);
        app.pgid = Some(pid);
        self.pids.insert(pid, idx);
        Ok(pid)
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
        let mut queue = VecDeque::from([ev]);
        let mut acts = Vec::with_capacity(4);
        while let Some(ev) = queue.pop_front() {
            let now = self.now();
            let Some(app) = self.apps[idx].as_mut() else {
                return;
            };
            acts.clear();
            app.m.handle(ev, now, &mut acts);
            for a in acts.drain(..) {
                match a {
                    Action::Spawn => match self
                        .check_bundle(idx)
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
                    Action::Signal(sig) => {
                        if let Some(pg) = self.apps[idx].as_ref().and_then(|a| a.pgid) {
                            // Before its setsid the child has no group yet: signal it alone.
                            if unsafe { libc::kill(-pg, sig) } != 0 {
                                unsafe { libc::kill(pg, sig) };
                            }
                        }
                    }
                    Action::KillGroup => {
                        if let Some(app) = self.apps[idx].as_mut() {
                            if let Some(pg) = app.pgid {
                                unsafe { libc::kill(-pg, libc::SIGKILL) };
                                if app.pid.is_none() {
                                    app.pgid = None; // main process gone: this was the final sweep
                                }
                            }
                        }
                    }
                    Action::Arm(k, d) => self.arm(idx, k, d),
                    Action::Cancel(k) => self.cancel(idx, k),
                }
            }
        }
        self.after_change(idx);
    }

    fn after_change(&mut self, idx: usize) {
        self.switch_progress(idx);
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        let (down, remove) = (app.m.state().is_down(), app.remove_when_down);
        if down && app.pending.is_some() {
            self.apply_pending(idx);
        }
        if down && remove {
            self.remove_app(idx);
        }
        self.check_waiters();
        if self.shutting_down && self.apps.iter().flatten().all(|a| !a.m.alive()) {
            self.done = true;
        }
    }

    fn remove_app(&mut self, idx: usize) {
        if let Some(app) = self.apps[idx].take() {
            for k in [
                TimerKind::Backoff,
                TimerKind::StopTimeout,
                TimerKind::Stable,
            ] {
                self.cancel(idx, k);
            }
            // `update` may have added a new app of the same name meanwhile: leave that one be.
            if self.by_name.get(&*app.name) == Some(&idx) {
                self.by_name.remove(&*app.name);
                self.logs.send(Ctl::Remove {
                    app: app.name.clone(),
                });
            }
            // Dropping the pipes closes paddock's write ends: the readers end at EOF.
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let exit = if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            self.exited(pid, exit);
        }
    }

    /// A child that paddock started is gone. Unknown pids (orphans reparented to paddock, failed
    /// spawns already accounted for) are ignored.
    fn exited(&mut self, pid: i32, exit: Exit) {
        let Some(idx) = self.pids.remove(&pid) else {
            return;
        };
        if let Some(app) = self.apps[idx].as_mut() {
            app.pid = None;
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
            self.feed(idx, Event::Timer(kind));
        }
    }

    fn status_of(&self, app: &App) -> AppStatus {
        let now = self.now();
        let m = &app.m;
        let last_exit = m.last_exit().map(|e| ExitInfo {
            code: if let Exit::Code(c) = e {
                Some(*c)
            } else {
                None
            },
            signal: if let Exit::Signal(s) = e {
                Some(*s)
            } else {
                None
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
            _ => self.switch_message(app).unwrap_or_default(),
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
            isolation: app.spec.isolation.as_str().into(),
            autostart: app.spec.autostart,
            command: app.spec.command.clone(),
        }
    }

    /// App indexes for a list of names; `all` means every app. An empty list is an error (a
    /// stray empty argument must not mean "everything").
    fn resolve(&self, names: &[String]) -> Result<Vec<usize>, Reply> {
        if names.is_empty() {
            return Err(Reply::error(400, "name at least one app, or `all`"));
        }
        if names.iter().any(|n| n == "all") {
            return Ok(self.by_name.values().copied().collect());
        }
        let mut out = vec![];
        for n in names {
            match self.by_name.get(n) {
                Some(&i) => out.push(i),
                None => {
                    return Err(Reply::error(
                        404,
                        format!("no such app: {n} (see `paddock status`)"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn check_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let apps = &self.apps;
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &mut self.waiters[i];
            for it in w.items.iter_mut().filter(|it| it.result.is_none()) {
                let Some(app) = apps[it.idx].as_ref() else {
                    it.result = Some(ActionResult {
                        app: it.name.clone(),
                        ok: false,
                        state: "REMOVED".into(),
                        message: "removed".into(),
                    });
                    continue;
                };
                let st = app.m.state();
                let why = || app.m.last_exit().map(|e| e.describe()).unwrap_or_default();
                it.result = match it.goal {
                    Goal::Up if st == State::Running && app.m.spawns() > it.min_spawns => {
                        Some(ActionResult {
                            app: it.name.clone(),
                            ok: true,
                            state: st.as_str().into(),
                            message: format!("started (pid {})", app.pid.unwrap_or(0)),
                        })
                    }
                    Goal::Up
                        if matches!(
                            st,
                            State::Backoff | State::Exited | State::Fatal | State::Stopped
                        ) =>
                    {
                        let msg = match st {
                            State::Backoff => format!("{}; retrying", why()),
                            State::Fatal => format!("{}; gave up (FATAL)", why()),
                            State::Exited => format!("exited at once: {}", why()),
                            _ => "stopped before it was up".into(),
                        };
                        Some(ActionResult {
                            app: it.name.clone(),
                            ok: false,
                            state: st.as_str().into(),
                            message: msg,
                        })
                    }
                    Goal::Down if st.is_down() => Some(ActionResult {
                        app: it.name.clone(),
                        ok: true,
                        state: st.as_str().into(),
                        message: "stopped".into(),
                    }),
                    _ => None,
                };
            }
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

    fn act(&mut self, names: Vec<String>, verb: Verb, wait: bool, reply: oneshot::Sender<Reply>) {
        if self.shutting_down && verb != Verb::Stop {
            let _ = reply.send(Reply::error(409, "paddock is shutting down"));
            return;
        }
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
                Verb::Start if st == State::Running => {
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
                        self.feed(idx, Event::Stop);
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

    fn reread(
        &self,
    ) -> (
        Result<BTreeMap<String, AppSpec>, Vec<String>>,
        UpdateResponse,
    ) {
        match config::load_dirs(&self.opts.config_dirs) {
            Err(errs) => {
                let errors: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                (
                    Err(errors.clone()),
                    UpdateResponse {
                        ok: false,
                        applied: false,
                        added: vec![],
                        changed: vec![],
                        removed: vec![],
                        errors,
                    },
                )
            }
            Ok(new) => {
                let old: BTreeMap<String, &AppSpec> = self
                    .apps
                    .iter()
                    .flatten()
                    .filter(|a| !a.remove_when_down)
                    .map(|a| (a.spec.name.clone(), a.pending.as_ref().unwrap_or(&a.spec)))
                    .collect();
                let d = config::diff(&old, &new);
                let r = UpdateResponse {
                    ok: true,
                    applied: false,
                    added: d.added,
                    changed: d.changed,
                    removed: d.removed,
                    errors: vec![],
                };
                (Ok(new), r)
            }
        }
    }

    fn update(&mut self) -> Reply {
        if self.shutting_down {
            return Reply::error(409, "paddock is shutting down");
        }
        let (new, mut r) = self.reread();
        let Ok(mut new) = new else {
            return Reply::json(422, &r);
        };
        for name in &r.removed {
            if let Some(&idx) = self.by_name.get(name) {
                if let Some(app) = self.apps[idx].as_mut() {
                    app.remove_when_down = true;
                }
                self.feed(idx, Event::Stop);
            }
        }
        for name in &r.changed {
            let (Some(&idx), Some(spec)) = (self.by_name.get(name), new.remove(name)) else {
                continue;
            };
            // A new bundle for a running app: start it next to the old one (see bundles.rs).
            self.cancel_successor(idx);
            if self.wants_switch(idx, &spec) {
                self.begin_switch(idx, spec);
                continue;
            }
            let Some(app) = self.apps[idx].as_mut() else {
                continue;
            };
            app.pending = Some(spec);
            let st = app.m.state();
            // An app being stopped stays stopped: its new spec applies when it is down.
            if st.is_up() {
                self.feed(idx, Event::Restart);
            } else {
                self.apply_pending(idx);
            }
        }
        for name in &r.added {
            if let Some(spec) = new.remove(name) {
                let autostart = spec.autostart;
                let idx = self.add_app(spec);
                if autostart {
                    self.feed(idx, Event::Start);
                }
            }
        }
        r.applied = true;
        Reply::json(200, &r)
    }

    fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(256 + self.by_name.len() * 400);
        let apps: Vec<&App> = self
            .by_name
            .values()
            .filter_map(|&i| self.apps[i].as_ref())
            .collect();
        let now = self.now();
        s.push_str(
            "# HELP paddock_apps Number of apps paddock supervises.\n# TYPE paddock_apps gauge\n",
        );
        let _ = writeln!(s, "paddock_apps {}", apps.len());
        s.push_str("# HELP paddock_app_state Current state of each app (1 for the state it is in).\n# TYPE paddock_app_state gauge\n");
        for a in &apps {
            let _ = writeln!(
                s,
                "paddock_app_state{{app=\"{}\",state=\"{}\"}} 1",
                a.name,
                a.m.state().as_str()
            );
        }
        s.push_str("# HELP paddock_app_up 1 if the app's process is running.\n# TYPE paddock_app_up gauge\n");
        for a in &apps {
            let _ = writeln!(
                s,
                "paddock_app_up{{app=\"{}\"}} {}",
                a.name,
                u8::from(a.m.alive())
            );
        }
        s.push_str("# HELP paddock_app_restarts_total Automatic restarts of each app.\n# TYPE paddock_app_restarts_total counter\n");
        for a in &apps {
            let _ = writeln!(
                s,
                "paddock_app_restarts_total{{app=\"{}\"}} {}",
                a.name,
                a.m.restarts()
            );
        }
        s.push_str("# HELP paddock_app_uptime_seconds Seconds since the app's process started (0 when not running).\n# TYPE paddock_app_uptime_seconds gauge\n");
        for a in &apps {
            let _ = writeln!(
                s,
                "paddock_app_uptime_seconds{{app=\"{}\"}} {:.3}",
                a.name,
                a.m.uptime(now).unwrap_or_default().as_secs_f64()
            );
        }
        s.push_str("# HELP paddock_app_last_exit_code Exit code of the last exit (128+N for death by signal N, -1 for a failed spawn).\n# TYPE paddock_app_last_exit_code gauge\n");
        for a in &apps {
            if let Some(e) = a.m.last_exit() {
                let code = match e {
                    Exit::Code(c) => *c,
                    Exit::Signal(sg) => 128 + sg,
                    Exit::SpawnFailed(_) => -1,
                };
                let _ = writeln!(s, "paddock_app_last_exit_code{{app=\"{}\"}} {code}", a.name);
            }
        }
        s
    }

    fn handle(&mut self, req: Request, reply: oneshot::Sender<Reply>) {
        let r = match req {
            Request::Status(names) => match if names.is_empty() {
                Ok(self.by_name.values().copied().collect()) // plain `status`: every app
            } else {
                self.resolve(&names)
            } {
                Ok(idxs) => {
                    let apps = idxs
                        .iter()
                        .filter_map(|&i| self.apps[i].as_ref())
                        .map(|a| self.status_of(a))
                        .collect();
                    Reply::json(200, &StatusList { apps })
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
            Request::Shutdown => {
                self.begin_shutdown();
                Reply::json(
                    202,
                    &serde_json::json!({"ok": true, "message": "shutting down"}),
                )
            }
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
                    None => {
                        Reply::error(404, format!("no such app: {name} (see `paddock status`)"))
                    }
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

    pub fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        eprintln!(
            "paddock: shutting down: stopping {} apps",
            self.by_name.len()
        );
        self.shutting_down = true;
        let idxs: Vec<usize> = self.by_name.values().copied().collect();
        for idx in idxs {
            self.feed(idx, Event::Stop);
        }
        if self.apps.iter().flatten().all(|a| !a.m.alive()) {
            self.done = true;
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGINT => self.begin_shutdown(),
            libc::SIGHUP => {
                let r = self.update();
                eprintln!("paddock: SIGHUP: update: {}", r.body.trim());
            }
            libc::SIGUSR2 => self.logs.send(Ctl::Reopen),
            _ => {}
        }
    }

    /// Runs until shutdown completes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.autostart();
        let running = self
            .apps
            .iter()
            .flatten()
            .filter(|a| a.m.state() == State::Running)
            .count();
        eprintln!(
            "paddock: {running} of {} apps running, {:.1} ms after start",
            self.by_name.len(),
            self.origin.elapsed().as_secs_f64() * 1000.0
        );
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
                Some(Msg::Signal(sig)) => self.on_signal(sig),
                Some(Msg::Request(req, reply)) => self.handle(req, reply),
            }
        }
        self.logs.flush().await;
        let _ = std::fs::remove_file(&self.opts.socket);
    }
}

/// Starts the signal thread: every signal paddock handles becomes a message.
pub fn forward_signals(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR2,
    ])?;
    std::thread::Builder::new()
        .name("paddock-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Msg::Signal(sig)).is_err() {
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
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            native::set_child_nofile(rl.rlim_cur, rl.rlim_max);
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// `paddock serve`.
pub fn serve(opts: Options) -> Result<(), String> {
    let specs = config::load_dirs(&opts.config_dirs).map_err(|errs| {
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
    if std::process::id() != 1 {
        // Orphans of our apps (double-forking daemons) are reparented to us, not to init.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // One thread runs the supervisor, the control socket and the pipe readers: the supervisor is
    // one task that owns all state, and a single thread keeps its memory in one malloc arena.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        forward_signals(tx.clone()).map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let logs = Logs::start(opts.state_dir.join("logs")).map_err(|e| {
            format!(
                "cannot create {}: {}",
                opts.state_dir.join("logs").display(),
                crate::util::io_reason(&e)
            )
        })?;
        let listener = crate::control::server::bind(&opts.socket)?;
        let sup = Supervisor::new(opts.clone(), specs, logs.clone())
            .map_err(|e| format!("cannot start: {e}"))?;
        eprintln!(
            "paddock {}: supervising {} apps from {}; control socket {}",
            env!("CARGO_PKG_VERSION"),
            sup.by_name.len(),
            opts.config_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            opts.socket.display()
        );
        tokio::spawn(crate::control::server::serve(listener, tx.clone(), logs));
        sup.run(rx).await;
        eprintln!("paddock: all apps stopped; exiting");
        Ok(())
    })
}
