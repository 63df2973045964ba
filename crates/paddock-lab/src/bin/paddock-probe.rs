//! `paddock-probe`: the escape probe of the escape matrix (see src/escape.rs, tests/escape.rs and
//! `paddock bench`). Run as an app at some isolation level, it tries each attempt of
//! `paddock_lab::escape::ATTEMPTS` in turn and prints one line per attempt:
//!
//! ```text
//! paddock-probe attempt=mount result=escaped detail="tmpfs mounted on /tmp/x/mnt (host mount namespace); unmounted"
//! ```
//!
//! It runs on the real host at level `none`, so every attempt that succeeds undoes itself at
//! once and stays bounded: the tmpfs is mounted on a scratch dir given by the caller and
//! unmounted, the hostname is restored, written files, set-user-ID files, the device node and the
//! planted symlink are deleted, the cgroup move is moved back, `open_tree_attr`'s detached mount
//! and every descriptor (io_uring, BPF map, perf counter, userfaultfd, sockets) is closed, the key
//! is invalidated, the fork bomb stops at 500 processes and kills and reaps them, the memory bomb
//! stops at 256 MiB, the /tmp fill at 256 MiB (and never leaves the host's /tmp with less than
//! 1 GiB free), the descriptor loop at 4096, the CPU hog spins for 1 s. Files that only need
//! opening for writing (`/proc/sysrq-trigger`, `/proc/sys/kernel/hostname`, a file of its
//! program's dir) are opened and closed, never written. Namespace changes (`unshare`, `setns`,
//! `chroot`, `personality`) happen in the attempt's own process, which exits right after. A
//! kernel module is never loaded: `init_module` gets an invalid image, and anything but EPERM
//! means the kernel would have looked at a real one (but note that creating an `AF_VSOCK` socket
//! as root may make a modular kernel load the vsock module). Each attempt runs in a child
//! process of its own, so an attempt killed by the level (seccomp's SIGSYS, the OOM killer's
//! SIGKILL) is reported as blocked and the next attempt still runs.
//!
//! Parameters (environment; an attempt whose parameter is missing is reported `skipped`):
//! `PROBE_SECRET` (a file to read), `PROBE_OUTSIDE` (a dir it must not write to), `PROBE_RW`
//! (its writable dir), `PROBE_VICTIM_MARK` (a word in the command line of a host process),
//! `PROBE_VICTIM_PID` (that process, for ptrace), `PROBE_SIGNAL_PID` (a host process to kill
//! with SIGUSR1), `PROBE_CONNECT_PORT` (a TCP listener on the host's 127.0.0.1),
//! `PROBE_UDP_PORT` (a UDP echo listener there), `PROBE_BIND_PORT` (a port the config does not
//! allow), `PROBE_MOUNT_DIR` (an empty scratch dir), `PROBE_HOST_UTS`, `PROBE_HOST_MNT`,
//! `PROBE_HOST_PID` and `PROBE_HOST_USER` (the host's `/proc/self/ns/*` links), `PROBE_SETUID`
//! (a setuid-root copy of this program, run with `--ids`), `PROBE_PADDOCK_PID_FILE` (where the
//! runner writes paddock serve's pid), `PROBE_HEALTH_REPORT` (where the exec health check
//! writes), `PROBE_FORKS` (500), `PROBE_MEM_MIB` (256), `PROBE_CPU_MAX` (0.5). Arguments: the
//! attempts to make (default: all).
//!
//! Modes: `paddock-probe --ids` prints `euid=N capeff=HEX` and exits (what the setuid copy
//! reports); `--exit0` exits 0 at once (what the memfd copies run); `--health-check FILE` writes
//! its namespaces, seccomp mode and no_new_privs to FILE and exits 0 (the exec health check).

use paddock_lab::escape::{ATTEMPTS, Outcome, format_line};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

type Verdict = (Outcome, String);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn errno_text(e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).to_string(),
        None => e.to_string(),
    }
}

fn last_errno() -> String {
    errno_text(std::io::Error::last_os_error())
}

fn is_eperm_like(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EROFS | libc::ENOSYS)
    )
}

fn cap_eff() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn ns_link(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown ({})", errno_text(e)))
}

macro_rules! need {
    ($name:expr) => {
        match env($name) {
            Some(v) => v,
            None => return (Outcome::Skipped, format!("{} not given", $name)),
        }
    };
}

fn read_secret() -> Verdict {
    let p = need!("PROBE_SECRET");
    match std::fs::read(&p) {
        Ok(b) => (Outcome::Escaped, format!("read {} bytes of {p}", b.len())),
        Err(e) => (Outcome::Blocked, format!("{p}: {}", errno_text(e))),
    }
}

fn write_outside() -> Verdict {
    let dir = need!("PROBE_OUTSIDE");
    let p = format!("{dir}/written-by-probe-{}", std::process::id());
    match std::fs::write(&p, b"escaped\n") {
        Ok(()) => {
            let undo = match std::fs::remove_file(&p) {
                Ok(()) => "deleted again".to_string(),
                Err(e) => format!("could not delete it: {}", errno_text(e)),
            };
            (Outcome::Escaped, format!("created {p}; {undo}"))
        }
        Err(e) => (Outcome::Blocked, format!("{p}: {}", errno_text(e))),
    }
}

fn list_processes() -> Verdict {
    let mark = need!("PROBE_VICTIM_MARK");
    let rd = match std::fs::read_dir("/proc") {
        Ok(r) => r,
        Err(e) => return (Outcome::Blocked, format!("/proc: {}", errno_text(e))),
    };
    let mut seen = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        seen += 1;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&mark) {
            return (
                Outcome::Escaped,
                format!("saw the host's victim as pid {pid} among {seen}+ processes"),
            );
        }
    }
    (
        Outcome::Blocked,
        format!("{seen} processes visible, the host's victim not among them"),
    )
}

fn signal_host() -> Verdict {
    let pid: i32 = need!("PROBE_SIGNAL_PID").parse().unwrap_or(0);
    if pid <= 1 || pid as u32 == std::process::id() {
        return (Outcome::Error, format!("bad PROBE_SIGNAL_PID {pid}"));
    }
    // SAFETY: kill(2) takes no pointers; signalling a host process is the attempt (pid > 1 and not
    // ourselves was checked).
    if unsafe { libc::kill(pid, libc::SIGUSR1) } == 0 {
        (
            Outcome::Escaped,
            format!("SIGUSR1 delivered to pid {pid} (the victim dies of it)"),
        )
    } else {
        (Outcome::Blocked, format!("kill({pid}): {}", last_errno()))
    }
}

fn connect_host() -> Verdict {
    let port: u16 = need!("PROBE_CONNECT_PORT").parse().unwrap_or(0);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.write_all(b"paddock-probe\n");
            (Outcome::Escaped, format!("connected to {addr}"))
        }
        Err(e) => (Outcome::Blocked, format!("{addr}: {}", errno_text(e))),
    }
}

fn bind_port() -> Verdict {
    let port: u16 = need!("PROBE_BIND_PORT").parse().unwrap_or(0);
    match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => {
            drop(l);
            (
                Outcome::Escaped,
                format!("bound and listened on 0.0.0.0:{port}; closed"),
            )
        }
        Err(e) => (
            Outcome::Blocked,
            format!("0.0.0.0:{port}: {}", errno_text(e)),
        ),
    }
}

