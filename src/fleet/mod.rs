//! The fleet's decisions, sans-IO: every app's state machine (`crate::supervise`), dependency
//! order, the stop queue, bundle switches, waiters and shutdown, in one struct that takes inputs
//! with the time they happen and yields effects for the daemon to carry out. It makes no system
//! call and reads no clock, so whole fleets are walked through thousands of random histories in
//! milliseconds (`tests.rs`).
//!
//! The shape is quinn-proto's `Endpoint`: the daemon (the driver) calls an input method
//! (`feed`, `spawn_done`, `exited`, `health`, `act`, `handle_timeout`, …), then takes effects
//! with `poll_effect` until there are none, carrying each out (a spawn, a signal, a reply) and
//! feeding its result back as a new input. An input never calls back into the driver, and the
//! events an input causes inside the fleet (a dependency became READY, so its dependants start)
//! go through one queue, never through recursion: a shutdown of thousands of apps runs in a
//! loop, not on the stack.
//!
//! **A spawn is atomic for its app**: from the `Effect::Spawn` until the driver reports its
//! outcome (`spawn_done`), further events for that app are held back, so the machine sees the
//! spawn's result right after it asked for the spawn, as if the spawn were a function call.

use crate::supervise::{Action, Event, Exit, Machine, Policy, State, TIMER_KINDS, TimerKind};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

mod deps;
mod rolls;
pub mod schedule;
mod waiters;
use rolls::Roll;
pub use schedule::{Counts, Sched, SchedNote};
use waiters::Waiter;
pub use waiters::{Answer, Replier, Verb};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_schedule;

/// Whether `Deps(false)` would begin a stop of this machine (an app that `requires` others,
/// up and alive).
fn would_stop(m: &Machine) -> bool {
    m.policy.stop_with_deps
        && m.alive()
        && matches!(m.state(), State::Running | State::Ready | State::Starting)
}

/// An app's place in the fleet; slots are never reused.
pub type Slot = usize;
/// Time since the driver's origin (its clock; tests use a fake one).
pub type Time = Duration;

/// What the fleet needs to know of an app's definition.
#[derive(Clone, Debug)]
pub struct UnitSpec {
    pub name: Arc<str>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub autostart: bool,
    pub essential: bool,
    pub policy: Policy,
    /// One of an app file's `instances`: the group's name (`web` for `web@2`), which names
    /// all of them in requests and in `after`/`requires`.
    pub group: Option<Arc<str>>,
    /// How many of its group a rolling restart takes down at once (`[restart] max_unavailable`).
    pub max_unavailable: u32,
    /// `schedule`/`every`: started at its times (schedule.rs).
    pub schedule: Option<Box<crate::schedule::ScheduleSpec>>,
}

/// One app (or the second instance of an app during a bundle switch), as the fleet sees it.
pub struct Unit {
    pub spec: UnitSpec,
    pub m: Machine,
    /// The main process as the driver reported it (None: not running, or a wasm instance).
    pub pid: Option<i32>,
    /// Dropped from the fleet once it is down (removed by `update`, a replaced instance).
    pub remove_when_down: bool,
    /// Why the current stop happens (for events and status).
    pub stop_why: String,
    /// What the last health check said.
    pub health_detail: String,
    /// Bundle switch: the instance starting with the new bundle, and the one it replaces.
    pub successor: Option<Slot>,
    pub predecessor: Option<Slot>,
    /// A scheduled app's schedule, run under way and last run (schedule.rs).
    pub sched: Option<Box<Sched>>,
    /// An `Effect::Spawn` is out: events wait in `held` until its outcome is in.
    spawning: bool,
    held: VecDeque<Item>,
}

/// What waits in the fleet's queue for one app.
#[derive(Debug)]
enum Item {
    Ev(Event),
    /// Its dependencies changed: whether they are ready is judged when this is handled, not
    /// when it was queued (a dependency may have come and gone in between).
    Deps,
    /// Its schedule timer fired (schedule.rs).
    Scheduled,
}

