//! Control requests: status, signals, reread/update, shutdown, metrics, version.

use super::*;

impl Supervisor {
    /// An app's status as the API shows it (None: no such slot).
    pub(super) fn status_of(&self, idx: usize) -> Option<AppStatus> {
        let (app, u) = (self.app(idx)?, self.fleet.unit(idx)?);
        let now = self.now();
        let usage = app.cgroup.as_ref().map(|c| c.usage()).unwrap_or_default();
        let m = &u.m;
        let last_exit = m.last_exit().map(|e| ExitInfo {
            code: if let Exit::Code(c) = e {
                Some(*c)
            } else {
                None
            },
            signal: match e {
                Exit::Signal(s) => Some(*s),
                Exit::OomKilled => Some(libc::SIGKILL),
                _ => None,
            },
            description: e.describe(),
        });
        let message = match m.state() {
            State::Backoff => {
                let left = m
                    .backoff_until()
                    .map(|t| t.saturating_sub(now))
                    .unwrap_or_default();
                format!(
                    "{}; start attempt {} in {}",
                    m.last_exit().map(|e| e.describe()).unwrap_or_default(),
                    m.failures() + 1,
                    crate::config::units::format_duration(Duration::from_millis(
                        left.as_millis() as u64
                    ))
                )
            }
            State::Fatal if m.refused() => format!(
                "not started, and not retried until `paddock start`: {}",
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            ),
            State::Fatal => format!(
                "gave up after {} failed starts; last: {}",
                m.failures(),
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            ),
            State::Exited | State::Stopped if self.on_demand_note(idx).is_some() => {
                self.on_demand_note(idx).unwrap_or_default()
            }
            State::Exited | State::Stopped => {
                m.last_exit().map(|e| e.describe()).unwrap_or_default()
            }
            State::Starting if m.waiting() => {
                format!("waiting for {}", self.fleet.waiting_for(idx).join(", "))
            }
            State::Running | State::Ready if self.switch_message(idx).is_some() => {
                self.switch_message(idx).unwrap_or_default()
            }
            State::Running => "waiting for readiness".into(),
            State::Stopping => u.stop_why.clone(),
            _ if m.health() == Health::Unhealthy || m.checks_failed() > 0 => format!(
                "health check failing ({} in a row): {}",
                m.checks_failed(),
                u.health_detail
            ),
            _ => app.status_text.clone(),
        };
        let schedule = self.schedule_status(idx);
        let message = match (&schedule, m.state()) {
            // A scheduled app at rest, or running without anything else to say: its schedule.
            (Some((_, info)), State::Exited | State::Stopped) => info.clone(),
            (Some((_, info)), State::Ready) if message.is_empty() => info.clone(),
            (Some((_, info)), State::Fatal) => format!("{message}; {info}"),
            _ => message,
        };
        let (generation, rollback) = self.gens_status(&app.name);
        let message = match (&rollback, message.is_empty()) {
            (Some(note), true) => note.clone(),
            _ => message,
        };
        Some(AppStatus {
            name: app.name.to_string(),
            state: m.state().as_str().into(),
            pid: app.pid,
            uptime_secs: m.uptime(now).map(|d| d.as_secs_f64()),
            since_secs: now.saturating_sub(m.state_since()).as_secs_f64(),
            restarts: m.restarts(),
            failures: m.failures(),
            last_exit,
            message,
            isolation: match &app.prepared {
                Ok(p) => p.level.as_str().into(),
                Err(_) => app.spec.isolation.as_str().into(),
            },
            sandbox: app
                .prepared
                .as_ref()
                .ok()
                .and_then(|p| p.sandbox_summary().map(str::to_string)),
            fallback: app.prepared.as_ref().ok().and_then(|p| p.fallback.clone()),
            memory_bytes: wasm_apps::memory_bytes(app).or(usage.memory_bytes),
            cpu_usec: usage.cpu_usec,
            pids: usage.pids,
            cgroup: app
                .cgroup
                .as_ref()
                .and_then(|c| c.paths().first().map(|p| p.display().to_string())),
            limits: limits_info(&app.spec.limits),
            autostart: app.spec.autostart,
            restart_policy: app.spec.restart.policy,
            command: app.spec.command.clone(),
            health: app.spec.health.as_ref().map(|_| m.health()),
            health_detail: app.spec.health.as_ref().map(|_| u.health_detail.clone()),
            after: app.spec.after.clone(),
            requires: app.spec.requires.clone(),
            waiting_for: if m.waiting() {
                self.fleet.waiting_for(idx)
            } else {
                vec![]
            },
            published: self.publisher.status(&app.name),
            listen: app.sockets.shown(),
            on_demand: app.spec.on_demand,
            http: http_apps::figures(app),
            log_lines_dropped: self.logs.dropped(&app.name),
            generation,
            rollback,
            schedule: schedule.map(|(s, _)| s),
        })
    }