fn ptrace() -> Verdict {
    let pid: i32 = need!("PROBE_VICTIM_PID").parse().unwrap_or(0);
    if pid <= 1 {
        return (Outcome::Error, format!("bad PROBE_VICTIM_PID {pid}"));
    }
    // SAFETY: PTRACE_ATTACH ignores addr and data (null); an attempt the sandbox should refuse.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r != 0 {
        return (
            Outcome::Blocked,
            format!("PTRACE_ATTACH {pid}: {}", last_errno()),
        );
    }
    let mut st = 0;
    // SAFETY: waitpid writes only to `st`; the tracee reports its attach stop.
    unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
    // SAFETY: PTRACE_DETACH with null addr and data (no signal delivered).
    let d = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    (
        Outcome::Escaped,
        format!(
            "attached to pid {pid}; {}",
            if d == 0 {
                "detached".to_string()
            } else {
                format!("detach failed: {}", last_errno())
            }
        ),
    )
}

fn mount() -> Verdict {
    let dir = need!("PROBE_MOUNT_DIR");
    let host = env("PROBE_HOST_MNT").map(|h| h == ns_link("mnt"));
    let r = nix::mount::mount(
        Some("paddock-probe"),
        dir.as_str(),
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("size=64k"),
    );
    match r {
        Ok(()) => {
            let undo = match nix::mount::umount2(dir.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => "unmounted".to_string(),
                Err(e) => format!("unmount failed: {e}"),
            };
            let whose = match host {
                Some(true) => "the host's mount namespace",
                Some(false) => "its own mount namespace",
                None => "mount namespace unknown",
            };
            (
                Outcome::Escaped,
                format!("tmpfs mounted on {dir} ({whose}); {undo}"),
            )
        }
        Err(e) => (Outcome::Blocked, format!("mount tmpfs on {dir}: {e}")),
    }
}

fn hostname() -> Verdict {
    let old = match nix::unistd::gethostname() {
        Ok(h) => h,
        Err(e) => return (Outcome::Error, format!("gethostname: {e}")),
    };
    let new = format!("paddock-probe-{}", std::process::id());
    if let Err(e) = nix::unistd::sethostname(&new) {
        return (Outcome::Blocked, format!("sethostname: {e}"));
    }
    let restored = nix::unistd::sethostname(&old);
    let undo = match restored {
        Ok(()) => format!("restored to {}", old.to_string_lossy()),
        Err(e) => format!("RESTORE FAILED ({e})"),
    };
    match env("PROBE_HOST_UTS") {
        Some(h) if h != ns_link("uts") => (
            Outcome::Blocked,
            format!(
                "changed only in its own UTS namespace ({}); {undo}",
                ns_link("uts")
            ),
        ),
        Some(_) => (
            Outcome::Escaped,
            format!("set to {new} in the host's UTS namespace; {undo}"),
        ),
        None => (
            Outcome::Escaped,
            format!("set to {new} (host UTS namespace not given: assumed shared); {undo}"),
        ),
    }
}

fn setuid() -> Verdict {
    let p = need!("PROBE_SETUID");
    let own = format!(
        "probe euid={} capeff={}",
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::geteuid() },
        cap_eff()
    );
    let out = match std::process::Command::new(&p)
        .arg("--ids")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            let blocked = is_eperm_like(&e) || e.kind() == std::io::ErrorKind::NotFound;
            return (
                if blocked {
                    Outcome::Blocked
                } else {
                    Outcome::Error
                },
                format!("exec {p}: {}; {own}", errno_text(e)),
            );
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let capeff = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("capeff="))
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    match capeff {
        Some(0) => (
            Outcome::Blocked,
            format!("the setuid binary ran without capabilities ({text}); {own}"),
        ),
        Some(_) => (
            Outcome::Escaped,
            format!("the setuid binary ran with capabilities ({text}); {own}"),
        ),
        None => (
            Outcome::Error,
            format!("the setuid binary said {text:?} ({}); {own}", out.status),
        ),
    }
}

fn kernel_module() -> Verdict {
    // Not an ELF file: the kernel refuses it after the permission checks. Never a real module.
    let image = [0u8; 64];
    let params = b"\0";
    // SAFETY: init_module reads `image` (64 bytes, length given) and `params`, a NUL-terminated
    // literal; both live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            params.as_ptr(),
        )
    };
    if r == 0 {
        return (
            Outcome::Escaped,
            "the kernel accepted an invalid image (!)".into(),
        );
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) && !std::path::Path::new("/proc/modules").exists() {
        return (
            Outcome::Blocked,
            "init_module: ENOSYS: this kernel has no module support (no /proc/modules): no level can load one here".into(),
        );
    }
    if is_eperm_like(&e) {
        (Outcome::Blocked, format!("init_module: {}", errno_text(e)))
    } else {
        (
            Outcome::Escaped,
            format!(
                "init_module passed the permission checks and refused only the invalid image: {}",
                errno_text(e)
            ),
        )
    }
}

fn fork_bomb() -> Verdict {
    let max: usize = env("PROBE_FORKS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut kids = vec![];
    let mut refused = None;
    for _ in 0..max {
        // SAFETY: the probe is single-threaded (it never spawns a thread), so the child may run
        // anything; it only calls prctl and pause.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl and pause take integers; the child never returns (we kill it, or it
            // dies with us).
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                loop {
                    libc::pause();
                }
            }
        }
        if pid < 0 {
            refused = Some(last_errno());
            break;
        }
        kids.push(pid);
    }
    let n = kids.len();
    for &k in &kids {
        // SAFETY: kill(2) takes no pointers; `k` is a child forked above, not reaped yet.
        unsafe { libc::kill(k, libc::SIGKILL) };
    }
    for &k in &kids {
        let mut st = 0;
        // SAFETY: waitpid writes only to `st`; it reaps child `k`.
        unsafe { libc::waitpid(k, &mut st, 0) };
    }
    match refused {
        Some(e) => (
            Outcome::Blocked,
            format!("fork refused after {n} processes: {e}; all killed and reaped"),
        ),
        None => (
            Outcome::Escaped,
            format!(
                "forked {n} processes (the probe's own cap), none refused; all killed and reaped"
            ),
        ),
    }
}

fn memory_bomb() -> Verdict {
    let mib: usize = env("PROBE_MEM_MIB")
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    const CHUNK: usize = 16 << 20;
    let mut chunks = vec![];
    let mut refused = None;
    while chunks.len() * CHUNK < mib << 20 {
        // SAFETY: an anonymous mapping without an address hint: fresh memory that aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            refused = Some(last_errno());
            break;
        }
        // Touch every page, so the memory is really charged.
        for off in (0..CHUNK).step_by(4096) {
            // SAFETY: off < CHUNK: inside the read-write mapping made above.
            unsafe { *(p as *mut u8).add(off) = 1 };
        }
        chunks.push(p);
    }
    let got = chunks.len() * 16;
    for p in chunks {
        // SAFETY: unmaps a mapping made above, with its length; no reference into it remains.
        unsafe { libc::munmap(p, CHUNK) };
    }
    match refused {
        Some(e) => (
            Outcome::Blocked,
            format!("allocation refused after {got} MiB: {e}"),
        ),
        None => (
            Outcome::Escaped,
            format!("touched {got} MiB (the probe's own cap), nothing stopped it; freed"),
        ),
    }
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu_hog() -> Verdict {
    let max: f64 = env("PROBE_CPU_MAX")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut x = 0u64;
    while t0.elapsed() < Duration::from_secs(1) {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    let share = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let d = format!("spun 1 s and got {share:.2} of a core (escape above {max})");
    if share > max {
        (Outcome::Escaped, d)
    } else {
        (Outcome::Blocked, d)
    }
}

// ---- System call families -------------------------------------------------------------------

// Numbers of system calls newer than the C library's bindings. Since Linux 5.1 a new system call
// has the same number on every architecture but alpha.
const SYS_PROCESS_MADVISE: libc::c_long = 440;
const SYS_MEMFD_SECRET: libc::c_long = 447;
const SYS_STATMOUNT: libc::c_long = 457;
const SYS_LISTMOUNT: libc::c_long = 458;
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;
const SYS_FILE_GETATTR: libc::c_long = 468;

/// The verdict on a system call a confined app should never get through: ENOSYS or EPERM/EACCES
/// is blocked; success, or any other error (the kernel looked at the arguments), is an escape.
/// Call it right after the call, before anything can change errno.
fn syscall_verdict(
    what: &str,
    r: libc::c_long,
    ok: impl FnOnce(libc::c_long) -> String,
) -> Verdict {
    if r >= 0 {
        return (Outcome::Escaped, ok(r));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => (
            Outcome::Blocked,
            format!("{what}: ENOSYS (refused by a filter, or unknown to this kernel)"),
        ),
        Some(libc::EPERM | libc::EACCES) => {
            (Outcome::Blocked, format!("{what}: {}", errno_text(e)))
        }
        _ => (
            Outcome::Escaped,
            format!(
                "{what} reached the kernel, which answered {}",
                errno_text(e)
            ),
        ),
    }
}

fn close(fd: libc::c_long) {
    // SAFETY: closing a descriptor this process just got and no one else uses.
    unsafe { libc::close(fd as i32) };
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap_or_default()
}

/// `struct mnt_id_req` (include/uapi/linux/mount.h, MNT_ID_REQ_SIZE_VER1).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
    mnt_ns_id: u64,
}

