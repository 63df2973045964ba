//! Groups of instances (an app file with `instances`: `web@0`, `web@1`, … named `web`) and
//! their rolling restarts (`restart web`):
//! the instances are restarted in instance order, at most `max_unavailable` of those that were
//! READY being down at once because of the roll; the next goes once one is READY again. An
//! instance that does not come back (BACKOFF, FATAL, EXITED, or stopped) stops the roll: the
//! instances not yet restarted are left running, and the roll's requests are told which one
//! failed and why.
//!
//! An instance that is not READY when its turn comes (crashed, in backoff, stopped) is
//! restarted at once: it serves nothing, so restarting it takes nothing away.

use super::waiters::result;
use super::{Effect, Event, Fleet, Item, Slot, State};
use std::collections::VecDeque;

pub(super) struct Roll {
    pub(super) id: u64,
    pub(super) group: String,
    pub(super) max_unavailable: u32,
    /// Instances whose turn has not come, in order.
    pub(super) pending: VecDeque<Slot>,
    /// Restarted by the roll and not READY again yet: the slot, its spawn count when it was
    /// restarted, and whether it was READY then (taken down by the roll).
    pub(super) in_flight: Vec<(Slot, u64, bool)>,
}

impl<R: super::Replier> Fleet<R> {
    /// The slots a dependency names: the app of that name, or every instance of that group.
    pub fn dep_slots(&self, name: &str) -> Vec<Slot> {
        match self.by_name.get(name) {
            Some(&i) => vec![i],
            None => self.members(name),
        }
    }

