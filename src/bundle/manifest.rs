//! `manifest.toml`: every path of a bundle with its sha256, mode and size, the symlinks and
//! directories, the programs with their interpreters, the loader's library path, and which
//! library satisfied which `DT_NEEDED`. The bundle id is the sha256 of this file's bytes, so the
//! text is written by hand in one canonical form: sorted, no timestamps, no host-specific store
//! paths. The same recipe on the same host gives the same bytes, hence the same id.

use super::resolve::{Closure, Needed};
use super::{normalize, parent, toml_str};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toml::Spanned;

pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "manifest.toml";
/// The materialised tree of a bundle, inside its directory.
pub const ROOT_DIR: &str = "root";
const MAX_MANIFEST: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub mode: u32,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramEntry {
    pub path: String,
    pub interpreter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    /// The recipe's entry as written (may be a symlink in the bundle).
    pub entry: String,
    pub library_path: Vec<String>,
    pub programs: Vec<ProgramEntry>,
    pub files: Vec<FileEntry>,
    pub links: Vec<LinkEntry>,
    pub dirs: Vec<String>,
    pub needed: Vec<Needed>,
}

impl Manifest {
    /// The manifest of a resolved closure whose files have been hashed (`hashes`: path →
    /// (sha256, size)).
    pub fn new(
        name: &str,
        entry: &str,
        c: &Closure,
        hashes: &BTreeMap<String, (String, u64)>,
    ) -> Manifest {
        Manifest {
            name: name.into(),
            entry: entry.into(),
            library_path: c.library_path.clone(),
            programs: c
                .programs
                .values()
                .map(|p| ProgramEntry {
                    path: p.path.clone(),
                    interpreter: p.interpreter.clone(),
                })
                .collect(),
            files: c
                .files
                .iter()
                .map(|(p, s)| {
                    let (sha, size) = hashes.get(p).cloned().unwrap_or_default();
                    FileEntry {
                        path: p.clone(),
                        sha256: sha,
                        mode: s.mode,
                        size,
                    }
                })
                .collect(),
            links: c
                .links
                .iter()
                .map(|(p, t)| LinkEntry {
                    path: p.clone(),
                    target: t.clone(),
                })
                .collect(),
            dirs: c.dirs.iter().cloned().collect(),
            needed: c.needed.iter().cloned().collect(),
        }
        .canonical()
    }

    /// Sorted in the one order the text is written in.
    fn canonical(mut self) -> Manifest {
        self.programs.sort_by(|a, b| a.path.cmp(&b.path));
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        self.links.sort_by(|a, b| a.path.cmp(&b.path));
        self.dirs.sort();
        self.dirs.dedup();
        self.needed.sort();
        self.needed.dedup();
        self
    }

