//! Running an app from a bundle (`isolation = "bundle"`).
//!
//! App keys: `bundle = "NAME" | "ID" | "/path/to/bundle"` and `launch = "loader"` (default) or
//! `"ld_library_path"`. `command[0]` names a program of the bundle, by its path in the bundle
//! (`"/usr/sbin/nginx"`) or its file name (`"nginx"`). Resolved when the app file is loaded, so a
//! rebuilt bundle (a new id behind the same name) shows up as a change in `reread`/`update`.
//!
//! - `loader`: paddock executes the bundle's own ELF interpreter:
//!   `ld.so [--inhibit-cache] --library-path <bundle dirs> --argv0 <command[0]> <program> args…`.
//!   The host's loader, `/etc/ld.so.cache` and library directories play no part, and nothing is
//!   put in the environment, so programs the app runs are not affected. `/proc/PID/exe` is the
//!   loader, though: a program that re-executes itself through it loses its arguments.
//! - `ld_library_path`: paddock executes the program itself with `LD_LIBRARY_PATH` set to the
//!   bundle's directories. The kernel then loads the interpreter named in the program
//!   (`PT_INTERP`) from the host, and every child inherits the variable: the old trick, for
//!   programs that re-execute `/proc/self/exe`.
//!
//! In both modes `LD_PRELOAD` and `LD_LIBRARY_PATH` inherited from paddock are not passed on
//! (an app's own `env` may still set them), and the app gets `PADDOCK_BUNDLE` (the tree) and
//! `PADDOCK_BUNDLE_ID`.

use super::manifest::{Bundle, Manifest};
use super::store::Store;
use super::{basename, short};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LaunchMode {
    #[default]
    Loader,
    LdLibraryPath,
}

/// Where and how an app's program runs from its bundle; part of the app's spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleLaunch {
    /// The `bundle` key as written.
    pub reference: String,
    pub name: String,
    pub id: String,
    pub dir: PathBuf,
    pub mode: LaunchMode,
    /// The program (its real path in the bundle).
    pub program: String,
    /// Its interpreter (real path in the bundle); `None` for a static program.
    pub interpreter: Option<String>,
    pub library_path: Vec<String>,
}

/// What to execute: the path, argv, variables to set and variables of paddock's environment
/// to leave out.
pub struct ExecPlan {
    pub path: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub unset: &'static [&'static str],
}

/// Variables of paddock's own environment that never reach a bundled app.
pub const UNSET: &[&str] = &["LD_LIBRARY_PATH", "LD_PRELOAD"];