fn listmount() -> Verdict {
    let req = MntIdReq {
        size: 32,
        spare: 0,
        mnt_id: u64::MAX, // LSMT_ROOT
        param: 0,
        mnt_ns_id: 0,
    };
    let mut ids = [0u64; 256];
    // SAFETY: req and ids are valid for the sizes given; the kernel writes at most 256 ids.
    let r = unsafe { libc::syscall(SYS_LISTMOUNT, &req, ids.as_mut_ptr(), ids.len(), 0) };
    syscall_verdict("listmount", r, |n| {
        format!("listed {n} mounts under its root mount")
    })
}

/// The unique id (STATX_MNT_ID_UNIQUE) of the mount of `path`.
fn mount_id(path: &str) -> Option<u64> {
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let p = cstr(path);
    // SAFETY: p is a valid C string and st a valid statx buffer.
    let r = unsafe { libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, 0x4000, &mut st) };
    (r == 0 && st.stx_mask & 0x4000 != 0).then_some(st.stx_mnt_id)
}

fn statmount() -> Verdict {
    let id = mount_id("/").unwrap_or(0);
    let req = MntIdReq {
        size: 32,
        spare: 0,
        mnt_id: id,
        param: 1, // STATMOUNT_SB_BASIC
        mnt_ns_id: 0,
    };
    let mut buf = [0u64; 512];
    // SAFETY: req and buf are valid for the sizes given.
    let r = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &req,
            buf.as_mut_ptr(),
            std::mem::size_of_val(&buf),
            0,
        )
    };
    syscall_verdict("statmount", r, |_| {
        format!("read the superblock of its root mount (mount id {id})")
    })
}

fn open_tree_attr() -> Verdict {
    let dir = need!("PROBE_MOUNT_DIR");
    let p = cstr(&dir);
    let attr = [0u64; 4]; // struct mount_attr, nothing changed
    // SAFETY: p is a valid C string, attr a valid 32-byte mount_attr.
    let r = unsafe {
        libc::syscall(
            SYS_OPEN_TREE_ATTR,
            libc::AT_FDCWD,
            p.as_ptr(),
            1 | libc::O_CLOEXEC, // OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
            attr.as_ptr(),
            32usize,
        )
    };
    syscall_verdict("open_tree_attr", r, |fd| {
        close(fd);
        format!("cloned the mount of {dir} into a detached tree; closed (dissolved)")
    })
}

fn file_getattr() -> Verdict {
    let dir = env("PROBE_RW").unwrap_or_else(|| "/".into());
    let p = cstr(&dir);
    let mut fa = [0u64; 4]; // struct file_attr (24 bytes, FILE_ATTR_SIZE_VER0)
    // SAFETY: p is a valid C string, fa a 32-byte buffer, 24 of which the kernel may write.
    let r = unsafe {
        libc::syscall(
            SYS_FILE_GETATTR,
            libc::AT_FDCWD,
            p.as_ptr(),
            fa.as_mut_ptr(),
            24usize,
            0,
        )
    };
    syscall_verdict("file_getattr", r, |_| {
        format!("read the inode flags of {dir} (xflags {:#x})", fa[0])
    })
}

fn io_uring() -> Verdict {
    let mut params = [0u64; 15]; // struct io_uring_params, 120 bytes
    // SAFETY: params is a valid io_uring_params buffer.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    syscall_verdict("io_uring_setup", r, |fd| {
        close(fd);
        "an io_uring of 4 entries (its operations bypass a seccomp filter); closed".into()
    })
}

fn bpf() -> Verdict {
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key size
    attr[2] = 4; // value size
    attr[3] = 1; // max entries
    // SAFETY: attr is a valid 128-byte bpf_attr for BPF_MAP_CREATE.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 128u32) };
    syscall_verdict("bpf(BPF_MAP_CREATE)", r, |fd| {
        close(fd);
        "created a BPF map; closed".into()
    })
}

fn userfaultfd() -> Verdict {
    // SAFETY: a plain system call with a flag argument.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    syscall_verdict("userfaultfd", r, |fd| {
        close(fd);
        "got a userfaultfd (the kernel-race helper of many exploits); closed".into()
    })
}

fn perf_event() -> Verdict {
    let mut attr = [0u64; 8]; // struct perf_event_attr, PERF_ATTR_SIZE_VER0
    attr[0] = 1 | (64 << 32); // type PERF_TYPE_SOFTWARE, size 64; config 0: CPU clock
    attr[5] = 1 | (1 << 5) | (1 << 6); // disabled, exclude_kernel, exclude_hv
    // SAFETY: attr is a valid 64-byte perf_event_attr; pid 0 (itself), any cpu, no group.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            8, /* FD_CLOEXEC */
        )
    };
    syscall_verdict("perf_event_open", r, |fd| {
        close(fd);
        "opened a software perf counter on itself; closed".into()
    })
}

fn keyctl() -> Verdict {
    let (ty, desc) = (cstr("user"), cstr("paddock-probe"));
    // SAFETY: valid C strings and a 1-byte payload; -2 is KEY_SPEC_PROCESS_KEYRING.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            b"x".as_ptr(),
            1usize,
            -2,
        )
    };
    syscall_verdict("add_key", r, |id| {
        // SAFETY: KEYCTL_INVALIDATE (21) of the key just made.
        unsafe { libc::syscall(libc::SYS_keyctl, 21, id) };
        format!("added key {id} to its keyring (keys are not namespaced); invalidated")
    })
}

fn unshare_user() -> Verdict {
    // SAFETY: unshare in this single-threaded attempt process, which exits right after.
    let r = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    syscall_verdict("unshare(CLONE_NEWUSER)", r as libc::c_long, |_| {
        format!(
            "now in a new user namespace {} (root inside it)",
            ns_link("user")
        )
    })
}

fn clone_newns() -> Verdict {
    // SAFETY: a fork-like clone (no new stack: the child has its own copy of the address space)
    // whose child only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::_exit(0) };
    }
    let v = syscall_verdict("clone(CLONE_NEWNS)", pid, |p| {
        format!("child {p} ran in a new mount namespace; reaped")
    });
    if pid > 0 {
        let mut st = 0;
        // SAFETY: reaping the child just made.
        unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    }
    v
}

