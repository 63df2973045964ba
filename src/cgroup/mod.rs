//! cgroups for native apps: one cgroup per app, for limits (`[limits] memory`, `cpu`, `pids`),
//! usage accounting, OOM detection and a stop that kills the whole tree.
//!
//! Layouts (read from /proc/self/mountinfo; paddock's own position from /proc/self/cgroup):
//! - **v2**: one cgroup2 hierarchy with controllers. Apps live in `<own>/paddock/<app>`. Enabling
//!   controllers for them needs `+cpu +memory +pids` in the subtree_control of `<own>` and of
//!   `<own>/paddock`; a non-root cgroup that does so may hold no processes ("no internal
//!   processes"), so paddock first moves itself into the leaf `<own>/paddock/.supervisor`
//!   (not needed in the root cgroup, e.g. as PID 1 of a VM).
//! - **hybrid**: v1 controller hierarchies plus a controller-less cgroup2 (often at
//!   /sys/fs/cgroup/unified). Limits and accounting use v1 (`<own in each>/paddock/<app>`); each
//!   app is also put in a cgroup of the cgroup2 mount, which gives `cgroup.kill` and
//!   `cgroup.events` even without controllers.
//! - **v1**: v1 hierarchies only; a stop freezes the app's cgroup, SIGKILLs each member, thaws.
//!
//! Everything per app (directories, limits, the `cgroup.procs` descriptors the child writes
//! to before exec) is prepared once per app, not per spawn.

mod lean;
pub mod v1;
pub mod v2;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `[limits]` that cgroups enforce (the rlimit `nofile` is set by the spawn itself).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgLimits {
    pub memory: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
}

impl CgLimits {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpu.is_some() || self.pids.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    V2,
    Hybrid,
    V1,
    None,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::V2 => "v2",
            Layout::Hybrid => "hybrid",
            Layout::V1 => "v1",
            Layout::None => "none",
        }
    }
}

/// A cgroup mount from mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub v2: bool,
    pub point: PathBuf,
    /// The mount's root inside the hierarchy ("/" unless bind-mounted, as in a container).
    pub root: String,
    /// v1: the controllers of the hierarchy (`name=systemd` hierarchies have none).
    pub controllers: Vec<String>,
}

const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Octal escapes of mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = vec![];
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, point) = (unescape(pre[3]), PathBuf::from(unescape(pre[4])));
        match post[0] {
            "cgroup2" => out.push(Mount {
                v2: true,
                point,
                root,
                controllers: vec![],
            }),
            "cgroup" => out.push(Mount {
                v2: false,
                point,
                root,
                controllers: post[2]
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect(),
            }),
            _ => {}
        }
    }
    out
}

/// One line of /proc/self/cgroup: hierarchy id, controllers, path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(':')?;
            let (ctl, path) = rest.split_once(':')?;
            Some(Membership {
                id: id.parse().ok()?,
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of a cgroup `path` (from /proc/self/cgroup) under a mount of its hierarchy.
fn dir_in(m: &Mount, path: &str) -> PathBuf {
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str()).unwrap_or(path)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    }
}

/// A v1 hierarchy paddock uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Hier {
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    /// paddock's own cgroup in it.
    pub own: PathBuf,
}

/// What the host offers, as found (no side effects).
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub layout: Layout,
    /// The cgroup2 mount and paddock's own cgroup in it.
    pub v2: Option<(PathBuf, PathBuf)>,
    /// Controllers available to paddock's cgroup on v2 (its cgroup.controllers).
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies with the controllers paddock uses (memory, cpu, cpuacct, pids, freezer).
    pub v1: Vec<Hier>,
}

