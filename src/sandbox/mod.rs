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
//!
//! Layout: this file holds what the host supports, the steps and their failures, and the
//! [`Plan`]; `plan` builds a plan in the parent (`Plan::new`), `child` is its system calls in the
//! child (`enter`, `join`, `confine`), `ns` makes the user and network namespaces prepared in the
//! parent; `rootfs`, `rules` and `seccomp` build the root filesystem, the Landlock rules and the
//! BPF filter.

mod child;
mod ns;
mod plan;
pub mod rootfs;
pub mod rules;
pub mod seccomp;

use crate::config::sandbox::SandboxSpec;
use rootfs::RootFs;
use rules::Rules;
use std::ffi::CString;
use std::os::fd::OwnedFd;
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

/// The user namespace ranges of sandboxes: 65,536 host ids each, slot `n` starting at
/// `(8 + n) << 16`, between 0x80000 and 0x6fff0000 (as systemd-nspawn's
/// `--private-users=pick`).
pub const ID_SLOTS: u32 = 0x6fff - 0x8;

/// The first host id of range `slot` (< `ID_SLOTS`).
pub fn id_base_of_slot(slot: u32) -> u32 {
    (0x8 + slot % ID_SLOTS) << 16
}

/// The slot a name starts its search at (FNV-1a of the name).
pub fn id_slot_of(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h % ID_SLOTS
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
