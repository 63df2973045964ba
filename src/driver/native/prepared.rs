//! What a native start needs, built once per app spec before any clone: the program path,
//! argv and environment as C strings with their NULL-terminated pointer arrays, working
//! directory, credentials, `[limits] nofile` and, for level `sandbox`, the sandbox plan (or the
//! fallback level and why). A restart then costs one clone and one exec.

use crate::config::AppSpec;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
/// paddock's own environment as `KEY=value` C strings, shared by every app (each app adds or
/// overrides a few variables; the strings are not copied per app).
#[derive(Clone)]
pub struct BaseEnv(Arc<Vec<CString>>);

impl BaseEnv {
    pub fn from_process() -> BaseEnv {
        let v = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut b = k.into_vec();
                b.push(b'=');
                b.extend(v.into_vec());
                CString::new(b).ok()
            })
            .collect();
        BaseEnv(Arc::new(v))
    }
}

/// Everything the child needs, as C strings and pointer arrays built before fork.
pub struct Prepared {
    pub(super) path: CString,
    _argv: Vec<CString>,
    pub(super) argv_ptrs: Vec<*const libc::c_char>,
    base: BaseEnv,
    /// Which of `base` the app does not get (overridden by its own, unset, or all of them
    /// for a sandboxed app): the pointer array is made at each spawn (`env_into`) rather
    /// than kept, which would be 8 bytes per variable of paddock's environment per app.
    base_skip: Box<[u32]>,
    envp: Vec<CString>,
    pub(super) workdir: Option<CString>,
    pub(super) creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Level `sandbox`: namespaces, root filesystem, Landlock, capabilities, seccomp.
    pub(super) sandbox: Option<Arc<crate::sandbox::Plan>>,
    /// An exec health check of a sandboxed app: it joins the app's sandbox (namespaces, root,
    /// cgroup) instead of making one, then is confined like the app.
    pub(super) joins_app: bool,
    /// The level the app runs at (a sandboxed app may have fallen back).
    pub level: crate::config::Isolation,
    /// Why the app runs at its fallback level instead of `sandbox`.
    pub fallback: Option<String>,
    /// `[limits] nofile`: soft and hard RLIMIT_NOFILE (instead of paddock's original limit).
    pub(super) nofile: Option<u64>,
}

// SAFETY: the only raw pointers (argv_ptrs) point into CStrings this struct owns (_argv): their
// heap buffers do not move with the struct and are never changed after new(). Prepared is not
// Clone, so no copy outlives them.
unsafe impl Send for Prepared {}
// SAFETY: as for Send: shared references only read those immutable strings (execve in the child).
unsafe impl Sync for Prepared {}

fn cstring(b: &[u8], what: &str) -> Result<CString, String> {
    CString::new(b).map_err(|_| format!("{what} contains a NUL byte"))
}

impl Prepared {
    /// The app's environment as the NULL-terminated pointer array `execve` takes, into `out`
    /// (cleared first); the pointers are valid while `self` is.
    pub(super) fn env_into(&self, out: &mut Vec<*const libc::c_char>) {
        out.clear();
        out.reserve(self.base.0.len() + self.envp.len() + 4);
        let mut skip = self.base_skip.iter().peekable();
        for (i, kv) in self.base.0.iter().enumerate() {
            if skip.next_if_eq(&&(i as u32)).is_none() {
                out.push(kv.as_ptr());
            }
        }
        out.extend(self.envp.iter().map(|kv| kv.as_ptr()));
        out.push(std::ptr::null());
    }

    pub fn new(spec: &AppSpec, base: &BaseEnv) -> Result<Prepared, String> {
        use crate::config::Isolation;
        // Level `sandbox`: its plan, or the fallback level when the host cannot give it.
        let (mut level, mut fallback, mut sandbox) = (spec.isolation, None, None);
        if spec.isolation == Isolation::Sandbox {
            // The root is made of the app's bundle, or of the tree the spec names instead (an
            // image rootfs; the program is then `spec.program`, a path inside it).
            let root = match (&spec.sandbox, &spec.bundle) {
                (Some(sb), _) if sb.root.is_some() => sb.root.clone(),
                (Some(_), Some(b)) => Some(b.root()),
                _ => None,
            };
            let (Some(sb), Some(root)) = (&spec.sandbox, root) else {
                return Err("a sandboxed app needs its bundle and [sandbox] settings".into());
            };
            let workdir = spec.workdir.as_deref();
            match crate::sandbox::Plan::new(
                &spec.name,
                sb,
                &root,
                spec.identity.as_deref(),
                workdir,
                spec.env.get("NOTIFY_SOCKET").map(std::path::Path::new),
                spec.limits.memory,
            ) {
                Ok(p) => sandbox = Some(p),
                Err(why) => match spec.fallback {
                    Some(f) => {
                        level = f;
                        fallback = Some(why);
                    }
                    None => {
                        return Err(format!(
                            "level sandbox is not available: {why} (or add fallback = \"bundle\" to run it unconfined)"
                        ));
                    }
                },
            }
        }
        Self::build(spec, base, sandbox.map(Arc::new), level, fallback, false)
    }