/// Which app key an error is about.
pub type KeyError = (&'static str, String);

pub fn parse_mode(s: &str) -> Result<LaunchMode, String> {
    match s {
        "loader" => Ok(LaunchMode::Loader),
        "ld_library_path" => Ok(LaunchMode::LdLibraryPath),
        _ => Err(format!(
            "unknown launch mode \"{s}\"; expected \"loader\" (the default: the bundle's own ELF interpreter) or \"ld_library_path\""
        )),
    }
}

/// The program `command0` names in the bundle: a path in the bundle (followed through the
/// bundle's symlinks) or a file name.
pub fn find_program(m: &Manifest, command0: &str) -> Result<String, String> {
    let programs = || {
        m.programs
            .iter()
            .map(|p| p.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if command0.starts_with('/') {
        return match m.resolve(command0) {
            Some(p) if m.programs.iter().any(|x| x.path == p) => Ok(p),
            Some(p) => Err(format!(
                "{command0} is in the bundle ({p}) but is not one of its programs ({}); add it to the recipe's `entry` or `include`",
                programs()
            )),
            None => Err(format!(
                "{command0} is not in the bundle; its programs are {}",
                programs()
            )),
        };
    }
    if command0.contains('/') {
        return Err(format!(
            "\"{command0}\" is a relative path; name the program by its path in the bundle ({}) or its file name",
            programs()
        ));
    }
    let is_program = |p: &String| m.programs.iter().any(|x| &x.path == p);
    let mut hits: Vec<String> = m
        .programs
        .iter()
        .filter(|p| basename(&p.path) == command0)
        .map(|p| p.path.clone())
        .chain(
            m.links
                .iter()
                .filter(|l| basename(&l.path) == command0)
                .filter_map(|l| m.resolve(&l.path))
                .filter(is_program),
        )
        .collect();
    hits.sort();
    hits.dedup();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(format!(
            "\"{command0}\" is not a program of the bundle; its programs are {}",
            programs()
        )),
        _ => Err(format!(
            "\"{command0}\" names {} programs of the bundle ({}); give the path",
            hits.len(),
            hits.join(", ")
        )),
    }
}

impl BundleLaunch {
    /// Resolves the app keys against the store set with `super::set_store`.
    pub fn resolve(
        reference: &str,
        launch: Option<&str>,
        command0: &str,
    ) -> Result<BundleLaunch, KeyError> {
        let mode = match launch {
            None => LaunchMode::Loader,
            Some(s) => parse_mode(s).map_err(|e| ("launch", e))?,
        };
        if reference.contains('/') && !reference.starts_with('/') {
            return Err((
                "bundle",
                format!(
                    "\"{reference}\" is a relative path; give a bundle directory as an absolute path, or a name or id"
                ),
            ));
        }
        let store = Store::new(&super::store_dir());
        let b: Bundle = store.find(reference).map_err(|e| ("bundle", e))?;
        Self::from_bundle(&b, reference, mode, command0)
    }

    /// The launch of `command0` from an opened bundle.
    pub fn from_bundle(
        b: &Bundle,
        reference: &str,
        mode: LaunchMode,
        command0: &str,
    ) -> Result<BundleLaunch, KeyError> {
        let m = &b.manifest;
        let program = find_program(m, command0).map_err(|e| {
            (
                "command",
                format!("bundle {} ({}): {e}", m.name, short(&b.id)),
            )
        })?;
        let interpreter = m
            .programs
            .iter()
            .find(|p| p.path == program)
            .and_then(|p| p.interpreter.as_deref())
            .and_then(|i| m.resolve(i));
        let dir = std::fs::canonicalize(&b.dir).unwrap_or(b.dir.clone());
        Ok(BundleLaunch {
            reference: reference.to_string(),
            name: m.name.clone(),
            id: b.id.clone(),
            dir,
            mode,
            program,
            interpreter,
            library_path: m.library_path.clone(),
        })
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join(super::manifest::ROOT_DIR)
    }

    /// Where a path of the bundle is when the app runs: in the bundle's tree on the host, or
    /// at the path itself inside a sandbox (whose root is made of the bundle).
    fn at(&self, path: &str, inside: bool) -> PathBuf {
        if inside {
            PathBuf::from(path)
        } else {
            super::in_root(&self.root(), path)
        }
    }

    fn library_path_value(&self, inside: bool) -> OsString {
        let mut v: Vec<u8> = vec![];
        for (i, d) in self.library_path.iter().enumerate() {
            if i > 0 {
                v.push(b':');
            }
            v.extend(self.at(d, inside).into_os_string().into_vec());
        }
        OsString::from_vec(v)
    }

    /// What to execute for `command` (argv as written in the app file); `inside`: with the
    /// paths a sandboxed app sees.
    pub fn exec_plan(
        &self,
        command: &[String],
        app_env: &BTreeMap<String, String>,
        inside: bool,
    ) -> ExecPlan {
        let program = self.at(&self.program, inside);
        let argv0 = command.first().cloned().unwrap_or_default();
        let rest = command.iter().skip(1).map(OsString::from);
        let mut env = vec![
            (
                "PADDOCK_BUNDLE".to_string(),
                if inside {
                    "/".into()
                } else {
                    self.root().into_os_string()
                },
            ),
            ("PADDOCK_BUNDLE_ID".to_string(), self.id.clone().into()),
        ];
        let (path, argv) = match (&self.interpreter, self.mode) {
            (Some(interp), LaunchMode::Loader) => {
                let mut argv: Vec<OsString> = vec![argv0.clone().into()];
                // Only glibc's loader knows --inhibit-cache (musl's has no cache).
                if basename(interp).starts_with("ld-linux")
                    || basename(interp).starts_with("ld64.so")
                {
                    argv.push("--inhibit-cache".into());
                }
                if !self.library_path.is_empty() {
                    argv.push("--library-path".into());
                    argv.push(self.library_path_value(inside));
                }
                argv.push("--argv0".into());
                argv.push(argv0.into());
                argv.push(program.into_os_string());
                argv.extend(rest);
                (self.at(interp, inside), argv)
            }
            (Some(_), LaunchMode::LdLibraryPath) => {
                let mut lp = self.library_path_value(inside);
                if let Some(own) = app_env.get("LD_LIBRARY_PATH")
                    && !own.is_empty()
                {
                    lp.push(":");
                    lp.push(own);
                }
                env.push(("LD_LIBRARY_PATH".into(), lp));
                let argv = std::iter::once(OsString::from(argv0)).chain(rest).collect();
                (program, argv)
            }
            // A static program: nothing to load.
            (None, _) => {
                let argv = std::iter::once(OsString::from(argv0)).chain(rest).collect();
                (program, argv)
            }
        };
        ExecPlan {
            path,
            argv,
            env,
            unset: UNSET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::{FileEntry, LinkEntry, ProgramEntry};

    fn manifest() -> Manifest {
        let f = |p: &str| FileEntry {
            path: p.into(),
            sha256: "0".repeat(64),
            mode: 0o555,
            size: 1,
        };
        Manifest {
            name: "redis".into(),
            entry: "/usr/bin/redis-server".into(),
            library_path: vec!["/lib/x86_64-linux-gnu".into()],
            programs: vec![
                ProgramEntry {
                    path: "/usr/bin/redis-check-rdb".into(),
                    interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                },
                ProgramEntry {
                    path: "/usr/bin/redis-cli".into(),
                    interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                },
            ],
            files: vec![
                f("/usr/bin/redis-check-rdb"),
                f("/usr/bin/redis-cli"),
                f("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                f("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ],
            links: vec![
                LinkEntry {
                    path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                    target: "../../usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                },
                LinkEntry {
                    path: "/lib64/ld-linux-x86-64.so.2".into(),
                    target: "../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
                },
                LinkEntry {
                    path: "/usr/bin/redis-server".into(),
                    target: "redis-check-rdb".into(),
                },
            ],
            dirs: vec![],
            needed: vec![],
        }
    }

    #[test]
    fn command0_is_found_by_path_link_or_name() {
        let m = manifest();
        assert_eq!(
            find_program(&m, "/usr/bin/redis-server").unwrap(),
            "/usr/bin/redis-check-rdb"
        );
        assert_eq!(
            find_program(&m, "redis-server").unwrap(),
            "/usr/bin/redis-check-rdb"
        );
        assert_eq!(find_program(&m, "redis-cli").unwrap(), "/usr/bin/redis-cli");
        let e = find_program(&m, "nginx").unwrap_err();
        assert!(
            e.contains("not a program of the bundle") && e.contains("/usr/bin/redis-cli"),
            "{e}"
        );
        let e = find_program(&m, "/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap_err();
        assert!(e.contains("not one of its programs"), "{e}");
        let e = find_program(&m, "/bin/sh").unwrap_err();
        assert!(e.contains("is not in the bundle"), "{e}");
        assert!(
            find_program(&m, "bin/redis-cli")
                .unwrap_err()
                .contains("relative")
        );
    }

    #[test]
    fn exec_plans() {
        let b = BundleLaunch {
            reference: "redis".into(),
            name: "redis".into(),
            id: "ab".repeat(32),
            dir: PathBuf::from("/store/abab"),
            mode: LaunchMode::Loader,
            program: "/usr/bin/redis-check-rdb".into(),
            interpreter: Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            library_path: vec!["/lib/x86_64-linux-gnu".into(), "/opt/x".into()],
        };
        let cmd = vec!["redis-server".to_string(), "--port".into(), "7".into()];
        let p = b.exec_plan(&cmd, &BTreeMap::new(), false);
        assert_eq!(
            p.path,
            PathBuf::from("/store/abab/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        let argv: Vec<String> = p.argv.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            argv,
            vec![
                "redis-server",
                "--inhibit-cache",
                "--library-path",
                "/store/abab/root/lib/x86_64-linux-gnu:/store/abab/root/opt/x",
                "--argv0",
                "redis-server",
                "/store/abab/root/usr/bin/redis-check-rdb",
                "--port",
                "7"
            ]
        );
        assert!(p.env.iter().all(|(k, _)| k != "LD_LIBRARY_PATH"));
        assert_eq!(p.unset, UNSET);

        let mut l = b.clone();
        l.mode = LaunchMode::LdLibraryPath;
        let env: BTreeMap<String, String> =
            [("LD_LIBRARY_PATH".to_string(), "/mine".to_string())].into();
        let p = l.exec_plan(&cmd, &env, false);
        assert_eq!(
            p.path,
            PathBuf::from("/store/abab/root/usr/bin/redis-check-rdb")
        );
        assert_eq!(p.argv[0], "redis-server");
        let lp = p.env.iter().find(|(k, _)| k == "LD_LIBRARY_PATH").unwrap();
        assert_eq!(
            lp.1,
            "/store/abab/root/lib/x86_64-linux-gnu:/store/abab/root/opt/x:/mine"
        );

        let mut s = b.clone();
        s.interpreter = None;
        let p = s.exec_plan(&cmd, &BTreeMap::new(), false);
        assert_eq!(
            p.path,
            PathBuf::from("/store/abab/root/usr/bin/redis-check-rdb")
        );
        assert_eq!(p.argv.len(), 3);
        assert!(parse_mode("x").unwrap_err().contains("ld_library_path"));
    }
}