fn setns_mnt() -> Verdict {
    let own = ns_link("mnt");
    // pid 1's namespace, else the host victim's (pid 1 may be out of reach of a plain root, as
    // in a container).
    let mut tried = vec![];
    let mut got = None;
    for pid in ["1".to_string()].into_iter().chain(env("PROBE_VICTIM_PID")) {
        let p = format!("/proc/{pid}/ns/mnt");
        match std::fs::File::open(&p) {
            Ok(f) => {
                got = Some((p, f));
                break;
            }
            Err(e) => tried.push(format!("{p}: {}", errno_text(e))),
        }
    }
    let Some((p, f)) = got else {
        return (Outcome::Blocked, tried.join("; "));
    };
    let target = std::fs::read_link(&p)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // SAFETY: setns of this single-threaded attempt process, which exits right after.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNS) };
    if r != 0 {
        tried.push(format!("setns({p} = {target}): {}", last_errno()));
        return (Outcome::Blocked, tried.join("; "));
    }
    let now = ns_link("mnt");
    match env("PROBE_HOST_MNT") {
        Some(h) if h == now => (
            Outcome::Escaped,
            format!("entered the host's mount namespace {now} through {p} (was {own})"),
        ),
        _ if now != own => (
            Outcome::Escaped,
            format!("entered another mount namespace {now} through {p} (was {own})"),
        ),
        _ => (
            Outcome::Blocked,
            format!("setns({p}) worked, but only into its own mount namespace {now}"),
        ),
    }
}

fn chroot() -> Verdict {
    let dir = need!("PROBE_MOUNT_DIR");
    let p = cstr(&dir);
    // SAFETY: chroot of this attempt process, which exits right after.
    let r = unsafe { libc::chroot(p.as_ptr()) };
    syscall_verdict("chroot", r as libc::c_long, |_| {
        format!("chroot into {dir} worked (CAP_SYS_CHROOT)")
    })
}

/// `struct file_handle` with room for MAX_HANDLE_SZ bytes.
#[repr(C)]
struct FileHandle {
    bytes: u32,
    kind: i32,
    handle: [u8; 128],
}

fn open_by_handle() -> Verdict {
    let mut tried = vec![];
    let dirs: Vec<String> = env("PROBE_RW")
        .into_iter()
        .chain(["/".to_string()])
        .collect();
    for dir in dirs {
        let p = cstr(&dir);
        let mut fh = FileHandle {
            bytes: 128,
            kind: 0,
            handle: [0; 128],
        };
        let mut mount_id = 0i32;
        // SAFETY: p is a valid C string, fh has room for 128 handle bytes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                p.as_ptr(),
                &mut fh,
                &mut mount_id,
                0,
            )
        };
        if r != 0 {
            // No handle from the kernel: craft one, as the 'shocker' exploit did (ext4's root
            // directory is inode 2: FILEID_INO32_GEN {ino 2, generation 0}).
            tried.push(format!("name_to_handle_at({dir}): {}", last_errno()));
            fh.bytes = 8;
            fh.kind = 1;
            fh.handle[..4].copy_from_slice(&2u32.to_ne_bytes());
        }
        let mfd = match std::fs::File::open(&dir) {
            Ok(f) => f,
            Err(e) => {
                tried.push(format!("{dir}: {}", errno_text(e)));
                continue;
            }
        };
        // SAFETY: mfd is an open descriptor on the filesystem, fh a valid handle buffer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                std::os::fd::AsRawFd::as_raw_fd(&mfd),
                &fh,
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            close(fd);
            return (
                Outcome::Escaped,
                format!(
                    "opened {dir} by a file handle (CAP_DAC_READ_SEARCH: a crafted handle reaches any file of that filesystem); closed"
                ),
            );
        }
        let e = std::io::Error::last_os_error();
        if is_eperm_like(&e) {
            tried.push(format!("open_by_handle_at({dir}): {}", errno_text(e)));
            return (Outcome::Blocked, tried.join("; "));
        }
        tried.push(format!("open_by_handle_at({dir}): {}", errno_text(e)));
    }
    (
        Outcome::Escaped,
        format!("open_by_handle_at reached the kernel: {}", tried.join("; ")),
    )
}

fn syslog() -> Verdict {
    let mut buf = vec![0u8; 4096];
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) into a buffer of the length given.
    let r = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as i32) };
    syscall_verdict("syslog(READ_ALL)", r as libc::c_long, |n| {
        format!("read {n} bytes of the kernel log")
    })
}

fn memfd_secret() -> Verdict {
    // SAFETY: a plain system call with a flag argument.
    let r = unsafe { libc::syscall(SYS_MEMFD_SECRET, libc::O_CLOEXEC) };
    syscall_verdict("memfd_secret", r, |fd| {
        close(fd);
        "got a secret-memory descriptor; closed".into()
    })
}

fn process_madvise() -> Verdict {
    // SAFETY: pidfd_open of itself.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if pidfd < 0 {
        return syscall_verdict("pidfd_open", pidfd, |_| String::new());
    }
    // SAFETY: one anonymous page of its own, advised cold, then unmapped.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let iov = libc::iovec {
        iov_base: page,
        iov_len: 4096,
    };
    // SAFETY: pidfd is its own, iov names its own page; MADV_COLD (20) only ages it.
    let r = unsafe { libc::syscall(SYS_PROCESS_MADVISE, pidfd, &iov, 1usize, 20, 0u32) };
    let v = syscall_verdict("process_madvise", r, |n| {
        format!("advised {n} bytes of a process through its pidfd (MADV_COLD)")
    });
    // SAFETY: unmapping the page mapped above and closing the pidfd.
    unsafe {
        libc::munmap(page, 4096);
    }
    close(pidfd);
    v
}

fn personality() -> Verdict {
    const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
    // SAFETY: 0xffffffff only queries.
    let old = unsafe { libc::personality(0xffff_ffff) };
    // SAFETY: changes the execution domain of this attempt process only.
    let r = unsafe { libc::personality(old as libc::c_ulong | ADDR_NO_RANDOMIZE) };
    if r == -1 {
        return syscall_verdict("personality(ADDR_NO_RANDOMIZE)", -1, |_| String::new());
    }
    // SAFETY: a query, then the old value back.
    let now = unsafe { libc::personality(0xffff_ffff) };
    // SAFETY: the old execution domain back, for this attempt process only.
    unsafe { libc::personality(old as libc::c_ulong) };
    if now as libc::c_ulong & ADDR_NO_RANDOMIZE != 0 {
        (
            Outcome::Escaped,
            "turned address-space randomisation off for its children; restored".into(),
        )
    } else {
        (
            Outcome::Blocked,
            format!("personality answered but ADDR_NO_RANDOMIZE is not set ({now:#x})"),
        )
    }
}

// ---- Code that is not in the bundle ---------------------------------------------------------

