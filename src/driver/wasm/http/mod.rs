//! Per-request wasm apps: a component of the `wasi:http/proxy` world served by paddock's own
//! HTTP/1.1 server (hyper), as `wasmtime serve` does: the component is compiled and linked once
//! (a `ProxyPre`), and every request gets a fresh `Store` and instance from the pooling
//! allocator, dropped when the response is done. With no request in flight the app holds no
//! instance at all, only its compiled code (scale to zero).
//!
//! - [`Served`]: one per app, kept across restarts and updates: its accept loops on the app's
//!   sockets (`crate::listen`), its gate, its figures.
//! - [`Run`]: one module serving, between a "spawn" and a stop (the supervisor's process
//!   lifetime). A stop closes the gate to it and drains its in-flight requests; an `update` opens
//!   the gate to a new run while the old one drains, so no connection is refused.
//! - Failures: a trap is a 500, a request past `request_timeout` is interrupted (epoch
//!   deadline) and is a 504; both go to the app's stderr log with the request id. `failures`
//!   failed requests in a row within `failure_window` end the run with `Exit::Trap`, which the
//!   supervisor's state machine turns into BACKOFF (requests get 503 meanwhile) and FATAL.
//! - Reuse (`[http] reuse = N`, off by default): an instance serves up to N requests. It saves
//!   an instantiation per request at the cost of isolation: a request sees what the previous
//!   ones left in the instance's memory (globals, caches, secrets), a trap or timeout still
//!   drops the instance, and up to `max_concurrent` instances stay alive while idle.
//!
//! Layout: this file holds the app ([`Served`]) and its runs ([`Run`]), with the gate between
//! them; `request` holds the accept loops and a request's way through an instance; `stats` the
//! figures (counters and latency histograms).

mod request;
mod stats;

use super::store::{Guest, Shared};
use super::{Inner, P2Wasi, Program, Stdio};
use crate::config::http::HttpSpec;
use crate::listen::Socket;
use crate::supervise::Exit;
use request::accept_loop;
pub use stats::{Histogram, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Notify, Semaphore, watch};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

/// The `wasi:http` hooks of a guest: outgoing requests are refused (paddock gives a guest no
/// network it was not granted; an allow list for outgoing HTTP is future work).
#[derive(Default)]
pub struct Hooks;

impl wasmtime_wasi_http::WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

#[derive(Clone)]
enum Gate {
    Open(Arc<Run>),
    /// Between runs (a restart, a stop that may be followed by a start): requests wait for
    /// the gate to open, up to their timeout.
    Wait(String),
    /// Stopped, backing off, FATAL: 503 at once.
    Closed(String),
}

/// One app served per request.
pub struct Served {
    pub name: Arc<str>,
    app: usize,
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    gate: watch::Sender<Gate>,
    pub stats: Stats,
    next_id: AtomicU64,
    /// Accept loops: (socket, task).
    accept: Mutex<Vec<(Arc<Socket>, tokio::task::AbortHandle)>>,
}

/// A module serving the app's requests (a "process" for the state machine).
pub struct Run {
    pub generation: u64,
    program: Arc<Program>,
    pre: ProxyPre<Guest<P2Wasi>>,
    conf: HttpSpec,
    stdio: Stdio,
    /// The guest's stdout and stderr, shared by the run's instances (one writer task each).
    out: Option<Arc<wasmtime_wasi::cli::AsyncStdoutStream>>,
    err: Option<Arc<wasmtime_wasi::cli::AsyncStdoutStream>>,
    sem: Arc<Semaphore>,
    inflight: AtomicUsize,
    idle: Notify,
    /// Stop now: interrupt what runs.
    kill: AtomicBool,
    killed: Notify,
    /// The run has ended (its exit reported or about to be).
    ended: AtomicBool,
    /// The current run of failures: (count, time of the first).
    fails: Mutex<(u32, Option<Instant>)>,
    pool: Mutex<Vec<Pooled>>,
}

struct Pooled {
    store: Store<Guest<P2Wasi>>,
    proxy: Proxy,
    shared: Arc<Shared>,
    uses: u32,
}