    /// The named instances of a group (`web@0`, `web@1`, …), by instance number.
    pub fn members(&self, group: &str) -> Vec<Slot> {
        let prefix = format!("{group}@");
        let mut v: Vec<(u32, Slot)> = self
            .by_name
            .range(prefix.clone()..)
            .take_while(|(n, _)| n.starts_with(&prefix))
            .filter(|&(_, &i)| {
                self.unit(i)
                    .is_some_and(|u| u.spec.group.as_deref() == Some(group))
            })
            .map(|(n, &i)| (n[prefix.len()..].parse().unwrap_or(u32::MAX), i))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// A 409 when one of these groups is being rolled already.
    pub(super) fn refuse_second_roll(&self, groups: &[String]) -> Result<(), super::Answer> {
        for g in groups {
            if let Some(r) = self.rolls.iter().find(|r| r.group == *g) {
                let left = r.pending.len() + r.in_flight.len();
                return Err(super::Answer::Error(
                    409,
                    format!(
                        "a rolling restart of {g} is under way ({left} instance{} to go): wait for it, or restart single instances ({g}@N)",
                        if left == 1 { "" } else { "s" }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Starts a rolling restart of a group; its id and its instances. The restarts are sent
    /// by `progress_rolls` as `drain` runs.
    pub(super) fn begin_roll(&mut self, group: &str) -> (u64, Vec<Slot>) {
        let members = self.members(group);
        let max_unavailable = members
            .iter()
            .filter_map(|&i| self.unit(i))
            .map(|u| u.spec.max_unavailable)
            .min()
            .unwrap_or(1)
            .max(1);
        self.next_roll += 1;
        let id = self.next_roll;
        self.rolls.push(Roll {
            id,
            group: group.to_string(),
            max_unavailable,
            pending: members.iter().copied().collect(),
            in_flight: vec![],
        });
        (id, members)
    }

    /// Whether `slot` waits for its turn in roll `id`.
    pub(super) fn roll_pending(&self, id: u64, slot: Slot) -> bool {
        self.rolls
            .iter()
            .any(|r| r.id == id && r.pending.contains(&slot))
    }

    /// Moves every roll on after the queue ran dry: instances READY again leave it, a failed
    /// one stops it, the next ones are restarted. True when it queued events.
    pub(super) fn progress_rolls(&mut self) -> bool {
        let mut queued = false;
        let mut i = 0;
        while i < self.rolls.len() {
            let mut roll = std::mem::replace(
                &mut self.rolls[i],
                Roll {
                    id: 0,
                    group: String::new(),
                    max_unavailable: 1,
                    pending: VecDeque::new(),
                    in_flight: vec![],
                },
            );
            let end = self.step_roll(&mut roll, &mut queued);
            if let Some(why) = end {
                self.end_roll(&roll, why);
                self.rolls.swap_remove(i);
            } else {
                self.rolls[i] = roll;
                i += 1;
            }
        }
        queued
    }

    /// One roll's progress; `Some(why)` when it has ended (`why` None: done).
    fn step_roll(&mut self, roll: &mut Roll, queued: &mut bool) -> Option<Option<String>> {
        if self.shutting_down {
            return Some(Some("paddock is shutting down".into()));
        }
        // An app is being spawned (it may depend on the group, or on an app that requires
        // the group, and it saw them READY): the roll waits for the spawn's outcome (the
        // driver's next input), so no app starts beside a dependency already on its way down.
        if self.units().any(|(_, u)| u.spawning) {
            return None;
        }
        let mut failed = None;
        roll.in_flight.retain(|&(slot, spawns, _)| {
            let Some(u) = self.unit(slot) else {
                return false; // removed by `update`
            };
            let st = u.m.state();
            if st == State::Ready && u.m.spawns() > spawns {
                return false; // back
            }
            let stuck = matches!(
                st,
                State::Backoff | State::Fatal | State::Exited | State::Stopped
            ) || (st == State::Starting && u.m.waiting());
            if failed.is_none() && stuck {
                let why = u.m.last_exit().map(|e| e.describe()).unwrap_or_default();
                failed = Some(format!(
                    "{} did not become READY again ({}{}{})",
                    u.spec.name,
                    st.as_str(),
                    if why.is_empty() { "" } else { ": " },
                    why
                ));
            }
            true
        });
        if let Some(why) = failed {
            return Some(Some(why));
        }
        // Not READY and on its way up by itself (or restarted by the roll): unavailable now.
        let mut unavailable = self
            .members(&roll.group)
            .into_iter()
            .filter(|&s| {
                self.unit(s).is_some_and(|u| {
                    let st = u.m.state();
                    st != State::Ready
                        && (st.is_up() || roll.in_flight.iter().any(|f| f.0 == s))
                        && !roll.pending.contains(&s)
                })
            })
            .count() as u32;
        // Instances that are not READY go at once, wherever they are in the order.
        let mut k = 0;
        while k < roll.pending.len() {
            let slot = roll.pending[k];
            match self.unit(slot).map(|u| (u.m.state(), u.m.spawns())) {
                None => {
                    roll.pending.remove(k);
                }
                Some((st, spawns)) if st != State::Ready => {
                    roll.pending.remove(k);
                    self.queue.push_back((slot, Item::Ev(Event::Restart)));
                    roll.in_flight.push((slot, spawns, false));
                    unavailable += 1;
                    *queued = true;
                }
                Some(_) => k += 1,
            }
        }
        while unavailable < roll.max_unavailable
            && let Some(slot) = roll.pending.pop_front()
        {
            let Some(spawns) = self.unit(slot).map(|u| u.m.spawns()) else {
                continue;
            };
            self.queue.push_back((slot, Item::Ev(Event::Restart)));
            roll.in_flight.push((slot, spawns, true));
            unavailable += 1;
            *queued = true;
        }
        (roll.pending.is_empty() && roll.in_flight.is_empty()).then_some(None)
    }

    /// Answers the roll's instances that never got their turn, and says how it ended.
    fn end_roll(&mut self, roll: &Roll, why: Option<String>) {
        if let Some(why) = &why {
            for w in &mut self.waiters {
                for it in w
                    .items
                    .iter_mut()
                    .filter(|it| it.roll == Some(roll.id) && it.result.is_none())
                    .filter(|it| roll.pending.contains(&it.slot))
                {
                    let (name, st) = match self.units.get(it.slot).and_then(Option::as_ref) {
                        Some(u) => (u.spec.name.to_string(), u.m.state().as_str()),
                        None => (String::new(), "REMOVED"),
                    };
                    it.result = Some(result(
                        &name,
                        false,
                        st,
                        format!("not restarted: the rolling restart stopped: {why}"),
                    ));
                }
            }
        }
        self.effects.push_back(Effect::Rolled {
            group: roll.group.clone(),
            why,
        });
    }
}
