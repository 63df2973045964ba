//! The escape probe for level `wasm` (native: crates/paddock-lab/src/bin/paddock-probe.rs): the same
//! attempts (`paddock_lab::escape::ATTEMPTS`, in the same order), as far as WASI lets a guest express
//! them, with the same parameters (environment variables `PROBE_*`) and the same output line per
//! attempt:
//!
//! `paddock-probe attempt=NAME result=blocked|escaped|error|skipped detail="…"`
//!
//! Whatever WASI can ask for is really tried: files by path (secrets, /proc, /sys, /tmp,
//! /etc/shadow), TCP and UDP to the host, the environment, descriptors and memory until refused,
//! a symlink in the read-write preopen. Attempts that need a system call WASI does not have
//! (signals, ptrace, mount, exec, memfd, chmod, mknod, raw socket families, the new mount API, …)
//! are reported blocked with that reason: the level has no way to express them. Nothing here can
//! abort the guest: memory is reserved with `try_reserve`.
//!
//! Arguments: attempt names to run (default: all). `PROBE_EXCEPT` (comma-separated): attempts to
//! leave out (the matrix runs `memory-nolimit` in a second app without `[limits]`).

use std::time::{Duration, Instant};

const ATTEMPTS: &[&str] = &[
    "read-secret",
    "write-outside",
    "list-processes",
    "signal-host",
    "connect-host",
    "bind-port",
    "ptrace",
    "mount",
    "hostname",
    "setuid",
    "kernel-module",
    "listmount",
    "statmount",
    "open-tree-attr",
    "file-getattr",
    "io-uring",
    "bpf",
    "userfaultfd",
    "perf-event",
    "keyctl",
    "unshare-user",
    "clone-newns",
    "setns",
    "chroot",
    "open-by-handle",
    "syslog",
    "memfd-secret",
    "process-madvise",
    "personality",
    "memfd-exec",
    "memfd-exec-path",
    "setuid-chmod",
    "setuid-create",
    "mknod-dev",
    "env-leak",
    "udp-host",
    "vsock",
    "netlink",
    "packet",
    "raw-icmp",
    "mptcp",
    "sysrq-trigger",
    "kcore",
    "kallsyms",
    "timer-list",
    "proc-keys",
    "proc-sys-write",
    "sys",
    "cgroup-move",
    "capabilities",
    "no-new-privs",
    "seccomp-off",
    "signal-paddock",
    "write-program",
    "tmp-fill",
    "read-shadow",
    "health-check",
    "fd-exhaustion",
    "fork-bomb",
    "memory-bomb",
    "memory-nolimit",
    "cpu-hog",
    "symlink-plant",
];

/// The variable the runner puts in paddock serve's own environment (`paddock_lab::escape::CANARY`).
const CANARY: &str = "PADDOCK_PROBE_CANARY";

/// The read-write preopen the matrix gives the probe.
const RW: &str = "/rw";

type Verdict = (&'static str, String);

fn line(attempt: &str, result: &str, detail: &str) {
    let detail = detail.replace(['"', '\n'], "'");
    println!("paddock-probe attempt={attempt} result={result} detail=\"{detail}\"");
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn no_such_call(what: &str) -> Verdict {
    (
        "blocked",
        format!("WASI has no {what}: a wasm guest cannot ask for it"),
    )
}

fn read(p: &str) -> Verdict {
    match std::fs::read(p) {
        Ok(b) => ("escaped", format!("read {} bytes of {p}", b.len())),
        Err(e) => ("blocked", format!("{p}: {e}")),
    }
}

fn open_for_write(p: &str) -> Verdict {
    match std::fs::OpenOptions::new().write(true).open(p) {
        Ok(_) => ("escaped", format!("opened {p} for writing; nothing written")),
        Err(e) => ("blocked", format!("{p}: {e}")),
    }
}

/// /proc/self/status: what the capability, no_new_privs and seccomp attempts would read.
fn status(field: &str) -> Verdict {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => (
            "escaped",
            format!(
                "read /proc/self/status: {}",
                s.lines().find(|l| l.starts_with(field)).unwrap_or("?")
            ),
        ),
        Err(e) => (
            "blocked",
            format!("/proc/self/status: {e}; the guest makes no system calls of its own, only WASI imports"),
        ),
    }
}

fn read_secret() -> Verdict {
    match env("PROBE_SECRET") {
        None => ("skipped", "PROBE_SECRET not set".into()),
        Some(p) => read(&p),
    }
}

fn write_outside() -> Verdict {
    match env("PROBE_OUTSIDE") {
        None => ("skipped", "PROBE_OUTSIDE not set".into()),
        Some(d) => {
            let f = format!("{d}/written-by-wasm-probe");
            match std::fs::write(&f, "x") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&f);
                    ("escaped", format!("created {f}; deleted again"))
                }
                Err(e) => ("blocked", format!("{f}: {e}")),
            }
        }
    }
}

