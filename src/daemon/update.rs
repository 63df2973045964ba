//! `reread` and `update`: the app files on disk against the running set, and what `update` did
//! to each app, by name (`restarted`, `started`, `not running: applies at next start`, …).
//!
//! A changed app that is up is restarted with its new file. A changed app that is down keeps
//! its state and takes the new file at its next start, except an autostart app that gave up or
//! exited (`FATAL`, `EXITED`): its file was most likely just fixed, so it is started, as
//! supervisorctl's `update` does.

use super::*;

const RESTARTED: &str = "restarted";
const STARTED: &str = "started";

impl Supervisor {
    /// `reread` of the files as `loaded` (read and checked off the loop, see reload.rs), or as
    /// read now.
    pub(super) fn reread_with(
        &self,
        loaded: Option<reload::Loaded>,
    ) -> (
        Result<BTreeMap<String, AppSpec>, Vec<String>>,
        UpdateResponse,
    ) {
        let (new, mut errs) = match loaded {
            Some(l) => (l.specs, l.errors),
            None => {
                let (new, mut errs) = config::load_dirs_all(&self.opts.config_dirs);
                // A wasm app's module is loaded and linked now: a bad one is a config error.
                errs.extend(self.wasm.check(&new));
                (new, errs)
            }
        };
        config::sort_errors(&mut errs);
        if !errs.is_empty() {
            let errors: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return (
                Err(errors.clone()),
                UpdateResponse {
                    ok: false,
                    applied: false,
                    added: vec![],
                    changed: vec![],
                    removed: vec![],
                    errors,
                    apps: vec![],
                },
            );
        }
        let old: BTreeMap<String, &AppSpec> = self
            .fleet
            .units()
            .filter(|(_, u)| !u.remove_when_down)
            .filter_map(|(i, _)| self.app(i))
            .map(|a| (a.spec.name.clone(), a.pending.as_deref().unwrap_or(&a.spec)))
            .collect();
        let d = config::diff(&old, &new);
        let r = UpdateResponse {
            ok: true,
            applied: false,
            added: d.added,
            changed: d.changed,
            removed: d.removed,
            errors: vec![],
            apps: vec![],
        };
        (Ok(new), r)
    }

    pub(super) fn update_with(&mut self, loaded: Option<reload::Loaded>) -> Reply {
        if self.fleet.shutting_down() {
            return Reply::error(409, "paddock is shutting down");
        }
        let (new, mut r) = self.reread_with(loaded);
        let Ok(mut new) = new else {
            return Reply::json(422, &r);
        };
        // Definitions change (and pending ones, shown by status, are noted): every entry of
        // the board is written again before the answer goes.
        self.board_restructured();
        let mut did: BTreeMap<String, (&str, String)> = new
            .keys()
            .filter(|n| !r.added.contains(n) && !r.changed.contains(n))
            .map(|n| (n.clone(), ("unchanged", "nothing".to_string())))
            .collect();
        for name in &r.removed {
            if let Some(idx) = self.fleet.slot_of(name) {
                let up = self.fleet.unit(idx).is_some_and(|u| !u.m.state().is_down());
                self.fleet.remove_when_down(idx);
                let now = self.now();
                self.fleet.request_stop(idx, StopScope::AllDependants, now);
                let what = if up { "stopped and removed" } else { "removed" };
                did.insert(name.clone(), ("removed", what.into()));
            }
        }
        let mut to_start = vec![];
        for name in &r.changed {
            let (Some(idx), Some(spec)) = (self.fleet.slot_of(name), new.remove(name)) else {
                continue;
            };
            // A generation that was rolled back is not applied again while its file is unchanged.
            if let Some(why) = self.gens_refuses(&spec) {
                did.insert(name.clone(), ("changed", why));
                continue;
            }
            let old = self
                .app(idx)
                .map(|a| a.pending.as_deref().unwrap_or(&a.spec).clone());
            let applied = spec.clone();
            let what = self.apply_changed(idx, spec, &mut to_start);
            self.gens_applied(idx, &applied, old.as_ref());
            did.insert(name.clone(), ("changed", what));
        }
        for name in &r.added {
            if let Some(spec) = new.remove(name) {
                let autostart = spec.autostart;
                let applied = spec.clone();
                let idx = self.add_app(spec);
                self.gens_applied(idx, &applied, None);
                let what = if autostart {
                    to_start.push(idx);
                    STARTED
                } else if applied.schedule.is_some() {
                    "scheduled (runs at its times)"
                } else {
                    "not started (autostart = false)"
                };
                did.insert(name.clone(), ("added", what.into()));
            }
        }
        self.sync_publish();
        self.arm_schedules();
        for idx in to_start {
            self.feed(idx, Event::Start);
        }
        r.applied = true;
        r.apps = did
            .into_iter()
            .map(|(app, (change, did))| UpdateItem {
                app,
                change: change.into(),
                did,
            })
            .collect();
        Reply::json(200, &r)
    }

    /// Gives an app its changed file; says what was done. Apps to start once the dependency
    /// graph is refreshed go to `to_start`.
    pub(super) fn apply_changed(
        &mut self,
        idx: usize,
        spec: AppSpec,
        to_start: &mut Vec<usize>,
    ) -> String {
        // A new bundle for a running app: start it next to the old one (see bundles.rs).
        let now = self.now();
        self.fleet.call_off_switch(idx, now);
        if self.apps[idx].as_ref().is_some_and(|a| *a.spec == spec) {
            // A switch was called off: the running instance has these settings.
            return "nothing (the running instance has these settings)".into();
        }
        if self.http_update(idx, &spec) {
            // Served in place by the new module (http_apps.rs): the next requests run it.
            return RESTARTED.into();
        }
        if self.wants_switch(idx, &spec) {
            self.begin_switch(idx, spec);
            return format!("{RESTARTED} (the new bundle starts next to the running instance)");
        }
        let autostart = spec.autostart;
        let (Some(app), Some(u)) = (self.apps[idx].as_mut(), self.fleet.unit(idx)) else {
            return "nothing".into();
        };
        let st = u.m.state();
        let waiting = u.m.waiting();
        let scheduled_run = st.is_up() && (spec.schedule.is_some() || u.sched.is_some());
        let schedule = spec.schedule.clone();
        app.pending = Some(Box::new(spec));
        if scheduled_run {
            // A scheduled run is not cut short: the new file applies when it ends, the new
            // schedule at once.
            self.fleet.reschedule_now(idx, schedule);
            return "running a scheduled run: applies when it ends (the schedule at once)".into();
        }
        // An app being stopped stays stopped: its new spec applies when it is down.
        if st.is_up() && !waiting {
            self.feed(idx, Event::Restart);
            return RESTARTED.into();
        }
        self.apply_pending(idx);
        match st {
            State::Fatal | State::Exited if autostart => {
                to_start.push(idx);
                STARTED.into()
            }
            _ if waiting => "waiting: applies when it starts".into(),
            State::Stopping => "stopping: applies at next start".into(),
            _ => "not running: applies at next start".into(),
        }
    }
}