    /// The exec health check `command` of a sandboxed app (`app`, prepared from `spec`): a
    /// program of the app's bundle, run inside the app's sandbox with its user, environment,
    /// Landlock rules and seccomp filter. None when the app does not run sandboxed (its checks
    /// run on the host, as the app's user).
    pub fn check_in(
        app: &Prepared,
        spec: &AppSpec,
        command: &[String],
        base: &BaseEnv,
    ) -> Option<Result<Prepared, String>> {
        let plan = app.sandbox.clone()?;
        let b = spec.bundle.as_ref()?;
        let command0 = command.first()?;
        let launch =
            crate::bundle::launch::BundleLaunch::resolve(&b.dir.to_string_lossy(), None, command0)
                .map(|l| crate::bundle::launch::BundleLaunch {
                    mode: b.mode,
                    reference: b.reference.clone(),
                    ..l
                });
        Some(
            launch
                .map_err(|(_, e)| format!("health.command: {e}"))
                .and_then(|l| {
                    let mut c = spec.clone();
                    c.command = command.to_vec();
                    c.bundle = Some(Box::new(l));
                    Self::build(
                        &c,
                        base,
                        Some(plan),
                        crate::config::Isolation::Sandbox,
                        None,
                        true,
                    )
                }),
        )
    }

    fn build(
        spec: &AppSpec,
        base: &BaseEnv,
        sandbox: Option<Arc<crate::sandbox::Plan>>,
        level: crate::config::Isolation,
        fallback: Option<String>,
        joins_app: bool,
    ) -> Result<Prepared, String> {
        // What to execute: the program itself, or for a bundled app its loader (see
        // `crate::bundle::launch`), at its path inside the sandbox for a sandboxed one.
        let plan = plan_for(spec, sandbox.is_some());
        let path = cstring(plan.path.as_os_str().as_bytes(), "program path")?;
        let argv = plan
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes(), "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut own: Vec<(String, OsString)> =
            vec![("PADDOCK_APP".into(), spec.name.clone().into())];
        // A sandboxed app gets nothing of paddock's environment but TERM: a documented base,
        // then its own `env` (none and bundle get paddock's environment, as supervisord's
        // programs get supervisord's).
        let clean = sandbox.is_some();
        if clean {
            own.push(("PATH".into(), crate::config::DEFAULT_PATH.into()));
            own.push(("HOME".into(), "/".into()));
            if let Some(t) = std::env::var_os("TERM") {
                own.push(("TERM".into(), t));
            }
        }
        if let Some(id) = &spec.identity {
            if let Some(u) = &id.user {
                own.push(("USER".into(), u.into()));
                own.push(("LOGNAME".into(), u.into()));
            }
            if let Some(h) = &id.home {
                own.retain(|(k, _)| k != "HOME");
                own.push(("HOME".into(), h.clone().into_os_string()));
            }
        }
        for (k, v) in &spec.env {
            own.retain(|(ok, _)| ok != k);
            own.push((k.clone(), v.into()));
        }
        for (k, v) in plan.env {
            own.retain(|(ok, _)| *ok != k);
            own.push((k, v));
        }
        let envp = own
            .iter()
            .map(|(k, v)| {
                let mut b = k.as_bytes().to_vec();
                b.push(b'=');
                b.extend_from_slice(v.as_bytes());
                cstring(&b, "environment")
            })
            .collect::<Result<Vec<_>, _>>()?;
        let overridden = |kv: &CString| {
            let b = kv.as_bytes();
            let key = &b[..b.iter().position(|&c| c == b'=').unwrap_or(b.len())];
            own.iter().any(|(k, _)| k.as_bytes() == key)
                || plan.unset.iter().any(|k| k.as_bytes() == key)
        };
        let base_skip = base
            .0
            .iter()
            .enumerate()
            .filter(|(_, kv)| clean || overridden(kv))
            .map(|(i, _)| i as u32)
            .collect();
        let workdir = spec
            .workdir
            .as_ref()
            .map(|w| cstring(w.as_os_str().as_bytes(), "workdir"))
            .transpose()?;
        let creds = spec
            .identity
            .as_ref()
            .map(|id| (id.uid, id.gid, id.groups.clone()));
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            base: base.clone(),
            base_skip,
            envp,
            workdir,
            creds,
            sandbox,
            joins_app,
            level,
            fallback,
            nofile: spec.limits.nofile,
        })
    }

    /// The host uid the app runs as when a sandbox maps it (None: its `user`'s, or paddock's).
    pub fn sandbox_host_uid(&self) -> Option<u32> {
        self.sandbox.as_ref().and_then(|s| s.host_uid)
    }

    /// The host uid and gid the app's processes start as, when not paddock's own: the log pipes
    /// handed to it are given to them (see `give_pipes`).
    pub fn stdio_owner(&self) -> Option<(u32, u32)> {
        match &self.sandbox {
            Some(s) => Some(s.host_ids),
            None => self.creds.as_ref().map(|(u, g, _)| (*u, *g)),
        }
    }

    /// An exec health check that runs inside its app's sandbox (`spawn_in_app`).
    pub fn joins_app(&self) -> bool {
        self.joins_app
    }

    /// What the sandbox gives, for `status` (None for other levels).
    pub fn sandbox_summary(&self) -> Option<&str> {
        self.sandbox.as_ref().map(|s| s.summary.as_str())
    }

    /// Level `sandbox` as root with `network = "none"`: the app's network namespace, kept
    /// across its restarts (what `[sandbox] publish` forwards into).
    pub fn netns(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.sandbox
            .as_ref()
            .and_then(|s| s.netns.as_ref())
            .map(|fd| fd.as_fd())
    }
}

