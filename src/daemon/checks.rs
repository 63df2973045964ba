//! Health checks, the reaper and readiness notices: what comes back from the kernel about an
//! app, fed to the fleet as inputs.

use super::*;

impl Supervisor {
    /// A message from the signal thread or one of paddock's own tasks.
    pub(super) fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Signal(sig) => {
                if sig == libc::SIGCHLD {
                    // A SIGCHLD from now on queues a new message.
                    CHLD_QUEUED.store(false, std::sync::atomic::Ordering::SeqCst);
                }
                self.on_signal(sig);
            }
            Msg::WasmExited {
                app,
                generation,
                exit,
            } => self.wasm_exited(app, generation, exit),
            Msg::Notify { idx, text } => self.on_notify(idx, &text),
            Msg::ReadyFd { idx } => self.feed(idx, Event::Ready),
            Msg::Probe { idx, spawn, result } => {
                if self.spawns(idx) == Some(spawn) {
                    self.feed_health(idx, result);
                }
            }
            Msg::PidGone { pid } => self.pid_gone(pid),
            Msg::Connection { idx } => self.on_connection(idx),
            Msg::Loaded(l) => self.on_loaded(*l),
            Msg::Idle { idx, spawn } => self.on_idle(idx, spawn),
            Msg::CheckTimeout { pid } => {
                let Some((idx, spawn)) = self.checks.remove(&pid) else {
                    return;
                };
                // SAFETY: kill(2) takes no pointers; `pid` was still in `checks`, so the check
                // is not reaped yet (reap() removes it first); it leads its own group (setsid in
                // the child).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let timeout = self
                    .app(idx)
                    .and_then(|a| a.spec.health.as_ref())
                    .map(|h| h.timeout)
                    .unwrap_or_default();
                if self.spawns(idx) == Some(spawn) {
                    let t = crate::config::units::format_duration(timeout);
                    self.feed_health(idx, Err(format!("check command timed out after {t}")));
                }
            }
        }
    }

    /// The app's spawn count (a generation for results that come back later).
    pub(super) fn spawns(&self, idx: usize) -> Option<u64> {
        self.fleet.unit(idx).map(|u| u.m.spawns())
    }

    /// Starts one health check of an app; its result comes back as a message.
    pub(super) fn run_check(&mut self, idx: usize) {
        let Some(spawn) = self.spawns(idx) else {
            return;
        };
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        let Some(h) = app.spec.health.clone() else {
            return;
        };
        let tx = self.tx.clone();
        match &h.probe {
            Probe::Exec { .. } => {
                let prepared = match app.check.clone() {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        return self.feed_health(idx, Err(format!("cannot run the check: {e}")));
                    }
                    None => return,
                };
                let d = self.devnull.as_raw_fd();
                let io = Stdio {
                    stdin: Some(d),
                    stdout: Some(d),
                    stderr: Some(d),
                    extra: None,
                };
                let started = if prepared.joins_app() {
                    // Inside the app's sandbox: its namespaces, root and cgroup.
                    let Some(pid) = app.pid else {
                        return self.feed_health(idx, Err("the app is not running".into()));
                    };
                    let join = match app.cgroup.as_ref().map(|cg| cg.open_procs()).transpose() {
                        Ok(j) => j.unwrap_or_default(),
                        Err(e) => {
                            return self
                                .feed_health(idx, Err(format!("cannot run the check: {e}")));
                        }
                    };
                    let join: Vec<_> = join.iter().map(|f| f.as_raw_fd()).collect();
                    native::spawn_in_app(&prepared, &io, &join, pid)
                } else {
                    native::spawn(&prepared, &io)
                };
                match started {
                    Ok(pid) => {
                        self.checks.insert(pid, (idx, spawn));
                        tokio::spawn(async move {
                            tokio::time::sleep(h.timeout).await;
                            let _ = tx.send(Msg::CheckTimeout { pid });
                        });
                    }
                    Err(e) => self.feed_health(idx, Err(format!("cannot run the check: {e}"))),
                }
            }
            Probe::Tcp { address } => {
                let address = address.clone();
                tokio::spawn(async move {
                    let result = crate::health::probe_tcp(&address, h.timeout).await;
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
            Probe::Http {
                host,
                port,
                path,
                expect_body,
            } => {
                let (host, port, path, expect) =
                    (host.clone(), *port, path.clone(), expect_body.clone());
                tokio::spawn(async move {
                    let result =
                        crate::health::probe_http(&host, port, &path, expect.as_deref(), h.timeout)
                            .await;
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
            Probe::Wasm => {
                let Some(call) = self.wasm_health_call(idx, h.timeout) else {
                    return self.feed_health(idx, Err("the app's module is not loaded".into()));
                };
                tokio::spawn(async move {
                    let result = match call.await {
                        Ok(0) => Ok(()),
                        Ok(n) => Err(format!("the module's health function returned {n}")),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(Msg::Probe { idx, spawn, result });
                });
            }
        }
    }

    pub(super) fn feed_health(&mut self, idx: usize, result: Result<(), String>) {
        let now = self.now();
        self.board_touch(idx);
        self.fleet.health(idx, result, now);
    }

    pub(super) fn reap(&mut self) {
        let t0 = Instant::now();
        for _ in 0..REAP_BATCH {
            if t0.elapsed() > REAP_TIME {
                break;
            }
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`, a live local; it reaps children of ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(exit) = exit_of(status) else {
                continue;
            };
            if let Some((idx, spawn)) = self.checks.remove(&pid) {
                if self.spawns(idx) == Some(spawn) {
                    let r = if exit.success() {
                        Ok(())
                    } else {
                        Err(format!("check command: {}", exit.describe()))
                    };
                    self.feed_health(idx, r);
                }
                continue;
            }
            self.exited(pid, exit);
        }
        // More may be waiting: continued after the messages that came meanwhile.
        queue_sigchld(&self.tx);
        self.yield_soon = true;
    }

    /// A child that paddock started is gone. Unknown pids (orphans reparented to paddock, failed
    /// spawns already accounted for) are ignored.
    pub(super) fn exited(&mut self, pid: i32, exit: Exit) {
        let Some(idx) = self.pids.remove(&pid) else {
            return;
        };
        let mut exit = exit;
        if let Some(app) = self.apps[idx].as_mut() {
            app.pid = None;
            if exit == Exit::Signal(libc::SIGKILL)
                && app
                    .cgroup
                    .as_mut()
                    .is_some_and(|c| c.oom_killed_since_start())
            {
                exit = Exit::OomKilled;
                eprintln!(
                    "paddock: {}: exited: oom-killed (memory limit {})",
                    app.name,
                    app.spec
                        .limits
                        .memory
                        .map_or("?".into(), crate::config::units::format_size)
                );
            }
        }
        let now = self.now();
        self.board_touch(idx);
        self.fleet.exited(idx, exit, now);
    }

    pub(super) fn on_notify(&mut self, idx: usize, text: &str) {
        for n in crate::health::parse_notify(text) {
            match n {
                crate::health::Notice::Ready => self.feed(idx, Event::Ready),
                crate::health::Notice::Watchdog => self.feed(idx, Event::WatchdogPing),
                crate::health::Notice::Status(s) => {
                    if let Some(a) = self.apps[idx].as_mut() {
                        a.status_text = s;
                    }
                    self.board_touch(idx);
                }
                crate::health::Notice::Stopping | crate::health::Notice::MainPid(_) => {}
            }
        }
    }
}
