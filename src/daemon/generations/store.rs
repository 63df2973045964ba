//! The files of generations: the journal `STATE_DIR/generations/histories` and the kept
//! modules, what a generation's identity and summary are.

use super::super::*;
use crate::generations::{History, Watch};
use std::path::Path;

/// A history file larger than this is refused (it holds at most `KEEP` app files).
pub(super) const MAX_HISTORY: u64 = 8 << 20;
/// An app file larger than this is not kept (app files are a few hundred bytes).
pub(super) const MAX_APP_FILE: u64 = 1 << 20;

/// The journal of histories in the generations directory.
const JOURNAL: &str = "histories";
/// A journal larger than this is not read (compaction keeps it within four times the live
/// histories, each at most `MAX_HISTORY`).
const MAX_JOURNAL: u64 = 256 << 20;
/// The journal is compacted once it is this large and four times its size after the last
/// compaction.
const COMPACT_FLOOR: u64 = 1 << 20;

/// One app's history and watch.
pub(in crate::daemon) struct AppGens {
    pub history: History,
    pub watch: Option<Watch>,
    /// The last rollback (by paddock), for `status`.
    pub note: Option<String>,
}

/// Histories are kept in one journal, `STATE_DIR/generations/histories`: an app's whole
/// history as a line of JSON, appended (one `write`) each time it changes, the last valid line
/// of an app being its history; compacted (the last line of each app written to a temporary
/// file renamed over it) once it has grown to four times its size after the last compaction.
/// One file per app cost a new inode per app at the first start of a fleet, most of paddock's
/// own start-up time. Files of earlier builds (`APP.json`) are read once, appended to the
/// journal and removed.
pub(in crate::daemon) struct Gens {
    pub(super) dir: PathBuf,
    pub(super) apps: BTreeMap<String, AppGens>,
    /// The journal was read (at the first `load`).
    read: bool,
    /// Apps that left the fleet (their histories dropped from memory, not from the journal).
    departed: std::collections::BTreeSet<String>,
    journal: crate::journal::Journal,
}

/// What identifies a definition: its digest, and its module's SHA-256.
pub(super) struct Ident {
    pub(super) digest: String,
    pub(super) module_sha: Option<String>,
}

impl Gens {
    pub fn new(state_dir: &Path) -> Gens {
        let dir = state_dir.join("generations");
        Gens {
            journal: crate::journal::Journal::new(
                &dir,
                JOURNAL,
                "histories of generations",
                COMPACT_FLOOR,
                MAX_JOURNAL,
            ),
            dir,
            apps: BTreeMap::new(),
            read: false,
            departed: Default::default(),
        }
    }

    pub(super) fn module_copy(&self, sha: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{sha}.wasm"))
    }

    pub fn get(&self, app: &str) -> Option<&AppGens> {
        self.apps.get(app)
    }

    /// An app's history: the journal's (read at the first call, with the files of earlier
    /// builds), else a new one.
    pub(super) fn load(&mut self, app: &str) -> &mut AppGens {
        if !self.read {
            self.read = true;
            self.read_all();
        } else if self.departed.remove(app) && !self.apps.contains_key(app) {
            // An app that left the fleet and came back: its history is still in the journal.
            if let Some(h) = self.replay().remove(app) {
                self.insert(h);
            }
        }
        if !self.apps.contains_key(app) {
            self.insert(History::new(app));
        }
        self.apps.get_mut(app).expect("inserted above")
    }

    /// The app left the fleet: its history leaves memory (the journal keeps it).
    pub(super) fn remove(&mut self, app: &str) {
        if self.apps.remove(app).is_some() {
            self.departed.insert(app.to_string());
        }
    }

    fn insert(&mut self, mut history: History) {
        // Read from JSON, the list has room for four: most apps have one generation.
        history.generations.shrink_to_fit();
        self.apps.insert(
            history.app.clone(),
            AppGens {
                history,
                watch: None,
                note: None,
            },
        );
    }

