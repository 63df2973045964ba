//! Descriptors handed to children: [`Stdio`] (fd 0, 1, 2 and one extra), the open-file limit
//! children get, the low descriptor slots reserved so that a spawn costs the same with 10 or
//! 10,000 descriptors open in paddock ([`reserve_low_fds`]), and the pipes and /dev/null that
//! become a child's stdio.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
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
pub(super) static CHILD_NOFILE: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(u64::MAX),
    std::sync::atomic::AtomicU64::new(u64::MAX),
];

pub fn set_child_nofile(soft: u64, hard: u64) {
    CHILD_NOFILE[0].store(soft, std::sync::atomic::Ordering::Relaxed);
    CHILD_NOFILE[1].store(hard, std::sync::atomic::Ordering::Relaxed);
}

/// Descriptors 3..=25 are kept for handing a child its stdin, stdout, stderr, the report pipe,
/// the extra descriptor, a sandboxed app's user and network namespaces, and its sockets (see
/// `reserve_low_fds`).
pub(super) const SLOT_IN: RawFd = 3;
pub(super) const SLOT_OUT: RawFd = 4;
pub(super) const SLOT_ERR: RawFd = 5;
pub(super) const SLOT_REPORT: RawFd = 6;
pub(super) const SLOT_EXTRA: RawFd = 7;
/// A sandboxed app's prepared user and network namespaces.
pub(super) const SLOT_USERNS: RawFd = 8;
pub(super) const SLOT_NETNS: RawFd = 9;
/// The sockets handed over with `LISTEN_FDS` (`[[listen]]`), at most `MAX_LISTEN` of them.
pub(super) const SLOT_LISTEN: RawFd = 10;
pub const MAX_LISTEN: usize = crate::config::listen::MAX_LISTEN;
pub(super) const FIRST_FREE: RawFd = SLOT_LISTEN + MAX_LISTEN as RawFd;
pub(super) static PLACEHOLDER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Makes spawning cost the same with 10 or 10,000 open descriptors in paddock.
///
/// A plain fork or vfork copies paddock's descriptor table and the exec then closes every
/// close-on-exec entry: with a few descriptors per app that is O(apps) per spawn. Instead, the
/// child is cloned with `CLONE_FILES` (sharing the table) and its first act is
/// `close_range(FIRST_FREE, ~0, CLOSE_RANGE_UNSHARE)`, which gives it a private table holding only
/// descriptors 0..FIRST_FREE. For that, 3..FIRST_FREE are parked on /dev/null here and the parent points them at
/// the child's stdio and report pipe just for the duration of the clone (it is suspended until
/// the exec, and only the supervisor thread spawns).
///
/// Call once, early (whatever was at 3..FIRST_FREE is moved higher and made close-on-exec).
pub fn reserve_low_fds() -> std::io::Result<()> {
    // SAFETY: open with a C-string literal, and fcntl/dup3/close on descriptor numbers. dup3 swaps
    // what is at 3..FIRST_FREE under its owner, so this runs before paddock opens anything it keeps
    // (serve() takes its lock files right after it).
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let placeholder = libc::fcntl(null, libc::F_DUPFD_CLOEXEC, 64.max(FIRST_FREE));
        libc::close(null);
        if placeholder < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for slot in SLOT_IN..FIRST_FREE {
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

/// Sockets handed to a child with the systemd protocol: `fds[i]` becomes descriptor 3 + i,
/// `LISTEN_FDS`, `LISTEN_FDNAMES` (`names`, ':'-separated) and `LISTEN_PID` are set.
#[derive(Clone, Copy, Default)]
pub struct Sockets<'a> {
    pub fds: &'a [RawFd],
    pub names: &'a str,
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
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
