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

use super::run::{GuestIo, classify, new_store, wasi_builder};
use super::sched::Metered;
use super::store::Shared;
use super::{Inner, P2Wasi, Program, Stdio};
use crate::config::http::HttpSpec;
use crate::listen::Socket;
use crate::supervise::Exit;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type Resp = hyper::Response<HyperOutgoingBody>;

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

// ---------------------------------------------------------------------------------------------
// Figures

/// Latencies in buckets of 2^(1/8) (±4.5%) from 1 µs to ~30 s.
pub struct Histogram {
    buckets: Box<[AtomicU64; 200]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_nanos() as f64 / 1000.0;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.log2() * 8.0).ceil() as usize).min(199)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    /// The `q` quantile (0..=1) in microseconds (the bucket's upper bound), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(2f64.powf(i as f64 / 8.0));
            }
        }
        None
    }
}

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub instances: AtomicU64,
    pub ok: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    /// Answered 503: the app was stopped, backing off, FATAL, or busy past the timeout.
    pub refused: AtomicU64,
    pub memory_high: AtomicU64,
    pub latency: Histogram,
    pub instantiation: Histogram,
}

// ---------------------------------------------------------------------------------------------
// The app and its runs

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
    pre: ProxyPre<super::Guest<P2Wasi>>,
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
    store: Store<super::Guest<P2Wasi>>,
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

async fn accept_loop(served: Arc<Served>, l: crate::listen::Listener) {
    loop {
        match l.accept().await {
            Ok(conn) => {
                let s = served.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(wasmtime_wasi_http::io::TokioIo::new(conn), svc)
                        .await;
                });
            }
            // Out of descriptors or memory: wait a little (the connection stays in the backlog).
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn plain(status: u16, text: String) -> Resp {
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// How a request's guest task ended.
enum Outcome {
    Done,
    Trap(String),
    Timeout,
    Killed,
    /// No instance could be made.
    Refused(String),
}

/// Counts a request in flight (app and run) until dropped.
struct InFlight {
    served: Arc<Served>,
    run: Arc<Run>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.served.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.run.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.run.idle.notify_waiters();
        }
    }
}