fn list_processes() -> Verdict {
    match std::fs::read_dir("/proc") {
        Ok(d) => ("escaped", format!("/proc lists {} entries", d.count())),
        Err(e) => ("blocked", format!("/proc: {e}")),
    }
}

fn connect_host() -> Verdict {
    match env("PROBE_CONNECT_PORT") {
        None => ("skipped", "PROBE_CONNECT_PORT not set".into()),
        Some(port) => {
            let addr = format!("127.0.0.1:{port}");
            match std::net::TcpStream::connect(&addr) {
                Ok(_) => ("escaped", format!("connected to {addr}")),
                Err(e) => ("blocked", format!("{addr}: {e}")),
            }
        }
    }
}

fn bind_port() -> Verdict {
    match env("PROBE_BIND_PORT") {
        None => ("skipped", "PROBE_BIND_PORT not set".into()),
        Some(port) => {
            let addr = format!("0.0.0.0:{port}");
            match std::net::TcpListener::bind(&addr) {
                Ok(_) => ("escaped", format!("bound {addr}; closed")),
                Err(e) => ("blocked", format!("{addr}: {e}")),
            }
        }
    }
}

fn udp_host() -> Verdict {
    let Some(port) = env("PROBE_UDP_PORT") else {
        return ("skipped", "PROBE_UDP_PORT not set".into());
    };
    let to = format!("127.0.0.1:{port}");
    let s = match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => return ("blocked", format!("UDP socket: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if let Err(e) = s.send_to(b"paddock-probe-udp", &to) {
        return ("blocked", format!("sendto {to}: {e}"));
    }
    let mut buf = [0u8; 64];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => ("escaped", format!("{n} bytes echoed back by {from}")),
        Err(e) => ("blocked", format!("sent to {to}, no echo within 1 s: {e}")),
    }
}

fn env_leak() -> Verdict {
    let names: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with("PROBE_"))
        .collect();
    match std::env::var(CANARY) {
        Ok(v) => (
            "escaped",
            format!("{CANARY}={v} came from paddock serve's environment; besides PROBE_*: {}", names.join(" ")),
        ),
        Err(_) => (
            "blocked",
            format!("no {CANARY}; besides PROBE_* it has: {}", names.join(" ")),
        ),
    }
}

fn sys() -> Verdict {
    match std::fs::read_dir("/sys") {
        Ok(d) => ("escaped", format!("/sys lists {} entries", d.count())),
        Err(e) => ("blocked", format!("/sys: {e}")),
    }
}

fn tmp_fill() -> Verdict {
    let p = "/tmp/paddock-probe-fill";
    match std::fs::write(p, vec![0x5au8; 1 << 20]) {
        Ok(()) => {
            let _ = std::fs::remove_file(p);
            ("escaped", format!("wrote 1 MiB to {p}: the guest has a /tmp; deleted"))
        }
        Err(e) => ("blocked", format!("{p}: {e}: the guest has no /tmp")),
    }
}

