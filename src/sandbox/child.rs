//! A sandbox's system calls in the child of the spawn, between its stdio set-up and exec, in
//! the order the module documentation gives: namespaces, uid/gid maps, mounts and
//! `pivot_root`, hostname and loopback (`enter`); joining a running app's sandbox for a health
//! check (`join`); then user namespace, capabilities, user, workdir, `no_new_privs`, Landlock
//! and seccomp (`confine`). No allocation: only system calls on data the plan holds.

use super::{Fail, Plan, Step, errno, fail};
use std::os::fd::RawFd;

impl Plan {
    /// The child's part, between its stdio set-up and exec. `userns_fd`: where the prepared user
    /// namespace is in the child's descriptor table.
    ///
    /// # Safety
    /// Only in the child of `driver::native::spawn`: system calls, no allocation.
    pub unsafe fn enter(&self, userns_fd: RawFd, netns_fd: RawFd) -> Result<(), Fail> {
        // SAFETY: the caller upholds this fn's contract (the vfork-style child, before exec): every
        // call takes descriptors of the child's table, NUL-terminated C strings the plan owns or
        // literals, and pointers to live locals; nothing allocates.
        unsafe {
            if self.netns.is_some() && libc::setns(netns_fd, libc::CLONE_NEWNET) < 0 {
                return Err(fail(Step::Loopback, 0));
            }
            if libc::unshare(libc::CLONE_NEWCGROUP) < 0 {
                return Err(fail(Step::CgroupNs, 0));
            }
            if let Some((uid_map, gid_map)) = &self.self_maps {
                for (file, data) in [
                    (c"/proc/self/setgroups", c"deny"),
                    (c"/proc/self/uid_map", uid_map.as_c_str()),
                    (c"/proc/self/gid_map", gid_map.as_c_str()),
                ] {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(fail(Step::UserMap, 0));
                    }
                    let b = data.to_bytes();
                    if libc::write(fd, b.as_ptr().cast(), b.len()) < 0 {
                        return Err(fail(Step::UserMap, 0));
                    }
                    libc::close(fd);
                }
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) < 0
            {
                return Err(fail(Step::Mount, usize::MAX));
            }
            for (i, op) in self.fs.ops.iter().enumerate() {
                if op.run() < 0 {
                    return Err(fail(Step::Mount, i));
                }
            }
            if libc::chdir(self.fs.newroot.as_ptr()) < 0 {
                return Err(fail(Step::PivotRoot, 0));
            }
            if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
                if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
                    return Err(fail(Step::PivotRoot, 0));
                }
            } else if errno() == libc::EINVAL {
                // The root is the initramfs (paddock as PID 1 of a VM booted from one), which
                // cannot be pivoted away from: move the new root over it and chroot, as
                // switch_root does. The app cannot chroot back out (no CAP_SYS_CHROOT, and
                // seccomp denies chroot).
                if libc::mount(
                    c".".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_MOVE,
                    std::ptr::null(),
                ) < 0
                    || libc::chroot(c".".as_ptr()) < 0
                {
                    return Err(fail(Step::PivotRoot, 1));
                }
            } else {
                return Err(fail(Step::PivotRoot, 0));
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                return Err(fail(Step::PivotRoot, 0));
            }
            let hn = self.hostname.to_bytes();
            if libc::sethostname(hn.as_ptr().cast(), hn.len()) < 0 {
                return Err(fail(Step::Hostname, 0));
            }
            if self.loopback && !loopback_up() {
                return Err(fail(Step::Loopback, 0));
            }
        }
        // SAFETY: the same child, right after.
        unsafe { self.confine(userns_fd) }
    }

    /// The namespaces a health check joins to run inside the app's sandbox (from a pidfd of the
    /// app's first process): all the app's, its user namespace too when paddock is not root
    /// (then it owns them all); as root, the prepared user namespace is entered by `confine`,
    /// after the others (they belong to the host's user namespace).
    pub fn join_flags(&self) -> libc::c_int {
        let own = libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWPID;
        if self.self_maps.is_some() {
            own | libc::CLONE_NEWUSER
        } else {
            own
        }
    }

    /// A health check's part before it forks into the app's pid namespace: join the app's
    /// namespaces (`pidfd`) and its root (`rootfd`, the app's `/proc/PID/root`).
    ///
    /// # Safety
    /// Only in the child of `driver::native::spawn`: system calls, no allocation.
    pub unsafe fn join(&self, pidfd: RawFd, rootfd: RawFd) -> Result<(), Fail> {
        // SAFETY: in the vfork-style child (this fn's contract): `pidfd` and `rootfd` are kept open
        // by spawn_in_app until the spawn returns; the paths are C-string literals.
        unsafe {
            if libc::setns(pidfd, self.join_flags()) < 0 {
                return Err(fail(Step::JoinApp, 0));
            }
            if libc::fchdir(rootfd) < 0 || libc::chroot(c".".as_ptr()) < 0 {
                return Err(fail(Step::JoinApp, 1));
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                return Err(fail(Step::JoinApp, 1));
            }
        }
        Ok(())
    }

    /// The last steps, shared by the app and its health checks: user namespace, capabilities,
    /// user, workdir, `no_new_privs`, Landlock, seccomp.
    ///
    /// # Safety
    /// Only in the child of `driver::native::spawn`: system calls, no allocation.
    pub unsafe fn confine(&self, userns_fd: RawFd) -> Result<(), Fail> {
        // SAFETY: in the vfork-style child (this fn's contract): integer arguments, pointers into
        // the plan's own Vecs (groups, the seccomp program) and `fprog`, a local that outlives the
        // prctl.
        unsafe {
            if self.userns.is_some() && libc::setns(userns_fd, libc::CLONE_NEWUSER) < 0 {
                return Err(fail(Step::UserNs, 0));
            }
            for cap in 0..=self.last_cap {
                if self.keep & (1u64 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                    && errno() != libc::EINVAL
                {
                    return Err(fail(Step::Caps, cap as usize));
                }
            }
            if let Some((uid, gid, groups)) = &self.creds {
                if self.keep != 0 && *uid != 0 {
                    libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
                }
                // Raw system calls: glibc's wrappers would act on paddock's other threads.
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0
                    || libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) < 0
                    || libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) < 0
                {
                    return Err(fail(Step::Credentials, 0));
                }
            }
            if !set_caps(self.keep) {
                return Err(fail(Step::Caps, 0));
            }
            if libc::chdir(self.workdir.as_ptr()) < 0 {
                return Err(fail(Step::Chdir, 0));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(fail(Step::NoNewPrivs, 0));
            }
            if let Err((i, e)) = self.landlock.apply() {
                return Err(Fail {
                    step: Step::Landlock,
                    idx: i.min(u16::MAX as usize) as u16,
                    errno: e,
                });
            }
            if let Some(prog) = &self.seccomp {
                let fprog = libc::sock_fprog {
                    len: prog.len() as libc::c_ushort,
                    filter: prog.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &fprog as *const libc::sock_fprog as libc::c_ulong,
                    0,
                    0,
                ) < 0
                {
                    return Err(fail(Step::Seccomp, 0));
                }
            }
        }
        Ok(())
    }
}

/// Sets effective, permitted and inheritable to `keep`, and raises the ambient set for each,
/// so the capabilities survive exec for a non-root user too.
///
/// # Safety
/// Only in the sandbox child before exec (`confine`): it changes the calling process' capabilities.
unsafe fn set_caps(keep: u64) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: capset reads `hdr` and `data`, two structs as version 3 expects; prctl takes
    // integers. Only in the sandbox child (this fn's contract).
    unsafe {
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) < 0 {
            return false;
        }
        for cap in 0..64u64 {
            if keep & (1 << cap) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                ) < 0
            {
                return false;
            }
        }
    }
    true
}

/// `ip link set lo up`, with one socket and two ioctls.
///
/// # Safety
/// In a process that may not allocate (the sandbox child or `make_netns`'s helper): system calls
/// only.
pub(super) unsafe fn loopback_up() -> bool {
    // SAFETY: a socket of our own and `req`, a zeroed live ifreq naming "lo", for the two ioctls;
    // the socket is closed before returning. No allocation (this fn's contract).
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0
        };
        libc::close(s);
        ok
    }
}
