//! `start`, `stop` and `restart` of named apps, and their waiters: a request with `wait`
//! is answered once every app it named is up (READY after a new spawn), down, or has failed in
//! a way that will not mend by itself. Each waiter is answered exactly once.

use super::{Event, Fleet, Slot, State, StopScope, Time};
pub use crate::control::api::Verb;
use crate::control::api::{ActionResponse, ActionResult};
use std::collections::BTreeSet;

/// The driver's handle for answering a request (a oneshot sender; a number in tests).
pub trait Replier {
    /// The requester is gone: the waiter is dropped unanswered.
    fn closed(&self) -> bool {
        false
    }
}

/// An answer to a request.
#[derive(Debug)]
pub enum Answer {
    /// HTTP status and the per-app results.
    Actions(u16, ActionResponse),
    /// HTTP status and an error message.
    Error(u16, String),
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Goal {
    Up,
    Down,
}

pub(super) struct WaitItem {
    pub(super) slot: Slot,
    name: String,
    goal: Goal,
    min_spawns: u64,
    /// Restarted in its turn by this rolling restart (rolls.rs).
    pub(super) roll: Option<u64>,
    pub(super) result: Option<ActionResult>,
}

pub(super) struct Waiter<R> {
    pub(super) items: Vec<WaitItem>,
    reply: R,
}

pub(super) fn result(app: &str, ok: bool, st: &str, message: impl Into<String>) -> ActionResult {
    ActionResult {
        app: app.into(),
        ok,
        state: st.into(),
        message: message.into(),
    }
}

impl<R: super::Replier> Fleet<R> {
    /// App slots for a list of names; `all` means every app, a group's name (`web` of
    /// `instances`) all its instances. An empty list is an error (a stray empty argument must
    /// not mean "everything"), and so is any unknown name, also beside `all`: nothing is done
    /// then.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Slot>, Answer> {
        let (mut slots, groups) = self.resolve_groups(names)?;
        for g in groups {
            slots.extend(self.members(&g));
        }
        let mut seen = BTreeSet::new();
        slots.retain(|s| seen.insert(*s));
        Ok(slots)
    }

