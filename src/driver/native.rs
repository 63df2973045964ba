//! Starting a native process: clone (vfork-style), then only async-signal-safe calls in the child (its own
//! session and process group, a clean signal mask and dispositions, stdio, working directory,
//! credentials), then execve. A failure of any step is reported to the parent through a
//! close-on-exec pipe as the step and errno, so "setuid: Operation not permitted" reaches the
//! operator instead of a silent exit 127.
//!
//! Everything the child needs is prepared before the clone (`Prepared`), once per app spec, so a
//! restart costs one clone and one exec.

use crate::config::AppSpec;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

/// The steps of the child between fork and exec, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Session = 1,
    Signals,
    Stdio,
    Chdir,
    Setgroups,
    Setgid,
    Setuid,
    Exec,
    JoinCgroup,
    Nofile,
}

/// Steps of the sandbox are reported as `SANDBOX_STEP + index in sandbox::Step::ALL`.
const SANDBOX_STEP: u8 = 64;

/// Which step failed: one of the driver's own, or one of the sandbox's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    Spawn(Step),
    Sandbox(crate::sandbox::Step),
}

impl Failed {
    pub fn name(self) -> &'static str {
        match self {
            Failed::Spawn(s) => s.name(),
            Failed::Sandbox(s) => s.name(),
        }
    }
    fn from_u8(n: u8) -> Option<Failed> {
        if n >= SANDBOX_STEP {
            return crate::sandbox::Step::ALL
                .get((n - SANDBOX_STEP) as usize)
                .map(|s| Failed::Sandbox(*s));
        }
        Step::from_u8(n).map(Failed::Spawn)
    }
}

impl Step {
    fn from_u8(n: u8) -> Option<Step> {
        use Step::*;
        [
            Session, Signals, Stdio, Chdir, Setgroups, Setgid, Setuid, Exec, JoinCgroup, Nofile,
        ]
        .into_iter()
        .find(|s| *s as u8 == n)
    }
    pub fn name(self) -> &'static str {
        match self {
            Step::Session => "setsid",
            Step::Signals => "reset signals",
            Step::Stdio => "set up stdin/stdout/stderr",
            Step::Chdir => "chdir to workdir",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Exec => "execve",
            Step::JoinCgroup => "join cgroup",
            Step::Nofile => "setrlimit RLIMIT_NOFILE",
        }
    }
}

#[derive(Debug)]
pub struct SpawnError {
    pub step: Option<Failed>,
    pub errno: nix::errno::Errno,
    pub detail: String,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "{}: {}", s.name(), self.errno.desc())?,
            None => write!(f, "{}", self.errno.desc())?,
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

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
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _base: BaseEnv,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    workdir: Option<CString>,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Level `sandbox`: namespaces, root filesystem, Landlock, capabilities, seccomp.
    sandbox: Option<Arc<crate::sandbox::Plan>>,
    /// An exec health check of a sandboxed app: it joins the app's sandbox (namespaces, root,
    /// cgroup) instead of making one, then is confined like the app.
    joins_app: bool,
    /// The level the app runs at (a sandboxed app may have fallen back).
    pub level: crate::config::Isolation,
    /// Why the app runs at its fallback level instead of `sandbox`.
    pub fallback: Option<String>,
    /// `[limits] nofile`: soft and hard RLIMIT_NOFILE (instead of paddock's original limit).
    nofile: Option<u64>,
}

// SAFETY: the only raw pointers (argv_ptrs, envp_ptrs) point into CStrings this struct owns (_argv,
// _envp, _base's Arc): their heap buffers do not move with the struct and are never changed after
// new(). Prepared is not Clone, so no copy outlives them.
unsafe impl Send for Prepared {}
// SAFETY: as for Send: shared references only read those immutable strings (execve in the child).
unsafe impl Sync for Prepared {}

fn cstring(b: &[u8], what: &str) -> Result<CString, String> {
    CString::new(b).map_err(|_| format!("{what} contains a NUL byte"))
}

