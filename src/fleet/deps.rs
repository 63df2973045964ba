//! Dependencies and the stop order: which dependencies of an app are not ready, telling apps
//! when that changes, and sending the queued stops whose dependants are down.

use super::*;

impl<R: Replier> Fleet<R> {
    /// Names of an app's dependencies that are not ready, with their states. A group of
    /// instances (`after = ["web"]`) is ready for an app to start once every instance is
    /// READY, and stays ready for a running app while one of them is (a rolling restart does
    /// not stop the apps that require the group).
    pub fn waiting_for(&self, slot: Slot) -> Vec<String> {
        let alive = self.unit(slot).is_some_and(|u| u.m.alive());
        self.deps_missing(slot, !alive)
    }

    /// `waiting_for`, judged for a start (`strict`: every instance of a group READY) or for
    /// an app that keeps running (one READY instance is enough).
    pub(super) fn deps_missing(&self, slot: Slot, strict: bool) -> Vec<String> {
        let Some(u) = self.unit(slot) else {
            return vec![];
        };
        let ready = |i: Slot| {
            self.unit(i)
                .is_some_and(|a| a.m.state() == State::Ready && !self.stop_queue.contains_key(&i))
        };
        u.spec
            .after
            .iter()
            .chain(&u.spec.requires)
            .flat_map(|d| {
                let slots = self.dep_slots(d);
                if slots.is_empty() {
                    return vec![format!("{d}: missing")];
                }
                let group = !self.by_name.contains_key(d);
                if group && !strict && slots.iter().any(|&i| ready(i)) {
                    return vec![];
                }
                slots
                    .into_iter()
                    .filter(|&i| !ready(i))
                    .map(|i| match self.unit(i) {
                        Some(a) => {
                            format!("{}: {}", a.spec.name, a.m.state().as_str().to_lowercase())
                        }
                        None => format!("{d}: missing"),
                    })
                    .collect()
            })
            .collect()
    }

    /// Tells every app whether its dependencies are ready, where that changed.
    pub(super) fn refresh_deps(&mut self) {
        // By slot, not by name: this runs on every READY transition and must stay cheap.
        let with_deps = match self.with_deps.take() {
            Some(v) => v,
            None => self
                .units()
                .filter(|(_, u)| !u.spec.after.is_empty() || !u.spec.requires.is_empty())
                .map(|(i, _)| i)
                .collect(),
        };
        for &slot in &with_deps {
            let ok = self.waiting_for(slot).is_empty();
            if self.unit(slot).is_some_and(|u| ok != u.m.deps_ok()) {
                self.queue.push_back((slot, Item::Deps));
            }
        }
        if self.with_deps.is_none() {
            self.with_deps = Some(with_deps);
        }
    }

    /// Sends the queued stops whose dependants are down. True when it sent any.
    pub(super) fn run_stop_queue(&mut self) -> bool {
        if self.stop_queue.is_empty() {
            return false;
        }
        // One pass over the apps builds the reverse dependency map; every queued stop is then
        // checked against it (not against every app: a shutdown of 1000 apps stays cheap).
        let mut alive_dependants: HashMap<&str, Vec<bool>> = HashMap::new();
        for (_, d) in self.units().filter(|(_, d)| d.m.alive()) {
            for r in &d.spec.requires {
                alive_dependants.entry(r.as_str()).or_default().push(true);
            }
            for a in &d.spec.after {
                alive_dependants.entry(a.as_str()).or_default().push(false);
            }
        }
        let ready: Vec<Slot> = self
            .stop_queue
            .iter()
            .filter(|&(&i, &scope)| {
                !self.unit(i).is_some_and(|u| {
                    let by_name = alive_dependants.get(&*u.spec.name);
                    let by_group = u
                        .spec
                        .group
                        .as_deref()
                        .and_then(|g| alive_dependants.get(g));
                    by_name.into_iter().chain(by_group).any(|ds| {
                        ds.iter()
                            .any(|&by_req| by_req || scope == StopScope::AllDependants)
                    })
                })
            })
            .map(|(&i, _)| i)
            .collect();
        drop(alive_dependants);
        // Each stop is handled as it leaves the queue: an app still queued never looks READY to
        // its dependants.
        for &slot in &ready {
            self.stop_queue.remove(&slot);
            self.step(slot, Item::Ev(Event::Stop));
        }
        !ready.is_empty()
    }

    /// Whether a stop of this app is queued behind its dependants.
    pub fn stop_queued(&self, slot: Slot) -> bool {
        self.stop_queue.contains_key(&slot)
    }
}