/// The exec plan of any app: its bundle's, or its program and command as they are.
/// `sandboxed`: the app runs inside its sandbox, where the bundle is the root.
fn plan_for(spec: &AppSpec, sandboxed: bool) -> crate::bundle::launch::ExecPlan {
    match &spec.bundle {
        Some(b) => b.exec_plan(&spec.command, &spec.env, sandboxed),
        None => crate::bundle::launch::ExecPlan {
            path: spec.program.clone(),
            argv: spec.command.iter().map(std::ffi::OsString::from).collect(),
            env: vec![],
            unset: &[],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(p: &Prepared) -> Vec<String> {
        let mut v = vec![];
        p.env_into(&mut v);
        assert!(v.last().is_some_and(|e| e.is_null()), "NULL-terminated");
        v.pop();
        v.iter()
            .map(|&e| {
                // SAFETY: env_into gives pointers to NUL-terminated strings `p` owns.
                unsafe { std::ffi::CStr::from_ptr(e) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// The environment made at each spawn is paddock's, minus what the app overrides, plus
    /// the app's own; the same every time.
    #[test]
    fn the_environment_is_paddocks_with_the_apps_own_over_it() {
        let base = BaseEnv(Arc::new(
            ["A=1", "KEEP=yes", "B=2", "PADDOCK_APP=outer", "Z=26"]
                .iter()
                .map(|s| CString::new(*s).unwrap())
                .collect(),
        ));
        let spec = crate::config::parse_app(
            "web",
            std::path::Path::new("web.toml"),
            "command = [\"/bin/true\"]\nenv = { B = \"two\", NEW = \"x\" }\n",
        )
        .unwrap();
        let p = Prepared::new(&spec, &base).unwrap();
        let env = env_of(&p);
        assert_eq!(env.iter().filter(|e| e.starts_with("B=")).count(), 1);
        assert!(env.contains(&"B=two".to_string()), "{env:?}");
        assert!(env.contains(&"PADDOCK_APP=web".to_string()), "{env:?}");
        assert!(!env.contains(&"PADDOCK_APP=outer".to_string()), "{env:?}");
        for kept in ["A=1", "KEEP=yes", "Z=26", "NEW=x"] {
            assert!(env.contains(&kept.to_string()), "{kept} in {env:?}");
        }
        assert_eq!(env.len(), 6, "{env:?}");
        assert_eq!(env_of(&p), env, "the same at every spawn");
    }
}
