//! The ELF closure of a recipe, found the way glibc's loader would find it on this host, by
//! reading files only (no program is run, `ldd` is not used).
//!
//! For each program, breadth-first over `DT_NEEDED` (the loader's order), each name is looked up:
//! 1. a name already loaded (by its soname or the name it was asked for) is reused;
//! 2. a name containing `/` is a path;
//! 3. `DT_RPATH` of the object, then of the object that loaded it, up to the program — only when
//!    the object has no `DT_RUNPATH`;
//! 4. (`LD_LIBRARY_PATH` is ignored: a bundle must not depend on the builder's environment;)
//! 5. `DT_RUNPATH` of the object;
//! 6. unless the object is `DF_1_NODEFLIB`: `/etc/ld.so.cache`, then the default directories
//!    (multiarch `/lib/<triplet>`, `/usr/lib/<triplet>`, then `/lib64`, `/usr/lib64`, `/lib`,
//!    `/usr/lib`).
//!
//! `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded; candidates of another class or machine
//! (32-bit libraries, for example) are skipped, as the loader skips them. A file reached through
//! symlinks is stored once under its real path; each name it was found by becomes a relative
//! symlink to it, so the tree inside the bundle has the host's layout with real directories.

use super::elf::{self, Abi, ElfInfo};
use super::ldcache::Cache;
use super::recipe::{Item, Recipe, RecipeError};
use super::{basename, normalize, parent, relative_target};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Which library satisfied which `DT_NEEDED` of which object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Needed {
    /// The object that needs the library (its path in the bundle).
    pub by: String,
    pub name: String,
    /// The path the library was found at (in the bundle; may be a symlink there).
    pub found: String,
    /// How it was found: "ld.so.cache", "RUNPATH", "RPATH of /x", "default directories",
    /// "already loaded", "PT_INTERP", "path", "libs".
    pub via: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The program file (its real path).
    pub path: String,
    /// Its `PT_INTERP`, as written (normalised); `None` for a static program.
    pub interpreter: Option<String>,
}

/// Where a bundle file's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub host: PathBuf,
    /// Permission bits as stored: the host's, without write, setuid, setgid and sticky bits.
    pub mode: u32,
}

/// Everything a bundle holds, before it is stored.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    pub files: BTreeMap<String, Source>,
    pub links: BTreeMap<String, String>,
    pub dirs: BTreeSet<String>,
    pub programs: BTreeMap<String, Program>,
    pub needed: BTreeSet<Needed>,
    /// Directories given to the loader (`--library-path`), in search order.
    pub library_path: Vec<String>,
    pub warnings: Vec<String>,
}

/// Where the resolver looks: the cache file and a root prefix for tests are the only knobs.
pub struct Host {
    pub cache: Cache,
}

impl Host {
    pub fn system() -> Result<Host, String> {
        Ok(Host {
            cache: Cache::load(Path::new(super::ldcache::DEFAULT_CACHE))?,
        })
    }
}

struct Loaded {
    /// The path it is loaded from (its `$ORIGIN` is the directory of this).
    logical: String,
    info: Rc<ElfInfo>,
    loader: Option<usize>,
    names: Vec<String>,
    scanned: bool,
}

struct Resolver<'a> {
    recipe: &'a Recipe,
    host: &'a Host,
    out: Closure,
    errors: Vec<RecipeError>,
    parsed: HashMap<String, Rc<ElfInfo>>,
    warned: BTreeSet<String>,
}

fn io_msg(path: &str, e: &std::io::Error) -> String {
    format!("{path}: {}", crate::util::io_reason(e))
}

