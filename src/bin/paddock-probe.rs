//! `paddock-probe`: the escape probe of the escape matrix (see src/escape.rs, tests/escape.rs and
//! `paddock bench`). Run as an app at some isolation level, it tries each attempt of
//! `paddock::escape::ATTEMPTS` in turn and prints one line per attempt:
//!
//! ```text
//! paddock-probe attempt=mount result=escaped detail="tmpfs mounted on /tmp/x/mnt (host mount namespace); unmounted"
//! ```
//!
//! It runs on the real host at level `none`, so every attempt that succeeds undoes itself at
//! once: the tmpfs is mounted on a scratch dir given by the caller and unmounted, the hostname is
//! restored, written files are deleted, the fork bomb stops at 500 processes and kills and reaps
//! them, the memory bomb stops at 256 MiB and frees it, the CPU hog spins for 1 s. A kernel
//! module is never loaded: `init_module` gets an invalid image, and anything but EPERM means the
//! kernel would have looked at a real one. Each attempt runs in a child process of its own, so an
//! attempt killed by the level (seccomp's SIGSYS, the OOM killer's SIGKILL) is reported as
//! blocked and the next attempt still runs.
//!
//! Parameters (environment; an attempt whose parameter is missing is reported `skipped`):
//! `PROBE_SECRET` (a file to read), `PROBE_OUTSIDE` (a dir it must not write to),
//! `PROBE_VICTIM_MARK` (a word in the command line of a host process), `PROBE_VICTIM_PID` (that
//! process, for ptrace), `PROBE_SIGNAL_PID` (a host process to kill with SIGUSR1),
//! `PROBE_CONNECT_PORT` (a listener on the host's 127.0.0.1), `PROBE_BIND_PORT` (a port the
//! config does not allow), `PROBE_MOUNT_DIR` (an empty scratch dir), `PROBE_HOST_UTS` and
//! `PROBE_HOST_MNT` (the host's `/proc/self/ns/uts` and `ns/mnt` links), `PROBE_SETUID` (a
//! setuid-root copy of this program, run with `--ids`), `PROBE_FORKS` (500), `PROBE_MEM_MIB`
//! (256), `PROBE_CPU_MAX` (0.5).
//!
//! `paddock-probe --ids` prints `euid=N capeff=HEX` and exits (what the setuid copy reports).

use paddock::escape::{ATTEMPTS, Outcome, format_line};
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
    unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
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
        let pid = unsafe { libc::fork() };
        if pid == 0 {
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
        unsafe { libc::kill(k, libc::SIGKILL) };
    }
    for &k in &kids {
        let mut st = 0;
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
            unsafe { *(p as *mut u8).add(off) = 1 };
        }
        chunks.push(p);
    }
    let got = chunks.len() * 16;
    for p in chunks {
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
        "fork-bomb" => fork_bomb(),
        "memory-bomb" => memory_bomb(),
        "cpu-hog" => cpu_hog(),
        _ => (Outcome::Error, "unknown attempt".into()),
    }
}

/// Runs one attempt in a child process; its verdict comes back through a pipe.
fn in_child(name: &str) -> Verdict {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return (Outcome::Error, format!("pipe: {}", last_errno()));
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = last_errno();
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return (Outcome::Error, format!("fork for the attempt: {e}"));
    }
    if pid == 0 {
        unsafe { libc::close(fds[0]) };
        let (o, d) = run(name);
        let msg = format!("{}\t{d}", o.as_str());
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    unsafe { libc::close(fds[1]) };
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let mut msg = String::new();
    let _ = f.read_to_string(&mut msg);
    let mut st = 0;
    unsafe { libc::waitpid(pid, &mut st, 0) };
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
            paddock::escape::Outcome::parse(o).unwrap_or(Outcome::Error),
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
    if args.first().map(String::as_str) == Some("--ids") {
        println!("euid={} capeff={}", unsafe { libc::geteuid() }, cap_eff());
        return;
    }
    let only: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "paddock-probe start pid={} euid={} capeff={} uts={} mnt={}",
        std::process::id(),
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
