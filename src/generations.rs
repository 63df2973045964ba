//! Generations of an app's definition and when to roll back, sans-IO.
//!
//! Every applied change of an app's resolved definition (its file, its bundle id, its module's
//! hash) is a numbered **generation**. A generation is on *trial* until it has been READY for
//! `[restart] stable_after` without a break: then it is **stable**. A generation on trial that
//! goes FATAL (it never became READY, or failed `max_failures` times in a row, each run shorter
//! than `stable_after`), or whose bundle switch gave up, is **bad**: the app goes back to the
//! last stable generation, and a later `update` does not apply the generation a rollback left
//! again while the file is unchanged.
//!
//! This file holds the history (`History`: what is kept per app, serialised as a line of
//! `STATE_DIR/generations/histories`) and the per-app watch (`Watch`: the decision when a
//! generation is stable or bad). No file, no clock: the daemon (`daemon/generations.rs`) reads
//! and writes the files, passes the time in and carries the decisions out.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Generations kept per app (the current one and the last stable one are always kept).
pub const KEEP: usize = 10;
/// The format of a history (a line of `STATE_DIR/generations/histories`).
pub const FORMAT: u32 = 1;

/// Time since the driver's origin (its clock; tests use a fake one).
pub type Time = Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Applied, not yet READY for `stable_after`.
    Trial,
    /// Was READY for `stable_after` without a break.
    Stable,
    /// Went FATAL (or its bundle switch gave up) while on trial; rolled back.
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Trial => "trial",
            Verdict::Stable => "stable",
            Verdict::Bad => "bad",
        }
    }
}

/// What is kept of a generation to rebuild its definition later, also after a restart of
/// paddock: the app file's text as applied (re-parsed at its original path, so relative paths
/// resolve as they did), the bundle it resolved to (by id: the store is content-addressed) and
/// the SHA-256 of its wasm module (a copy is kept under `STATE_DIR/generations/modules/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub file: PathBuf,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    /// When it was applied (RFC 3339).
    pub applied: String,
    /// How it came: `loaded` (paddock's start), `update`.
    pub source: String,
    /// SHA-256 of the resolved definition (see `daemon/generations.rs`): equal digests, same
    /// app.
    pub digest: String,
    /// What changed from the generation before it.
    pub summary: String,
    pub verdict: Verdict,
    /// Why it is bad, or how it was left (a rollback).
    #[serde(default)]
    pub note: String,
    pub stored: Stored,
}

/// An app's generations, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub format: u32,
    pub app: String,
    /// The generation in force (0: none yet).
    pub current: u64,
    /// The generation the last rollback left: not applied again by `update` while the file on
    /// disk is unchanged.
    #[serde(default)]
    pub left: Option<u64>,
    pub generations: Vec<Generation>,
}

impl History {
    pub fn new(app: &str) -> History {
        History {
            format: FORMAT,
            app: app.into(),
            current: 0,
            left: None,
            generations: vec![],
        }
    }

    /// A history file's text, checked (see `validate`).
    pub fn parse(text: &str, app: &str) -> Result<History, String> {
        let h: History =
            serde_json::from_str(text).map_err(|e| format!("not a history of generations: {e}"))?;
        h.validate(app)?;
        Ok(h)
    }