    /// Every app's history from the journal, then the files of earlier builds: a file that
    /// cannot be read or makes no sense is reported, kept as `APP.json.corrupt`, and that app's
    /// history starts afresh; one that can is appended to the journal and removed.
    fn read_all(&mut self) {
        for (_, h) in self.replay() {
            self.insert(h);
        }
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = self.dir.join(&name);
            if name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path); // a write cut short
                continue;
            }
            let Some(app) = name.strip_suffix(".json") else {
                continue;
            };
            match read_history(&path, app) {
                Ok(h) => {
                    // Written by an earlier build after the journal's line, if any: newer.
                    self.insert(h);
                    if self.save(app) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Err(e) => {
                    self.apps.remove(app);
                    let keep = path.with_extension("json.corrupt");
                    let kept = std::fs::rename(&path, &keep).is_ok();
                    eprintln!(
                        "paddock: {app}: {}: {e}; starting a fresh history of generations{}",
                        path.display(),
                        if kept {
                            format!(" (the old file is kept as {})", keep.display())
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
    }

    /// The last valid history of each app in the journal (see `crate::journal` for what is
    /// skipped and what moved aside).
    fn replay(&self) -> BTreeMap<String, History> {
        self.journal
            .read::<History>(|h| h.validate(&h.app))
            .into_iter()
            .map(|h| (h.app.clone(), h))
            .collect()
    }

    /// Writes an app's history: a line appended to the journal. `false` if it could not.
    pub(super) fn save(&mut self, app: &str) -> bool {
        let Some(a) = self.apps.get(app) else {
            return false;
        };
        let r = match self.journal.append(&a.history) {
            Ok(true) => {
                let live = self.replay();
                self.journal.replace(live.values())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            eprintln!(
                "paddock: {app}: cannot write {}: {}; its generations will not survive a restart of paddock",
                self.journal.path().display(),
                crate::util::io_reason(e)
            );
        }
        r.is_ok()
    }

    /// Keeps a copy of a module under its SHA-256 (once).
    pub(super) fn keep_module(&self, src: &Path, sha: &str) -> Result<(), String> {
        let dst = self.module_copy(sha);
        if dst.exists() {
            return Ok(());
        }
        let tmp = dst.with_extension("wasm.tmp");
        let r = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(dst.parent().unwrap_or(&self.dir))?;
            std::fs::copy(src, &tmp)?;
            // The copy must be the module the app runs: the file may have changed since it
            // was compiled (then no copy is kept, and a rollback to this generation says so).
            let (copied, _) = crate::bundle::sha256_file(&tmp)?;
            if copied != sha {
                let _ = std::fs::remove_file(&tmp);
                return Err(std::io::Error::other(format!(
                    "the file changed since it was loaded (sha256 {} now, {} loaded); apply it with `paddock update`",
                    crate::bundle::short(&copied),
                    crate::bundle::short(sha)
                )));
            }
            std::fs::rename(&tmp, &dst)
        })();
        r.map_err(|e| {
            format!(
                "cannot keep a copy of {} as {}: {}",
                src.display(),
                dst.display(),
                crate::util::io_reason(&e)
            )
        })
    }

    /// Removes module copies no history names any more.
    pub(super) fn gc_modules(&self) {
        let mut used = std::collections::BTreeSet::new();
        let on_disk = self.replay();
        for h in on_disk
            .values()
            .chain(self.apps.values().map(|a| &a.history))
        {
            used.extend(
                h.generations
                    .iter()
                    .filter_map(|g| g.stored.module_sha256.clone()),
            );
        }
        let Ok(rd) = std::fs::read_dir(self.dir.join("modules")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(sha) = name.strip_suffix(".wasm")
                && !used.contains(sha)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.apps
            .values()
            .filter_map(|a| a.watch.as_ref().and_then(Watch::poll_timeout))
            .min()
    }
}

/// Reads and checks a history file; a missing file is an empty history.
pub(super) fn read_history(path: &Path, app: &str) -> Result<History, String> {
    if !path.exists() {
        return Ok(History::new(app));
    }
    let text = crate::util::read_regular_text(path, MAX_HISTORY)?;
    History::parse(&text, app)
}

/// The digest of a definition (see the module's comment).
/// `compiled`: the SHA-256 of the module bytes the wasm host compiled for the app, when it
/// did; else the file is read and hashed now.
pub(super) fn ident(spec: &AppSpec, compiled: Option<String>) -> Ident {
    let module_sha = compiled.or_else(|| {
        spec.wasm
            .as_ref()
            .and_then(|w| crate::bundle::sha256_file(&w.module).ok())
            .map(|(sha, _)| sha)
    });
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(b) = v.get_mut("bundle").and_then(|b| b.as_object_mut()) {
        b.remove("reference");
        b.remove("dir");
    }
    if let Some(w) = v.get_mut("wasm").and_then(|w| w.as_object_mut()) {
        w.remove("module");
        w.remove("stamp");
        w.insert("module_sha256".into(), module_sha.clone().into());
    }
    let digest = crate::bundle::sha256_bytes(&serde_json::to_vec(&v).unwrap_or_default());
    Ident { digest, module_sha }
}

/// What changed from `old` to `new`, in a few words.
pub(super) fn summary(
    old: Option<(&AppSpec, &Option<String>)>,
    new: &AppSpec,
    new_sha: &Option<String>,
) -> String {
    let Some((old, old_sha)) = old else {
        return "first load".into();
    };
    let (Ok(serde_json::Value::Object(o)), Ok(serde_json::Value::Object(n))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return String::new();
    };
    let short = |s: &Option<String>| {
        s.as_deref()
            .map_or("none".to_string(), |s| crate::bundle::short(s).to_string())
    };
    let mut parts = vec![];
    for (k, nv) in &n {
        if o.get(k) == Some(nv) {
            continue;
        }
        match k.as_str() {
            "bundle" => {
                let id = |s: &AppSpec| s.bundle.as_ref().map(|b| b.id.clone());
                if id(old) != id(new) {
                    parts.push(format!("bundle {} → {}", short(&id(old)), short(&id(new))));
                }
            }
            "wasm" => {
                if old_sha != new_sha {
                    parts.push(format!("module {} → {}", short(old_sha), short(new_sha)));
                }
                let strip = |v: Option<&serde_json::Value>| {
                    let mut v = v.cloned().unwrap_or_default();
                    if let Some(m) = v.as_object_mut() {
                        m.remove("stamp");
                        m.remove("module");
                    }
                    v
                };
                if strip(o.get(k)) != strip(Some(nv)) {
                    parts.push("wasm".into());
                }
            }
            // Follows from `command` or `bundle`.
            "program" => {}
            k => parts.push(k.to_string()),
        }
    }
    if parts.is_empty() {
        "no change (the same definition again)".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(g: &mut Gens, app: &str, n: u8) {
        let a = g.load(app);
        a.history.record(
            format!("{n:02x}").repeat(32),
            "2026-11-30T00:00:00Z".into(),
            "loaded",
            format!("generation of {app}"),
            crate::generations::Stored {
                file: format!("/apps/{app}.toml").into(),
                text: "x".repeat(300),
                bundle_id: None,
                bundle_dir: None,
                module_sha256: None,
            },
        );
        g.save(app);
    }

    /// The journal gives each app its last history back; a bad line is skipped, a crash loop
    /// of saves does not grow it without bound, an app that left and came back finds its own.
    #[test]
    fn histories_journal_round_trip_and_bound() {
        let d = crate::util::TestDir::new("gens-journal");
        let mut g = Gens::new(d.path());
        record(&mut g, "a", 1);
        record(&mut g, "b", 1);
        record(&mut g, "a", 2);
        // Garbage, and a line for b that is JSON but no valid history (its current
        // generation is not in it): both skipped, b's line before stands.
        let path = d.path().join("generations").join(JOURNAL);
        let mut text = std::fs::read(&path).unwrap();
        text.extend(
            b"{ torn\n\0\xff\n{\"format\":1,\"app\":\"b\",\"current\":7,\"generations\":[]}\n",
        );
        std::fs::write(&path, &text).unwrap();
        let mut g = Gens::new(d.path());
        assert_eq!(g.load("a").history.generations.len(), 2);
        let b = &g.load("b").history;
        assert_eq!((b.generations.len(), b.current), (1, 1));
        assert!(g.load("c").history.generations.is_empty());
        // Left and came back.
        g.remove("a");
        assert_eq!(g.load("a").history.generations.len(), 2);
        // 10 apps, 3000 saves of ~2 KiB: compaction keeps the journal near its floor.
        for n in 0..3000u32 {
            g.save(&format!("a{}", n % 10));
            if n < 10 {
                record(&mut g, &format!("a{n}"), 3);
            }
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < COMPACT_FLOOR + 8192, "journal grew to {size} bytes");
        let mut g = Gens::new(d.path());
        assert_eq!(g.load("a9").history.generations.len(), 1);
        assert_eq!(g.load("a").history.generations.len(), 2);
    }

    /// Files of an earlier build are folded into the journal; a bad one is kept aside; a
    /// journal that is a FIFO is moved aside without blocking.
    #[test]
    fn earlier_files_are_folded_in_and_a_fifo_journal_does_not_block() {
        let d = crate::util::TestDir::new("gens-legacy");
        let mut g = Gens::new(d.path());
        record(&mut g, "a", 1);
        let dir = d.path().join("generations");
        let line = std::fs::read_to_string(dir.join(JOURNAL)).unwrap();
        std::fs::remove_file(dir.join(JOURNAL)).unwrap();
        std::fs::write(dir.join("a.json"), line.trim()).unwrap();
        std::fs::write(dir.join("b.json"), "{ not json").unwrap();
        let mut g = Gens::new(d.path());
        assert_eq!(g.load("a").history.generations.len(), 1);
        assert!(!dir.join("a.json").exists());
        assert!(dir.join("b.json.corrupt").exists());
        assert_eq!(
            Gens::new(d.path()).load("a").history.generations.len(),
            1,
            "not in the journal"
        );
        std::fs::remove_file(dir.join(JOURNAL)).unwrap();
        let c = std::ffi::CString::new(dir.join(JOURNAL).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path, a live CString.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut g = Gens::new(d.path());
        assert!(g.load("a").history.generations.is_empty());
        assert!(dir.join(format!("{JOURNAL}.bad")).exists());
        record(&mut g, "a", 1);
        assert_eq!(Gens::new(d.path()).load("a").history.generations.len(), 1);
    }

    /// A module copy is kept only when its bytes are the ones the generation names.
    #[test]
    fn module_copy_is_verified() {
        let d = crate::util::TestDir::new("gens-keep");
        let gens = Gens::new(d.path());
        let src = d.path().join("m.wasm");
        std::fs::write(&src, b"\0asm\x01\0\0\0").unwrap();
        let (sha, _) = crate::bundle::sha256_file(&src).unwrap();
        gens.keep_module(&src, &sha).unwrap();
        assert!(gens.module_copy(&sha).is_file());
        // The file changed after it was loaded: no copy under the loaded digest.
        let loaded = "0".repeat(64);
        let e = gens.keep_module(&src, &loaded).unwrap_err();
        assert!(e.contains("changed since it was loaded"), "{e}");
        assert!(!gens.module_copy(&loaded).exists());
        assert!(
            !gens
                .module_copy(&loaded)
                .with_extension("wasm.tmp")
                .exists()
        );
    }
}
