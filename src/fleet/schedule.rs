//! Scheduled apps in the fleet: when the next run is due, starting it, overlap (skip or queue),
//! the run under way and the last one, pausing by `stop`, missed runs (`catch_up`).
//!
//! **Wall clock and monotonic clock.** Due times are wall-clock times (a cron expression names
//! them), but timers run on the driver's monotonic clock. The driver tells the fleet the wall
//! clock with each input (`set_wall`); the fleet computes the next due time from the wall clock
//! and arms a monotonic timer for the distance, at most `RECHECK` ahead. When the timer fires
//! the wall clock is read again: not due yet (the clock went back) → the timer is armed for the
//! rest; due → one run, and the next due time is computed from the wall clock *now*, so a clock
//! that jumped forward or a host that slept through many due times gives one run, never a
//! burst. `RECHECK` bounds how late a run starts after a jump forward or a suspend (the
//! monotonic clock does not count a suspend).

use super::*;
use crate::schedule::record::{LastRun, Outcome, Record};
use crate::schedule::{Overlap, ScheduleSpec, Wall};

/// The longest a schedule timer is armed for: a wall-clock jump or a suspend is noticed within
/// this long.
pub const RECHECK: Duration = Duration::from_secs(60);

/// Runs by how they ended, and skipped due times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub success: u64,
    pub failure: u64,
    pub stopped: u64,
    pub skipped: u64,
}

/// The run under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Wall clock at its start.
    pub start: Wall,
    /// Monotonic clock at its start.
    pub started: Time,
}

/// A scheduled app's schedule and what it did.
#[derive(Clone, Debug)]
pub struct Sched {
    pub spec: ScheduleSpec,
    /// The next due time (None: not armed yet, paused, or never again).
    pub next: Option<Wall>,
    /// Armed once (catch-up is judged then).
    armed: bool,
    /// Paused by `stop` until `start`.
    pub paused: bool,
    /// A run waits for the one under way (`overlap = "queue"`).
    pub queued: bool,
    pub run: Option<Run>,
    pub last: Option<LastRun>,
    /// When the last run started (also while it runs).
    pub last_start: Option<Wall>,
    pub counts: Counts,
}

impl Sched {
    pub fn new(spec: ScheduleSpec) -> Sched {
        Sched {
            spec,
            next: None,
            armed: false,
            paused: false,
            queued: false,
            run: None,
            last: None,
            last_start: None,
            counts: Counts::default(),
        }
    }

    /// Its schedule has been armed (its record, if any, was restored before).
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// What the state directory keeps of it.
    pub fn record(&self, app: &str) -> Record {
        Record {
            app: app.to_string(),
            last: self.last.clone(),
            last_start: self.last_start,
            paused: self.paused,
        }
    }
}

/// What happened to a schedule, for the driver's log and records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedNote {
    /// A run was due at this time while one was under way: not started.
    Skipped(Wall),
    /// A run was due at this time while one was under way: it starts when that one ends.
    Queued(Wall),
    /// A run was missed at this time while paddock was down: it runs now (`catch_up`).
    CatchUp(Wall),
    /// The record changed (a run started or ended, the schedule was paused or resumed): write it.
    Record,
}

impl<R: Replier> Fleet<R> {
    /// The wall clock at `now` (milliseconds since the epoch); the fleet keeps the difference
    /// and uses it until told again. The driver calls this with each input (tests: to jump).
    pub fn set_wall(&mut self, now: Time, wall: Wall) {
        self.wall_offset = wall - now.as_millis() as i64;
    }

    /// The wall clock now, as last told.
    pub fn wall(&self) -> Wall {
        self.now.as_millis() as i64 + self.wall_offset
    }

    /// What a restarted paddock knows of an app's schedule (its record in the state directory):
    /// the last run, and whether `stop` paused it. Before the schedule is armed (`autostart`).
    pub fn restore_schedule(&mut self, slot: Slot, r: Record) {
        if let Some(s) = self.unit_mut(slot).and_then(|u| u.sched.as_deref_mut()) {
            s.last = r.last;
            s.last_start = r.last_start.or(s.last.as_ref().map(|l| l.start));
            s.paused = r.paused;
        }
    }

    /// Arms the schedules not armed yet (at paddock's start, after `update` added apps); a run
    /// missed while paddock was down starts now where `catch_up` says so.
    pub fn arm_schedules(&mut self, now: Time) {
        self.now = now;
        let slots: Vec<Slot> = self
            .units()
            .filter(|(_, u)| u.sched.as_deref().is_some_and(|s| !s.armed))
            .map(|(i, _)| i)
            .collect();
        for slot in slots {
            self.arm_schedule(slot, true);
        }
        self.drain();
    }

    /// (Re)computes the next due time from the wall clock and arms the timer for it.
    fn arm_schedule(&mut self, slot: Slot, first: bool) {
        let (wall, shutting_down) = (self.wall(), self.shutting_down);
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        let down = u.m.state().is_down() && !u.spawning;
        let Some(s) = u.sched.as_deref_mut() else {
            return;
        };
        s.armed = true;
        if s.paused || shutting_down {
            s.next = None;
            self.cancel(slot, TimerKind::Schedule);
            return;
        }
        let mut catch_up = None;
        if first
            && s.spec.catch_up
            && let Some(last) = s.last_start
            && let Some(missed) = s.spec.next_after(last)
            && missed <= wall
        {
            catch_up = Some(missed);
        }
        s.next = s.spec.next_after(wall);
        let next = s.next;
        // (A run under way, adopted from an earlier paddock, is the run.)
        if let (Some(missed), true) = (catch_up, down) {
            self.effects
                .push_back(Effect::Schedule(slot, SchedNote::CatchUp(missed)));
            self.queue.push_back((slot, Item::Ev(Event::Start)));
        }
        self.arm_for(slot, next, wall);
    }

