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
//!
//! Layout: this file holds the closure's types, the resolver's bookkeeping (placing files and
//! links, parsing ELF files once), the final checks and [`resolve`]; `search` is the loader's
//! lookup of one needed name, `items` the handling of each kind of recipe entry (entry,
//! `include`, `libs`, `data`).

mod items;
mod search;

use super::elf::{self, ElfInfo};
use super::ldcache::Cache;
use super::recipe::{Recipe, RecipeError};
use super::{normalize, parent, relative_target};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
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
}

impl Resolver<'_> {
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
