//! Running an instance: its store (limits, epoch deadline, fuel) and WASI context (exactly
//! what the app file grants), the guest's main run to its end, the classification of that end
//! into an `Exit` with a report for the app's log, and the two short runs: instantiation only
//! (for benchmarks) and a call of the module's `health` export.

use super::net::Use;
use super::sched::Metered;
use super::store::{CpuBudget, Guest, Limiter, P2Wasi, Shared};
use super::{Compiled, Inner, Program, TICK, guard, one_line, panic};
use crate::supervise::Exit;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
pub(super) struct GuestIo {
    pub(super) out: Option<crate::logs::Sink>,
    pub(super) err: Option<crate::logs::Sink>,
    /// For paddock's own report of a trap (the guest's stream is in its store).
    pub(super) report: Option<crate::logs::Sink>,
    /// The end of what the guest wrote to stderr (for the panic message of a trap).
    pub(super) err_tail: Arc<panic::Tail>,
}

/// The store of a new instance, with limits, epoch deadline and fuel set.
pub(super) fn new_store<W: Send + 'static>(
    program: &Program,
    wasi: W,
    shared: &Arc<Shared>,
    budget_ticks: Option<u64>,
) -> Result<Store<Guest<W>>, String> {
    let guest = Guest {
        wasi,
        limiter: Limiter {
            max: program.memory,
            default_max: program.default_memory,
            used: 0,
            instances: program.max_instances as usize,
            refused: None,
            shared: shared.clone(),
            files: guard::Files::new(program.nofile, program.symlinks, program.preopens.len()),
        },
        cpu: program.cpu.map(|c| CpuBudget::new(c, Instant::now())),
        shared: shared.clone(),
        budget_ticks,
    };
    let mut store = Store::new(&program.flavor.engine, guest);
    store.limiter(|g| &mut g.limiter);
    // With epoch interruption every store starts at deadline 0: give it one tick.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| cx.data_mut().on_deadline());
    if let Some(f) = program.fuel {
        store
            .set_fuel(f)
            .map_err(|e| format!("setting fuel: {}", one_line(&e)))?;
    }
    Ok(store)
}

/// The WASI context of an app: exactly what its file grants.
pub(super) fn wasi_builder(
    program: &Program,
    io: &mut GuestIo,
    discard_output: bool,
) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(&program.argv).envs(&program.env);
    if !discard_output {
        match io.out.take() {
            Some(sink) => {
                b.stdout(wasmtime_wasi::cli::AsyncStdoutStream::new(
                    64 << 10,
                    sink.writer(),
                ));
            }
            None => {
                b.stdout(tokio::io::stdout());
            }
        }
        match io.err.take() {
            Some(sink) => {
                b.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(
                    64 << 10,
                    panic::TailWriter::new(sink.writer(), io.err_tail.clone()),
                ));
            }
            None => {
                b.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(
                    64 << 10,
                    panic::TailWriter::new(tokio::io::stderr(), io.err_tail.clone()),
                ));
            }
        }
    }
    for p in &program.preopens {
        let perms = if p.writable {
            wasmtime_wasi::FsPerms::ReadWrite
        } else {
            wasmtime_wasi::FsPerms::ReadOnly
        };
        b.preopened_dir(&p.host, &p.guest, perms).map_err(|e| {
            format!(
                "preopen \"{}\" = {}: {}",
                p.guest,
                p.host.display(),
                one_line(&e)
            )
        })?;
    }
    if program.net.host {
        let net = program.net.clone();
        b.allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        b.socket_addr_check(move |addr, u| {
            use wasmtime_wasi::sockets::SocketAddrUse as S;
            let u = match u {
                S::TcpBind => Use::TcpBind,
                S::TcpListen => Use::TcpListen,
                S::TcpAccept => Use::TcpAccept,
                S::TcpConnect => Use::TcpConnect,
                _ => Use::Udp,
            };
            let ok = net.allows(&addr, u);
            Box::pin(async move { ok })
        });
    } else {
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
    }
    Ok(b)
}

pub(super) async fn run_instance(program: &Program, shared: &Arc<Shared>, mut io: GuestIo) -> Exit {
    let mut report = io.report.take();
    let (exit, text) = tokio::select! {
        biased;
        _ = shared.notify.notified() => (Exit::Interrupted, None),
        r = guest_main(program, shared, &mut io) => r,
    };
    if let Some(text) = text {
        write_report(&mut report, &text).await;
    }
    exit
}

