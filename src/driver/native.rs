//! Starting a native process: fork, then only async-signal-safe calls in the child (its own
//! session and process group, a clean signal mask and dispositions, stdio, working directory,
//! credentials), then execve. A failure of any step is reported to the parent through a
//! close-on-exec pipe as the step and errno, so "setuid: Operation not permitted" reaches the
//! operator instead of a silent exit 127.
//!
//! Everything the child needs is prepared before fork (`Prepared`), once per app spec, so a
//! restart costs one fork and one exec.

use crate::config::AppSpec;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

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
}

impl Step {
    fn from_u8(n: u8) -> Option<Step> {
        use Step::*;
        [
            Session, Signals, Stdio, Chdir, Setgroups, Setgid, Setuid, Exec,
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
        }
    }
}

#[derive(Debug)]
pub struct SpawnError {
    pub step: Option<Step>,
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

/// Everything the child needs, as C strings and pointer arrays built before fork.
pub struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    workdir: Option<CString>,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    pub display: String,
}

// The raw pointers point into the CStrings owned by the same struct, which never change.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

fn cstring(b: &[u8], what: &str) -> Result<CString, String> {
    CString::new(b).map_err(|_| format!("{what} contains a NUL byte"))
}

impl Prepared {
    pub fn new(spec: &AppSpec) -> Result<Prepared, String> {
        let path = cstring(spec.program.as_os_str().as_bytes(), "program path")?;
        let argv = spec
            .command
            .iter()
            .map(|a| cstring(a.as_bytes(), "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let mut set = |k: &str, v: OsString| {
            env.retain(|(ek, _)| ek != k);
            env.push((k.into(), v));
        };
        if let Some(id) = &spec.identity {
            if let Some(u) = &id.user {
                set("USER", u.into());
                set("LOGNAME", u.into());
            }
            if let Some(h) = &id.home {
                set("HOME", h.clone().into_os_string());
            }
        }
        set("PADDOCK_APP", spec.name.clone().into());
        for (k, v) in &spec.env {
            set(k, v.into());
        }
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut b = k.into_vec();
                b.push(b'=');
                b.extend(v.into_vec());
                cstring(&b, "environment")
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        let envp_ptrs = envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            workdir,
            creds,
            display: spec.command.join(" "),
        })
    }
}

/// File descriptors for the child's fd 0, 1, 2; `None` keeps paddock's own.
#[derive(Clone, Copy, Default)]
pub struct Stdio {
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child side. Only async-signal-safe libc calls: no allocation, no locks.
unsafe fn child(p: &Prepared, io: &Stdio, report: RawFd) -> ! {
    unsafe fn fail(report: RawFd, step: Step) -> ! {
        let e = errno();
        let mut msg = [0u8; 5];
        msg[0] = step as u8;
        msg[1..].copy_from_slice(&e.to_ne_bytes());
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    }
    unsafe {
        if libc::setsid() < 0 {
            fail(report, Step::Session);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
            fail(report, Step::Signals);
        }
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
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
        if let Some(w) = &p.workdir {
            if libc::chdir(w.as_ptr()) < 0 {
                fail(report, Step::Chdir);
            }
        }
        if let Some((uid, gid, groups)) = &p.creds {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                fail(report, Step::Setgroups);
            }
            if libc::setgid(*gid) < 0 {
                fail(report, Step::Setgid);
            }
            if libc::setuid(*uid) < 0 {
                fail(report, Step::Setuid);
            }
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(report, Step::Exec)
    }
}

/// Starts the prepared program; returns its pid once execve has succeeded.
///
/// The child is never waited for here: the caller's reaper owns every exit status (a failed
/// child exits 127 and is reaped like any other pid, unknown to the app table).
pub fn spawn(p: &Prepared, io: &Stdio) -> Result<libc::pid_t, SpawnError> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError {
        step: None,
        errno: e,
        detail: "creating the report pipe".into(),
    })?;
    // SAFETY: the child runs only async-signal-safe code (see `child`) and then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError {
            step: None,
            errno: nix::errno::Errno::last(),
            detail: "fork".into(),
        });
    }
    if pid == 0 {
        unsafe { child(p, io, wr.as_raw_fd()) }
    }
    drop(wr);
    let mut msg = [0u8; 5];
    let mut got = 0;
    while got < msg.len() {
        let n = unsafe {
            libc::read(
                rd.as_raw_fd(),
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
    if got == 0 {
        return Ok(pid);
    }
    let code = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
    let step = Step::from_u8(msg[0]);
    let detail = match step {
        Some(Step::Exec) => p.path.to_string_lossy().into_owned(),
        Some(Step::Chdir) => p
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
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
