//! paddock's own failure as a fault to survive: the record of each running app process, the
//! adoption of those processes by the next paddock (after a crash, `kill -9`, or `reexec`), and
//! `reexec` itself. See `crate::adopt` (records) and `crate::fdstore` (the descriptor holder).

use super::*;
use crate::adopt::{self, Record};

/// The holder's name for an app's log pipe.
pub(super) fn pipe_name(app: &str, stream: Stream) -> String {
    format!("log/{app}/{}", stream.ext())
}

impl Supervisor {
    /// Brings the app's record in the state directory in line with its process: written when a
    /// process starts or becomes READY, removed when it is gone. Wasm apps run inside paddock
    /// and have none.
    pub(super) fn sync_record(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        // A bundle switch's second instance is not the app's record holder.
        if !Runner::of(&app.spec).outlives_paddock() || self.fleet.slot_of(&app.name) != Some(idx) {
            return;
        }
        let Some(u) = self.fleet.unit(idx) else {
            return;
        };
        let want = app
            .pid
            .filter(|_| u.m.alive())
            .map(|p| (p, u.m.state() == State::Ready));
        if want == app.recorded {
            return;
        }
        let mut ticks = 0;
        let written = match want {
            None => self.records.gone(&app.name),
            Some((pid, ready)) => {
                let start_ticks = match app.recorded {
                    Some((p, _)) if p == pid && app.recorded_ticks != 0 => app.recorded_ticks,
                    _ => match adopt::stat_of(pid) {
                        Some((t, _)) => t,
                        None => return, // already gone: its exit is on its way
                    },
                };
                ticks = start_ticks;
                let r = Record {
                    app: app.name.to_string(),
                    pid,
                    pgid: app.pgid.unwrap_or(pid),
                    start_ticks,
                    boot_id: self.boot_id.clone(),
                    cgroup: app.cgroup.as_ref().and_then(|c| {
                        c.paths()
                            .first()
                            .and_then(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                    }),
                    ready,
                    spec_digest: adopt::digest(&format!("{:?}", app.spec)),
                    stop_signal: app.spec.stop_signal,
                    stop_timeout_ms: app.spec.stop_timeout.as_millis() as u64,
                    restarts: u.m.restarts(),
                };
                self.records.up(&r)
            }
        };
        if let Err(e) = written {
            eprintln!(
                "paddock: {}: cannot record its process in {}/{} ({}): a restarted paddock could not adopt it",
                app.name,
                self.records.dir().display(),
                adopt::JOURNAL,
                crate::util::io_reason(&e)
            );
        }
        if let Some(app) = self.apps[idx].as_mut() {
            app.recorded = want;
            app.recorded_ticks = ticks;
        }
    }

    /// An app left the configuration: its record and held descriptors go too.
    pub(super) fn forget_app(&mut self, name: &str) {
        let _ = self.records.gone(name);
        if let Some(fs) = self.fdstore.as_mut() {
            fs.del(&pipe_name(name, Stream::Out));
            fs.del(&pipe_name(name, Stream::Err));
        }
    }

    /// At start, before autostart: takes back every live process an earlier paddock recorded
    /// (its log pipes come back from the holder, in `held`), stops those whose app is no longer
    /// configured, and drops stale records. Held descriptors nobody claims are released.
    pub fn adopt_all(&mut self, mut held: BTreeMap<String, OwnedFd>) {
        self.sync_wall(); // an adopted scheduled run's start is a wall-clock time
        let records = self.records.load_all();
        let mut kept = vec![];
        if !records.is_empty() {
            self.sync_publish(); // the listeners, before adopted apps become their targets
        }
        let (mut adopted, mut stopped) = (0, 0);
        for r in records {
            let idx = self.fleet.slot_of(&r.app);
            let native = idx
                .and_then(|i| self.apps[i].as_ref())
                .is_some_and(|a| Runner::of(&a.spec).outlives_paddock());
            if !r.alive(&self.boot_id) {
                continue;
            }
            match idx {
                Some(idx) if native => {
                    self.adopt_one(idx, &r, &mut held);
                    adopted += 1;
                    kept.push(r);
                }
                _ => {
                    self.stop_leftover(&r);
                    stopped += 1;
                }
            }
        }
        // The journal holds the adopted processes only (each app's next change appends).
        if let Err(e) = self.records.rewrite(&kept) {
            eprintln!(
                "paddock: cannot write {}/{} ({}): a restarted paddock could not adopt the apps",
                self.records.dir().display(),
                adopt::JOURNAL,
                crate::util::io_reason(&e)
            );
        }
        for name in held.keys() {
            if name.starts_with("log/")
                && let Some(fs) = self.fdstore.as_mut()
            {
                fs.del(name);
            }
        }
        if adopted + stopped > 0 {
            eprintln!(
                "paddock: adopted {adopted} running app{} from an earlier paddock{}",
                if adopted == 1 { "" } else { "s" },
                if stopped > 0 {
                    format!("; stopping {stopped} whose app is no longer configured")
                } else {
                    String::new()
                }
            );
        }
        // Children of ours (after a re-exec) that ended before our handler was installed.
        self.reap();
    }

    fn adopt_one(&mut self, idx: usize, r: &Record, held: &mut BTreeMap<String, OwnedFd>) {
        let pidfd = adopt::pidfd_open(r.pid);
        // Its cgroup, taken as it is (the processes in it are the app's).
        if let Some(dir) = &r.cgroup
            && self.cgroups.unavailable.is_none()
        {
            let limits = self.apps[idx]
                .as_ref()
                .map(|a| a.spec.limits.cgroup())
                .unwrap_or_default();
            match self.cgroups.adopt(dir, &limits) {
                Ok(cg) => {
                    self.cg_names.insert(dir.clone());
                    if let Some(app) = self.apps[idx].as_mut() {
                        app.cgroup = Some(cg);
                    }
                }
                Err(e) => eprintln!("paddock: {}: its cgroup {dir}: {e}", r.app),
            }
        }
        let tx = self.tx.clone();
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        let name = app.name.clone();
        app.pid = Some(r.pid);
        app.pgid = Some(r.pgid);
        app.recorded = Some((r.pid, r.ready)); // as the journal has it
        app.recorded_ticks = r.start_ticks;
        // Its output: the pipes it writes to, kept by the holder while paddock was away.
        for stream in [Stream::Out, Stream::Err] {
            if let Some(fd) = held.remove(&pipe_name(&name, stream))
                && let Err(e) = self.logs.spawn_reader(fd, name.clone(), stream)
            {
                eprintln!("paddock: {name}: reading its output again: {e}");
            }
        }
        self.pids.insert(r.pid, idx);
        // A sandbox's own network namespace: the one the adopted process lives in (where its
        // restarts join it and `publish` forwards to), not the fresh one prepared at load.
        if let Some(Ok(p)) = self.apps[idx].as_ref().map(|a| &a.prepared)
            && let Some(ns) = p.netns()
        {
            match std::fs::File::open(format!("/proc/{}/ns/net", r.pid)) {
                // SAFETY: dup3 makes the descriptor number the plan owns (`ns`, open for the
                // plan's whole life) refer to the adopted process's namespace; it stays open
                // and owned by the plan.
                Ok(f) => unsafe {
                    libc::dup3(f.as_raw_fd(), ns.as_raw_fd(), libc::O_CLOEXEC);
                },
                Err(e) => eprintln!(
                    "paddock: {name}: its network namespace: {}",
                    crate::util::io_reason(&e)
                ),
            }
        }
        self.publish_target(idx);
        if let Err(e) = self.ensure_channels(idx, false) {
            eprintln!(
                "paddock: {name}: its readiness channel: {}",
                crate::util::io_reason(&e)
            );
        }
        let changed = self.apps[idx]
            .as_ref()
            .is_some_and(|a| adopt::digest(&format!("{:?}", a.spec)) != r.spec_digest);
        match pidfd {
            Ok(fd) => watch_pidfd(fd, r.pid, tx),
            // Gone between the check and now: its exit is handled like any other.
            Err(_) => {
                let _ = tx.send(Msg::PidGone { pid: r.pid });
            }
        }
        self.feed(
            idx,
            Event::Adopted {
                ready: r.ready,
                age: adopt::age(r.start_ticks),
                restarts: r.restarts,
            },
        );
        eprintln!(
            "paddock: {name}: adopted pid {} from an earlier paddock ({}){}",
            r.pid,
            if r.ready { "ready" } else { "not ready yet" },
            if changed {
                "; its app file changed since it started: `paddock restart` applies it"
            } else {
                ""
            }
        );
    }

    /// A live process whose app is gone from the configuration: stopped as its app would have
    /// been (stop signal to its group, SIGKILL after its stop timeout), its cgroup emptied.
    fn stop_leftover(&mut self, r: &Record) {
        eprintln!(
            "paddock: {}: no longer configured: stopping pid {} left by an earlier paddock",
            r.app, r.pid
        );
        let cg = r
            .cgroup
            .as_ref()
            .filter(|_| self.cgroups.unavailable.is_none())
            .and_then(|d| self.cgroups.adopt(d, &Default::default()).ok());
        let (pid, pg, sig) = (r.pid, r.pgid, r.stop_signal);
        let timeout = Duration::from_millis(r.stop_timeout_ms.min(3_600_000));
        let Ok(pidfd) = adopt::pidfd_open(pid) else {
            return;
        };
        // SAFETY: kill(2) takes no pointers. The pidfd just opened pins the leader's identity
        // (checked by start time); the group is the one recorded for it.
        unsafe { libc::kill(-pg, sig) };
        tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the pidfd for its whole life.
            let afd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    pidfd,
                    tokio::io::Interest::READABLE,
                )
            };
            let exited = match afd {
                Ok(afd) => tokio::time::timeout(timeout, afd.readable()).await.is_ok(),
                Err(_) => false,
            };
            if !exited {
                // SAFETY: as above.
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            if let Some(cg) = cg {
                let _ = cg.kill_and_wait(Duration::from_secs(2));
                let _ = cg.remove();
            }
        });
    }

    /// An adopted process ended (its pidfd said so). Our own child is reaped with its status;
    /// another's exit status is not ours to know.
    pub(super) fn pid_gone(&mut self, pid: i32) {
        if !self.pids.contains_key(&pid) {
            return;
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a live local; `pid` is an app's process
        // (after a re-exec our child, after a crash another's: then ECHILD).
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if let Some(exit) = exit_of(status) {
                self.exited(pid, exit);
            }
        } else if r < 0 {
            self.exited(pid, Exit::Unknown);
        }
        // r == 0: our child, not yet a zombie; SIGCHLD will bring it.
    }

    /// `paddock reexec` / SIGUSR1: checks that there is a binary to execute, then ends the run
    /// without stopping anything; `serve`'s caller executes it.
    pub(super) fn begin_reexec(&mut self) -> Result<PathBuf, String> {
        if self.fleet.shutting_down() {
            return Err("paddock is shutting down".into());
        }
        if self.fdstore.as_ref().is_none_or(|f| f.broken.is_some()) {
            return Err(
                "the descriptor holder is not running, so the apps' output would be lost; restart paddock instead".into(),
            );
        }
        let Some(exe) = self.exe.clone() else {
            return Err("paddock's own binary path is not known".into());
        };
        // After a package upgrade the path names the new binary.
        let c = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: path holds a NUL byte", exe.display()))?;
        // SAFETY: access(2) reads the NUL-terminated path `c`, a live CString.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            return Err(format!(
                "{}: {}",
                exe.display(),
                crate::util::io_reason(&std::io::Error::last_os_error())
            ));
        }
        self.reexec = Some(exe.clone()); // ends `run`
        Ok(exe)
    }
}

/// Sends `PidGone` when the process behind `pidfd` ends.
fn watch_pidfd(pidfd: OwnedFd, pid: i32, tx: mpsc::UnboundedSender<Msg>) {
    tokio::spawn(async move {
        // SAFETY: the AsyncFd owns the pidfd for its whole life.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = afd {
            let _ = afd.readable().await;
        }
        let _ = tx.send(Msg::PidGone { pid });
    });
}