/// A memfd holding a copy of the running program, and the arguments that make the copy exit 0
/// at once (`--exit0` for the probe; `--version` when the program is the bundle's loader).
fn memfd_copy() -> Result<(i32, Vec<String>, String), Verdict> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let data = std::fs::read("/proc/self/exe")
        .map_err(|e| (Outcome::Error, format!("/proc/self/exe: {}", errno_text(e))))?;
    let name = cstr("paddock-probe-copy");
    const MFD_EXEC: libc::c_uint = 0x10;
    // SAFETY: a valid C string name and flags.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), MFD_EXEC) };
    let mut how = "MFD_EXEC";
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before 6.3 has no MFD_EXEC: every memfd is executable there.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        how = "no flags";
    } else if fd < 0 {
        // MFD_EXEC refused (vm.memfd_noexec = 2, or a filter): try without; the kernel then
        // seals it non-executable where memfd_noexec asks for it.
        let first = last_errno();
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        how = if fd >= 0 {
            "no flags (MFD_EXEC was refused)"
        } else {
            ""
        };
        if fd < 0 {
            return Err((
                Outcome::Blocked,
                format!(
                    "memfd_create: {first} with MFD_EXEC, {} without",
                    last_errno()
                ),
            ));
        }
    }
    if fd < 0 {
        return Err((Outcome::Blocked, format!("memfd_create: {}", last_errno())));
    }
    // SAFETY: fd is the memfd just made; the File owns it only for the write, then gives it back.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if let Err(e) = f.write_all(&data) {
        return Err((
            Outcome::Error,
            format!("writing the memfd: {}", errno_text(e)),
        ));
    }
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    let base = exe.rsplit('/').next().unwrap_or("");
    let args = if base.starts_with("ld-") || base.starts_with("ld.so") {
        vec!["ld.so".into(), "--version".into()]
    } else {
        vec!["paddock-probe".into(), "--exit0".into()]
    };
    Ok((
        fd,
        args,
        format!("a copy of {exe} ({} bytes, memfd with {how})", data.len()),
    ))
}

/// Runs the memfd `fd` in a child (by `execveat(fd, "", AT_EMPTY_PATH)` or by
/// `execve("/proc/self/fd/N")`) with stdout on /dev/null.
fn run_memfd(by_path: bool) -> Verdict {
    let (fd, args, what) = match memfd_copy() {
        Ok(x) => x,
        Err(v) => return v,
    };
    let argv_c: Vec<std::ffi::CString> = args.iter().map(|a| cstr(a)).collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let path = cstr(&format!("/proc/self/fd/{fd}"));
    let empty = cstr("");
    let devnull = cstr("/dev/null");
    let mut p = [0; 2];
    // SAFETY: a pipe for the exec error, closed on a successful exec.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return (Outcome::Error, format!("pipe: {}", last_errno()));
    }
    // SAFETY: fork of this single-threaded attempt process; the child only calls
    // async-signal-safe functions (open, dup2, exec, write, _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the forked child of a single-threaded process: open, dup2, execve/execveat,
        // write, _exit, with the C strings and NULL-terminated arrays built before the fork and
        // `e`, a local.
        unsafe {
            let n = libc::open(devnull.as_ptr(), libc::O_WRONLY);
            if n >= 0 {
                libc::dup2(n, 1);
            }
            if by_path {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            } else {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    empty.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            let e = *libc::__errno_location();
            libc::write(p[1], (&e as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: closing the parent's write end and the memfd.
    unsafe {
        libc::close(p[1]);
        libc::close(fd);
    }
    if pid < 0 {
        return (Outcome::Error, format!("fork: {}", last_errno()));
    }
    let mut e = [0u8; 4];
    // SAFETY: reading at most 4 bytes into e, then closing the read end.
    let n = unsafe { libc::read(p[0], e.as_mut_ptr().cast(), 4) };
    // SAFETY: closes our own read end, not used again.
    unsafe { libc::close(p[0]) };
    let mut st = 0;
    // SAFETY: reaping the child made above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let how = if by_path {
        format!("execve(/proc/self/fd/{fd})")
    } else {
        "execveat(AT_EMPTY_PATH)".into()
    };
    if n == 4 {
        let errno = i32::from_ne_bytes(e);
        return (
            Outcome::Blocked,
            format!("{how} of {what}: {}", nix::errno::Errno::from_raw(errno)),
        );
    }
    let status = if libc::WIFEXITED(st) {
        format!("exit {}", libc::WEXITSTATUS(st))
    } else {
        format!("signal {}", libc::WTERMSIG(st))
    };
    (
        Outcome::Escaped,
        format!("{how} ran {what} `{}` ({status})", args.join(" ")),
    )
}

// ---- Set-user-ID files and devices ---------------------------------------------------------

fn stat_mode(p: &str) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.mode(), m.uid()))
}

fn setuid_chmod() -> Verdict {
    use std::os::unix::fs::PermissionsExt;
    let dir = need!("PROBE_RW");
    let p = format!("{dir}/suid-chmod-{}", std::process::id());
    if let Err(e) = std::fs::write(&p, b"#!/bin/sh\n") {
        return (Outcome::Error, format!("{p}: {}", errno_text(e)));
    }
    let r = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755));
    let mode = stat_mode(&p);
    let _ = std::fs::remove_file(&p);
    match (r, mode) {
        (Err(e), _) => (
            Outcome::Blocked,
            format!("chmod 04755 {p}: {}", errno_text(e)),
        ),
        (Ok(()), Some((m, uid))) if m & 0o4000 != 0 => (
            Outcome::Escaped,
            format!(
                "{p} is set-user-ID (mode {:o}, uid {uid} as it sees it); removed",
                m & 0o7777
            ),
        ),
        (Ok(()), m) => (
            Outcome::Blocked,
            format!(
                "chmod answered 0 but the bit did not stick (mode {:o})",
                m.map_or(0, |m| m.0 & 0o7777)
            ),
        ),
    }
}

fn setuid_create() -> Verdict {
    let dir = need!("PROBE_RW");
    let p = format!("{dir}/suid-create-{}", std::process::id());
    let c = cstr(&p);
    // SAFETY: a valid C string path; the descriptor is closed at once.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o4755,
        )
    };
    if fd < 0 {
        return (
            Outcome::Blocked,
            format!("open(O_CREAT, 04755) {p}: {}", last_errno()),
        );
    }
    close(fd as libc::c_long);
    let mode = stat_mode(&p);
    let _ = std::fs::remove_file(&p);
    match mode {
        Some((m, uid)) if m & 0o4000 != 0 => (
            Outcome::Escaped,
            format!(
                "created {p} set-user-ID (mode {:o}, uid {uid} as it sees it); removed",
                m & 0o7777
            ),
        ),
        m => (
            Outcome::Blocked,
            format!(
                "created without the set-user-ID bit (mode {:o}); removed",
                m.map_or(0, |m| m.0 & 0o7777)
            ),
        ),
    }
}

fn mknod_dev() -> Verdict {
    let dir = need!("PROBE_RW");
    let p = format!("{dir}/null-{}", std::process::id());
    let c = cstr(&p);
    // SAFETY: a valid C string path; the node is 1:3 (what /dev/null is) and removed below.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    if r != 0 {
        return (
            Outcome::Blocked,
            format!("mknod {p} c 1 3: {}", last_errno()),
        );
    }
    // SAFETY: as above; nothing is read or written.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    let opened = if fd >= 0 { Ok(()) } else { Err(last_errno()) };
    if fd >= 0 {
        close(fd as libc::c_long);
    }
    let _ = std::fs::remove_file(&p);
    match opened {
        Ok(()) => (
            Outcome::Escaped,
            format!("made {p} (char 1:3) and opened it: any device number would work; removed"),
        ),
        Err(e) => (
            Outcome::Blocked,
            format!("mknod worked but opening the node failed ({e}: nodev); removed"),
        ),
    }
}

// ---- Environment ----------------------------------------------------------------------------

