//! The recipe's entries, each checked with a message that says what to do: the entry program
//! and its closure (with its `PT_INTERP`), `include` (programs, libraries and scripts), `libs`
//! (resolved as the entry's dlopen() would, or given as files) and `data` (files, directories
//! and symlinks, walked as they are).

use super::{Loaded, Needed, Program, Resolver, io_msg};
use crate::bundle::elf::{self, ElfInfo};
use crate::bundle::recipe::Item;
use crate::bundle::{basename, normalize, parent, relative_target};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;

impl Resolver<'_> {
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

    pub(super) fn entry(&mut self) -> Option<(Vec<Loaded>, usize)> {
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

    pub(super) fn include(&mut self, item: &Item) {
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

    pub(super) fn lib(&mut self, item: &Item, ctx: &mut Option<(Vec<Loaded>, usize)>) {
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

    pub(super) fn data(&mut self, item: &Item) {
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
}
