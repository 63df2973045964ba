//! The files of generations: `STATE_DIR/generations/APP.json` and the kept modules, what a
//! generation's identity and summary are.

use super::super::*;
use crate::generations::{History, Watch};
use std::path::Path;

/// A history file larger than this is refused (it holds at most `KEEP` app files).
pub(super) const MAX_HISTORY: u64 = 8 << 20;
/// An app file larger than this is not kept (app files are a few hundred bytes).
pub(super) const MAX_APP_FILE: u64 = 1 << 20;

/// One app's history and watch.
pub(in crate::daemon) struct AppGens {
    pub history: History,
    pub watch: Option<Watch>,
    /// The last rollback (by paddock), for `status`.
    pub note: Option<String>,
}

pub(in crate::daemon) struct Gens {
    pub(super) dir: PathBuf,
    pub(super) apps: BTreeMap<String, AppGens>,
}

/// What identifies a definition: its digest, and its module's SHA-256.
pub(super) struct Ident {
    pub(super) digest: String,
    pub(super) module_sha: Option<String>,
}

impl Gens {
    pub fn new(state_dir: &Path) -> Gens {
        Gens {
            dir: state_dir.join("generations"),
            apps: BTreeMap::new(),
        }
    }

    pub(super) fn file(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    pub(super) fn module_copy(&self, sha: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{sha}.wasm"))
    }

    pub fn get(&self, app: &str) -> Option<&AppGens> {
        self.apps.get(app)
    }

    /// An app's history, read from its file the first time. A file that cannot be read or
    /// makes no sense is reported, kept as `APP.json.corrupt`, and the history starts afresh.
    pub(super) fn load(&mut self, app: &str) -> &mut AppGens {
        if !self.apps.contains_key(app) {
            let path = self.file(app);
            let history = match read_history(&path, app) {
                Ok(h) => h,
                Err(e) => {
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
                    History::new(app)
                }
            };
            self.apps.insert(
                app.to_string(),
                AppGens {
                    history,
                    watch: None,
                    note: None,
                },
            );
        }
        self.apps.get_mut(app).expect("inserted above")
    }

    /// Writes an app's history (a temporary file renamed over the old one).
    pub(super) fn save(&self, app: &str) {
        let Some(a) = self.apps.get(app) else {
            return;
        };
        let path = self.file(app);
        let r = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = path.with_extension("json.tmp");
            let body = serde_json::to_vec_pretty(&a.history).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, body)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = r {
            eprintln!(
                "paddock: {app}: cannot write {}: {}; its generations will not survive a restart of paddock",
                path.display(),
                crate::util::io_reason(&e)
            );
        }
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

    /// Removes module copies no history file names any more.
    pub(super) fn gc_modules(&self) {
        let mut used = std::collections::BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Some(app) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let h = match self.apps.get(app) {
                Some(a) => a.history.clone(),
                None => match read_history(&p, app) {
                    Ok(h) => h,
                    // Unreadable: keep every module (it may name any of them).
                    Err(_) => return,
                },
            };
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
