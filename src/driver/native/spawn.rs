//! The parent's side of a spawn: a vfork-style `clone` of paddock onto a small stack of its own,
//! with the child's descriptors parked in the reserved slots for the duration of the clone, all
//! signals blocked around it, the log pipes given to the app's user, and the child's report
//! read before returning the pid. [`spawn`], [`spawn_joined`] (joining cgroups first) and
//! [`spawn_in_app`] (a health check inside a sandboxed app) are the entry points.

use super::child::{ChildArgs, Listen, child_entry, decode_report, read_report};
use super::fds::{
    MAX_LISTEN, PLACEHOLDER, SLOT_ERR, SLOT_EXTRA, SLOT_IN, SLOT_LISTEN, SLOT_NETNS, SLOT_OUT,
    SLOT_REPORT, SLOT_USERNS, Sockets, errno,
};
use super::{Failed, Prepared, SpawnError, Stdio, Step};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    spawn_inner(p, io, join, None, Sockets::default())
}

/// [`spawn_joined`], handing the child `sockets` with the systemd protocol (descriptors from 3,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` set to the child's pid as it sees it: 1 in
/// a sandbox's pid namespace).
pub fn spawn_with_sockets(
    p: &Prepared,
    io: &Stdio,
    join: &[RawFd],
    sockets: Sockets,
) -> Result<libc::pid_t, SpawnError> {
    spawn_inner(p, io, join, None, sockets)
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
    spawn_inner(
        p,
        io,
        join,
        Some((pidfd.as_raw_fd(), rootfd.as_raw_fd())),
        Sockets::default(),
    )
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
    sockets: Sockets,
) -> Result<libc::pid_t, SpawnError> {
    give_pipes(p, io)?;
    let n = sockets.fds.len();
    if n > MAX_LISTEN {
        return Err(SpawnError {
            step: None,
            errno: nix::errno::Errno::EINVAL,
            detail: format!("{n} sockets to hand over; at most {MAX_LISTEN}"),
        });
    }
    // The systemd protocol's variables replace any the app's environment has; LISTEN_PID's
    // digits are written by the child (its pid as it sees it), into `pid_env`.
    let mut pid_env = *b"LISTEN_PID=\0\0\0\0\0\0\0\0\0\0\0\0";
    let pid_base = pid_env.as_mut_ptr();
    let fds_env = CString::new(format!("LISTEN_FDS={n}")).unwrap_or_default();
    let names_env = CString::new(format!("LISTEN_FDNAMES={}", sockets.names)).unwrap_or_default();
    let mut envp: Vec<*const libc::c_char> = vec![];
    p.env_into(&mut envp);
    if n > 0 {
        envp.pop();
        envp.retain(|&e| {
            // SAFETY: every non-null entry `env_into` gives points to a NUL-terminated string
            // that `p` owns (see Prepared).
            let b = unsafe { std::ffi::CStr::from_ptr(e) }.to_bytes();
            !(b.starts_with(b"LISTEN_FDS=")
                || b.starts_with(b"LISTEN_PID=")
                || b.starts_with(b"LISTEN_FDNAMES="))
        });
        envp.extend([
            fds_env.as_ptr(),
            names_env.as_ptr(),
            pid_base.cast_const().cast(),
            std::ptr::null(),
        ]);
    }
    let handover = super::child::Handover {
        envp: envp.as_ptr(),
        // SAFETY: 11 is within `pid_env` (the first digit's place).
        pid_digits: unsafe { pid_base.add(11) },
        n,
    };
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
        for (i, &src) in sockets.fds.iter().enumerate() {
            // SAFETY: as above, the caller's sockets, into the listen slots.
            unsafe { libc::dup3(src, SLOT_LISTEN + i as RawFd, libc::O_CLOEXEC) };
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
            listen: Listen {
                first: SLOT_LISTEN,
                fds: &[],
                handover,
            },
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
            listen: Listen {
                first: -1,
                fds: sockets.fds,
                handover,
            },
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
            for i in 0..n {
                libc::dup3(placeholder, SLOT_LISTEN + i as RawFd, libc::O_CLOEXEC);
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
    drop((envp, fds_env, names_env));
    decode_report(p, &read_report(&rd)).map(|started| started.unwrap_or(pid))
}