    /// App slots for a list of names (see `Fleet::resolve`), or the error reply.
    pub(super) fn resolve(&self, names: &[String]) -> Result<Vec<usize>, Reply> {
        self.fleet.resolve(names).map_err(effects::reply_of)
    }

    /// Answers a control request (or hands it to the fleet, which answers through an effect).
    pub(super) fn handle(&mut self, req: Request, reply: oneshot::Sender<Reply>) {
        let r = match req {
            Request::Status(names, format) => match if names.is_empty() {
                Ok(self.fleet.slots())
            } else {
                self.resolve(&names)
            } {
                Ok(idxs) => {
                    let entries: Vec<_> = idxs.iter().filter_map(|&i| self.entry_of(i)).collect();
                    let apps = entries.iter().map(|(s, _)| s.clone()).collect();
                    self.board.write(entries, Instant::now());
                    crate::control::board::status_reply(apps, format, !names.is_empty())
                }
                Err(r) => r,
            },
            Request::Action { names, verb, wait } => {
                let now = self.now();
                return self.fleet.act(&names, verb, wait, reply, now);
            }
            Request::Signal { names, signal } => match self.resolve(&names) {
                Ok(idxs) => {
                    let mut results = vec![];
                    for idx in idxs {
                        let (Some(app), Some(u)) = (self.app(idx), self.fleet.unit(idx)) else {
                            continue;
                        };
                        let (ok, message) = match app.pid {
                            None if !Runner::of(&app.spec).takes_signals() => {
                                (false, wasm_apps::NO_SIGNALS.to_string())
                            }
                            // SAFETY: kill(2) takes no pointers; `pid` is our unreaped child
                            // (reap() clears it); a bad signal number is refused by the kernel
                            // (EINVAL).
                            Some(pid) if unsafe { libc::kill(pid, signal) } == 0 => (
                                true,
                                format!(
                                    "sent {} to pid {pid}",
                                    crate::config::units::signal_name(signal)
                                ),
                            ),
                            Some(pid) => (
                                false,
                                format!("kill {pid}: {}", nix::errno::Errno::last().desc()),
                            ),
                            None => (false, "not running".into()),
                        };
                        results.push(ActionResult {
                            app: app.name.to_string(),
                            ok,
                            state: u.m.state().as_str().into(),
                            message,
                        });
                    }
                    let ok = results.iter().all(|r| r.ok);
                    Reply::json(if ok { 200 } else { 409 }, &ActionResponse { ok, results })
                }
                Err(r) => r,
            },
            Request::Reread => return self.begin_reload(reload::Then::Reread(reply)),
            Request::Update => return self.begin_reload(reload::Then::Update(reply)),
            Request::History(app) => self.history_reply(&app),
            Request::Rollback { app, generation } => self.rollback_reply(&app, generation),
            Request::Shutdown(halt) => {
                if halt.is_some() {
                    self.halt = halt;
                }
                self.begin_shutdown();
                Reply::json(
                    202,
                    &serde_json::json!({"ok": true, "message": "shutting down"}),
                )
            }
            Request::Reexec => match self.begin_reexec() {
                Ok(exe) => Reply::json(
                    202,
                    &serde_json::json!({"ok": true, "message": format!("re-executing {}", exe.display())}),
                ),
                Err(e) => Reply::error(409, e),
            },
            Request::ReopenLogs => {
                self.logs.send(Ctl::Reopen);
                Reply::json(200, &serde_json::json!({"ok": true}))
            }
            Request::Metrics => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics(),
            },
            Request::Version => Reply::json(
                200,
                &VersionInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pid: std::process::id() as i32,
                    apps: self.fleet.named().len(),
                },
            ),
            Request::LogTarget(name) => match self.fleet.slot_of(&name).and_then(|i| self.app(i)) {
                None if !self.fleet.members(&name).is_empty() => Reply::error(
                    404,
                    format!(
                        "{name} runs {} instances, each with its own log: name one, e.g. {name}@0",
                        self.fleet.members(&name).len()
                    ),
                ),
                None => Reply::error(
                    404,
                    config::suggest::no_such_apps(
                        &[name.as_str()],
                        self.fleet.named().keys().map(String::as_str),
                    ),
                ),
                Some(a) if a.spec.logs.stdout == StdoutMode::Inherit => Reply::error(
                    409,
                    format!(
                        "{name} writes to paddock's own stdout (logs.stdout = \"inherit\"): read paddock's output instead"
                    ),
                ),
                Some(_) => Reply::json(200, &serde_json::json!({"ok": true})),
            },
        };
        self.send_reply(reply, r);
    }
}