/// How the driver's spawn went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnOutcome {
    /// Running (a pid for a process, None for a wasm instance).
    Started(Option<i32>),
    /// Tried and failed (counts as a failed start, retried by policy).
    Failed(String),
    /// Refused before trying (a bundle check, a limit the host cannot enforce): FATAL at once.
    Refused(String),
}

/// Which dependants a queued stop waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopScope {
    /// Apps that `require` it (a single `stop`).
    Requirers,
    /// Every app that depends on it (`stop all`, shutdown).
    AllDependants,
}

/// What the driver carries out, in order.
#[derive(Debug)]
pub enum Effect<R> {
    /// Start the app's process or instance; report with `spawn_done`.
    Spawn(Slot),
    /// Send the stop (or an operator's) signal to the app.
    Signal(Slot, i32),
    /// Kill the app's whole process group and cgroup.
    KillGroup(Slot),
    /// Run one health check; report with `health`.
    RunCheck(Slot),
    /// The app changed state (events, records, request gates).
    Changed { slot: Slot, from: State, to: State },
    /// The app went down: a pending definition may be applied now.
    Down(Slot),
    /// The slot is gone from the fleet; `named`: it held the app's name (not a switch's
    /// second instance), so the app itself is gone.
    Removed { slot: Slot, named: bool },
    /// A bundle switch's new instance is READY and now holds the name; the old one stops.
    Switched { old: Slot, new: Slot },
    /// A bundle switch's new instance gave up; `old` keeps running.
    SwitchFailed { old: Slot, new: Slot, why: String },
    /// A switch was called off because `old` went down: when `take_spec`, the old instance
    /// takes the new instance's definition (read it before `Removed` of `new`).
    SwitchCancelled {
        old: Slot,
        new: Slot,
        take_spec: bool,
    },
    /// A rolling restart of a group ended: every instance is READY again (`why` None), or it
    /// stopped at an instance that did not come back (the others were left alone).
    Rolled { group: String, why: Option<String> },
    /// An essential app is FATAL: the fleet shuts down with exit code 1.
    EssentialFailed(Slot),
    /// Answer a waiting request.
    Reply(R, Answer),
    /// Something a scheduled app's schedule did (log it, write its record).
    Schedule(Slot, SchedNote),
}

pub struct Fleet<R> {
    units: Vec<Option<Unit>>,
    by_name: BTreeMap<String, Slot>,
    timers: BTreeSet<(Time, Slot, TimerKind)>,
    timer_of: HashMap<(Slot, TimerKind), Time>,
    /// Stops waiting for dependants to go down first.
    stop_queue: BTreeMap<Slot, StopScope>,
    waiters: Vec<Waiter<R>>,
    /// Rolling restarts of groups of instances under way (rolls.rs).
    rolls: Vec<Roll>,
    next_roll: u64,
    /// Events caused inside the fleet, handled in order by `drain`.
    queue: VecDeque<(Slot, Item)>,
    effects: VecDeque<Effect<R>>,
    /// Slots of apps with dependencies (None: to be listed again).
    with_deps: Option<Vec<Slot>>,
    shutting_down: bool,
    done: bool,
    exit_code: i32,
    seed: u64,
    now: Time,
    /// The wall clock minus `now`, in milliseconds (`set_wall`).
    wall_offset: i64,
    acts: Vec<Action>,
}

impl<R: Replier> Fleet<R> {
    /// `seed` makes the machines' backoff jitter differ between runs (and repeat in tests).
    pub fn new(seed: u64) -> Self {
        Fleet {
            units: vec![],
            by_name: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            stop_queue: BTreeMap::new(),
            waiters: vec![],
            rolls: vec![],
            next_roll: 0,
            queue: VecDeque::new(),
            effects: VecDeque::new(),
            with_deps: None,
            shutting_down: false,
            done: false,
            exit_code: 0,
            seed,
            now: Duration::ZERO,
            wall_offset: 0,
            acts: Vec::with_capacity(4),
        }
    }