fn env_leak() -> Verdict {
    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| !k.starts_with("PROBE_"))
        .collect();
    let mut list = names.iter().take(12).cloned().collect::<Vec<_>>().join(" ");
    if names.len() > 12 {
        list += &format!(" … ({} in all)", names.len());
    }
    match std::env::var(paddock_lab::escape::CANARY) {
        Ok(v) => (
            Outcome::Escaped,
            format!(
                "{}={v} came from paddock serve's environment; besides PROBE_*: {list}",
                paddock_lab::escape::CANARY
            ),
        ),
        Err(_) => (
            Outcome::Blocked,
            format!(
                "no {}; besides PROBE_* it has: {list}",
                paddock_lab::escape::CANARY
            ),
        ),
    }
}

// ---- Networks other than TCP ----------------------------------------------------------------

fn udp_host() -> Verdict {
    let port: u16 = need!("PROBE_UDP_PORT").parse().unwrap_or(0);
    let s = match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => return (Outcome::Blocked, format!("UDP socket: {}", errno_text(e))),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = s.send_to(b"paddock-probe-udp", to) {
        return (Outcome::Blocked, format!("sendto {to}: {}", errno_text(e)));
    }
    let mut buf = [0u8; 64];
    match s.recv_from(&mut buf) {
        Ok((n, from)) if &buf[..n] == b"paddock-probe-udp" => (
            Outcome::Escaped,
            format!("the host's echo listener {from} answered"),
        ),
        Ok((n, from)) => (Outcome::Escaped, format!("{n} bytes back from {from}")),
        Err(e) => (
            Outcome::Blocked,
            format!(
                "sent to {to}, no echo within 1 s ({}): not the host's loopback",
                errno_text(e)
            ),
        ),
    }
}

fn socket_attempt(what: &str, domain: i32, ty: i32, proto: i32) -> Verdict {
    // SAFETY: socket() with plain arguments; the descriptor is closed at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd >= 0 {
        close(fd as libc::c_long);
        (Outcome::Escaped, format!("created a {what} socket; closed"))
    } else {
        (
            Outcome::Blocked,
            format!("socket({what}): {}", last_errno()),
        )
    }
}

fn mptcp() -> Verdict {
    let port: u16 = need!("PROBE_CONNECT_PORT").parse().unwrap_or(0);
    // SAFETY: socket() with plain arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 262) };
    if fd < 0 {
        return (
            Outcome::Blocked,
            format!("socket(IPPROTO_MPTCP): {}", last_errno()),
        );
    }
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: fd is the socket above; tv and sa are valid for their sizes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of_val(&tv) as u32,
        );
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&sa) as u32,
        )
    };
    let v = if r == 0 {
        (
            Outcome::Escaped,
            format!("MPTCP connected to 127.0.0.1:{port}"),
        )
    } else {
        (
            Outcome::Blocked,
            format!("MPTCP connect 127.0.0.1:{port}: {}", last_errno()),
        )
    };
    close(fd as libc::c_long);
    v
}

// ---- /proc and /sys -------------------------------------------------------------------------

fn open_for_write(p: &str, note: &str) -> Verdict {
    match std::fs::OpenOptions::new().write(true).open(p) {
        Ok(f) => {
            drop(f);
            (
                Outcome::Escaped,
                format!("opened {p} for writing{note}; closed, nothing written"),
            )
        }
        Err(e) => (Outcome::Blocked, format!("{p}: {}", errno_text(e))),
    }
}

fn read_some(p: &str, n: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; n];
    let got = f.read(&mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

fn kcore() -> Verdict {
    match read_some("/proc/kcore", 64) {
        Ok(b) if b.starts_with(b"\x7fELF") => (
            Outcome::Escaped,
            "read the ELF header of the kernel's memory image".into(),
        ),
        Ok(b) => (
            Outcome::Blocked,
            format!("/proc/kcore gave {} bytes, not the kernel's image", b.len()),
        ),
        Err(e) => (Outcome::Blocked, format!("/proc/kcore: {}", errno_text(e))),
    }
}

fn kallsyms() -> Verdict {
    match read_some("/proc/kallsyms", 8192) {
        Ok(b) if b.is_empty() => (Outcome::Blocked, "/proc/kallsyms is empty (masked)".into()),
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            match text.lines().find(|l| {
                l.split(' ')
                    .next()
                    .is_some_and(|a| !a.trim_start_matches('0').is_empty())
            }) {
                Some(l) => (Outcome::Escaped, format!("kernel addresses visible: {l}")),
                None => (
                    Outcome::Blocked,
                    format!("readable, but every address is 0 ({} bytes read)", b.len()),
                ),
            }
        }
        Err(e) => (
            Outcome::Blocked,
            format!("/proc/kallsyms: {}", errno_text(e)),
        ),
    }
}

fn read_proc(p: &str) -> Verdict {
    match read_some(p, 4096) {
        Ok(b) if !b.is_empty() => (Outcome::Escaped, format!("read {} bytes of {p}", b.len())),
        Ok(_) => (Outcome::Blocked, format!("{p} is empty (masked)")),
        Err(e) => (Outcome::Blocked, format!("{p}: {}", errno_text(e))),
    }
}

fn sys() -> Verdict {
    match std::fs::read_dir("/sys") {
        Ok(d) => {
            let names: Vec<String> = d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                (Outcome::Blocked, "/sys is an empty directory".into())
            } else {
                (Outcome::Escaped, format!("/sys lists {}", names.join(" ")))
            }
        }
        Err(e) => (Outcome::Blocked, format!("/sys: {}", errno_text(e))),
    }
}

fn cgroup_move() -> Verdict {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(own) = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
    else {
        return (
            Outcome::Blocked,
            "no cgroup2 line in /proc/self/cgroup".into(),
        );
    };
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // The cgroup2 mount that shows the root of its cgroup namespace.
    let Some(mnt) = mi.lines().find_map(|l| {
        let (a, b) = l.split_once(" - ")?;
        let f: Vec<&str> = a.split(' ').collect();
        (b.starts_with("cgroup2 ") && f.get(3) == Some(&"/"))
            .then(|| f.get(4).map(|s| s.to_string()))?
    }) else {
        return (
            Outcome::Blocked,
            format!("in cgroup {own}, but no cgroup2 mount is visible"),
        );
    };
    if own == "/" {
        return (
            Outcome::Blocked,
            format!("at the root of its cgroup namespace ({mnt}): no other cgroup in view"),
        );
    }
    let pid = std::process::id().to_string();
    let root = format!("{mnt}/cgroup.procs");
    match std::fs::write(&root, &pid) {
        Ok(()) => {
            let back = std::fs::write(format!("{mnt}{own}/cgroup.procs"), &pid);
            (
                Outcome::Escaped,
                format!(
                    "moved itself from {own} to {root} (out of its limits); {}",
                    match back {
                        Ok(()) => "moved back".to_string(),
                        Err(e) => format!("moving back failed: {}", errno_text(e)),
                    }
                ),
            )
        }
        Err(e) => (
            Outcome::Blocked,
            format!("{root}: {} (it is in {own})", errno_text(e)),
        ),
    }
}

// ---- Privileges -----------------------------------------------------------------------------

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn capabilities() -> Verdict {
    let eff = cap_eff();
    let user = match env("PROBE_HOST_USER") {
        Some(h) if h == ns_link("user") => "the host's user namespace".to_string(),
        _ => format!("user namespace {}", ns_link("user")),
    };
    match u64::from_str_radix(&eff, 16) {
        Ok(0) => (Outcome::Blocked, format!("CapEff 0 ({user})")),
        Ok(_) => (Outcome::Escaped, format!("CapEff {eff} ({user})")),
        Err(_) => (Outcome::Error, format!("CapEff {eff:?}")),
    }
}

