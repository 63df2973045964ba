//! The I/O side of generations and rollback (the decisions are `crate::generations`):
//! `STATE_DIR/generations/histories` (the journal of histories, see `store.rs`),
//! `STATE_DIR/generations/modules/SHA256.wasm` (a copy of each kept generation's wasm module),
//! rebuilding a generation's definition, rolling an app back (applied as `update` applies a
//! changed app: a restart, or the gapless switch for a bundle), `paddock history` and
//! `paddock rollback`.
//!
//! A generation's **digest** is the SHA-256 of its resolved definition (the `AppSpec` as JSON)
//! with what only says *where* things are taken out (the bundle's reference and directory, the
//! module's path and file stamp) and the module's SHA-256 put in: the same bundle id and module
//! content give the same digest wherever they are read from.

use super::*;
use crate::generations::{Decision, Generation, Rollback, Stored, Verdict, Watch};

mod store;
pub(super) use store::Gens;
use store::*;

impl Supervisor {
    /// The identity of a definition; its module's digest is that of the bytes the wasm host
    /// compiled, when it did (no second read of a file that may have changed since).
    fn ident_of(&self, spec: &AppSpec) -> Ident {
        ident(
            spec,
            spec.wasm.as_ref().and_then(|w| self.wasm.module_sha(w)),
        )
    }

    /// What is kept of a definition.
    fn stored_of(&self, spec: &AppSpec, id: &Ident) -> Stored {
        let text = crate::util::read_regular_text(&spec.file, MAX_APP_FILE).unwrap_or_else(|e| {
            eprintln!(
                "paddock: {}: {}: {e}; its generation keeps no app file",
                spec.name,
                spec.file.display()
            );
            String::new()
        });
        if let (Some(w), Some(sha)) = (&spec.wasm, &id.module_sha)
            && let Err(e) = self.gens.keep_module(&w.module, sha)
        {
            eprintln!("paddock: {}: {e}", spec.name);
        }
        Stored {
            file: spec.file.clone(),
            text,
            bundle_id: spec.bundle.as_ref().map(|b| b.id.clone()),
            bundle_dir: spec.bundle.as_ref().map(|b| b.dir.clone()),
            module_sha256: id.module_sha.clone(),
        }
    }

    /// At paddock's start: the app's definition as a generation. When the file on disk is a
    /// generation that was rolled back (bad, or left by a rollback), the generation in force
    /// before the restart is rebuilt and run instead.
    pub(super) fn gens_at_load(&mut self, spec: AppSpec) -> AppSpec {
        let id = self.ident_of(&spec);
        let name = spec.name.clone();
        let a = self.gens.load(&name);
        if let Some(bad) = a.history.refuses(&id.digest).map(|g| g.number) {
            let cur = a.history.current;
            match self.generation_spec(&name, cur) {
                Ok(s) => {
                    let note = format!(
                        "the app file is generation {bad}, which was rolled back; running generation {cur} (change the file to apply a new one)"
                    );
                    eprintln!("paddock: {name}: {note}");
                    if let Some(a) = self.gens.apps.get_mut(&name) {
                        a.note = Some(note);
                    }
                    return s;
                }
                Err(e) => eprintln!(
                    "paddock: {name}: the app file is generation {bad}, which was rolled back, but generation {cur} cannot be rebuilt ({e}); running the app file"
                ),
            }
        }
        self.gens_record(&spec, &id, None, "loaded");
        spec
    }

