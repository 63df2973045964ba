//! The supervisor's side of level `wasm`: the wasm host is created when the first wasm app
//! appears (at start or by `update`); every wasm app's module is loaded and linked while the
//! configuration is validated (so a bad module is a config error that changes nothing); a spawn
//! is an instantiation on the wasm runtime; the end of an instance comes back as
//! `Msg::WasmExited` and feeds the same state machine as a process exit.

use super::{App, Msg, Supervisor};
use crate::config::{AppSpec, ConfigError};
use crate::driver::wasm::{ExitSink, HostOptions, Instance, Program, Stdio, WasmHost};
use crate::listen::Registry;
use crate::runner::Runner;
use crate::supervise::Exit;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Per app.
#[derive(Default)]
pub(super) struct WasmApp {
    /// Prepared at the first spawn after (re)configuration.
    pub(super) program: Option<Result<Arc<Program>, String>>,
    /// The running instance and its generation (exits of older generations are ignored).
    /// Boxed, like `http`: a native app pays a pointer for each, not their size.
    running: Option<Box<(u64, Instance)>>,
    /// An app served per request (`[http]`): listeners, runs, figures (see `http_apps.rs`).
    pub(super) http: Option<Box<super::http_apps::HttpApp>>,
}

/// Paddock-wide.
pub(super) struct WasmState {
    host: OnceCell<Result<WasmHost, String>>,
    cache_dir: PathBuf,
    slots: Option<u32>,
    tx: mpsc::UnboundedSender<Msg>,
    pub(super) generation: u64,
    /// The sockets paddock holds for apps (`crate::listen`).
    pub(super) listeners: Arc<Mutex<Registry>>,
}

impl WasmState {
    /// Instance exits are sent to `tx`.
    pub(super) fn new(
        state_dir: &std::path::Path,
        slots: Option<u32>,
        tx: mpsc::UnboundedSender<Msg>,
    ) -> WasmState {
        WasmState {
            host: OnceCell::new(),
            cache_dir: state_dir.join("wasm-cache"),
            slots,
            tx,
            generation: 0,
            listeners: Default::default(),
        }
    }

    /// The SHA-256 (hex) of the module bytes compiled for `w`, when the host has compiled them.
    pub(super) fn module_sha(&self, w: &crate::config::wasm::WasmSpec) -> Option<String> {
        let h = self.host.get()?.as_ref().ok()?;
        let sha = h.module_sha(&w.module, &w.stamp)?;
        Some(crate::bundle::hex(&sha))
    }

    pub(super) fn host(&self, wasm_apps: usize) -> Result<&WasmHost, String> {
        self.host
            .get_or_init(|| {
                let tx = self.tx.clone();
                let sink: ExitSink = Arc::new(move |app, generation, exit| {
                    let _ = tx.send(Msg::WasmExited {
                        app,
                        generation,
                        exit,
                    });
                });
                WasmHost::new(
                    HostOptions {
                        cache_dir: Some(self.cache_dir.clone()),
                        slots: self
                            .slots
                            .unwrap_or_else(|| HostOptions::default_slots(wasm_apps)),
                        workers: HostOptions::default_workers(),
                    },
                    sink,
                )
            })
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// A handle to load modules with from another thread (None before the host exists).
    pub(super) fn loader(&self) -> Option<crate::driver::wasm::Loader> {
        self.host.get()?.as_ref().ok().map(|h| h.loader())
    }

    /// Loads the module of every wasm app in `specs`; the errors, as config errors.
    pub(super) fn check(&self, specs: &BTreeMap<String, AppSpec>) -> Vec<ConfigError> {
        check_with(specs, |n| self.host(n))
    }
}

/// `paddock check`: the wasm apps' modules loaded and linked by a throwaway host (compiled in
/// memory, no cache, nothing run), so `check` reports exactly what `serve` would.
pub(super) fn check_standalone(specs: &BTreeMap<String, AppSpec>) -> Vec<ConfigError> {
    let cell = OnceCell::new();
    check_with(specs, |_| {
        cell.get_or_init(|| {
            WasmHost::new(
                HostOptions {
                    cache_dir: None,
                    slots: 4,
                    workers: 1,
                },
                Arc::new(|_, _, _| {}),
            )
        })
        .as_ref()
        .map_err(|e| e.clone())
    })
}

/// [`WasmState::check`] from another thread, with a host's loader.
pub(super) fn check_with_loader(
    loader: &crate::driver::wasm::Loader,
    specs: &BTreeMap<String, AppSpec>,
) -> Vec<ConfigError> {
    specs
        .values()
        .filter(|s| Runner::of(s) != Runner::Process)
        .filter_map(|s| {
            loader
                .program(s)
                .err()
                .map(|e| crate::config::wasm::module_error(s, &e))
        })
        .collect()
}

/// Loads every wasm app's module with the host `host(number of wasm apps)` gives.
fn check_with<'h>(
    specs: &BTreeMap<String, AppSpec>,
    host: impl FnOnce(usize) -> Result<&'h WasmHost, String>,
) -> Vec<ConfigError> {
    let wasm: Vec<&AppSpec> = specs
        .values()
        .filter(|s| Runner::of(s) != Runner::Process)
        .collect();
    if wasm.is_empty() {
        return vec![];
    }
    let host = match host(wasm.len()) {
        Ok(h) => h,
        Err(e) => {
            return wasm
                .iter()
                .map(|s| crate::config::wasm::module_error(s, &e))
                .collect();
        }
    };
    wasm.iter()
        .filter_map(|s| {
            host.program(s)
                .err()
                .map(|e| crate::config::wasm::module_error(s, &e))
        })
        .collect()
}

