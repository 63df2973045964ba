//! Level `wasm`: apps that are WebAssembly modules, run by wasmtime inside paddock.
//!
//! - **One engine, compile once.** A shared [`wasmtime::Engine`] with the pooling instance
//!   allocator, copy-on-write memory images and epoch interruption. A module is compiled once per
//!   content (SHA-256) and cached on disk (`cache`); each module gets an `InstancePre`, so a
//!   (re)start is one instantiation (microseconds), never a compilation.
//! - **Many instances, few threads.** Instances are async tasks on a small multi-thread tokio
//!   runtime of their own (never on the supervisor's thread). A ticker thread advances the epoch
//!   every `TICK` while some guest is executing (and sleeps otherwise); at each tick a running
//!   guest yields to the scheduler, so a spinning module cannot hold a worker, and the
//!   `[limits] cpu` share is enforced there by making the guest sleep off its excess.
//! - **Limits.** `[limits] memory` through a `ResourceLimiter` (growth past it fails; the trap
//!   that usually follows is reported with that reason; 128MiB when unset), `[wasm]
//!   max_instances`, `fuel`; `[limits] nofile` caps the descriptors a guest holds (256 when
//!   unset) and paddock keeps a reserve of descriptors no guest can take (`guard`).
//! - **Capabilities.** Args, env, preopened directories and network allow lists come from the app
//!   file and nothing else: no inherited environment, no ambient filesystem or network; no
//!   symbolic links created in preopens unless `[wasm] symlinks = true`.
//! - **Same policy.** Guest stdout/stderr go into the app's log pipes; the end of an instance
//!   (`proc_exit` code, trap, interruption) is reported to the supervisor as an `Exit`, which the
//!   same state machine turns into restarts, backoff and FATAL.

pub mod cache;
mod guard;
pub mod http;
pub mod inspect;
pub mod net;
mod panic;

use crate::config::AppSpec;
use crate::config::wasm::{Preopen, WasmSpec};
use crate::supervise::Exit;
use inspect::Kind;
use net::{NetPolicy, Use};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Linker, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The epoch period: how long a guest runs before it yields (and the granularity of `cpu`).
pub const TICK: Duration = Duration::from_millis(10);
/// Bytes counted per table element towards `[limits] memory`.
const TABLE_ELEMENT_BYTES: usize = 8;
/// CPU a throttled guest may bank while idle, in nanoseconds of guest time.
const CPU_BURST_NS: f64 = 50e6;
/// Largest module file paddock reads.
const MAX_MODULE_BYTES: u64 = 256 << 20;
/// Core instances, memories and tables the pool allows one component (bounds `max_instances`).
const PER_COMPONENT_INSTANCES: u32 = crate::config::wasm::MAX_MAX_INSTANCES;

/// Paddock-wide settings of the wasm host.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Where compiled modules are kept (`<state_dir>/wasm-cache`); `None` compiles in memory.
    pub cache_dir: Option<PathBuf>,
    /// How many wasm apps can run at once (instance pool slots).
    pub slots: u32,
    /// Worker threads running instances.
    pub workers: usize,
}

impl HostOptions {
    /// Slots for `apps` wasm apps: room for every app plus later additions by `update`.
    pub fn default_slots(apps: usize) -> u32 {
        (apps as u32).saturating_add(256).max(1024)
    }
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
    }
}

/// Called on a worker thread when an instance has ended: `(app index, generation, exit)`.
pub type ExitSink = Arc<dyn Fn(usize, u64, Exit) + Send + Sync>;

/// The engine, the runtime the instances run on, the compiled modules.
pub struct WasmHost {
    inner: Arc<Inner>,
    rt: Option<tokio::runtime::Runtime>,
}

/// (fuel metering, SHA-256 of the module file).
type ModuleKey = (bool, [u8; 32]);
/// A module loaded and linked, or why it could not be (kept, so that a thousand apps sharing a
/// broken module do not compile it a thousand times).
type Loaded = Result<Arc<Compiled>, String>;

struct Inner {
    opts: HostOptions,
    cache: cache::Cache,
    plain: OnceLock<Result<Arc<Flavor>, String>>,
    fueled: OnceLock<Result<Arc<Flavor>, String>>,
    /// Loaded modules (and load errors), by (fuel, module SHA-256).
    modules: Mutex<HashMap<ModuleKey, Loaded>>,
    /// Module file → (stamp, SHA-256), so an unchanged file is not hashed again.
    hashes: Mutex<HashMap<PathBuf, (crate::config::wasm::ModuleStamp, [u8; 32])>>,
    ticker: Arc<Ticker>,
    live: AtomicUsize,
    maps: MapBudget,
    on_exit: ExitSink,
    origin: Instant,
}

/// An engine with its linkers. Two flavors exist because fuel metering is an engine-wide
/// setting that slows every module down: apps with `[wasm] fuel` get an engine of their own
/// (created only when such an app exists).
struct Flavor {
    engine: Engine,
    p1: Linker<Guest<WasiP1Ctx>>,
    p2: wasmtime::component::Linker<Guest<P2Wasi>>,
    /// Functions of `wasi_snapshot_preview1` the p1 linker defines.
    p1_names: HashSet<String>,
}

