//! `[[listen]]`: sockets paddock binds for native apps, hands over with the systemd protocol
//! at each spawn, keeps across restarts, `update`s and crashes, and watches for on-demand start
//! and idle stop.
//!
//! A socket is bound when the app that names it is loaded, from the one listener registry
//! (`crate::listen`, shared with the per-request wasm apps): a restart or an `update` that keeps
//! the address finds the same socket, so connections that arrive while the app is down wait in
//! the kernel's backlog for the next process instead of being refused. Every socket is also
//! given to the descriptor holder (`listen/ADDRESS`), so that a crash or a re-exec of paddock
//! keeps it too: the next paddock takes it back before it loads any app.
//!
//! On-demand apps (`start = "on-connection"`): while such an app is down (STOPPED, EXITED), a
//! task waits for its sockets to become readable and sends `Msg::Connection`; the fleet gets a
//! start, the connection waits in the backlog until the app accepts it. While it runs with
//! `idle_stop`, a task looks at the kernel's socket tables (`crate::listen::busy`) and sends
//! `Msg::Idle` once no connection was open or waiting for that long; the app is stopped and its
//! sockets watched again.

use super::*;
use crate::listen::{Addr, Socket};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, RawFd};

/// Per app: its sockets and the tasks watching them.
#[derive(Default)]
pub(super) struct AppSockets {
    specs: Vec<crate::config::listen::ListenSpec>,
    sockets: Vec<Arc<Socket>>,
    names: String,
    watch: Vec<tokio::task::JoinHandle<()>>,
    idle: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for AppSockets {
    fn drop(&mut self) {
        self.disarm();
        if let Some(t) = self.idle.take() {
            t.abort();
        }
    }
}

impl AppSockets {
    fn disarm(&mut self) {
        for t in self.watch.drain(..) {
            t.abort();
        }
    }

    /// The sockets' local addresses, as bound.
    pub(super) fn shown(&self) -> Vec<String> {
        self.sockets.iter().map(|s| s.local.clone()).collect()
    }
}

/// Paddock-wide: the addresses whose sockets are in the descriptor holder.
#[derive(Default)]
pub(super) struct HeldSockets(BTreeSet<Addr>);

/// The holder's name for a socket.
fn held_name(a: &Addr) -> String {
    format!("listen/{a}")
}

/// Takes back the sockets an earlier paddock left in the descriptor holder (before any app is
/// loaded: binding them again would fail while the holder keeps them). The ones taken are the
/// holder's still (the first sweep drops those no app names); the others are dropped from it.
pub(super) fn adopt_held(
    registry: &std::sync::Mutex<crate::listen::Registry>,
    held: &mut BTreeMap<String, OwnedFd>,
    fdstore: Option<&mut crate::fdstore::Client>,
    in_holder: &mut HeldSockets,
) {
    let names: Vec<String> = held
        .keys()
        .filter(|k| k.starts_with("listen/"))
        .cloned()
        .collect();
    let Ok(mut r) = registry.lock() else {
        return;
    };
    let mut fdstore = fdstore;
    for name in names {
        let Some(fd) = held.remove(&name) else {
            continue;
        };
        match Addr::parse(&name["listen/".len()..]) {
            Ok(a) if r.adopt(a.clone(), fd) => {
                in_holder.0.insert(a);
            }
            _ => {
                eprintln!(
                    "paddock: the descriptor holder's {name} is not a socket listening there; bound anew"
                );
                if let Some(fs) = fdstore.as_deref_mut() {
                    fs.del(&name);
                }
            }
        }
    }
}

impl Supervisor {
    /// Binds (or finds) the sockets of the app's `[[listen]]` tables; keeps them in the
    /// holder. Called when the app is loaded, when a new definition applies, and at each spawn.
    pub(super) fn sync_sockets(&mut self, idx: usize) -> Result<(), String> {
        let Some(app) = self.apps[idx].as_ref() else {
            return Ok(());
        };
        if app.sockets.specs == app.spec.listen
            && app.sockets.sockets.len() == app.spec.listen.len()
        {
            return Ok(());
        }
        // Other sockets: what watched the old ones is dropped (re-armed by the caller).
        if let Some(app) = self.apps[idx].as_mut() {
            app.sockets.disarm();
            if let Some(t) = app.sockets.idle.take() {
                t.abort();
            }
        }
        let Some(app) = self.apps[idx].as_ref() else {
            return Ok(());
        };
        let specs = app.spec.listen.clone();
        let addrs: Vec<Addr> = specs.iter().map(|s| s.addr.clone()).collect();
        let sockets = self
            .wasm
            .listeners
            .lock()
            .map_err(|_| "internal: listener registry poisoned".to_string())?
            .acquire(&addrs);
        let sockets = match sockets {
            Ok(s) => s,
            Err(e) => {
                self.sweep_sockets();
                return Err(e);
            }
        };
        for (s, spec) in sockets.iter().zip(&specs) {
            s.set_access(spec.mode, spec.owner)?;
        }
        if let Some(app) = self.apps[idx].as_mut() {
            app.sockets.names = specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(":");
            app.sockets.sockets = sockets;
            app.sockets.specs = specs;
        }
        self.sweep_sockets();
        Ok(())
    }