    /// Records an applied definition; a new generation unless it is the current one's.
    fn gens_record(&mut self, spec: &AppSpec, id: &Ident, old: Option<&AppSpec>, source: &str) {
        let stored = self.stored_of(spec, id);
        let a = self.gens.load(&spec.name);
        // The module the app ran, as kept (its file may hold another one by now).
        let old_sha = a
            .history
            .current()
            .and_then(|g| g.stored.module_sha256.clone());
        let summary = summary(old.map(|o| (o, &old_sha)), spec, &id.module_sha);
        let full = a.history.generations.len() >= crate::generations::KEEP;
        let summary = if old.is_none() && !a.history.generations.is_empty() {
            format!("{source}: {summary}")
        } else {
            summary
        };
        let (_, new) = a.history.record(
            id.digest.clone(),
            crate::util::rfc3339_string(SystemTime::now()),
            source,
            summary,
            stored,
        );
        if new {
            a.note = None;
            self.gens.save(&spec.name);
            if full {
                self.gens.gc_modules();
            }
        }
    }

    /// Watches the app's generation in force (at `slot`).
    pub(super) fn gens_watch(&mut self, name: &str, slot: usize, switching: bool) {
        let now = self.now();
        let spec = self
            .app(slot)
            .map(|a| a.pending.as_deref().unwrap_or(&a.spec).clone());
        let Some(a) = self.gens.apps.get_mut(name) else {
            return;
        };
        // The generation before: judged stable if its time is up.
        let before = a.watch.as_mut().and_then(|w| w.handle_timeout(now));
        let cur = a.history.current;
        let trial = a
            .history
            .current()
            .is_some_and(|g| g.verdict == Verdict::Trial);
        let (stable_after, rollback) = spec.map_or((Duration::from_secs(10), None), |s| {
            (s.restart.stable_after, s.rollback)
        });
        let mut w = Watch::new(cur, slot, trial, stable_after, Rollback::of(rollback));
        w.switching = switching;
        a.watch = Some(w);
        if let Some(Decision::Stable(n)) = before {
            a.history.mark_stable(n);
            self.gens.save(name);
        }
    }