enum Compiled {
    Core {
        pre: wasmtime::InstancePre<Guest<WasiP1Ctx>>,
        health: bool,
    },
    Component {
        pre: wasmtime::component::InstancePre<Guest<P2Wasi>>,
        command: CommandPre<Guest<P2Wasi>>,
        health: bool,
    },
    /// A `wasi:http/incoming-handler` component: instantiated per request (`http`).
    Http {
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<Guest<P2Wasi>>,
        health: bool,
    },
}

/// One app's module with everything a start needs, prepared once.
pub struct Program {
    compiled: Arc<Compiled>,
    flavor: Arc<Flavor>,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    net: Arc<NetPolicy>,
    memory: Option<u64>,
    /// `[limits] memory` was left out: `memory` is the wasm default.
    default_memory: bool,
    nofile: u64,
    symlinks: bool,
    cpu: Option<f64>,
    fuel: Option<u64>,
    max_instances: u32,
    pub kind: Kind,
    pub module: PathBuf,
    /// `[http]` of a per-request app.
    pub http: Option<crate::config::http::HttpSpec>,
}

impl Program {
    /// The module exports a health function (`health`: `() -> i32` for a core module,
    /// `health: func() -> u32` for a component); see [`Instance::call_health`].
    pub fn has_health(&self) -> bool {
        match &*self.compiled {
            Compiled::Core { health, .. }
            | Compiled::Component { health, .. }
            | Compiled::Http { health, .. } => *health,
        }
    }

    /// A component served per request (`[http]`), not started as a command.
    pub fn is_http(&self) -> bool {
        matches!(&*self.compiled, Compiled::Http { .. })
    }
}

/// Where a guest's stdout and stderr go: straight into the app's logs (no pipe, no descriptor:
/// a wasm instance costs paddock no file descriptor), or `None` for paddock's own stdout/stderr
/// (`logs.stdout = "inherit"`).
#[derive(Clone, Default)]
pub struct Stdio {
    pub stdout: Option<crate::logs::Sink>,
    pub stderr: Option<crate::logs::Sink>,
}

/// State shared between an instance's task and its handle.
struct Shared {
    interrupt: AtomicBool,
    notify: tokio::sync::Notify,
    /// Linear memory + tables in bytes.
    memory: AtomicU64,
    /// Nanoseconds spent in polls of the instance's task.
    busy_ns: AtomicU64,
    /// Start of the current poll (nanoseconds since `origin`, + 1), 0 outside polls.
    poll_start: AtomicU64,
    origin: Instant,
}

impl Shared {
    fn new(origin: Instant) -> Shared {
        Shared {
            interrupt: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            memory: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            poll_start: AtomicU64::new(0),
            origin,
        }
    }
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }
    /// CPU time so far, the current poll included.
    fn busy_now(&self) -> u64 {
        let start = self.poll_start.load(Ordering::Relaxed);
        let cur = if start == 0 {
            0
        } else {
            self.now_ns().saturating_sub(start)
        };
        self.busy_ns.load(Ordering::Relaxed) + cur
    }
}

/// The supervisor's handle on a running instance.
pub struct Instance {
    shared: Arc<Shared>,
    program: Arc<Program>,
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
}

impl Instance {
    /// Stops the guest: at its next epoch check if it is executing (within one `TICK`), at once
    /// if it is waiting in a host call. The instance then ends with `Exit::Interrupted`.
    pub fn interrupt(&self) {
        self.shared.interrupt.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }

    /// Linear memory and tables in use, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.shared.memory.load(Ordering::Relaxed)
    }

    /// Calls the module's exported health function under a budget of `budget` (rounded up to
    /// whole `TICK`s of execution; the call is also abandoned after `budget` + 1 s of wall time,
    /// for a guest blocked in a host call). `Ok(0)` means healthy, `Ok(n)` unhealthy with code
    /// `n`, `Err` that the call could not be made or did not finish.
    ///
    /// A command's `_start` owns its store for as long as it runs, so the function runs in a
    /// fresh instance of the same module with the same capabilities (args, env, preopens,
    /// network lists, memory and fuel limits) and its output discarded: it sees the state the
    /// running instance shares through files or the network, not its linear memory. Costs one
    /// pooled instantiation. Runs on the wasm runtime, never on the caller's thread.
    ///
    /// This is the hook for `[health] kind = "wasm"`, to be wired by the health checks.
    pub fn call_health(
        &self,
        budget: Duration,
    ) -> impl Future<Output = Result<u32, String>> + Send + 'static {
        let (program, inner) = (self.program.clone(), self.inner.clone());
        let task = self
            .rt
            .spawn(async move { health_call(&inner, &program, budget).await });
        async move {
            match tokio::time::timeout(budget + Duration::from_secs(1), task).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("health task failed: {e}")),
                Err(_) => Err(format!(
                    "health function did not return within {}",
                    crate::config::units::format_duration(budget + Duration::from_secs(1))
                )),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store data

/// WASI preview 2 state of a component's store (`wasi:http` included: the same store type
/// serves commands and per-request components).
pub struct P2Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    hooks: http::Hooks,
}

