//! Keeping the status board (`control::board`) that the control thread answers from: the apps a
//! turn touched are written at its end and before any answer, every app every
//! `FULL_EVERY`, and nothing at all while nobody reads the board.

use super::*;
use crate::control::board::{FULL_EVERY, Live};
use crate::fleet::Effect;

/// What the supervisor knows of the board it keeps.
#[derive(Default)]
pub(super) struct Kept {
    /// It writes the board (someone read it lately).
    live: bool,
    /// When every entry was last written.
    full_at: Option<Instant>,
    /// Apps came or went, or changed slots: the next write is a full one.
    restructured: bool,
    /// Slots whose status may have changed since the last write.
    touched: Vec<usize>,
    /// This turn's answers, sent at its end (see `send_reply`).
    outbox: Vec<(oneshot::Sender<Reply>, Reply)>,
}

impl Supervisor {
    /// Something happened to this app: its entry is written again.
    pub(super) fn board_touch(&mut self, idx: usize) {
        if self.board_kept.live {
            self.board_kept.touched.push(idx);
        }
    }

    /// Apps came or went.
    pub(super) fn board_restructured(&mut self) {
        if self.board_kept.live {
            self.board_kept.restructured = true;
            self.board.incomplete();
        }
    }

    /// The apps an effect is about.
    pub(super) fn board_saw<R>(&mut self, e: &Effect<R>) {
        match *e {
            Effect::Spawn(i)
            | Effect::Signal(i, _)
            | Effect::KillGroup(i)
            | Effect::RunCheck(i)
            | Effect::Down(i)
            | Effect::EssentialFailed(i)
            | Effect::Schedule(i, _) => self.board_touch(i),
            Effect::Removed { .. }
            | Effect::Switched { .. }
            | Effect::SwitchFailed { .. }
            | Effect::SwitchCancelled { .. } => self.board_restructured(),
            Effect::Changed { slot, .. } => {
                self.board_touch(slot);
                // Apps waiting for their dependencies say which and in what state.
                if self.board_kept.live {
                    let waiting = self.fleet.units().filter(|(_, u)| u.m.waiting());
                    self.board_kept.touched.extend(waiting.map(|(i, _)| i));
                }
            }
            Effect::Rolled { .. } | Effect::Reply(..) => {}
        }
    }

    /// When the loop must wake to write the board again or drop it (both at the end of a
    /// turn). While someone reads it, every entry is rewritten each `FULL_EVERY` even when no
    /// app does anything: an idle loop would otherwise let the entries age past `FRESH`, and
    /// every `status` would go to the loop (1000 statuses made there: 40–200 ms) instead of
    /// the board. Once nobody has read it for `WANTED_FOR`, the board is dropped and an idle
    /// fleet wakes paddock no more.
    pub(super) fn board_poll_timeout(&self) -> Option<Duration> {
        if !self.board_kept.live {
            return None;
        }
        let unwanted = self.board.unwanted_at()? + Duration::from_millis(1);
        let at = match self.board_kept.full_at {
            Some(t) => unwanted.min(t + FULL_EVERY),
            None => unwanted,
        };
        Some(at.saturating_duration_since(self.origin))
    }

    /// An answer to a control request, sent at the end of the turn (`end_turn`), once the
    /// effects the request caused are carried out and the board shows them: a client that reads
    /// `status` after its answer never sees the state from before its request (as when one
    /// thread did both).
    pub(super) fn send_reply(&mut self, tx: oneshot::Sender<Reply>, r: Reply) {
        self.board_kept.outbox.push((tx, r));
    }

    /// The end of a turn of the loop (after `pump`): the board written, then the answers sent.
    pub(super) fn end_turn(&mut self) {
        self.keep_board();
        for (tx, r) in self.board_kept.outbox.drain(..) {
            let _ = tx.send(r);
        }
    }

    /// The board written as far as it needs to be, or dropped when nobody reads it.
    fn keep_board(&mut self) {
        let now = Instant::now();
        if !self.board.wanted(now) {
            if self.board_kept.live {
                self.board.clear();
                self.board_kept.live = false;
                self.board_kept.full_at = None;
                self.board_kept.touched = Vec::new();
                self.tidy_memory();
            }
            return;
        }
        let k = &self.board_kept;
        let full = !k.live
            || k.restructured
            || k.full_at
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_EVERY);
        if full {
            let apps = self
                .fleet
                .slots()
                .into_iter()
                .filter_map(|i| self.entry_of(i))
                .collect();
            self.board.write_all(apps, now);
            let k = &mut self.board_kept;
            (k.live, k.full_at, k.restructured) = (true, Some(now), false);
            k.touched.clear();
        } else {
            self.write_touched();
        }
    }

    /// An app's entry: its status, and what the board reads again when it answers.
    pub(super) fn entry_of(&self, idx: usize) -> Option<(AppStatus, Option<Live>)> {
        let status = self.status_of(idx)?;
        let app = self.app(idx)?;
        let (usage, http, memory) = (
            app.cgroup.as_ref().map(|c| c.usage_gauge()),
            http_apps::live_figures(app),
            wasm_apps::live_memory(app),
        );
        let live: Option<Live> = match (usage, http, memory) {
            (None, None, None) => None,
            // As `status_of` has them: the cgroup's usage (read at most once a second, the
            // same cache as the loop's), a running wasm instance's own memory first.
            (usage, http, memory) => Some(Arc::new(move |s: &mut AppStatus| {
                if let Some(u) = usage.as_ref().map(|g| g()) {
                    (s.memory_bytes, s.cpu_usec, s.pids) = (u.memory_bytes, u.cpu_usec, u.pids);
                }
                if let Some(f) = &http {
                    s.http = Some(f());
                }
                if let Some(m) = &memory {
                    s.memory_bytes = Some(m());
                }
            })),
        };
        Some((status, live))
    }

    /// The touched apps' entries (each app's current slot: a switch leaves two under a name).
    fn write_touched(&mut self) {
        if self.board_kept.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.board_kept.touched);
        touched.sort_unstable();
        touched.dedup();
        let apps = touched
            .iter()
            .filter_map(|&i| self.app(i))
            .filter_map(|a| self.fleet.slot_of(&a.name))
            .filter_map(|i| self.entry_of(i))
            .collect();
        self.board.write(apps, Instant::now());
        touched.clear();
        self.board_kept.touched = touched; // its capacity is kept
    }
}
