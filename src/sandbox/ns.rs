//! Namespaces made in the parent and held by a descriptor, so the child only joins them: a
//! network namespace with loopback up (kept across the app's restarts) and a user namespace
//! with the app's id maps, each made by a helper cloned into it (`ns_helper`).

use super::child::loopback_up;
use super::errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
/// A network namespace with loopback up, held by a descriptor: a helper cloned into it (sharing
/// our memory and descriptor table) brings `lo` up, opens its namespace into our table and exits.
pub(super) fn make_netns(low_ports: bool) -> Result<OwnedFd, String> {
    use std::sync::atomic::{AtomicI32, Ordering};
    struct Shared {
        fd: AtomicI32,
        err: AtomicI32,
        low_ports: bool,
    }
    extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is `&shared` of make_netns, whose frame stays alive until ns_helper has
        // reaped this helper; its mutable fields are atomics.
        let sh = unsafe { &*(arg as *const Shared) };
        // SAFETY: the helper shares our memory (CLONE_VM) on its own stack and runs beside us: it
        // only makes system calls with C-string literals, stores to atomics and _exits; it never
        // allocates or locks.
        unsafe {
            if !loopback_up() {
                sh.err.store(errno().max(1), Ordering::SeqCst);
                libc::_exit(1)
            }
            if sh.low_ports {
                // A net sysctl file acts on the network namespace of whoever writes it.
                let fd = libc::open(
                    c"/proc/sys/net/ipv4/ip_unprivileged_port_start".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    sh.err.store(errno().max(1), Ordering::SeqCst);
                    libc::_exit(1)
                }
                libc::close(fd);
            }
            let fd = libc::open(
                c"/proc/self/ns/net".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                sh.err.store(errno().max(1), Ordering::SeqCst);
                libc::_exit(1)
            }
            sh.fd.store(fd, Ordering::SeqCst);
            libc::_exit(0)
        }
    }
    let shared = Shared {
        fd: AtomicI32::new(-1),
        err: AtomicI32::new(0),
        low_ports,
    };
    ns_helper(
        "network namespace",
        helper,
        libc::CLONE_NEWNET,
        &shared as *const Shared as *mut libc::c_void,
        |_| (),
    )?;
    match (
        shared.fd.load(Ordering::SeqCst),
        shared.err.load(Ordering::SeqCst),
    ) {
        // SAFETY: `fd` was opened by the helper into our shared descriptor table (CLONE_FILES);
        // nothing else owns it.
        (fd, _) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        (_, e) => Err(format!(
            "network namespace: bringing loopback up: {}",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}
/// A user namespace with these uid and gid maps, held by a descriptor: a helper is cloned into
/// a new user namespace, its maps written from here, the namespace opened, and the helper let
/// go (it shares our descriptor table, so closing the pipe's write end here ends its wait).
pub(super) fn make_userns(uid_map: &str, gid_map: &str) -> Result<OwnedFd, String> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("user namespace: pipe: {}", e.desc()))?;
    extern "C" fn wait_for_parent(arg: *mut libc::c_void) -> libc::c_int {
        let fd = arg as usize as RawFd;
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a live local from the pipe's read end, which make_userns
        // keeps open until the helper is reaped; then _exit. No allocation.
        unsafe {
            libc::read(fd, b.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        }
    }
    let arg = rd.as_raw_fd() as usize as *mut libc::c_void;
    ns_helper(
        "user namespace",
        wait_for_parent,
        libc::CLONE_NEWUSER,
        arg,
        |pid| {
            let result = (|| {
                for (file, data) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                    std::fs::write(format!("/proc/{pid}/{file}"), data)
                        .map_err(|e| format!("user namespace: writing {file}: {e}"))?;
                }
                // SAFETY: open with a NUL-terminated CString, a temporary alive until the call
                // returns.
                let fd = unsafe {
                    libc::open(
                        CString::new(format!("/proc/{pid}/ns/user"))
                            .map_err(|e| e.to_string())?
                            .as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(format!(
                        "user namespace: open: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                // SAFETY: `fd` is the new descriptor just opened; nothing else owns it.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })();
            // The helper shares our descriptor table: closing the write end ends its wait.
            drop(wr);
            result
        },
    )?
}

/// Runs `entry(arg)` in a helper cloned into a new namespace (`ns_flag`), sharing our memory
/// and descriptor table; `meanwhile(pid)` runs here before the helper is waited for.
fn ns_helper<T>(
    what: &str,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    ns_flag: libc::c_int,
    arg: *mut libc::c_void,
    meanwhile: impl FnOnce(libc::pid_t) -> T,
) -> Result<T, String> {
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: add(len) is one past the end of `stack`'s allocation, which is allowed.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as usize & !15;
    // SAFETY: `stack` is freed only after the waitpid below; `entry` and `arg` come from this
    // file's two callers, whose helpers only make system calls and touch `arg` while it is alive.
    let pid = unsafe {
        libc::clone(
            entry,
            top as *mut libc::c_void,
            ns_flag | libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
            arg,
        )
    };
    if pid < 0 {
        return Err(format!(
            "{what}: clone: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The helper runs on `stack` until it exits: it is waited for before the stack can go, even
    // if `meanwhile` panics (the panic goes on afterwards).
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| meanwhile(pid)));
    // SAFETY: waitpid writes only to `st`, a live local; `pid` is the helper cloned above.
    unsafe {
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
    }
    drop(stack);
    match out {
        Ok(out) => Ok(out),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