impl P2Wasi {
    fn new(ctx: WasiCtx) -> P2Wasi {
        P2Wasi {
            ctx,
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: http::Hooks,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for Guest<P2Wasi> {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// What a store holds: the WASI state and paddock's accounting.
pub struct Guest<W> {
    wasi: W,
    limiter: Limiter,
    cpu: Option<CpuBudget>,
    shared: Arc<Shared>,
    /// Health calls: ticks of execution left.
    budget_ticks: Option<u64>,
}

impl WasiView for Guest<P2Wasi> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl<W> Guest<W> {
    /// Called by wasmtime when the guest has executed past its epoch deadline (one tick).
    fn on_deadline(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.shared.interrupt.load(Ordering::Relaxed) {
            return Err(Trap::Interrupt.into());
        }
        if let Some(left) = &mut self.budget_ticks {
            if *left == 0 {
                return Err(Trap::Interrupt.into());
            }
            *left -= 1;
        }
        if let Some(cpu) = &mut self.cpu
            && let Some(pause) = cpu.charge(Instant::now(), self.shared.busy_now())
        {
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(pause)),
            ));
        }
        // Let the other tasks on this worker run.
        Ok(UpdateDeadline::Yield(1))
    }
}

/// `[limits] memory`, `nofile` and `[wasm] max_instances`, and the memory figure for `status`.
struct Limiter {
    max: Option<u64>,
    /// `max` is the default for wasm apps (for reports).
    default_max: bool,
    used: u64,
    instances: usize,
    /// The first refused growth: the total it would have reached.
    refused: Option<u64>,
    shared: Arc<Shared>,
    /// Descriptors and symbolic links.
    files: guard::Files,
}

impl Limiter {
    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if self.max.is_some_and(|m| total > m) {
            self.refused.get_or_insert(total);
            return false;
        }
        self.used = total;
        self.shared.memory.store(total, Ordering::Relaxed);
        true
    }

    /// Why a failure may have happened, for reports.
    fn note(&self) -> Option<String> {
        let memory = self.max.zip(self.refused).map(|(max, wanted)| {
            format!(
                "memory growth to {} was refused: [limits] memory = {}{}",
                human_bytes(wanted),
                human_bytes(max),
                if self.default_max {
                    " (the default for wasm apps; set [limits] memory to change it)"
                } else {
                    ""
                }
            )
        });
        match (memory, self.files.note()) {
            (Some(m), Some(f)) => Some(format!("{m}; {f}")),
            (m, f) => m.or(f),
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            (current * TABLE_ELEMENT_BYTES) as u64,
            (desired * TABLE_ELEMENT_BYTES) as u64,
        ))
    }
    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.instances * 4
    }
    fn memories(&self) -> usize {
        self.instances * 2
    }
}

/// `[limits] cpu`: a token bucket of guest time, refilled at `share` of wall time. When it runs
/// dry at an epoch deadline, the guest sleeps until it is even.
pub struct CpuBudget {
    share: f64,
    tokens: f64,
    last: Instant,
    charged: u64,
}

impl CpuBudget {
    pub fn new(share: f64, now: Instant) -> CpuBudget {
        CpuBudget {
            share,
            tokens: CPU_BURST_NS * share,
            last: now,
            charged: 0,
        }
    }

    /// Accounts for the guest time used so far (`busy_ns`, cumulative) and returns how long the
    /// guest must pause, if it is over its share.
    pub fn charge(&mut self, now: Instant, busy_ns: u64) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as f64;
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.share).min(CPU_BURST_NS * self.share);
        self.tokens -= busy_ns.saturating_sub(self.charged) as f64;
        self.charged = self.charged.max(busy_ns);
        if self.tokens >= 0.0 {
            return None;
        }
        let pause = Duration::from_nanos((-self.tokens / self.share) as u64);
        self.tokens = 0.0;
        self.last = now + pause; // the pause pays the debt; it earns nothing more
        Some(pause)
    }
}

// ---------------------------------------------------------------------------------------------
// Memory mappings

/// Mappings reserved for everything else in paddock (malloc arenas, threads, libraries).
const MAPS_RESERVE: usize = 4096;
/// Mappings a wasm instance is assumed to take until paddock has measured it: its linear memory
/// slot (image, heap, the rest: 3), its fiber stack and guard (2), tables (2 each) and more; a
/// core module of one memory and one table measured 12.2 here.
const MAPS_PER_INSTANCE: usize = 16;

/// Every wasm instance lives in paddock's address space and takes a dozen memory mappings, and
/// the kernel caps the mappings of a process at `vm.max_map_count` (65530 by default: about
/// 5,000 instances). Past it every mmap fails, and the next allocation aborts paddock. So a start
/// is admitted only while there is room, measured: when the running instances reach the
/// estimated capacity, paddock counts its mappings (`/proc/self/maps`), learns the cost per
/// instance and the room left, and refuses the start with the reason when there is none.
struct MapBudget {
    /// Mappings before any instance.
    base: usize,
    /// Instances admitted without measuring again.
    cap: AtomicUsize,
    /// The last refusal: (instances running then, when, why). Repeated while no instance has
    /// ended, for a few seconds, without counting again (counting 60,000 mappings takes
    /// milliseconds, and a thousand refused apps retry).
    refused: Mutex<Option<(usize, Instant, String)>>,
}

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

