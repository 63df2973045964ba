//! The seccomp filter of level `sandbox`: an **allow list**, in the spirit of Docker's default
//! profile and systemd's `@system-service`. A system call paddock does not know (a new one, like
//! `listmount` or `open_tree_attr`, or one no service needs) fails with ENOSYS, as on a kernel
//! without it; the calls that reach into the kernel's or other processes' state ([`DENY`]) fail
//! with EPERM. Some allowed calls are checked by argument:
//!
//! - `socket`: `AF_UNIX`, `AF_INET`, `AF_INET6` and the families the app file adds
//!   (`[sandbox] address_families`, as systemd's `RestrictAddressFamilies`); other families fail
//!   with EAFNOSUPPORT. An IP socket must be TCP (`SOCK_STREAM` with protocol 0 or
//!   `IPPROTO_TCP`: what Landlock's port rules cover) or, where the app may use UDP,
//!   `SOCK_DGRAM`; anything else (raw, SCTP, MPTCP) fails with EPERM. `socketpair` is `AF_UNIX`
//!   only;
//! - `clone` with a namespace flag; `clone3` fails with ENOSYS (its flags are in memory, out of a
//!   filter's reach), so the C library falls back to `clone`;
//! - `execveat(…, AT_EMPTY_PATH)` (executing a descriptor, such as a memfd: code that is not in
//!   the bundle) and `memfd_create(…, MFD_EXEC)`;
//! - setuid/setgid bits in `chmod`, `fchmod`, `fchmodat`, `fchmodat2`, `open`, `openat`, `creat`,
//!   `mkdir`, `mkdirat`, `mknod`, `mknodat` (systemd's `RestrictSUIDSGID`); `openat2`, whose mode
//!   is in memory, is not allowed (ENOSYS: callers fall back to `openat`);
//! - `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)` (typing into a terminal);
//! - `personality` other than the query and `PER_LINUX`.
//!
//! `[sandbox] syscalls` allows more by name (any call of the tables below, checked ones
//! included, which are then allowed whatever their arguments).
//!
//! The program is classic BPF built once per app in the parent, as a binary search over the
//! sorted call numbers (about ten comparisons per system call); the child only hands it to
//! `prctl(PR_SET_SECCOMP)` after `no_new_privs`.
//!
//! Layout: this file holds the per-app [`Options`]; `crate::syscalls` the system calls allowed,
//! denied and checked by argument (and the lookups the configuration uses); `bpf` the program
//! built from them ([`filter`]).

mod bpf;

pub use crate::syscalls::{FAMILIES, lookup};
pub use bpf::{counts, filter};

/// What the filter of one app allows beyond the base.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `SOCK_DGRAM` IP sockets (the app has its own network namespace, or `udp = true`).
    pub udp: bool,
    /// Address families besides `AF_UNIX`, `AF_INET`, `AF_INET6`.
    pub families: Vec<u32>,
    /// Calls allowed by name (`[sandbox] syscalls`).
    pub extra: Vec<libc::c_long>,
}