async fn handle(s: Arc<Served>, req: hyper::Request<hyper::body::Incoming>) -> Resp {
    let t0 = Instant::now();
    let id = s.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    let refuse = |s: &Served, why: String| {
        s.stats.refused.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(503, format!("503 Service Unavailable: {}: {why}\n", s.name));
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        r
    };
    // The gate's wait and the queue for a turn are bounded by the default timeout until the
    // run (and its own timeout) is known.
    let admit_deadline = tokio::time::Instant::now()
        + crate::config::http::DEFAULT_REQUEST_TIMEOUT.min(Duration::from_secs(10));
    let run = match s.admit(admit_deadline).await {
        Ok(r) => r,
        Err(why) => return refuse(&s, why),
    };
    let deadline = tokio::time::Instant::from_std(t0 + run.conf.request_timeout);
    let permit = match tokio::time::timeout_at(deadline, run.sem.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            return refuse(
                &s,
                format!(
                    "busy: {} requests in flight ([http] max_concurrent)",
                    run.conf.max_concurrent
                ),
            );
        }
    };
    s.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    run.inflight.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight {
        served: s.clone(),
        run: run.clone(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (s2, run2) = (s.clone(), run.clone());
    let task = s.rt.spawn(async move {
        let _guard = guard;
        let _permit = permit;
        let out = guest(&s2, &run2, id, req, tx, deadline).await;
        match &out {
            Outcome::Done => run2.succeed(),
            Outcome::Killed | Outcome::Refused(_) => {}
            Outcome::Trap(msg) => {
                s2.stats.traps.fetch_add(1, Ordering::Relaxed);
                if let Some(exit) = run2.fail(&format!("request {id}: trap: {msg}")) {
                    s2.end(&run2, exit);
                }
            }
            Outcome::Timeout => {
                s2.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                s2.log(
                    &run2,
                    format!(
                        "paddock: request {id}: interrupted after [http] request_timeout = {}\n",
                        crate::config::units::format_duration(run2.conf.request_timeout)
                    ),
                );
                if let Some(exit) = run2.fail(&format!("request {id}: timed out")) {
                    s2.end(&run2, exit);
                }
            }
        }
        out
    });
    let resp = match rx.await {
        Ok(Ok(resp)) => {
            s.stats.ok.fetch_add(1, Ordering::Relaxed);
            resp
        }
        Ok(Err(code)) => plain(
            500,
            format!(
                "500 Internal Server Error: {}: request {id}: the handler answered with an error: {code:?}\n",
                s.name
            ),
        ),
        Err(_) => match task.await {
            Ok(Outcome::Trap(msg)) => plain(
                500,
                format!(
                    "500 Internal Server Error: {}: request {id}: wasm trap: {msg}\n",
                    s.name
                ),
            ),
            Ok(Outcome::Timeout) => plain(
                504,
                format!(
                    "504 Gateway Timeout: {}: request {id}: no response within {}\n",
                    s.name,
                    crate::config::units::format_duration(run.conf.request_timeout)
                ),
            ),
            Ok(Outcome::Killed) => refuse(&s, "the app was stopped".into()),
            Ok(Outcome::Refused(why)) => refuse(&s, why),
            Ok(Outcome::Done) | Err(_) => plain(
                500,
                format!(
                    "500 Internal Server Error: {}: request {id}: the handler returned without a response\n",
                    s.name
                ),
            ),
        },
    };
    s.stats.latency.record(t0.elapsed());
    resp
}

/// Runs one request in an instance (fresh, or reused with `reuse`).
async fn guest(
    s: &Arc<Served>,
    run: &Arc<Run>,
    id: u64,
    req: hyper::Request<hyper::body::Incoming>,
    tx: tokio::sync::oneshot::Sender<
        Result<Resp, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>,
    >,
    deadline: tokio::time::Instant,
) -> Outcome {
    if run.kill.load(Ordering::SeqCst) {
        return Outcome::Killed;
    }
    let reused = if run.conf.reuse > 0 {
        run.pool.lock().ok().and_then(|mut p| p.pop())
    } else {
        None
    };
    let (mut store, proxy, shared, uses) = match reused {
        Some(p) => (p.store, Some(p.proxy), p.shared, p.uses),
        None => {
            let shared = Arc::new(Shared::new(s.inner.origin));
            let mut io = GuestIo {
                out: None,
                err: None,
                report: None,
                err_tail: Arc::default(),
            };
            let store = wasi_builder(&run.program, &mut io, true)
                .map(|mut b| {
                    match &run.out {
                        Some(o) => b.stdout(o.clone()),
                        None => b.stdout(tokio::io::stdout()),
                    };
                    match &run.err {
                        Some(e) => b.stderr(e.clone()),
                        None => b.stderr(tokio::io::stderr()),
                    };
                    P2Wasi::new(b.build())
                })
                .and_then(|w| new_store(&run.program, w, &shared, None));
            match store {
                Ok(st) => {
                    s.stats.instances.fetch_add(1, Ordering::Relaxed);
                    (st, None, shared, 0)
                }
                Err(e) => return Outcome::Refused(e),
            }
        }
    };
    let mut live = Live {
        served: s.clone(),
        store: Some(()),
    };
    let resources = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|r| Ok((r, store.data_mut().http().new_response_outparam(tx)?)));
    let (req, out) = match resources {
        Ok(x) => x,
        Err(e) => return Outcome::Refused(super::one_line(&e)),
    };
    let program = &run.program;
    let work = async {
        let proxy = match proxy {
            Some(p) => p,
            None => {
                let t = Instant::now();
                let p = run.pre.instantiate_async(&mut store).await?;
                s.stats.instantiation.record(t.elapsed());
                p
            }
        };
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await?;
        Ok::<_, wasmtime::Error>(proxy)
    };
    let metered = Metered {
        inner: Box::pin(work),
        shared: shared.clone(),
        ticker: s.inner.ticker.clone(),
    };
    let r = tokio::select! {
        biased;
        _ = run.killed.notified(), if !run.kill.load(Ordering::SeqCst) => None,
        _ = tokio::time::sleep_until(deadline) => {
            shared.interrupt.store(true, Ordering::SeqCst);
            Some(Err(wasmtime::Trap::Interrupt.into()))
        }
        r = metered => Some(r),
    };
    let r = match r {
        _ if run.kill.load(Ordering::SeqCst) => return Outcome::Killed,
        None => return Outcome::Killed,
        Some(r) => r,
    };
    s.stats
        .memory_high
        .fetch_max(shared.memory.load(Ordering::Relaxed), Ordering::Relaxed);
    match r {
        Ok(proxy) => {
            if run.conf.reuse > uses + 1
                && !run.ended.load(Ordering::SeqCst)
                && let Ok(mut p) = run.pool.lock()
            {
                live.store = None; // stays counted: it goes back to the pool
                p.push(Pooled {
                    store,
                    proxy,
                    shared,
                    uses: uses + 1,
                });
            }
            Outcome::Done
        }
        Err(e) if shared.interrupt.load(Ordering::SeqCst) => {
            let _ = e;
            Outcome::Timeout
        }
        Err(e) => {
            // The app's stderr is shared by its requests: no panic message is told apart.
            let no_tail = super::panic::Tail::default();
            let (exit, text) = classify(Err(e), program, &shared, &store.data().limiter, &no_tail);
            let msg = match exit {
                Exit::Trap(m) => m,
                other => other.describe(),
            };
            if let Some(text) = text {
                let tagged: String = text
                    .lines()
                    .map(|l| {
                        let rest = l.strip_prefix("paddock: ").unwrap_or(l);
                        format!("paddock: request {id}: {rest}\n")
                    })
                    .collect();
                s.log(run, tagged);
            }
            Outcome::Trap(msg)
        }
    }
}

/// Counts a live instance until dropped (unless handed to the pool).
struct Live {
    served: Arc<Served>,
    store: Option<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.store.is_some() {
            self.served.stats.instances.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for i in 1..=100u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((500.0..=550.0).contains(&p50), "{p50}");
        assert!((990.0..=1100.0).contains(&p99), "{p99}");
    }
}