fn count_maps() -> usize {
    std::fs::read("/proc/self/maps")
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

impl MapBudget {
    fn new() -> MapBudget {
        let base = count_maps();
        let cap = max_map_count().saturating_sub(base + MAPS_RESERVE) / MAPS_PER_INSTANCE;
        MapBudget {
            base,
            cap: AtomicUsize::new(cap),
            refused: Mutex::new(None),
        }
    }

    /// May one more instance start, with `live` running?
    fn admit(&self, live: usize) -> Result<(), String> {
        if live < self.cap.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Ok(r) = self.refused.lock()
            && let Some((n, at, why)) = &*r
            && live >= *n
            && at.elapsed() < Duration::from_secs(5)
        {
            return Err(why.clone());
        }
        let max = max_map_count();
        let now = count_maps();
        let per = if live >= 16 {
            now.saturating_sub(self.base).div_ceil(live).max(1)
        } else {
            MAPS_PER_INSTANCE
        };
        let room = max.saturating_sub(now + MAPS_RESERVE) / per;
        if room == 0 {
            let why = format!(
                "wasm: no room for another instance: paddock has {now} memory mappings and the kernel allows {max} (vm.max_map_count); each instance takes about {per}, so {live} instances is the most this host allows; raise it, e.g. `sysctl -w vm.max_map_count=1048576`"
            );
            if let Ok(mut r) = self.refused.lock() {
                *r = Some((live, Instant::now(), why.clone()));
            }
            return Err(why);
        }
        self.cap.store(live + room, Ordering::Relaxed);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The ticker and metered tasks

/// Advances the epoch of every engine every `TICK`, but only while some guest task is being
/// polled: an idle paddock (or one whose wasm apps all wait for I/O or timers) wakes no one.
struct Ticker {
    active: AtomicUsize,
    stop: AtomicBool,
    engines: Mutex<Vec<Engine>>,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    fn start() -> std::io::Result<Arc<Ticker>> {
        let t = Arc::new(Ticker {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            engines: Mutex::new(vec![]),
            thread: OnceLock::new(),
        });
        let t2 = t.clone();
        let h = std::thread::Builder::new()
            .name("paddock-epoch".into())
            .spawn(move || {
                loop {
                    if t2.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if t2.active.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    for e in t2.engines.lock().map(|g| g.clone()).unwrap_or_default() {
                        e.increment_epoch();
                    }
                }
            })?;
        let _ = t.thread.set(h.thread().clone());
        Ok(t)
    }
    fn enter(&self) {
        if self.active.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(th) = self.thread.get()
        {
            th.unpark();
        }
    }
    fn leave(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(th) = self.thread.get() {
            th.unpark();
        }
    }
}

/// A guest's task, measuring the time spent in its polls (for `cpu`) and telling the ticker
/// when guests run.
struct Metered<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    ticker: Arc<Ticker>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.ticker.enter();
        let start = self.shared.now_ns();
        self.shared.poll_start.store(start, Ordering::Relaxed);
        let r = self.inner.as_mut().poll(cx);
        let spent = self.shared.now_ns().saturating_sub(start);
        self.shared.busy_ns.fetch_add(spent, Ordering::Relaxed);
        self.shared.poll_start.store(0, Ordering::Relaxed);
        self.ticker.leave();
        r
    }
}

// ---------------------------------------------------------------------------------------------
// The host

impl WasmHost {
    pub fn new(opts: HostOptions, on_exit: ExitSink) -> Result<WasmHost, String> {
        let cache = cache::Cache::new(opts.cache_dir.clone())?;
        guard::init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.workers.max(1))
            .max_blocking_threads(16)
            // Check timers, I/O and newly started instances after every few guest slices
            // (tokio's defaults, 61 and 31 polls, would let a few spinning guests delay a
            // sleeping guest's wake-up by hundreds of milliseconds).
            .event_interval(2)
            .global_queue_interval(4)
            .thread_name("paddock-wasm")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the wasm runtime: {e}"))?;
        let ticker =
            Ticker::start().map_err(|e| format!("cannot start the epoch ticker thread: {e}"))?;
        Ok(WasmHost {
            inner: Arc::new(Inner {
                opts,
                cache,
                plain: OnceLock::new(),
                fueled: OnceLock::new(),
                modules: Mutex::new(HashMap::new()),
                hashes: Mutex::new(HashMap::new()),
                ticker,
                live: AtomicUsize::new(0),
                maps: MapBudget::new(),
                on_exit,
                origin: Instant::now(),
            }),
            rt: Some(rt),
        })
    }

    /// The per-request side of an `[http]` app (see `http`): its accept loops and requests run
    /// on this host's runtime, its instance ends are reported through the exit sink.
    pub fn served(
        &self,
        name: std::sync::Arc<str>,
        app: usize,
    ) -> Result<Arc<http::Served>, String> {
        let rt = self
            .rt
            .as_ref()
            .ok_or("the wasm runtime has shut down")?
            .handle()
            .clone();
        Ok(http::Served::new(name, app, self.inner.clone(), rt))
    }

    /// Calls `program`'s exported health function in a fresh instance (see
    /// [`Instance::call_health`]), for an app without a running instance of its own (an
    /// `[http]` app).
    pub fn call_health(
        &self,
        program: &Arc<Program>,
        budget: Duration,
    ) -> impl Future<Output = Result<u32, String>> + Send + 'static + use<> {
        let (program, inner) = (program.clone(), self.inner.clone());
        let task = self
            .rt
            .as_ref()
            .map(|rt| rt.spawn(async move { health_call(&inner, &program, budget).await }));
        async move {
            let Some(task) = task else {
                return Err("the wasm runtime has shut down".into());
            };
            match tokio::time::timeout(budget + Duration::from_secs(1), task).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("health task failed: {e}")),
                Err(_) => Err(format!(
                    "health function did not return within {}",
                    crate::config::units::format_duration(budget + Duration::from_secs(1))
                )),
            }
        }
    }

    /// Running instances.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Loads (compiling or from the cache) and links the module of a wasm app, and prepares its
    /// start. The error names what is wrong with the module, without the file/key prefix.
    pub fn program(&self, spec: &AppSpec) -> Result<Arc<Program>, String> {
        let w = spec
            .wasm
            .as_ref()
            .ok_or_else(|| format!("{} is not a wasm app", spec.name))?;
        let flavor = self.inner.flavor(w.fuel.is_some())?;
        let compiled = self.inner.compiled(&flavor, w)?;
        match (&*compiled, &spec.http) {
            (Compiled::Http { .. }, None) => {
                return Err(format!(
                    "{} is a wasi:http component (it exports wasi:http/incoming-handler): paddock serves it per request; add an [http] table with the addresses to serve, as in listen = [\"127.0.0.1:8080\"]",
                    w.module.display()
                ));
            }
            (c, _)
                if spec
                    .health
                    .as_ref()
                    .is_some_and(|h| h.probe == crate::config::health::Probe::Wasm)
                    && !matches!(
                        c,
                        Compiled::Core { health: true, .. }
                            | Compiled::Component { health: true, .. }
                            | Compiled::Http { health: true, .. }
                    ) =>
            {
                return Err(format!(
                    "{} exports no `health` function, which [health] kind = \"wasm\" calls: export `health` (() -> i32 from a core module, `health: func() -> u32` from a component), or use another kind of check",
                    w.module.display()
                ));
            }
            (Compiled::Component { .. }, Some(_)) => {
                return Err(format!(
                    "{} is a wasi:cli/command component (it exports wasi:cli/run, not wasi:http/incoming-handler): remove [http], or build the module for the wasi:http/proxy world",
                    w.module.display()
                ));
            }
            _ => {}
        }
        let argv0 = w
            .module
            .file_name()
            .map_or_else(|| spec.name.clone(), |n| n.to_string_lossy().into_owned());
        Ok(Arc::new(Program {
            kind: match &*compiled {
                Compiled::Core { .. } => Kind::Core,
                Compiled::Component { .. } => Kind::Component,
                Compiled::Http { .. } => Kind::Http,
            },
            http: spec.http.clone(),
            compiled,
            flavor,
            argv: std::iter::once(argv0)
                .chain(w.args.iter().cloned())
                .collect(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            preopens: w.preopens.clone(),
            net: Arc::new(w.net.clone()),
            memory: Some(
                spec.limits
                    .memory
                    .unwrap_or(crate::config::wasm::DEFAULT_WASM_MEMORY),
            ),
            default_memory: w.default_memory || spec.limits.memory.is_none(),
            nofile: spec
                .limits
                .nofile
                .unwrap_or(crate::config::wasm::DEFAULT_WASM_NOFILE),
            symlinks: w.symlinks,
            cpu: spec.limits.cpu,
            fuel: w.fuel,
            max_instances: w.max_instances,
            module: w.module.clone(),
        }))
    }

    /// Starts an instance of `program`; when it ends, `on_exit(app, generation, exit)` is called.
    /// Returns at once: instantiation and execution happen on the wasm runtime.
    pub fn start(
        &self,
        program: &Arc<Program>,
        app: usize,
        generation: u64,
        stdio: Stdio,
    ) -> Result<Instance, String> {
        let inner = &self.inner;
        let rt = self
            .rt
            .as_ref()
            .ok_or("the wasm runtime has shut down")?
            .handle()
            .clone();
        if inner.live.load(Ordering::SeqCst) >= inner.opts.slots as usize {
            return Err(format!(
                "wasm: the instance pool is full ({} instances; raise --wasm-slots)",
                inner.opts.slots
            ));
        }
        inner.maps.admit(inner.live.load(Ordering::SeqCst))?;
        let io = GuestIo {
            out: stdio.stdout,
            err: stdio.stderr.clone(),
            report: stdio.stderr,
            err_tail: Arc::default(),
        };
        let shared = Arc::new(Shared::new(inner.origin));
        inner.live.fetch_add(1, Ordering::SeqCst);
        let (i2, p2, s2) = (inner.clone(), program.clone(), shared.clone());
        let task = async move {
            let exit = run_instance(&p2, &s2, io).await;
            i2.live.fetch_sub(1, Ordering::SeqCst);
            (i2.on_exit)(app, generation, exit);
        };
        rt.spawn(Metered {
            inner: Box::pin(task),
            shared: shared.clone(),
            ticker: inner.ticker.clone(),
        });
        Ok(Instance {
            shared,
            program: program.clone(),
            inner: inner.clone(),
            rt,
        })
    }

    /// Instantiates `program` `n` times (each in a fresh store, dropped at once) without running
    /// it, and returns the time of each: the cost of a start, for benchmarks.
    #[doc(hidden)]
    pub fn bench_instantiate(&self, program: &Arc<Program>, n: usize) -> Vec<Duration> {
        let Some(rt) = &self.rt else { return vec![] };
        let (inner, program) = (self.inner.clone(), program.clone());
        rt.block_on(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let shared = Arc::new(Shared::new(inner.origin));
                let t = Instant::now();
                let ok = instantiate_only(&program, &shared).await;
                out.push(t.elapsed());
                if !ok {
                    break;
                }
            }
            out
        })
    }
}

