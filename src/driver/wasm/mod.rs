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
//!
//! Layout: this file holds the host ([`WasmHost`]), a prepared module ([`Program`]) and the handle
//! on a running instance ([`Instance`]); `load` compiles and links modules, `run` runs an
//! instance to its end, `store` holds what a store carries (WASI state, limits, CPU budget),
//! `sched` admits starts and paces guests (memory mappings, the epoch ticker).

pub mod cache;
mod guard;
pub mod http;
mod load;
pub use crate::config::wasm::{inspect, net};
mod panic;
mod run;
mod sched;
mod store;
use crate::config::AppSpec;
use crate::config::wasm::Preopen;
use crate::supervise::Exit;
use inspect::Kind;
use load::Flavor;
use net::NetPolicy;
use run::{GuestIo, health_call, instantiate_only, run_instance};
use sched::{MapBudget, Metered, Ticker};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use store::Shared;
pub use store::{CpuBudget, Guest, P2Wasi};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
/// The epoch period: how long a guest runs before it yields (and the granularity of `cpu`).
pub const TICK: Duration = Duration::from_millis(10);

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

/// See [`WasmHost::loader`].
pub struct Loader {
    inner: Arc<Inner>,
}

impl Loader {
    /// [`WasmHost::program`]: the module loaded and linked (from the host's caches, or
    /// compiled now).
    pub fn program(&self, spec: &AppSpec) -> Result<Arc<Program>, String> {
        self.inner.program(spec)
    }
}

impl Inner {
    fn program(&self, spec: &AppSpec) -> Result<Arc<Program>, String> {
        let w = spec
            .wasm
            .as_ref()
            .ok_or_else(|| format!("{} is not a wasm app", spec.name))?;
        let flavor = self.flavor(w.fuel.is_some())?;
        let compiled = self.compiled(&flavor, w)?;
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
            http: spec.http.as_deref().cloned(),
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
}

/// The engine, the runtime the instances run on, the compiled modules.
pub struct WasmHost {
    inner: Arc<Inner>,
    rt: Option<tokio::runtime::Runtime>,
    /// Where the connections and requests of `[http]` apps run, made with the first of them:
    /// tokio's default intervals, not the command apps' (`event_interval(2)` picked up new
    /// connections between every two polls, so at 64 connections each request waited behind
    /// newer ones: p99 17.9 ms instead of 11.3 ms, `wasmtime serve` 12.9-14.4 ms).
    http_rt: OnceLock<tokio::runtime::Runtime>,
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

    /// `memory_bytes` for another thread, whenever it asks (the status board).
    pub fn memory_gauge(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.memory.load(Ordering::Relaxed)
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

impl WasmHost {
    pub fn new(opts: HostOptions, on_exit: ExitSink) -> Result<WasmHost, String> {
        let cache = cache::Cache::new(opts.cache_dir.clone())?;
        guard::init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.workers.max(1))
            .max_blocking_threads(16)
            // Check timers, I/O and newly started instances after every few guest slices
            // (tokio's defaults, 61 and 31 polls, would let a few spinning guests delay a
            // sleeping guest's wake-up by hundreds of milliseconds). Requests of `[http]` apps
            // run on a runtime of their own (`served`).
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
            http_rt: OnceLock::new(),
        })
    }

    /// The per-request side of an `[http]` app (see `http`): its accept loops and requests run
    /// on this host's runtime, its instance ends are reported through the exit sink.
    pub fn served(
        &self,
        name: std::sync::Arc<str>,
        app: usize,
    ) -> Result<Arc<http::Served>, String> {
        if self.rt.is_none() {
            return Err("the wasm runtime has shut down".into());
        }
        if self.http_rt.get().is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.inner.opts.workers.max(1))
                .thread_name("paddock-http")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime for requests: {e}"))?;
            if let Err(rt) = self.http_rt.set(rt) {
                rt.shutdown_background();
            }
        }
        let rt = self
            .http_rt
            .get()
            .ok_or("the runtime for requests did not start")?
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

    /// A handle that loads modules into this host's cache from any thread (`update` compiles
    /// new modules off the supervisor's loop with it).
    pub fn loader(&self) -> Loader {
        Loader {
            inner: self.inner.clone(),
        }
    }

    /// The SHA-256 of the bytes this host compiled for `module` as it was at `stamp` (its size,
    /// mtime and inode), if it compiled them: what a generation records as the module the app
    /// runs, without reading the file again (it may hold other bytes by now).
    pub fn module_sha(
        &self,
        module: &std::path::Path,
        stamp: &crate::config::wasm::ModuleStamp,
    ) -> Option<[u8; 32]> {
        let h = self.inner.hashes.lock().ok()?;
        h.get(module).filter(|(s, _)| s == stamp).map(|x| x.1)
    }

    /// Loads (compiling or from the cache) and links the module of a wasm app, and prepares its
    /// start. The error names what is wrong with the module, without the file/key prefix.
    pub fn program(&self, spec: &AppSpec) -> Result<Arc<Program>, String> {
        self.inner.program(spec)
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
        for rt in [self.rt.take(), self.http_rt.take()].into_iter().flatten() {
            // Callable from within another runtime (the supervisor's), unlike a plain drop.
            rt.shutdown_background();
        }
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