    fn arm_for(&mut self, slot: Slot, next: Option<Wall>, wall: Wall) {
        match next {
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(wall).max(0) as u64);
                self.arm(slot, TimerKind::Schedule, wait.min(RECHECK));
            }
            None => self.cancel(slot, TimerKind::Schedule),
        }
    }

    /// The schedule timer fired: a run if one is due by the wall clock now.
    pub(super) fn schedule_fired(&mut self, slot: Slot) {
        let (wall, shutting_down) = (self.wall(), self.shutting_down);
        let stopping = self.stop_queue.contains_key(&slot);
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        let down = u.m.state().is_down();
        let leaving = u.remove_when_down || u.predecessor.is_some();
        let Some(s) = u.sched.as_deref_mut() else {
            return;
        };
        let Some(due) = s.next else {
            return;
        };
        if wall < due {
            // Early by the wall clock (it went back, or the wait was cut at RECHECK).
            self.arm_for(slot, Some(due), wall);
            return;
        }
        if s.paused || shutting_down {
            return;
        }
        // One run for every due time up to now: the next is counted from the wall clock.
        s.next = s.spec.next_after(wall);
        let next = s.next;
        let mut start = false;
        let note = if leaving || stopping {
            None
        } else if down {
            start = true;
            None
        } else if s.spec.overlap == Overlap::Queue && !s.queued {
            s.queued = true;
            Some(SchedNote::Queued(due))
        } else {
            s.counts.skipped += 1;
            Some(SchedNote::Skipped(due))
        };
        if start {
            self.queue.push_back((slot, Item::Ev(Event::Start)));
        }
        if let Some(n) = note {
            self.effects.push_back(Effect::Schedule(slot, n));
        }
        self.arm_for(slot, next, wall);
    }

    /// `start`/`restart` resume a paused schedule; `stop` pauses it (and drops a queued run).
    pub(super) fn schedule_verb(&mut self, slot: Slot, verb: Verb) {
        let Some(s) = self.unit_mut(slot).and_then(|u| u.sched.as_deref_mut()) else {
            return;
        };
        let pause = verb == Verb::Stop;
        s.queued &= !pause;
        if s.paused == pause {
            return;
        }
        s.paused = pause;
        self.effects
            .push_back(Effect::Schedule(slot, SchedNote::Record));
        self.arm_schedule(slot, false);
    }

    /// A new schedule for an app whose new definition waits for its run to end (`update`).
    pub fn reschedule_now(&mut self, slot: Slot, spec: Option<Box<ScheduleSpec>>) {
        self.reschedule(slot, spec);
        self.drain();
    }

    /// A new definition's schedule: the next due time is computed again when it changed.
    pub(super) fn reschedule(&mut self, slot: Slot, spec: Option<Box<ScheduleSpec>>) {
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        match (u.sched.as_deref_mut(), spec) {
            (Some(s), Some(new)) if s.spec == *new => return,
            (Some(s), Some(new)) => s.spec = *new,
            (None, Some(new)) => u.sched = Some(Box::new(Sched::new(*new))),
            (Some(_), None) => {
                u.sched = None;
                self.cancel(slot, TimerKind::Schedule);
                return;
            }
            (None, None) => return,
        }
        self.arm_schedule(slot, false);
    }

    /// Opens and closes runs as a scheduled app comes up and goes down (by its schedule, a
    /// manual start, an adoption); a queued run starts when the one before it has ended.
    pub(super) fn schedule_transition(&mut self, slot: Slot, before: State, after: State) {
        let (now, wall, shutting_down) = (self.now, self.wall(), self.shutting_down);
        let Some(u) = self.unit_mut(slot) else {
            return;
        };
        let uptime = u.m.uptime(now).unwrap_or_default();
        let last_exit = u.m.last_exit().cloned();
        let leaving = u.remove_when_down;
        let Some(s) = u.sched.as_deref_mut() else {
            return;
        };
        let mut again = false;
        if before.is_down() && !after.is_down() && s.run.is_none() {
            // An adopted process started before this paddock did: its run too.
            let start = wall - uptime.as_millis() as i64;
            s.run = Some(Run {
                start,
                started: now.saturating_sub(uptime),
            });
            s.last_start = Some(start);
        } else if !before.is_down() && after.is_down() {
            let Some(run) = s.run.take() else {
                return;
            };
            let outcome = match (&last_exit, after) {
                (_, State::Stopped) => Outcome::Stopped,
                (Some(e), _) if e.success() => Outcome::Success,
                _ => Outcome::Failure,
            };
            match outcome {
                Outcome::Success => s.counts.success += 1,
                Outcome::Failure => s.counts.failure += 1,
                Outcome::Stopped => s.counts.stopped += 1,
            }
            s.last = Some(LastRun {
                start: run.start,
                duration_ms: now.saturating_sub(run.started).as_millis() as u64,
                outcome,
                code: match last_exit {
                    Some(Exit::Code(c)) => Some(c),
                    _ => None,
                },
                description: last_exit.map(|e| e.describe()).unwrap_or_default(),
            });
            again = std::mem::take(&mut s.queued) && !s.paused && !shutting_down && !leaving;
        } else {
            return;
        }
        self.effects
            .push_back(Effect::Schedule(slot, SchedNote::Record));
        if again {
            self.queue.push_back((slot, Item::Ev(Event::Start)));
        }
    }
}
