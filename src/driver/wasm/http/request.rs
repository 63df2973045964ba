//! A request's way: the accept loop on each socket (hyper HTTP/1.1), admission through the
//! app's gate and its `max_concurrent` turns, the guest call in a fresh (or, with `reuse`,
//! pooled) instance under the request timeout, and the answer: the guest's response, or a
//! 500/503/504 naming the request and why, with the failure counted towards the run's end.

use super::{Pooled, Run, Served};
use crate::driver::wasm::run::{GuestIo, classify, new_store, wasi_builder};
use crate::driver::wasm::sched::Metered;
use crate::driver::wasm::store::Shared;
use crate::driver::wasm::{P2Wasi, one_line, panic};
use crate::supervise::Exit;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type Resp = hyper::Response<HyperOutgoingBody>;

pub(super) async fn accept_loop(served: Arc<Served>, l: crate::listen::Listener) {
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
        Err(e) => return Outcome::Refused(one_line(&e)),
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
            let no_tail = panic::Tail::default();
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