/// Opens one file of the read-write preopen again and again: every open is a descriptor in
/// paddock's own process.
fn fd_exhaustion() -> Verdict {
    const CAP: usize = 4096;
    let p = format!("{RW}/fd-probe");
    if let Err(e) = std::fs::write(&p, b"x") {
        return ("error", format!("{p}: {e}"));
    }
    let mut files = vec![];
    let mut stop = None;
    while files.len() < CAP {
        match std::fs::File::open(&p) {
            Ok(f) => files.push(f),
            Err(e) => {
                stop = Some(e.to_string());
                break;
            }
        }
    }
    let n = files.len();
    drop(files);
    let _ = std::fs::remove_file(&p);
    match stop {
        Some(e) if n <= 1024 => ("blocked", format!("{e} after {n} open files; closed")),
        Some(e) => ("escaped", format!("{e} only after {n} open files; closed")),
        None => ("escaped", format!("opened {n} files (the probe's cap), none refused; closed")),
    }
}

/// Reserves and touches `mib` MiB, `step` MiB at a time, keeping every step until the end.
fn grow(mib: usize, step: usize) -> Result<usize, (usize, String)> {
    let mut held: Vec<Vec<u8>> = vec![];
    while held.len() * step < mib {
        // black_box: without it the optimizer removes an allocation nobody reads.
        let mut v: Vec<u8> = std::hint::black_box(Vec::new());
        if let Err(e) = v.try_reserve_exact(std::hint::black_box(step << 20)) {
            return Err((held.len() * step, e.to_string()));
        }
        v.resize(step << 20, 1);
        held.push(std::hint::black_box(v));
    }
    let pages: usize = held
        .iter()
        .map(|v| v.iter().step_by(4096).map(|&b| b as usize).sum::<usize>())
        .sum();
    Ok(pages)
}

fn memory_bomb() -> Verdict {
    match grow(256, 256) {
        Ok(pages) => ("escaped", format!("touched 256 MiB ({pages} pages); freed")),
        Err((_, e)) => ("blocked", format!("256 MiB refused: {e}")),
    }
}

fn memory_nolimit() -> Verdict {
    match grow(1024, 64) {
        Ok(pages) => (
            "escaped",
            format!("touched 1 GiB ({pages} pages) inside paddock's own process; freed"),
        ),
        Err((got, e)) => (
            "blocked",
            format!("growth refused after {got} MiB (no [limits]: paddock's default): {e}"),
        ),
    }
}

fn cpu_hog() -> Verdict {
    // Spin for 1 s of wall time; the share of it the guest actually ran is the sum of the short
    // gaps between clock readings (a long gap is time it was paused).
    let start = Instant::now();
    let (mut last, mut ran) = (start, Duration::ZERO);
    let mut x = 0u64;
    while last.duration_since(start) < Duration::from_secs(1) {
        for i in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        let now = Instant::now();
        let gap = now.duration_since(last);
        if gap < Duration::from_millis(2) {
            ran += gap;
        }
        last = now;
    }
    std::hint::black_box(x);
    let share = ran.as_secs_f64() / last.duration_since(start).as_secs_f64();
    (
        if share > 0.5 { "escaped" } else { "blocked" },
        format!("spun 1 s and ran {share:.2} of it (escape above 0.5)"),
    )
}

unsafe extern "C" {
    /// wasi-libc's symlink(3) (over WASI's path_symlink); std's wrapper is unstable.
    fn symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
}

