//! Scheduled apps in the fleet, with a fake monotonic clock and a fake wall clock that can jump:
//! due times, overlap skip and queue, a manual start, stop during a run (pauses), an update of
//! the schedule, removal, wall-clock jumps and suspends (one run, never a burst), catch-up.

use super::*;
use crate::config::{RestartPolicy, RestartSpec};
use crate::schedule::record::{Outcome, Record};
use crate::schedule::{Overlap, Rule, ScheduleSpec, Wall, Zone};
use std::collections::BTreeSet;

/// A wall-clock origin on a minute boundary.
const WALL0: Wall = 1_800_000_000_000;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn every(period: u64, overlap: Overlap, catch_up: bool) -> ScheduleSpec {
    ScheduleSpec {
        text: format!("every {period}s"),
        rule: Rule::Every(secs(period)),
        timezone: Zone::utc(),
        overlap,
        catch_up,
    }
}

fn job(name: &str, sched: ScheduleSpec) -> UnitSpec {
    UnitSpec {
        name: name.into(),
        after: vec![],
        requires: vec![],
        autostart: false,
        essential: false,
        policy: Policy::simple(
            RestartSpec {
                policy: RestartPolicy::OnFailure,
                backoff_initial: Duration::from_millis(500),
                backoff_max: secs(1),
                stable_after: secs(5),
                max_failures: 3,
            },
            libc::SIGTERM,
            secs(2),
        ),
        group: None,
        max_unavailable: 1,
        schedule: Some(Box::new(sched)),
    }
}

struct W {
    f: Fleet<u64>,
    now: Time,
    /// Wall clock minus monotonic clock, in ms (changed by a jump).
    offset: i64,
    live: BTreeSet<Slot>,
    /// Spawn times (monotonic, in whole seconds).
    spawned: Vec<u64>,
    notes: Vec<SchedNote>,
    token: u64,
}

impl W {
    fn new(specs: Vec<UnitSpec>, record: Option<Record>) -> W {
        let mut w = W {
            f: Fleet::new(7),
            now: Time::ZERO,
            offset: WALL0,
            live: BTreeSet::new(),
            spawned: vec![],
            notes: vec![],
            token: 0,
        };
        for s in specs {
            let slot = w.f.add(s);
            if let Some(r) = record.clone() {
                w.f.restore_schedule(slot, r);
            }
        }
        w.tell_wall();
        w.f.autostart(w.now);
        w.pump();
        w
    }

    fn wall(&self) -> Wall {
        self.now.as_millis() as i64 + self.offset
    }

    fn tell_wall(&mut self) {
        let wall = self.wall();
        self.f.set_wall(self.now, wall);
    }

    fn pump(&mut self) {
        while let Some(e) = self.f.poll_effect() {
            match e {
                Effect::Spawn(s) => {
                    assert!(self.live.insert(s), "two runs of slot {s} at once");
                    self.spawned.push(self.now.as_secs());
                    self.f
                        .spawn_done(s, SpawnOutcome::Started(Some(100 + s as i32)), self.now);
                }
                // A job obeys its stop signal at once.
                Effect::Signal(s, _) | Effect::KillGroup(s) if self.live.remove(&s) => {
                    self.f.exited(s, Exit::Signal(libc::SIGTERM), self.now);
                }
                Effect::Schedule(_, n) => self.notes.push(n),
                _ => {}
            }
        }
        for (at, slot, _) in self.f.timers() {
            assert!(self.f.unit(slot).is_some(), "a timer for a removed slot");
            assert!(
                at <= self.now + schedule::RECHECK,
                "a timer armed further than RECHECK ahead"
            );
        }
    }

    /// Lets `d` pass on both clocks, firing the timers on the way (as the daemon's loop would).
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.f.poll_timeout().filter(|&t| t <= end);
            self.now = next.unwrap_or(end);
            self.tell_wall();
            self.f.handle_timeout(self.now);
            self.pump();
            if next.is_none() {
                break;
            }
        }
    }

    /// The job's process ends with `code`.
    fn finish(&mut self, name: &str, code: i32) {
        let s = self.f.slot_of(name).unwrap();
        assert!(self.live.remove(&s), "{name} was not running");
        self.f.exited(s, Exit::Code(code), self.now);
        self.pump();
    }

    fn act(&mut self, name: &str, verb: Verb) {
        self.token += 1;
        self.tell_wall();
        self.f
            .act(&[name.to_string()], verb, false, self.token, self.now);
        self.pump();
    }

    fn sched(&self, name: &str) -> &Sched {
        let s = self.f.slot_of(name).unwrap();
        self.f.unit(s).unwrap().sched.as_ref().unwrap()
    }

    fn state(&self, name: &str) -> State {
        let s = self.f.slot_of(name).unwrap();
        self.f.unit(s).unwrap().m.state()
    }
}