    /// Checks a history read from a file: what a hand-edited or damaged file may break.
    pub fn validate(&self, app: &str) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not the one this paddock writes ({FORMAT})",
                self.format
            ));
        }
        if self.app != app {
            return Err(format!(
                "it is the history of \"{}\", not of \"{app}\"",
                self.app
            ));
        }
        let mut last = 0;
        for g in &self.generations {
            if g.number <= last {
                return Err(format!(
                    "generation {} follows generation {last}: numbers must increase",
                    g.number
                ));
            }
            last = g.number;
            if g.digest.len() != 64 || !g.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "generation {}: digest \"{}\" is not a SHA-256 in hex",
                    g.number, g.digest
                ));
            }
            if let Some(s) = &g.stored.module_sha256
                && (s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!(
                    "generation {}: module_sha256 \"{s}\" is not a SHA-256 in hex",
                    g.number
                ));
            }
        }
        if self.current != 0 && self.get(self.current).is_none() {
            return Err(format!(
                "the current generation {} is not in it",
                self.current
            ));
        }
        Ok(())
    }

    pub fn get(&self, n: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.number == n)
    }

    fn get_mut(&mut self, n: u64) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.number == n)
    }

    pub fn current(&self) -> Option<&Generation> {
        self.get(self.current)
    }

    /// Whether `update` must not apply a definition with this digest: it is the generation the
    /// last rollback left (a bad generation no rollback left, because there was no stable one
    /// to go back to, is applied again: that is how it was before generations). Returns it.
    pub fn refuses(&self, digest: &str) -> Option<&Generation> {
        if self.current().is_some_and(|g| g.digest == digest) {
            return None;
        }
        let left = self.get(self.left?)?;
        (left.digest == digest).then_some(left)
    }

    /// A definition was applied: a new generation unless it is the current one's. Returns its
    /// number and whether it is new.
    pub fn record(
        &mut self,
        digest: String,
        applied: String,
        source: &str,
        summary: String,
        stored: Stored,
    ) -> (u64, bool) {
        if let Some(g) = self.current()
            && g.digest == digest
        {
            return (g.number, false);
        }
        let number = self.generations.last().map_or(0, |g| g.number) + 1;
        // Room for one more only: most apps keep one or two generations, a `Vec` would make
        // room for four (a kilobyte an app), and a push here is rare.
        self.generations.reserve_exact(1);
        self.generations.push(Generation {
            number,
            applied,
            source: source.into(),
            digest,
            summary,
            verdict: Verdict::Trial,
            note: String::new(),
            stored,
        });
        self.current = number;
        self.left = None;
        self.trim();
        (number, true)
    }

    /// Keeps the last `KEEP` generations, and always the current and the last stable one.
    fn trim(&mut self) {
        while self.generations.len() > KEEP {
            let keep_stable = self.last_stable(None);
            let Some(pos) = self
                .generations
                .iter()
                .position(|g| g.number != self.current && Some(g.number) != keep_stable)
            else {
                return;
            };
            self.generations.remove(pos);
        }
    }

    /// The newest stable generation other than `except`.
    pub fn last_stable(&self, except: Option<u64>) -> Option<u64> {
        self.generations
            .iter()
            .rev()
            .find(|g| g.verdict == Verdict::Stable && Some(g.number) != except)
            .map(|g| g.number)
    }

    pub fn mark_stable(&mut self, n: u64) -> bool {
        match self.get_mut(n) {
            Some(g) if g.verdict != Verdict::Stable => {
                g.verdict = Verdict::Stable;
                g.note.clear();
                true
            }
            _ => false,
        }
    }

    pub fn mark_bad(&mut self, n: u64, note: &str) {
        if let Some(g) = self.get_mut(n) {
            g.verdict = Verdict::Bad;
            g.note = note.into();
        }
    }

    /// The app goes back to generation `to` (a rollback, by paddock or by hand).
    pub fn roll_back(&mut self, to: u64) {
        if self.current != to {
            self.left = Some(self.current).filter(|&n| n != 0);
        }
        self.current = to;
        if let Some(g) = self.get_mut(to)
            && g.verdict == Verdict::Bad
        {
            // Chosen by hand: on trial again.
            g.verdict = Verdict::Trial;
            g.note.clear();
        }
    }

    /// Where a rollback by hand goes: `wanted`, or the newest stable generation before the
    /// current one.
    pub fn target(&self, wanted: Option<u64>) -> Result<u64, String> {
        let known = || {
            self.generations
                .iter()
                .map(|g| g.number.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match wanted {
            Some(n) if self.get(n).is_none() => Err(format!(
                "{} has no generation {n}; it has {} (see `paddock history {}`)",
                self.app,
                known(),
                self.app
            )),
            Some(n) => Ok(n),
            None => self
                .generations
                .iter()
                .rev()
                .find(|g| g.verdict == Verdict::Stable && g.number < self.current)
                .map(|g| g.number)
                .ok_or_else(|| {
                    format!(
                        "{} has no stable generation before generation {}; name one: `paddock rollback {} GEN` (it has {})",
                        self.app,
                        self.current,
                        self.app,
                        known()
                    )
                }),
        }
    }
}

/// The `[restart] rollback` setting of the generation on trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollback {
    /// Unset: roll back to the last stable generation, if there is one.
    Auto,
    /// `true`: also to the previous generation when none is stable yet.
    On,
    /// `false`: never roll back by itself.
    Off,
}