impl Resolver<'_> {
    fn warn(&mut self, w: String) {
        if self.warned.insert(w.clone()) {
            self.out.warnings.push(w);
        }
    }

    fn add_link(&mut self, path: &str, target: String) {
        self.out.links.entry(path.to_string()).or_insert(target);
    }

    fn add_file(&mut self, path: &str, host: PathBuf, mode: u32) {
        if mode & 0o6000 != 0 {
            self.warn(format!(
                "{path}: its setuid/setgid bit is not kept (bundle files never run with raised privileges)"
            ));
        }
        self.out.files.entry(path.to_string()).or_insert(Source {
            host,
            mode: mode & 0o555,
        });
    }

    fn add_lib_dir(&mut self, dir: &str) {
        if !self.out.library_path.iter().any(|d| d == dir) {
            self.out.library_path.push(dir.to_string());
        }
    }

    /// Stores the file found at `logical` (following symlinks on the host) and returns its real
    /// path; `logical` becomes a symlink to it if they differ.
    fn place(&mut self, logical: &str) -> Result<String, String> {
        let real = std::fs::canonicalize(logical).map_err(|e| io_msg(logical, &e))?;
        let real_s = real
            .to_str()
            .ok_or_else(|| format!("{logical} leads to a path that is not UTF-8"))?
            .to_string();
        let meta = std::fs::metadata(&real).map_err(|e| io_msg(&real_s, &e))?;
        if meta.is_dir() {
            return Err(format!("{logical} is a directory"));
        }
        if !meta.is_file() {
            return Err(format!("{logical} is not a regular file"));
        }
        if real_s != logical {
            self.add_link(logical, relative_target(parent(logical), &real_s));
        }
        self.add_file(&real_s, real, meta.permissions().mode());
        Ok(real_s)
    }

    fn elf(&mut self, real: &str) -> Result<Rc<ElfInfo>, String> {
        if let Some(i) = self.parsed.get(real) {
            return Ok(i.clone());
        }
        let bytes = std::fs::read(real).map_err(|e| io_msg(real, &e))?;
        let info = Rc::new(elf::parse(&bytes).map_err(|e| format!("{real} {e}"))?);
        self.parsed.insert(real.to_string(), info.clone());
        Ok(info)
    }

    /// A search candidate: an existing file of the right ABI. Notes skipped files.
    fn try_candidate(&self, path: &str, abi: &Abi, notes: &mut Vec<String>) -> bool {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            _ => return false,
        }
        match elf::file_abi(Path::new(path)) {
            Ok(Some(a)) if a == *abi => true,
            Ok(Some(a)) => {
                notes.push(format!("skipped {path} ({})", a.describe()));
                false
            }
            Ok(None) => {
                notes.push(format!("skipped {path} (not ELF)"));
                false
            }
            Err(e) => {
                notes.push(format!("skipped {}", io_msg(path, &e)));
                false
            }
        }
    }

    /// Looks `name` up for `loaded[i]`. Returns (path, via, whether the directory came from the
    /// host rather than from `$ORIGIN`), or the list of places searched.
    fn search(
        &mut self,
        loaded: &[Loaded],
        i: usize,
        name: &str,
    ) -> Result<(String, String, bool), String> {
        let obj = &loaded[i];
        let abi = obj.info.abi;
        let mut searched: Vec<String> = vec![];
        let mut notes: Vec<String> = vec![];
        if name.contains('/') {
            return match normalize(name) {
                Some(p) if self.try_candidate(&p, &abi, &mut notes) => {
                    Ok((p, "path".into(), true))
                }
                Some(p) => Err(format!("the path {p} does not exist or does not fit")),
                None => Err("a relative path in DT_NEEDED depends on the current directory; it cannot be bundled".into()),
            };
        }
        let try_dirs = |this: &mut Self,
                        dirs: &[String],
                        origin_of: &Loaded,
                        label: &str,
                        searched: &mut Vec<String>,
                        notes: &mut Vec<String>|
         -> Option<(String, String, bool)> {
            for d in dirs {
                let (dir, used_origin) = elf::expand_dst(d, parent(&origin_of.logical), &abi);
                let Some(dir) = normalize(&dir) else {
                    notes.push(format!("ignored relative {label} entry \"{d}\""));
                    continue;
                };
                if !used_origin && label.starts_with("RPATH") {
                    this.warn(format!(
                        "{} has RPATH {dir}: the loader searches that host directory before the bundle's libraries at run time",
                        origin_of.logical
                    ));
                }
                searched.push(format!("{label} {dir}"));
                let cand = format!("{}/{name}", dir.trim_end_matches('/'));
                let cand = normalize(&cand).unwrap_or(cand);
                if this.try_candidate(&cand, &abi, notes) {
                    return Some((cand, label.to_string(), !used_origin));
                }
            }
            None
        };
        if obj.info.runpath.is_empty() {
            let mut j = Some(i);
            while let Some(k) = j {
                let o = &loaded[k];
                let label = if k == i {
                    "RPATH".to_string()
                } else {
                    format!("RPATH of {}", o.logical)
                };
                let rp = o.info.rpath.clone();
                if let Some(hit) = try_dirs(self, &rp, o, &label, &mut searched, &mut notes) {
                    return Ok(hit);
                }
                j = o.loader;
            }
        }
        let rp = obj.info.runpath.clone();
        if let Some(hit) = try_dirs(self, &rp, obj, "RUNPATH", &mut searched, &mut notes) {
            return Ok(hit);
        }
        if obj.info.nodeflib {
            searched.push("(not ld.so.cache or the default directories: DF_1_NODEFLIB)".into());
        } else {
            searched.push(super::ldcache::DEFAULT_CACHE.into());
            let hits: Vec<String> = self
                .host
                .cache
                .lookup(name)
                .into_iter()
                .map(str::to_string)
                .collect();
            for v in hits {
                if let Some(p) = normalize(&v)
                    && self.try_candidate(&p, &abi, &mut notes)
                {
                    return Ok((p, "ld.so.cache".into(), true));
                }
            }
            for d in abi.default_dirs() {
                searched.push(d.clone());
                let p = format!("{d}/{name}");
                if self.try_candidate(&p, &abi, &mut notes) {
                    return Ok((p, "default directories".into(), true));
                }
            }
        }
        let mut msg = format!("searched {}", searched.join(", "));
        if !notes.is_empty() {
            msg.push_str(&format!("; {}", notes.join("; ")));
        }
        msg.push_str(" (LD_LIBRARY_PATH is ignored)");
        Err(msg)
    }

    /// Loads the `DT_NEEDED` of `loaded[start..]` breadth-first, as the loader does.
    fn load_needed(&mut self, item: &Item, loaded: &mut Vec<Loaded>, start: usize) {
        let mut i = start;
        while i < loaded.len() {
            if loaded[i].scanned {
                i += 1;
                continue;
            }
            loaded[i].scanned = true;
            let needed = loaded[i].info.needed.clone();
            for name in needed {
                self.need(item, loaded, i, &name, None);
            }
            i += 1;
        }
    }

    /// Satisfies one needed name for `loaded[i]`; returns the index of the object that does.
    fn need(
        &mut self,
        item: &Item,
        loaded: &mut Vec<Loaded>,
        i: usize,
        name: &str,
        via_prefix: Option<&str>,
    ) -> Option<usize> {
        let by = loaded[i].logical.clone();
        let with_prefix = |v: &str| match via_prefix {
            Some(p) => format!("{p}: {v}"),
            None => v.to_string(),
        };
        if let Some(k) = loaded
            .iter()
            .position(|l| l.names.iter().any(|n| n == name) || l.logical == name)
        {
            self.out.needed.insert(Needed {
                by,
                name: name.to_string(),
                found: loaded[k].logical.clone(),
                via: with_prefix("already loaded"),
            });
            return Some(k);
        }
        let (found, via, host_dir) = match self.search(loaded, i, name) {
            Ok(hit) => hit,
            Err(searched) => {
                let e = self.recipe.err(
                    item,
                    format!("{name}, needed by {by}, was not found; {searched}"),
                );
                self.errors.push(e);
                return None;
            }
        };
        let real = match self.place(&found) {
            Ok(r) => r,
            Err(e) => {
                let e = self.recipe.err(item, e);
                self.errors.push(e);
                return None;
            }
        };
        let info = match self.elf(&real) {
            Ok(i) => i,
            Err(e) => {
                let e = self
                    .recipe
                    .err(item, format!("{name}, needed by {by}: {e}"));
                self.errors.push(e);
                return None;
            }
        };
        if host_dir {
            self.add_lib_dir(parent(&found));
        }
        let mut names = vec![name.to_string()];
        if let Some(s) = &info.soname {
            names.push(s.clone());
        }
        self.out.needed.insert(Needed {
            by,
            name: name.to_string(),
            found: found.clone(),
            via: with_prefix(&via),
        });
        loaded.push(Loaded {
            logical: found,
            info,
            loader: Some(i),
            names,
            scanned: false,
        });
        Some(loaded.len() - 1)
    }

    /// A program (the entry, or an ELF file in `include`) and its closure. Returns the loaded
    /// objects (for `libs`, which are resolved as if the program dlopen()ed them).
    fn program(
        &mut self,
        item: &Item,
        logical: &str,
        info: Rc<ElfInfo>,
    ) -> Option<(Vec<Loaded>, usize)> {
        let mut loaded = vec![];
        let real = match self.place(logical) {
            Ok(r) => r,
            Err(e) => {
                let e = self.recipe.err(item, e);
                self.errors.push(e);
                return None;
            }
        };
        let interp = match &info.interp {
            None => None,
            Some(raw) => {
                let Some(p) = normalize(raw) else {
                    let e = self.recipe.err(
                        item,
                        format!("{logical}: its interpreter \"{raw}\" is not an absolute path"),
                    );
                    self.errors.push(e);
                    return None;
                };
                match self.place(&p).and_then(|r| self.elf(&r)) {
                    Ok(ii) if ii.abi != info.abi => {
                        let e = self.recipe.err(
                            item,
                            format!(
                                "{logical}: its interpreter {p} is {}, the program is {}",
                                ii.abi.describe(),
                                info.abi.describe()
                            ),
                        );
                        self.errors.push(e);
                        return None;
                    }
                    Ok(ii) => {
                        let mut names = vec![basename(&p).to_string()];
                        if let Some(s) = &ii.soname {
                            names.push(s.clone());
                        }
                        loaded.push(Loaded {
                            logical: p.clone(),
                            info: ii,
                            loader: None,
                            names,
                            scanned: true,
                        });
                        self.out.needed.insert(Needed {
                            by: real.clone(),
                            name: raw.clone(),
                            found: p.clone(),
                            via: "PT_INTERP".into(),
                        });
                    }
                    Err(e) => {
                        let e = self.recipe.err(
                            item,
                            format!("{logical}: its interpreter cannot be bundled: {e}"),
                        );
                        self.errors.push(e);
                        return None;
                    }
                }
                Some(p)
            }
        };
        self.out.programs.insert(
            real.clone(),
            Program {
                path: real.clone(),
                interpreter: interp,
            },
        );
        let main = loaded.len();
        loaded.push(Loaded {
            logical: real,
            info,
            loader: None,
            names: vec![],
            scanned: false,
        });
        self.load_needed(item, &mut loaded, main);
        Some((loaded, main))
    }

    /// The first checks of a path given in the recipe, with messages that say what to do.
    fn read_item(&mut self, item: &Item, what: &str) -> Option<(String, Vec<u8>)> {
        let path = item.path.clone()?;
        match std::fs::metadata(&path) {
            Err(e) => {
                let e = self
                    .recipe
                    .err(item, format!("{what} {}", io_msg(&path, &e)));
                self.errors.push(e);
                return None;
            }
            Ok(m) if m.is_dir() => {
                let e = self.recipe.err(
                    item,
                    format!("{what} {path} is a directory; directories go in `data`"),
                );
                self.errors.push(e);
                return None;
            }
            Ok(m) if !m.is_file() => {
                let e = self
                    .recipe
                    .err(item, format!("{what} {path} is not a regular file"));
                self.errors.push(e);
                return None;
            }
            Ok(_) => {}
        }
        match std::fs::read(&path) {
            Ok(b) => Some((path, b)),
            Err(e) => {
                let e = self
                    .recipe
                    .err(item, format!("{what} {}", io_msg(&path, &e)));
                self.errors.push(e);
                None
            }
        }
    }

    fn entry(&mut self) -> Option<(Vec<Loaded>, usize)> {
        let item = self.recipe.entry.clone();
        let (path, bytes) = self.read_item(&item, "entry")?;
        let info = match elf::parse(&bytes) {
            Ok(i) => Rc::new(i),
            Err(e) => {
                let e = self.recipe.err(
                    &item,
                    format!(
                        "entry {path} {e}; the entry must be a native program (for a script, make its interpreter the entry and put the script in `include`)"
                    ),
                );
                self.errors.push(e);
                return None;
            }
        };
        if !info.executable_type || info.library_only {
            let e = self.recipe.err(
                &item,
                format!(
                    "entry {path} is a shared library, not a program; make the program that loads it the entry and list it in `libs`"
                ),
            );
            self.errors.push(e);
            return None;
        }
        self.program(&item, &path, info)
    }

    fn include(&mut self, item: &Item) {
        let Some((path, bytes)) = self.read_item(item, "include") else {
            return;
        };
        match elf::parse(&bytes) {
            Ok(info) if info.executable_type && !info.library_only => {
                self.program(item, &path, Rc::new(info));
            }
            Ok(info) => {
                // A library: stored with its own closure, its directory on the library path.
                let real = match self.place(&path) {
                    Ok(r) => r,
                    Err(e) => {
                        let e = self.recipe.err(item, e);
                        self.errors.push(e);
                        return;
                    }
                };
                self.add_lib_dir(parent(&path));
                let mut loaded = vec![Loaded {
                    logical: real,
                    info: Rc::new(info),
                    loader: None,
                    names: vec![],
                    scanned: false,
                }];
                self.load_needed(item, &mut loaded, 0);
            }
            Err(_) => {
                if bytes.starts_with(b"#!") {
                    let line = bytes.split(|&c| c == b'\n').next().unwrap_or_default();
                    self.warn(format!(
                        "{path} is a script ({}): its interpreter is not bundled unless it is listed in `include`",
                        String::from_utf8_lossy(&line[..line.len().min(80)]).trim()
                    ));
                }
                if let Err(e) = self.place(&path) {
                    let e = self.recipe.err(item, e);
                    self.errors.push(e);
                }
            }
        }
    }

    fn lib(&mut self, item: &Item, ctx: &mut Option<(Vec<Loaded>, usize)>) {
        let Some((loaded, main)) = ctx.as_mut() else {
            return; // the entry failed: already reported
        };
        let main = *main;
        let abi = loaded[main].info.abi;
        match &item.path {
            None => {
                // A soname: found as the program's dlopen() would find it.
                self.need(item, loaded, main, &item.value, Some("libs"));
                let start = loaded.len().saturating_sub(1);
                self.load_needed(item, loaded, start);
            }
            Some(_) => {
                let Some((path, bytes)) = self.read_item(item, "libs:") else {
                    return;
                };
                let info = match elf::parse(&bytes) {
                    Ok(i) => i,
                    Err(e) => {
                        let e = self.recipe.err(item, format!("{path} {e}"));
                        self.errors.push(e);
                        return;
                    }
                };
                if info.abi != abi {
                    let e = self.recipe.err(
                        item,
                        format!(
                            "{path} is {}, the entry is {}",
                            info.abi.describe(),
                            abi.describe()
                        ),
                    );
                    self.errors.push(e);
                    return;
                }
                if let Err(e) = self.place(&path) {
                    let e = self.recipe.err(item, e);
                    self.errors.push(e);
                    return;
                }
                self.add_lib_dir(parent(&path));
                let mut names = vec![basename(&path).to_string()];
                if let Some(s) = &info.soname {
                    names.push(s.clone());
                }
                self.out.needed.insert(Needed {
                    by: loaded[main].logical.clone(),
                    name: info
                        .soname
                        .clone()
                        .unwrap_or_else(|| basename(&path).into()),
                    found: path.clone(),
                    via: "libs".into(),
                });
                loaded.push(Loaded {
                    logical: path,
                    info: Rc::new(info),
                    loader: Some(main),
                    names,
                    scanned: false,
                });
                let start = loaded.len() - 1;
                self.load_needed(item, loaded, start);
            }
        }
    }

    fn data(&mut self, item: &Item) {
        let Some(path) = item.path.clone() else {
            return;
        };
        if let Err(e) = std::fs::symlink_metadata(&path) {
            let e = self.recipe.err(item, format!("data {}", io_msg(&path, &e)));
            self.errors.push(e);
            return;
        }
        let real = match std::fs::canonicalize(&path) {
            Ok(r) => r,
            Err(e) => {
                let e = self.recipe.err(
                    item,
                    format!(
                        "data {path} is a broken symlink: {}",
                        crate::util::io_reason(&e)
                    ),
                );
                self.errors.push(e);
                return;
            }
        };
        let Some(real_s) = real.to_str().map(str::to_string) else {
            let e = self
                .recipe
                .err(item, format!("data {path}: the real path is not UTF-8"));
            self.errors.push(e);
            return;
        };
        if real_s != path {
            self.add_link(&path, relative_target(parent(&path), &real_s));
        }
        if let Err(e) = self.walk(&real_s) {
            let e = self.recipe.err(item, format!("data: {e}"));
            self.errors.push(e);
        }
    }

    fn walk(&mut self, path: &str) -> Result<(), String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_msg(path, &e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let t = std::fs::read_link(path).map_err(|e| io_msg(path, &e))?;
            let t = t
                .to_str()
                .ok_or_else(|| format!("{path}: the symlink's target is not UTF-8"))?;
            self.add_link(path, t.to_string());
        } else if ft.is_dir() {
            self.out.dirs.insert(path.to_string());
            let mut names = vec![];
            for e in std::fs::read_dir(path).map_err(|e| io_msg(path, &e))? {
                let e = e.map_err(|e| io_msg(path, &e))?;
                let n = e.file_name();
                let n = n
                    .to_str()
                    .ok_or_else(|| format!("{path}: a file name in it is not UTF-8"))?
                    .to_string();
                names.push(n);
            }
            names.sort();
            for n in names {
                self.walk(&format!("{}/{n}", path.trim_end_matches('/')))?;
            }
        } else if ft.is_file() {
            self.add_file(path, PathBuf::from(path), meta.mode());
        } else {
            return Err(format!(
                "{path} is a socket, fifo or device: only files, directories and symlinks can be bundled"
            ));
        }
        Ok(())
    }

    /// Paths that would have to be both a file and a directory.
    fn check_conflicts(&mut self) {
        let leaves: BTreeSet<&String> =
            self.out.files.keys().chain(self.out.links.keys()).collect();
        let mut bad = vec![];
        for p in self
            .out
            .files
            .keys()
            .chain(self.out.links.keys())
            .chain(self.out.dirs.iter())
        {
            let mut a = parent(p);
            while a != "/" {
                if leaves.contains(&a.to_string()) {
                    bad.push(format!(
                        "{a} is a file or symlink in the bundle, but {p} needs it to be a directory"
                    ));
                    break;
                }
                a = parent(a);
            }
        }
        for dir in &self.out.library_path {
            if dir.contains(':') {
                bad.push(format!(
                    "library directory {dir} contains ':', which the loader's --library-path cannot express"
                ));
            }
        }
        for b in bad {
            let e = self.recipe.err(&self.recipe.entry, b);
            self.errors.push(e);
        }
    }

    /// At run time the loader searches the library path before RUNPATH and the cache: warn when
    /// that would pick another file than the one resolved here.
    fn check_shadowing(&mut self) {
        let resolve_link = |c: &Closure, p: &str| -> String {
            let mut p = p.to_string();
            for _ in 0..40 {
                match c.links.get(&p) {
                    Some(t) if t.starts_with('/') => p = normalize(t).unwrap_or_default(),
                    Some(t) => p = normalize(&format!("{}/{t}", parent(&p))).unwrap_or_default(),
                    None => break,
                }
            }
            p
        };
        let mut warnings = vec![];
        for n in &self.out.needed {
            if n.via.contains("RPATH")
                || n.via.contains("already loaded")
                || n.via == "PT_INTERP"
                || n.via == "path"
                || n.via == "libs"
            {
                continue;
            }
            for d in &self.out.library_path {
                let cand = format!("{d}/{}", n.name);
                if self.out.files.contains_key(&cand) || self.out.links.contains_key(&cand) {
                    if resolve_link(&self.out, &cand) != resolve_link(&self.out, &n.found) {
                        warnings.push(format!(
                            "{} needs {}: resolved to {} ({}), but at run time the loader takes {cand} first (library path order)",
                            n.by, n.name, n.found, n.via
                        ));
                    }
                    break;
                }
            }
        }
        for w in warnings {
            self.warn(w);
        }
    }
}