    /// Like `resolve`, with the groups named apart: the slots of apps named alone (every app
    /// for `all`), and the groups' names.
    fn resolve_groups(&self, names: &[String]) -> Result<(Vec<Slot>, Vec<String>), Answer> {
        if names.is_empty() {
            return Err(Answer::Error(400, "name at least one app, or `all`".into()));
        }
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| *n != "all" && !self.by_name.contains_key(*n) && self.members(n).is_empty())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known = self.by_name.keys().map(String::as_str);
            return Err(Answer::Error(
                404,
                crate::config::suggest::no_such_apps(&unknown, known),
            ));
        }
        let mut groups: Vec<String> = vec![];
        let mut slots = vec![];
        if names.iter().any(|n| n == "all") {
            // `all` is every app at once, instances included (name a group to roll it).
            return Ok((self.slots(), vec![]));
        }
        for n in names {
            match self.by_name.get(n) {
                Some(&i) => slots.push(i),
                None if !groups.contains(n) => groups.push(n.clone()),
                None => {}
            }
        }
        // An instance named beside its group is restarted with the group.
        slots.retain(|&i| {
            self.unit(i).is_none_or(|u| {
                u.spec
                    .group
                    .as_deref()
                    .is_none_or(|g| !groups.iter().any(|x| x == g))
            })
        });
        Ok((slots, groups))
    }

    /// `start`, `stop` or `restart` of the named apps; with `wait`, the answer comes once each
    /// is up or down (or failed), else at once.
    pub fn act(&mut self, names: &[String], verb: Verb, wait: bool, reply: R, now: Time) {
        self.now = now;
        if self.shutting_down && verb != Verb::Stop {
            let a = Answer::Error(409, "paddock is shutting down".into());
            self.effects.push_back(super::Effect::Reply(reply, a));
            return;
        }
        let all = names.iter().any(|n| n == "all");
        let resolved = if verb == Verb::Restart {
            // A group restarts one instance at a time (rolls.rs).
            self.resolve_groups(names).and_then(|(slots, groups)| {
                self.refuse_second_roll(&groups)?;
                Ok((slots, groups))
            })
        } else {
            self.resolve(names).map(|s| (s, vec![]))
        };
        let (slots, groups) = match resolved {
            Ok(s) => s,
            Err(a) => {
                self.effects.push_back(super::Effect::Reply(reply, a));
                return;
            }
        };
        let mut items = vec![];
        for g in groups {
            let (id, members) = self.begin_roll(&g);
            for slot in members {
                if let Some(u) = self.unit(slot) {
                    items.push(WaitItem {
                        slot,
                        name: u.spec.name.to_string(),
                        goal: Goal::Up,
                        min_spawns: u.m.spawns(),
                        roll: Some(id),
                        result: None,
                    });
                }
            }
        }
        for slot in slots {
            // A scheduled app: `stop` pauses its schedule, `start` and `restart` resume it.
            self.schedule_verb(slot, verb);
            let Some(u) = self.unit(slot) else {
                continue;
            };
            let (st, spawns) = (u.m.state(), u.m.spawns());
            let mut item = WaitItem {
                slot,
                name: u.spec.name.to_string(),
                goal: Goal::Up,
                min_spawns: spawns,
                roll: None,
                result: None,
            };
            match verb {
                Verb::Start if st == State::Ready => {
                    item.result = Some(result(&item.name, true, st.as_str(), "already running"));
                }
                Verb::Start => self.queue.push_back((slot, super::Item::Ev(Event::Start))),
                Verb::Restart => self
                    .queue
                    .push_back((slot, super::Item::Ev(Event::Restart))),
                Verb::Stop => {
                    item.goal = Goal::Down;
                    if st.is_down() {
                        item.result = Some(result(&item.name, true, st.as_str(), "not running"));
                    } else {
                        let scope = if all {
                            StopScope::AllDependants
                        } else {
                            StopScope::Requirers
                        };
                        if self.stop_queue.get(&slot) != Some(&StopScope::AllDependants) {
                            self.stop_queue.insert(slot, scope);
                        }
                    }
                }
            }
            items.push(item);
        }
        if verb == Verb::Stop {
            self.refresh_deps(); // dependants that `require` a stopped app stop now
        }
        if wait {
            self.waiters.push(Waiter { items, reply });
            self.drain();
        } else {
            self.drain();
            let results = items
                .into_iter()
                .map(|it| {
                    let st = self
                        .unit(it.slot)
                        .map_or("REMOVED", |u| u.m.state().as_str());
                    it.result
                        .unwrap_or_else(|| result(&it.name, true, st, "requested"))
                })
                .collect();
            let a = Answer::Actions(200, ActionResponse { ok: true, results });
            self.effects.push_back(super::Effect::Reply(reply, a));
        }
    }

    /// Answers the waiters whose apps all got where they were going.
    pub(super) fn check_waiters(&mut self) {
        let mut i = 0;
        while i < self.waiters.len() {
            let mut items = std::mem::take(&mut self.waiters[i].items);
            for it in items.iter_mut().filter(|it| it.result.is_none()) {
                it.result = self.wait_result(it);
            }
            let w = &mut self.waiters[i];
            w.items = items;
            if w.items.iter().all(|it| it.result.is_some()) || w.reply.closed() {
                let w = self.waiters.swap_remove(i);
                let results: Vec<ActionResult> =
                    w.items.into_iter().filter_map(|it| it.result).collect();
                let ok = results.iter().all(|r| r.ok);
                let a = Answer::Actions(if ok { 200 } else { 409 }, ActionResponse { ok, results });
                self.effects.push_back(super::Effect::Reply(w.reply, a));
            } else {
                i += 1;
            }
        }
    }

    /// How many requests wait for their apps.
    pub fn waiting_requests(&self) -> usize {
        self.waiters.len()
    }

    fn wait_result(&self, it: &WaitItem) -> Option<ActionResult> {
        let Some(u) = self.unit(it.slot) else {
            return Some(result(&it.name, false, "REMOVED", "removed"));
        };
        if it.roll.is_some_and(|id| self.roll_pending(id, it.slot)) {
            return None; // its turn in the rolling restart has not come
        }
        let st = u.m.state();
        let res = |ok: bool, message: String| Some(result(&it.name, ok, st.as_str(), message));
        let why = || u.m.last_exit().map(|e| e.describe()).unwrap_or_default();
        match it.goal {
            Goal::Up if st == State::Ready && u.m.spawns() > it.min_spawns => res(
                true,
                match u.pid {
                    Some(pid) => format!("started (pid {pid})"),
                    None => "started (wasm instance)".into(),
                },
            ),
            Goal::Up if st == State::Backoff => res(false, format!("{}; retrying", why())),
            Goal::Up if st == State::Fatal => res(false, format!("{}; gave up (FATAL)", why())),
            Goal::Up if st == State::Exited => res(false, format!("exited at once: {}", why())),
            Goal::Up if st == State::Stopped => res(false, "stopped before it was up".into()),
            Goal::Up if u.m.waiting() => {
                // Waiting is fine while the dependencies are on their way; not if one is down.
                let dead: Vec<&str> = u
                    .spec
                    .after
                    .iter()
                    .chain(&u.spec.requires)
                    .filter(|d| {
                        let slots = self.dep_slots(d);
                        slots.is_empty()
                            || slots
                                .iter()
                                .any(|&i| self.unit(i).is_none_or(|a| a.m.state().is_down()))
                    })
                    .map(String::as_str)
                    .collect();
                if dead.is_empty() {
                    return None;
                }
                let one = dead.len() == 1;
                res(
                    false,
                    format!(
                        "waiting for {}, which {} not running: start {} first",
                        dead.join(", "),
                        if one { "is" } else { "are" },
                        if one { "it" } else { "them" }
                    ),
                )
            }
            Goal::Down if st.is_down() => res(true, "stopped".into()),
            _ => None,
        }
    }
}
