//! Carrying out the fleet's effects (`crate::fleet::Effect`): spawns, signals, health checks,
//! state events, removals, replies. Each result goes back to the fleet as an input; the effects
//! that input causes join the same queue, so nothing here calls itself.

use super::*;
use crate::fleet::{Answer, Effect, SpawnOutcome};

impl crate::fleet::Replier for oneshot::Sender<Reply> {
    fn closed(&self) -> bool {
        self.is_closed()
    }
}

/// A fleet answer as an HTTP reply.
pub(super) fn reply_of(a: Answer) -> Reply {
    match a {
        Answer::Actions(status, r) => Reply::json(status, &r),
        Answer::Error(status, msg) => Reply::error(status, msg),
    }
}

impl Supervisor {
    /// What runs the app (see `crate::runner`).
    pub(super) fn runner(&self, idx: usize) -> Option<Runner> {
        self.app(idx).map(|a| Runner::of(&a.spec))
    }

    /// Feeds an event to one app.
    pub(super) fn feed(&mut self, idx: usize, ev: Event) {
        let now = self.now();
        self.board_touch(idx);
        self.fleet.feed(idx, ev, now);
    }

    /// Carries out every effect the fleet has queued, and those their results cause.
    pub(super) fn pump(&mut self) {
        while let Some(e) = self.fleet.poll_effect() {
            self.perform(e);
        }
    }

    pub(super) fn perform(&mut self, e: Effect<oneshot::Sender<Reply>>) {
        self.board_saw(&e);
        match e {
            Effect::Spawn(idx) => {
                let outcome = match self.check_bundle(idx).and_then(|()| self.check_limits(idx)) {
                    Err(e) => SpawnOutcome::Refused(e),
                    Ok(()) => match self.do_spawn(idx) {
                        Ok(pid) => SpawnOutcome::Started((pid > 0).then_some(pid)),
                        Err(e) => SpawnOutcome::Failed(e),
                    },
                };
                if let (Some(app), SpawnOutcome::Failed(e) | SpawnOutcome::Refused(e)) =
                    (self.app(idx), &outcome)
                {
                    eprintln!("paddock: {}: {e}", app.name);
                }
                let now = self.now();
                self.fleet.spawn_done(idx, outcome, now);
                self.sync_record(idx);
            }
            // The stop of an app, by its runner.
            Effect::Signal(idx, sig) => match self.runner(idx) {
                Some(Runner::Process) => self.signal_app(idx, sig),
                Some(Runner::Wasm | Runner::Http) => self.wasm_interrupt(idx, false),
                None => {}
            },
            Effect::KillGroup(idx) => match self.runner(idx) {
                Some(Runner::Process) => self.kill_group(idx),
                Some(Runner::Wasm | Runner::Http) => self.wasm_interrupt(idx, true),
                None => {}
            },
            Effect::RunCheck(idx) => self.run_check(idx),
            Effect::Changed { slot, from, to } => {
                self.publish(slot, from, to, crate::util::mono_ns());
                self.sync_record(slot);
                self.http_state_changed(slot);
                self.sockets_state_changed(slot, to);
                self.tell_parent_when_ready();
                self.gens_changed(slot, to);
            }
            Effect::Down(idx) => {
                if self.app(idx).is_some_and(|a| a.pending.is_some()) {
                    self.apply_pending(idx);
                }
            }
            Effect::Removed { slot, named } => {
                if let Some(mut app) = self.apps[slot].take() {
                    self.drop_cgroup(&mut app);
                    if named {
                        self.forget_app(&app.name);
                        self.forget_schedule(&app.name);
                        self.gens_removed(&app.name);
                        self.logs.send(Ctl::Remove {
                            app: app.name.clone(),
                        });
                    }
                    // Dropping the pipes closes paddock's write ends: the readers end at EOF.
                    drop(app);
                    self.sweep_sockets();
                }
            }
            Effect::Switched { old, new } => {
                self.switched(old, new);
                self.gens_switched(new);
            }
            Effect::SwitchFailed { old, new, why } => {
                self.switch_failed(old, new, &why);
                self.gens_switch_failed(old, &why);
            }
            Effect::SwitchCancelled {
                old,
                new,
                take_spec,
            } => self.switch_cancelled(old, new, take_spec),
            Effect::Rolled { group, why } => match why {
                None => eprintln!("paddock: {group}: rolling restart done"),
                Some(why) => eprintln!(
                    "paddock: {group}: rolling restart stopped: {why}; the instances not yet restarted keep running"
                ),
            },
            Effect::EssentialFailed(idx) => {
                eprintln!(
                    "paddock: essential app {} is FATAL: stopping everything",
                    self.app(idx).map_or("?", |a| &a.name)
                );
                self.shutdown_begun();
            }
            Effect::Reply(tx, a) => self.send_reply(tx, reply_of(a)),
            Effect::Schedule(idx, note) => self.schedule_note(idx, note),
        }
    }

