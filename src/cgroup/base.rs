//! paddock's own cgroups ([`Cgroups`]): set up once at start (on v2, paddock moves into a leaf
//! and enables the controllers for its apps; on v1 and hybrid, a parent directory in each
//! hierarchy), summarized for `doctor` and `status`, and the maker of each app's cgroup
//! (`create`, or `adopt` after a re-exec), with limits refused up front when they cannot hold.

use super::app::AppCgroup;
use super::{CgLimits, Dir, Host, Kind, Layout, ROOT_HINT, detect, lean, mkdir, v2, write};
use std::path::{Path, PathBuf};

/// `mkdir -p` (a parent of several levels, `init_at_root`).
fn mkdir_all(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p)
        .map_err(|e| format!("mkdir {}: {}", p.display(), crate::util::io_reason(&e)))
}
/// paddock's cgroups: detected once at start; the parent directories are created then.
pub struct Cgroups {
    pub host: Host,
    /// (kind, paddock's parent directory for apps)
    /// Each hierarchy's kind (shared by every app's directory in it) and paddock's directory.
    pub(super) bases: Vec<(std::sync::Arc<Kind>, std::sync::Arc<super::Base>)>,
    /// Why paddock cannot use cgroups at all (not root, no hierarchy, …), if so.
    pub unavailable: Option<String>,
    /// Problems that limit what is possible (a controller that could not be enabled).
    pub notes: Vec<String>,
    /// The app directories of cgroup2 have `cgroup.kill` (so v1 freezer and cpuacct are not
    /// needed; see lean.rs).
    pub(super) v2_kill: bool,
    /// The thread of `precreate`.
    pub(super) precreating: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// App directories `precreate` made new in every base it makes them in (so they hold no
    /// process): `create` takes them without a `mkdir` or a read of their members.
    pub(super) fresh: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Cgroups {
    /// Nothing: apps run without cgroups (and a limit is refused).
    pub fn disabled(why: &str) -> Cgroups {
        Cgroups {
            host: Host {
                layout: Layout::None,
                v2: None,
                v2_controllers: vec![],
                v1: vec![],
            },
            bases: vec![],
            unavailable: Some(why.into()),
            notes: vec![],
            v2_kill: false,
            precreating: Default::default(),
            fresh: Default::default(),
        }
    }

    /// Detects the layout and prepares `<own>/<name>` in each hierarchy paddock uses.
    pub fn init(name: &str) -> Cgroups {
        Self::init_host(detect(), name)
    }

    /// Like [`Cgroups::init`], with the parent at `parent` (relative, one or more levels) from
    /// the root of each hierarchy instead of under this process's own cgroup: a container
    /// runtime placing a container where its OCI spec's `cgroupsPath` says (runc's cgroupfs
    /// driver does the same). The process stays where it is.
    pub fn init_at_root(parent: &Path) -> Cgroups {
        let mut host = detect();
        if let Some((mount, own)) = &mut host.v2 {
            *own = mount.clone();
            host.v2_controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        for h in &mut host.v1 {
            h.own = h.mount.clone();
        }
        Self::init_host(host, &parent.to_string_lossy())
    }

    fn init_host(host: Host, name: &str) -> Cgroups {
        let mut cg = Cgroups {
            host: host.clone(),
            bases: vec![],
            unavailable: None,
            notes: vec![],
            v2_kill: false,
            precreating: Default::default(),
            fresh: Default::default(),
        };
        let r = match host.layout {
            Layout::None => Err("this host has no cgroup hierarchy mounted".into()),
            Layout::V2 => cg.init_v2(name),
            Layout::Hybrid | Layout::V1 => cg.init_v1(name),
        };
        if let Err(e) = r {
            cg.unavailable = Some(e);
            cg.bases.clear();
        }
        cg.v2_kill = cg.bases.iter().any(|(k, b)| {
            matches!(**k, Kind::V2 { .. } | Kind::Unified) && b.join("cgroup.kill").exists()
        });
        cg
    }

    fn init_v2(&mut self, name: &str) -> Result<(), String> {
        let Some((mount, own)) = self.host.v2.clone() else {
            return Err(
                "cgroup2 is mounted but paddock's own cgroup is not in /proc/self/cgroup".into(),
            );
        };
        let base = own.join(name);
        mkdir_all(&base).map_err(|e| format!("{e} ({ROOT_HINT})"))?;
        let wanted: Vec<&str> = v2::WANTED
            .iter()
            .copied()
            .filter(|c| self.host.v2_controllers.iter().any(|a| a == c))
            .collect();
        // The real root cgroup (no cgroup.type file) may hold processes and enable controllers;
        // any other one (a cgroup namespace's root included) may not do both.
        let is_root = own == mount && !own.join("cgroup.type").exists();
        let mut enabled = vec![];
        if !wanted.is_empty() {
            let r = (|| {
                if !is_root {
                    // No internal processes: paddock leaves its cgroup for a leaf of its own
                    // before enabling controllers for its children.
                    let leaf = base.join(".supervisor");
                    mkdir(&leaf)?;
                    write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
                }
                v2::enable(&own, &wanted).map_err(|e| {
                    if !is_root {
                        format!("{e} (its cgroup {} must hold no other process: give paddock a cgroup of its own)", own.display())
                    } else {
                        e
                    }
                })?;
                v2::enable(&base, &wanted)
            })();
            match r {
                Ok(on) => enabled = on,
                Err(e) => self.notes.push(format!(
                    "cannot enable controllers {} for apps: {e}",
                    wanted.join(" ")
                )),
            }
        }
        enabled.retain(|c| v2::WANTED.contains(&c.as_str()));
        self.bases.push((
            Kind::V2 {
                controllers: enabled,
            }
            .into(),
            super::Base::new(base).into(),
        ));
        Ok(())
    }

    fn init_v1(&mut self, name: &str) -> Result<(), String> {
        if let Some((_, own)) = &self.host.v2 {
            let base = own.join(name);
            match mkdir_all(&base) {
                Ok(()) => self
                    .bases
                    .push((Kind::Unified.into(), super::Base::new(base).into())),
                Err(e) => return Err(format!("{e} ({ROOT_HINT})")),
            }
        }
        for h in self.host.v1.clone() {
            let base = h.own.join(name);
            match mkdir_all(&base) {
                Ok(()) => self.bases.push((
                    Kind::V1 {
                        controllers: h.controllers.clone(),
                    }
                    .into(),
                    super::Base::new(base).into(),
                )),
                Err(e) if self.bases.is_empty() => return Err(format!("{e} ({ROOT_HINT})")),
                Err(e) => self.notes.push(e),
            }
        }
        if self.bases.is_empty() {
            return Err(
                "no usable cgroup hierarchy (paddock uses memory, cpu, cpuacct, pids, freezer)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Controllers usable for limits: memory, cpu, pids (those paddock could set up).
    pub fn limit_controllers(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for (k, _) in &self.bases {
            let cs = match &**k {
                Kind::V2 { controllers } | Kind::V1 { controllers } => controllers,
                Kind::Unified => continue,
            };
            for c in cs {
                if ["memory", "cpu", "pids"].contains(&c.as_str()) && !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out.sort();
        out
    }

    /// The parent directories of the app cgroups.
    pub fn bases(&self) -> Vec<PathBuf> {
        self.bases.iter().map(|(_, b)| b.to_path_buf()).collect()
    }

    /// One line for paddock's start: what it uses.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!(
                "cgroup: not used ({why}); apps run without cgroups, and an app with [limits] memory, cpu or pids is refused"
            );
        }
        let ctl = self.limit_controllers().join(" ");
        let ctl = if ctl.is_empty() { "none".into() } else { ctl };
        let mut s = match self.host.layout {
            Layout::V2 => format!(
                "cgroup: v2 at {}, controllers {ctl}",
                self.host
                    .v2
                    .as_ref()
                    .map_or(String::new(), |(m, _)| m.display().to_string())
            ),
            l => format!(
                "cgroup: {} (v1 controllers{}), controllers {ctl}",
                l.as_str(),
                match &self.host.v2 {
                    Some((m, _)) => format!(
                        "; cgroup2 without controllers at {} for membership and kill",
                        m.display()
                    ),
                    None => String::new(),
                }
            ),
        };
        s.push_str("; apps in ");
        s.push_str(
            &self
                .bases
                .iter()
                .map(|(_, b)| b.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        for n in &self.notes {
            s.push_str("; note: ");
            s.push_str(n);
        }
        s
    }

    /// Why a limit cannot be given, naming the key; None if every limit asked for can be set.
    pub fn refuse(&self, l: &CgLimits) -> Option<String> {
        let have = self.limit_controllers();
        for (set, key, ctl) in [
            (l.memory.is_some(), "limits.memory", "memory"),
            (l.cpu.is_some(), "limits.cpu", "cpu"),
            (l.pids.is_some(), "limits.pids", "pids"),
        ] {
            if !set || have.iter().any(|c| c == ctl) {
                continue;
            }
            let why = match &self.unavailable {
                Some(u) => format!("paddock cannot use cgroups here: {u}"),
                None => {
                    let mut w = format!(
                        "the {ctl} controller is not available to paddock ({} layout; usable: {})",
                        self.host.layout.as_str(),
                        if have.is_empty() {
                            "none".into()
                        } else {
                            have.join(" ")
                        }
                    );
                    for n in &self.notes {
                        w.push_str("; ");
                        w.push_str(n);
                    }
                    w
                }
            };
            return Some(format!(
                "key `{key}`: cannot be enforced: {why}; refusing to run the app without it"
            ));
        }
        None
    }

    /// Creates (or takes over) the cgroup `dir_name` of an app with its limits, and opens the
    /// `cgroup.procs` files its children write to before exec.
    pub fn create(&self, dir_name: &str, limits: &CgLimits) -> Result<AppCgroup, String> {
        self.open(dir_name, limits, false)
    }

    /// Takes over the cgroup `dir_name` of an app adopted from an earlier paddock, with the
    /// processes in it.
    pub fn adopt(&self, dir_name: &str, limits: &CgLimits) -> Result<AppCgroup, String> {
        if dir_name.is_empty() || dir_name.contains('/') || dir_name.starts_with('.') {
            return Err(format!("{dir_name:?} is not an app cgroup name"));
        }
        self.open(dir_name, limits, true)
    }

    fn open(&self, dir_name: &str, limits: &CgLimits, adopt: bool) -> Result<AppCgroup, String> {
        if let Some(why) = self.refuse(limits) {
            return Err(why);
        }
        if self.unavailable.is_some() {
            return Err("cgroups are not available".into());
        }
        // Made new by `precreate` in the bases an app without limits needs: no mkdir there.
        let made = !adopt && self.fresh.lock().is_ok_and(|mut s| s.remove(dir_name));
        let mut fresh = true;
        let (mut dirs, mut deferred) = (vec![], vec![]);
        let name: std::sync::Arc<str> = dir_name.into();
        for (k, base) in &self.bases {
            let d = Dir {
                kind: k.clone(),
                base: base.clone(),
                name: name.clone(),
            };
            match self.need(k, limits) {
                lean::Need::Now => {
                    if !(made && self.need(k, &CgLimits::default()) == lean::Need::Now) {
                        fresh &= d.base.mkdir_new(&d.name)?;
                    }
                    dirs.push(d);
                }
                lean::Need::Later => deferred.push(d),
                lean::Need::Never => {}
            }
        }
        let mut cg = AppCgroup {
            dirs: dirs.into(),
            deferred,
            limits: CgLimits::default(),
            oom_seen: 0,
            cached: Default::default(),
        };
        // A directory made just now holds no process, and its OOM counter is 0.
        let fresh = fresh && !adopt;
        let left = if fresh { vec![] } else { cg.members() };
        if !adopt && !left.is_empty() {
            // No other paddock uses this cgroup name (serve holds its lock): these are processes
            // an earlier paddock of ours left behind and nobody adopted. Stop them before the new
            // start, so that nothing runs twice.
            eprintln!(
                "paddock: cgroup {}: killing {} process{} left by an earlier paddock ({})",
                cg.dirs[0].path().display(),
                left.len(),
                if left.len() == 1 { "" } else { "es" },
                left.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            cg.kill_and_wait(std::time::Duration::from_secs(2))?;
        }
        cg.apply(limits)?;
        if !fresh {
            cg.oom_seen = cg.oom_kills().unwrap_or(0);
        }
        Ok(cg)
    }
}

impl Cgroups {
    /// Removes paddock's parent directories (at shutdown, once every app cgroup is gone; on
    /// v2 outside the root, paddock's own leaf stays until it exits).
    pub fn remove_bases(&self) {
        self.remove_leftovers();
        for (_, b) in &self.bases {
            let _ = std::fs::remove_dir(&b.path);
        }
    }
}
