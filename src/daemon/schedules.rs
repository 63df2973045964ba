//! The I/O side of scheduled apps (the decisions are `crate::fleet::schedule`'s): the wall
//! clock told to the fleet with each input, the records in `STATE_DIR/schedule` read at start
//! and written when a run starts or ends or the schedule is paused, the log lines for skipped,
//! queued and caught-up runs, and the schedule as `status` shows it.

use super::*;
use crate::fleet::{Sched, SchedNote};
use crate::schedule::{self, Wall, record};

impl Supervisor {
    /// Tells the fleet the wall clock (before each input: a schedule is judged by it).
    pub(super) fn sync_wall(&mut self) {
        let now = self.now();
        self.fleet.set_wall(now, schedule::wall_now());
    }

    fn schedule_dir(&self) -> PathBuf {
        record::dir(&self.opts.state_dir)
    }

    /// The records of scheduled apps whose schedule is not armed yet (at start, after `update`
    /// added apps), given to the fleet before it arms them.
    pub(super) fn restore_schedules(&mut self) {
        let dir = self.schedule_dir();
        let fresh: Vec<(usize, Arc<str>)> = self
            .fleet
            .units()
            .filter(|(_, u)| u.sched.as_deref().is_some_and(|s| !s.armed()))
            .filter_map(|(i, _)| self.app(i).map(|a| (i, a.name.clone())))
            .collect();
        for (idx, name) in fresh {
            if let Some(r) = record::load(&dir, &name) {
                self.fleet.restore_schedule(idx, r);
            }
        }
    }

    /// Arms the schedules of apps `update` added.
    pub(super) fn arm_schedules(&mut self) {
        self.restore_schedules();
        self.sync_wall();
        let now = self.now();
        self.fleet.arm_schedules(now);
    }

    /// What a schedule did: a log line, or its record written.
    pub(super) fn schedule_note(&mut self, idx: usize, note: SchedNote) {
        let Some(app) = self.app(idx) else {
            return;
        };
        let name = app.name.clone();
        let Some(s) = self.fleet.unit(idx).and_then(|u| u.sched.as_deref()) else {
            return;
        };
        let at = |t: Wall| s.spec.timezone.format(t);
        match note {
            SchedNote::Skipped(due) => eprintln!(
                "paddock: {name}: run due at {} skipped: the previous run is still under way (overlap = \"skip\"; {} skipped so far)",
                at(due),
                s.counts.skipped
            ),
            SchedNote::Queued(due) => eprintln!(
                "paddock: {name}: run due at {} waits for the run under way (overlap = \"queue\")",
                at(due)
            ),
            SchedNote::CatchUp(missed) => eprintln!(
                "paddock: {name}: a run was due at {} while paddock was down: running it now (catch_up = true)",
                at(missed)
            ),
            SchedNote::Record => {
                let r = s.record(&name);
                let dir = self.schedule_dir();
                if let Err(e) = record::write(&dir, &r) {
                    eprintln!(
                        "paddock: {name}: cannot write its schedule record in {} ({}): a restarted paddock will not know its last run",
                        dir.display(),
                        crate::util::io_reason(&e)
                    );
                }
            }
        }
    }

    /// The app's schedule record goes with the app.
    pub(super) fn forget_schedule(&self, name: &str) {
        record::remove(&self.schedule_dir(), name);
    }

    /// The schedule as `status` shows it, and the INFO text for a scheduled app at rest or
    /// running ("next 12:15:00, last exit 0 3s ago").
    pub(super) fn schedule_status(&self, idx: usize) -> Option<(ScheduleInfo, String)> {
        let s: &Sched = self.fleet.unit(idx)?.sched.as_deref()?;
        let wall = schedule::wall_now();
        let zone = &s.spec.timezone;
        let secs = |t: Wall| t as f64 / 1000.0;
        let last_run = s.last.as_ref().map(|l| {
            let ended = l.start.saturating_add(l.duration_ms as i64);
            LastRunInfo {
                start: zone.format(l.start),
                start_unix: secs(l.start),
                duration_secs: l.duration_ms as f64 / 1000.0,
                ended_secs_ago: wall.saturating_sub(ended).max(0) as f64 / 1000.0,
                outcome: l.outcome.as_str().into(),
                exit_code: l.code,
                description: l.description.clone(),
            }
        });
        let info = ScheduleInfo {
            rule: s.spec.text.clone(),
            timezone: zone.name.clone(),
            overlap: match s.spec.overlap {
                schedule::Overlap::Skip => "skip".into(),
                schedule::Overlap::Queue => "queue".into(),
            },
            catch_up: s.spec.catch_up,
            paused: s.paused,
            queued: s.queued,
            next_run: s.next.map(|t| zone.format(t)),
            next_run_unix: s.next.map(secs),
            next_run_in_secs: s
                .next
                .map(|t| t.saturating_sub(wall).max(0) as f64 / 1000.0),
            running_since: s.run.map(|r| zone.format(r.start)),
            last_run,
            runs: RunCounts {
                success: s.counts.success,
                failure: s.counts.failure,
                stopped: s.counts.stopped,
                skipped: s.counts.skipped,
            },
        };
        // The clock time of a due time: today's as HH:MM:SS, another day's with its date.
        let clock = |t: Wall| {
            let full = zone.format(t);
            let today = zone.format(wall);
            match (full.get(..10), today.get(..10), full.get(11..19)) {
                (Some(d), Some(td), Some(hms)) if d == td => hms.to_string(),
                (Some(d), _, Some(hms)) => format!("{d} {hms}"),
                _ => full,
            }
        };
        let mut parts = vec![];
        if s.paused {
            parts.push("schedule paused by stop (paddock start resumes it)".to_string());
        } else if let Some(n) = s.next {
            parts.push(format!("next {}", clock(n)));
        }
        if let Some(r) = &s.run {
            parts.push(format!("running since {}", clock(r.start)));
        }
        if s.queued {
            parts.push("one run queued".into());
        }
        if let Some(l) = &info.last_run {
            let how = match l.exit_code {
                Some(c) => format!("exit {c}"),
                None => l.description.clone(),
            };
            let ago = crate::util::human_duration(Duration::from_secs_f64(l.ended_secs_ago));
            parts.push(format!("last {how} {ago} ago"));
        }
        if s.counts.skipped > 0 {
            parts.push(format!("{} skipped", s.counts.skipped));
        }
        Some((info, parts.join(", ")))
    }
}