    // ---- the fleet's table ----

    /// Adds an app under its name; returns its slot.
    pub fn add(&mut self, spec: UnitSpec) -> Slot {
        let slot = self.add_hidden(spec);
        if let Some(u) = self.unit_mut(slot) {
            u.sched = u.spec.schedule.clone().map(|s| Box::new(Sched::new(*s)));
            let name = u.spec.name.to_string();
            self.by_name.insert(name, slot);
        }
        slot
    }

    /// Adds a unit without giving it the name (a bundle switch's new instance).
    fn add_hidden(&mut self, spec: UnitSpec) -> Slot {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = Unit {
            m: Machine::new(spec.policy.clone(), self.seed),
            spec,
            pid: None,
            remove_when_down: false,
            stop_why: String::new(),
            health_detail: String::new(),
            successor: None,
            predecessor: None,
            sched: None,
            spawning: false,
            held: VecDeque::new(),
        };
        self.units.push(Some(unit));
        self.with_deps = None;
        self.units.len() - 1
    }

    /// A new definition for an app (applied by the driver while it is down or spawning).
    pub fn reconfigure(&mut self, slot: Slot, spec: UnitSpec) {
        if let Some(u) = self.unit_mut(slot) {
            u.m.policy = spec.policy.clone();
            let schedule = spec.schedule.clone();
            let named = u.predecessor.is_none();
            u.spec = spec;
            self.with_deps = None;
            if named {
                self.reschedule(slot, schedule);
            }
        }
    }

    pub fn unit(&self, slot: Slot) -> Option<&Unit> {
        self.units.get(slot).and_then(Option::as_ref)
    }

    fn unit_mut(&mut self, slot: Slot) -> Option<&mut Unit> {
        self.units.get_mut(slot).and_then(Option::as_mut)
    }

