//! Level `sandbox`: an app's bundle run in its own namespaces (mount, pid, ipc, uts, net,
//! cgroup; user optionally), on a root filesystem made of just the bundle, under Landlock, with
//! every capability dropped but the listed ones, `no_new_privs` and a seccomp filter.
//!
//! Everything is computed once per app in the parent (`Plan::new`): the clone flags, the mount
//! operations, the Landlock rules, the capability masks and the BPF program, as plain data and
//! C strings. The child of `driver::native::spawn` then only makes system calls (`Plan::enter`),
//! in this order:
//!
//! 1. (clone) new pid, mount, ipc, uts and net namespaces — and user, when paddock is not root;
//! 2. join the app's cgroup (driver), then a new cgroup namespace rooted there;
//! 3. when not root: write its own uid/gid maps;
//! 4. make every mount private, mount the new root (see `rootfs`), `pivot_root` into it and
//!    detach the old one;
//! 5. hostname = app name; bring loopback up in the new network namespace;
//! 6. with `userns = true` as root: enter the user namespace prepared for the app (uid mapped
//!    to an unprivileged host uid);
//! 7. drop the bounding set, switch to the app's user/group, set the kept capabilities (ambient
//!    too, so they survive exec for a non-root user);
//! 8. `no_new_privs`, Landlock, seccomp; chdir; exec.
//!
//! A failing step is reported with its name, errno and the path or rule it was working on.

pub mod rootfs;
pub mod rules;
pub mod seccomp;

use crate::config::sandbox::SandboxSpec;
use rootfs::RootFs;
use rules::Rules;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where new roots are mounted (in the child's own mount namespace: the host never sees them).
static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// Sets the directory new roots are mounted on (paddock's state directory has one).
pub fn set_scratch_dir(dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
    let _ = SCRATCH.set(dir.to_path_buf());
}

fn scratch_dir() -> Result<PathBuf, String> {
    if let Some(d) = SCRATCH.get() {
        return Ok(d.clone());
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    let d = std::env::temp_dir().join(format!("paddock-sandbox-{}", unsafe { libc::geteuid() }));
    std::fs::create_dir_all(&d)
        .map_err(|e| format!("{}: {}", d.display(), crate::util::io_reason(&e)))?;
    Ok(d)
}

/// What this host can give (probed once).
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostSupport {
    pub root: bool,
    pub landlock_abi: i32,
    pub seccomp: bool,
    /// Unprivileged processes may create user namespaces.
    pub user_namespaces: bool,
}

pub fn host() -> &'static HostSupport {
    static H: OnceLock<HostSupport> = OnceLock::new();
    H.get_or_init(|| {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let max_userns = read("/proc/sys/user/max_user_namespaces")
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        let unpriv = read("/proc/sys/kernel/unprivileged_userns_clone");
        HostSupport {
            // SAFETY: geteuid takes no arguments and cannot fail.
            root: unsafe { libc::geteuid() } == 0,
            landlock_abi: rules::kernel_abi(),
            // SAFETY: prctl(PR_GET_SECCOMP) only reports this process' mode (it ignores the other
            // arguments).
            seccomp: unsafe { libc::prctl(libc::PR_GET_SECCOMP) } >= 0,
            user_namespaces: max_userns > 0 && unpriv.trim() != "0",
        }
    })
}

impl HostSupport {
    /// Why this host cannot sandbox an app with this spec, if it cannot.
    pub fn refuses(&self, spec: &SandboxSpec) -> Option<String> {
        if self.landlock_abi < 1 {
            return Some("Landlock is not enabled in this kernel (it needs Linux 5.13+ with landlock in the lsm= boot list)".into());
        }
        if (!spec.tcp_bind.is_empty() || !spec.tcp_connect.is_empty()) && self.landlock_abi < 4 {
            return Some(format!(
                "[sandbox] tcp_bind/tcp_connect need Landlock ABI 4 (Linux 6.7); this kernel has ABI {}",
                self.landlock_abi
            ));
        }
        if !self.seccomp && spec.seccomp {
            return Some("this kernel has no seccomp; set [sandbox] seccomp = \"off\" to run without the filter".into());
        }
        if !self.root {
            if !spec.userns {
                return Some("paddock is not root: [sandbox] userns = false asks for the host's user ids, which only root can give; remove it (the default runs the app in a user namespace)".into());
            }
            if !self.user_namespaces {
                return Some("paddock is not root and this host does not allow unprivileged user namespaces (user.max_user_namespaces / kernel.unprivileged_userns_clone)".into());
            }
        }
        None
    }
}

/// Steps of the child, for error reports (the driver numbers them after its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A health check joining the app's namespaces and root.
    JoinApp,
    CgroupNs,
    UserMap,
    Mount,
    PivotRoot,
    Hostname,
    Loopback,
    UserNs,
    Caps,
    Credentials,
    NoNewPrivs,
    Landlock,
    Seccomp,
    Chdir,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::JoinApp,
        Step::CgroupNs,
        Step::UserMap,
        Step::Mount,
        Step::PivotRoot,
        Step::Hostname,
        Step::Loopback,
        Step::UserNs,
        Step::Caps,
        Step::Credentials,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Seccomp,
        Step::Chdir,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Step::JoinApp => "sandbox: join the app's namespaces",
            Step::CgroupNs => "sandbox: cgroup namespace",
            Step::UserMap => "sandbox: uid/gid map",
            Step::Mount => "sandbox",
            Step::PivotRoot => "sandbox: pivot_root",
            Step::Hostname => "sandbox: sethostname",
            Step::Loopback => "sandbox: network namespace",
            Step::UserNs => "sandbox: enter user namespace",
            Step::Caps => "sandbox: capabilities",
            Step::Credentials => "sandbox: switch user",
            Step::NoNewPrivs => "sandbox: no_new_privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Chdir => "sandbox: chdir to workdir",
        }
    }
}