    /// The canonical text (whose sha256 is the bundle id).
    pub fn to_toml(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(256 + self.files.len() * 200 + self.needed.len() * 200);
        s.push_str("# paddock bundle manifest: the bundle id is the sha256 of this file.\n");
        let _ = writeln!(s, "format = {FORMAT}");
        let _ = writeln!(s, "name = {}", toml_str(&self.name));
        let _ = writeln!(s, "entry = {}", toml_str(&self.entry));
        s.push_str("library_path = [");
        for d in &self.library_path {
            let _ = write!(s, "\n  {},", toml_str(d));
        }
        s.push_str(if self.library_path.is_empty() {
            "]\n"
        } else {
            "\n]\n"
        });
        for p in &self.programs {
            let _ = write!(s, "\n[[program]]\npath = {}\n", toml_str(&p.path));
            if let Some(i) = &p.interpreter {
                let _ = writeln!(s, "interpreter = {}", toml_str(i));
            }
        }
        for f in &self.files {
            let _ = write!(
                s,
                "\n[[file]]\npath = {}\nsha256 = \"{}\"\nmode = \"{:04o}\"\nsize = {}\n",
                toml_str(&f.path),
                f.sha256,
                f.mode,
                f.size
            );
        }
        for l in &self.links {
            let _ = write!(
                s,
                "\n[[link]]\npath = {}\ntarget = {}\n",
                toml_str(&l.path),
                toml_str(&l.target)
            );
        }
        for d in &self.dirs {
            let _ = write!(s, "\n[[dir]]\npath = {}\n", toml_str(d));
        }
        for n in &self.needed {
            let _ = write!(
                s,
                "\n[[needed]]\nby = {}\nname = {}\nfound = {}\nvia = {}\n",
                toml_str(&n.by),
                toml_str(&n.name),
                toml_str(&n.found),
                toml_str(&n.via)
            );
        }
        s
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    pub fn link(&self, path: &str) -> Option<&LinkEntry> {
        self.links
            .binary_search_by(|l| l.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.links[i])
    }

    /// Follows the bundle's own symlinks from `path` to a file of the bundle (like the kernel
    /// would inside the tree). `None` if it leads nowhere inside the bundle.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut p = normalize(path)?;
        for _ in 0..40 {
            if self.file(&p).is_some() {
                return Some(p);
            }
            // A symlink on the path itself, or on one of its directories.
            let mut hit = None;
            let mut a = p.as_str();
            while a != "/" {
                if let Some(l) = self.link(a) {
                    hit = Some((a.to_string(), l.target.clone()));
                    break;
                }
                a = parent(a);
            }
            let (at, target) = hit?;
            let rest = &p[at.len()..];
            let base = if target.starts_with('/') {
                target
            } else {
                format!("{}/{target}", parent(&at))
            };
            p = normalize(&format!("{base}{rest}"))?;
        }
        None
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: Spanned<u32>,
    name: Spanned<String>,
    entry: Spanned<String>,
    #[serde(default)]
    library_path: Vec<Spanned<String>>,
    #[serde(default)]
    program: Vec<Spanned<RawProgram>>,
    #[serde(default)]
    file: Vec<Spanned<RawFile>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
    #[serde(default)]
    dir: Vec<Spanned<RawDir>>,
    #[serde(default)]
    needed: Vec<Spanned<Needed2>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    path: String,
    interpreter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    sha256: String,
    mode: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    path: String,
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Needed2 {
    by: String,
    name: String,
    found: String,
    via: String,
}

/// Parses and validates a manifest's text; errors are `FILE:LINE:COL: message`.
pub fn parse(file: &Path, src: &str) -> Result<Manifest, String> {
    let at = |span: std::ops::Range<usize>, msg: String| {
        let (l, c) = crate::diag::line_col(src, span.start);
        format!("{}:{l}:{c}: {msg}", file.display())
    };
    let raw: RawManifest = toml::from_str(src).map_err(|e| match e.span() {
        Some(sp) => at(sp, e.message().trim().to_string()),
        None => format!("{}: {}", file.display(), e.message().trim()),
    })?;
    if *raw.format.get_ref() != FORMAT {
        return Err(at(
            raw.format.span(),
            format!(
                "format {} is not supported by this paddock (it reads format {FORMAT}); rebuild the bundle",
                raw.format.get_ref()
            ),
        ));
    }
    super::recipe::valid_name(raw.name.get_ref()).map_err(|e| at(raw.name.span(), e))?;
    let path_ok = |p: &str| -> Result<(), String> {
        if p.contains('\0') {
            return Err(format!("path {p:?} contains a NUL byte"));
        }
        match normalize(p) {
            Some(n) if n == p && p != "/" => Ok(()),
            _ => Err(format!(
                "path {p:?} is not an absolute, normalised path inside the bundle"
            )),
        }
    };
    let mut m = Manifest {
        name: raw.name.get_ref().clone(),
        entry: raw.entry.get_ref().clone(),
        library_path: vec![],
        programs: vec![],
        files: vec![],
        links: vec![],
        dirs: vec![],
        needed: vec![],
    };
    path_ok(&m.entry).map_err(|e| at(raw.entry.span(), format!("entry: {e}")))?;
    for d in &raw.library_path {
        path_ok(d.get_ref()).map_err(|e| at(d.span(), format!("library_path: {e}")))?;
        if d.get_ref().contains(':') {
            return Err(at(
                d.span(),
                "library_path: a directory may not contain ':'".into(),
            ));
        }
        m.library_path.push(d.get_ref().clone());
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut dup = |p: &str| seen.insert(p.to_string());
    for f in &raw.file {
        let (sp, f) = (f.span(), f.get_ref());
        path_ok(&f.path).map_err(|e| at(sp.clone(), format!("file: {e}")))?;
        if !super::is_id(&f.sha256) {
            return Err(at(
                sp,
                format!("file {}: sha256 must be 64 lowercase hex digits", f.path),
            ));
        }
        let mode = u32::from_str_radix(&f.mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                at(
                    sp.clone(),
                    format!(
                        "file {}: mode {:?} is not an octal permission like \"0555\"",
                        f.path, f.mode
                    ),
                )
            })?;
        if !dup(&f.path) {
            return Err(at(sp, format!("{} is listed twice", f.path)));
        }
        m.files.push(FileEntry {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
            mode,
            size: f.size,
        });
    }
    for l in &raw.link {
        let (sp, l) = (l.span(), l.get_ref());
        path_ok(&l.path).map_err(|e| at(sp.clone(), format!("link: {e}")))?;
        if l.target.is_empty() || l.target.contains('\0') {
            return Err(at(sp, format!("link {}: empty or invalid target", l.path)));
        }
        if !dup(&l.path) {
            return Err(at(sp, format!("{} is listed twice", l.path)));
        }
        m.links.push(LinkEntry {
            path: l.path.clone(),
            target: l.target.clone(),
        });
    }
    for d in &raw.dir {
        let (sp, d) = (d.span(), d.get_ref());
        path_ok(&d.path).map_err(|e| at(sp.clone(), format!("dir: {e}")))?;
        if !dup(&d.path) {
            return Err(at(sp, format!("{} is listed twice", d.path)));
        }
        m.dirs.push(d.path.clone());
    }
    let sorted = |v: Vec<&str>| v.windows(2).all(|w| w[0] < w[1]);
    if !sorted(m.files.iter().map(|f| f.path.as_str()).collect())
        || !sorted(m.links.iter().map(|f| f.path.as_str()).collect())
    {
        return Err(format!(
            "{}: entries are not in canonical (sorted) order: the file was edited",
            file.display()
        ));
    }
    let leaves: BTreeSet<&str> = m
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(m.links.iter().map(|l| l.path.as_str()))
        .collect();
    for p in leaves
        .iter()
        .copied()
        .chain(m.dirs.iter().map(String::as_str))
    {
        let mut a = parent(p);
        while a != "/" {
            if leaves.contains(a) {
                return Err(format!(
                    "{}: {a} is a file or link, but {p} needs it to be a directory",
                    file.display()
                ));
            }
            a = parent(a);
        }
    }
    for p in &raw.program {
        let (sp, p) = (p.span(), p.get_ref());
        if m.file(&p.path).is_none() {
            return Err(at(
                sp,
                format!("program {} is not a file of the bundle", p.path),
            ));
        }
        if let Some(i) = &p.interpreter
            && m.resolve(i).is_none()
        {
            return Err(at(
                sp,
                format!(
                    "program {}: its interpreter {i} is not in the bundle",
                    p.path
                ),
            ));
        }
        m.programs.push(ProgramEntry {
            path: p.path.clone(),
            interpreter: p.interpreter.clone(),
        });
    }
    match m.resolve(&m.entry) {
        Some(e) if m.programs.iter().any(|p| p.path == e) => {}
        _ => {
            return Err(at(
                raw.entry.span(),
                format!("entry {} is not a program of the bundle", m.entry),
            ));
        }
    }
    for n in &raw.needed {
        let (sp, n) = (n.span(), n.get_ref());
        if m.resolve(&n.found).is_none() {
            return Err(at(
                sp,
                format!("needed: {} (for {}) is not in the bundle", n.found, n.by),
            ));
        }
        m.needed.push(Needed {
            by: n.by.clone(),
            name: n.name.clone(),
            found: n.found.clone(),
            via: n.via.clone(),
        });
    }
    Ok(m)
}

/// A bundle on disk: its directory (`manifest.toml` and the tree under `root/`), its id and its
/// parsed manifest.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    /// Reads a bundle directory. Its id is the sha256 of its manifest; when the directory is
    /// named by an id (as in a store), they must agree.
    pub fn open(dir: &Path) -> Result<Bundle, String> {
        let file = dir.join(FILE_NAME);
        let meta = std::fs::metadata(&file)
            .map_err(|e| format!("{}: {}", file.display(), crate::util::io_reason(&e)))?;
        if meta.len() > MAX_MANIFEST {
            return Err(format!("{}: larger than 64 MiB", file.display()));
        }
        let bytes = std::fs::read(&file)
            .map_err(|e| format!("{}: {}", file.display(), crate::util::io_reason(&e)))?;
        let id = super::sha256_bytes(&bytes);
        if let Some(n) = dir.file_name().and_then(|n| n.to_str())
            && super::is_id(n)
            && n != id
        {
            return Err(format!(
                "{}: its sha256 is {id}, but the bundle is {n}: the manifest was changed after the bundle was built; rebuild it",
                file.display()
            ));
        }
        let src = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", file.display()))?;
        let manifest = parse(&file, &src)?;
        Ok(Bundle {
            id,
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join(ROOT_DIR)
    }

    /// Where a bundle path is on the host.
    pub fn host(&self, path: &str) -> PathBuf {
        super::in_root(&self.root(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::resolve::{Program, Source};

    fn closure(order: bool) -> (Closure, BTreeMap<String, (String, u64)>) {
        let mut c = Closure::default();
        let mut files = vec![
            ("/usr/bin/prog", 0o555),
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", 0o555),
            ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o555),
            ("/etc/prog/conf \"quoted\"", 0o444),
        ];
        if order {
            files.reverse();
        }
        let mut hashes = BTreeMap::new();
        for (p, m) in files {
            c.files.insert(
                p.into(),
                Source {
                    host: PathBuf::from(p),
                    mode: m,
                },
            );
            hashes.insert(
                p.to_string(),
                (crate::bundle::sha256_bytes(p.as_bytes()), 7),
            );
        }
        c.links.insert(
            "/lib64/ld-linux-x86-64.so.2".into(),
            "../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
        );
        c.links.insert(
            "/lib/x86_64-linux-gnu/libc.so.6".into(),
            "../../usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        );
        c.dirs.insert("/etc/prog".into());
        c.programs.insert(
            "/usr/bin/prog".into(),
            Program {
                path: "/usr/bin/prog".into(),
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            },
        );
        let n = [
            (
                "libc.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "ld.so.cache",
            ),
            (
                "/lib64/ld-linux-x86-64.so.2",
                "/lib64/ld-linux-x86-64.so.2",
                "PT_INTERP",
            ),
        ];
        let n: Vec<_> = if order {
            n.iter().rev().collect()
        } else {
            n.iter().collect()
        };
        for (name, found, via) in n {
            c.needed.insert(Needed {
                by: "/usr/bin/prog".into(),
                name: (*name).into(),
                found: (*found).into(),
                via: (*via).into(),
            });
        }
        c.library_path = vec!["/lib/x86_64-linux-gnu".into()];
        (c, hashes)
    }

    #[test]
    fn deterministic_and_round_trips() {
        let (a, ha) = closure(false);
        let (b, hb) = closure(true);
        let ma = Manifest::new("prog", "/usr/bin/prog", &a, &ha);
        let mb = Manifest::new("prog", "/usr/bin/prog", &b, &hb);
        let (ta, tb) = (ma.to_toml(), mb.to_toml());
        assert_eq!(ta, tb, "insertion order must not matter");
        assert_eq!(
            crate::bundle::sha256_bytes(ta.as_bytes()),
            crate::bundle::sha256_bytes(tb.as_bytes())
        );
        assert!(!ta.contains("/var/lib"), "no store paths in the manifest");
        let back = parse(Path::new("m.toml"), &ta).unwrap();
        assert_eq!(back, ma);
        assert_eq!(back.to_toml(), ta, "parse + write is the identity");
        assert_eq!(
            back.resolve("/lib64/ld-linux-x86-64.so.2").as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(back.resolve("/lib/x86_64-linux-gnu/libnope.so"), None);
        assert_eq!(back.file("/usr/bin/prog").map(|f| f.mode), Some(0o555));
        assert!(ta.contains("mode = \"0444\""), "{ta}");
    }

    #[test]
    fn bad_manifests_are_refused_precisely() {
        let (a, ha) = closure(false);
        let good = Manifest::new("prog", "/usr/bin/prog", &a, &ha).to_toml();
        let f = Path::new("/s/ID/manifest.toml");
        let bad = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            parse(f, &good.replacen(from, to, 1)).unwrap_err()
        };
        let e = bad("format = 1", "format = 2");
        assert!(
            e.starts_with("/s/ID/manifest.toml:2:10: format 2 is not supported"),
            "{e}"
        );
        let e = bad("\nsize = 7", "\nsize = 7\ncolor = 1");
        assert!(e.contains("unknown field `color`"), "{e}");
        let e = bad("sha256 = \"", "sha256 = \"x");
        assert!(e.contains("sha256 must be 64 lowercase hex digits"), "{e}");
        let e = bad("mode = \"0555\"", "mode = \"9\"");
        assert!(e.contains("not an octal permission"), "{e}");
        let e = bad(
            "path = \"/usr/bin/prog\"\nsha256",
            "path = \"/usr/../../etc/passwd\"\nsha256",
        );
        assert!(e.contains("not an absolute, normalised path"), "{e}");
        let e = bad("entry = \"/usr/bin/prog\"", "entry = \"/usr/bin/other\"");
        assert!(e.contains("entry /usr/bin/other is not a program"), "{e}");
        let e = bad(
            "interpreter = \"/lib64/ld-linux-x86-64.so.2\"",
            "interpreter = \"/lib64/ld.so\"",
        );
        assert!(
            e.contains("interpreter /lib64/ld.so is not in the bundle"),
            "{e}"
        );
        let e = bad(
            "[[dir]]\npath = \"/etc/prog\"",
            "[[dir]]\npath = \"/usr/bin/prog/x\"",
        );
        assert!(e.contains("needs it to be a directory"), "{e}");
        let e = parse(f, "format = 1\n").unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }
}
