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

use libc::sock_filter;

/// A system call: name, number on this architecture.
type Sys = (&'static str, libc::c_long);

/// Allowed outright.
const ALLOW: &[Sys] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("close", libc::SYS_close),
    ("fstat", libc::SYS_fstat),
    ("lseek", libc::SYS_lseek),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("munmap", libc::SYS_munmap),
    ("brk", libc::SYS_brk),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("sched_yield", libc::SYS_sched_yield),
    ("mremap", libc::SYS_mremap),
    ("msync", libc::SYS_msync),
    ("mincore", libc::SYS_mincore),
    ("madvise", libc::SYS_madvise),
    ("shmget", libc::SYS_shmget),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("dup", libc::SYS_dup),
    ("nanosleep", libc::SYS_nanosleep),
    ("getitimer", libc::SYS_getitimer),
    ("setitimer", libc::SYS_setitimer),
    ("getpid", libc::SYS_getpid),
    ("sendfile", libc::SYS_sendfile),
    ("connect", libc::SYS_connect),
    ("accept", libc::SYS_accept),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("execve", libc::SYS_execve),
    ("exit", libc::SYS_exit),
    ("wait4", libc::SYS_wait4),
    ("kill", libc::SYS_kill),
    ("uname", libc::SYS_uname),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semctl", libc::SYS_semctl),
    ("shmdt", libc::SYS_shmdt),
    ("msgget", libc::SYS_msgget),
    ("msgsnd", libc::SYS_msgsnd),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgctl", libc::SYS_msgctl),
    ("fcntl", libc::SYS_fcntl),
    ("flock", libc::SYS_flock),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("truncate", libc::SYS_truncate),
    ("ftruncate", libc::SYS_ftruncate),
    ("getcwd", libc::SYS_getcwd),
    ("chdir", libc::SYS_chdir),
    ("fchdir", libc::SYS_fchdir),
    ("fchown", libc::SYS_fchown),
    ("umask", libc::SYS_umask),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("sysinfo", libc::SYS_sysinfo),
    ("times", libc::SYS_times),
    ("getuid", libc::SYS_getuid),
    ("getgid", libc::SYS_getgid),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("geteuid", libc::SYS_geteuid),
    ("getegid", libc::SYS_getegid),
    ("setpgid", libc::SYS_setpgid),
    ("getppid", libc::SYS_getppid),
    ("setsid", libc::SYS_setsid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("getgroups", libc::SYS_getgroups),
    ("setgroups", libc::SYS_setgroups),
    ("setresuid", libc::SYS_setresuid),
    ("getresuid", libc::SYS_getresuid),
    ("setresgid", libc::SYS_setresgid),
    ("getresgid", libc::SYS_getresgid),
    ("getpgid", libc::SYS_getpgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setfsgid", libc::SYS_setfsgid),
    ("getsid", libc::SYS_getsid),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("statfs", libc::SYS_statfs),
    ("fstatfs", libc::SYS_fstatfs),
    ("getpriority", libc::SYS_getpriority),
    ("setpriority", libc::SYS_setpriority),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("mlock", libc::SYS_mlock),
    ("munlock", libc::SYS_munlock),
    ("mlockall", libc::SYS_mlockall),
    ("munlockall", libc::SYS_munlockall),
    ("prctl", libc::SYS_prctl),
    ("setrlimit", libc::SYS_setrlimit),
    ("sync", libc::SYS_sync),
    ("gettid", libc::SYS_gettid),
    ("readahead", libc::SYS_readahead),
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("getxattr", libc::SYS_getxattr),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("removexattr", libc::SYS_removexattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("tkill", libc::SYS_tkill),
    ("futex", libc::SYS_futex),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("io_setup", libc::SYS_io_setup),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_submit", libc::SYS_io_submit),
    ("io_cancel", libc::SYS_io_cancel),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("getdents64", libc::SYS_getdents64),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("semtimedop", libc::SYS_semtimedop),
    ("fadvise64", libc::SYS_fadvise64),
    ("timer_create", libc::SYS_timer_create),
    ("timer_settime", libc::SYS_timer_settime),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_delete", libc::SYS_timer_delete),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("exit_group", libc::SYS_exit_group),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("tgkill", libc::SYS_tgkill),
    ("mbind", libc::SYS_mbind),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("mq_open", libc::SYS_mq_open),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("waitid", libc::SYS_waitid),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat", libc::SYS_renameat),
    ("linkat", libc::SYS_linkat),
    ("symlinkat", libc::SYS_symlinkat),
    ("readlinkat", libc::SYS_readlinkat),
    ("faccessat", libc::SYS_faccessat),
    ("pselect6", libc::SYS_pselect6),
    ("ppoll", libc::SYS_ppoll),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("splice", libc::SYS_splice),
    ("tee", libc::SYS_tee),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("vmsplice", libc::SYS_vmsplice),
    ("utimensat", libc::SYS_utimensat),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("fallocate", libc::SYS_fallocate),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("accept4", libc::SYS_accept4),
    ("signalfd4", libc::SYS_signalfd4),
    ("eventfd2", libc::SYS_eventfd2),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("dup3", libc::SYS_dup3),
    ("pipe2", libc::SYS_pipe2),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("prlimit64", libc::SYS_prlimit64),
    ("syncfs", libc::SYS_syncfs),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("getcpu", libc::SYS_getcpu),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("renameat2", libc::SYS_renameat2),
    ("seccomp", libc::SYS_seccomp),
    ("getrandom", libc::SYS_getrandom),
    ("membarrier", libc::SYS_membarrier),
    ("mlock2", libc::SYS_mlock2),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("statx", libc::SYS_statx),
    ("rseq", libc::SYS_rseq),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("close_range", libc::SYS_close_range),
    ("faccessat2", libc::SYS_faccessat2),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("futex_waitv", libc::SYS_futex_waitv),
    ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
    ("mseal", libc::SYS_mseal),
    // Numbers shared by every architecture since 6.x, not yet in the libc crate: shadow stacks
    // for new threads (glibc with CET), the futex2 calls.
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("fchownat", libc::SYS_fchownat),
    ("newfstatat", libc::SYS_newfstatat),
];
#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH: &[Sys] = &[
    ("stat", libc::SYS_stat),
    ("lstat", libc::SYS_lstat),
    ("poll", libc::SYS_poll),
    ("access", libc::SYS_access),
    ("pipe", libc::SYS_pipe),
    ("select", libc::SYS_select),
    ("dup2", libc::SYS_dup2),
    ("pause", libc::SYS_pause),
    ("alarm", libc::SYS_alarm),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
    ("getdents", libc::SYS_getdents),
    ("rename", libc::SYS_rename),
    ("rmdir", libc::SYS_rmdir),
    ("link", libc::SYS_link),
    ("unlink", libc::SYS_unlink),
    ("symlink", libc::SYS_symlink),
    ("readlink", libc::SYS_readlink),
    ("chown", libc::SYS_chown),
    ("lchown", libc::SYS_lchown),
    ("getpgrp", libc::SYS_getpgrp),
    ("utime", libc::SYS_utime),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("time", libc::SYS_time),
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("utimes", libc::SYS_utimes),
    ("futimesat", libc::SYS_futimesat),
    ("inotify_init", libc::SYS_inotify_init),
    ("signalfd", libc::SYS_signalfd),
    ("eventfd", libc::SYS_eventfd),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("get_thread_area", libc::SYS_get_thread_area),
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOW_ARCH: &[Sys] = &[];

/// Known and refused with EPERM: mounts and root changes, other processes, namespaces, the
/// kernel itself (modules, kexec, bpf, perf, keyrings, clocks, swap, quotas, io_uring), and
/// calls that open files by handle (the "shocker" escape).
const DENY: &[Sys] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("syslog", libc::SYS_syslog),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("vhangup", libc::SYS_vhangup),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("process_madvise", libc::SYS_process_madvise),
    ("move_pages", libc::SYS_move_pages),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("fanotify_init", libc::SYS_fanotify_init),
];
#[cfg(target_arch = "x86_64")]
const DENY_ARCH: &[Sys] = &[
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("uselib", libc::SYS_uselib),
    ("modify_ldt", libc::SYS_modify_ldt),
];
#[cfg(not(target_arch = "x86_64"))]
const DENY_ARCH: &[Sys] = &[];

/// Calls allowed after a look at their arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Socket,
    Socketpair,
    Clone,
    /// ENOSYS whatever the arguments (the C library falls back).
    Enosys,
    Execveat,
    MemfdCreate,
    /// The mode is argument N: no setuid/setgid bits.
    Mode(u32),
    Ioctl,
    Personality,
}

fn checked() -> Vec<(&'static str, libc::c_long, Check)> {
    let mut v = vec![
        ("socket", libc::SYS_socket, Check::Socket),
        ("socketpair", libc::SYS_socketpair, Check::Socketpair),
        ("clone", libc::SYS_clone, Check::Clone),
        ("clone3", libc::SYS_clone3, Check::Enosys),
        ("openat2", libc::SYS_openat2, Check::Enosys),
        ("execveat", libc::SYS_execveat, Check::Execveat),
        ("memfd_create", libc::SYS_memfd_create, Check::MemfdCreate),
        ("fchmod", libc::SYS_fchmod, Check::Mode(1)),
        ("fchmodat", libc::SYS_fchmodat, Check::Mode(2)),
        ("fchmodat2", libc::SYS_fchmodat2, Check::Mode(2)),
        ("openat", libc::SYS_openat, Check::Mode(3)),
        ("mkdirat", libc::SYS_mkdirat, Check::Mode(2)),
        ("mknodat", libc::SYS_mknodat, Check::Mode(2)),
        ("ioctl", libc::SYS_ioctl, Check::Ioctl),
        ("personality", libc::SYS_personality, Check::Personality),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("chmod", libc::SYS_chmod, Check::Mode(1)),
        ("open", libc::SYS_open, Check::Mode(2)),
        ("creat", libc::SYS_creat, Check::Mode(1)),
        ("mkdir", libc::SYS_mkdir, Check::Mode(1)),
        ("mknod", libc::SYS_mknod, Check::Mode(1)),
    ]);
    v
}

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

