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
//!
//! Layout: this file holds the limits, the kinds of directories and small file helpers;
//! `detect` reads the host's layout (no side effects), `base` sets up paddock's own cgroups and
//! makes each app's, `app` is one app's cgroup (limits, members, kill, usage, OOM), `lean`
//! keeps the directories per app few, `v1` and `v2` hold what is specific to each version.

mod app;
mod base;
mod detect;
mod lean;
pub mod v1;
pub mod v2;

pub use app::{AppCgroup, USAGE_MAX_AGE, Usage};
pub use base::Cgroups;
pub use detect::{
    Hier, Host, Membership, Mount, Plan, detect, detect_from, parse_mountinfo, parse_proc_cgroup,
};
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
    mkdir_new(p).map(|_| ())
}

/// `mkdir`, saying whether the directory is new (`false`: it was there).
fn mkdir_new(p: &Path) -> Result<bool, String> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!(
            "mkdir {}: {}",
            p.display(),
            crate::util::io_reason(&e)
        )),
    }
}

const ROOT_HINT: &str =
    "run paddock as root, or in a cgroup delegated to it (systemd: Delegate=yes)";

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

/// paddock's directory for apps in one hierarchy, with a descriptor of it (`O_PATH`): the files
/// of the apps' directories are opened relative to it, walking two path components instead of
/// the eight or so of the whole path. A `status` of 1000 apps reads 3000 of them, and the walk
/// (`__d_lookup`, `kernfs_dop_revalidate` for each component) was most of its cost.
#[derive(Debug)]
struct Base {
    path: PathBuf,
    fd: Option<std::os::fd::OwnedFd>,
}

impl std::ops::Deref for Base {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Calls `f` with `parts` joined by '/' as a C string, made on the stack when it fits.
fn with_c_path<R>(parts: &[&[u8]], f: impl FnOnce(*const libc::c_char) -> R) -> std::io::Result<R> {
    let len: usize = parts.iter().map(|p| p.len() + 1).sum();
    let mut stack = [0u8; 256];
    let mut heap = vec![];
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for (i, p) in parts.iter().enumerate() {
        if p.contains(&0) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        if i > 0 {
            buf[at] = b'/';
            at += 1;
        }
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    buf[at] = 0;
    Ok(f(buf.as_ptr().cast()))
}

impl Base {
    fn new(path: PathBuf) -> Base {
        use std::os::unix::ffi::OsStrExt;
        let fd = with_c_path(&[path.as_os_str().as_bytes()], |c| {
            // SAFETY: open with a NUL-terminated path and flags only; the result is checked.
            unsafe { libc::open(c, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) }
        })
        .ok()
        .filter(|&fd| fd >= 0)
        .map(|fd| {
            use std::os::fd::FromRawFd;
            // SAFETY: a descriptor open() just returned, owned by nothing else.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        });
        Base { path, fd }
    }

    /// Opens `name/file` below the base with `flags`.
    fn open(
        &self,
        name: &str,
        file: &str,
        flags: libc::c_int,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        // The error is taken right after the call, before anything else can change errno.
        let checked = |fd: libc::c_int| {
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: a descriptor open()/openat() just returned, owned by nothing else.
                Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
            }
        };
        match &self.fd {
            Some(base) => with_c_path(&[name.as_bytes(), file.as_bytes()], |c| {
                // SAFETY: openat on our directory descriptor with a NUL-terminated relative
                // path; the result is checked.
                checked(unsafe { libc::openat(base.as_raw_fd(), c, flags | libc::O_CLOEXEC) })
            })?,
            None => with_c_path(
                &[
                    self.path.as_os_str().as_bytes(),
                    name.as_bytes(),
                    file.as_bytes(),
                ],
                // SAFETY: open with a NUL-terminated path; the result is checked.
                |c| checked(unsafe { libc::open(c, flags | libc::O_CLOEXEC) }),
            )?,
        }
    }

    /// `mkdir name` below the base, saying whether it is new (`false`: it was there).
    fn mkdir_new(&self, name: &str) -> Result<bool, String> {
        use std::os::fd::AsRawFd;
        let Some(base) = &self.fd else {
            return mkdir_new(&self.path.join(name));
        };
        let r = with_c_path(&[name.as_bytes()], |c| {
            // SAFETY: mkdirat on our directory descriptor with a NUL-terminated name.
            match unsafe { libc::mkdirat(base.as_raw_fd(), c, 0o755) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
        .and_then(|r| r);
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(format!(
                "mkdir {}: {}",
                self.path.join(name).display(),
                crate::util::io_reason(&e)
            )),
        }
    }
}

/// An app's directory in one hierarchy: `base/name`, made into a path when used (1000 apps'
/// paths in six hierarchies would be half a megabyte kept for the rare read).
#[derive(Clone, Debug)]
struct Dir {
    /// Shared with the hierarchy's other directories (an app has one in each).
    kind: std::sync::Arc<Kind>,
    /// paddock's directory for apps in the hierarchy, shared likewise.
    base: std::sync::Arc<Base>,
    /// The app's directory name, shared by its directories in every hierarchy.
    name: std::sync::Arc<str>,
}

impl Dir {
    fn path(&self) -> PathBuf {
        self.base.join(&*self.name)
    }
    /// A file of the directory.
    fn file(&self, f: &str) -> PathBuf {
        let mut p =
            PathBuf::with_capacity(self.base.as_os_str().len() + self.name.len() + f.len() + 2);
        p.push(&self.base.path);
        p.push(&*self.name);
        p.push(f);
        p
    }
    /// Opens one of its files (relative to the base's descriptor).
    fn open(&self, f: &str, flags: libc::c_int) -> std::io::Result<std::os::fd::OwnedFd> {
        self.base.open(&self.name, f, flags)
    }
    /// A small file of the directory (a counter, `cpu.stat`) with one `read` into `buf`; a
    /// longer file is cut at `buf`'s length.
    fn read_small<'b>(&self, f: &str, buf: &'b mut [u8]) -> Option<&'b str> {
        let fd = self.open(f, libc::O_RDONLY).ok()?;
        let n = nix::unistd::read(&fd, buf).ok()?;
        std::str::from_utf8(&buf[..n]).ok()
    }
    fn has(&self, c: &str) -> bool {
        match &*self.kind {
            Kind::V2 { controllers } | Kind::V1 { controllers } => {
                controllers.iter().any(|x| x == c)
            }
            Kind::Unified => false,
        }
    }
    fn is_v2(&self) -> bool {
        matches!(*self.kind, Kind::V2 { .. } | Kind::Unified)
    }
}
