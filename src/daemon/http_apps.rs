//! The supervisor's side of per-request wasm apps (`[http]`, see `driver::wasm::http`).
//!
//! To the state machine such an app is a wasm app like the others: a "spawn" opens the gate
//! of its listeners to a new run of its module, a stop closes the gate and drains the requests
//! in flight, and a run of failed requests comes back as the run's exit (`Exit::Trap`), which
//! feeds the same restart policy (BACKOFF, FATAL). Between runs paddock keeps accepting: the
//! sockets are bound when the app is loaded and kept in the listener registry
//! (`crate::listen`) across restarts and updates; requests wait for the next run during a
//! restart and get 503 while the app is stopped, backing off or FATAL.
//!
//! An `update` that changes an http app's module (or any of its settings) while it serves does
//! not restart it: the new module gets a new run at once and the old run finishes its in-flight
//! requests (`http_update`).

use super::{App, Supervisor};
use crate::config::AppSpec;
use crate::control::api::HttpFigures;
use crate::driver::wasm::Stdio;
use crate::driver::wasm::http::{Run, Served};
use crate::listen::{Addr, Registry, Socket};
use crate::supervise::State;
use std::sync::{Arc, Mutex};

/// Per `[http]` app: kept from its load to its removal.
pub(super) struct HttpApp {
    served: Arc<Served>,
    listen: Vec<Addr>,
    sockets: Vec<Arc<Socket>>,
    run: Option<Arc<Run>>,
    reuse: u32,
    registry: Arc<Mutex<Registry>>,
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.served.shutdown();
        self.sockets.clear();
        if let Ok(mut r) = self.registry.lock() {
            r.sweep();
        }
    }
}

impl HttpApp {
    pub(super) fn run_generation(&self) -> Option<u64> {
        self.run.as_ref().map(|r| r.generation)
    }

    /// The run's exit was reported.
    pub(super) fn end_run(&mut self) {
        self.run = None;
    }
}

impl Supervisor {
    /// An app was loaded (at start or by `update`): an `[http]` app's sockets are bound now.
    /// A failure is reported and tried again at each start.
    pub(super) fn http_load(&mut self, idx: usize) {
        if let Err(e) = self.http_sockets(idx) {
            let name = self.apps[idx]
                .as_ref()
                .map_or("?".into(), |a| a.name.clone());
            eprintln!("paddock: {name}: {e}");
        }
    }

    /// Makes sure the app has its `HttpApp` and accepts on the addresses of its spec.
    fn http_sockets(&mut self, idx: usize) -> Result<(), String> {
        let n = self.fleet.named().len();
        let Some(app) = self.apps[idx].as_ref() else {
            return Ok(());
        };
        let Some(conf) = app.spec.http.as_ref() else {
            return Ok(());
        };
        let listen = conf.listen.clone();
        let reuse = conf.reuse;
        let starting =
            app.spec.autostart && self.fleet.unit(idx).is_some_and(|u| u.m.state().is_down());
        let name = app.name.clone();
        let registry = self.wasm.listeners.clone();
        if app.wasm.http.is_none() {
            let served = self.wasm.host(n)?.served(name, idx)?;
            if let Some(app) = self.apps[idx].as_mut() {
                app.wasm.http = Some(Box::new(HttpApp {
                    served,
                    listen: vec![],
                    sockets: vec![],
                    run: None,
                    reuse,
                    registry: registry.clone(),
                }));
            }
        }
        let Some(h) = self.apps[idx].as_mut().and_then(|a| a.wasm.http.as_mut()) else {
            return Ok(());
        };
        h.reuse = reuse;
        if h.listen == listen && h.sockets.len() == listen.len() {
            return Ok(());
        }
        let sockets = registry
            .lock()
            .map_err(|_| "internal: listener registry poisoned".to_string())?
            .acquire(&listen)?;
        if starting {
            // About to be started (with paddock, or by a restarted paddock that took the
            // sockets back from the holder, with requests in their backlog): requests wait for
            // its first run instead of a 503. Before the accept loops start.
            h.served.close("the app is starting".into(), true);
        }
        h.served.listen(&sockets)?;
        h.sockets = sockets;
        h.listen = listen;
        self.sweep_sockets();
        Ok(())
    }