/// The number of a system call the filter knows, by name (for `[sandbox] syscalls`).
pub fn lookup(name: &str) -> Option<libc::c_long> {
    ALLOW
        .iter()
        .chain(ALLOW_ARCH)
        .chain(DENY)
        .chain(DENY_ARCH)
        .map(|&(n, nr)| (n, nr))
        .chain(checked().into_iter().map(|(n, nr, _)| (n, nr)))
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| nr)
}

/// The address families `[sandbox] address_families` may add, by name.
pub const FAMILIES: &[(&str, u32)] = &[
    ("AF_NETLINK", libc::AF_NETLINK as u32),
    ("AF_PACKET", libc::AF_PACKET as u32),
    ("AF_VSOCK", libc::AF_VSOCK as u32),
    ("AF_BLUETOOTH", libc::AF_BLUETOOTH as u32),
    ("AF_CAN", libc::AF_CAN as u32),
    ("AF_ALG", libc::AF_ALG as u32),
    ("AF_TIPC", libc::AF_TIPC as u32),
    ("AF_XDP", libc::AF_XDP as u32),
];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
const EAFNOSUPPORT: u32 = RET_ERRNO | libc::EAFNOSUPPORT as u32;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Argument N's low 32 bits (little-endian), which is all of an `int` or `mode_t` argument.
const fn arg(n: u32) -> u32 {
    16 + 8 * n
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn ret(k: u32) -> sock_filter {
    stmt(BPF_RET_K, k)
}

/// `if A <op> k { skip jt } else { skip jf }`.
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Namespace flags a sandboxed process may not pass to clone.
const CLONE_NS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWCGROUP) as u32;

