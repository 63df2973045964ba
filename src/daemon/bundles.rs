//! `isolation = "bundle"` in the supervisor: the check of an app's bundle before each start,
//! and the switch of a running app to a new bundle on `update`.
//!
//! **Check.** Before every spawn the bundle is verified against its manifest through a cache
//! keyed by file identity (`crate::bundle::verify::Cache`). A missing or changed file refuses the
//! start (`Event::SpawnRefused`): the app goes `FATAL` at once, with the file named, and is not
//! retried until an operator starts it.
//!
//! The decisions of a switch (when the new instance takes the name, when the switch is
//! abandoned or called off) are the fleet's (`crate::fleet`); this file does their I/O side.
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
        let (Some(app), Some(u), Some(nb)) =
            (self.app(idx), self.fleet.unit(idx), new.bundle.as_ref())
        else {
            return false;
        };
        // A scheduled app's run is not doubled: its new bundle serves the next run.
        !self.fleet.shutting_down()
            && u.sched.is_none()
            && new.schedule.is_none()
            && matches!(u.m.state(), State::Running | State::Ready)
            && u.m.alive()
            && app.spec.bundle.as_ref().map(|b| &b.id) != Some(&nb.id)
    }

    pub(super) fn begin_switch(&mut self, idx: usize, spec: AppSpec) {
        let id = spec.bundle.as_ref().map(|b| short(&b.id).to_string());
        eprintln!(
            "paddock: {}: starting bundle {} next to the running instance",
            spec.name,
            id.unwrap_or_default()
        );
        let unit = unit_spec(&spec);
        let succ = self.new_app(&spec);
        if let Some(a) = self.apps[idx].as_mut() {
            a.switch_note = None;
        }
        let now = self.now();
        let slot = self.fleet.begin_switch(idx, unit, now);
        debug_assert_eq!(slot, succ);
        self.http_load(succ);
    }

    /// The new instance is READY and has the name: the old one is being stopped.
    pub(super) fn switched(&mut self, old: usize, new: usize) {
        let Some(n) = self.app(new) else {
            return;
        };
        let id = n.spec.bundle.as_ref().map(|b| short(&b.id).to_string());
        eprintln!(
            "paddock: {}: bundle {} is running (pid {}); stopping the old instance (pid {})",
            n.name,
            id.unwrap_or_default(),
            n.pid.unwrap_or(0),
            self.app(old).and_then(|a| a.pid).unwrap_or(0)
        );
        self.publish_switched(new);
    }

    /// The new instance gave up: the old one keeps running, and says why in its status.
    pub(super) fn switch_failed(&mut self, old: usize, new: usize, why: &str) {
        let Some(n) = self.app(new) else {
            return;
        };
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
    }

    /// The old instance went down during a switch: it takes the new settings (applied now,
    /// as for any changed app that is down), unless paddock is shutting down.
    pub(super) fn switch_cancelled(&mut self, old: usize, new: usize, take_spec: bool) {
        let spec = self.app(new).map(|n| (*n.spec).clone());
        if let (true, Some(spec), Some(o)) = (take_spec, spec, self.apps[old].as_mut()) {
            o.pending = Some(Box::new(spec));
            if self.fleet.unit(old).is_some_and(|u| u.m.state().is_down()) {
                self.apply_pending(old);
            }
        }
    }

    /// The status message of an app during or after a switch.
    pub(super) fn switch_message(&self, idx: usize) -> Option<String> {
        let succ = self.fleet.unit(idx).and_then(|u| u.successor);
        if let Some(s) = succ.and_then(|s| self.fleet.unit(s)) {
            let bundle = succ
                .and_then(|s| self.app(s))
                .and_then(|a| a.spec.bundle.as_ref().map(|b| short(&b.id).to_string()));
            return Some(format!(
                "switching to bundle {}: new instance {}{}",
                bundle.as_deref().unwrap_or("?"),
                s.m.state().as_str(),
                s.m.last_exit()
                    .map(|e| format!(" ({})", e.describe()))
                    .unwrap_or_default()
            ));
        }
        self.app(idx).and_then(|a| a.switch_note.clone())
    }
}