fn no_new_privs() -> Verdict {
    match status_field("NoNewPrivs").as_str() {
        "1" => (Outcome::Blocked, "NoNewPrivs: 1".into()),
        "0" => (
            Outcome::Escaped,
            "NoNewPrivs: 0 (set-user-ID programs would gain privileges)".into(),
        ),
        v => (Outcome::Error, format!("NoNewPrivs {v:?}")),
    }
}

fn seccomp_off() -> Verdict {
    let (mode, n) = (status_field("Seccomp"), status_field("Seccomp_filters"));
    match mode.as_str() {
        "0" => (
            Outcome::Escaped,
            "Seccomp: 0 (every system call reaches the kernel)".into(),
        ),
        "1" | "2" => (Outcome::Blocked, format!("Seccomp: {mode}, {n} filter(s)")),
        v => (Outcome::Error, format!("Seccomp {v:?}")),
    }
}

/// Waits up to `within` for a file (written by the runner or by the health check).
fn wait_file(p: &str, within: Duration) -> Option<String> {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(p)
            && s.ends_with('\n')
        {
            return Some(s);
        }
        if t.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal_paddock() -> Verdict {
    let file = need!("PROBE_PADDOCK_PID_FILE");
    let Some(pid) =
        wait_file(&file, Duration::from_secs(5)).and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return (Outcome::Error, format!("{file}: the runner wrote no pid"));
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } == 0 {
        (
            Outcome::Escaped,
            format!("kill({pid}, 0) succeeded: it may signal paddock serve"),
        )
    } else {
        (
            Outcome::Blocked,
            format!("kill({pid}, 0): {}", last_errno()),
        )
    }
}

fn write_program() -> Verdict {
    let exe = match std::fs::read_link("/proc/self/exe") {
        Ok(p) => p,
        Err(e) => return (Outcome::Error, format!("/proc/self/exe: {}", errno_text(e))),
    };
    let dir = exe
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .to_path_buf();
    let newf = dir.join(format!("paddock-probe-planted-{}", std::process::id()));
    let mut tried = vec![];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&newf)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&newf);
            return (
                Outcome::Escaped,
                format!("created {} beside its program; removed", newf.display()),
            );
        }
        Err(e) => tried.push(format!("create {}: {}", newf.display(), errno_text(e))),
    }
    // An existing file of the same dir that is not the running program (that one is ETXTBSY).
    let other = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| *p != exe && p.is_file())
    });
    if let Some(o) = other {
        match std::fs::OpenOptions::new().append(true).open(&o) {
            Ok(_) => {
                return (
                    Outcome::Escaped,
                    format!(
                        "opened {} for writing; closed, nothing written",
                        o.display()
                    ),
                );
            }
            Err(e) => tried.push(format!("{}: {}", o.display(), errno_text(e))),
        }
    }
    (Outcome::Blocked, tried.join("; "))
}

static MAIN_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn fill_path() -> String {
    format!(
        "/tmp/paddock-probe-fill-{}",
        MAIN_PID.get().copied().unwrap_or(0)
    )
}

fn tmp_fill() -> Verdict {
    const CAP: u64 = 256 << 20;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let t = cstr("/tmp");
    // SAFETY: t is a valid C string, st a valid buffer.
    if unsafe { libc::statvfs(t.as_ptr(), &mut st) } != 0 {
        return (Outcome::Blocked, format!("/tmp: {}", last_errno()));
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    // In the host's mount namespace /tmp is the host's: never leave it with less than 1 GiB free.
    let host = env("PROBE_HOST_MNT").is_none_or(|h| h == ns_link("mnt"));
    let cap = if host {
        CAP.min(free.saturating_sub(1 << 30))
    } else {
        CAP
    };
    // /tmp on a tmpfs is memory, charged to the app's cgroup but to no process: if the memory
    // limit comes first, the OOM killer must pick this attempt, not the probe that runs the rest.
    // Hence the ballast: 16 MiB of its own, touched, so it is the largest process.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let ballast = std::hint::black_box(vec![1u8; 16 << 20]);
    let p = fill_path();
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
    {
        Ok(f) => f,
        Err(e) => return (Outcome::Blocked, format!("{p}: {}", errno_text(e))),
    };
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    let mut stop = None;
    while written < cap {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => {
                stop = Some(errno_text(e));
                break;
            }
        }
    }
    drop(f);
    let _ = std::fs::remove_file(&p);
    drop(ballast);
    let mib = written >> 20;
    match stop {
        Some(e) => (
            Outcome::Blocked,
            format!(
                "{e} after {mib} MiB in /tmp (of {} MiB free); deleted",
                free >> 20
            ),
        ),
        None if cap < CAP => (
            Outcome::Escaped,
            format!(
                "wrote {mib} MiB, stopped by the probe's 1 GiB margin on a /tmp of {} MiB free; deleted",
                free >> 20
            ),
        ),
        None => (
            Outcome::Escaped,
            format!("wrote {mib} MiB (the probe's cap) into /tmp, no ENOSPC; deleted"),
        ),
    }
}

// ---- Health check placement -----------------------------------------------------------------

/// What `--health-check FILE` writes (and the `health-check` attempt compares).
fn placement() -> String {
    format!(
        "mnt={} pid={} net={} seccomp={} nnp={} uid={}\n",
        ns_link("mnt"),
        ns_link("pid"),
        ns_link("net"),
        status_field("Seccomp"),
        status_field("NoNewPrivs"),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

fn field<'a>(s: &'a str, k: &str) -> &'a str {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("?")
}

fn health_check() -> Verdict {
    let file = need!("PROBE_HEALTH_REPORT");
    let Some(check) = wait_file(&file, Duration::from_secs(15)) else {
        return (
            Outcome::Blocked,
            format!(
                "no report in {file} within 15 s: the check did not run, or not where the app's files are"
            ),
        );
    };
    let app = placement();
    let check = check.trim();
    let host_mnt = env("PROBE_HOST_MNT").unwrap_or_default();
    let host_pid = env("PROBE_HOST_PID").unwrap_or_default();
    let same = ["mnt", "pid", "net", "seccomp", "nnp"]
        .iter()
        .all(|k| field(check, k) == field(&app, k));
    let on_host = field(check, "mnt") == host_mnt || field(check, "pid") == host_pid;
    let d = format!("the check: {check}; the app: {}", app.trim());
    if on_host {
        (
            Outcome::Escaped,
            format!("the check ran in the host's namespaces: {d}"),
        )
    } else if !same {
        (
            Outcome::Escaped,
            format!("the check ran outside the app's namespaces or filters: {d}"),
        )
    } else {
        (
            Outcome::Blocked,
            format!("the check ran in the app's namespaces, seccomp and no_new_privs: {d}"),
        )
    }
}

// ---- Exhaustion and traps -------------------------------------------------------------------