/// Runs the guest to its end: the exit and, for a trap, the report for the app's stderr.
async fn guest_main(
    program: &Program,
    shared: &Arc<Shared>,
    io: &mut GuestIo,
) -> (Exit, Option<String>) {
    let b = match wasi_builder(program, io, false) {
        Ok(b) => b,
        Err(e) => return (Exit::SpawnFailed(e), None),
    };
    match &*program.compiled {
        Compiled::Core { pre, .. } => {
            let mut b = b;
            let mut store = match new_store(program, b.build_p1(), shared, None) {
                Ok(s) => s,
                Err(e) => return (Exit::SpawnFailed(e), None),
            };
            let instance = match pre.instantiate_async(&mut store).await {
                Ok(i) => i,
                Err(e) => return (instantiate_failed(&e, &store.data().limiter), None),
            };
            let r = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(start) => start.call_async(&mut store, ()).await.map(|()| 0),
                Err(e) => return (Exit::SpawnFailed(one_line(&e)), None),
            };
            classify(r, program, shared, &store.data().limiter, &io.err_tail)
        }
        Compiled::Component { command, .. } => {
            let mut b = b;
            let wasi = P2Wasi::new(b.build());
            let mut store = match new_store(program, wasi, shared, None) {
                Ok(s) => s,
                Err(e) => return (Exit::SpawnFailed(e), None),
            };
            let cmd = match command.instantiate_async(&mut store).await {
                Ok(c) => c,
                Err(e) => return (instantiate_failed(&e, &store.data().limiter), None),
            };
            let r = cmd
                .wasi_cli_run()
                .call_run(&mut store)
                .await
                .map(|res| if res.is_ok() { 0 } else { 1 });
            classify(r, program, shared, &store.data().limiter, &io.err_tail)
        }
        Compiled::Http { .. } => (
            Exit::SpawnFailed(format!(
                "{} is a wasi:http component: it is served per request, not started",
                program.module.display()
            )),
            None,
        ),
    }
}

fn instantiate_failed(e: &wasmtime::Error, limiter: &Limiter) -> Exit {
    let mut msg = format!("instantiation failed: {}", one_line(e));
    if let Some(note) = limiter.note() {
        msg = format!("instantiation failed: {note}");
    } else if msg.contains("instance count too high") {
        msg.push_str(&format!(" ([wasm] max_instances = {})", limiter.instances));
    } else if msg.contains("maximum concurrent") || msg.contains("limit of") {
        msg.push_str(" (the instance pool is full: see --wasm-slots)");
    }
    Exit::SpawnFailed(msg)
}

/// Turns the end of a guest into an `Exit`, and a report for its log when it trapped.
pub(super) fn classify(
    r: wasmtime::Result<i32>,
    program: &Program,
    shared: &Shared,
    limiter: &Limiter,
    err_tail: &panic::Tail,
) -> (Exit, Option<String>) {
    let e = match r {
        Ok(code) => {
            let text = (code != 0)
                .then(|| limiter.note().map(|n| format!("paddock: note: {n}\n")))
                .flatten();
            return (Exit::Code(code), text);
        }
        Err(e) => e,
    };
    if let Some(x) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        let text = (x.0 != 0)
            .then(|| limiter.note().map(|n| format!("paddock: note: {n}\n")))
            .flatten();
        return (Exit::Code(x.0), text);
    }
    let trap = e.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) && shared.interrupt.load(Ordering::SeqCst) {
        return (Exit::Interrupted, None);
    }
    let mut msg = match trap {
        Some(Trap::OutOfFuel) => format!(
            "all fuel consumed ([wasm] fuel = {})",
            program.fuel.unwrap_or_default()
        ),
        Some(t) => {
            let s = t.to_string();
            s.strip_prefix("wasm trap: ")
                .map_or(s.clone(), str::to_string)
        }
        None => one_line(&e),
    };
    let note = limiter.note();
    // The summary comes last, after the backtrace, where `paddock tail` (10 lines) shows it;
    // with the guest's panic message when it panicked.
    if let Some(p) = err_tail.panic_message() {
        msg = format!("{p} ({msg})");
    }
    let mut text = String::new();
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        for line in bt.to_string().lines() {
            text.push_str("paddock: ");
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some(n) = &note {
        text.push_str(&format!("paddock: note: {n}\n"));
        msg.push_str(&format!(" (after {n})"));
    }
    text.push_str(&format!("paddock: wasm trap: {msg}\n"));
    (Exit::Trap(msg), Some(text))
}