const AT_EMPTY_PATH: u32 = 0x1000;
const MFD_EXEC: u32 = 0x10;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

/// The instructions deciding one checked call (the call's number is in A; every path returns).
fn check_block(c: Check, o: &Options) -> Vec<sock_filter> {
    let allow = ret(RET_ALLOW);
    match c {
        Check::Enosys => vec![ret(ENOSYS)],
        Check::Clone => vec![
            // On x86_64 and aarch64 the flags are argument 0.
            stmt(BPF_LD_W_ABS, arg(0)),
            jump(BPF_JSET_K, CLONE_NS, 0, 1),
            ret(EPERM),
            allow,
        ],
        Check::Execveat => vec![
            stmt(BPF_LD_W_ABS, arg(4)),
            jump(BPF_JSET_K, AT_EMPTY_PATH, 0, 1),
            ret(EPERM),
            allow,
        ],
        Check::MemfdCreate => vec![
            stmt(BPF_LD_W_ABS, arg(1)),
            jump(BPF_JSET_K, MFD_EXEC, 0, 1),
            ret(EPERM),
            allow,
        ],
        Check::Mode(n) => vec![
            stmt(BPF_LD_W_ABS, arg(n)),
            jump(BPF_JSET_K, libc::S_ISUID | libc::S_ISGID, 0, 1),
            ret(EPERM),
            allow,
        ],
        Check::Ioctl => vec![
            stmt(BPF_LD_W_ABS, arg(1)),
            jump(BPF_JEQ_K, TIOCSTI, 1, 0),
            jump(BPF_JEQ_K, TIOCLINUX, 0, 1),
            ret(EPERM),
            allow,
        ],
        Check::Personality => vec![
            // Only the query (0xffffffff) and PER_LINUX (0), which change nothing.
            stmt(BPF_LD_W_ABS, arg(0)),
            jump(BPF_JEQ_K, 0xffff_ffff, 2, 0),
            jump(BPF_JEQ_K, 0, 1, 0),
            ret(EPERM),
            allow,
        ],
        Check::Socketpair => vec![
            stmt(BPF_LD_W_ABS, arg(0)),
            jump(BPF_JEQ_K, libc::AF_UNIX as u32, 0, 1),
            allow,
            ret(EAFNOSUPPORT),
        ],
        Check::Socket => {
            // domain: unix → allow; inet/inet6 → the IP checks; listed → allow; else refused.
            let mut f = vec![stmt(BPF_LD_W_ABS, arg(0))];
            let families: Vec<u32> = o
                .families
                .iter()
                .copied()
                .filter(|&x| x != libc::AF_INET as u32 && x != libc::AF_INET6 as u32)
                .chain([libc::AF_UNIX as u32])
                .collect();
            let n = families.len();
            // [ld] [jeq inet ?] [jeq inet6 ?] [jeq fam_i → allow]* [ret EAFNOSUPPORT] [allow] [ip…]
            f.push(jump(BPF_JEQ_K, libc::AF_INET as u32, (n + 3) as u8, 0));
            f.push(jump(BPF_JEQ_K, libc::AF_INET6 as u32, (n + 2) as u8, 0));
            for (i, fam) in families.iter().enumerate() {
                f.push(jump(BPF_JEQ_K, *fam, (n - i) as u8, 0));
            }
            f.push(ret(EAFNOSUPPORT));
            f.push(allow);
            // IP: type & 0xf (SOCK_NONBLOCK and SOCK_CLOEXEC are higher bits).
            f.push(stmt(BPF_LD_W_ABS, arg(1)));
            f.push(stmt(BPF_AND_K, 0xf));
            f.push(jump(BPF_JEQ_K, libc::SOCK_STREAM as u32, 3, 0));
            f.push(jump(BPF_JEQ_K, libc::SOCK_DGRAM as u32, 0, 1));
            f.push(ret(if o.udp { RET_ALLOW } else { EPERM }));
            f.push(ret(EPERM));
            // TCP: protocol 0 or IPPROTO_TCP only (not MPTCP, SCTP, …).
            f.push(stmt(BPF_LD_W_ABS, arg(2)));
            f.push(jump(BPF_JEQ_K, 0, 1, 0));
            f.push(jump(BPF_JEQ_K, libc::IPPROTO_TCP as u32, 0, 1));
            f.push(allow);
            f.push(ret(EPERM));
            f
        }
    }
}