/// `paddock doctor`: can this host run wasm apps? Builds the engine paddock would (pooling
/// allocator with a few slots, Cranelift for this CPU) and the WASI linkers; nothing runs.
pub fn probe() -> Result<String, String> {
    let opts = HostOptions {
        cache_dir: None,
        slots: 4,
        workers: 1,
    };
    Flavor::new(&opts, false)?;
    Ok(format!(
        "available (wasmtime 48, pooling allocator, {} worker threads for instances)",
        HostOptions::default_workers()
    ))
}

impl Drop for WasmHost {
    fn drop(&mut self) {
        self.inner.ticker.shutdown();
        if let Some(rt) = self.rt.take() {
            // Callable from within another runtime (the supervisor's), unlike a plain drop.
            rt.shutdown_background();
        }
    }
}

impl Inner {
    fn flavor(&self, fuel: bool) -> Result<Arc<Flavor>, String> {
        let cell = if fuel { &self.fueled } else { &self.plain };
        cell.get_or_init(|| {
            let f = Flavor::new(&self.opts, fuel).map(Arc::new);
            if let Ok(f) = &f
                && let Ok(mut e) = self.ticker.engines.lock()
            {
                e.push(f.engine.clone());
            }
            f
        })
        .clone()
    }

    fn module_hash(&self, w: &WasmSpec) -> Result<([u8; 32], Vec<u8>), String> {
        let bytes = crate::util::read_regular(&w.module, MAX_MODULE_BYTES)
            .map_err(|e| format!("{}: {e}", w.module.display()))?;
        let sha = cache::sha256(&bytes);
        Ok((sha, bytes))
    }