#[test]
fn runs_at_due_times_and_records_the_last_run() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, false))], None);
    assert!(w.spawned.is_empty(), "not started at boot");
    assert_eq!(w.sched("j").next, Some(WALL0 + 10_000));
    w.advance(secs(10));
    assert_eq!(w.spawned, [10]);
    assert_eq!(w.sched("j").run.map(|r| r.start), Some(WALL0 + 10_000));
    w.advance(secs(2));
    w.finish("j", 0);
    assert_eq!(w.state("j"), State::Exited);
    let last = w.sched("j").last.clone().unwrap();
    assert_eq!(
        (last.start, last.duration_ms, last.outcome, last.code),
        (WALL0 + 10_000, 2000, Outcome::Success, Some(0))
    );
    assert!(w.notes.contains(&SchedNote::Record));
    w.advance(secs(8));
    assert_eq!(w.spawned, [10, 20]);
    w.finish("j", 3);
    // A failed run is retried by its restart policy, within the run.
    assert_eq!(w.state("j"), State::Backoff);
    w.advance(secs(1));
    assert_eq!(w.spawned.len(), 3);
    w.finish("j", 0);
    let s = w.sched("j");
    assert_eq!((s.counts.success, s.counts.failure), (2, 0));
    assert_eq!(s.last.as_ref().unwrap().duration_ms, 1000);
}

#[test]
fn overlap_skip_never_runs_two_at_once_and_counts() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, false))], None);
    w.advance(secs(35));
    assert_eq!(w.spawned, [10], "due at 20 and 30 while running");
    assert_eq!(w.sched("j").counts.skipped, 2);
    assert_eq!(
        w.notes
            .iter()
            .filter(|n| matches!(n, SchedNote::Skipped(_)))
            .count(),
        2
    );
    w.finish("j", 0);
    w.advance(secs(5));
    assert_eq!(w.spawned, [10, 40]);
}

#[test]
fn overlap_queue_keeps_one_run_waiting() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Queue, false))], None);
    w.advance(secs(35));
    assert_eq!(w.spawned, [10]);
    let s = w.sched("j");
    assert!(s.queued);
    assert_eq!(
        s.counts.skipped, 1,
        "a second due run while one is queued is skipped"
    );
    w.finish("j", 0);
    assert_eq!(
        w.spawned,
        [10, 35],
        "the queued run starts when the running one ends"
    );
    assert!(!w.sched("j").queued);
    w.finish("j", 0);
    w.advance(secs(5));
    assert_eq!(w.spawned, [10, 35, 40]);
}

#[test]
fn a_manual_start_runs_now_and_the_schedule_continues() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, false))], None);
    w.advance(secs(3));
    w.act("j", Verb::Start);
    assert_eq!(w.spawned, [3]);
    w.finish("j", 0);
    assert_eq!(w.sched("j").next, Some(WALL0 + 10_000));
    w.advance(secs(7));
    assert_eq!(w.spawned, [3, 10]);
}

#[test]
fn stop_during_a_run_stops_it_and_pauses_until_start() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Queue, false))], None);
    w.advance(secs(10));
    w.act("j", Verb::Stop);
    assert_eq!(w.state("j"), State::Stopped);
    let s = w.sched("j");
    assert!(s.paused && s.next.is_none());
    assert_eq!(s.last.as_ref().unwrap().outcome, Outcome::Stopped);
    assert_eq!(s.counts.stopped, 1);
    w.advance(secs(60));
    assert_eq!(w.spawned, [10], "a paused schedule starts nothing");
    w.act("j", Verb::Start);
    assert_eq!(w.spawned, [10, 70]);
    assert!(!w.sched("j").paused);
    w.finish("j", 0);
    w.advance(secs(10));
    assert_eq!(w.spawned, [10, 70, 80]);
}

#[test]
fn an_update_changes_the_schedule_and_a_removal_ends_it() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, false))], None);
    w.advance(secs(4));
    let slot = w.f.slot_of("j").unwrap();
    w.f.reconfigure(slot, job("j", every(60, Overlap::Skip, false)));
    assert_eq!(w.sched("j").next, Some(WALL0 + 60_000));
    w.advance(secs(30));
    assert!(w.spawned.is_empty());
    w.advance(secs(26));
    assert_eq!(w.spawned, [60]);
    // Removed while it runs: stopped, dropped, its timers gone.
    w.f.remove_when_down(slot);
    w.f.request_stop(slot, StopScope::AllDependants, w.now);
    w.pump();
    assert!(w.f.slot_of("j").is_none());
    assert_eq!(w.f.timers().count(), 0);
    w.advance(secs(300));
    assert_eq!(w.spawned, [60]);
}

