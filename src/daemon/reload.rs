//! `reread`, `update` and SIGHUP read the app files and load their wasm modules off the
//! supervisor's loop: a blocking task reads and parses the files and compiles new modules
//! (seconds for a large module), then sends `Msg::Loaded` back; the loop meanwhile answers
//! `status` and supervises. The result is applied on the loop (`update.rs`), which is cheap.
//!
//! One load runs at a time. Requests that come while one runs are answered by the next load,
//! started when the running one is in: a request never gets a reading of the files older than
//! itself, and two loads never race to apply.
//!
//! Until paddock has a wasm host (no wasm app was ever loaded), the files come back unchecked;
//! if they name wasm apps, the host is created on the loop (cheap: no module is compiled) and a
//! second task loads their modules.

use super::*;

/// App files as read and checked off the loop.
pub struct Loaded {
    pub(super) specs: BTreeMap<String, AppSpec>,
    pub(super) errors: Vec<config::ConfigError>,
    /// The wasm modules were loaded too (else they are when this is applied).
    checked: bool,
}

/// Who waits for a load.
pub(super) enum Then {
    Reread(oneshot::Sender<Reply>),
    Update(oneshot::Sender<Reply>),
    Sighup,
}

#[derive(Default)]
pub(super) struct Reloads {
    running: bool,
    /// Waiting for the load that runs now.
    batch: Vec<Then>,
    /// Waiting for the next load.
    next: Vec<Then>,
    /// Descriptors held back for reading the app files: when the apps' pipes and sockets took
    /// every other descriptor paddock may have, `update` can still read the files (they are
    /// given up as the load begins, and taken again when it is done).
    reserve: Vec<std::fs::File>,
}

/// Descriptors in `Reloads::reserve`: a directory and a file open at once, with room.
const RESERVE_FDS: usize = 4;

impl Reloads {
    pub(super) fn refill(&mut self) {
        while self.reserve.len() < RESERVE_FDS {
            match std::fs::File::open("/dev/null") {
                Ok(f) => self.reserve.push(f),
                Err(_) => return,
            }
        }
    }
}

impl Supervisor {
    /// Reads the app files for `then`, off the loop.
    pub(super) fn begin_reload(&mut self, then: Then) {
        if matches!(then, Then::Sighup)
            && self.reloads.next.iter().any(|t| matches!(t, Then::Sighup))
        {
            return; // one SIGHUP queued is enough: a flood of them is one update
        }
        self.reloads.next.push(then);
        if !self.reloads.running {
            self.start_reload();
        }
    }

    fn start_reload(&mut self) {
        self.reloads.running = true;
        self.reloads.batch = std::mem::take(&mut self.reloads.next);
        let dirs = self.opts.config_dirs.clone();
        let loader = self.wasm.loader();
        let tx = self.tx.clone();
        let reserve = std::mem::take(&mut self.reloads.reserve);
        tokio::task::spawn_blocking(move || {
            drop(reserve);
            // A panic here must still answer the requests (and free the next load).
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (specs, mut errors) = config::load_dirs_all(&dirs);
                if let Some(l) = &loader {
                    errors.extend(wasm_apps::check_with_loader(l, &specs));
                }
                Loaded {
                    specs,
                    errors,
                    checked: loader.is_some(),
                }
            }))
            .unwrap_or_else(|_| Loaded {
                specs: BTreeMap::new(),
                errors: vec![config::ConfigError {
                    file: dirs.first().cloned().unwrap_or_default(),
                    line: 0,
                    col: 0,
                    message: "internal error while reading the app files (paddock's log says more); nothing was changed".into(),
                }],
                checked: true,
            });
            let _ = tx.send(Msg::Loaded(Box::new(loaded)));
        });
    }

    /// A load is in: every request of its batch is answered from it (the first `update`
    /// applies it; those after it find nothing changed).
    pub(super) fn on_loaded(&mut self, mut loaded: Loaded) {
        self.reloads.refill();
        if !loaded.checked {
            let wasm = loaded
                .specs
                .values()
                .filter(|s| Runner::of(s) != Runner::Process)
                .count();
            loaded.checked = true;
            if wasm > 0 {
                let loader = match self.wasm.host(wasm) {
                    Ok(h) => h.loader(),
                    Err(_) => {
                        // No host: the check reports that, for each wasm app.
                        loaded.errors.extend(self.wasm.check(&loaded.specs));
                        return self.on_loaded(loaded);
                    }
                };
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    loaded
                        .errors
                        .extend(wasm_apps::check_with_loader(&loader, &loaded.specs));
                    let _ = tx.send(Msg::Loaded(Box::new(loaded)));
                });
                return;
            }
        }
        self.reloads.running = false;
        let batch = std::mem::take(&mut self.reloads.batch);
        let loaded = Some(loaded);
        for then in batch {
            // The files as read; a second update of the batch re-reads the applied result.
            let l = loaded.as_ref().map(|l| Loaded {
                specs: l.specs.clone(),
                errors: l.errors.clone(),
                checked: true,
            });
            match then {
                Then::Reread(reply) => {
                    let (_, r) = self.reread_with(l);
                    self.send_reply(reply, Reply::json(if r.ok { 200 } else { 422 }, &r));
                }
                Then::Update(reply) => {
                    let r = self.update_with(l);
                    self.send_reply(reply, r);
                }
                Then::Sighup => {
                    let r = self.update_with(l);
                    eprintln!("paddock: SIGHUP: update: {}", r.body.trim());
                }
            }
        }
        if !self.reloads.next.is_empty() {
            self.start_reload();
        }
    }
}
