//! The loader's lookup, as glibc's `ld.so` does it on this host: one needed name searched in a
//! path, `DT_RPATH` up the loader chain, `DT_RUNPATH`, `/etc/ld.so.cache` and the default
//! directories (skipping files of another ABI), and the breadth-first walk over `DT_NEEDED`
//! that records which library satisfied which name and how.

use super::{Loaded, Needed, Resolver, io_msg};
use crate::bundle::elf::{self, Abi};
use crate::bundle::recipe::Item;
use crate::bundle::{normalize, parent};
use std::path::Path;

impl Resolver<'_> {
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
            searched.push(crate::bundle::ldcache::DEFAULT_CACHE.into());
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
    pub(super) fn load_needed(&mut self, item: &Item, loaded: &mut Vec<Loaded>, start: usize) {
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
    pub(super) fn need(
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
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::elf::ElfInfo;
    use crate::bundle::ldcache::Cache;
    use crate::bundle::recipe;
    use crate::bundle::resolve::{Closure, Host};
    use std::collections::{BTreeSet, HashMap};
    use std::rc::Rc;

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