fn symlink_plant() -> Verdict {
    let p = format!("{RW}/made-rel");
    let (t, l) = (c"../secret.txt", std::ffi::CString::new(p.clone()).unwrap_or_default());
    // SAFETY: two valid C strings.
    let r = if unsafe { symlink(t.as_ptr(), l.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    match r {
        Ok(()) => {
            let _ = std::fs::remove_file(&p);
            ("escaped", format!("planted {p} -> ../secret.txt in the read-write preopen; removed"))
        }
        Err(e) => ("blocked", format!("symlink {p}: {e}")),
    }
}

fn run(name: &str) -> Verdict {
    match name {
        "read-secret" => read_secret(),
        "write-outside" => write_outside(),
        "list-processes" => list_processes(),
        "signal-host" => no_such_call("kill()"),
        "connect-host" => connect_host(),
        "bind-port" => bind_port(),
        "ptrace" => no_such_call("ptrace()"),
        "mount" => no_such_call("mount()"),
        "hostname" => no_such_call("sethostname()"),
        "setuid" => no_such_call("exec or setuid (a guest cannot run another program)"),
        "kernel-module" => no_such_call("init_module()"),
        "listmount" => no_such_call("listmount()"),
        "statmount" => no_such_call("statmount()"),
        "open-tree-attr" => no_such_call("open_tree_attr() or any mount call"),
        "file-getattr" => no_such_call("file_getattr() (only the WASI filestat calls)"),
        "io-uring" => no_such_call("io_uring"),
        "bpf" => no_such_call("bpf()"),
        "userfaultfd" => no_such_call("userfaultfd()"),
        "perf-event" => no_such_call("perf_event_open()"),
        "keyctl" => no_such_call("keyctl() or add_key()"),
        "unshare-user" => no_such_call("unshare()"),
        "clone-newns" => no_such_call("clone() or namespaces"),
        "setns" => no_such_call("setns()"),
        "chroot" => no_such_call("chroot()"),
        "open-by-handle" => no_such_call("open_by_handle_at() (paths only, under its preopens)"),
        "syslog" => no_such_call("syslog()"),
        "memfd-secret" => no_such_call("memfd_secret()"),
        "process-madvise" => no_such_call("process_madvise() or pidfds"),
        "personality" => no_such_call("personality()"),
        "memfd-exec" | "memfd-exec-path" => {
            no_such_call("memfd_create() or exec (a guest cannot run another program)")
        }
        "setuid-chmod" => no_such_call("chmod() (no permission bits at all)"),
        "setuid-create" => no_such_call("file modes on open()"),
        "mknod-dev" => no_such_call("mknod()"),
        "env-leak" => env_leak(),
        "udp-host" => udp_host(),
        "vsock" => no_such_call("AF_VSOCK (WASI sockets are TCP and UDP over IP)"),
        "netlink" => no_such_call("AF_NETLINK (WASI sockets are TCP and UDP over IP)"),
        "packet" => no_such_call("AF_PACKET (WASI sockets are TCP and UDP over IP)"),
        "raw-icmp" => no_such_call("raw sockets (WASI sockets are TCP and UDP over IP)"),
        "mptcp" => no_such_call("MPTCP (WASI sockets are TCP and UDP over IP)"),
        "sysrq-trigger" => open_for_write("/proc/sysrq-trigger"),
        "kcore" => read("/proc/kcore"),
        "kallsyms" => read("/proc/kallsyms"),
        "timer-list" => read("/proc/timer_list"),
        "proc-keys" => read("/proc/keys"),
        "proc-sys-write" => open_for_write("/proc/sys/kernel/hostname"),
        "sys" => sys(),
        "cgroup-move" => open_for_write("/sys/fs/cgroup/cgroup.procs"),
        "capabilities" => status("CapEff"),
        "no-new-privs" => status("NoNewPrivs"),
        "seccomp-off" => status("Seccomp"),
        "signal-paddock" => no_such_call("kill()"),
        "write-program" => (
            "blocked",
            "the module file is in no preopen: the guest cannot name it (paddock holds it compiled)".into(),
        ),
        "tmp-fill" => tmp_fill(),
        "read-shadow" => read("/etc/shadow"),
        "health-check" => (
            "blocked",
            "a guest cannot start a process: a wasm app's exec check is a host program its app file names, which the guest cannot run or replace (the matrix's wasm app has none)".into(),
        ),
        "fd-exhaustion" => fd_exhaustion(),
        "fork-bomb" => no_such_call("fork() or threads of its own"),
        "memory-bomb" => memory_bomb(),
        "memory-nolimit" => memory_nolimit(),
        "cpu-hog" => cpu_hog(),
        "symlink-plant" => symlink_plant(),
        _ => ("error", "unknown attempt".into()),
    }
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let except: Vec<String> = env("PROBE_EXCEPT")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut n = 0;
    for name in ATTEMPTS {
        if (!only.is_empty() && !only.iter().any(|o| o == name))
            || except.iter().any(|e| e == name)
        {
            continue;
        }
        let (result, detail) = run(name);
        line(name, result, &detail);
        n += 1;
    }
    println!("paddock-probe done attempts={n}");
}