/// A failed step: which, the operation's index (for `describe`), errno.
pub struct Fail {
    pub step: Step,
    pub idx: u16,
    pub errno: i32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The failure of `step` at operation `idx`, with the errno the failing call left.
fn fail(step: Step, idx: usize) -> Fail {
    Fail {
        step,
        idx: idx.min(u16::MAX as usize) as u16,
        errno: errno(),
    }
}

/// Everything the child needs, prepared once per app.
pub struct Plan {
    pub clone_flags: libc::c_int,
    /// When paddock is not root: (uid_map, gid_map) the child writes for itself.
    self_maps: Option<(CString, CString)>,
    fs: RootFs,
    hostname: CString,
    loopback: bool,
    /// When root with `userns = true`: the user namespace prepared for the app.
    pub userns: Option<OwnedFd>,
    /// When root with `network = "none"`: the app's network namespace (loopback up), made once
    /// and kept across its restarts, as a pod's is: creating one costs more than the rest of
    /// the sandbox together (~1.7 ms here).
    pub netns: Option<OwnedFd>,
    /// Inside the sandbox: (uid, gid, supplementary groups); None: stay root (uid 0).
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    keep: u64,
    last_cap: u32,
    landlock: Rules,
    seccomp: Option<Vec<libc::sock_filter>>,
    workdir: CString,
    /// What the level gives, for `status` and errors.
    pub summary: String,
    /// With a user namespace: the host uid the app's processes have (files paddock makes for
    /// the app, like its notify socket, are given to it).
    pub host_uid: Option<u32>,
    /// The host uid and gid the app's processes start as (paddock's own when it is not root):
    /// its log pipes are given to them, so `/dev/stdout` can be reopened inside.
    pub host_ids: (u32, u32),
}

// SAFETY: every field (CStrings, OwnedFds, integers, Vecs of plain structs) is Send and Sync on its
// own: the plan holds no raw pointers, so these impls add nothing unsound (they are redundant).
unsafe impl Send for Plan {}
// SAFETY: as for Send: shared references only read the plan.
unsafe impl Sync for Plan {}

/// The highest capability number of the running kernel.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl Plan {
    /// `bundle_root`: the bundle's tree on the host. `identity`: the app's user (host ids).
    /// `memory`: the app's `[limits] memory` (the default size of /tmp and /dev/shm).
    pub fn new(
        name: &str,
        spec: &SandboxSpec,
        bundle_root: &Path,
        identity: Option<&crate::config::Identity>,
        workdir: Option<&Path>,
        notify_socket: Option<&Path>,
        memory: Option<u64>,
    ) -> Result<Plan, String> {
        let h = host();
        if let Some(why) = h.refuses(spec) {
            return Err(why);
        }
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        let mut netns = None;
        if !spec.host_network {
            if h.root {
                // With NET_BIND_SERVICE kept, ports below 1024 of its own network are the
                // app's to bind, also from its user namespace (which holds no capability over
                // a network namespace paddock made).
                let low_ports = spec
                    .capabilities
                    .iter()
                    .any(|c| c == "CAP_NET_BIND_SERVICE");
                netns = Some(make_netns(low_ports)?);
            } else {
                // Not root: only a namespace owned by the app's new user namespace will do.
                flags |= libc::CLONE_NEWNET;
            }
        }
        let (uid, gid, groups) = identity
            .map(|i| (i.uid, i.gid, i.groups.clone()))
            .unwrap_or((0, 0, vec![]));
        let mut self_maps = None;
        // With a user namespace as root: the first host id of the app's range (its root).
        let mut id_base = None;
        let mut userns = None;
        let creds;
        let owner;
        if !h.root {
            // Only our own ids can be mapped: the app is root of its user namespace, backed by
            // paddock's uid on the host.
            flags |= libc::CLONE_NEWUSER;
            // SAFETY: geteuid and getegid take no arguments and cannot fail.
            let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
            self_maps = Some((
                CString::new(format!("0 {euid} 1\n")).map_err(|e| e.to_string())?,
                CString::new(format!("0 {egid} 1\n")).map_err(|e| e.to_string())?,
            ));
            creds = None;
            owner = (euid, egid);
        } else if spec.userns {
            // The app's ids 0..65535 map to a range of unprivileged host ids of its own (its
            // `user`, if it has one, keeps its host uid and gid): root inside is nobody in
            // particular outside, and a daemon can still switch to `nobody` inside.
            let base = id_range(name);
            id_base = Some(base);
            userns = Some(make_userns(&id_map(base, uid), &id_map(base, gid))?);
            creds = Some((uid, gid, vec![]));
            owner = (host_id(base, uid), host_id(base, gid));
        } else {
            creds = identity.map(|_| (uid, gid, groups));
            owner = (uid, gid);
        }
        let newroot = scratch_dir()?;
        let files = etc_files(name, bundle_root, identity, &newroot)?;
        let fs = rootfs::build(
            &newroot,
            bundle_root,
            &rootfs::Paths {
                read_only: &spec.read_only,
                read_write: &spec.read_write,
                tmpfs: &spec.tmpfs,
                sockets: &notify_socket
                    .map(Path::to_path_buf)
                    .into_iter()
                    .collect::<Vec<_>>(),
                owner,
                files: &files,
                tmp_size: spec
                    .tmp_size
                    .or(memory)
                    .unwrap_or(crate::config::sandbox::DEFAULT_TMP_SIZE),
                symlinks: spec.symlinks,
            },
        )?;
        let mut landlock = Rules::new(h.landlock_abi, &spec.tcp_bind, &spec.tcp_connect);
        rootfs::add_rules(&fs, &mut landlock)?;
        let mut keep = 0u64;
        for c in &spec.capabilities {
            let (_, cap) = crate::config::sandbox::capability(c)?;
            keep |= 1u64 << cap.index();
        }
        let workdir = workdir.unwrap_or(Path::new("/"));
        let hostname: String = name.chars().take(64).collect();
        let mut summary = vec![format!("landlock ABI {}", h.landlock_abi)];
        summary.push(
            if spec.host_network {
                "host network"
            } else {
                "own network"
            }
            .into(),
        );
        if let Some(base) = id_base {
            summary.push(format!("user namespace (root = host uid {base})"));
        } else if self_maps.is_some() {
            summary.push("user namespace".into());
        } else {
            summary.push("host user ids (userns = false)".into());
        }
        summary.push(
            if spec.seccomp {
                "seccomp"
            } else {
                "no seccomp"
            }
            .into(),
        );
        Ok(Plan {
            clone_flags: flags,
            self_maps,
            fs,
            hostname: CString::new(hostname).map_err(|e| e.to_string())?,
            loopback: !spec.host_network && netns.is_none(),
            userns,
            netns,
            creds,
            keep,
            last_cap: last_cap(),
            landlock,
            seccomp: spec.seccomp.then(|| {
                seccomp::filter(&seccomp::Options {
                    udp: spec.udp || !spec.host_network,
                    families: spec.address_families.iter().map(|(_, n)| *n).collect(),
                    extra: spec.syscalls.iter().map(|(_, n)| *n).collect(),
                })
            }),
            workdir: CString::new(workdir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?,
            summary: summary.join(", "),
            host_uid: (h.root && spec.userns).then_some(owner.0),
            host_ids: owner,
        })
    }

    /// Describes what a failed step was working on.
    pub fn describe(&self, step: Step, idx: u16) -> String {
        let idx = idx as usize;
        match step {
            Step::Mount => self
                .fs
                .ops
                .get(idx)
                .map(|op| op.describe(&self.fs.newroot))
                .unwrap_or_default(),
            Step::Landlock => self.landlock.describe(if idx == u16::MAX as usize {
                usize::MAX
            } else {
                idx
            }),
            Step::Chdir => self.workdir.to_string_lossy().into_owned(),
            Step::PivotRoot if idx == 1 => format!(
                "moving {} over the initramfs root",
                self.fs.newroot.to_string_lossy()
            ),
            Step::PivotRoot => self.fs.newroot.to_string_lossy().into_owned(),
            Step::JoinApp if idx == 1 => "the app's root".into(),
            Step::JoinApp => "setns to the app's namespaces".into(),
            _ => String::new(),
        }
    }

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
unsafe fn loopback_up() -> bool {
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

/// A network namespace with loopback up, held by a descriptor: a helper cloned into it (sharing
/// our memory and descriptor table) brings `lo` up, opens its namespace into our table and exits.
fn make_netns(low_ports: bool) -> Result<OwnedFd, String> {
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

/// The first of the 65536 host ids of an app's user namespace: a range of its own between
/// 0x80000 and 0x6fff0000 (as systemd-nspawn's `--private-users=pick`), picked from a hash of
/// the app's name, so it is the same at every start (files it leaves in `read_write` dirs stay
/// its own), and moved on when another app of this paddock already has it.
fn id_range(name: &str) -> u32 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static TAKEN: Mutex<Option<HashMap<u32, String>>> = Mutex::new(None);
    const FIRST: u32 = 0x8;
    const SLOTS: u32 = 0x6fff - FIRST;
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashMap::new);
    let mut slot = h % SLOTS;
    for _ in 0..SLOTS {
        match taken.get(&slot) {
            Some(n) if n != name => slot = (slot + 1) % SLOTS,
            _ => break,
        }
    }
    taken.insert(slot, name.to_string());
    (FIRST + slot) << 16
}

/// The host id of `id` inside: the app's own `user`/`group` keeps its host id, root is the
/// first of the range.
fn host_id(base: u32, id: u32) -> u32 {
    if id == 0 { base } else { id }
}

/// uid_map / gid_map lines: 0..65535 → base.., except `own` (the app's `user` or `group`,
/// when not root), which maps to itself.
fn id_map(base: u32, own: u32) -> String {
    if own == 0 {
        return format!("0 {base} 65536\n");
    }
    if own >= 65536 {
        return format!("0 {base} 65536\n{own} {own} 1\n");
    }
    let mut m = format!("0 {base} {own}\n{own} {own} 1\n");
    if own < 65535 {
        m.push_str(&format!("{} {} {}\n", own + 1, base + own + 1, 65535 - own));
    }
    m
}

/// /etc/passwd and /etc/group for a sandbox whose bundle has none, naming root, nobody and the
/// app's user, so a daemon that looks users up by name (`memcached -u nobody`) can: (path
/// inside, file on the host) pairs, written beside the scratch root.
fn etc_files(
    name: &str,
    bundle_root: &Path,
    identity: Option<&crate::config::Identity>,
    scratch: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let dir = scratch
        .parent()
        .unwrap_or(scratch)
        .join("sandbox-etc")
        .join(name);
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if let Some(id) = identity
        && let (Some(user), true) = (&id.user, id.uid != 0 && id.uid != 65534)
    {
        let home = id.home.as_deref().unwrap_or(Path::new("/")).display();
        passwd.push_str(&format!("{user}:x:{}:{}::{home}:/bin/sh\n", id.uid, id.gid));
        group.push_str(&format!("{user}:x:{}:\n", id.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let mut out = vec![];
    for (file, text) in [("passwd", passwd), ("group", group)] {
        let inside = Path::new("/etc").join(file);
        if bundle_root.join("etc").join(file).exists() {
            continue; // the bundle brings its own
        }
        let host = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &host))
            .map_err(|e| format!("{}: {}", host.display(), crate::util::io_reason(&e)))?;
        out.push((inside, host));
    }
    Ok(out)
}

/// A user namespace with these uid and gid maps, held by a descriptor: a helper is cloned into
/// a new user namespace, its maps written from here, the namespace opened, and the helper let
/// go (it shares our descriptor table, so closing the pipe's write end here ends its wait).
fn make_userns(uid_map: &str, gid_map: &str) -> Result<OwnedFd, String> {
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

/// Whether the kernel would drop `sig` sent to `pid`, the init of a pid namespace: it delivers
/// only the signals init handles (and SIGKILL/SIGSTOP), while a plain process would be
/// terminated by the default action of most signals.
pub fn init_drops(pid: libc::pid_t, sig: i32) -> bool {
    if !(1..=64).contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return false;
    }
    // Signals whose default action is not to terminate.
    if [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGURG,
        libc::SIGWINCH,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ]
    .contains(&sig)
    {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bit = 1u64 << (sig - 1);
    mask("SigCgt:") & bit == 0 && mask("SigIgn:") & bit == 0
}
