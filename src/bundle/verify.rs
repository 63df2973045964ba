//! Checking a bundle's tree against its manifest.
//!
//! `full` re-reads everything (`paddock bundle verify`, and `build` before reusing a bundle
//! already in the store). `Cache` is what `paddock serve` runs before each start: a file is
//! hashed only when its identity (device, inode, size, mtime, ctime) is not one it has already
//! hashed, so the first start of a bundle reads its files once and later restarts cost a few
//! `stat` calls. Writing to a file changes its mtime and ctime (and ctime cannot be set back),
//! so a changed file is always hashed again. Directories are listed again when their identity
//! changes, so a file slipped into the tree (a library that would shadow a bundled one) is found
//! too.

use super::manifest::Bundle;
use super::short;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub links: usize,
    pub dirs: usize,
    pub bytes: u64,
    pub problems: Vec<String>,
}

fn expected_children(b: &Bundle) -> BTreeMap<String, BTreeSet<String>> {
    let m = &b.manifest;
    let mut dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    dirs.insert("/".into(), BTreeSet::new());
    let all = m
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(m.links.iter().map(|l| l.path.as_str()))
        .chain(m.dirs.iter().map(String::as_str));
    for p in all {
        let mut child = p;
        loop {
            let par = super::parent(child);
            let new = !dirs.contains_key(par);
            dirs.entry(par.to_string())
                .or_default()
                .insert(super::basename(child).to_string());
            if par == "/" || !new {
                break;
            }
            child = par;
        }
    }
    for d in &m.dirs {
        dirs.entry(d.clone()).or_default();
    }
    dirs
}

fn where_(b: &Bundle, path: &str) -> String {
    format!("{path} ({})", b.host(path).display())
}

/// Checks every file, link and directory of a bundle, hashing every file.
pub fn full(b: &Bundle) -> Report {
    let mut r = Report::default();
    for f in &b.manifest.files {
        r.files += 1;
        let host = b.host(&f.path);
        match std::fs::symlink_metadata(&host) {
            Err(e) => r.problems.push(format!(
                "{}: {}",
                where_(b, &f.path),
                crate::util::io_reason(&e)
            )),
            Ok(md) if !md.is_file() => r
                .problems
                .push(format!("{} is not a regular file", where_(b, &f.path))),
            Ok(md) => {
                if md.permissions().mode() & 0o7777 != f.mode {
                    r.problems.push(format!(
                        "{} has mode {:04o}, the manifest says {:04o}",
                        where_(b, &f.path),
                        md.permissions().mode() & 0o7777,
                        f.mode
                    ));
                }
                match super::sha256_file(&host) {
                    Err(e) => r.problems.push(format!(
                        "{}: {}",
                        where_(b, &f.path),
                        crate::util::io_reason(&e)
                    )),
                    Ok((sha, size)) => {
                        r.bytes += size;
                        if sha != f.sha256 || size != f.size {
                            r.problems.push(format!(
                                "{} was modified: its sha256 is {sha} ({size} bytes), the manifest says {} ({} bytes)",
                                where_(b, &f.path),
                                f.sha256,
                                f.size
                            ));
                        }
                    }
                }
            }
        }
    }
    for l in &b.manifest.links {
        r.links += 1;
        match std::fs::read_link(b.host(&l.path)) {
            Ok(t) if t.as_os_str() == std::ffi::OsStr::new(&l.target) => {}
            Ok(t) => r.problems.push(format!(
                "{} points to {}, the manifest says {}",
                where_(b, &l.path),
                t.display(),
                l.target
            )),
            Err(e) => r.problems.push(format!(
                "{} should be a symlink to {}: {}",
                where_(b, &l.path),
                l.target,
                crate::util::io_reason(&e)
            )),
        }
    }
    for (dir, children) in expected_children(b) {
        r.dirs += 1;
        if let Err(p) = check_dir(b, &dir, &children) {
            r.problems.push(p);
        }
    }
    r
}

fn check_dir(b: &Bundle, dir: &str, children: &BTreeSet<String>) -> Result<(), String> {
    let host = b.host(dir);
    let rd = std::fs::read_dir(&host)
        .map_err(|e| format!("{}: {}", where_(b, dir), crate::util::io_reason(&e)))?;
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !children.contains(&n) {
            let p = if dir == "/" {
                format!("/{n}")
            } else {
                format!("{dir}/{n}")
            };
            return Err(format!(
                "{} is not in the manifest: something was added to the bundle's tree",
                where_(b, &p)
            ));
        }
    }
    Ok(())
}

/// File identity: changes whenever the content may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ident {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn ident(md: &std::fs::Metadata) -> ((u64, u64), Ident) {
    (
        (md.dev(), md.ino()),
        Ident {
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        },
    )
}