pub(super) async fn write_report(sink: &mut Option<crate::logs::Sink>, text: &str) {
    match sink.take() {
        Some(sink) => {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), sink.write(text.as_bytes().to_vec()))
                    .await;
        }
        None => {
            use std::io::Write;
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// A start without the run: store, WASI context, instantiation (for benchmarks).
pub(super) async fn instantiate_only(program: &Program, shared: &Arc<Shared>) -> bool {
    let mut io = GuestIo {
        out: None,
        err: None,
        report: None,
        err_tail: Arc::default(),
    };
    let Ok(b) = wasi_builder(program, &mut io, true) else {
        return false;
    };
    let mut b = b;
    match &*program.compiled {
        Compiled::Core { pre, .. } => {
            let Ok(mut store) = new_store(program, b.build_p1(), shared, None) else {
                return false;
            };
            pre.instantiate_async(&mut store).await.is_ok()
        }
        Compiled::Component { pre, .. } => {
            let wasi = P2Wasi::new(b.build());
            let Ok(mut store) = new_store(program, wasi, shared, None) else {
                return false;
            };
            pre.instantiate_async(&mut store).await.is_ok()
        }
        Compiled::Http { pre, .. } => {
            let wasi = P2Wasi::new(b.build());
            let Ok(mut store) = new_store(program, wasi, shared, None) else {
                return false;
            };
            pre.instantiate_async(&mut store).await.is_ok()
        }
    }
}

pub(super) async fn health_call(
    inner: &Inner,
    program: &Program,
    budget: Duration,
) -> Result<u32, String> {
    if !program.has_health() {
        return Err(format!(
            "{} exports no `health` function",
            program.module.display()
        ));
    }
    let ticks = (budget.as_nanos() / TICK.as_nanos()).max(1) as u64;
    let shared = Arc::new(Shared::new(inner.origin));
    let mut io = GuestIo {
        out: None,
        err: None,
        report: None,
        err_tail: Arc::default(),
    };
    let mut b = wasi_builder(program, &mut io, true)?;
    let over = |e: wasmtime::Error| match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "health function ran past its budget of {}",
            crate::config::units::format_duration(budget)
        ),
        _ => format!("health function failed: {}", one_line(&e)),
    };
    let fut = async {
        match &*program.compiled {
            Compiled::Core { pre, .. } => {
                let mut store = new_store(program, b.build_p1(), &shared, Some(ticks))?;
                let inst = pre.instantiate_async(&mut store).await.map_err(over)?;
                if let Ok(init) = inst.get_typed_func::<(), ()>(&mut store, "_initialize") {
                    init.call_async(&mut store, ()).await.map_err(over)?;
                }
                let f = inst
                    .get_typed_func::<(), i32>(&mut store, "health")
                    .map_err(|e| {
                        format!("`health` must be a function () -> i32: {}", one_line(&e))
                    })?;
                let v = f.call_async(&mut store, ()).await.map_err(over)?;
                Ok(v as u32)
            }
            Compiled::Component { .. } | Compiled::Http { .. } => {
                let pre = match &*program.compiled {
                    Compiled::Component { pre, .. } => pre,
                    Compiled::Http { pre, .. } => pre.instance_pre(),
                    Compiled::Core { .. } => return Err("not a component".into()),
                };
                let wasi = P2Wasi::new(b.build());
                let mut store = new_store(program, wasi, &shared, Some(ticks))?;
                let inst = pre.instantiate_async(&mut store).await.map_err(over)?;
                let f = inst
                    .get_typed_func::<(), (u32,)>(&mut store, "health")
                    .map_err(|e| format!("`health` must be `func() -> u32`: {}", one_line(&e)))?;
                let (v,) = f.call_async(&mut store, ()).await.map_err(over)?;
                Ok(v)
            }
        }
    };
    Metered {
        inner: Box::pin(fut),
        shared: shared.clone(),
        ticker: inner.ticker.clone(),
    }
    .await
}