    /// Closes the sockets no app names any more, and brings the holder in line.
    pub(super) fn sweep_sockets(&mut self) {
        let Ok(mut r) = self.wasm.listeners.lock() else {
            return;
        };
        r.sweep();
        let now: BTreeMap<Addr, Arc<Socket>> =
            r.iter().map(|(a, s)| (a.clone(), s.clone())).collect();
        drop(r);
        let Some(fs) = self.fdstore.as_mut() else {
            return;
        };
        let held = &mut self.held_sockets.0;
        for (a, s) in &now {
            if !held.contains(a) {
                fs.put(&held_name(a), s.fd());
                held.insert(a.clone());
            }
        }
        held.retain(|a| {
            let keep = now.contains_key(a);
            if !keep {
                fs.del(&held_name(a));
            }
            keep
        });
    }

    /// The app's sockets for a spawn: descriptors and `LISTEN_FDNAMES`.
    pub(super) fn spawn_sockets(&mut self, idx: usize) -> Result<(Vec<RawFd>, String), String> {
        self.sync_sockets(idx)?;
        let Some(app) = self.app(idx) else {
            return Ok((vec![], String::new()));
        };
        Ok((
            app.sockets
                .sockets
                .iter()
                .map(|s| s.fd().as_fd().as_raw_fd())
                .collect(),
            app.sockets.names.clone(),
        ))
    }

    /// An app's state changed: an on-demand app that went down is watched for its next
    /// connection; one that runs with `idle_stop` is watched for idleness.
    pub(super) fn sockets_state_changed(&mut self, idx: usize, to: State) {
        let shutting_down = self.fleet.shutting_down();
        let spawns = self.spawns(idx).unwrap_or(0);
        let tx = self.tx.clone();
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        if !app.spec.on_demand || app.sockets.sockets.is_empty() {
            app.sockets.disarm();
            if let Some(t) = app.sockets.idle.take() {
                t.abort();
            }
            return;
        }
        match to {
            State::Stopped | State::Exited if !shutting_down => {
                if let Some(t) = app.sockets.idle.take() {
                    t.abort();
                }
                if app.sockets.watch.is_empty() {
                    app.sockets.watch = watch(&app.sockets.sockets, idx, &tx);
                }
            }
            State::Running | State::Ready => {
                app.sockets.disarm();
                if let (Some(idle), None) = (app.spec.idle_stop, &app.sockets.idle) {
                    app.sockets.idle = Some(watch_idle(
                        app.sockets
                            .sockets
                            .iter()
                            .map(|s| crate::listen::Probe::of(s))
                            .collect(),
                        idle,
                        idx,
                        spawns,
                        tx,
                    ));
                }
            }
            State::Starting => app.sockets.disarm(),
            _ => {
                app.sockets.disarm();
                if let Some(t) = app.sockets.idle.take() {
                    t.abort();
                }
            }
        }
    }