struct Known {
    manifest: ((u64, u64), Ident),
    bundle: Arc<Bundle>,
    children: BTreeMap<String, BTreeSet<String>>,
}

/// The check before each start, remembering what it has already hashed (see the module docs).
#[derive(Default)]
pub struct Cache {
    files: HashMap<(u64, u64), (Ident, String)>,
    dirs: HashMap<(u64, u64), Ident>,
    bundles: HashMap<PathBuf, Known>,
    /// Files hashed so far (for tests and benchmarks).
    pub hashed: u64,
}

impl Cache {
    /// Checks the bundle in `dir`, which must have id `id`. The error names the file and what
    /// is wrong with it.
    pub fn check(&mut self, dir: &Path, id: &str) -> Result<(), String> {
        let mf = dir.join(super::manifest::FILE_NAME);
        let md = std::fs::metadata(&mf)
            .map_err(|e| format!("{}: {}", mf.display(), crate::util::io_reason(&e)))?;
        let mid = ident(&md);
        let fresh = self.bundles.get(dir).is_none_or(|k| k.manifest != mid);
        if fresh {
            let b = Bundle::open(dir)?;
            if b.id != id {
                return Err(format!(
                    "{}: its sha256 is now {}, but the app was loaded with bundle {}: the manifest was changed; rebuild the bundle and run `paddock update`",
                    mf.display(),
                    short(&b.id),
                    short(id)
                ));
            }
            let children = expected_children(&b);
            self.bundles.insert(
                dir.to_path_buf(),
                Known {
                    manifest: mid,
                    bundle: Arc::new(b),
                    children,
                },
            );
        }
        let Some(k) = self.bundles.get(dir) else {
            return Err("internal: bundle cache".into());
        };
        let b = k.bundle.clone();
        let label = format!("bundle {} ({})", b.manifest.name, short(&b.id));
        let refuse = |what: String| {
            format!(
                "{label}: {what}; not starting it: restore the file or rebuild the bundle (`paddock bundle build`), then `paddock start` the app"
            )
        };
        for f in &b.manifest.files {
            let host = b.host(&f.path);
            let md = std::fs::symlink_metadata(&host).map_err(|e| {
                refuse(format!(
                    "{} is missing: {}",
                    where_(&b, &f.path),
                    crate::util::io_reason(&e)
                ))
            })?;
            if !md.is_file() {
                return Err(refuse(format!(
                    "{} is not a regular file",
                    where_(&b, &f.path)
                )));
            }
            if md.permissions().mode() & 0o7777 != f.mode {
                return Err(refuse(format!(
                    "{} has mode {:04o}, the manifest says {:04o}",
                    where_(&b, &f.path),
                    md.permissions().mode() & 0o7777,
                    f.mode
                )));
            }
            let (key, id_now) = ident(&md);
            if self
                .files
                .get(&key)
                .is_some_and(|(i, sha)| *i == id_now && *sha == f.sha256)
            {
                continue;
            }
            if md.len() != f.size {
                return Err(refuse(format!(
                    "{} was modified: it has {} bytes, the manifest says {}",
                    where_(&b, &f.path),
                    md.len(),
                    f.size
                )));
            }
            let (sha, _) = super::sha256_file(&host).map_err(|e| {
                refuse(format!(
                    "{}: {}",
                    where_(&b, &f.path),
                    crate::util::io_reason(&e)
                ))
            })?;
            self.hashed += 1;
            if sha != f.sha256 {
                self.files.remove(&key);
                return Err(refuse(format!(
                    "{} was modified: its sha256 is {}…, the manifest says {}…",
                    where_(&b, &f.path),
                    short(&sha),
                    short(&f.sha256)
                )));
            }
            self.files.insert(key, (id_now, sha));
        }
        for l in &b.manifest.links {
            match std::fs::read_link(b.host(&l.path)) {
                Ok(t) if t.as_os_str() == std::ffi::OsStr::new(&l.target) => {}
                _ => {
                    return Err(refuse(format!(
                        "{} is not the symlink to {} that the manifest lists",
                        where_(&b, &l.path),
                        l.target
                    )));
                }
            }
        }
        let children = &self.bundles[dir].children;
        for (d, names) in children {
            let md = std::fs::symlink_metadata(b.host(d)).map_err(|e| {
                refuse(format!(
                    "directory {}: {}",
                    where_(&b, d),
                    crate::util::io_reason(&e)
                ))
            })?;
            let (key, id_now) = ident(&md);
            if self.dirs.get(&key) == Some(&id_now) {
                continue;
            }
            check_dir(&b, d, names).map_err(refuse)?;
            self.dirs.insert(key, id_now);
        }
        Ok(())
    }
}