/// Resolves a recipe into the set of files of its bundle, or every error found.
pub fn resolve(recipe: &Recipe, host: &Host) -> Result<Closure, Vec<RecipeError>> {
    let mut r = Resolver {
        recipe,
        host,
        out: Closure::default(),
        errors: vec![],
        parsed: HashMap::new(),
        warned: BTreeSet::new(),
    };
    let mut ctx = r.entry();
    for item in &recipe.include {
        r.include(item);
    }
    for item in &recipe.libs {
        r.lib(item, &mut ctx);
    }
    for item in &recipe.data {
        r.data(item);
    }
    r.check_conflicts();
    r.check_shadowing();
    if r.errors.is_empty() {
        Ok(r.out)
    } else {
        Err(r.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::recipe;

    const X64: Abi = Abi {
        class64: true,
        little: true,
        machine: 62,
    };

    /// An ELF header is all a search candidate needs (the resolver reads 64 bytes of it).
    fn header(class64: bool, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', if class64 { 2 } else { 1 }, 1, 1];
        h.resize(64, 0);
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    fn info(rpath: &[&str], runpath: &[&str], nodeflib: bool) -> Rc<ElfInfo> {
        Rc::new(ElfInfo {
            abi: X64,
            executable_type: true,
            library_only: false,
            interp: None,
            needed: vec![],
            rpath: rpath.iter().map(|s| s.to_string()).collect(),
            runpath: runpath.iter().map(|s| s.to_string()).collect(),
            soname: None,
            nodeflib,
        })
    }

    struct T(String);
    impl T {
        fn new(tag: &str) -> T {
            let d =
                std::env::temp_dir().join(format!("paddock-resolve-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            T(std::fs::canonicalize(&d)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string())
        }
        fn file(&self, rel: &str, bytes: &[u8]) -> String {
            let p = format!("{}/{rel}", self.0);
            std::fs::create_dir_all(parent(&p)).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }
    impl Drop for T {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn loaded(logical: &str, i: Rc<ElfInfo>, loader: Option<usize>) -> Loaded {
        Loaded {
            logical: logical.into(),
            info: i,
            loader,
            names: vec![],
            scanned: true,
        }
    }

    fn with_resolver<R>(host: &Host, f: impl FnOnce(&mut Resolver) -> R) -> R {
        let r =
            recipe::parse("t", Path::new("t.toml"), Path::new("/"), "entry = \"/x\"\n").unwrap();
        let mut res = Resolver {
            recipe: &r,
            host,
            out: Closure::default(),
            errors: vec![],
            parsed: HashMap::new(),
            warned: BTreeSet::new(),
        };
        f(&mut res)
    }

    #[test]
    fn runpath_with_origin_skips_other_abis() {
        let t = T::new("runpath");
        let prog = t.file("app/bin/prog", &header(true, 62));
        t.file("app/lib32/libx.so.1", &header(false, 3));
        let good = t.file("app/lib/libx.so.1", &header(true, 62));
        let host = Host {
            cache: Cache::default(),
        };
        with_resolver(&host, |r| {
            let l = vec![loaded(
                &prog,
                info(&[], &["$ORIGIN/../lib32", "$ORIGIN/../lib"], false),
                None,
            )];
            let hit = r.search(&l, 0, "libx.so.1").unwrap();
            assert_eq!(hit, (good.clone(), "RUNPATH".to_string(), false));
            let e = r.search(&l, 0, "libnope.so.1").unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "searched RUNPATH {}/app/lib32, RUNPATH {}/app/lib, /etc/ld.so.cache",
                    t.0, t.0
                )),
                "{e}"
            );
            assert!(e.ends_with("(LD_LIBRARY_PATH is ignored)"), "{e}");
            // The 32-bit candidate is named when nothing fits.
            let l = vec![loaded(&prog, info(&[], &["$ORIGIN/../lib32"], false), None)];
            let e = r.search(&l, 0, "libx.so.1").unwrap_err();
            assert!(
                e.contains(&format!(
                    "skipped {}/app/lib32/libx.so.1 (32-bit i386)",
                    t.0
                )),
                "{e}"
            );
        });
    }

    #[test]
    fn rpath_is_inherited_unless_runpath() {
        let t = T::new("rpath");
        let prog = t.file("bin/prog", &header(true, 62));
        let lib = t.file("l/liba.so.1", &header(true, 62));
        let y = t.file("r/liby.so.2", &header(true, 62));
        let z = t.file("u/liby.so.2", &header(true, 62));
        let host = Host {
            cache: Cache::default(),
        };
        with_resolver(&host, |r| {
            let rdir = format!("{}/r", t.0);
            // liba (no RPATH of its own) was loaded by prog, whose RPATH is searched too.
            let l = vec![
                loaded(&prog, info(&[&rdir], &[], false), None),
                loaded(&lib, info(&[], &[], false), Some(0)),
            ];
            let hit = r.search(&l, 1, "liby.so.2").unwrap();
            assert_eq!(hit, (y.clone(), format!("RPATH of {prog}"), true));
            // An absolute RPATH is a warning: the loader searches it before the bundle.
            assert!(
                r.out
                    .warnings
                    .iter()
                    .any(|w| w.contains(&format!("has RPATH {rdir}"))),
                "{:?}",
                r.out.warnings
            );
            // With a RUNPATH of its own, the RPATHs are not searched.
            let udir = format!("{}/u", t.0);
            let l = vec![
                loaded(&prog, info(&[&rdir], &[], false), None),
                loaded(&lib, info(&[], &[&udir], false), Some(0)),
            ];
            let hit = r.search(&l, 1, "liby.so.2").unwrap();
            assert_eq!(hit, (z.clone(), "RUNPATH".to_string(), true));
        });
    }

    #[test]
    fn cache_then_nodeflib() {
        let t = T::new("cache");
        let prog = t.file("bin/prog", &header(true, 62));
        let c32 = t.file("c32/libq.so.3", &header(false, 3));
        let c = t.file("c/libq.so.3", &header(true, 62));
        let cache = crate::bundle::ldcache::parse(&crate::bundle::ldcache::synth(
            &[(0x0003, "libq.so.3", &c32, 0), (0x0303, "libq.so.3", &c, 0)],
            0,
        ))
        .unwrap();
        let host = Host { cache };
        with_resolver(&host, |r| {
            let l = vec![loaded(&prog, info(&[], &[], false), None)];
            assert_eq!(
                r.search(&l, 0, "libq.so.3").unwrap(),
                (c.clone(), "ld.so.cache".to_string(), true)
            );
            let l = vec![loaded(&prog, info(&[], &[], true), None)];
            let e = r.search(&l, 0, "libq.so.3").unwrap_err();
            assert!(
                e.contains("DF_1_NODEFLIB") && !e.contains("/etc/ld.so.cache"),
                "{e}"
            );
        });
    }

    #[test]
    fn symlinks_become_relative_links_to_the_real_file() {
        let t = T::new("links");
        let real = t.file("usr/lib/libz.so.1.2.13", &header(true, 62));
        std::fs::create_dir_all(format!("{}/lib", t.0)).unwrap();
        std::os::unix::fs::symlink(
            "../usr/lib/libz.so.1.2.13",
            format!("{}/lib/libz.so.1", t.0),
        )
        .unwrap();
        let host = Host {
            cache: Cache::default(),
        };
        with_resolver(&host, |r| {
            let got = r.place(&format!("{}/lib/libz.so.1", t.0)).unwrap();
            assert_eq!(got, real);
            assert_eq!(
                r.out
                    .links
                    .get(&format!("{}/lib/libz.so.1", t.0))
                    .map(String::as_str),
                Some("../usr/lib/libz.so.1.2.13")
            );
            assert_eq!(
                r.out.files.get(&real).map(|s| s.mode & 0o222),
                Some(0),
                "stored read-only"
            );
            assert!(
                r.place(&format!("{}/lib", t.0))
                    .unwrap_err()
                    .contains("is a directory")
            );
        });
    }
}
