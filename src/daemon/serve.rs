//! Starting `paddock serve`: the signal thread, the open-file limit, the descriptor holder,
//! the control socket, the cgroups, then the supervisor's loop; and `paddock check`.

use super::*;

/// Starts the signal thread: every signal paddock handles becomes a message.
pub fn forward_signals(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPWR,
    ])?;
    std::thread::Builder::new()
        .name("paddock-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let sent = if sig == libc::SIGCHLD {
                    queue_sigchld(&tx)
                } else {
                    tx.send(Msg::Signal(sig)).is_ok()
                };
                if !sent {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one: each app holds a few descriptors.
pub fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `rl`, a live local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            native::set_child_nofile(rl.rlim_cur, rl.rlim_max);
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// `paddock check`: the app files of `dirs`, validated as `serve` would (wasm modules loaded
/// and linked too), or every error found.
pub fn check_config(
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, AppSpec>, Vec<config::ConfigError>> {
    let (specs, mut errs) = config::load_dirs_all(dirs);
    errs.extend(wasm_apps::check_standalone(&specs));
    config::sort_errors(&mut errs);
    if errs.is_empty() {
        Ok(specs)
    } else {
        Err(errs)
    }
}

/// `paddock serve`: supervises until shutdown. As PID 1 it first mounts what a bare filesystem
/// lacks and sets the hostname; the caller does the final act (see `pid1`).
pub fn serve(opts: Options) -> Result<Outcome, String> {
    // Before any thread exists: paddock's own NOTIFY_SOCKET is for paddock, not for its apps.
    let parent = crate::pid1::ParentNotify::from_env();
    let cg_name = cgroup_name()?;
    if crate::pid1::is_pid1() {
        for note in crate::pid1::early_mounts() {
            eprintln!("paddock: {note}");
        }
        crate::pid1::disable_cad();
    }
    if let Some(h) = &opts.global.hostname {
        crate::pid1::set_hostname(h)?;
    }
    let specs = config::load_dirs(&opts.config_dirs).map_err(|mut errs| {
        // Refusing anyway: also report what is wrong with the modules of the valid files.
        let (valid, _) = config::load_dirs_all(&opts.config_dirs);
        errs.extend(wasm_apps::check_standalone(&valid));
        config::sort_errors(&mut errs);
        let mut s = String::from("the configuration has errors; nothing was started:\n");
        for e in errs {
            s.push_str(&format!("  {e}\n"));
        }
        s
    })?;
    raise_nofile();
    native::reserve_low_fds().map_err(|e| {
        format!(
            "cannot set up descriptors for spawning: {}",
            crate::util::io_reason(&e)
        )
    })?;
    // One paddock per state directory and cgroup name, or both would start every app. After
    // the descriptor slots are reserved, so the lock files get descriptors of their own.
    let _locks = crate::lock::serve_locks(&opts.state_dir, &cg_name)?;
    if !crate::pid1::is_pid1() {
        // Orphans of our apps (double-forking daemons) are reparented to us, not to init.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only and changes only who inherits
        // orphans.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let log_dir = opts
        .global
        .log_dir
        .clone()
        .unwrap_or_else(|| opts.state_dir.join("logs"));
    // One thread runs the supervisor and probes: the supervisor is one task that owns all
    // state. The apps' output pipes are read by a thread of their own (`logs/readers.rs`). The control socket has a thread of its own (see
    // `control::server::start_thread`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let out = rt.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        forward_signals(tx.clone()).map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let logs = Logs::start(log_dir.clone()).map_err(|e| {
            format!(
                "cannot create {}: {}",
                log_dir.display(),
                crate::util::io_reason(&e)
            )
        })?;
        let (events, _) = broadcast::channel(1024);
        // The descriptor holder: started now, or found running after a crash or a re-exec
        // with the descriptors an earlier paddock left in it.
        let (mut held, mut fdstore) = (BTreeMap::new(), None);
        match crate::fdstore::Client::connect_or_start(&opts.state_dir) {
            Ok((mut fs, existing)) => {
                if existing {
                    match fs.get_all() {
                        Ok(h) => held = h,
                        Err(e) => eprintln!("paddock: the descriptor holder: {e}"),
                    }
                }
                fdstore = Some(fs);
            }
            Err(e) => eprintln!(
                "paddock: {e}; going on without it: app output will not survive a crash of paddock"
            ),
        }
        let sup = Supervisor::new(
            opts.clone(),
            specs,
            logs.clone(),
            tx.clone(),
            events.clone(),
            parent,
            (fdstore, &mut held),
        )
        .map_err(|e| format!("cannot start: {e}"))?;
        // Wasm apps: load and link every module before anything starts (a copy of their
        // definitions for it, dropped at once: kept, it was 1.7 KiB an app for the whole run).
        let errs = {
            let wasm_specs: BTreeMap<String, AppSpec> = sup
                .apps
                .iter()
                .flatten()
                .filter(|a| Runner::of(&a.spec) != Runner::Process)
                .map(|a| (a.spec.name.clone(), (*a.spec).clone()))
                .collect();
            sup.wasm.check(&wasm_specs)
        };
        if !errs.is_empty() {
            let mut s = String::from("the configuration has errors; nothing was started:\n");
            for e in errs {
                s.push_str(&format!("  {e}\n"));
            }
            return Err(s);
        }
        // The metrics listener is kept by the holder like the control socket: a Prometheus
        // scrape during a crash or `reexec` waits in its backlog instead of being refused.
        let mut sup = sup;
        let held_metrics = held.remove("metrics");
        let metrics_listener = match &opts.metrics_listen {
            Some(a) => {
                let (l, fresh) = crate::control::metrics_tcp::bind_or_take(a, held_metrics)?;
                if fresh && let Some(fs) = sup.fdstore.as_mut() {
                    use std::os::fd::AsFd;
                    fs.put("metrics", l.as_fd());
                }
                Some(l)
            }
            None => {
                // Not asked for any more: closed here and in the holder.
                if let Some(fd) = held_metrics {
                    drop(fd);
                    if let Some(fs) = sup.fdstore.as_mut() {
                        fs.del("metrics");
                    }
                }
                None
            }
        };
        let listener = match held.remove("control") {
            Some(fd) if crate::control::server::listens_on(&fd, &opts.socket) => {
                crate::control::server::from_held(fd)?
            }
            _ => {
                let l = crate::control::server::bind(&opts.socket)?;
                if let Some(fs) = sup.fdstore.as_mut() {
                    use std::os::fd::AsFd;
                    fs.put("control", l.as_fd());
                }
                l
            }
        };
        // Only once nothing can refuse the start any more: the directories are removed at
        // shutdown.
        sup.cgroups = crate::cgroup::Cgroups::init(&cg_name);
        sup.cgroups.precreate(
            sup.apps
                .iter()
                .flatten()
                .filter(|a| a.spec.autostart && Runner::of(&a.spec).uses_cgroup())
                .map(|a| a.name.to_string())
                .collect(),
        );
        eprintln!("paddock: {}", sup.cgroups.summary());
        eprintln!(
            "paddock {}: supervising {} apps from {}; control socket {}{}",
            env!("CARGO_PKG_VERSION"),
            sup.fleet.named().len(),
            opts.config_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            opts.socket.display(),
            if crate::pid1::is_pid1() {
                " (PID 1)"
            } else {
                ""
            }
        );
        let mut control = crate::control::server::start_thread(
            listener,
            metrics_listener,
            (calls_tx, sup.board.clone()),
            logs,
            events,
        )?;
        sup.adopt_all(held);
        let out = sup.run(rx, calls).await;
        if out.reexec.is_some() {
            // New connections wait in the listener's backlog (the holder keeps it) for the
            // next paddock; only the answers already decided are written.
            control.stop_accepting();
        }
        crate::control::server::drain(Duration::from_secs(2)).await;
        if out.reexec.is_some() {
            return Ok(out);
        }
        eprintln!(
            "paddock: all apps stopped{}",
            if out.code != 0 {
                "; exit status 1 (an essential app failed)"
            } else {
                ""
            }
        );
        Ok(out)
    });
    // Not a plain drop, which would wait for every blocking task: a module compile that an
    // `update` started may run for seconds, and neither an exit nor a `reexec` waits for it.
    rt.shutdown_background();
    out
}