impl Rollback {
    pub fn of(setting: Option<bool>) -> Rollback {
        match setting {
            None => Rollback::Auto,
            Some(true) => Rollback::On,
            Some(false) => Rollback::Off,
        }
    }
}

/// What the watch decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The generation is stable now.
    Stable(u64),
    /// Go back from generation `from` (now bad) to `to`.
    RollBack { from: u64, to: u64, why: String },
    /// The generation is bad, but there is nothing to go back to (or rollback is off).
    Bad { generation: u64, why: String },
}

/// One app's generation in force and whether it has proven itself. The app's state changes
/// come in with the time; `poll_timeout` says when the generation becomes stable if nothing
/// else happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Watch {
    pub generation: u64,
    /// The fleet slot whose state counts (a bundle switch's new instance until it has the
    /// name).
    pub slot: usize,
    /// On trial (not stable yet, not judged bad).
    pub trial: bool,
    /// Started by a bundle switch that has not completed: its failure comes as
    /// `switch_failed`, not as a FATAL state.
    pub switching: bool,
    pub ready_since: Option<Time>,
    pub stable_after: Duration,
    pub rollback: Rollback,
}

impl Watch {
    pub fn new(
        generation: u64,
        slot: usize,
        trial: bool,
        stable_after: Duration,
        rollback: Rollback,
    ) -> Self {
        Watch {
            generation,
            slot,
            trial,
            switching: false,
            ready_since: None,
            stable_after,
            rollback,
        }
    }

    /// The app's state changed (`ready`: it is READY now; `fatal`: it went FATAL; `why`: its
    /// last exit). `history` gives where a rollback would go.
    pub fn state(
        &mut self,
        slot: usize,
        ready: bool,
        fatal: bool,
        why: &str,
        now: Time,
        history: &History,
    ) -> Option<Decision> {
        if slot != self.slot || !self.trial {
            return None;
        }
        if ready {
            self.ready_since.get_or_insert(now);
            return self.handle_timeout(now);
        }
        // Left READY: stable if it was READY long enough (a late timer), else start over.
        if let Some(d) = self.handle_timeout(now) {
            return Some(d);
        }
        self.ready_since = None;
        if fatal && !self.switching {
            return Some(self.judge(
                format!("generation {} went FATAL ({why})", self.generation),
                history,
            ));
        }
        None
    }

    /// A bundle switch's new instance took the app's name.
    pub fn switched(&mut self, slot: usize, now: Time) -> Option<Decision> {
        if !self.switching {
            return None;
        }
        self.switching = false;
        self.slot = slot;
        self.ready_since.get_or_insert(now);
        self.handle_timeout(now)
    }

    /// A bundle switch's new instance gave up (the old instance, of the generation before,
    /// still runs).
    pub fn switch_failed(&mut self, why: &str, history: &History) -> Option<Decision> {
        if !self.switching || !self.trial {
            return None;
        }
        self.switching = false;
        Some(self.judge(
            format!(
                "the new instance of generation {} gave up ({why})",
                self.generation
            ),
            history,
        ))
    }

    fn judge(&mut self, why: String, history: &History) -> Decision {
        self.trial = false;
        let to = match self.rollback {
            Rollback::Off => None,
            Rollback::Auto => history.last_stable(Some(self.generation)),
            Rollback::On => history.last_stable(Some(self.generation)).or_else(|| {
                history
                    .generations
                    .iter()
                    .rev()
                    .find(|g| g.number < self.generation && g.verdict != Verdict::Bad)
                    .map(|g| g.number)
            }),
        };
        match to {
            Some(to) => Decision::RollBack {
                from: self.generation,
                to,
                why,
            },
            None => Decision::Bad {
                generation: self.generation,
                why,
            },
        }
    }

