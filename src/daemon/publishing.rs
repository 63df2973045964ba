//! `[sandbox] publish` in the supervisor (see `crate::publish`): the listeners follow the loaded
//! apps (bound at load, changed by `update`, closed when an app is removed), and each app's
//! connections go to the network namespace of its current instance.

use super::*;

impl Supervisor {
    /// Makes the listeners match the loaded apps (at start, after `update`, after a bundle
    /// switch). An app being removed publishes nothing any more; a changed app publishes what
    /// its new file says at once.
    pub(super) fn sync_publish(&mut self) {
        let mut want = vec![];
        for (&idx, u) in self
            .fleet
            .named()
            .values()
            .filter_map(|i| Some((i, self.fleet.unit(*i)?)))
        {
            let Some(app) = self.apps[idx].as_ref() else {
                continue;
            };
            if u.remove_when_down {
                continue;
            }
            let spec = app.pending.as_deref().unwrap_or(&app.spec);
            for p in spec.sandbox.iter().flat_map(|s| &s.publish) {
                want.push((app.name.clone(), p.clone()));
            }
        }
        if !want.is_empty() || self.publisher.any() {
            self.publisher.sync(&want);
            self.sweep_sockets(); // the holder keeps the listeners too
        }
    }

    /// Before a spawn of an app's current instance: its connections go to the namespace it is
    /// prepared with, and its listeners must be bound (else the start fails, and is retried).
    pub(super) fn publish_before_spawn(&mut self, idx: usize) -> Result<(), String> {
        let Some(name) = self.publish_target(idx) else {
            return Ok(());
        };
        self.publisher.retry(&name)
    }

    /// A bundle switch committed: the new instance's addresses, and its namespace.
    pub(super) fn publish_switched(&mut self, idx: usize) {
        self.sync_publish();
        self.publish_target(idx);
    }

    pub(super) fn publish_target(&mut self, idx: usize) -> Option<Arc<str>> {
        let app = self.apps[idx].as_ref()?;
        if self.fleet.slot_of(&app.name) != Some(idx) || !self.publisher.has(&app.name) {
            return None;
        }
        let target = match &app.prepared {
            Ok(p) => crate::publish::target_of(p),
            Err(e) => Err(e.clone()),
        };
        let name = app.name.clone();
        self.publisher.set_target(&name, target);
        Some(name)
    }
}