    /// A connection arrived for a down on-demand app: start it.
    pub(super) fn on_connection(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        app.sockets.disarm();
        let on_demand = app.spec.on_demand;
        let down = self
            .fleet
            .unit(idx)
            .is_some_and(|u| matches!(u.m.state(), State::Stopped | State::Exited));
        if on_demand && down && !self.fleet.shutting_down() {
            self.feed(idx, Event::Start);
        }
    }

    /// An on-demand app was idle for `idle_stop`: stop it (its sockets are watched again).
    pub(super) fn on_idle(&mut self, idx: usize, spawn: u64) {
        if let Some(app) = self.apps[idx].as_mut() {
            app.sockets.idle = None;
        }
        let up = self
            .fleet
            .unit(idx)
            .is_some_and(|u| matches!(u.m.state(), State::Running | State::Ready));
        if self.spawns(idx) != Some(spawn) || !up {
            return;
        }
        let idle = self
            .app(idx)
            .and_then(|a| a.spec.idle_stop)
            .map(crate::config::units::format_duration)
            .unwrap_or_default();
        let now = self.now();
        self.fleet.set_stop_why(
            idx,
            format!("idle for {idle}: stopped until the next connection"),
        );
        self.fleet.request_stop(idx, StopScope::Requirers, now);
    }

    /// What `status` says of a down on-demand app.
    pub(super) fn on_demand_note(&self, idx: usize) -> Option<String> {
        let app = self.app(idx)?;
        (app.spec.on_demand && !app.sockets.watch.is_empty()).then(|| {
            format!(
                "starts at the next connection on {}",
                app.sockets.shown().join(", ")
            )
        })
    }
}

/// One task per socket, each sending `Msg::Connection` once the socket has a connection
/// waiting (the connection itself stays in the backlog for the app).
fn watch(
    sockets: &[Arc<Socket>],
    idx: usize,
    tx: &mpsc::UnboundedSender<Msg>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for s in sockets {
        let Ok(dup) = s.fd().try_clone_to_owned() else {
            continue;
        };
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the duplicate for its whole life.
            let afd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
            };
            let Ok(afd) = afd else {
                return;
            };
            if afd.readable().await.is_ok() {
                let _ = tx.send(Msg::Connection { idx });
            }
        }));
    }
    tasks
}

/// Sends `Msg::Idle` once the sockets had no connection open or waiting for `idle`.
fn watch_idle(
    probes: Vec<crate::listen::Probe>,
    idle: Duration,
    idx: usize,
    spawn: u64,
    tx: mpsc::UnboundedSender<Msg>,
) -> tokio::task::JoinHandle<()> {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let probes = Arc::new(probes);
    tokio::spawn(async move {
        let mut last_busy = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            // Reading the kernel's tables can take milliseconds on a busy host: off the loop.
            let p = probes.clone();
            let busy = tokio::task::spawn_blocking(move || crate::listen::busy(&p))
                .await
                .unwrap_or(true);
            if busy {
                last_busy = Instant::now();
            } else if last_busy.elapsed() >= idle {
                let _ = tx.send(Msg::Idle { idx, spawn });
                return;
            }
        }
    })
}

impl Supervisor {
    /// An app was loaded or took a new definition: its sockets are bound now (a failure is
    /// reported here and again at each start), and a down on-demand app is watched.
    pub(super) fn load_sockets(&mut self, idx: usize) {
        if let Err(e) = self.sync_sockets(idx) {
            let name = self.app(idx).map_or("?".into(), |a| a.name.to_string());
            eprintln!("paddock: {name}: {e}");
        }
        let down = self
            .fleet
            .unit(idx)
            .map(|u| u.m.state())
            .filter(|s| matches!(s, State::Stopped | State::Exited));
        if let Some(st) = down {
            self.sockets_state_changed(idx, st);
        }
    }
}