    /// The stop signal (or an operator's) to a native app's process group.
    pub(super) fn signal_app(&mut self, idx: usize, sig: i32) {
        if let Some(app) = self.app(idx) {
            // A sandboxed app is PID 1 of its namespace, where the kernel drops a signal it
            // does not handle: give it what a plain process would get from that signal.
            if let (Some(pid), Ok(p)) = (app.pid, &app.prepared)
                && p.sandbox_summary().is_some()
                && crate::sandbox::init_drops(pid, sig)
            {
                // SAFETY: kill(2) takes no pointers; `pid` is our child and not yet reaped
                // (reap() clears app.pid on this same thread when it collects it), so it names
                // no other process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some(pg) = self.app(idx).and_then(|a| a.pgid)
            // SAFETY: kill(2) takes no pointers; `pg` is the group our unreaped child leads
            // (KillGroup clears pgid right after the exit).
            && unsafe { libc::kill(-pg, sig) } != 0
        {
            // SAFETY: as above: `pg` is also the leader's pid, the same unreaped child.
            unsafe { libc::kill(pg, sig) };
        }
    }

    /// SIGKILL to the app's process group and everything in its cgroup.
    pub(super) fn kill_group(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_mut() else {
            return;
        };
        if let Some(pg) = app.pgid {
            // SAFETY: kill(2) takes no pointers; the group of our child (after its exit this is
            // the final sweep, carried out right after the exit was fed, and pgid is cleared).
            unsafe { libc::kill(-pg, libc::SIGKILL) };
            if app.pid.is_none() {
                app.pgid = None; // main process gone: this was the final sweep
            }
        }
        // The whole cgroup: also what left the process group (setsid, double forks). A restart
        // waits for it to be empty (ensure_cgroup).
        if let Some(cg) = &app.cgroup
            && let Err(e) = cg.kill()
        {
            eprintln!("paddock: {}: killing its cgroup: {e}", app.name);
        }
    }

    /// A state change, as `GET /v1/events` streams it.
    pub(super) fn publish(&self, idx: usize, from: State, to: State, mono_ns: u64) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let (Some(app), Some(u)) = (self.app(idx), self.fleet.unit(idx)) else {
            return;
        };
        let reason = match to {
            State::Starting if u.m.waiting() => {
                format!("waiting for {}", self.fleet.waiting_for(idx).join(", "))
            }
            State::Starting => "starting".into(),
            State::Running => format!("pid {}; waiting for readiness", app.pid.unwrap_or(0)),
            State::Ready => format!("pid {}", app.pid.unwrap_or(0)),
            State::Stopping => u.stop_why.clone(),
            State::Backoff | State::Exited | State::Fatal | State::Stopped => {
                u.m.last_exit().map(|e| e.describe()).unwrap_or_default()
            }
        };
        let ev = StateEvent {
            time: crate::util::rfc3339_string(SystemTime::now()),
            mono_ns,
            app: app.name.to_string(),
            from: from.as_str().into(),
            to: to.as_str().into(),
            reason,
        };
        if let Ok(line) = serde_json::to_string(&ev) {
            let _ = self.events.send(line);
        }
    }
}