fn fd_exhaustion() -> Verdict {
    const CAP: usize = 4096;
    let root = cstr("/");
    let mut fds = vec![];
    let mut stop = None;
    while fds.len() < CAP {
        // SAFETY: a valid C string; every descriptor is closed below.
        let fd = unsafe { libc::open(root.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            stop = Some(last_errno());
            break;
        }
        fds.push(fd);
    }
    let top = fds.iter().copied().max().unwrap_or(0);
    let n = fds.len();
    for fd in fds {
        close(fd as libc::c_long);
    }
    match stop {
        Some(e) if top < 1024 => (
            Outcome::Blocked,
            format!("{e} after {n} more (highest descriptor {top}); closed"),
        ),
        Some(e) => (
            Outcome::Escaped,
            format!("{e} only after {n} more (highest descriptor {top}); closed"),
        ),
        None => (
            Outcome::Escaped,
            format!("opened {n} (the probe's cap), none refused; closed"),
        ),
    }
}

fn memory_nolimit() -> Verdict {
    (
        Outcome::Blocked,
        "by construction: a native app's memory is its own process's, never paddock's (the OOM killer and [limits] memory act on the app alone; see memory-bomb)".into(),
    )
}

fn symlink_plant() -> Verdict {
    let dir = need!("PROBE_RW");
    let p = format!("{dir}/made-rel");
    match std::os::unix::fs::symlink("../secret.txt", &p) {
        Ok(()) => {
            let _ = std::fs::remove_file(&p);
            (
                Outcome::Escaped,
                format!("planted {p} -> ../secret.txt; removed"),
            )
        }
        Err(e) => (Outcome::Blocked, format!("symlink {p}: {}", errno_text(e))),
    }
}

fn run(name: &str) -> Verdict {
    match name {
        "read-secret" => read_secret(),
        "write-outside" => write_outside(),
        "list-processes" => list_processes(),
        "signal-host" => signal_host(),
        "connect-host" => connect_host(),
        "bind-port" => bind_port(),
        "ptrace" => ptrace(),
        "mount" => mount(),
        "hostname" => hostname(),
        "setuid" => setuid(),
        "kernel-module" => kernel_module(),
        "listmount" => listmount(),
        "statmount" => statmount(),
        "open-tree-attr" => open_tree_attr(),
        "file-getattr" => file_getattr(),
        "io-uring" => io_uring(),
        "bpf" => bpf(),
        "userfaultfd" => userfaultfd(),
        "perf-event" => perf_event(),
        "keyctl" => keyctl(),
        "unshare-user" => unshare_user(),
        "clone-newns" => clone_newns(),
        "setns" => setns_mnt(),
        "chroot" => chroot(),
        "open-by-handle" => open_by_handle(),
        "syslog" => syslog(),
        "memfd-secret" => memfd_secret(),
        "process-madvise" => process_madvise(),
        "personality" => personality(),
        "memfd-exec" => run_memfd(false),
        "memfd-exec-path" => run_memfd(true),
        "setuid-chmod" => setuid_chmod(),
        "setuid-create" => setuid_create(),
        "mknod-dev" => mknod_dev(),
        "env-leak" => env_leak(),
        "udp-host" => udp_host(),
        "vsock" => socket_attempt("AF_VSOCK", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        "netlink" => socket_attempt(
            "AF_NETLINK/NETLINK_ROUTE",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        ),
        "packet" => socket_attempt(
            "AF_PACKET",
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        ),
        "raw-icmp" => socket_attempt(
            "raw ICMP",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        "mptcp" => mptcp(),
        "sysrq-trigger" => open_for_write("/proc/sysrq-trigger", ""),
        "kcore" => kcore(),
        "kallsyms" => kallsyms(),
        "timer-list" => read_proc("/proc/timer_list"),
        "proc-keys" => read_proc("/proc/keys"),
        "proc-sys-write" => {
            let uts = match env("PROBE_HOST_UTS") {
                Some(h) if h == ns_link("uts") => " (the host's UTS namespace)".to_string(),
                _ => format!(" (UTS namespace {})", ns_link("uts")),
            };
            open_for_write("/proc/sys/kernel/hostname", &uts)
        }
        "sys" => sys(),
        "cgroup-move" => cgroup_move(),
        "capabilities" => capabilities(),
        "no-new-privs" => no_new_privs(),
        "seccomp-off" => seccomp_off(),
        "signal-paddock" => signal_paddock(),
        "write-program" => write_program(),
        "tmp-fill" => tmp_fill(),
        "read-shadow" => match std::fs::read("/etc/shadow") {
            Ok(b) => (
                Outcome::Escaped,
                format!("read {} bytes of /etc/shadow", b.len()),
            ),
            Err(e) => (Outcome::Blocked, format!("/etc/shadow: {}", errno_text(e))),
        },
        "health-check" => health_check(),
        "fd-exhaustion" => fd_exhaustion(),
        "fork-bomb" => fork_bomb(),
        "memory-bomb" => memory_bomb(),
        "memory-nolimit" => memory_nolimit(),
        "cpu-hog" => cpu_hog(),
        "symlink-plant" => symlink_plant(),
        _ => (Outcome::Error, "unknown attempt".into()),
    }
}

/// Runs one attempt in a child process; its verdict comes back through a pipe.
fn in_child(name: &str) -> Verdict {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [c_int; 2].
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return (Outcome::Error, format!("pipe: {}", last_errno()));
    }
    // SAFETY: the probe is single-threaded (it never spawns a thread), so the child may run
    // ordinary code (run) before _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = last_errno();
        // SAFETY: closes both pipe ends that pipe2 just gave us; nothing else owns them.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return (Outcome::Error, format!("fork for the attempt: {e}"));
    }
    if pid == 0 {
        // SAFETY: the child closes its copy of the read end, owned by nothing else.
        unsafe { libc::close(fds[0]) };
        let (o, d) = run(name);
        let msg = format!("{}\t{d}", o.as_str());
        // SAFETY: write reads `msg`, alive for the call; _exit skips the parent's destructors.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: the parent closes its write end, owned by nothing else.
    unsafe { libc::close(fds[1]) };
    // SAFETY: fds[0] is the read end from pipe2, owned by nothing else: the File takes it over.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let mut msg = String::new();
    let _ = f.read_to_string(&mut msg);
    let mut st = 0;
    // SAFETY: waitpid writes only to `st`; `pid` is the child forked above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    // What an attempt killed midway leaves behind.
    if name == "tmp-fill" {
        let _ = std::fs::remove_file(fill_path());
    }
    if libc::WIFSIGNALED(st) {
        let sig = libc::WTERMSIG(st);
        let why = match sig {
            libc::SIGSYS => "killed by SIGSYS (a seccomp filter)".to_string(),
            libc::SIGKILL => "killed by SIGKILL (the OOM killer or a limit)".to_string(),
            s => format!("killed by signal {s}"),
        };
        return match sig {
            libc::SIGSYS | libc::SIGKILL => (Outcome::Blocked, why),
            _ => (Outcome::Error, why),
        };
    }
    match msg.split_once('\t') {
        Some((o, d)) => (
            paddock_lab::escape::Outcome::parse(o).unwrap_or(Outcome::Error),
            d.to_string(),
        ),
        None => (
            Outcome::Error,
            format!("the attempt's process said nothing (status {st})"),
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // What the memfd copies are run with: prove they ran, and nothing else.
        Some("--exit0") => std::process::exit(0),
        Some("--ids") => {
            // SAFETY: geteuid takes no arguments and cannot fail.
            println!("euid={} capeff={}", unsafe { libc::geteuid() }, cap_eff());
            return;
        }
        // The exec health check: where does it run? Always healthy.
        Some("--health-check") => {
            if let Some(f) = args.get(1) {
                let tmp = format!("{f}.tmp");
                if std::fs::write(&tmp, placement()).is_ok() {
                    let _ = std::fs::rename(&tmp, f);
                }
            }
            return;
        }
        _ => {}
    }
    let _ = MAIN_PID.set(std::process::id());
    let only: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "paddock-probe start pid={} euid={} capeff={} uts={} mnt={}",
        std::process::id(),
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::geteuid() },
        cap_eff(),
        ns_link("uts"),
        ns_link("mnt")
    );
    let mut n = 0;
    for (name, _) in ATTEMPTS {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let (o, d) = in_child(name);
        let _ = writeln!(out, "{}", format_line(name, o, &d));
        let _ = out.flush();
        n += 1;
    }
    let _ = writeln!(out, "paddock-probe done attempts={n}");
}