/// The v1 controllers paddock creates app cgroups in.
const V1_USED: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// Reads the layout from mountinfo and /proc/self/cgroup texts; `controllers` reads a v2
/// directory's cgroup.controllers.
pub fn detect_from(
    mountinfo: &str,
    proc_cgroup: &str,
    controllers: impl Fn(&Path) -> String,
) -> Host {
    let mounts = parse_mountinfo(mountinfo);
    let members = parse_proc_cgroup(proc_cgroup);
    let v2 = mounts.iter().find(|m| m.v2).and_then(|m| {
        let own = members
            .iter()
            .find(|c| c.id == 0 && c.controllers.is_empty())?;
        Some((m.point.clone(), dir_in(m, &own.path)))
    });
    let mut v1: Vec<Hier> = vec![];
    for m in mounts.iter().filter(|m| !m.v2) {
        if !m.controllers.iter().any(|c| V1_USED.contains(&c.as_str())) {
            continue;
        }
        if v1.iter().any(|h| h.controllers == m.controllers) {
            continue; // the same hierarchy mounted twice
        }
        let Some(own) = members
            .iter()
            .find(|c| c.id != 0 && c.controllers == m.controllers)
        else {
            continue;
        };
        v1.push(Hier {
            controllers: m.controllers.clone(),
            mount: m.point.clone(),
            own: dir_in(m, &own.path),
        });
    }
    let v2_controllers: Vec<String> = v2
        .as_ref()
        .map(|(_, own)| {
            controllers(own)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let any_v1 = mounts.iter().any(|m| !m.v2 && !m.controllers.is_empty());
    let layout = match (v2.is_some(), any_v1) {
        (_, true) if v2.is_some() => Layout::Hybrid,
        (_, true) => Layout::V1,
        (true, false) => Layout::V2,
        (false, false) => Layout::None,
    };
    Host {
        layout,
        v2,
        v2_controllers,
        v1,
    }
}

/// What `serve` would use, found without changing anything (for `paddock doctor`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Where the app cgroups would live (one per hierarchy).
    pub bases: Vec<PathBuf>,
    /// Controllers usable for `[limits]`.
    pub limit_controllers: Vec<String>,
    /// Why something is not usable.
    pub problems: Vec<String>,
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access with `c`, a NUL-terminated CString alive for the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl Host {
    pub fn plan(&self, name: &str) -> Plan {
        let mut p = Plan::default();
        let add = |p: &mut Plan, dir: &Path, ctls: &[String]| {
            if writable(dir) {
                p.bases.push(dir.join(name));
                for c in ctls {
                    if ["cpu", "memory", "pids"].contains(&c.as_str())
                        && !p.limit_controllers.contains(c)
                    {
                        p.limit_controllers.push(c.clone());
                    }
                }
            } else {
                p.problems
                    .push(format!("{} is not writable ({ROOT_HINT})", dir.display()));
            }
        };
        match self.layout {
            Layout::None => p.problems.push("no cgroup hierarchy is mounted".into()),
            Layout::V2 => {
                if let Some((mount, own)) = &self.v2 {
                    add(&mut p, own, &self.v2_controllers);
                    let is_root = own == mount && !own.join("cgroup.type").exists();
                    if !is_root && !p.limit_controllers.is_empty() {
                        p.problems.push(format!(
                            "paddock's cgroup {} is not the root: paddock moves itself to {}/.supervisor to enable controllers, which needs no other process in it",
                            own.display(),
                            own.join(name).display()
                        ));
                    }
                }
            }
            Layout::Hybrid | Layout::V1 => {
                if let Some((_, own)) = &self.v2 {
                    add(&mut p, own, &[]);
                }
                for h in &self.v1 {
                    add(&mut p, &h.own, &h.controllers);
                }
            }
        }
        p.limit_controllers.sort();
        p
    }
}

pub fn detect() -> Host {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let pc = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_from(&mi, &pc, |d| {
        std::fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default()
    })
}

pub(crate) fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map_err(|e| format!("{}: {}", p.display(), crate::util::io_reason(&e)))
}

pub(crate) fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| {
        format!(
            "writing \"{s}\" to {}: {}",
            p.display(),
            crate::util::io_reason(&e)
        )
    })
}

fn mkdir(p: &Path) -> Result<(), String> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "mkdir {}: {}",
            p.display(),
            crate::util::io_reason(&e)
        )),
    }
}