    /// When the generation becomes stable if it stays READY.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.ready_since
            .filter(|_| self.trial)
            .map(|t| t + self.stable_after)
    }

    pub fn handle_timeout(&mut self, now: Time) -> Option<Decision> {
        let at = self.poll_timeout()?;
        if now < at {
            return None;
        }
        self.trial = false;
        self.ready_since = None;
        Some(Decision::Stable(self.generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn stored() -> Stored {
        Stored {
            file: "/etc/paddock/apps/web.toml".into(),
            text: "command = [\"/bin/true\"]\n".into(),
            bundle_id: None,
            bundle_dir: None,
            module_sha256: None,
        }
    }

    fn digest(n: u8) -> String {
        format!("{:064x}", n)
    }

    fn history(gens: u8) -> History {
        let mut h = History::new("web");
        for i in 1..=gens {
            h.record(digest(i), "t".into(), "update", String::new(), stored());
        }
        h
    }

    #[test]
    fn record_numbers_generations_and_skips_the_current_digest() {
        let mut h = History::new("web");
        assert_eq!(
            h.record(
                digest(1),
                "t".into(),
                "loaded",
                "first load".into(),
                stored()
            ),
            (1, true)
        );
        assert_eq!(
            h.record(digest(1), "t".into(), "update", String::new(), stored()),
            (1, false)
        );
        assert_eq!(
            h.record(digest(2), "t".into(), "update", String::new(), stored()),
            (2, true)
        );
        // Back to an earlier definition is a new generation.
        assert_eq!(
            h.record(digest(1), "t".into(), "update", String::new(), stored()),
            (3, true)
        );
        assert_eq!(h.current, 3);
        h.validate("web").unwrap();
    }

    #[test]
    fn trim_keeps_the_current_and_the_last_stable() {
        let mut h = history(1);
        h.mark_stable(1);
        for i in 2..=30 {
            h.record(digest(i), "t".into(), "update", String::new(), stored());
        }
        assert_eq!(h.generations.len(), KEEP);
        assert_eq!(h.generations[0].number, 1, "the last stable one stays");
        assert_eq!(h.current, 30);
        assert_eq!(h.generations.last().unwrap().number, 30);
        h.validate("web").unwrap();
    }

    #[test]
    fn ready_for_stable_after_makes_it_stable() {
        let h = history(1);
        let mut w = Watch::new(1, 0, true, ms(500), Rollback::Auto);
        assert_eq!(w.state(0, true, false, "", ms(100), &h), None);
        assert_eq!(w.poll_timeout(), Some(ms(600)));
        assert_eq!(w.handle_timeout(ms(599)), None);
        assert_eq!(w.handle_timeout(ms(600)), Some(Decision::Stable(1)));
        assert_eq!(w.poll_timeout(), None);
        // Judged once: a later crash is an ordinary restart.
        assert_eq!(w.state(0, false, true, "x", ms(700), &h), None);
    }

    #[test]
    fn a_break_in_readiness_starts_the_count_again() {
        let h = history(1);
        let mut w = Watch::new(1, 0, true, ms(500), Rollback::Auto);
        w.state(0, true, false, "", ms(0), &h);
        assert_eq!(w.state(0, false, false, "exit 1", ms(400), &h), None);
        assert_eq!(w.poll_timeout(), None);
        w.state(0, true, false, "", ms(450), &h);
        assert_eq!(w.handle_timeout(ms(900)), None);
        assert_eq!(w.handle_timeout(ms(950)), Some(Decision::Stable(1)));
    }

    #[test]
    fn leaving_ready_after_stable_after_counts_as_stable() {
        let h = history(1);
        let mut w = Watch::new(1, 0, true, ms(500), Rollback::Auto);
        w.state(0, true, false, "", ms(0), &h);
        // The timer was late: the exit is seen first.
        assert_eq!(
            w.state(0, false, false, "", ms(800), &h),
            Some(Decision::Stable(1))
        );
    }

    #[test]
    fn fatal_on_trial_rolls_back_to_the_last_stable() {
        let mut h = history(3);
        h.mark_stable(1);
        h.mark_stable(2);
        let mut w = Watch::new(3, 0, true, ms(500), Rollback::Auto);
        let d = w.state(0, false, true, "exited with code 1", ms(10), &h);
        assert_eq!(
            d,
            Some(Decision::RollBack {
                from: 3,
                to: 2,
                why: "generation 3 went FATAL (exited with code 1)".into()
            })
        );
        h.mark_bad(3, "x");
        h.roll_back(2);
        assert_eq!(h.current, 2);
        assert_eq!(h.left, Some(3));
        assert_eq!(h.refuses(&digest(3)).map(|g| g.number), Some(3));
        assert!(h.refuses(&digest(2)).is_none());
        // A changed file is a new generation, applied.
        assert!(h.refuses(&digest(9)).is_none());
        // A bad generation that no rollback left is tried again (as before generations).
        let mut h = history(2);
        h.mark_bad(2, "x");
        assert!(h.refuses(&digest(2)).is_none());
    }

    #[test]
    fn without_a_stable_generation_auto_does_not_roll_back_but_on_does() {
        let h = history(2);
        let mut w = Watch::new(2, 0, true, ms(500), Rollback::Auto);
        assert!(matches!(
            w.state(0, false, true, "x", ms(1), &h),
            Some(Decision::Bad { generation: 2, .. })
        ));
        let mut w = Watch::new(2, 0, true, ms(500), Rollback::On);
        assert!(matches!(
            w.state(0, false, true, "x", ms(1), &h),
            Some(Decision::RollBack { from: 2, to: 1, .. })
        ));
        let mut h2 = h.clone();
        h2.mark_stable(1);
        let mut w = Watch::new(2, 0, true, ms(500), Rollback::Off);
        assert!(matches!(
            w.state(0, false, true, "x", ms(1), &h2),
            Some(Decision::Bad { generation: 2, .. })
        ));
    }

    #[test]
    fn a_switch_is_judged_by_its_new_instance() {
        let mut h = history(2);
        h.mark_stable(1);
        let mut w = Watch::new(2, 7, true, ms(500), Rollback::Auto);
        w.switching = true;
        // The old instance's changes do not count; nor does the new one's FATAL (the switch's
        // failure comes separately).
        assert_eq!(w.state(3, false, true, "x", ms(1), &h), None);
        assert_eq!(w.state(7, false, true, "x", ms(1), &h), None);
        assert!(matches!(
            w.switch_failed("exited with code 1", &h),
            Some(Decision::RollBack { from: 2, to: 1, .. })
        ));
        // A switch that completes: READY from then on.
        let mut w = Watch::new(2, 7, true, ms(500), Rollback::Auto);
        w.switching = true;
        assert_eq!(w.switched(7, ms(100)), None);
        assert_eq!(w.handle_timeout(ms(600)), Some(Decision::Stable(2)));
    }

    #[test]
    fn targets_by_hand() {
        let mut h = history(3);
        assert!(
            h.target(None)
                .unwrap_err()
                .contains("no stable generation before generation 3")
        );
        assert!(
            h.target(Some(9))
                .unwrap_err()
                .contains("web has no generation 9; it has 1, 2, 3")
        );
        h.mark_stable(1);
        h.mark_stable(3);
        assert_eq!(h.target(None), Ok(1));
        assert_eq!(h.target(Some(2)), Ok(2));
        h.mark_bad(2, "went FATAL");
        h.roll_back(2);
        assert_eq!(
            h.get(2).unwrap().verdict,
            Verdict::Trial,
            "chosen by hand: on trial again"
        );
        assert_eq!(h.left, Some(3));
    }

    #[test]
    fn validate_names_what_is_wrong() {
        let mut h = history(2);
        h.generations[1].number = 1;
        assert!(
            h.validate("web")
                .unwrap_err()
                .contains("numbers must increase")
        );
        let mut h = history(2);
        h.current = 5;
        assert!(
            h.validate("web")
                .unwrap_err()
                .contains("current generation 5")
        );
        let h = history(1);
        assert!(h.validate("api").unwrap_err().contains("not of \"api\""));
        let mut h = history(1);
        h.generations[0].digest = "zz".into();
        assert!(h.validate("web").unwrap_err().contains("not a SHA-256"));
    }
}