    fn compiled(&self, flavor: &Flavor, w: &WasmSpec) -> Result<Arc<Compiled>, String> {
        let fuel = w.fuel.is_some();
        // Fast path: the file is unchanged since it was last hashed and its module is loaded.
        let known = self
            .hashes
            .lock()
            .ok()
            .and_then(|h| h.get(&w.module).filter(|(s, _)| *s == w.stamp).map(|x| x.1));
        if let Some(sha) = known
            && let Some(r) = self
                .modules
                .lock()
                .ok()
                .and_then(|m| m.get(&(fuel, sha)).cloned())
        {
            return r;
        }
        let (sha, bytes) = self.module_hash(w)?;
        if let Ok(mut h) = self.hashes.lock() {
            h.insert(w.module.clone(), (w.stamp.clone(), sha));
        }
        if let Some(r) = self
            .modules
            .lock()
            .ok()
            .and_then(|m| m.get(&(fuel, sha)).cloned())
        {
            return r;
        }
        let r = self.load(flavor, &w.module, &bytes, &sha).map(Arc::new);
        if let Ok(mut m) = self.modules.lock() {
            m.insert((fuel, sha), r.clone());
        }
        r
    }

    /// Compiles (or loads from the cache) and links one module.
    fn load(
        &self,
        flavor: &Flavor,
        path: &Path,
        bytes: &[u8],
        sha: &[u8; 32],
    ) -> Result<Compiled, String> {
        let kind = inspect::sniff(bytes)
            .map_err(|why| format!("{} is not a WebAssembly module: {why}", path.display()))?;
        let engine = &flavor.engine;
        let key = cache::key(sha, kind != Kind::Core, engine);
        let invalid = |e: wasmtime::Error| {
            format!(
                "{} is not a valid {}: {}",
                path.display(),
                match kind {
                    Kind::Core => "WebAssembly module",
                    Kind::Component | Kind::Http => "WebAssembly component",
                },
                one_line(&e)
            )
        };
        match kind {
            Kind::Core => {
                let (module, outcome) = self.cache.load_or_build(
                    &key,
                    || engine.precompile_module(bytes).map_err(invalid),
                    |art| {
                        // SAFETY: see `Cache::load_or_build`: the bytes are an artifact this
                        // engine configuration produced, verified against its SHA-256.
                        unsafe { wasmtime::Module::deserialize(engine, art) }
                            .map_err(|e| one_line(&e))
                    },
                )?;
                note_outcome(path, outcome);
                link_core(flavor, path, &module)
            }
            Kind::Component | Kind::Http => {
                let (component, outcome) = self.cache.load_or_build(
                    &key,
                    || engine.precompile_component(bytes).map_err(invalid),
                    |art| {
                        // SAFETY: as above: an artifact this engine configuration produced,
                        // verified against its SHA-256 (`Cache::load_or_build`).
                        unsafe { wasmtime::component::Component::deserialize(engine, art) }
                            .map_err(|e| one_line(&e))
                    },
                )?;
                note_outcome(path, outcome);
                link_component(flavor, path, &component)
            }
        }
    }
}