impl Supervisor {
    /// Instantiates a wasm app (the spawn of level `wasm`); an `[http]` app starts serving.
    pub(super) fn spawn_wasm(&mut self, idx: usize) -> Result<i32, String> {
        let n = self.fleet.named().len();
        self.wasm.generation += 1;
        let generation = self.wasm.generation;
        let host = self.wasm.host(n)?;
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let program = app
            .wasm
            .program
            .get_or_insert_with(|| host.program(&app.spec))
            .clone()?;
        let stdio = self.wasm_stdio(idx);
        if program.is_http() {
            return self.spawn_http(idx, program, generation, stdio);
        }
        let host = self.wasm.host(n)?;
        let inst = host.start(&program, idx, generation, stdio)?;
        if let Some(app) = self.apps[idx].as_mut() {
            app.wasm.running = Some(Box::new((generation, inst)));
        }
        Ok(0)
    }

    /// Where a wasm app's output goes: straight into the logs, no pipe (see
    /// `crate::logs::Sink`).
    pub(super) fn wasm_stdio(&self, idx: usize) -> Stdio {
        let Some(app) = self.apps[idx].as_ref() else {
            return Stdio::default();
        };
        if app.spec.logs.stdout == crate::config::StdoutMode::Inherit {
            return Stdio::default();
        }
        let out = self.logs.sink(app.name.clone(), crate::logs::Stream::Out);
        let err = if app.spec.logs.combine {
            out.clone()
        } else {
            self.logs.sink(app.name.clone(), crate::logs::Stream::Err)
        };
        Stdio {
            stdout: Some(out),
            stderr: Some(err),
        }
    }

    /// An instance ended.
    pub(super) fn wasm_exited(&mut self, idx: usize, generation: u64, exit: Exit) {
        let Some(app) = self.apps.get_mut(idx).and_then(|a| a.as_mut()) else {
            return;
        };
        let http_run = app.wasm.http.as_ref().and_then(|h| h.run_generation());
        if app.wasm.running.as_ref().map(|r| r.0) != Some(generation)
            && http_run != Some(generation)
        {
            return; // an instance the app no longer tracks
        }
        app.wasm.running = None;
        if let Some(h) = app.wasm.http.as_mut() {
            h.end_run();
        }
        let now = self.now();
        self.board_touch(idx);
        self.fleet.exited(idx, exit, now);
    }

    /// The stop of a wasm app (its runner's `Signal` and `KillGroup`): interrupt the instance
    /// (an `[http]` app: drain, or interrupt, its requests).
    pub(super) fn wasm_interrupt(&mut self, idx: usize, kill: bool) {
        if self.http_stop(idx, kill) {
            return;
        }
        if let Some((_, inst)) = self.app(idx).and_then(|a| a.wasm.running.as_deref()) {
            inst.interrupt();
        }
    }

    /// The spec changed: prepare the module again at the next spawn.
    pub(super) fn wasm_reconfigured(app: &mut App) {
        app.wasm.program = None;
    }
}

/// Linear memory in use by a running wasm app.
pub(super) fn memory_bytes(app: &App) -> Option<u64> {
    app.wasm.running.as_deref().map(|(_, i)| i.memory_bytes())
}

/// `memory_bytes` for another thread (the status board).
pub(super) fn live_memory(app: &App) -> Option<impl Fn() -> u64 + Send + Sync + 'static> {
    app.wasm.running.as_deref().map(|(_, i)| i.memory_gauge())
}

/// What `paddock signal` answers for a wasm app.
pub(super) const NO_SIGNALS: &str =
    "a wasm app has no process to signal (WASI has no signals): use stop or restart";
