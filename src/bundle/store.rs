//! The bundle store (default `/var/lib/paddock/bundles`):
//!
//! ```text
//! objects/ab/ab12…ef      file contents, named by sha256, read-only
//! <id>/manifest.toml      a bundle: its manifest (sha256 = <id>)
//! <id>/root/…             its tree: each file at its path in the bundle, a hard link to its
//!                         object (a copy when the modes differ or links are impossible),
//!                         symlinks and directories as in the manifest
//! refs/<name>             "<id>\n": the last bundle built from recipe <name>
//! .lock                   flock'd by build and gc
//! ```
//! The tree is what the loader and the app see, so an app launched from a bundle needs nothing
//! from the host's library directories. A bundle directory is self-contained: it can be used
//! by path (`bundle = "/path/to/<id>"`) without the rest of the store.

use super::manifest::{Bundle, FILE_NAME, Manifest, ROOT_DIR};
use super::recipe::{Recipe, RecipeError};
use super::resolve::{self, Host};
use super::{is_hex, is_id, short};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct Store {
    pub dir: PathBuf,
}

pub enum BuildError {
    Recipe(Vec<RecipeError>),
    Store(String),
}

pub struct Built {
    pub bundle: Bundle,
    /// The same bundle was already in the store (and verified intact).
    pub reused: bool,
    pub warnings: Vec<String>,
}

