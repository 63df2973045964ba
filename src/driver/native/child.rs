//! The cloned child's side of a spawn, up to execve: only async-signal-safe system calls (join
//! the cgroups, session, signals, stdio, `nofile`, the sandbox or workdir and credentials), and
//! the report it sends back through a close-on-exec pipe when a step fails (step, errno,
//! operation index), decoded by the parent into a [`SpawnError`]. A health check of a sandboxed
//! app first joins the app's sandbox and starts the check in a grandchild (`join_app`).

use super::fds::{CHILD_NOFILE, FIRST_FREE, SLOT_EXTRA, SLOT_IN, errno};
use super::{Failed, Prepared, SANDBOX_STEP, SpawnError, Stdio, Step};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
    listen: &Listen,
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
    // SAFETY: this fn's contract: the vfork-style child with the parent suspended, so `p`, `io`,
    // `join` and `listen` are alive and unchanged; calls take descriptors of our table, the C
    // strings and NULL-terminated pointer arrays of `Prepared` or of the parent's `Handover`
    // (whose `pid_digits` points into the parent's `LISTEN_PID=` buffer, with room for 11
    // digits and the NUL, written only here), and live locals; nothing allocates.
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
        // The sockets (LISTEN_FDS) go first to free descriptors above every slot and above
        // 3 + n, before the readiness descriptor is placed (it may be placed over a listen
        // slot) and before `nofile` (which may leave no room later); the report pipe leaves
        // 3..3+n. They reach 3, 4, … right before execve.
        let h = &listen.handover;
        let n = h.n as RawFd;
        let above = (3 + n).max(FIRST_FREE);
        let mut tmp = [-1 as RawFd; super::fds::MAX_LISTEN];
        if h.n > 0 {
            if (3..3 + n).contains(&report) {
                report = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, above);
                if report < 0 {
                    libc::_exit(127);
                }
            }
            for (i, t) in tmp.iter_mut().enumerate().take(h.n) {
                let src = if listen.first >= 0 {
                    listen.first + i as RawFd
                } else {
                    listen.fds[i]
                };
                *t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
                if *t < 0 {
                    fail(report, Step::Sockets);
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
            for t in tmp.iter_mut().take(h.n) {
                if *t == target {
                    *t = libc::fcntl(*t, libc::F_DUPFD_CLOEXEC, above);
                    if *t < 0 {
                        fail(report, Step::Sockets);
                    }
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
        if h.n > 0 {
            // Into place without close-on-exec (3..3+n holds nothing needed any more: the
            // readiness descriptor is not there, by the configuration's check).
            for (i, &t) in tmp.iter().enumerate().take(h.n) {
                if libc::dup2(t, 3 + i as RawFd) < 0 {
                    fail(report, Step::Sockets);
                }
                libc::close(t);
            }
            // LISTEN_PID: this process's pid as it sees it (1 in a new pid namespace).
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; 10];
            let mut len = 0;
            loop {
                digits[len] = b'0' + (pid % 10) as u8;
                len += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for i in 0..len {
                *h.pid_digits.add(i) = digits[len - 1 - i];
            }
            *h.pid_digits.add(len) = 0;
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), h.envp);
        fail(report, Step::Exec)
    }
}

/// The sockets of a spawn and their environment, prepared by the parent.
#[derive(Clone, Copy)]
pub(super) struct Handover {
    /// The app's environment (`Prepared::env_into`), with `LISTEN_*` when sockets are handed
    /// over: made by the parent before the clone, alive until the child has exec'd.
    pub(super) envp: *const *const libc::c_char,
    /// Where the child writes its pid's digits (inside the parent's `LISTEN_PID=` buffer).
    pub(super) pid_digits: *mut u8,
    pub(super) n: usize,
}

/// Where the sockets are in the child's table: the listen slots from `first` (when paddock
/// spawns with its reserved slots), else the caller's own descriptors `fds`.
#[derive(Clone, Copy)]
pub(super) struct Listen<'a> {
    pub(super) first: RawFd,
    pub(super) fds: &'a [RawFd],
    pub(super) handover: Handover,
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
pub(super) fn decode_report(p: &Prepared, msg: &[u8]) -> Result<Option<libc::pid_t>, SpawnError> {
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
pub(super) fn read_report(fd: &OwnedFd) -> Vec<u8> {
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
pub(super) struct ChildArgs<'a> {
    pub(super) p: &'a Prepared,
    pub(super) io: &'a Stdio,
    pub(super) report: RawFd,
    pub(super) slots: bool,
    /// (user, network) namespace descriptors in the child's table, or -1.
    pub(super) ns: (RawFd, RawFd),
    pub(super) join: &'a [RawFd],
    /// A health check of a sandboxed app: (pidfd of the app, its root directory), and the top
    /// of the stack of the grandchild that runs in the app's pid namespace.
    pub(super) app: Option<(RawFd, RawFd, usize)>,
    pub(super) listen: Listen<'a>,
}

pub(super) extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to a ChildArgs on the parent's stack, which is suspended (vfork)
    // until this child execs or exits.
    let a = unsafe { &*(arg as *const ChildArgs) };
    match a.app {
        // SAFETY: in the vfork-style child, as `child`.
        Some((pidfd, rootfd, stack)) => unsafe { join_app(a, pidfd, rootfd, stack) },
        // SAFETY: as above.
        None => unsafe { child(a.p, a.io, a.report, a.slots, a.join, a.ns, &a.listen) },
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