fn note_outcome(path: &Path, outcome: cache::Outcome) {
    if outcome == cache::Outcome::Rebuilt {
        eprintln!(
            "paddock: wasm cache: {} compiled again; the cache entry is fixed",
            path.display()
        );
    }
}

pub use crate::util::human_bytes;

/// An error with its causes on one line.
fn one_line(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = vec![];
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

impl Flavor {
    fn new(opts: &HostOptions, fuel: bool) -> Result<Flavor, String> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let slots = opts.slots.max(1);
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(2))
            .total_memories(slots)
            .total_tables(slots.saturating_mul(2))
            .total_stacks(slots)
            .max_core_instances_per_component(PER_COMPONENT_INSTANCES)
            .max_memories_per_component(4)
            .max_tables_per_component(PER_COMPONENT_INSTANCES)
            .max_memories_per_module(1)
            .max_tables_per_module(2)
            .max_memory_size(crate::config::wasm::MAX_WASM_MEMORY as usize)
            .max_unused_warm_slots(100);
        let mut cfg = wasmtime::Config::new();
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .memory_init_cow(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .wasm_component_model(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(|e| {
            format!(
                "cannot create the wasm engine ({} instance slots): {}",
                slots,
                one_line(&e)
            )
        })?;
        let mut p1 = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |g: &mut Guest<WasiP1Ctx>| &mut g.wasi)
            .and_then(|()| guard::shadow_p1(&mut p1))
            .map_err(|e| format!("cannot set up WASI preview 1: {}", one_line(&e)))?;
        let mut p2 = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2)
            .and_then(|()| guard::shadow_p2(&mut p2))
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2))
            .map_err(|e| format!("cannot set up WASI preview 2: {}", one_line(&e)))?;
        // The names p1 defines, from the linker itself (a throwaway store; no instance).
        let p1_names = {
            let guest = Guest {
                wasi: WasiCtxBuilder::new().build_p1(),
                limiter: Limiter {
                    max: None,
                    default_max: false,
                    used: 0,
                    instances: 0,
                    refused: None,
                    shared: Arc::new(Shared::new(Instant::now())),
                    files: guard::Files::new(0, false, 0),
                },
                cpu: None,
                shared: Arc::new(Shared::new(Instant::now())),
                budget_ticks: None,
            };
            let mut store = Store::new(&engine, guest);
            p1.iter(&mut store)
                .filter(|(m, _, _)| *m == "wasi_snapshot_preview1")
                .map(|(_, n, _)| n.to_string())
                .collect()
        };
        Ok(Flavor {
            engine,
            p1,
            p2,
            p1_names,
        })
    }
}

/// WASI 0.2 packages whose interfaces paddock links (the `wasi:cli/command` world).
const P2_PACKAGES: [&str; 6] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

fn extern_kind(t: &wasmtime::ExternType) -> &'static str {
    match t {
        wasmtime::ExternType::Func(_) => "a function",
        wasmtime::ExternType::Memory(_) => "a memory",
        wasmtime::ExternType::Table(_) => "a table",
        wasmtime::ExternType::Global(_) => "a global",
        _ => "an item",
    }
}

fn link_core(flavor: &Flavor, path: &Path, module: &wasmtime::Module) -> Result<Compiled, String> {
    let file = path.display();
    for imp in module.imports() {
        let (m, n) = (imp.module(), imp.name());
        if m != "wasi_snapshot_preview1" {
            return Err(format!(
                "{file} imports `{m}::{n}` ({}), which paddock does not provide: a WASI preview 1 module may import only `wasi_snapshot_preview1` functions (build it for wasm32-wasip1, without other host imports)",
                extern_kind(&imp.ty())
            ));
        }
        if !flavor.p1_names.contains(n) {
            return Err(format!(
                "{file} imports `{m}::{n}`, which is not a WASI preview 1 function: paddock provides the {} functions of wasi_snapshot_preview1 (args_get, fd_write, path_open, poll_oneoff, proc_exit, …)",
                flavor.p1_names.len()
            ));
        }
    }
    match module.get_export("_start") {
        Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(format!(
                "{file} exports `_start` with the wrong type: a WASI command's `_start` takes and returns nothing"
            ));
        }
        None => {
            let has_init = module.get_export("_initialize").is_some();
            return Err(format!(
                "{file} exports no `_start` function{}: paddock runs WASI commands (a Rust or C program with a `main`, built for wasm32-wasip1)",
                if has_init {
                    " (it is a reactor/library module, with `_initialize`)"
                } else {
                    ""
                }
            ));
        }
    }
    let health = matches!(
        module.get_export("health"),
        Some(wasmtime::ExternType::Func(_))
    );
    let pre = flavor
        .p1
        .instantiate_pre(module)
        .map_err(|e| format!("{file} cannot be linked: {}", one_line(&e)))?;
    Ok(Compiled::Core { pre, health })
}

