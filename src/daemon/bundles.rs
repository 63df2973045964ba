//! `isolation = "bundle"` in the supervisor: the check of an app's bundle before each start,
//! and the switch of a running app to a new bundle on `update`.
//!
//! **Check.** Before every spawn the bundle is verified against its manifest through a cache
//! keyed by file identity (`crate::bundle::verify::Cache`). A missing or changed file refuses the
//! start (`Event::SpawnRefused`): the app goes `FATAL` at once, with the file named, and is not
//! retried until an operator starts it.
//!
//! **Switch.** When `update` gives a running app (`RUNNING` or `READY`) a different bundle id,
//! the old instance is not stopped first. A second instance (a hidden app slot with the new
//! spec, the *successor*, with its own notify socket) is started; once it is `READY` it takes the
//! app's name and the old instance is stopped and dropped. If the successor gives up (`FATAL`, `EXITED`), it is dropped and the old instance
//! keeps running, with the failure in its status message; the next `update` tries again. If the
//! old instance goes down meanwhile (stopped by an operator, shutdown), the switch is called
//! off and the app takes the new settings, as any changed app that is down does.
//!
//! The successor is always a later slot than the instance it replaces, so `reread` (which
//! collects apps by name in slot order) compares the files on disk with the successor's spec:
//! an `update` repeated during a switch changes nothing.

use super::*;
use crate::bundle::short;

impl Supervisor {
    /// Before a spawn: applies a pending spec, then verifies the app's bundle.
    pub(super) fn check_bundle(&mut self, idx: usize) -> Result<(), String> {
        self.apply_pending(idx);
        let Some(b) = self.apps[idx]
            .as_ref()
            .and_then(|a| a.spec.bundle.as_ref())
            .map(|b| (b.dir.clone(), b.id.clone()))
        else {
            return Ok(());
        };
        self.bundle_cache.check(&b.0, &b.1)
    }

    /// `update` switches a running app whose bundle id changes.
    pub(super) fn wants_switch(&self, idx: usize, new: &AppSpec) -> bool {
        let (Some(app), Some(nb)) = (self.apps[idx].as_ref(), new.bundle.as_ref()) else {
            return false;
        };
        !self.shutting_down
            && matches!(app.m.state(), State::Running | State::Ready)
            && app.m.alive()
            && app.spec.bundle.as_ref().map(|b| &b.id) != Some(&nb.id)
    }

    pub(super) fn begin_switch(&mut self, idx: usize, spec: AppSpec) {
        let name = spec.name.clone();
        let id = spec.bundle.as_ref().map(|b| short(&b.id).to_string());
        let succ = self.add_app(spec);
        // The running instance keeps the name until the new one runs.
        self.by_name.insert(name.clone(), idx);
        if let Some(a) = self.apps[succ].as_mut() {
            a.predecessor = Some(idx);
        }
        if let Some(a) = self.apps[idx].as_mut() {
            a.successor = Some(succ);
            a.switch_note = None;
        }
        eprintln!(
            "paddock: {name}: starting bundle {} next to the running instance",
            id.unwrap_or_default()
        );
        self.feed(succ, Event::Start);
    }

    /// Moves a switch on after any change of either instance.
    pub(super) fn switch_progress(&mut self, idx: usize) {
        let Some(app) = self.apps[idx].as_ref() else {
            return;
        };
        if let Some(old) = app.predecessor {
            let st = app.m.state();
            if st == State::Ready && app.m.alive() && !self.shutting_down {
                self.commit_switch(old, idx);
            } else if st.is_down() {
                self.abandon_switch(old, idx);
            }
        } else if app.successor.is_some() && (app.m.state().is_down() || self.shutting_down) {
            let pending = (!self.shutting_down)
                .then(|| {
                    app.successor
                        .and_then(|s| self.apps[s].as_ref())
                        .map(|s| (*s.spec).clone())
                })
                .flatten();
            self.cancel_successor(idx);
            if let (Some(spec), Some(a)) = (pending, self.apps[idx].as_mut()) {
                a.pending = Some(Box::new(spec)); // applied by after_change: the app is down
            }
        }
    }

    fn unlink(&mut self, old: usize, new: usize) {
        if let Some(a) = self.apps[old].as_mut() {
            a.successor = None;
        }
        if let Some(a) = self.apps[new].as_mut() {
            a.predecessor = None;
        }
    }

    fn commit_switch(&mut self, old: usize, new: usize) {
        self.unlink(old, new);
        let Some(n) = self.apps[new].as_ref() else {
            return;
        };
        let name = n.name.to_string();
        let id = n.spec.bundle.as_ref().map(|b| short(&b.id).to_string());
        let pid = n.pid.unwrap_or(0);
        self.by_name.insert(name.clone(), new);
        let old_pid = self.apps[old].as_mut().map(|a| {
            a.remove_when_down = true;
            a.pid.unwrap_or(0)
        });
        eprintln!(
            "paddock: {name}: bundle {} is running (pid {pid}); stopping the old instance (pid {})",
            id.unwrap_or_default(),
            old_pid.unwrap_or(0)
        );
        self.publish_switched(new);
        self.feed(old, Event::Stop);
    }

    fn abandon_switch(&mut self, old: usize, new: usize) {
        self.unlink(old, new);
        let Some(n) = self.apps[new].as_ref() else {
            return;
        };
        let why = n.m.last_exit().map(|e| e.describe()).unwrap_or_default();
        let new_id = n.spec.bundle.as_ref().map(|b| short(&b.id).to_string());
        let name = n.name.clone();
        if let Some(o) = self.apps[old].as_mut() {
            let old_id = o.spec.bundle.as_ref().map(|b| short(&b.id).to_string());
            let note = format!(
                "update to bundle {} failed ({why}); still running {}",
                new_id.unwrap_or_default(),
                old_id.map_or("the previous version".into(), |i| format!("bundle {i}"))
            );
            eprintln!("paddock: {name}: {note}");
            o.switch_note = Some(note);
            self.logs.send(Ctl::Configure {
                app: name,
                spec: o.spec.logs.clone(),
            });
        }
        self.remove_app(new);
    }

    /// Calls off every switch in progress (shutdown).
    pub(super) fn cancel_switches(&mut self) {
        for idx in 0..self.apps.len() {
            self.cancel_successor(idx);
        }
    }

    /// Calls off a switch in progress: the successor is stopped and dropped.
    pub(super) fn cancel_successor(&mut self, idx: usize) {
        let Some(succ) = self.apps[idx].as_ref().and_then(|a| a.successor) else {
            return;
        };
        self.unlink(idx, succ);
        if let Some(s) = self.apps[succ].as_mut() {
            s.remove_when_down = true;
        }
        self.feed(succ, Event::Stop);
        if self.apps[succ]
            .as_ref()
            .is_some_and(|s| s.m.state().is_down())
        {
            self.remove_app(succ);
        }
    }

    /// The status message of an app during or after a switch.
    pub(super) fn switch_message(&self, app: &App) -> Option<String> {
        if let Some(s) = app.successor.and_then(|s| self.apps[s].as_ref()) {
            return Some(format!(
                "switching to bundle {}: new instance {}{}",
                s.spec.bundle.as_ref().map_or("?", |b| short(&b.id)),
                s.m.state().as_str(),
                s.m.last_exit()
                    .map(|e| format!(" ({})", e.describe()))
                    .unwrap_or_default()
            ));
        }
        app.switch_note.clone()
    }
}