    /// The spawn of an `[http]` app: its sockets, then a new run of `program` behind them.
    pub(super) fn spawn_http(
        &mut self,
        idx: usize,
        program: Arc<crate::driver::wasm::Program>,
        generation: u64,
        stdio: Stdio,
    ) -> Result<i32, String> {
        self.http_sockets(idx)?;
        let Some(h) = self.apps[idx].as_mut().and_then(|a| a.wasm.http.as_mut()) else {
            return Err("internal: an http app without its listeners".into());
        };
        let run = h.served.open(&program, generation, stdio)?;
        if let Some(old) = h.run.replace(run) {
            h.served.retire(&old);
        }
        Ok(0)
    }

    /// `Signal` (drain) and `KillGroup` (interrupt) for an http app. False for other apps.
    pub(super) fn http_stop(&mut self, idx: usize, kill: bool) -> bool {
        let Some(h) = self.apps[idx].as_ref().and_then(|a| a.wasm.http.as_ref()) else {
            return false;
        };
        if let Some(run) = &h.run {
            h.served.stop(run, kill);
        }
        true
    }

    /// The app changed state: requests wait during a restart, get 503 while it is down.
    pub(super) fn http_state_changed(&mut self, idx: usize) {
        let (Some(app), Some(u)) = (self.app(idx), self.fleet.unit(idx)) else {
            return;
        };
        let Some(h) = &app.wasm.http else {
            return;
        };
        let last =
            u.m.last_exit()
                .map(|e| format!(" (last: {})", e.describe()))
                .unwrap_or_default();
        match u.m.state() {
            State::Backoff => h.served.close(
                format!("the app is backing off before its next start{last}"),
                false,
            ),
            State::Fatal => h.served.close(
                format!("the app is FATAL: its restarts failed{last}; `paddock start` it"),
                false,
            ),
            State::Exited | State::Stopped => h
                .served
                .close("the app is stopped; `paddock start` it".into(), false),
            State::Starting | State::Stopping => {
                h.served.close("the app is restarting".into(), true)
            }
            State::Running | State::Ready => {}
        }
    }

    /// `update` with a new spec for a serving `[http]` app: a new run of the new module serves
    /// the next requests at once, the old run finishes its own. False when the app is not
    /// serving, or the new spec cannot be served this way (the caller restarts it).
    pub(super) fn http_update(&mut self, idx: usize, spec: &AppSpec) -> bool {
        let n = self.fleet.named().len();
        let (Some(app), Some(u)) = (self.app(idx), self.fleet.unit(idx)) else {
            return false;
        };
        let serving = app.wasm.http.as_ref().is_some_and(|h| h.run.is_some())
            && matches!(u.m.state(), State::Running | State::Ready)
            && !u.m.waiting();
        if !serving || spec.http.is_none() || app.spec.http.is_none() {
            return false;
        }
        let Ok(host) = self.wasm.host(n) else {
            return false;
        };
        let program = match host.program(spec) {
            Ok(p) if p.is_http() => p,
            _ => return false,
        };
        if let Some(app) = self.apps[idx].as_mut() {
            app.pending = Some(Box::new(spec.clone()));
        }
        self.apply_pending(idx);
        if let Err(e) = self.http_sockets(idx) {
            eprintln!("paddock: {}: update: {e}", spec.name);
            return false;
        }
        self.wasm.generation += 1;
        let generation = self.wasm.generation;
        let stdio = self.wasm_stdio(idx);
        let Some(app) = self.apps[idx].as_mut() else {
            return false;
        };
        app.wasm.program = Some(Ok(program.clone()));
        let Some(h) = app.wasm.http.as_mut() else {
            return false;
        };
        match h.served.open(&program, generation, stdio) {
            Ok(run) => {
                let in_flight = h.served.in_flight();
                if let Some(old) = h.run.replace(run) {
                    h.served.retire(&old);
                }
                eprintln!(
                    "paddock: {}: updated in place: new requests go to {}; {in_flight} in flight finish on the previous module",
                    app.name,
                    program.module.display()
                );
                true
            }
            Err(e) => {
                eprintln!("paddock: {}: update: {e}", app.name);
                false
            }
        }
    }

    /// `[health] kind = "wasm"` for a wasm app: the module's exported `health` function, called
    /// in a fresh instance; `None` when the app has no module loaded.
    pub(super) fn wasm_health_call(
        &mut self,
        idx: usize,
        budget: std::time::Duration,
    ) -> Option<impl Future<Output = Result<u32, String>> + Send + 'static + use<>> {
        let n = self.fleet.named().len();
        let program = self.apps[idx]
            .as_ref()?
            .wasm
            .program
            .as_ref()?
            .as_ref()
            .ok()?
            .clone();
        let host = self.wasm.host(n).ok()?;
        Some(host.call_health(&program, budget))
    }
}