fn link_component(
    flavor: &Flavor,
    path: &Path,
    component: &wasmtime::component::Component,
) -> Result<Compiled, String> {
    let file = path.display();
    let engine = &flavor.engine;
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let http = exports
        .iter()
        .any(|n| n.starts_with("wasi:http/incoming-handler@0.2"));
    for (name, _) in ty.imports(engine) {
        let provided = P2_PACKAGES.iter().any(|p| name.starts_with(p))
            || (http && name.starts_with("wasi:http/"));
        if !provided {
            return Err(format!(
                "{file} imports `{name}`, which paddock does not provide: paddock runs components of the wasi:cli/command world (WASI 0.2 wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random and wasi:sockets) and, served per request with [http], of the wasi:http/proxy world"
            ));
        }
    }
    let health = exports.iter().any(|n| n == "health");
    if http {
        let pre = flavor
            .p2
            .instantiate_pre(component)
            .map_err(|e| format!("{file} cannot be linked: {}", one_line(&e)))?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(|e| {
            format!(
                "{file}: no usable `wasi:http/incoming-handler` export: {}",
                one_line(&e)
            )
        })?;
        return Ok(Compiled::Http { pre, health });
    }
    if !exports.iter().any(|n| n.starts_with("wasi:cli/run@0.2")) {
        return Err(format!(
            "{file} is a component of an unsupported world: it exports {}, and neither `wasi:cli/run@0.2.x` nor `wasi:http/incoming-handler@0.2.x`; paddock runs components of the wasi:cli/command world (a program with a `main`, built for wasm32-wasip2) and, with [http], of the wasi:http/proxy world",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    let pre = flavor
        .p2
        .instantiate_pre(component)
        .map_err(|e| format!("{file} cannot be linked: {}", one_line(&e)))?;
    let command = CommandPre::new(pre.clone())
        .map_err(|e| format!("{file}: no usable `wasi:cli/run` export: {}", one_line(&e)))?;
    Ok(Compiled::Component {
        pre,
        command,
        health,
    })
}

// ---------------------------------------------------------------------------------------------
// Running an instance

struct GuestIo {
    out: Option<crate::logs::Sink>,
    err: Option<crate::logs::Sink>,
    /// For paddock's own report of a trap (the guest's stream is in its store).
    report: Option<crate::logs::Sink>,
    /// The end of what the guest wrote to stderr (for the panic message of a trap).
    err_tail: Arc<panic::Tail>,
}

/// The store of a new instance, with limits, epoch deadline and fuel set.
fn new_store<W: Send + 'static>(
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
fn wasi_builder(
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

async fn run_instance(program: &Program, shared: &Arc<Shared>, mut io: GuestIo) -> Exit {
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
fn classify(
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

async fn write_report(sink: &mut Option<crate::logs::Sink>, text: &str) {
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
async fn instantiate_only(program: &Program, shared: &Arc<Shared>) -> bool {
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

async fn health_call(inner: &Inner, program: &Program, budget: Duration) -> Result<u32, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_budget_throttles_to_share() {
        let t0 = Instant::now();
        let mut b = CpuBudget::new(0.25, t0);
        // The initial burst is allowed.
        assert_eq!(b.charge(t0, 10_000_000), None);
        // Running flat out for 100 ms of wall time at a 25% share: must pause ~ 3x as long as
        // the excess, minus the burst.
        let t1 = t0 + Duration::from_millis(100);
        let pause = b.charge(t1, 100_000_000).expect("over budget");
        // tokens: 12.5ms burst - 10ms + 25ms refill (capped at 12.5ms) - 90ms = -77.5ms → 310ms
        let ms = pause.as_secs_f64() * 1000.0;
        assert!((300.0..=320.0).contains(&ms), "{ms}");
        // Over a long run, guest time / wall time converges to the share.
        let mut now = t1 + pause;
        let mut busy = 100_000_000u64;
        let start = (now, busy);
        for _ in 0..1000 {
            now += Duration::from_millis(10);
            busy += 10_000_000;
            if let Some(p) = b.charge(now, busy) {
                now += p;
            }
        }
        let share = (busy - start.1) as f64 / (now - start.0).as_nanos() as f64;
        assert!((0.24..=0.26).contains(&share), "{share}");
    }

    #[test]
    fn limiter_counts_and_refuses() {
        let shared = Arc::new(Shared::new(Instant::now()));
        let mut l = Limiter {
            max: Some(1 << 20),
            default_max: false,
            used: 0,
            instances: 4,
            refused: None,
            shared: shared.clone(),
            files: guard::Files::new(16, false, 0),
        };
        assert!(l.grow(0, 512 << 10));
        assert!(l.grow(512 << 10, 1 << 20));
        assert!(!l.grow(1 << 20, (1 << 20) + 65536));
        assert_eq!(shared.memory.load(Ordering::Relaxed), 1 << 20);
        let n = l.note().unwrap();
        assert!(
            n.contains("1.06MiB was refused") && n.contains("= 1MiB"),
            "{n}"
        );
        assert_eq!(human_bytes(33620400), "32.06MiB");
        assert_eq!(human_bytes(640 << 10), "640KiB");
        assert_eq!(human_bytes(100), "100B");
    }
}