impl Served {
    pub(super) fn new(
        name: Arc<str>,
        app: usize,
        inner: Arc<Inner>,
        rt: tokio::runtime::Handle,
    ) -> Arc<Served> {
        Arc::new(Served {
            name,
            app,
            inner,
            rt,
            gate: watch::Sender::new(Gate::Closed("the app is not started".into())),
            stats: Stats::default(),
            next_id: AtomicU64::new(0),
            accept: Mutex::new(vec![]),
        })
    }

    /// Accepts on exactly `sockets`: loops on sockets not in the list end, new ones start.
    pub fn listen(self: &Arc<Self>, sockets: &[Arc<Socket>]) -> Result<(), String> {
        let Ok(mut acc) = self.accept.lock() else {
            return Err("internal: accept list poisoned".into());
        };
        acc.retain(|(s, task)| {
            let keep = sockets.iter().any(|n| Arc::ptr_eq(n, s));
            if !keep {
                task.abort();
            }
            keep
        });
        for s in sockets {
            if acc.iter().any(|(o, _)| Arc::ptr_eq(o, s)) {
                continue;
            }
            let _enter = self.rt.enter();
            let l = s
                .tokio()
                .map_err(|e| format!("{}: {}", s.addr, crate::util::io_reason(&e)))?;
            let me = self.clone();
            let task = self.rt.spawn(accept_loop(me, l));
            acc.push((s.clone(), task.abort_handle()));
        }
        Ok(())
    }

