//! The default seccomp filter of level `sandbox`: a deny list, as Docker's and systemd's
//! `SystemCallFilter=~@mount @module …` are, so ordinary programs run unchanged while the calls
//! that reach into the kernel's or other processes' state fail with EPERM.
//!
//! The program is classic BPF built once per app in the parent; the child only hands it to
//! `prctl(PR_SET_SECCOMP)` (after `no_new_privs`).

use libc::sock_filter;

/// System calls that fail with EPERM.
const DENIED: &[libc::c_long] = &[
    // mounts and root changes
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // other processes
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    // namespaces (clone with CLONE_NEW* is filtered below)
    libc::SYS_unshare,
    libc::SYS_setns,
    // the kernel itself
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16; // low 32 bits on a little-endian machine

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

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

/// The default filter.
pub fn default_filter() -> Vec<sock_filter> {
    let deny = RET_ERRNO | libc::EPERM as u32;
    let mut f = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls (nr | 0x40000000) would bypass the numbers below.
        f.push(jump(BPF_JGE_K, 0x4000_0000, 0, 1));
        f.push(stmt(BPF_RET_K, deny));
    }
    for &nr in DENIED {
        f.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        f.push(stmt(BPF_RET_K, deny));
    }
    // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes the C library
    // fall back to clone, whose flags are checked here.
    f.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    f.push(stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32));
    // clone(flags, …) with a namespace flag (on x86_64 and aarch64 flags are argument 0).
    f.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 4));
    f.push(stmt(BPF_LD_W_ABS, OFF_ARG0));
    f.push(jump(BPF_JSET_K, CLONE_NS, 0, 1));
    f.push(stmt(BPF_RET_K, deny));
    f.push(stmt(BPF_RET_K, RET_ALLOW));
    // personality: only the query (0xffffffff) and PER_LINUX (0), which change nothing.
    f.push(jump(BPF_JEQ_K, libc::SYS_personality as u32, 0, 5));
    f.push(stmt(BPF_LD_W_ABS, OFF_ARG0));
    f.push(jump(BPF_JEQ_K, 0xffff_ffff, 2, 0));
    f.push(jump(BPF_JEQ_K, 0, 1, 0));
    f.push(stmt(BPF_RET_K, deny));
    f.push(stmt(BPF_RET_K, RET_ALLOW));
    f.push(stmt(BPF_RET_K, RET_ALLOW));
    f
}

/// How many system calls the default filter denies (for `doctor` and the README).
pub fn denied_count() -> usize {
    DENIED.len() + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions the filter uses.
    fn run(f: &[sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = f[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    a = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0 => arg0,
                        k => panic!("load of offset {k}"),
                    };
                    pc += 1;
                }
                BPF_RET_K => return i.k,
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
    }

    #[test]
    fn the_filter_denies_what_it_lists_and_allows_the_rest() {
        let f = default_filter();
        assert!(f.len() < 4096);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let nr = |n: libc::c_long| n as u32;
        for &d in DENIED {
            assert_eq!(run(&f, nr(d), AUDIT_ARCH, 0), eperm, "syscall {d}");
        }
        for ok in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_exit_group,
        ] {
            assert_eq!(run(&f, nr(ok), AUDIT_ARCH, 0), RET_ALLOW, "syscall {ok}");
        }
        let clone = nr(libc::SYS_clone);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32;
        assert_eq!(run(&f, clone, AUDIT_ARCH, thread), RET_ALLOW);
        assert_eq!(
            run(
                &f,
                clone,
                AUDIT_ARCH,
                libc::SIGCHLD as u32 | libc::CLONE_NEWUSER as u32
            ),
            eperm
        );
        assert_eq!(
            run(&f, nr(libc::SYS_clone3), AUDIT_ARCH, 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
        let pers = nr(libc::SYS_personality);
        assert_eq!(run(&f, pers, AUDIT_ARCH, 0xffff_ffff), RET_ALLOW);
        assert_eq!(run(&f, pers, AUDIT_ARCH, 0), RET_ALLOW);
        assert_eq!(run(&f, pers, AUDIT_ARCH, 0x0040000), eperm); // ADDR_NO_RANDOMIZE
        assert_eq!(
            run(&f, nr(libc::SYS_read), 0x4000_0003, 0),
            RET_KILL_PROCESS
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&f, 0x4000_0000 | 165, AUDIT_ARCH, 0), eperm);
    }
}