impl Prepared {
    pub fn new(spec: &AppSpec, base: &BaseEnv) -> Result<Prepared, String> {
        use crate::config::Isolation;
        // Level `sandbox`: its plan, or the fallback level when the host cannot give it.
        let (mut level, mut fallback, mut sandbox) = (spec.isolation, None, None);
        if spec.isolation == Isolation::Sandbox {
            let (Some(sb), Some(b)) = (&spec.sandbox, &spec.bundle) else {
                return Err("a sandboxed app needs its bundle and [sandbox] settings".into());
            };
            let workdir = spec.workdir.as_deref();
            match crate::sandbox::Plan::new(
                &spec.name,
                sb,
                &b.root(),
                spec.identity.as_ref(),
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
                    c.bundle = Some(l);
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
        let plan = crate::bundle::launch::plan_for(spec, sandbox.is_some());
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
        let envp_ptrs = base
            .0
            .iter()
            .filter(|kv| !clean && !overridden(kv))
            .chain(envp.iter())
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
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
            _base: base.clone(),
            _envp: envp,
            envp_ptrs,
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

/// File descriptors for the child's fd 0, 1, 2 (`None` keeps paddock's own), and optionally one
/// more descriptor handed over at a chosen number (the s6-style readiness descriptor).
#[derive(Clone, Copy, Default)]
pub struct Stdio {
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
    /// (paddock's descriptor, number in the child)
    pub extra: Option<(RawFd, RawFd)>,
}

/// The open-file limit children get: paddock raises its own (it holds a few descriptors per
/// app) but gives apps the limit it was started with, as systemd does.
static CHILD_NOFILE: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(u64::MAX),
    std::sync::atomic::AtomicU64::new(u64::MAX),
];

pub fn set_child_nofile(soft: u64, hard: u64) {
    CHILD_NOFILE[0].store(soft, std::sync::atomic::Ordering::Relaxed);
    CHILD_NOFILE[1].store(hard, std::sync::atomic::Ordering::Relaxed);
}

/// Descriptors 3..=7 are kept for handing stdin, stdout, stderr, the report pipe and the extra
/// descriptor to a child
/// (see `reserve_low_fds`).
const SLOT_IN: RawFd = 3;
const SLOT_OUT: RawFd = 4;
const SLOT_ERR: RawFd = 5;
const SLOT_REPORT: RawFd = 6;
const SLOT_EXTRA: RawFd = 7;
/// A sandboxed app's prepared user and network namespaces.
const SLOT_USERNS: RawFd = 8;
const SLOT_NETNS: RawFd = 9;
const FIRST_FREE: RawFd = 10;
static PLACEHOLDER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Makes spawning cost the same with 10 or 10,000 open descriptors in paddock.
///
/// A plain fork or vfork copies paddock's descriptor table and the exec then closes every
/// close-on-exec entry: with a few descriptors per app that is O(apps) per spawn. Instead, the
/// child is cloned with `CLONE_FILES` (sharing the table) and its first act is
/// `close_range(FIRST_FREE, ~0, CLOSE_RANGE_UNSHARE)`, which gives it a private table holding only
/// descriptors 0..=9. For that, 3..=9 are parked on /dev/null here and the parent points them at
/// the child's stdio and report pipe just for the duration of the clone (it is suspended until
/// the exec, and only the supervisor thread spawns).
///
/// Call once, early (whatever was at 3..=6 is moved higher and made close-on-exec).
pub fn reserve_low_fds() -> std::io::Result<()> {
    // SAFETY: open with a C-string literal, and fcntl/dup3/close on descriptor numbers. dup3 swaps
    // what is at 3..=9 under its owner, so this runs before paddock opens anything it keeps
    // (serve() takes its lock files right after it).
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let placeholder = libc::fcntl(null, libc::F_DUPFD_CLOEXEC, 64);
        libc::close(null);
        if placeholder < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for slot in SLOT_IN..=SLOT_NETNS {
            if libc::fcntl(slot, libc::F_GETFD) >= 0
                && libc::fcntl(slot, libc::F_DUPFD_CLOEXEC, FIRST_FREE) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup3(placeholder, slot, libc::O_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        PLACEHOLDER.store(placeholder, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child side. Only async-signal-safe libc calls: no allocation, no locks.
///
/// # Safety
/// Only in the child of the vfork-style clone in `spawn_inner`, before exec: it shares paddock's
/// memory and (with `slots`) descriptor table, and the parent, suspended until the exec or exit,
/// keeps `p`, `io` and `join` alive. It never returns.
unsafe fn child(
    p: &Prepared,
    io: &Stdio,
    mut report: RawFd,
    slots: bool,
    join: &[RawFd],
    ns: (RawFd, RawFd),
) -> ! {
    /// # Safety
    /// Only in the cloned child: writes the report to `report` and `_exit`s.
    unsafe fn report_and_exit(report: RawFd, step: u8, e: i32, idx: u16) -> ! {
        let msg = report_msg(step, e, idx);
        // SAFETY: write reads `msg`, a live local; _exit ends the child without unwinding or atexit
        // handlers.
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    }
    /// # Safety
    /// As `report_and_exit`.
    unsafe fn fail(report: RawFd, step: Step) -> ! {
        // SAFETY: fail's contract is report_and_exit's.
        unsafe { report_and_exit(report, step as u8, errno(), 0) }
    }
    // SAFETY: this fn's contract: the vfork-style child with the parent suspended, so `p`, `io` and
    // `join` are alive and unchanged; calls take descriptors of our table, the C strings and
    // NULL-terminated pointer arrays of `Prepared`, and live locals; nothing allocates.
    unsafe {
        // Into the app's cgroups first, before anything is allocated or exec'd (memory is
        // charged to the cgroup a process is in when it is touched), and while the descriptor
        // table is still shared with paddock, which holds the `cgroup.procs` descriptors.
        for &fd in join {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(report, Step::JoinCgroup);
            }
        }
        if slots
            && libc::syscall(
                libc::SYS_close_range,
                FIRST_FREE as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) < 0
        {
            fail(report, Step::Stdio);
        }
        if libc::setsid() < 0 {
            fail(report, Step::Session);
        }
        // Default dispositions first (paddock's handlers must never run here), then unblock.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
            fail(report, Step::Signals);
        }
        for (src, dst) in [(io.stdin, 0), (io.stdout, 1), (io.stderr, 2)] {
            if let Some(src) = src {
                let r = if src == dst {
                    libc::fcntl(dst, libc::F_SETFD, 0)
                } else {
                    libc::dup2(src, dst)
                };
                if r < 0 {
                    fail(report, Step::Stdio);
                }
            }
        }
        let soft = CHILD_NOFILE[0].load(std::sync::atomic::Ordering::Relaxed);
        if let Some(n) = p.nofile {
            let rl = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) < 0 {
                fail(report, Step::Nofile);
            }
        } else if soft != u64::MAX {
            let rl = libc::rlimit {
                rlim_cur: soft,
                rlim_max: CHILD_NOFILE[1].load(std::sync::atomic::Ordering::Relaxed),
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
        if let Some((src, target)) = io.extra {
            if target == report {
                report = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, FIRST_FREE);
                if report < 0 {
                    libc::_exit(127);
                }
            }
            let r = if src == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if r < 0 {
                fail(report, Step::Stdio);
            }
        }
        if slots {
            let keep = io.extra.map_or(-1, |(_, t)| t);
            for fd in SLOT_IN..=SLOT_EXTRA {
                if fd != keep && fd != report {
                    libc::close(fd);
                }
            }
        }
        if let Some(sb) = &p.sandbox {
            // Namespaces, root filesystem, user, capabilities, Landlock, seccomp, workdir (a
            // health check joined the app's namespaces and root already: only the last steps).
            let r = if p.joins_app {
                sb.confine(ns.0)
            } else {
                sb.enter(ns.0, ns.1)
            };
            if let Err(f) = r {
                let n = crate::sandbox::Step::ALL
                    .iter()
                    .position(|s| *s == f.step)
                    .unwrap_or(0) as u8;
                report_and_exit(report, SANDBOX_STEP + n, f.errno, f.idx);
            }
        } else if let Some(w) = &p.workdir
            && libc::chdir(w.as_ptr()) < 0
        {
            fail(report, Step::Chdir);
        }
        if let (None, Some((uid, gid, groups))) = (&p.sandbox, &p.creds) {
            // Raw syscalls: glibc's wrappers would apply the change to paddock's other threads.
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                fail(report, Step::Setgroups);
            }
            if libc::syscall(libc::SYS_setgid, *gid) < 0 {
                fail(report, Step::Setgid);
            }
            if libc::syscall(libc::SYS_setuid, *uid) < 0 {
                fail(report, Step::Setuid);
            }
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(report, Step::Exec)
    }
}

/// A report: step, errno, index of the operation (sandbox steps).
const REPORT_LEN: usize = 7;

/// The bytes of a report: `step`, then `n` (an errno, or the pid with `STARTED`), then `idx`.
fn report_msg(step: u8, n: i32, idx: u16) -> [u8; REPORT_LEN] {
    let mut msg = [0u8; REPORT_LEN];
    msg[0] = step;
    msg[1..5].copy_from_slice(&n.to_ne_bytes());
    msg[5..7].copy_from_slice(&idx.to_ne_bytes());
    msg
}
/// A report's first byte when it says "started as pid N" (bytes 1..5): a health check that
/// joined an app's pid namespace runs in a grandchild, whose pid the child reports.
const STARTED: u8 = 0xff;

/// Decodes a report pipe's content: empty = exec succeeded; `STARTED` = exec succeeded in the
/// pid reported.
fn decode_report(p: &Prepared, msg: &[u8]) -> Result<Option<libc::pid_t>, SpawnError> {
    if msg.len() < REPORT_LEN {
        return Ok(None);
    }
    if msg[0] == STARTED {
        return Ok(Some(i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]])));
    }
    let code = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
    let idx = u16::from_ne_bytes([msg[5], msg[6]]);
    let step = Failed::from_u8(msg[0]);
    let detail = match step {
        Some(Failed::Sandbox(s)) => p
            .sandbox
            .as_ref()
            .map(|sb| sb.describe(s, idx))
            .unwrap_or_default(),
        Some(Failed::Spawn(Step::Exec)) => p.path.to_string_lossy().into_owned(),
        Some(Failed::Spawn(Step::Nofile)) => format!("nofile = {}", p.nofile.unwrap_or(0)),
        Some(Failed::Spawn(Step::Chdir)) => p
            .workdir
            .as_ref()
            .map(|w| w.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Err(SpawnError {
        step,
        errno: nix::errno::Errno::from_raw(code),
        detail,
    })
}

/// Reads a report pipe to EOF (blocking).
fn read_report(fd: &OwnedFd) -> Vec<u8> {
    let mut msg = [0u8; REPORT_LEN];
    let mut got = 0;
    while got < msg.len() {
        // SAFETY: reads at most len - got bytes into msg[got..], inside the array; the pipe is
        // ours.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                msg[got..].as_mut_ptr().cast(),
                msg.len() - got,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    msg[..got].to_vec()
}

#[derive(Clone, Copy)]
struct ChildArgs<'a> {
    p: &'a Prepared,
    io: &'a Stdio,
    report: RawFd,
    slots: bool,
    /// (user, network) namespace descriptors in the child's table, or -1.
    ns: (RawFd, RawFd),
    join: &'a [RawFd],
    /// A health check of a sandboxed app: (pidfd of the app, its root directory), and the top
    /// of the stack of the grandchild that runs in the app's pid namespace.
    app: Option<(RawFd, RawFd, usize)>,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to a ChildArgs on the parent's stack, which is suspended (vfork)
    // until this child execs or exits.
    let a = unsafe { &*(arg as *const ChildArgs) };
    match a.app {
        // SAFETY: in the vfork-style child, as `child`.
        Some((pidfd, rootfd, stack)) => unsafe { join_app(a, pidfd, rootfd, stack) },
        // SAFETY: as above.
        None => unsafe { child(a.p, a.io, a.report, a.slots, a.join, a.ns) },
    }
}

/// A health check's first child: joins the app's cgroup, namespaces and root, then starts the
/// check in a grandchild (a process joins a pid namespace only through its children), whose
/// parent is paddock (`CLONE_PARENT`), reports its pid and exits. System calls only.
///
/// # Safety
/// As `child`: only in the vfork-style child; `stack` is the top of a free stack region for the
/// grandchild, and `pidfd`/`rootfd` are open.
unsafe fn join_app(a: &ChildArgs, pidfd: RawFd, rootfd: RawFd, stack: usize) -> ! {
    /// # Safety
    /// Only in the cloned child: writes `msg` to `fd` and `_exit`s.
    unsafe fn report(fd: RawFd, msg: [u8; REPORT_LEN]) -> ! {
        // SAFETY: write reads `msg`, a live local; _exit ends the child without unwinding.
        unsafe {
            libc::write(fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(0)
        }
    }
    // SAFETY: this fn's contract: `a` points into the suspended parent's frame; `next` stays on
    // this child's stack until the grandchild (CLONE_VFORK) has exec'd or exited, on `stack`; only
    // system calls, no allocation.
    unsafe {
        // sandbox::Step::JoinApp is the first of the sandbox's steps.
        let join_step = SANDBOX_STEP;
        for &fd in a.join {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                report(a.report, report_msg(Step::JoinCgroup as u8, errno(), 0));
            }
        }
        let Some(sb) = &a.p.sandbox else {
            libc::_exit(127)
        };
        if let Err(f) = sb.join(pidfd, rootfd) {
            report(a.report, report_msg(join_step, f.errno, f.idx));
        }
        let next = ChildArgs {
            app: None,
            join: &[],
            ..*a
        };
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT | libc::SIGCHLD;
        if a.slots {
            flags |= libc::CLONE_FILES;
        }
        let pid = libc::clone(
            child_entry,
            stack as *mut libc::c_void,
            flags,
            &next as *const ChildArgs as *mut libc::c_void,
        );
        if pid < 0 {
            report(a.report, report_msg(join_step, errno(), 0));
        }
        // The grandchild has exec'd (or reported its failure, which the parent reads first).
        report(a.report, report_msg(STARTED, pid, 0))
    }
}

/// The child's stack: it runs a few syscalls only (a sandbox's set-up, a few more).
const CHILD_STACK: usize = 64 * 1024;
const SANDBOX_STACK: usize = 256 * 1024;

/// Starts the prepared program; returns its pid once execve has succeeded, or the step that
/// failed with its errno.
///
/// Like posix_spawn, the child is created with `clone(CLONE_VM | CLONE_VFORK)`: it borrows
/// paddock's memory on a stack of its own and paddock waits (microseconds) until it has exec'd.
/// A fork would copy paddock's page tables, which grow with the number of apps, and then take
/// copy-on-write faults; this costs the same whether paddock supervises 1 app or 1000. All signals
/// are blocked around the clone so no handler of paddock's runs in the child, and the child uses
/// raw syscalls for credentials (glibc's setuid would try to signal paddock's other threads).
///
/// The child is never waited for here: the caller's reaper owns every exit status (a child whose
/// exec failed exits 127 and is reaped like any pid unknown to the app table).
pub fn spawn(p: &Prepared, io: &Stdio) -> Result<libc::pid_t, SpawnError> {
    spawn_joined(p, io, &[])
}

/// [`spawn`], with the child joining cgroups before anything else: `join` holds paddock's
/// descriptors of each cgroup's `cgroup.procs` (opened O_WRONLY once per app), and the child
/// writes "0" to each. A failure is reported as the step "join cgroup".
pub fn spawn_joined(p: &Prepared, io: &Stdio, join: &[RawFd]) -> Result<libc::pid_t, SpawnError> {
    spawn_inner(p, io, join, None)
}

/// An exec health check of a sandboxed app (`Prepared::check_in`), started inside the app's
/// sandbox: `join` are the app's `cgroup.procs`, `app_pid` its first process (the init of its
/// pid namespace). Returns the check's pid.
pub fn spawn_in_app(
    p: &Prepared,
    io: &Stdio,
    join: &[RawFd],
    app_pid: libc::pid_t,
) -> Result<libc::pid_t, SpawnError> {
    let err = |detail: &str| SpawnError {
        step: Some(Failed::Sandbox(crate::sandbox::Step::JoinApp)),
        errno: nix::errno::Errno::last(),
        detail: detail.into(),
    };
    // SAFETY: plain system calls; the descriptors are owned right after.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, app_pid, 0) } as RawFd;
    if pidfd < 0 {
        return Err(err("pidfd_open of the app"));
    }
    // SAFETY: pidfd is a new descriptor of ours.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let root = CString::new(format!("/proc/{app_pid}/root")).map_err(|_| err("root"))?;
    // SAFETY: a NUL-terminated path.
    let rootfd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if rootfd < 0 {
        return Err(err("the app's root"));
    }
    // SAFETY: rootfd is a new descriptor of ours.
    let rootfd = unsafe { OwnedFd::from_raw_fd(rootfd) };
    spawn_inner(p, io, join, Some((pidfd.as_raw_fd(), rootfd.as_raw_fd())))
}

/// Gives the pipes among the child's descriptors to the user it runs as.
///
/// A pipe belongs to its creator with mode 0600, so a process of another user cannot reopen it
/// through `/proc/self/fd/1` — which is what opening `/dev/stdout` or `/dev/stderr` does (nginx's
/// `access_log /dev/stdout`, `sh -c 'echo x > /dev/stdout'`): EACCES. The pipe goes to the app's
/// host ids (in a user namespace, those its ids are mapped to, so that the pipe's owner is
/// mapped there). Only pipes are touched (paddock's own stdout, with `stdout = "inherit"`, is
/// never handed over this way), and only when their owner differs.
fn give_pipes(p: &Prepared, io: &Stdio) -> Result<(), SpawnError> {
    let Some((uid, gid)) = p.stdio_owner() else {
        return Ok(());
    };
    for fd in [io.stdout, io.stderr, io.extra.map(|(fd, _)| fd)]
        .into_iter()
        .flatten()
    {
        // SAFETY: fstat of a descriptor the caller keeps open, into a zeroed stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0
            || st.st_mode & libc::S_IFMT != libc::S_IFIFO
            || (st.st_uid == uid && st.st_gid == gid)
        {
            continue;
        }
        // SAFETY: fchown of the same descriptor; it changes only the pipe's (anonymous) inode.
        if unsafe { libc::fchown(fd, uid, gid) } != 0 {
            return Err(SpawnError {
                step: Some(Failed::Spawn(Step::Stdio)),
                errno: nix::errno::Errno::last(),
                detail: format!("giving the log pipe to uid {uid}, gid {gid}"),
            });
        }
    }
    Ok(())
}

fn spawn_inner(
    p: &Prepared,
    io: &Stdio,
    join: &[RawFd],
    app: Option<(RawFd, RawFd)>,
) -> Result<libc::pid_t, SpawnError> {
    give_pipes(p, io)?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError {
        step: None,
        errno: e,
        detail: "creating the report pipe".into(),
    })?;
    let size = if p.sandbox.is_some() {
        SANDBOX_STACK
    } else {
        CHILD_STACK
    };
    // A health check joining an app: a second stack below, for the grandchild.
    let mut stack = vec![0u8; if app.is_some() { 2 * size } else { size }];
    // SAFETY: add(len) is one past the end of `stack`'s allocation, which is allowed.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as usize & !15;
    let app = app.map(|(pidfd, rootfd)| {
        // SAFETY: within the allocation.
        let second = unsafe { stack.as_mut_ptr().add(size) } as usize & !15;
        (pidfd, rootfd, second)
    });
    let placeholder = PLACEHOLDER.load(std::sync::atomic::Ordering::SeqCst);
    let slots = placeholder >= 0;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let userns = p
        .sandbox
        .as_ref()
        .and_then(|s| s.userns.as_ref())
        .map_or(-1, |fd| fd.as_raw_fd());
    let netns = p
        .sandbox
        .as_ref()
        .and_then(|s| s.netns.as_ref())
        .map_or(-1, |fd| fd.as_raw_fd());
    if let Some(sb) = p.sandbox.as_ref().filter(|_| !p.joins_app) {
        flags |= sb.clone_flags;
    }
    let slot_io;
    let args = if slots {
        flags |= libc::CLONE_FILES;
        for (slot, src) in [
            (SLOT_IN, io.stdin),
            (SLOT_OUT, io.stdout),
            (SLOT_ERR, io.stderr),
        ] {
            if let Some(src) = src {
                // SAFETY: dup3 onto a slot that reserve_low_fds parked on /dev/null (nothing reads
                // or writes it there), from a descriptor the caller keeps open for the call.
                unsafe { libc::dup3(src, slot, libc::O_CLOEXEC) };
            }
        }
        // SAFETY: as above, from our report pipe's write end.
        unsafe { libc::dup3(wr.as_raw_fd(), SLOT_REPORT, libc::O_CLOEXEC) };
        if let Some((src, _)) = io.extra {
            // SAFETY: as above, the caller's extra descriptor.
            unsafe { libc::dup3(src, SLOT_EXTRA, libc::O_CLOEXEC) };
        }
        if userns >= 0 {
            // SAFETY: as above, the plan's user namespace descriptor.
            unsafe { libc::dup3(userns, SLOT_USERNS, libc::O_CLOEXEC) };
        }
        if netns >= 0 {
            // SAFETY: as above, the plan's network namespace descriptor.
            unsafe { libc::dup3(netns, SLOT_NETNS, libc::O_CLOEXEC) };
        }
        slot_io = Stdio {
            stdin: io.stdin.map(|_| SLOT_IN),
            stdout: io.stdout.map(|_| SLOT_OUT),
            stderr: io.stderr.map(|_| SLOT_ERR),
            extra: io.extra.map(|(_, t)| (SLOT_EXTRA, t)),
        };
        ChildArgs {
            p,
            io: &slot_io,
            report: SLOT_REPORT,
            slots,
            ns: (SLOT_USERNS, SLOT_NETNS),
            join,
            app,
        }
    } else {
        ChildArgs {
            p,
            io,
            report: wr.as_raw_fd(),
            slots,
            ns: (userns, netns),
            join,
            app,
        }
    };
    // SAFETY: sigsets are live locals; the child runs child_entry on the top of `stack` (dropped
    // only after this) with `args`, in this frame, and CLONE_VFORK suspends us until it has exec'd
    // or exited; all signals are blocked so no handler of ours runs in it.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_entry,
            top as *mut libc::c_void,
            flags,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        let e = errno();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if slots {
            // Park the slots again: paddock must not keep the child's pipe ends open.
            for slot in SLOT_IN..=SLOT_NETNS {
                libc::dup3(placeholder, slot, libc::O_CLOEXEC);
            }
        }
        if pid < 0 {
            return Err(SpawnError {
                step: None,
                errno: nix::errno::Errno::from_raw(e),
                detail: "clone".into(),
            });
        }
        pid
    };
    drop(wr);
    drop(stack);
    decode_report(p, &read_report(&rd)).map(|started| started.unwrap_or(pid))
}

/// A pipe whose read end paddock keeps (non-blocking) and whose write end the children get.
pub fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    // The write end must block for the child: clear O_NONBLOCK on it.
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    Ok((r, w))
}

/// /dev/null, opened once, for every child's stdin.
pub fn dev_null() -> std::io::Result<OwnedFd> {
    // SAFETY: open with a C-string literal.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is the new descriptor just opened; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