/// An exclusive flock on the store, released on drop.
pub struct Lock(#[allow(dead_code)] std::fs::File);

fn io(what: &Path, e: &std::io::Error) -> String {
    format!("{}: {}", what.display(), crate::util::io_reason(e))
}

static TMP_N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn tmp_name(tag: &str) -> String {
    format!(
        ".tmp-{tag}-{}-{}",
        std::process::id(),
        TMP_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }

    pub fn object_path(&self, sha: &str) -> PathBuf {
        self.objects().join(&sha[..2]).join(sha)
    }

    fn refs_dir(&self) -> PathBuf {
        self.dir.join("refs")
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn mkdir(p: &Path) -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(p)
            .map_err(|e| io(p, &e))
    }

    pub fn lock(&self) -> Result<Lock, String> {
        Self::mkdir(&self.dir)?;
        let p = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io(&p, &e))?;
        // SAFETY: flock on the descriptor of `f`, which owns it and is alive.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&p, &std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    /// Copies a file into the objects, hashing it on the way; returns (sha256, size). An object
    /// already present is kept if its content is intact and replaced if it is not.
    fn put_object(&self, src: &Path, mode: u32) -> Result<(String, u64), String> {
        let objects = self.objects();
        Self::mkdir(&objects)?;
        let mut input = std::fs::File::open(src).map_err(|e| io(src, &e))?;
        let tmp = objects.join(tmp_name("obj"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, &e))?;
        let result = (|| {
            let mut tee = Tee {
                r: &mut input,
                w: &mut out,
            };
            let (sha, size) = super::sha256_reader(&mut tee).map_err(|e| io(src, &e))?;
            out.flush().map_err(|e| io(&tmp, &e))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io(&tmp, &e))?;
            let dest = self.object_path(&sha);
            if dest.exists() && super::sha256_file(&dest).is_ok_and(|(s, _)| s == sha) {
                let _ = std::fs::remove_file(&tmp);
            } else {
                if let Some(p) = dest.parent() {
                    Self::mkdir(p)?;
                }
                std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, &e))?;
            }
            Ok((sha, size))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Builds the recipe into the store and points `refs/<name>` at it.
    pub fn build(&self, recipe: &Recipe, host: &Host) -> Result<Built, BuildError> {
        let closure = resolve::resolve(recipe, host).map_err(BuildError::Recipe)?;
        let _lock = self.lock().map_err(BuildError::Store)?;
        let mut hashes = BTreeMap::new();
        for (path, src) in &closure.files {
            let h = self
                .put_object(&src.host, src.mode)
                .map_err(BuildError::Store)?;
            hashes.insert(path.clone(), h);
        }
        let entry = recipe.entry.path.clone().unwrap_or_default();
        let manifest = Manifest::new(&recipe.name, &entry, &closure, &hashes);
        let text = manifest.to_toml();
        let id = super::sha256_bytes(text.as_bytes());
        let dir = self.bundle_dir(&id);
        let mut reused = false;
        if dir.exists() {
            let intact = Bundle::open(&dir)
                .map(|b| super::verify::full(&b).problems.is_empty())
                .unwrap_or(false);
            if intact {
                reused = true;
            } else {
                let trash = self.dir.join(tmp_name("trash"));
                std::fs::rename(&dir, &trash).map_err(|e| BuildError::Store(io(&dir, &e)))?;
                let _ = remove_tree(&trash);
            }
        }
        if !reused {
            self.materialise(&id, &manifest, &text)
                .map_err(BuildError::Store)?;
        }
        self.set_ref(&recipe.name, &id).map_err(BuildError::Store)?;
        let bundle = Bundle::open(&dir).map_err(BuildError::Store)?;
        Ok(Built {
            bundle,
            reused,
            warnings: closure.warnings,
        })
    }

    /// Writes a bundle directory (tree + manifest) under a temporary name, then renames it.
    fn materialise(&self, id: &str, m: &Manifest, text: &str) -> Result<(), String> {
        let tmp = self.dir.join(tmp_name(short(id)));
        let root = tmp.join(ROOT_DIR);
        let r = (|| {
            Self::mkdir(&root)?;
            let mut dirs: BTreeSet<String> = m.dirs.iter().cloned().collect();
            for p in m
                .files
                .iter()
                .map(|f| &f.path)
                .chain(m.links.iter().map(|l| &l.path))
            {
                dirs.insert(super::parent(p).to_string());
            }
            for d in &dirs {
                Self::mkdir(&super::in_root(&root, d))?;
            }
            for f in &m.files {
                let obj = self.object_path(&f.sha256);
                let dest = super::in_root(&root, &f.path);
                let same_mode = std::fs::metadata(&obj)
                    .map(|md| md.permissions().mode() & 0o7777 == f.mode)
                    .map_err(|e| io(&obj, &e))?;
                if !(same_mode && std::fs::hard_link(&obj, &dest).is_ok()) {
                    std::fs::copy(&obj, &dest).map_err(|e| io(&dest, &e))?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))
                        .map_err(|e| io(&dest, &e))?;
                }
            }
            for l in &m.links {
                let dest = super::in_root(&root, &l.path);
                std::os::unix::fs::symlink(&l.target, &dest).map_err(|e| io(&dest, &e))?;
            }
            let mf = tmp.join(FILE_NAME);
            std::fs::write(&mf, text).map_err(|e| io(&mf, &e))?;
            std::fs::set_permissions(&mf, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| io(&mf, &e))?;
            let dir = self.bundle_dir(id);
            std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, &e))
        })();
        if r.is_err() {
            let _ = remove_tree(&tmp);
        }
        r
    }

    fn set_ref(&self, name: &str, id: &str) -> Result<(), String> {
        let refs = self.refs_dir();
        Self::mkdir(&refs)?;
        let tmp = refs.join(tmp_name("ref"));
        std::fs::write(&tmp, format!("{id}\n")).map_err(|e| io(&tmp, &e))?;
        let dest = refs.join(name);
        std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, &e))
    }

    /// name → id of every ref.
    pub fn refs(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Ok(rd) = std::fs::read_dir(self.refs_dir()) else {
            return out;
        };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                out.insert(name, s.trim().to_string());
            }
        }
        out
    }

    /// Ids of the bundles in the store, sorted.
    pub fn ids(&self) -> Result<Vec<String>, String> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&self.dir, &e)),
        };
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| is_id(n))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Finds a bundle by path (contains '/'), ref name, full id or unique id prefix.
    pub fn find(&self, reference: &str) -> Result<Bundle, String> {
        if reference.contains('/') {
            let p = Path::new(reference);
            let dir = if p.file_name().is_some_and(|n| n == FILE_NAME) {
                p.parent().unwrap_or(p)
            } else {
                p
            };
            return Bundle::open(dir);
        }
        let refs = self.refs();
        if let Some(id) = refs.get(reference) {
            let dir = self.bundle_dir(id);
            if !dir.exists() {
                return Err(format!(
                    "{}: refs/{reference} points to {id}, which is not in the store (removed by `paddock bundle gc`?); rebuild it with `paddock bundle build`",
                    self.dir.display()
                ));
            }
            return Bundle::open(&dir);
        }
        if is_hex(reference) && reference.len() >= 6 {
            let hits: Vec<String> = self
                .ids()?
                .into_iter()
                .filter(|id| id.starts_with(reference))
                .collect();
            match hits.len() {
                1 => return Bundle::open(&self.bundle_dir(&hits[0])),
                0 => {}
                _ => {
                    return Err(format!(
                        "\"{reference}\" matches {} bundles ({}); give more digits",
                        hits.len(),
                        hits.iter().map(|h| short(h)).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        Err(format!(
            "no bundle \"{reference}\" in {} (see `paddock bundle ls`; build one with `paddock bundle build bundles/{reference}.toml`)",
            self.dir.display()
        ))
    }

    /// Removes the bundles whose ids are not in `keep`, the refs to them, and the objects no
    /// remaining bundle uses. With `dry_run`, only reports.
    pub fn gc(&self, keep: &BTreeSet<String>, dry_run: bool) -> Result<GcReport, String> {
        let _lock = if dry_run { None } else { Some(self.lock()?) };
        let mut rep = GcReport::default();
        let mut live_objects: BTreeSet<String> = BTreeSet::new();
        let names_of = self.refs();
        for id in self.ids()? {
            let dir = self.bundle_dir(&id);
            if keep.contains(&id) {
                if let Ok(b) = Bundle::open(&dir) {
                    live_objects.extend(b.manifest.files.iter().map(|f| f.sha256.clone()));
                }
                rep.kept.push(id);
                continue;
            }
            let name = Bundle::open(&dir)
                .map(|b| b.manifest.name)
                .unwrap_or_else(|_| "(damaged)".into());
            rep.freed += dir_size(&dir);
            if !dry_run {
                let trash = self.dir.join(tmp_name("trash"));
                std::fs::rename(&dir, &trash).map_err(|e| io(&dir, &e))?;
                remove_tree(&trash).map_err(|e| io(&trash, &e))?;
            }
            rep.removed.push((id, name));
        }
        let removed: BTreeSet<&String> = rep.removed.iter().map(|(i, _)| i).collect();
        for (name, id) in &names_of {
            if removed.contains(id) || !self.bundle_dir(id).exists() {
                if !dry_run {
                    let _ = std::fs::remove_file(self.refs_dir().join(name));
                }
                rep.refs_removed.push(name.clone());
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.objects()) {
            for fan in rd.flatten() {
                let Ok(inner) = std::fs::read_dir(fan.path()) else {
                    continue;
                };
                for o in inner.flatten() {
                    let n = o.file_name().to_string_lossy().into_owned();
                    if live_objects.contains(&n) {
                        continue;
                    }
                    rep.freed += o.metadata().map(|m| m.len()).unwrap_or(0);
                    rep.objects_removed += 1;
                    if !dry_run {
                        let _ = std::fs::remove_file(o.path());
                    }
                }
                if !dry_run {
                    let _ = std::fs::remove_dir(fan.path()); // only if empty
                }
            }
        }
        if !dry_run {
            // Leftovers of interrupted builds.
            if let Ok(rd) = std::fs::read_dir(&self.dir) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".tmp-") {
                        let _ = remove_tree(&e.path());
                    }
                }
            }
        }
        Ok(rep)
    }
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub kept: Vec<String>,
    /// (id, name)
    pub removed: Vec<(String, String)>,
    pub refs_removed: Vec<String>,
    pub objects_removed: usize,
    /// Bytes of objects and of copied tree files removed.
    pub freed: u64,
}

/// Ids of the bundles of `store` that running processes have mapped or execute (their
/// programs, loaders, libraries), from /proc.
pub fn in_use(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(base) = std::fs::canonicalize(store) else {
        return out;
    };
    let prefix = format!("{}/", base.display());
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut note = |path: &str| {
        if let Some(rest) = path.strip_prefix(&prefix) {
            let id = rest.split('/').next().unwrap_or("");
            if is_id(id) {
                out.insert(id.to_string());
            }
        }
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            note(&exe.to_string_lossy());
        }
        if let Ok(maps) = std::fs::read_to_string(e.path().join("maps")) {
            for line in maps.lines() {
                if let Some(i) = line.find('/') {
                    note(&line[i..]);
                }
            }
        }
    }
    out
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_size(&e.path()),
                Ok(t) if t.is_file() => {
                    // Hard links to objects are counted with the objects.
                    n += e
                        .metadata()
                        .map(|m| if m.nlink() == 1 { m.len() } else { 0 })
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    n
}

/// `rm -rf` that also works on read-only directories.
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(p);
            std::fs::remove_dir_all(p)
        }
    }
}

fn make_writable(p: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(p)
        && m.is_dir()
    {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Copies from `r` to `w` while the hasher reads.
struct Tee<'a, R, W> {
    r: &'a mut R,
    w: &'a mut W,
}

impl<R: std::io::Read, W: Write> std::io::Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}