    /// `update` is about to apply `spec` to a changed app: the reason not to, when it is a
    /// generation that was rolled back and the file has not changed since.
    pub(super) fn gens_refuses(&mut self, spec: &AppSpec) -> Option<String> {
        let id = self.ident_of(spec);
        let a = self.gens.load(&spec.name);
        let g = a.history.refuses(&id.digest)?;
        Some(format!(
            "not applied: the app file is generation {}, which was rolled back{}; still running generation {} (change the file to try again, or `paddock rollback {} {}`)",
            g.number,
            if g.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.note)
            },
            a.history.current,
            spec.name,
            g.number
        ))
    }

    /// `update` applied `spec` (old: what the app had, None for an added app).
    pub(super) fn gens_applied(&mut self, idx: usize, spec: &AppSpec, old: Option<&AppSpec>) {
        let id = self.ident_of(spec);
        self.gens_record(spec, &id, old, "update");
        let succ = self.fleet.unit(idx).and_then(|u| u.successor);
        self.gens_watch(&spec.name, succ.unwrap_or(idx), succ.is_some());
    }

    /// The app left the fleet.
    pub(super) fn gens_removed(&mut self, name: &str) {
        self.gens.remove(name);
    }

    /// An app's state changed.
    pub(super) fn gens_changed(&mut self, slot: usize, to: State) {
        let now = self.now();
        let (Some(app), Some(u)) = (self.app(slot), self.fleet.unit(slot)) else {
            return;
        };
        let name = app.name.to_string();
        let why = u.m.last_exit().map(|e| e.describe()).unwrap_or_default();
        let why = if to == State::Fatal && u.m.failures() > 0 {
            format!(
                "gave up after {} failed starts; last: {why}",
                u.m.failures()
            )
        } else {
            why
        };
        let Some(a) = self.gens.apps.get_mut(&name) else {
            return;
        };
        let Some(w) = a.watch.as_mut() else {
            return;
        };
        let d = w.state(
            slot,
            to == State::Ready,
            to == State::Fatal,
            &why,
            now,
            &a.history,
        );
        if let Some(d) = d {
            self.gens_decided(&name, d);
        }
    }

    /// A bundle switch completed: the new instance has the name.
    pub(super) fn gens_switched(&mut self, new: usize) {
        let now = self.now();
        let Some(name) = self.app(new).map(|a| a.name.to_string()) else {
            return;
        };
        let d = self
            .gens
            .apps
            .get_mut(&name)
            .and_then(|a| a.watch.as_mut())
            .and_then(|w| w.switched(new, now));
        if let Some(d) = d {
            self.gens_decided(&name, d);
        }
    }

    /// A bundle switch's new instance gave up.
    pub(super) fn gens_switch_failed(&mut self, old: usize, why: &str) {
        let Some(name) = self.app(old).map(|a| a.name.to_string()) else {
            return;
        };
        let d = self.gens.apps.get_mut(&name).and_then(|a| {
            let h = &a.history;
            a.watch.as_mut().and_then(|w| w.switch_failed(why, h))
        });
        if let Some(d) = d {
            self.gens_decided(&name, d);
        }
    }

    /// The earliest time a generation becomes stable.
    pub(super) fn gens_poll_timeout(&self) -> Option<Duration> {
        self.gens.poll_timeout()
    }

    pub(super) fn gens_timeout(&mut self, now: Duration) {
        let due: Vec<(String, Decision)> = self
            .gens
            .apps
            .iter_mut()
            .filter_map(|(n, a)| {
                a.watch
                    .as_mut()
                    .and_then(|w| w.handle_timeout(now))
                    .map(|d| (n.clone(), d))
            })
            .collect();
        // The apps started together are judged together: a thousand histories written at
        // once leave a heap and code that the idle fleet does not need resident.
        let burst = due.len() >= 64;
        for (name, d) in due {
            self.gens_decided(&name, d);
        }
        if burst {
            self.tidy_memory();
        }
    }

    /// Carries out a decision of an app's watch.
    fn gens_decided(&mut self, name: &str, d: Decision) {
        match d {
            Decision::Stable(n) => {
                if let Some(a) = self.gens.apps.get_mut(name)
                    && a.history.mark_stable(n)
                {
                    self.gens.save(name);
                }
            }
            Decision::Bad { generation, why } => {
                let note = format!(
                    "generation {generation} is bad: {why}; no stable generation to roll back to"
                );
                eprintln!("paddock: {name}: {note}");
                if let Some(a) = self.gens.apps.get_mut(name) {
                    a.history.mark_bad(generation, &why);
                    a.note = Some(note.clone());
                }
                self.gens.save(name);
                self.publish_note(name, &note);
            }
            Decision::RollBack { from, to, why } => {
                if let Some(a) = self.gens.apps.get_mut(name) {
                    a.history.mark_bad(from, &why);
                }
                let r = if self.fleet.shutting_down() {
                    // (Also after an essential app's FATAL: the shutdown has begun.)
                    Err("paddock is shutting down".to_string())
                } else {
                    self.roll_back(name, to, true)
                };
                let note = match r {
                    Ok(did) => format!("rolled back from generation {from} to {to}: {why}; {did}"),
                    Err(e) => {
                        format!("cannot roll back from generation {from} to {to} ({e}): {why}")
                    }
                };
                eprintln!("paddock: {name}: {note}");
                if let Some(a) = self.gens.apps.get_mut(name) {
                    a.note = Some(note.clone());
                }
                self.gens.save(name);
                self.publish_note(name, &note);
            }
        }
    }

    /// A generation's definition, rebuilt from what was kept: the app file's text parsed at
    /// its path, with `bundle` pinned to the generation's bundle and `module` to the kept copy.
    /// Refused when the bundle is gone or no longer what it was.
    fn generation_spec(&mut self, name: &str, n: u64) -> Result<AppSpec, String> {
        let a = self.gens.load(name);
        let g: Generation = a
            .history
            .get(n)
            .cloned()
            .ok_or_else(|| format!("{name} has no generation {n}"))?;
        let st = &g.stored;
        if st.text.is_empty() {
            return Err(format!("generation {n} kept no app file"));
        }
        let mut table: toml::Table = toml::from_str(&st.text)
            .map_err(|e| format!("generation {n}'s app file does not parse any more: {e}"))?;
        if let Some(id) = &st.bundle_id {
            let by_dir = st.bundle_dir.as_ref().filter(|d| {
                crate::bundle::store::Store::new(&crate::bundle::store_dir())
                    .find(&d.display().to_string())
                    .is_ok_and(|b| &b.id == id)
            });
            let reference = match by_dir {
                Some(d) => d.display().to_string(),
                None => id.clone(),
            };
            table.insert("bundle".into(), toml::Value::String(reference));
        }
        if let Some(sha) = &st.module_sha256 {
            let copy = self.gens.module_copy(sha);
            if !copy.is_file() {
                return Err(format!(
                    "the module of generation {n} (sha256 {}) is gone: {} does not exist",
                    crate::bundle::short(sha),
                    copy.display()
                ));
            }
            table.insert(
                "module".into(),
                toml::Value::String(copy.display().to_string()),
            );
        }
        let text = toml::to_string(&table).map_err(|e| format!("generation {n}: {e}"))?;
        let spec = config::parse_app(name, &st.file, &text).map_err(|errs| {
            let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            if st.bundle_id.is_some() {
                format!(
                    "generation {n}'s bundle {} is gone from the store or changed (removed by `paddock bundle gc`?): {}",
                    crate::bundle::short(st.bundle_id.as_deref().unwrap_or("")),
                    errs.join("; ")
                )
            } else {
                format!("generation {n}'s app file does not load any more: {}", errs.join("; "))
            }
        })?;
        if let (Some(id), Some(b)) = (&st.bundle_id, &spec.bundle)
            && &b.id != id
        {
            return Err(format!(
                "generation {n}'s bundle {} is gone from the store (found {} instead)",
                crate::bundle::short(id),
                crate::bundle::short(&b.id)
            ));
        }
        if let Some(b) = &spec.bundle {
            self.bundle_cache.check(&b.dir, &b.id).map_err(|e| {
                format!(
                    "generation {n}'s bundle {} cannot be used: {e}",
                    crate::bundle::short(&b.id)
                )
            })?;
        }
        let one = BTreeMap::from([(name.to_string(), spec.clone())]);
        let errs = self.wasm.check(&one);
        if !errs.is_empty() {
            let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return Err(format!("generation {n}'s module: {}", errs.join("; ")));
        }
        Ok(spec)
    }

    /// Takes app `name` back to generation `to`, as `update` applies a changed app. Returns
    /// what was done; nothing is changed on an error.
    fn roll_back(&mut self, name: &str, to: u64, automatic: bool) -> Result<String, String> {
        let idx = self
            .fleet
            .slot_of(name)
            .ok_or_else(|| format!("no app named {name}"))?;
        let spec = self.generation_spec(name, to)?;
        if let Some(a) = self.gens.apps.get_mut(name) {
            a.history.roll_back(to);
        }
        self.gens.save(name);
        // A bundle switch that gave up: the old instance still runs that generation.
        let target = self
            .gens
            .get(name)
            .and_then(|a| a.history.get(to))
            .map(|g| g.digest.clone());
        let running = self
            .app(idx)
            .filter(|a| a.pending.is_none())
            .map(|a| self.ident_of(&a.spec).digest);
        let up = self.fleet.unit(idx).is_some_and(|u| u.m.state().is_up());
        if up && running.is_some() && running == target {
            self.gens_watch(name, idx, false);
            return Ok(format!(
                "nothing to do: the running instance is generation {to}"
            ));
        }
        let mut to_start = vec![];
        let did = self.apply_changed(idx, spec, &mut to_start);
        self.sync_publish();
        let down = self.fleet.unit(idx).is_some_and(|u| u.m.state().is_down());
        if automatic && down && !to_start.contains(&idx) {
            // It was trying to run the bad generation: run the good one.
            to_start.push(idx);
        }
        let started = to_start.contains(&idx);
        for i in to_start {
            self.feed(i, Event::Start);
        }
        let succ = self.fleet.unit(idx).and_then(|u| u.successor);
        self.gens_watch(name, succ.unwrap_or(idx), succ.is_some());
        Ok(if started && did != "started" {
            "started".into()
        } else {
            did
        })
    }

    /// A note on an app (a rollback), as an event on `/v1/events`.
    fn publish_note(&self, name: &str, note: &str) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let Some(u) = self.fleet.slot_of(name).and_then(|i| self.fleet.unit(i)) else {
            return;
        };
        let st = u.m.state().as_str();
        let ev = StateEvent {
            time: crate::util::rfc3339_string(SystemTime::now()),
            mono_ns: crate::util::mono_ns(),
            app: name.into(),
            from: st.into(),
            to: st.into(),
            reason: note.into(),
        };
        if let Ok(line) = serde_json::to_string(&ev) {
            let _ = self.events.send(line);
        }
    }

    /// `GET /v1/apps/NAME/history`.
    pub(super) fn history_reply(&mut self, name: &str) -> Reply {
        if self.fleet.slot_of(name).is_none() {
            return self.no_such_app(name);
        }
        let a = self.gens.load(name);
        let h = &a.history;
        let items: Vec<HistoryItem> = h
            .generations
            .iter()
            .map(|g| HistoryItem {
                generation: g.number,
                applied: g.applied.clone(),
                source: g.source.clone(),
                summary: g.summary.clone(),
                digest: g.digest.clone(),
                status: g.verdict.as_str().into(),
                current: g.number == h.current,
                note: g.note.clone(),
            })
            .collect();
        Reply::json(
            200,
            &HistoryResponse {
                app: name.into(),
                current: h.current,
                note: a.note.clone(),
                generations: items,
            },
        )
    }

    /// `POST /v1/apps/NAME/rollback[?generation=N]`.
    pub(super) fn rollback_reply(&mut self, name: &str, generation: Option<u64>) -> Reply {
        if self.fleet.shutting_down() {
            return Reply::error(409, "paddock is shutting down");
        }
        if self.fleet.slot_of(name).is_none() {
            return self.no_such_app(name);
        }
        // The app's definition and generation change: every entry of the board is written
        // again before the answer goes (as after `update`).
        self.board_restructured();
        let a = self.gens.load(name);
        let from = a.history.current;
        let to = match a.history.target(generation) {
            Ok(to) => to,
            Err(e) => return Reply::error(404, e),
        };
        if to == from {
            return Reply::json(
                200,
                &RollbackResponse {
                    ok: true,
                    app: name.into(),
                    from,
                    to,
                    did: format!("nothing: generation {to} is the one in force"),
                },
            );
        }
        match self.roll_back(name, to, false) {
            Ok(did) => {
                let how = if to < from { "back" } else { "forward" };
                let note = format!("rolled {how} by hand from generation {from} to {to}; {did}");
                eprintln!("paddock: {name}: {note}");
                if let Some(a) = self.gens.apps.get_mut(name) {
                    a.note = Some(note.clone());
                }
                self.publish_note(name, &note);
                Reply::json(
                    200,
                    &RollbackResponse {
                        ok: true,
                        app: name.into(),
                        from,
                        to,
                        did,
                    },
                )
            }
            Err(e) => Reply::error(
                409,
                format!("cannot roll {name} back to generation {to}: {e}; nothing was changed"),
            ),
        }
    }

    fn no_such_app(&self, name: &str) -> Reply {
        Reply::error(
            404,
            config::suggest::no_such_apps(&[name], self.fleet.named().keys().map(String::as_str)),
        )
    }

    /// For `status`: the generation in force and the last rollback's note.
    pub(super) fn gens_status(&self, name: &str) -> (Option<u64>, Option<String>) {
        match self.gens.get(name) {
            Some(a) => (Some(a.history.current).filter(|&n| n != 0), a.note.clone()),
            None => (None, None),
        }
    }
}
