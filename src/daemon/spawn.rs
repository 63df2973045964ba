//! Starting an app's process: its launch recipe, log pipes, readiness channels and cgroup.

use super::*;

impl Supervisor {
    pub(super) fn notify_path(&self, name: &str, idx: usize) -> PathBuf {
        // A second instance of an app (during a bundle switch) gets a socket of its own.
        let file = match self.fleet.slot_of(name) {
            Some(i) if i != idx => format!("{name}.{idx}.sock"),
            _ => format!("{name}.sock"),
        };
        self.opts.state_dir.join("notify").join(file)
    }

    /// The launch recipe of an app, with NOTIFY_SOCKET added when it signals readiness that way.
    pub(super) fn prepare(&self, spec: &AppSpec, idx: usize) -> (Launch, Option<Launch>) {
        let mut s = spec.clone();
        if s.readiness.when == ReadyWhen::Notify {
            s.env.insert(
                "NOTIFY_SOCKET".into(),
                self.notify_path(&spec.name, idx)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let app = Prepared::new(&s, &self.base_env).map(Arc::new);
        let check = match spec.health.as_ref().map(|h| &h.probe) {
            Some(Probe::Exec { command }) => {
                let mut c = spec.clone();
                c.program = match config::resolve_program(
                    &command[0],
                    spec.env.get("PATH").map(String::as_str),
                    spec.workdir.as_deref(),
                ) {
                    Ok(p) => p,
                    Err(e) => return (app, Some(Err(e))),
                };
                // A sandboxed app's check is a program of its bundle, run inside its sandbox.
                if let Ok(a) = &app
                    && let Some(check) = Prepared::check_in(a, &s, command, &self.base_env)
                {
                    return (app, Some(check.map(Arc::new)));
                }
                c.command = command.clone();
                // Other levels: the check is a host program, run as the app's user.
                c.bundle = None;
                c.isolation = config::Isolation::None;
                c.sandbox = None;
                c.fallback = None;
                Some(Prepared::new(&c, &self.base_env).map(Arc::new))
            }
            _ => None,
        };
        (app, check)
    }

    pub(super) fn ensure_channels(&mut self, idx: usize, with_pipes: bool) -> std::io::Result<()> {
        let notify_path = self.apps[idx]
            .as_ref()
            .map(|a| self.notify_path(&a.name, idx));
        let tx = self.tx.clone();
        let Some(app) = self.apps[idx].as_mut() else {
            return Ok(());
        };
        // A wasm app's output goes to the logs without a pipe (`wasm_apps::spawn_wasm`).
        if with_pipes
            && app.pipes.is_none()
            && app.spec.logs.stdout != StdoutMode::Inherit
            && Runner::of(&app.spec).uses_pipes()
        {
            // The read ends also go to the descriptor holder, so that the app's output
            // outlives a crash of paddock (a newer pipe of the app replaces the older there).
            let (out_r, out_w) = native::output_pipe()?;
            if let Some(fs) = self.fdstore.as_mut() {
                use std::os::fd::AsFd;
                fs.put(&adoption::pipe_name(&app.name, Stream::Out), out_r.as_fd());
            }
            self.logs
                .spawn_reader(out_r, app.name.clone(), Stream::Out)?;
            let err_w = if app.spec.logs.combine {
                if let Some(fs) = self.fdstore.as_mut() {
                    fs.del(&adoption::pipe_name(&app.name, Stream::Err));
                }
                None
            } else {
                let (err_r, err_w) = native::output_pipe()?;
                if let Some(fs) = self.fdstore.as_mut() {
                    use std::os::fd::AsFd;
                    fs.put(&adoption::pipe_name(&app.name, Stream::Err), err_r.as_fd());
                }
                self.logs
                    .spawn_reader(err_r, app.name.clone(), Stream::Err)?;
                Some(err_w)
            };
            app.pipes = Some(Pipes { out_w, err_w });
        }
        match app.spec.readiness.when {
            ReadyWhen::Notify if app.notify.is_none() => {
                let path = notify_path.unwrap_or_default();
                // The socket belongs to the uid the app runs as on the host.
                let owner = app
                    .prepared
                    .as_ref()
                    .ok()
                    .and_then(|p| p.sandbox_host_uid())
                    .or(app.spec.identity.as_ref().map(|i| i.uid));
                let sock = crate::health::notify_socket(&path, owner)?;
                let task = tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = sock.recv(&mut buf).await {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if tx.send(Msg::Notify { idx, text }).is_err() {
                            return;
                        }
                    }
                });
                app.notify = Some(NotifyChannel { path, task });
            }
            ReadyWhen::Fd { .. } if app.ready_w.is_none() => {
                let (r, w) = native::output_pipe()?;
                // SAFETY: the AsyncFd owns the descriptor for its whole life.
                let afd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        r,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(std::io::Error::from)?;
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    loop {
                        let Ok(mut guard) = afd.readable().await else {
                            return;
                        };
                        match guard.try_io(|fd| {
                            nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
                        }) {
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(n)) => {
                                if buf[..n].contains(&b'\n')
                                    && tx.send(Msg::ReadyFd { idx }).is_err()
                                {
                                    return;
                                }
                            }
                            Err(_would_block) => {}
                        }
                    }
                });
                app.ready_w = Some(w);
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn do_spawn(&mut self, idx: usize) -> Result<i32, String> {
        self.apply_pending(idx);
        self.ensure_channels(idx, true).map_err(|e| {
            format!(
                "setting up pipes and sockets: {}",
                crate::util::io_reason(&e)
            )
        })?;
        match self.runner(idx) {
            Some(Runner::Process) => {}
            Some(Runner::Wasm | Runner::Http) => return self.spawn_wasm(idx),
            None => return Err("app removed".into()),
        }
        let devnull = self.devnull.as_raw_fd();
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let prepared = app.prepared.clone()?;
        let (fds, names) = self.spawn_sockets(idx)?;
        self.publish_before_spawn(idx)?;
        let join = self.ensure_cgroup(idx)?;
        let Some(app) = self.apps[idx].as_mut() else {
            return Err("app removed".into());
        };
        let mut io = match &app.pipes {
            Some(p) => {
                let out = p.out_w.as_raw_fd();
                Stdio {
                    stdin: Some(devnull),
                    stdout: Some(out),
                    stderr: Some(p.err_w.as_ref().map_or(out, |e| e.as_raw_fd())),
                    extra: None,
                }
            }
            None => Stdio {
                stdin: Some(devnull),
                stdout: None,
                stderr: None,
                extra: None,
            },
        };
        if let (ReadyWhen::Fd { fd }, Some(w)) = (&app.spec.readiness.when, &app.ready_w) {
            io.extra = Some((w.as_raw_fd(), *fd));
        }
        let join: Vec<std::os::fd::RawFd> = join.iter().map(|f| f.as_raw_fd()).collect();
        let pid = native::spawn_with_sockets(
            &prepared,
            &io,
            &join,
            native::Sockets {
                fds: &fds,
                names: &names,
            },
        )
        .map_err(|e| match (&e.step, &app.cgroup) {
            (Some(native::Failed::Spawn(native::Step::JoinCgroup)), Some(cg)) => format!(
                "{e} ({}; paddock must be able to write each cgroup.procs)",
                cg.paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => e.to_string(),
        })?;
        app.pid = Some(pid);
        app.pgid = Some(pid);
        app.status_text.clear();
        self.pids.insert(pid, idx);
        Ok(pid)
    }

    /// The app's cgroup, created at its first start: returns the `cgroup.procs` descriptors its
    /// child joins. Before a restart, whatever the previous instance left in it is killed and
    /// waited for.
    pub(super) fn ensure_cgroup(
        &mut self,
        idx: usize,
    ) -> Result<Vec<std::os::fd::OwnedFd>, String> {
        let Some(app) = self.apps[idx].as_ref() else {
            return Err("app removed".into());
        };
        let made = app.cgroup.is_none();
        if made {
            let limits = app.spec.limits.cgroup();
            if self.cgroups.unavailable.is_some() && !limits.any() {
                return Ok(vec![]); // an app without limits runs without a cgroup then
            }
            let name = app.name.to_string();
            let dir = if self.cg_names.contains(&name) {
                format!("{name}.{idx}")
            } else {
                name
            };
            let cg = self.cgroups.create(&dir, &limits)?;
            self.cg_names.insert(dir);
            if let Some(app) = self.apps[idx].as_mut() {
                app.cgroup = Some(cg);
            }
        }
        let Some(cg) = self.apps[idx].as_mut().and_then(|a| a.cgroup.as_mut()) else {
            return Ok(vec![]);
        };
        if !made {
            // What the last process left (`create` saw to a cgroup it made or took over).
            cg.kill_and_wait(Duration::from_secs(2))?;
        }
        cg.mark_start();
        cg.open_procs()
    }

    /// A start is refused (not retried) when a limit of the app cannot be enforced here.
    pub(super) fn check_limits(&self, idx: usize) -> Result<(), String> {
        let Some(app) = self.apps[idx].as_ref() else {
            return Ok(());
        };
        let spec = app.pending.as_deref().unwrap_or(&app.spec);
        if !Runner::of(spec).uses_cgroup() {
            return Ok(());
        }
        match self.cgroups.refuse(&spec.limits.cgroup()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Drops an app's cgroup: kills what is left in it and removes its directories.
    pub(super) fn drop_cgroup(&mut self, app: &mut App) {
        if let Some(cg) = app.cgroup.take() {
            if let Err(e) = cg.kill_and_wait(Duration::from_secs(2)) {
                eprintln!("paddock: {}: {e}", app.name);
            }
            if let Some(dir) = cg.paths().first().and_then(|p| p.file_name()) {
                self.cg_names.remove(&*dir.to_string_lossy());
            }
            if let Err(e) = cg.remove() {
                eprintln!("paddock: {}: removing its cgroup: {e}", app.name);
            }
        }
    }
}