    /// The addresses it accepts on (as bound).
    pub fn bound(&self) -> Vec<String> {
        self.accept
            .lock()
            .map(|a| a.iter().map(|(s, _)| s.local.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops accepting (the app is removed). Open connections finish with 503s.
    pub fn shutdown(&self) {
        if let Ok(mut acc) = self.accept.lock() {
            for (_, t) in acc.drain(..) {
                t.abort();
            }
        }
        self.gate
            .send_replace(Gate::Closed("the app was removed".into()));
    }

    /// Starts serving `program`: requests go to the new run from now on; an older run keeps
    /// its in-flight requests until they finish.
    pub fn open(
        self: &Arc<Self>,
        program: &Arc<Program>,
        generation: u64,
        stdio: Stdio,
    ) -> Result<Arc<Run>, String> {
        let (Some(conf), super::Compiled::Http { pre, .. }) = (&program.http, &*program.compiled)
        else {
            return Err(format!(
                "{} is not a wasi:http component with [http]",
                program.module.display()
            ));
        };
        let _rt = self.rt.enter();
        let stream = |s: &Option<crate::logs::Sink>| {
            s.as_ref().map(|s| {
                Arc::new(wasmtime_wasi::cli::AsyncStdoutStream::new(
                    64 << 10,
                    s.writer(),
                ))
            })
        };
        let (out, err) = (stream(&stdio.stdout), stream(&stdio.stderr));
        let run = Arc::new(Run {
            generation,
            out,
            err,
            program: program.clone(),
            pre: pre.clone(),
            conf: conf.clone(),
            stdio,
            sem: Arc::new(Semaphore::new(conf.max_concurrent as usize)),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            kill: AtomicBool::new(false),
            killed: Notify::new(),
            ended: AtomicBool::new(false),
            fails: Mutex::new((0, None)),
            pool: Mutex::new(vec![]),
        });
        self.gate.send_replace(Gate::Open(run.clone()));
        Ok(run)
    }

    /// The state machine left the run's states: `wait` (a transition: requests wait for the
    /// next run) or not (503 at once), with why.
    pub fn close(&self, why: String, wait: bool) {
        self.gate.send_if_modified(|g| {
            if matches!(g, Gate::Open(_)) {
                return false;
            }
            *g = if wait {
                Gate::Wait(why)
            } else {
                Gate::Closed(why)
            };
            true
        });
    }

    /// Stops `run`: new requests wait for the next run; in-flight ones finish (or, with `kill`,
    /// are interrupted); then the run's exit (`Interrupted`) is reported.
    pub fn stop(self: &Arc<Self>, run: &Arc<Run>, kill: bool) {
        self.gate.send_if_modified(|g| match g {
            Gate::Open(r) if Arc::ptr_eq(r, run) => {
                *g = Gate::Wait("the app is restarting".into());
                true
            }
            _ => false,
        });
        if let Ok(mut p) = run.pool.lock() {
            let n = p.len() as u64;
            p.clear();
            self.stats.instances.fetch_sub(n, Ordering::Relaxed);
        }
        if kill {
            run.kill.store(true, Ordering::SeqCst);
            run.killed.notify_waiters();
        }
        if run.ended.swap(true, Ordering::SeqCst) && !kill {
            return;
        }
        let (me, run) = (self.clone(), run.clone());
        self.rt.spawn(async move {
            loop {
                let idle = run.idle.notified();
                if run.inflight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
            (me.inner.on_exit)(me.app, run.generation, Exit::Interrupted);
        });
    }

    /// A run of failed requests ends `run`: 503 from now on (until the state machine's next
    /// start), and its exit goes to the supervisor.
    fn end(&self, run: &Arc<Run>, exit: Exit) {
        let why = exit.describe();
        self.gate.send_if_modified(|g| match g {
            Gate::Open(r) if Arc::ptr_eq(r, run) => {
                *g = Gate::Closed(why.clone());
                true
            }
            _ => false,
        });
        self.log(run, format!("paddock: the app's run ends: {why}\n"));
        (self.inner.on_exit)(self.app, run.generation, exit);
    }

    /// `run` is replaced by a newer one (`update`): it finishes its in-flight requests and
    /// reports nothing.
    pub fn retire(&self, run: &Arc<Run>) {
        run.ended.store(true, Ordering::SeqCst);
        if let Ok(mut p) = run.pool.lock() {
            let n = p.len() as u64;
            p.clear();
            self.stats.instances.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The app's figures.
    pub fn figures(&self, reuse: u32) -> crate::control::api::HttpFigures {
        let st = &self.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::control::api::HttpFigures {
            listen: self.bound(),
            requests: ld(&st.requests),
            ok: ld(&st.ok),
            in_flight: ld(&st.in_flight),
            instances: ld(&st.instances),
            traps: ld(&st.traps),
            timeouts: ld(&st.timeouts),
            refused: ld(&st.refused),
            latency_p50_ms: st.latency.quantile(0.5).map(|us| us / 1000.0),
            latency_p99_ms: st.latency.quantile(0.99).map(|us| us / 1000.0),
            instantiation_p50_us: st.instantiation.quantile(0.5),
            instantiation_p99_us: st.instantiation.quantile(0.99),
            memory_high_bytes: ld(&st.memory_high),
            reuse,
        }
    }

    /// Requests whose handler is running now.
    pub fn in_flight(&self) -> u64 {
        self.stats.in_flight.load(Ordering::Relaxed)
    }

    /// Waits for a run to serve the request (until `deadline`), or says why there is none.
    async fn admit(&self, deadline: tokio::time::Instant) -> Result<Arc<Run>, String> {
        let mut rx = self.gate.subscribe();
        loop {
            let g = rx.borrow_and_update().clone();
            match g {
                Gate::Open(r) => return Ok(r),
                Gate::Closed(why) => return Err(why),
                Gate::Wait(why) => match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return Err(why),
                },
            }
        }
    }

    fn log(&self, run: &Run, text: String) {
        let sink = run.stdio.stderr.clone();
        self.rt.spawn(async move {
            let mut s = sink;
            super::run::write_report(&mut s, &text).await;
        });
    }
}

impl Run {
    /// A request failed: the end of the run when it is the `failures`-th in a row within the
    /// window. Returns the exit to report, once.
    fn fail(&self, what: &str) -> Option<Exit> {
        let now = Instant::now();
        let Ok(mut f) = self.fails.lock() else {
            return None;
        };
        if f.1
            .is_none_or(|t| now.duration_since(t) > self.conf.failure_window)
        {
            *f = (0, Some(now));
        }
        f.0 += 1;
        if f.0 < self.conf.failures || self.ended.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(Exit::Trap(format!(
            "{} requests failed in a row within {} ([http] failures, failure_window); the last: {what}",
            f.0,
            crate::config::units::format_duration(self.conf.failure_window)
        )))
    }
    fn succeed(&self) {
        if let Ok(mut f) = self.fails.lock() {
            *f = (0, None);
        }
    }
}