/// Where a kind of directory sits, for what paddock does with it.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// v2 with these controllers enabled for the apps.
    V2 { controllers: Vec<String> },
    /// A controller-less cgroup2 (hybrid): membership, cgroup.kill, cgroup.events.
    Unified,
    /// A v1 hierarchy with these controllers.
    V1 { controllers: Vec<String> },
}

/// paddock's cgroups: detected once at start; the parent directories are created then.
pub struct Cgroups {
    pub host: Host,
    /// (kind, paddock's parent directory for apps)
    bases: Vec<(Kind, PathBuf)>,
    /// Why paddock cannot use cgroups at all (not root, no hierarchy, …), if so.
    pub unavailable: Option<String>,
    /// Problems that limit what is possible (a controller that could not be enabled).
    pub notes: Vec<String>,
    /// The app directories of cgroup2 have `cgroup.kill` (so v1 freezer and cpuacct are not
    /// needed; see lean.rs).
    v2_kill: bool,
    /// The thread of `precreate`.
    precreating: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

const ROOT_HINT: &str =
    "run paddock as root, or in a cgroup delegated to it (systemd: Delegate=yes)";

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
        }
    }

    /// Detects the layout and prepares `<own>/<name>` in each hierarchy paddock uses.
    pub fn init(name: &str) -> Cgroups {
        let host = detect();
        let mut cg = Cgroups {
            host: host.clone(),
            bases: vec![],
            unavailable: None,
            notes: vec![],
            v2_kill: false,
            precreating: Default::default(),
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
            matches!(k, Kind::V2 { .. } | Kind::Unified) && b.join("cgroup.kill").exists()
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
        mkdir(&base).map_err(|e| format!("{e} ({ROOT_HINT})"))?;
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
            },
            base,
        ));
        Ok(())
    }

    fn init_v1(&mut self, name: &str) -> Result<(), String> {
        if let Some((_, own)) = &self.host.v2 {
            let base = own.join(name);
            match mkdir(&base) {
                Ok(()) => self.bases.push((Kind::Unified, base)),
                Err(e) => return Err(format!("{e} ({ROOT_HINT})")),
            }
        }
        for h in self.host.v1.clone() {
            let base = h.own.join(name);
            match mkdir(&base) {
                Ok(()) => self.bases.push((
                    Kind::V1 {
                        controllers: h.controllers.clone(),
                    },
                    base,
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
            let cs = match k {
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
        self.bases.iter().map(|(_, b)| b.clone()).collect()
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
        let (mut dirs, mut deferred) = (vec![], vec![]);
        for (k, base) in &self.bases {
            let d = Dir {
                kind: k.clone(),
                path: base.join(dir_name),
            };
            match self.need(k, limits) {
                lean::Need::Now => {
                    mkdir(&d.path)?;
                    dirs.push(d);
                }
                lean::Need::Later => deferred.push(d),
                lean::Need::Never => {}
            }
        }
        let mut cg = AppCgroup {
            dirs,
            deferred,
            procs: vec![],
            limits: CgLimits::default(),
            oom_seen: 0,
            cached: Default::default(),
        };
        let left = cg.members();
        if !adopt && !left.is_empty() {
            // No other paddock uses this cgroup name (serve holds its lock): these are processes
            // an earlier paddock of ours left behind and nobody adopted. Stop them before the new
            // start, so that nothing runs twice.
            eprintln!(
                "paddock: cgroup {}: killing {} process{} left by an earlier paddock ({})",
                cg.dirs[0].path.display(),
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
        for d in &cg.dirs {
            let path = d.path.join("cgroup.procs");
            cg.procs.push(
                std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| "cgroup path contains a NUL byte".to_string())?,
            );
        }
        cg.oom_seen = cg.oom_kills().unwrap_or(0);
        Ok(cg)
    }
}

#[derive(Debug)]
struct Dir {
    kind: Kind,
    path: PathBuf,
}

impl Dir {
    fn has(&self, c: &str) -> bool {
        match &self.kind {
            Kind::V2 { controllers } | Kind::V1 { controllers } => {
                controllers.iter().any(|x| x == c)
            }
            Kind::Unified => false,
        }
    }
    fn is_v2(&self) -> bool {
        matches!(self.kind, Kind::V2 { .. } | Kind::Unified)
    }
}

/// Resource use of an app's cgroup (None: not known on this host).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
}

/// One app's cgroup, in every hierarchy paddock uses.
#[derive(Debug)]
pub struct AppCgroup {
    dirs: Vec<Dir>,
    /// Directories made only once a limit needs them (lean.rs).
    deferred: Vec<Dir>,
    /// `cgroup.procs` of each directory: opened for each spawn (`open_procs`), the child writes
    /// "0" to each. Not kept open: six descriptors per app on a hybrid host would bound how
    /// many apps fit under paddock's descriptor limit.
    procs: Vec<std::ffi::CString>,
    pub limits: CgLimits,
    /// The OOM-kill counter when the current process started.
    oom_seen: u64,
    /// The last usage read and when (`usage`).
    cached: std::cell::Cell<Option<(std::time::Instant, Usage)>>,
}

/// How old the usage in status and metrics may be: reading three cgroup files per app on every
/// `paddock status` took 30 ms with 1000 apps.
pub const USAGE_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(1000);

impl AppCgroup {
    /// The directories (the first one is the one shown in status).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Opens each `cgroup.procs` (O_WRONLY|O_CLOEXEC) for a spawn.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, String> {
        self.procs
            .iter()
            .map(|c| {
                // SAFETY: open with `c`, a NUL-terminated CString of ours.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(format!(
                        "{}: {}",
                        c.to_string_lossy(),
                        crate::util::io_reason(&e)
                    ));
                }
                // SAFETY: `fd` is the new descriptor just opened; nothing else owns it.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .collect()
    }

    /// Sets (or, for keys now absent, removes) the limits.
    pub fn apply(&mut self, l: &CgLimits) -> Result<(), String> {
        self.create_deferred(l)?;
        for d in &self.dirs {
            let p = &d.path;
            let v2 = matches!(d.kind, Kind::V2 { .. });
            if d.has("memory") && (l.memory.is_some() || self.limits.memory.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("memory.max"),
                        &l.memory.map_or("max".into(), |m| m.to_string()),
                    )
                    .and_then(|()| {
                        // No swap beyond the limit; absent without swap accounting.
                        let sw = p.join("memory.swap.max");
                        if sw.exists() {
                            let v = if l.memory.is_some() { "0" } else { "max" };
                            write(&sw, v)
                        } else {
                            Ok(())
                        }
                    })
                } else {
                    v1::set_memory(p, l.memory)
                };
                r.map_err(|e| format!("key `limits.memory`: {e}"))?;
            }
            if d.has("cpu") && (l.cpu.is_some() || self.limits.cpu.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("cpu.max"),
                        &l.cpu.map_or("max 100000".into(), v2::cpu_max),
                    )
                } else {
                    v1::set_cpu(p, l.cpu)
                };
                r.map_err(|e| format!("key `limits.cpu`: {e}"))?;
            }
            if d.has("pids") && (l.pids.is_some() || self.limits.pids.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("pids.max"),
                        &l.pids.map_or("max".into(), |n| n.to_string()),
                    )
                } else {
                    v1::set_pids(p, l.pids)
                };
                r.map_err(|e| format!("key `limits.pids`: {e}"))?;
            }
        }
        self.limits = *l;
        Ok(())
    }

    /// The directory membership is read from: the cgroup2 one if any, else the first.
    fn main_dir(&self) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.is_v2()).or(self.dirs.first())
    }

    /// Pids in the cgroup (zombies are not listed).
    pub fn members(&self) -> Vec<i32> {
        let Some(d) = self.main_dir() else {
            return vec![];
        };
        std::fs::read_to_string(d.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs everything in the cgroup: `cgroup.kill` on cgroup2 (also the controller-less
    /// one of a hybrid host), else freeze, kill each member, thaw (v1).
    pub fn kill(&self) -> Result<(), String> {
        if let Some(d) = self.dirs.iter().find(|d| d.is_v2()) {
            let k = d.path.join("cgroup.kill");
            if k.exists() {
                return write(&k, "1");
            }
        }
        if self.members().is_empty() {
            return Ok(());
        }
        let freezer = self.dirs.iter().find(|d| d.has("freezer"));
        if let Some(f) = freezer {
            v1::freeze(&f.path)?;
        }
        for _ in 0..100 {
            let m = self.members();
            if m.is_empty() {
                break;
            }
            for pid in m {
                // SAFETY: kill(2) takes no pointers; pids just read from the app's cgroup.procs (a
                // member that exits meanwhile could in theory be reused: the usual race of pid
                // kills, frozen away with a freezer).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if freezer.is_some() {
                break; // frozen: nothing can fork meanwhile
            }
        }
        if let Some(f) = freezer {
            v1::thaw(&f.path)?;
        }
        Ok(())
    }

    /// Kills what is left and waits (bounded) until the cgroup is empty: a new instance must not
    /// start next to the old one's processes.
    pub fn kill_and_wait(&self, within: std::time::Duration) -> Result<(), String> {
        if self.members().is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        self.kill()?;
        loop {
            let m = self.members();
            if m.is_empty() {
                return Ok(());
            }
            if t.elapsed() > within {
                return Err(format!(
                    "processes of the previous instance are still in cgroup {} after SIGKILL: {}",
                    self.main_dir()
                        .map_or(String::new(), |d| d.path.display().to_string()),
                    m.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }

    /// The kernel's OOM-kill counter of the cgroup (v2 memory.events, v1 memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        let d = self.dirs.iter().find(|d| d.has("memory"))?;
        let f = if matches!(d.kind, Kind::V2 { .. }) {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        v2::keyed(&std::fs::read_to_string(d.path.join(f)).ok()?, "oom_kill")
    }

    /// Remembers the counter when a process starts.
    pub fn mark_start(&mut self) {
        if self.limits.memory.is_some() {
            self.oom_seen = self.oom_kills().unwrap_or(self.oom_seen);
        }
    }

    /// Whether the kernel OOM-killed something in the cgroup since the process started.
    pub fn oom_killed_since_start(&mut self) -> bool {
        match self.oom_kills() {
            Some(n) if n > self.oom_seen => {
                self.oom_seen = n;
                true
            }
            _ => false,
        }
    }

    /// The usage, read at most `USAGE_MAX_AGE` ago.
    pub fn usage(&self) -> Usage {
        let now = std::time::Instant::now();
        if let Some((at, u)) = self.cached.get()
            && now.duration_since(at) < USAGE_MAX_AGE
        {
            return u;
        }
        let u = self.read_usage();
        self.cached.set(Some((now, u)));
        u
    }

    /// The usage as the kernel has it now.
    pub fn read_usage(&self) -> Usage {
        let mut u = Usage::default();
        let rd = |p: PathBuf| std::fs::read_to_string(p).ok();
        for d in &self.dirs {
            let v2 = matches!(d.kind, Kind::V2 { .. });
            if d.has("memory") && u.memory_bytes.is_none() {
                let f = if v2 {
                    "memory.current"
                } else {
                    "memory.usage_in_bytes"
                };
                u.memory_bytes = rd(d.path.join(f)).and_then(|s| v2::number_or_max(&s));
            }
            if d.has("pids") && u.pids.is_none() {
                u.pids = rd(d.path.join("pids.current")).and_then(|s| v2::number_or_max(&s));
            }
            if u.cpu_usec.is_none() {
                if d.is_v2() {
                    // cpu.stat's usage_usec exists on every cgroup2 directory, controller or not.
                    u.cpu_usec =
                        rd(d.path.join("cpu.stat")).and_then(|s| v2::keyed(&s, "usage_usec"));
                } else if d.has("cpuacct") {
                    u.cpu_usec = rd(d.path.join("cpuacct.usage"))
                        .and_then(|s| v2::number_or_max(&s))
                        .map(|ns| ns / 1000);
                }
            }
        }
        u
    }

    /// Removes the directories (the cgroup must be empty: kill first). Retries briefly while
    /// killed processes finish exiting.
    pub fn remove(self) -> Result<(), String> {
        drop(self.procs);
        let mut errs = vec![];
        for d in &self.dirs {
            let mut last = None;
            for _ in 0..200 {
                match std::fs::remove_dir(&d.path) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if let Some(e) = last {
                errs.push(format!(
                    "rmdir {}: {}",
                    d.path.display(),
                    crate::util::io_reason(&e)
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

impl Cgroups {
    /// Removes paddock's parent directories (at shutdown, once every app cgroup is gone; on
    /// v2 outside the root, paddock's own leaf stays until it exits).
    pub fn remove_bases(&self) {
        self.remove_leftovers();
        for (_, b) in &self.bases {
            let _ = std::fs::remove_dir(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MI: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_PC: &str = "9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/c21c
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout() {
        let h = detect_from(HYBRID_MI, HYBRID_PC, |_| String::new());
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(
            h.v2,
            Some((
                "/sys/fs/cgroup/unified".into(),
                "/sys/fs/cgroup/unified".into()
            ))
        );
        assert!(h.v2_controllers.is_empty());
        let mem = h.v1.iter().find(|x| x.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own, Path::new("/sys/fs/cgroup/memory/process_api/c21c"));
        assert_eq!(h.v1.len(), 5, "{:?}", h.v1); // systemd's name= hierarchy is not used
    }

    #[test]
    fn pure_v2_layout() {
        let mi = "22 1 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let pc = "0::/system.slice/paddock.service\n";
        let h = detect_from(mi, pc, |d| {
            assert_eq!(d, Path::new("/sys/fs/cgroup/system.slice/paddock.service"));
            "cpu io memory pids\n".into()
        });
        assert_eq!(h.layout, Layout::V2);
        assert_eq!(
            h.v2.as_ref().unwrap().1,
            Path::new("/sys/fs/cgroup/system.slice/paddock.service")
        );
        assert_eq!(h.v2_controllers, ["cpu", "io", "memory", "pids"]);
        assert!(h.v1.is_empty());
        // PID 1 of a VM: the root cgroup.
        let h = detect_from(
            "7 1 0:6 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            |_| "cpu memory pids".into(),
        );
        assert_eq!(h.v2.unwrap().1, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn v1_layout_with_comounted_and_container_root() {
        let mi = "30 25 0:26 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
32 25 0:28 /docker/abc /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids
33 25 0:29 /docker/abc /sys/fs/cgroup/net\\040cls ro - cgroup cgroup rw,net_cls
";
        let pc = "5:pids:/docker/abc\n4:memory:/docker/abc/sub\n3:cpu,cpuacct:/docker/abc\n2:net_cls:/docker/abc\n";
        let h = detect_from(mi, pc, |_| unreachable!());
        assert_eq!(h.layout, Layout::V1);
        assert!(h.v2.is_none());
        let cpu =
            h.v1.iter()
                .find(|x| x.controllers == ["cpu", "cpuacct"])
                .unwrap();
        assert_eq!(cpu.own, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        let mem = h.v1.iter().find(|x| x.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own, Path::new("/sys/fs/cgroup/memory/sub"));
        assert_eq!(h.v1.len(), 3); // net_cls is not used
        let m = parse_mountinfo(mi);
        assert_eq!(m[3].point, Path::new("/sys/fs/cgroup/net cls"));
    }

    #[test]
    fn no_cgroups() {
        let h = detect_from("20 1 8:1 / / rw - ext4 /dev/sda1 rw\n", "", |_| {
            String::new()
        });
        assert_eq!(h.layout, Layout::None);
        let c = Cgroups::disabled("no hierarchy");
        let why = c
            .refuse(&CgLimits {
                pids: Some(3),
                ..Default::default()
            })
            .unwrap();
        assert!(why.starts_with("key `limits.pids`: cannot be enforced: paddock cannot use cgroups here: no hierarchy"), "{why}");
        assert!(c.refuse(&CgLimits::default()).is_none());
    }
}
