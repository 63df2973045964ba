//! Loading a module: reading and hashing the file, compiling it (or taking it from the on-disk
//! `cache`), and linking it against the WASI linkers of its engine [`Flavor`] (plain or fuel
//! metered), checking its imports and exports so that a module paddock cannot run is refused
//! with a precise reason before any start.

use super::inspect::{self, Kind};
use super::store::{Guest, Limiter, P2Wasi, Shared};
use super::{Compiled, HostOptions, Inner, cache, guard, one_line};
use crate::config::wasm::WasmSpec;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Engine, Linker, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
/// Largest module file paddock reads.
const MAX_MODULE_BYTES: u64 = 256 << 20;
/// Core instances, memories and tables the pool allows one component (bounds `max_instances`).
const PER_COMPONENT_INSTANCES: u32 = crate::config::wasm::MAX_MAX_INSTANCES;

/// An engine with its linkers. Two flavors exist because fuel metering is an engine-wide
/// setting that slows every module down: apps with `[wasm] fuel` get an engine of their own
/// (created only when such an app exists).
pub(super) struct Flavor {
    pub(super) engine: Engine,
    pub(super) p1: Linker<Guest<WasiP1Ctx>>,
    pub(super) p2: wasmtime::component::Linker<Guest<P2Wasi>>,
    /// Functions of `wasi_snapshot_preview1` the p1 linker defines.
    pub(super) p1_names: HashSet<String>,
}

impl Inner {
    pub(super) fn flavor(&self, fuel: bool) -> Result<Arc<Flavor>, String> {
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

    pub(super) fn compiled(&self, flavor: &Flavor, w: &WasmSpec) -> Result<Arc<Compiled>, String> {
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

impl Flavor {
    pub(super) fn new(opts: &HostOptions, fuel: bool) -> Result<Flavor, String> {
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