/// What the filter does with one call number.
#[derive(Clone, Debug)]
enum Action {
    Ret(u32),
    Check(Check),
}

/// Appends the decision for `entries` (sorted by number), as a binary search on A, to `f`.
fn search(entries: &[(u32, Action)], o: &Options, f: &mut Vec<sock_filter>) {
    if entries.len() <= 4 {
        for (nr, action) in entries {
            let block = match action {
                Action::Ret(k) => vec![ret(*k)],
                Action::Check(c) => check_block(*c, o),
            };
            f.push(jump(BPF_JEQ_K, *nr, 0, block.len() as u8));
            f.extend(block);
        }
        f.push(ret(ENOSYS));
        return;
    }
    let mid = entries.len() / 2;
    // if A >= nr[mid] → right half (after a JA over the left half), else fall into the left.
    f.push(jump(BPF_JGE_K, entries[mid].0, 0, 1));
    let ja = f.len();
    f.push(stmt(BPF_JA, 0));
    search(&entries[..mid], o, f);
    f[ja].k = (f.len() - ja - 1) as u32;
    search(&entries[mid..], o, f);
}

/// The filter for one app.
pub fn filter(o: &Options) -> Vec<sock_filter> {
    let mut table: std::collections::BTreeMap<u32, Action> = Default::default();
    for &(_, nr) in DENY.iter().chain(DENY_ARCH) {
        table.insert(nr as u32, Action::Ret(EPERM));
    }
    for &(_, nr) in ALLOW.iter().chain(ALLOW_ARCH) {
        table.insert(nr as u32, Action::Ret(RET_ALLOW));
    }
    for (_, nr, c) in checked() {
        table.insert(nr as u32, Action::Check(c));
    }
    for &nr in &o.extra {
        table.insert(nr as u32, Action::Ret(RET_ALLOW));
    }
    let entries: Vec<(u32, Action)> = table.into_iter().collect();
    let mut f = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        ret(RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls (nr | 0x40000000) would bypass the numbers below.
        f.push(jump(BPF_JGE_K, 0x4000_0000, 0, 1));
        f.push(ret(EPERM));
    }
    search(&entries, o, &mut f);
    f
}