    /// Every slot in use (with switches' second instances).
    pub fn units(&self) -> impl Iterator<Item = (Slot, &Unit)> {
        self.units
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.as_ref().map(|u| (i, u)))
    }

    /// The slot holding an app's name.
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.by_name.get(name).copied()
    }

    /// The named apps, by name.
    pub fn named(&self) -> &BTreeMap<String, Slot> {
        &self.by_name
    }

    /// Slots of the named apps, in name order.
    pub fn slots(&self) -> Vec<Slot> {
        self.by_name.values().copied().collect()
    }

    /// How many slots were ever used (the driver's table has as many).
    pub fn capacity(&self) -> usize {
        self.units.len()
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Shutdown is complete: nothing is alive and nothing waits to stop.
    pub fn done(&self) -> bool {
        self.done
    }

    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Every autostart app is READY or has settled (FATAL, EXITED).
    pub fn settled(&self) -> bool {
        self.units()
            .filter(|(_, u)| u.spec.autostart)
            .all(|(_, u)| matches!(u.m.state(), State::Ready | State::Fatal | State::Exited))
    }

    // ---- effects and timers ----

    pub fn poll_effect(&mut self) -> Option<Effect<R>> {
        self.effects.pop_front()
    }

    /// When the earliest timer fires.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|t| t.0)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        while let Some(&(at, slot, kind)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, slot, kind));
            self.timer_of.remove(&(slot, kind));
            if let Some(u) = self.unit_mut(slot) {
                match kind {
                    TimerKind::ReadyTimeout => u.stop_why = "not ready in time".into(),
                    TimerKind::Watchdog => u.stop_why = "watchdog expired".into(),
                    _ => {}
                }
            }
            let item = match kind {
                TimerKind::Schedule => Item::Scheduled,
                k => Item::Ev(Event::Timer(k)),
            };
            self.queue.push_back((slot, item));
        }
        self.drain();
    }

    fn arm(&mut self, slot: Slot, kind: TimerKind, after: Duration) {
        self.cancel(slot, kind);
        let at = self.now + after;
        self.timers.insert((at, slot, kind));
        self.timer_of.insert((slot, kind), at);
    }

    fn cancel(&mut self, slot: Slot, kind: TimerKind) {
        if let Some(at) = self.timer_of.remove(&(slot, kind)) {
            self.timers.remove(&(at, slot, kind));
        }
    }

    /// The armed timers: when, for which app, of which kind.
    pub fn timers(&self) -> impl Iterator<Item = (Time, Slot, TimerKind)> + '_ {
        self.timers.iter().copied()
    }

    // ---- inputs ----

    /// An event for one app (start, stop, ready, watchdog ping, adoption, …).
    pub fn feed(&mut self, slot: Slot, ev: Event, now: Time) {
        self.now = now;
        self.queue.push_back((slot, Item::Ev(ev)));
        self.drain();
    }

    /// The outcome of an `Effect::Spawn`.
    pub fn spawn_done(&mut self, slot: Slot, outcome: SpawnOutcome, now: Time) {
        self.now = now;
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        u.spawning = false;
        let ev = match outcome {
            SpawnOutcome::Started(pid) => {
                u.pid = pid;
                u.health_detail.clear();
                Event::Spawned
            }
            SpawnOutcome::Failed(e) => Event::SpawnFailed(e),
            SpawnOutcome::Refused(e) => Event::SpawnRefused(e),
        };
        // The spawn's result first, then what came for the app meanwhile.
        let held = std::mem::take(&mut u.held);
        for item in held.into_iter().rev() {
            self.queue.push_front((slot, item));
        }
        self.queue.push_front((slot, Item::Ev(ev)));
        self.drain();
    }

    /// The app's main process (or instance) ended.
    pub fn exited(&mut self, slot: Slot, exit: Exit, now: Time) {
        if let Some(u) = self.unit_mut(slot) {
            u.pid = None;
        }
        self.feed(slot, Event::Exited(exit), now);
    }

    /// A health check's result.
    pub fn health(&mut self, slot: Slot, result: Result<(), String>, now: Time) {
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        u.health_detail = match &result {
            Ok(()) => "ok".into(),
            Err(e) => e.clone(),
        };
        self.feed(slot, Event::Health(result.is_ok()), now);
    }

    /// Starts every autostart app (each waits for its dependencies by itself).
    pub fn autostart(&mut self, now: Time) {
        self.now = now;
        self.refresh_deps();
        for slot in self.slots() {
            if self.unit(slot).is_some_and(|u| u.spec.autostart) {
                self.queue.push_back((slot, Item::Ev(Event::Start)));
            }
        }
        self.arm_schedules(now);
    }

    /// Queues a stop; it starts once the apps depending on this one are down.
    pub fn request_stop(&mut self, slot: Slot, scope: StopScope, now: Time) {
        self.now = now;
        if self.unit(slot).is_none() {
            return;
        }
        if self.stop_queue.get(&slot) != Some(&StopScope::AllDependants) {
            self.stop_queue.insert(slot, scope);
        }
        self.refresh_deps(); // dependants that `require` it stop now
        self.drain();
    }

    /// Why the app's next stop happens (for events and status).
    pub fn set_stop_why(&mut self, slot: Slot, why: String) {
        if let Some(u) = self.unit_mut(slot) {
            u.stop_why = why;
        }
    }

    /// Marks an app to be dropped once it is down (`update` removed its file).
    pub fn remove_when_down(&mut self, slot: Slot) {
        if let Some(u) = self.unit_mut(slot) {
            u.remove_when_down = true;
        }
    }

    /// Stops every app in reverse dependency order; `done()` once all are down. False when a
    /// shutdown was already under way.
    pub fn begin_shutdown(&mut self, now: Time) -> bool {
        self.now = now;
        if !self.start_shutdown() {
            return false;
        }
        self.drain();
        true
    }

    fn start_shutdown(&mut self) -> bool {
        if self.shutting_down {
            return false;
        }
        self.shutting_down = true;
        for slot in 0..self.units.len() {
            self.cancel_successor(slot);
        }
        for slot in self.slots() {
            if self.unit(slot).is_some_and(|u| !u.m.state().is_down()) {
                self.stop_queue.insert(slot, StopScope::AllDependants);
            }
        }
        self.refresh_deps();
        true
    }

    // ---- bundle switches ----

    /// Starts `spec` as a second instance of the running app in `old`; it takes the name once
    /// READY (the daemon's bundles.rs). Returns the new slot.
    pub fn begin_switch(&mut self, old: Slot, spec: UnitSpec, now: Time) -> Slot {
        self.now = now;
        let new = self.add_hidden(spec);
        if let Some(u) = self.unit_mut(new) {
            u.predecessor = Some(old);
        }
        if let Some(u) = self.unit_mut(old) {
            u.successor = Some(new);
        }
        self.queue.push_back((new, Item::Ev(Event::Start)));
        self.drain();
        new
    }

    /// Calls off a switch in progress: the new instance is stopped and dropped.
    pub fn cancel_successor(&mut self, slot: Slot) {
        let Some(new) = self.unit(slot).and_then(|u| u.successor) else {
            return;
        };
        self.unlink(slot, new);
        if let Some(u) = self.unit_mut(new) {
            u.remove_when_down = true;
        }
        self.queue.push_back((new, Item::Ev(Event::Stop)));
    }

    /// Calls off a switch and handles what follows (for the driver's `update`).
    pub fn call_off_switch(&mut self, slot: Slot, now: Time) {
        self.now = now;
        self.cancel_successor(slot);
        self.drain();
    }

    fn unlink(&mut self, old: Slot, new: Slot) {
        if let Some(u) = self.unit_mut(old) {
            u.successor = None;
        }
        if let Some(u) = self.unit_mut(new) {
            u.predecessor = None;
        }
    }

    /// Moves a switch on after any change of either instance.
    fn switch_progress(&mut self, slot: Slot) {
        let Some(u) = self.unit(slot) else {
            return;
        };
        let (st, alive) = (u.m.state(), u.m.alive());
        let name = u.spec.name.to_string();
        let why = u.m.last_exit().map(|e| e.describe()).unwrap_or_default();
        if let Some(old) = u.predecessor {
            if st == State::Ready && alive && !self.shutting_down {
                // Commit: the new instance takes the name, the old one stops and is dropped.
                self.unlink(old, slot);
                self.by_name.insert(name, slot);
                self.with_deps = None;
                if let Some(o) = self.unit_mut(old) {
                    o.remove_when_down = true;
                }
                self.effects.push_back(Effect::Switched { old, new: slot });
                self.queue.push_back((old, Item::Ev(Event::Stop)));
            } else if st.is_down() {
                self.unlink(old, slot);
                self.effects.push_back(Effect::SwitchFailed {
                    old,
                    new: slot,
                    why,
                });
                self.remove(slot);
            }
        } else if let Some(new) = u.successor
            && (st.is_down() || self.shutting_down)
        {
            self.effects.push_back(Effect::SwitchCancelled {
                old: slot,
                new,
                take_spec: !self.shutting_down,
            });
            self.cancel_successor(slot);
        }
    }

    // ---- the loop ----

    /// Handles queued events until none is left, then the stop queue, and again.
    fn drain(&mut self) {
        loop {
            while let Some((slot, item)) = self.queue.pop_front() {
                self.step(slot, item);
            }
            if !self.run_stop_queue() && !self.progress_rolls() {
                break;
            }
        }
        self.check_waiters();
        if self.shutting_down
            && self.stop_queue.is_empty()
            && self.units().all(|(_, u)| !u.m.alive())
        {
            self.done = true;
        }
    }

    /// One queued item for one app, and what follows from it.
    fn step(&mut self, slot: Slot, item: Item) {
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        if u.spawning {
            u.held.push_back(item);
            return;
        }
        if let Item::Scheduled = item {
            self.schedule_fired(slot);
            return;
        }
        let has_deps = (!u.spec.after.is_empty() || !u.spec.requires.is_empty())
            && !matches!(item, Item::Ev(Event::Stop));
        // Whether the dependencies are ready is judged now, before any event that may start
        // the app: a dependency may have changed since the event was queued.
        // An app whose own stop is queued is not stopped by its dependencies going away: it
        // stops in its turn, after the apps that depend on it (shutdown, `stop all`).
        if has_deps {
            // An event after which the app may start again is judged as a start.
            let strict = !u.m.alive()
                || matches!(
                    item,
                    Item::Ev(Event::Exited(_) | Event::Restart | Event::SpawnFailed(_))
                );
            let ok = self.deps_missing(slot, strict).is_empty();
            let queued = self.stop_queue.contains_key(&slot);
            if let Some(u) = self.unit_mut(slot)
                && ok != u.m.deps_ok()
                && (ok || !queued || !would_stop(&u.m))
            {
                if !ok {
                    u.stop_why = "a required app went away".into();
                }
                self.apply(slot, Event::Deps(ok));
            }
        }
        if let Item::Ev(ev) = item {
            self.apply(slot, ev);
        }
    }

    /// One event for one app's machine, and its actions.
    fn apply(&mut self, slot: Slot, ev: Event) {
        let now = self.now;
        let Some(u) = self.units.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if u.spawning {
            // A Deps event made it spawn: what follows waits for the spawn's outcome.
            u.held.push_back(Item::Ev(ev));
            return;
        }
        let before = u.m.state();
        let mut acts = std::mem::take(&mut self.acts);
        acts.clear();
        u.m.handle(ev, now, &mut acts);
        let after = u.m.state();
        if after != before {
            if after == State::Stopping && u.stop_why.is_empty() {
                u.stop_why = "stop requested".into();
            }
            if after != State::Stopping {
                u.stop_why.clear();
            }
            self.effects.push_back(Effect::Changed {
                slot,
                from: before,
                to: after,
            });
        }
        for a in acts.drain(..) {
            match a {
                Action::Spawn => {
                    if let Some(u) = self.unit_mut(slot) {
                        u.spawning = true;
                    }
                    self.effects.push_back(Effect::Spawn(slot));
                }
                Action::Signal(sig) => self.effects.push_back(Effect::Signal(slot, sig)),
                Action::KillGroup => self.effects.push_back(Effect::KillGroup(slot)),
                Action::Arm(k, d) => self.arm(slot, k, d),
                Action::Cancel(k) => self.cancel(slot, k),
                Action::RunHealthCheck => self.effects.push_back(Effect::RunCheck(slot)),
            }
        }
        self.acts = acts;
        self.after_change(slot, before, after);
    }

    fn after_change(&mut self, slot: Slot, before: State, after: State) {
        if after != before {
            self.schedule_transition(slot, before, after);
        }
        self.switch_progress(slot);
        let Some(u) = self.unit(slot) else {
            return;
        };
        let (down, remove, essential) = (after.is_down(), u.remove_when_down, u.spec.essential);
        if after != before {
            if after == State::Fatal && essential && !self.shutting_down {
                self.exit_code = 1;
                self.effects.push_back(Effect::EssentialFailed(slot));
                self.start_shutdown();
            }
            // Dependants see READY come and go.
            if (after == State::Ready) != (before == State::Ready) || after == State::Fatal || down
            {
                self.refresh_deps();
            }
            if down {
                self.effects.push_back(Effect::Down(slot));
            }
        }
        if down && remove {
            self.remove(slot);
        }
    }

    /// Drops a slot: its timers, its queued stop, its name (unless another slot has it now).
    fn remove(&mut self, slot: Slot) {
        let Some(u) = self.units.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.with_deps = None;
        for k in TIMER_KINDS {
            self.cancel(slot, k);
        }
        self.stop_queue.remove(&slot);
        let named = self.by_name.get(&*u.spec.name) == Some(&slot);
        if named {
            self.by_name.remove(&*u.spec.name);
        }
        self.effects.push_back(Effect::Removed { slot, named });
        self.refresh_deps();
    }
}