#[test]
fn a_wall_clock_jump_or_a_suspend_gives_one_run_not_a_burst() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, false))], None);
    // The wall clock jumps an hour ahead (or the host slept an hour: the monotonic clock did
    // not move). 360 due times were missed: one run, within RECHECK.
    w.offset += 3_600_000;
    w.advance(secs(1));
    w.advance(schedule::RECHECK);
    assert_eq!(w.spawned.len(), 1, "{:?}", w.spawned);
    w.finish("j", 0);
    let next = w.sched("j").next.unwrap();
    assert!(next > w.wall() && next <= w.wall() + 10_000);
    // The wall clock goes back an hour: nothing runs until it is due again by the wall clock.
    w.offset -= 3_600_000;
    w.advance(secs(600));
    assert_eq!(w.spawned.len(), 1, "{:?}", w.spawned);
    w.advance(secs(3000 + 60));
    assert_eq!(w.spawned.len(), 2, "{:?}", w.spawned);
}

#[test]
fn a_long_period_is_armed_in_rechecks() {
    let mut w = W::new(vec![job("j", every(3600, Overlap::Skip, false))], None);
    // Timers are never armed more than RECHECK ahead (checked in pump).
    w.advance(secs(3599));
    assert!(w.spawned.is_empty());
    w.advance(secs(1));
    assert_eq!(w.spawned, [3600]);
}

#[test]
fn catch_up_runs_one_missed_run_at_start() {
    let two_hours_ago = Record {
        app: "j".into(),
        last: None,
        last_start: Some(WALL0 - 7_200_000),
        paused: false,
    };
    let w = W::new(
        vec![job("j", every(3600, Overlap::Skip, true))],
        Some(two_hours_ago.clone()),
    );
    assert_eq!(w.spawned, [0], "one run for the two missed");
    assert!(
        w.notes
            .iter()
            .any(|n| matches!(n, SchedNote::CatchUp(t) if *t == WALL0 - 3_600_000))
    );
    // Without catch_up, or when nothing was missed, or never run: nothing at start.
    let w = W::new(
        vec![job("j", every(3600, Overlap::Skip, false))],
        Some(two_hours_ago),
    );
    assert!(w.spawned.is_empty());
    let recent = Record {
        app: "j".into(),
        last: None,
        last_start: Some(WALL0 - 1000),
        paused: false,
    };
    // (Due 6 s after WALL0: 7 s after the last start, on the 7 s grid.)
    let w = W::new(vec![job("j", every(7, Overlap::Skip, true))], Some(recent));
    assert!(w.spawned.is_empty());
    let w = W::new(vec![job("j", every(3600, Overlap::Skip, true))], None);
    assert!(w.spawned.is_empty());
    // A paused schedule stays paused across a restart, and catches nothing up.
    let paused = Record {
        app: "j".into(),
        last: None,
        last_start: Some(WALL0 - 7_200_000),
        paused: true,
    };
    let mut w = W::new(vec![job("j", every(10, Overlap::Skip, true))], Some(paused));
    w.advance(secs(100));
    assert!(w.spawned.is_empty());
    assert!(w.sched("j").paused);
}

#[test]
fn shutdown_stops_a_run_and_starts_no_other() {
    let mut w = W::new(vec![job("j", every(10, Overlap::Queue, false))], None);
    w.advance(secs(10));
    w.f.begin_shutdown(w.now);
    w.pump();
    assert!(w.f.done());
    let s = w.sched("j");
    assert_eq!(s.last.as_ref().unwrap().outcome, Outcome::Stopped);
    assert!(!s.paused, "a shutdown is not a pause");
    w.advance(secs(100));
    assert_eq!(w.spawned, [10]);
}

#[test]
fn an_adopted_run_counts_from_its_real_start() {
    let mut w = W::new(vec![job("j", every(60, Overlap::Skip, false))], None);
    w.advance(secs(30));
    let slot = w.f.slot_of("j").unwrap();
    w.live.insert(slot);
    w.f.feed(
        slot,
        Event::Adopted {
            ready: true,
            age: secs(20),
            restarts: 0,
        },
        w.now,
    );
    w.pump();
    assert_eq!(w.sched("j").run.map(|r| r.start), Some(WALL0 + 10_000));
    w.advance(secs(5));
    w.finish("j", 0);
    assert_eq!(w.sched("j").last.as_ref().unwrap().duration_ms, 25_000);
}