/// How many calls the base filter allows (outright or by argument) and refuses by name, for
/// `doctor` and docs/sandbox.md.
pub fn counts() -> (usize, usize) {
    (
        ALLOW.len() + ALLOW_ARCH.len() + checked().len(),
        DENY.len() + DENY_ARCH.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions the filter uses.
    fn run(f: &[sock_filter], nr: u32, arch: u32, args: [u32; 6]) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        for _ in 0..f.len() + 1 {
            let i = f[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    a = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        k if (16..64).contains(&k) && (k - 16) % 8 == 0 => {
                            args[((k - 16) / 8) as usize]
                        }
                        k => panic!("load of offset {k}"),
                    };
                    pc += 1;
                }
                BPF_AND_K => {
                    a &= i.k;
                    pc += 1;
                }
                BPF_RET_K => return i.k,
                BPF_JA => pc += 1 + i.k as usize,
                code => {
                    let hit = match code {
                        BPF_JEQ_K => a == i.k,
                        BPF_JGE_K => a >= i.k,
                        BPF_JSET_K => a & i.k != 0,
                        c => panic!("opcode {c}"),
                    };
                    pc += 1 + if hit { i.jt } else { i.jf } as usize;
                }
            }
        }
        panic!("the filter loops or runs off its end");
    }

    fn call(f: &[sock_filter], nr: libc::c_long, args: [u32; 6]) -> u32 {
        run(f, nr as u32, AUDIT_ARCH, args)
    }

    #[test]
    fn every_number_gets_its_action_and_unknown_ones_enosys() {
        let f = filter(&Options::default());
        assert!(f.len() < 4096, "{} instructions", f.len());
        for &(name, nr) in ALLOW.iter().chain(ALLOW_ARCH) {
            assert_eq!(call(&f, nr, [0; 6]), RET_ALLOW, "{name}");
        }
        for &(name, nr) in DENY.iter().chain(DENY_ARCH) {
            assert_eq!(call(&f, nr, [0; 6]), EPERM, "{name}");
        }
        let known: std::collections::BTreeSet<u32> = ALLOW
            .iter()
            .chain(ALLOW_ARCH)
            .chain(DENY)
            .chain(DENY_ARCH)
            .map(|&(_, n)| n as u32)
            .chain(checked().iter().map(|&(_, n, _)| n as u32))
            .collect();
        for nr in 0..1024u32 {
            if !known.contains(&nr) {
                assert_eq!(run(&f, nr, AUDIT_ARCH, [0; 6]), ENOSYS, "syscall {nr}");
            }
        }
        // Calls newer than the tables (listmount 458, statmount 457, open_tree_attr 467,
        // lsm_set_self_attr 460, setxattrat 463, file_setattr 469 on x86_64).
        #[cfg(target_arch = "x86_64")]
        for nr in [457, 458, 460, 463, 467, 469] {
            assert_eq!(run(&f, nr, AUDIT_ARCH, [0; 6]), ENOSYS, "syscall {nr}");
        }
        assert_eq!(run(&f, 0, 0x4000_0003, [0; 6]), RET_KILL_PROCESS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&f, 0x4000_0000 | 165, AUDIT_ARCH, [0; 6]), EPERM);
    }

    #[test]
    fn arguments_are_checked() {
        let f = filter(&Options::default());
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32;
        assert_eq!(
            call(&f, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        let newuser = libc::SIGCHLD as u32 | libc::CLONE_NEWUSER as u32;
        assert_eq!(call(&f, libc::SYS_clone, [newuser, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(&f, libc::SYS_clone3, [0; 6]), ENOSYS);
        assert_eq!(call(&f, libc::SYS_openat2, [0; 6]), ENOSYS);
        assert_eq!(
            call(&f, libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            call(&f, libc::SYS_personality, [0, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            call(&f, libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]),
            EPERM
        );
        // execveat of a descriptor; memfd that may be executed.
        assert_eq!(call(&f, libc::SYS_execveat, [3, 0, 0, 0, 0x1000, 0]), EPERM);
        assert_eq!(call(&f, libc::SYS_execveat, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            call(&f, libc::SYS_memfd_create, [0, 0x10 | 1, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            call(&f, libc::SYS_memfd_create, [0, 1, 0, 0, 0, 0]),
            RET_ALLOW
        );
        // setuid/setgid bits.
        assert_eq!(call(&f, libc::SYS_fchmod, [3, 0o4755, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(&f, libc::SYS_fchmod, [3, 0o2755, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            call(&f, libc::SYS_fchmod, [3, 0o1777, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(&f, libc::SYS_fchmodat, [3, 0, 0o4755, 0, 0, 0]), EPERM);
        assert_eq!(
            call(&f, libc::SYS_openat, [3, 0, 0o101, 0o4755, 0, 0]),
            EPERM
        );
        assert_eq!(
            call(&f, libc::SYS_openat, [3, 0, 0o101, 0o644, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(&f, libc::SYS_mknodat, [3, 0, 0o4644, 0, 0, 0]), EPERM);
        // terminals
        assert_eq!(call(&f, libc::SYS_ioctl, [0, TIOCSTI, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(&f, libc::SYS_ioctl, [0, TIOCLINUX, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            call(&f, libc::SYS_ioctl, [0, 0x5401, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn sockets_by_family_type_and_protocol() {
        let sock = |f: &[sock_filter], dom: i32, ty: i32, proto: i32| {
            call(
                f,
                libc::SYS_socket,
                [dom as u32, ty as u32, proto as u32, 0, 0, 0],
            )
        };
        let f = filter(&Options::default());
        let nb = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        assert_eq!(sock(&f, libc::AF_UNIX, libc::SOCK_DGRAM, 0), RET_ALLOW);
        assert_eq!(
            sock(&f, libc::AF_INET, libc::SOCK_STREAM | nb, 0),
            RET_ALLOW
        );
        assert_eq!(
            sock(&f, libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
            RET_ALLOW
        );
        assert_eq!(sock(&f, libc::AF_INET, libc::SOCK_STREAM, 262), EPERM); // MPTCP
        assert_eq!(sock(&f, libc::AF_INET, libc::SOCK_STREAM, 132), EPERM); // SCTP
        assert_eq!(sock(&f, libc::AF_INET, libc::SOCK_DGRAM | nb, 0), EPERM);
        assert_eq!(sock(&f, libc::AF_INET, libc::SOCK_RAW, 1), EPERM);
        for fam in [
            libc::AF_NETLINK,
            libc::AF_VSOCK,
            libc::AF_PACKET,
            libc::AF_ALG,
        ] {
            assert_eq!(
                sock(&f, fam, libc::SOCK_RAW, 0),
                EAFNOSUPPORT,
                "family {fam}"
            );
        }
        let sp = |f: &[sock_filter], dom: i32| {
            call(f, libc::SYS_socketpair, [dom as u32, 1, 0, 0, 0, 0])
        };
        assert_eq!(sp(&f, libc::AF_UNIX), RET_ALLOW);
        assert_eq!(sp(&f, libc::AF_INET), EAFNOSUPPORT);
        let g = filter(&Options {
            udp: true,
            families: vec![libc::AF_NETLINK as u32],
            extra: vec![libc::SYS_io_uring_setup],
        });
        assert_eq!(sock(&g, libc::AF_INET, libc::SOCK_DGRAM, 0), RET_ALLOW);
        assert_eq!(sock(&g, libc::AF_NETLINK, libc::SOCK_RAW, 0), RET_ALLOW);
        assert_eq!(sock(&g, libc::AF_VSOCK, libc::SOCK_STREAM, 0), EAFNOSUPPORT);
        assert_eq!(sock(&g, libc::AF_INET, libc::SOCK_RAW, 1), EPERM);
        assert_eq!(call(&g, libc::SYS_io_uring_setup, [0; 6]), RET_ALLOW);
        assert_eq!(lookup("io_uring_setup"), Some(libc::SYS_io_uring_setup));
        assert_eq!(lookup("socket"), Some(libc::SYS_socket));
        assert_eq!(lookup("nosuchcall"), None);
    }
}