/// The figures of an `[http]` app for `status`.
pub(super) fn figures(app: &App) -> Option<HttpFigures> {
    app.wasm.http.as_ref().map(|h| h.served.figures(h.reuse))
}

/// `figures` for another thread, whenever it asks (the status board): requests are served
/// without a turn of the supervisor's loop.
pub(super) fn live_figures(app: &App) -> Option<impl Fn() -> HttpFigures + Send + Sync + 'static> {
    let (served, reuse) = app
        .wasm
        .http
        .as_ref()
        .map(|h| (h.served.clone(), h.reuse))?;
    Some(move || served.figures(reuse))
}

/// A `/metrics` series: name, help, value.
type Counter = (&'static str, &'static str, fn(&HttpFigures) -> u64);

/// The `/metrics` lines of the `[http]` apps.
pub(super) fn metrics(s: &mut String, apps: &[&App]) {
    use std::fmt::Write;
    let figs: Vec<(&str, HttpFigures)> = apps
        .iter()
        .filter_map(|a| figures(a).map(|f| (&*a.name, f)))
        .collect();
    if figs.is_empty() {
        return;
    }
    let counters: [Counter; 5] = [
        (
            "requests_total",
            "Requests received by a per-request wasm app.",
            |f| f.requests,
        ),
        (
            "traps_total",
            "Requests whose instance trapped (answered 500).",
            |f| f.traps,
        ),
        (
            "timeouts_total",
            "Requests interrupted at [http] request_timeout (answered 504).",
            |f| f.timeouts,
        ),
        (
            "refused_total",
            "Requests answered 503 by paddock (stopped, backing off, FATAL, busy).",
            |f| f.refused,
        ),
        (
            "memory_high_bytes",
            "Most linear memory and tables one request's instance used.",
            |f| f.memory_high_bytes,
        ),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            s,
            "# HELP paddock_http_{name} {help}\n# TYPE paddock_http_{name} {kind}"
        );
        for (app, f) in &figs {
            let _ = writeln!(s, "paddock_http_{name}{{app=\"{app}\"}} {}", get(f));
        }
    }
    let _ = writeln!(
        s,
        "# HELP paddock_http_in_flight Requests being served now.\n# TYPE paddock_http_in_flight gauge"
    );
    for (app, f) in &figs {
        let _ = writeln!(s, "paddock_http_in_flight{{app=\"{app}\"}} {}", f.in_flight);
    }
    let _ = writeln!(
        s,
        "# HELP paddock_http_instances Wasm instances alive now (0: scaled to zero).\n# TYPE paddock_http_instances gauge"
    );
    for (app, f) in &figs {
        let _ = writeln!(s, "paddock_http_instances{{app=\"{app}\"}} {}", f.instances);
    }
    let _ = writeln!(
        s,
        "# HELP paddock_http_latency_seconds Request latency to the response head (log buckets, ±4.5%).\n# TYPE paddock_http_latency_seconds summary"
    );
    for (app, f) in &figs {
        for (q, v) in [("0.5", f.latency_p50_ms), ("0.99", f.latency_p99_ms)] {
            if let Some(ms) = v {
                let _ = writeln!(
                    s,
                    "paddock_http_latency_seconds{{app=\"{app}\",quantile=\"{q}\"}} {:.6}",
                    ms / 1000.0
                );
            }
        }
        let _ = writeln!(
            s,
            "paddock_http_latency_seconds_count{{app=\"{app}\"}} {}",
            f.ok
        );
    }
    let _ = writeln!(
        s,
        "# HELP paddock_http_instantiation_seconds Time to instantiate a request's instance (log buckets).\n# TYPE paddock_http_instantiation_seconds summary"
    );
    for (app, f) in &figs {
        for (q, v) in [
            ("0.5", f.instantiation_p50_us),
            ("0.99", f.instantiation_p99_us),
        ] {
            if let Some(us) = v {
                let _ = writeln!(
                    s,
                    "paddock_http_instantiation_seconds{{app=\"{app}\",quantile=\"{q}\"}} {:.9}",
                    us / 1e6
                );
            }
        }
    }
}
