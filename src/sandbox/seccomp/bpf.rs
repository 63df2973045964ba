//! The classic-BPF program of the filter: the architecture check, then a binary search over
//! the sorted call numbers with, for each, a return or the argument checks of its [`Check`]
//! (socket families and types, namespace flags of `clone`, setuid/setgid modes, ioctls,
//! personality). Tested here with a small BPF interpreter.

use super::Options;
use crate::syscalls::{ALLOW, ALLOW_ARCH, Check, DENY, DENY_ARCH, checked};
use libc::sock_filter;
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
    use crate::sandbox::seccomp::lookup;

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
