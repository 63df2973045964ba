//! The escape matrix: what each isolation level blocks.
//!
//! `paddock-probe` (src/bin/paddock-probe.rs) runs as an app at some level and tries each
//! [`ATTEMPTS`] in turn, printing one line per attempt:
//!
//! ```text
//! paddock-probe attempt=read-secret result=escaped detail="read 17 bytes of /tmp/…/secret"
//! ```
//!
//! This module holds the attempt list, the line format (written by the probe, parsed from the
//! app's log by `tests/escape.rs` and `paddock bench`) and the matrix printer, so the probe, the
//! test and the bench agree on one definition.

use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every attempt, in the order the probe makes them, with what it does. The native probe
/// (src/bin/paddock-probe.rs) and the wasm probe (examples/wasm/probe) report every one; an
/// attempt a level cannot even express (a WASI guest has no `fork`) is reported blocked with that
/// reason.
pub const ATTEMPTS: &[(&str, &str)] = &[
    // Files, processes, TCP, the classic container escapes.
    (
        "read-secret",
        "read a planted host file outside the app's dirs",
    ),
    ("write-outside", "create a file outside its writable dirs"),
    ("list-processes", "see a host process in /proc"),
    (
        "signal-host",
        "kill a host process (SIGUSR1 to a victim sleep)",
    ),
    (
        "connect-host",
        "TCP connect to a listener on the host's 127.0.0.1",
    ),
    ("bind-port", "bind a TCP port the config does not allow"),
    ("ptrace", "PTRACE_ATTACH to a host process"),
    (
        "mount",
        "mount a tmpfs (on a scratch dir, unmounted at once)",
    ),
    (
        "hostname",
        "change the hostname the host sees (restored at once)",
    ),
    (
        "setuid",
        "gain capabilities by executing a setuid-root binary",
    ),
    (
        "kernel-module",
        "init_module (with an invalid image: never loads one)",
    ),
    // Syscall families a deny list misses or a service never needs: the verdict is what the
    // kernel answered (ENOSYS or EPERM: blocked; anything else: the call reached the kernel).
    ("listmount", "listmount(2) of the root mount (Linux 6.8)"),
    ("statmount", "statmount(2) of the root mount (Linux 6.8)"),
    (
        "open-tree-attr",
        "open_tree_attr(2) clone of a scratch dir's mount (6.15; closed at once)",
    ),
    (
        "file-getattr",
        "file_getattr(2) of its writable dir (Linux 6.17)",
    ),
    ("io-uring", "io_uring_setup(2) (closed at once)"),
    ("bpf", "bpf(BPF_MAP_CREATE) of a one-entry array map"),
    ("userfaultfd", "userfaultfd(2)"),
    (
        "perf-event",
        "perf_event_open(2) of a software counter on itself",
    ),
    (
        "keyctl",
        "add_key(2) to its process keyring (invalidated at once)",
    ),
    ("unshare-user", "unshare(CLONE_NEWUSER)"),
    (
        "clone-newns",
        "clone(CLONE_NEWNS) (the child exits at once)",
    ),
    (
        "setns",
        "setns into a host process's mount namespace (/proc/1, else the victim's)",
    ),
    ("chroot", "chroot(2) into a scratch dir"),
    (
        "open-by-handle",
        "open_by_handle_at(2), the 'shocker' container escape",
    ),
    ("syslog", "read the kernel log (syslog(2), like dmesg)"),
    ("memfd-secret", "memfd_secret(2)"),
    (
        "process-madvise",
        "process_madvise(2) on itself through a pidfd (Linux 5.10)",
    ),
    ("personality", "personality(ADDR_NO_RANDOMIZE)"),
    // Code that is not in the bundle.
    (
        "memfd-exec",
        "run a memfd copy of its own program (execveat AT_EMPTY_PATH)",
    ),
    (
        "memfd-exec-path",
        "run a memfd copy through execve(/proc/self/fd/N)",
    ),
    // Set-user-ID files and devices in its writable dir (removed at once).
    ("setuid-chmod", "chmod 04755 a file it created"),
    ("setuid-create", "open(O_CREAT) a file with mode 04755"),
    (
        "mknod-dev",
        "mknod a char device 1:3 (like /dev/null) and open it",
    ),
    // paddock's environment.
    (
        "env-leak",
        "see a variable of paddock serve's own environment",
    ),
    // Networks other than TCP.
    (
        "udp-host",
        "UDP echo with a listener on the host's 127.0.0.1",
    ),
    ("vsock", "socket(AF_VSOCK)"),
    ("netlink", "socket(AF_NETLINK, NETLINK_ROUTE)"),
    ("packet", "socket(AF_PACKET) (closed, nothing read)"),
    ("raw-icmp", "a raw ICMP socket"),
    (
        "mptcp",
        "MPTCP connect to the host's TCP listener on 127.0.0.1",
    ),
    // /proc and /sys.
    (
        "sysrq-trigger",
        "open /proc/sysrq-trigger for writing (nothing written)",
    ),
    ("kcore", "read /proc/kcore"),
    ("kallsyms", "kernel addresses in /proc/kallsyms"),
    ("timer-list", "read /proc/timer_list"),
    ("proc-keys", "read /proc/keys"),
    (
        "proc-sys-write",
        "open /proc/sys/kernel/hostname for writing (nothing written)",
    ),
    ("sys", "see /sys"),
    (
        "cgroup-move",
        "move itself to its cgroup tree's root (moved back at once)",
    ),
    // Privileges.
    ("capabilities", "hold effective capabilities"),
    ("no-new-privs", "run without no_new_privs"),
    ("seccomp-off", "run without a seccomp filter"),
    (
        "signal-paddock",
        "signal 0 to paddock serve (its pid from the runner)",
    ),
    (
        "write-program",
        "create or open for writing a file of its own program's dir",
    ),
    (
        "tmp-fill",
        "fill /tmp (256 MiB at most, deleted after): no ENOSPC first is an escape",
    ),
    ("read-shadow", "read /etc/shadow"),
    // Where paddock runs what an app asks for.
    (
        "health-check",
        "its exec health check runs in the host's namespaces",
    ),
    // Exhaustion.
    (
        "fd-exhaustion",
        "open descriptors until refused: more than 1024 is an escape",
    ),
    ("fork-bomb", "fork 500 processes (killed and reaped after)"),
    ("memory-bomb", "touch 256 MiB (released after)"),
    (
        "memory-nolimit",
        "grow to 1 GiB inside paddock's own process, no [limits]",
    ),
    (
        "cpu-hog",
        "spin for 1 s: more than 0.5 of a core is an escape",
    ),
    (
        "symlink-plant",
        "plant made-rel -> ../secret.txt in its writable dir (removed after)",
    ),
];

/// The attempts of the `sandbox/host-net` column: the network ones, run again with `[sandbox]
/// network = "host"` and no TCP port allowed.
pub const NETWORK_ATTEMPTS: &[&str] = &[
    "connect-host",
    "bind-port",
    "udp-host",
    "vsock",
    "netlink",
    "packet",
    "raw-icmp",
    "mptcp",
];

/// The variable the runner puts in `paddock serve`'s own environment; an app that sees it got
/// paddock's environment.
pub const CANARY: &str = "PADDOCK_PROBE_CANARY";

/// The line prefix the probe writes and the parser looks for.
pub const PREFIX: &str = "paddock-probe ";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The level stopped it.
    Blocked,
    /// It worked (and the probe undid it).
    Escaped,
    /// The probe could not tell (a setup problem, not a verdict).
    Error,
    /// Not attempted (a parameter was missing).
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Escaped => "escaped",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "blocked" => Outcome::Blocked,
            "escaped" => Outcome::Escaped,
            "error" => Outcome::Error,
            "skipped" => Outcome::Skipped,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptResult {
    pub attempt: String,
    pub result: Outcome,
    pub detail: String,
}

/// Formats one result line (without newline). Quotes and newlines in `detail` are replaced so a
/// line always parses back.
pub fn format_line(attempt: &str, result: Outcome, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    format!(
        "{PREFIX}attempt={attempt} result={} detail=\"{detail}\"",
        result.as_str()
    )
}

/// Parses one line (log timestamp prefixes and other text before the marker are ignored).
pub fn parse_line(line: &str) -> Option<AttemptResult> {
    let at = line.find(PREFIX)?;
    let rest = &line[at + PREFIX.len()..];
    let rest = rest.strip_prefix("attempt=")?;
    let (attempt, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("result=")?;
    let (result, rest) = rest.split_once(' ')?;
    let detail = rest.strip_prefix("detail=\"")?.strip_suffix('"')?;
    Some(AttemptResult {
        attempt: attempt.to_string(),
        result: Outcome::parse(result)?,
        detail: detail.to_string(),
    })
}

/// Every result line of a log, in order (later lines for the same attempt win).
pub fn parse_report(text: &str) -> Vec<AttemptResult> {
    let mut out: Vec<AttemptResult> = vec![];
    for r in text.lines().filter_map(parse_line) {
        if let Some(prev) = out.iter_mut().find(|p| p.attempt == r.attempt) {
            *prev = r;
        } else {
            out.push(r);
        }
    }
    out
}

/// The attempts of [`ATTEMPTS`] that a report lacks.
pub fn missing(report: &[AttemptResult]) -> Vec<&'static str> {
    missing_of("", report)
}

/// The attempts a level's column makes: every one, or the network ones at `sandbox/host-net`.
pub fn attempts_of(level: &str) -> Vec<&'static str> {
    if level == HOST_NET {
        NETWORK_ATTEMPTS.to_vec()
    } else {
        ATTEMPTS.iter().map(|(a, _)| *a).collect()
    }
}

/// The attempts of `level`'s column that a report lacks.
pub fn missing_of(level: &str, report: &[AttemptResult]) -> Vec<&'static str> {
    attempts_of(level)
        .into_iter()
        .filter(|a| !report.iter().any(|r| r.attempt == *a))
        .collect()
}

/// The extra column of the matrix: the network attempts again at level `sandbox` with
/// `network = "host"` (and no TCP port allowed). [`run_matrix`] adds it after `sandbox`.
pub const HOST_NET: &str = "sandbox/host-net";

/// One level's column of the matrix: its report, or why it did not run.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub level: String,
    /// `None` when the level did not run; `skipped` says why.
    pub results: Option<Vec<AttemptResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl LevelReport {
    /// How many of its column's attempts were blocked.
    pub fn blocked(&self) -> usize {
        self.results.as_ref().map_or(0, |r| {
            r.iter()
                .filter(|x| {
                    x.result == Outcome::Blocked
                        && attempts_of(&self.level).contains(&x.attempt.as_str())
                })
                .count()
        })
    }

    /// "52/63 blocked", or the skip reason.
    pub fn summary(&self) -> String {
        match (&self.results, &self.skipped) {
            (Some(_), _) => format!(
                "{}/{} blocked",
                self.blocked(),
                attempts_of(&self.level).len()
            ),
            (None, Some(why)) => format!("skipped: {}", why.trim().replace('\n', "; ")),
            (None, None) => "skipped".into(),
        }
    }
}

/// The matrix as an aligned table: one row per attempt, one column per level (`·`: the
/// column does not make that attempt), then the totals.
pub fn matrix(levels: &[LevelReport]) -> String {
    let w = ATTEMPTS.iter().map(|(a, _)| a.len()).max().unwrap_or(8);
    let cw: Vec<usize> = levels.iter().map(|l| l.level.len().max(9)).collect();
    let mut s = format!("{:w$}", "attempt");
    for (l, cw) in levels.iter().zip(&cw) {
        s += &format!("  {:cw$}", l.level);
    }
    s.push('\n');
    for (a, _) in ATTEMPTS {
        s += &format!("{a:w$}");
        for (l, cw) in levels.iter().zip(&cw) {
            let cell = match &l.results {
                _ if !attempts_of(&l.level).contains(a) => "·",
                Some(r) => r
                    .iter()
                    .find(|x| x.attempt == *a)
                    .map_or("missing", |x| x.result.as_str()),
                None => "-",
            };
            s += &format!("  {cell:cw$}");
        }
        s.push('\n');
    }
    s += &format!("{:w$}", "blocked");
    for (l, cw) in levels.iter().zip(&cw) {
        let cell = match &l.results {
            Some(_) => format!("{}/{}", l.blocked(), attempts_of(&l.level).len()),
            None => "skipped".into(),
        };
        s += &format!("  {cell:cw$}");
    }
    s.push('\n');
    for l in levels {
        if let Some(why) = &l.skipped {
            s += &format!("{}: skipped: {why}\n", l.level);
        }
    }
    s
}

/// The probe's evidence per attempt: for every level that claims isolation (`sandbox`,
/// `sandbox/host-net`, `wasm`) every line, for `none` and `bundle` the attempts they blocked
/// (what stopped them there is a property of the host, such as a kernel without modules).
pub fn evidence(levels: &[LevelReport]) -> String {
    let mut s = String::new();
    for (a, what) in ATTEMPTS {
        s += &format!("{a}: {what}\n");
        for l in levels {
            let Some(x) = l
                .results
                .as_ref()
                .and_then(|r| r.iter().find(|x| x.attempt == *a))
            else {
                continue;
            };
            let confining = !matches!(l.level.as_str(), "none" | "bundle");
            if confining || x.result != Outcome::Escaped {
                s += &format!("  {:16} {:8} {}\n", l.level, x.result.as_str(), x.detail);
            }
        }
    }
    s
}

/// What [`run_matrix`] needs: the two binaries, the levels, a scratch dir.
pub struct MatrixOptions {
    /// The `paddock` binary to serve with.
    pub paddock: PathBuf,
    /// The `paddock-probe` binary (bundled for levels `bundle` and `sandbox`).
    pub probe: PathBuf,
    /// The wasm probe (`probe.wasm`, examples/wasm/probe) for level `wasm`; None: skipped.
    pub wasm_probe: Option<PathBuf>,
    pub levels: Vec<String>,
    /// A fresh directory for configs, state, the bundle store and the planted files; removed
    /// afterwards.
    pub work: PathBuf,
    /// Printed as each level starts (progress).
    pub verbose: bool,
}

/// One level's run: the report, and anything left on the host afterwards (must be empty).
#[derive(Clone, Debug, Serialize)]
pub struct LevelRun {
    pub report: LevelReport,
    pub host_problems: Vec<String>,
    /// paddock refused the probe's app file for another reason than the level itself (a key
    /// the level's implementation names differently): the matrix's app file needs fixing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
}

/// The app file of the probe at `level`. `none` and `bundle` get no limits; `sandbox` gets the
/// `[limits]` the exhaustion attempts need and otherwise the DEFAULT `[sandbox]` settings (only
/// its writable dir is named); `sandbox/host-net` adds `network = "host"` with no TCP port and
/// runs only the network attempts. Every native level gets an exec health check that runs the
/// probe in `--health-check` mode (the `health-check` attempt compares where it ran). `wasm`
/// runs the wasm probe with `[limits] memory` and `cpu` and one read-write preopen, but no
/// `nofile` (the default descriptor cap is what `fd-exhaustion` measures); its
/// `memory-nolimit` attempt runs in a second app, [`nolimit_app`].
pub fn probe_app(level: &str, probe: &Path, env: &[(String, String)], rw: &Path) -> String {
    let mut env = env.to_vec();
    if level == "wasm" {
        env.push(("PROBE_EXCEPT".into(), "memory-nolimit".into()));
    }
    let env = env
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let common = format!(
        "env = {{ {env} }}\nstop_timeout = \"5s\"\n\n[restart]\npolicy = \"never\"\n\n[logs]\ncombine = true\n"
    );
    let health = format!(
        "\n[health]\nkind = \"exec\"\ncommand = [{:?}, \"--health-check\", {:?}]\ninterval = \"1s\"\ntimeout = \"5s\"\nfailures = 1000\n",
        probe.display().to_string(),
        rw.join(HEALTH_REPORT).display().to_string()
    );
    let limits = "\n[limits]\npids = 64\nmemory = \"64MiB\"\ncpu = 0.2\nnofile = 1024\n";
    let rw_s = rw.display().to_string();
    let net_args = NETWORK_ATTEMPTS
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match level {
        "none" => format!(
            "command = [{:?}]\n{common}{health}",
            probe.display().to_string()
        ),
        "bundle" => format!(
            "isolation = \"bundle\"\nbundle = \"paddock-probe\"\ncommand = [\"paddock-probe\"]\n{common}{health}"
        ),
        "sandbox" => format!(
            "isolation = \"sandbox\"\nbundle = \"paddock-probe\"\ncommand = [\"paddock-probe\"]\n{common}{limits}{health}\n\
             [sandbox]\nread_write = [{rw_s:?}]\n"
        ),
        HOST_NET => format!(
            "isolation = \"sandbox\"\nbundle = \"paddock-probe\"\ncommand = [\"paddock-probe\", {net_args}]\n{common}{limits}\n\
             [sandbox]\nread_write = [{rw_s:?}]\nnetwork = \"host\"\ntcp_bind = []\ntcp_connect = []\n"
        ),
        "wasm" => format!(
            "isolation = \"wasm\"\nmodule = {:?}\n{common}\n\
             [limits]\nmemory = \"64MiB\"\ncpu = 0.2\n\n\
             [wasm]\npreopens = {{ \"/rw\" = \"{}:rw\" }}\n",
            probe.display().to_string(),
            rw.display()
        ),
        other => format!("isolation = {other:?}\n{common}"),
    }
}

/// The second app of level `wasm`: the `memory-nolimit` attempt alone, without `[limits]`, so
/// paddock's default memory limit for wasm (if any) is what stops it.
pub fn nolimit_app(probe: &Path, env: &[(String, String)], rw: &Path) -> String {
    let env = env
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "isolation = \"wasm\"\nmodule = {:?}\nargs = [\"memory-nolimit\"]\nenv = {{ {env} }}\nstop_timeout = \"5s\"\n\n\
         [restart]\npolicy = \"never\"\n\n[logs]\ncombine = true\n\n\
         [wasm]\npreopens = {{ \"/rw\" = \"{}:rw\" }}\n",
        probe.display().to_string(),
        rw.display()
    )
}

/// The file the exec health check writes into the writable dir.
const HEALTH_REPORT: &str = "health-report";
/// The file the runner writes paddock serve's pid into (for `signal-paddock`).
const PADDOCK_PID: &str = "paddock.pid";

fn sh(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        Ok(text)
    } else {
        Err(text.trim().to_string())
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// This run's probe processes still alive: a command line naming `paddock-probe` and either the
/// run's victim mark in the environment (the probe, its attempts, its health check) or the run's
/// work dir in the command line. Other sessions' processes on the same host (a build of
/// paddock-probe, another matrix) are not this run's leftovers.
fn probe_processes(mark: &str, work: &Path) -> Vec<i32> {
    let mut out = vec![];
    let me = std::process::id() as i32;
    let mark = format!("PROBE_VICTIM_MARK={mark}");
    let work = work.display().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if pid == me || !cmd.contains("paddock-probe") {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let ours = env.split(|&b| b == 0).any(|v| v == mark.as_bytes()) || cmd.contains(&work);
        if ours {
            out.push(pid);
        }
    }
    out
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A UDP echo listener on the host's 127.0.0.1 (the `udp-host` attempt), stopped on drop.
struct UdpEcho {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start() -> std::io::Result<UdpEcho> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = s.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        Ok(UdpEcho {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the probe as a paddock app at each level, one `paddock serve` per level, and collects
/// its reports. A level that this paddock refuses (`paddock check` fails for the probe's app
/// file) is reported as skipped with paddock's own words; `wasm` runs the wasm probe when
/// it is given; `sandbox` is followed by its `sandbox/host-net` column ([`HOST_NET`]). Needs
/// root for a meaningful `none` column (otherwise most attempts are blocked by plain Unix
/// permissions).
pub fn run_matrix(o: &MatrixOptions) -> Result<Vec<LevelRun>, String> {
    let w = &o.work;
    let _ = std::fs::remove_dir_all(w);
    let rw = w.join("rw");
    let outside = w.join("outside");
    let mnt = rw.join("mnt");
    for d in [&rw, &outside, &mnt, &w.join("suid")] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The app's writable dir is writable by whatever uid the level runs it as (an unprivileged
    // host uid in a user namespace), as an operator would make it.
    let _ = std::fs::set_permissions(&rw, std::fs::Permissions::from_mode(0o777));
    let secret = w.join("secret");
    std::fs::write(&secret, "paddock-probe planted secret\n").map_err(|e| e.to_string())?;
    let _ = std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600));
    // The setuid-root copy of the probe (only meaningful when we are root: then it is owned by
    // root). It lives in the writable dir, so every level can see it.
    let suid = rw.join("paddock-probe-suid");
    std::fs::copy(&o.probe, &suid).map_err(|e| format!("copy the probe: {e}"))?;
    let _ = std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755));
    // The probe's bundle, for bundle and sandbox.
    let store = w.join("store");
    let recipe = w.join("paddock-probe.toml");
    std::fs::write(
        &recipe,
        format!("entry = {:?}\n", o.probe.display().to_string()),
    )
    .map_err(|e| e.to_string())?;
    let bundle_err = sh(Command::new(&o.paddock)
        .arg("bundle")
        .arg("build")
        .arg(&recipe)
        .arg("--store")
        .arg(&store))
    .err();
    let host_name = hostname();
    let mut levels: Vec<String> = vec![];
    for l in &o.levels {
        levels.push(l.clone());
        if l == "sandbox" && !o.levels.iter().any(|x| x == HOST_NET) {
            levels.push(HOST_NET.into());
        }
    }
    let mut runs = vec![];
    for level in &levels {
        if o.verbose {
            eprintln!("escape matrix: level {level}");
        }
        let skip = |why: String| LevelRun {
            report: LevelReport {
                level: level.clone(),
                results: None,
                skipped: Some(why),
            },
            host_problems: vec![],
            config_error: None,
        };
        if level == "wasm" && o.wasm_probe.is_none() {
            runs.push(skip(
                "the wasm probe is not built (bash examples/wasm/build.sh target/wasm-examples)"
                    .into(),
            ));
            continue;
        }
        match &bundle_err {
            Some(e) if level != "none" && level != "wasm" => {
                runs.push(skip(format!("building the probe's bundle failed: {e}")));
                continue;
            }
            _ => {}
        }
        runs.push(run_level(
            o, level, &rw, &outside, &mnt, &secret, &suid, &store, &host_name,
        ));
    }
    let _ = std::fs::remove_dir_all(w);
    Ok(runs)
}

/// What the writable dir holds between levels; anything else is a probe's leftover.
const RW_KEEP: &[&str] = &["mnt", "paddock-probe-suid"];

#[allow(clippy::too_many_arguments)]
fn run_level(
    o: &MatrixOptions,
    level: &str,
    rw: &Path,
    outside: &Path,
    mnt: &Path,
    secret: &Path,
    suid: &Path,
    store: &Path,
    host_name: &str,
) -> LevelRun {
    let dir = o.work.join(level.replace('/', "-"));
    let apps = dir.join("apps");
    let _ = std::fs::create_dir_all(&apps);
    for f in [PADDOCK_PID, HEALTH_REPORT] {
        let _ = std::fs::remove_file(rw.join(f));
    }
    let nonce = format!(
        "{}.{}",
        3600 + std::process::id() % 1000,
        Instant::now().elapsed().subsec_nanos() % 1000 + 1
    );
    // Two host victims (sleep with a unique argument): one to see and ptrace, one to kill.
    let mut victim = Command::new("sleep")
        .arg(&nonce)
        .stdin(Stdio::null())
        .spawn();
    let mut sig_victim = Command::new("sleep")
        .arg(format!("{nonce}1"))
        .stdin(Stdio::null())
        .spawn();
    let listener = std::net::TcpListener::bind("127.0.0.1:0");
    let bind_port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0);
    let udp = UdpEcho::start();
    let (Ok(v), Ok(sv), Ok(l), Ok(udp)) = (&mut victim, &mut sig_victim, &listener, &udp) else {
        for c in [&mut victim, &mut sig_victim].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        return LevelRun {
            report: LevelReport {
                level: level.into(),
                results: None,
                skipped: Some("could not start the victims or the listeners".into()),
            },
            host_problems: vec![],
            config_error: None,
        };
    };
    let s = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = vec![
        ("PROBE_SECRET".into(), s(secret)),
        ("PROBE_OUTSIDE".into(), s(outside)),
        ("PROBE_RW".into(), s(rw)),
        ("PROBE_VICTIM_MARK".into(), nonce.clone()),
        ("PROBE_VICTIM_PID".into(), v.id().to_string()),
        ("PROBE_SIGNAL_PID".into(), sv.id().to_string()),
        (
            "PROBE_CONNECT_PORT".into(),
            l.local_addr().map(|a| a.port()).unwrap_or(0).to_string(),
        ),
        ("PROBE_BIND_PORT".into(), bind_port.to_string()),
        ("PROBE_UDP_PORT".into(), udp.port.to_string()),
        ("PROBE_MOUNT_DIR".into(), s(mnt)),
        ("PROBE_HOST_UTS".into(), ns("uts")),
        ("PROBE_HOST_MNT".into(), ns("mnt")),
        ("PROBE_HOST_PID".into(), ns("pid")),
        ("PROBE_HOST_USER".into(), ns("user")),
        ("PROBE_SETUID".into(), s(suid)),
        ("PROBE_PADDOCK_PID_FILE".into(), s(&rw.join(PADDOCK_PID))),
        ("PROBE_HEALTH_REPORT".into(), s(&rw.join(HEALTH_REPORT))),
    ];
    // First the level alone (a level this paddock lacks is refused at `isolation`, but a
    // syntax error elsewhere, such as a `[limits]` key it does not know yet, would hide that).
    let probe = match (level, &o.wasm_probe) {
        ("wasm", Some(w)) => w,
        _ => &o.probe,
    };
    let bare = probe_app(level, probe, &[], rw);
    let bare = bare.split("\n[limits]").next().unwrap_or(&bare).to_string();
    let _ = std::fs::write(apps.join("probe.toml"), bare);
    let level_refused = sh(Command::new(&o.paddock)
        .arg("check")
        .arg(&apps)
        .arg("--store")
        .arg(store))
    .err()
    .and_then(|e| {
        e.lines()
            .find(|l| l.contains("key `isolation`"))
            .map(|l| l.split("key `isolation`: ").nth(1).unwrap_or(l).to_string())
    });
    let _ = std::fs::write(apps.join("probe.toml"), probe_app(level, probe, &env, rw));
    let mut app_names = vec!["probe"];
    if level == "wasm" {
        let _ = std::fs::write(
            apps.join("probe-nolimit.toml"),
            nolimit_app(probe, &env, rw),
        );
        app_names.push("probe-nolimit");
    }
    let mut run = LevelRun {
        report: LevelReport {
            level: level.into(),
            results: None,
            skipped: None,
        },
        host_problems: vec![],
        config_error: None,
    };
    if let Some(why) = level_refused {
        run.report.skipped = Some(format!("level {level} not available: {why}"));
        for c in [v, sv] {
            let _ = c.kill();
            let _ = c.wait();
        }
        return run;
    }
    let checked = sh(Command::new(&o.paddock)
        .arg("check")
        .arg(&apps)
        .arg("--store")
        .arg(store));
    match checked {
        Err(e) => {
            // The level itself refused ("not available in this build", "unknown level"): a
            // skip. Anything else is a wrong app file.
            match e.lines().find(|l| l.contains("key `isolation`")) {
                Some(l) => {
                    let why = l.split("key `isolation`: ").nth(1).unwrap_or(l);
                    run.report.skipped = Some(format!("level {level} not available: {why}"));
                }
                None => {
                    run.report.skipped = Some(format!("paddock refused the probe's app file: {e}"));
                    run.config_error = Some(e);
                }
            }
        }
        Ok(_) => {
            let sock = dir.join("paddock.sock");
            // The canary: in paddock serve's own environment, never in an app file.
            let serve = Command::new(&o.paddock)
                .arg("serve")
                .arg("--config")
                .arg(&apps)
                .arg("--socket")
                .arg(&sock)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--store")
                .arg(store)
                .env(CANARY, &nonce)
                // Cgroups of its own: another paddock on the host (another matrix, a test) may
                // run an app named `probe` too.
                .env(
                    "PADDOCK_CGROUP_NAME",
                    format!(
                        "paddock-escape-{}-{}",
                        std::process::id(),
                        level.replace('/', "-")
                    ),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match serve {
                Err(e) => run.report.skipped = Some(format!("paddock serve: {e}")),
                Ok(mut child) => {
                    let _ = std::fs::write(rw.join(PADDOCK_PID), format!("{}\n", child.id()));
                    let client = paddock::control::client::Client::new(&sock);
                    let done = wait_until(Duration::from_secs(180), || {
                        client
                            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
                            .is_ok_and(|(_, l)| {
                                app_names.iter().all(|n| {
                                    l.apps.iter().any(|a| {
                                        a.name == *n
                                            && matches!(
                                                a.state.as_str(),
                                                "EXITED" | "FATAL" | "STOPPED"
                                            )
                                    })
                                })
                            })
                    });
                    let log: String = app_names
                        .iter()
                        .map(|n| {
                            std::fs::read_to_string(dir.join(format!("state/logs/{n}.out")))
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    if !done {
                        run.host_problems
                            .push("the probe did not finish within 180 s".into());
                    }
                    let mut results = parse_report(&log);
                    if results.is_empty() {
                        let status = client
                            .request("GET", "/v1/apps/probe", None)
                            .map(|r| r.body)
                            .unwrap_or_default();
                        run.report.skipped = Some(format!(
                            "the probe reported nothing at level {level}; status: {}; log: {}",
                            status.trim(),
                            log.trim()
                        ));
                    } else {
                        // Evidence from the host's side for the signal attempt.
                        let dead = wait_until(Duration::from_millis(500), || {
                            sv.try_wait().ok().flatten().is_some()
                        });
                        if let Some(r) = results.iter_mut().find(|r| r.attempt == "signal-host") {
                            r.detail += if dead {
                                " [host: the victim died]"
                            } else {
                                " [host: the victim is alive]"
                            };
                            if dead && r.result != Outcome::Escaped {
                                r.result = Outcome::Escaped;
                            }
                        }
                        run.report.results = Some(results);
                    }
                    // SAFETY: kill(2) takes no pointers; the pid is of the child this run started
                    // and has not waited for yet, so it cannot have been reused.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    let _ = wait_until(Duration::from_secs(20), || {
                        child.try_wait().ok().flatten().is_some()
                    });
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
    // The host afterwards.
    if hostname() != host_name {
        run.host_problems
            .push(format!("hostname is {:?}, was {host_name:?}", hostname()));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&format!(" {} ", mnt.display())) {
        run.host_problems
            .push(format!("{} is still a mount point", mnt.display()));
    }
    if std::fs::read_dir(outside).is_ok_and(|mut d| d.next().is_some()) {
        run.host_problems
            .push(format!("{} is not empty", outside.display()));
    }
    for f in [PADDOCK_PID, HEALTH_REPORT] {
        let _ = std::fs::remove_file(rw.join(f));
    }
    let left: Vec<String> = std::fs::read_dir(rw)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !RW_KEEP.contains(&n.as_str()))
        .collect();
    if !left.is_empty() {
        run.host_problems
            .push(format!("left in {}: {left:?}", rw.display()));
    }
    let fills: Vec<String> = std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("paddock-probe-fill-"))
        .collect();
    if !fills.is_empty() {
        run.host_problems.push(format!("left in /tmp: {fills:?}"));
    }
    let left = probe_processes(&nonce, &o.work);
    if !left.is_empty() {
        run.host_problems
            .push(format!("probe processes left: {left:?}"));
    }
    for c in [v, sv] {
        let _ = c.kill();
        let _ = c.wait();
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let l = format_line("mount", Outcome::Blocked, "EPERM: \"no\"\nway");
        let r = parse_line(&format!("2026-11-25T10:10:10.123Z {l}")).unwrap();
        assert_eq!(r.attempt, "mount");
        assert_eq!(r.result, Outcome::Blocked);
        assert_eq!(r.detail, "EPERM: 'no' way");
        assert!(parse_line("attempt=x result=maybe detail=\"\"").is_none());
        assert!(parse_line("hello").is_none());
    }

    #[test]
    fn attempts_are_unique_and_the_wasm_probe_makes_them_all() {
        let names: Vec<&str> = ATTEMPTS.iter().map(|(a, _)| *a).collect();
        assert!(names.len() >= 40, "{}", names.len());
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate attempt names");
        for a in NETWORK_ATTEMPTS {
            assert!(names.contains(a), "{a}");
        }
        // The wasm probe has its own copy of the list (it cannot link paddock): same order.
        let src = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/wasm/probe/src/main.rs"
        ))
        .unwrap();
        let list = src
            .split("const ATTEMPTS: &[&str] = &[")
            .nth(1)
            .and_then(|r| r.split("];").next())
            .unwrap();
        let wasm: Vec<&str> = list
            .split(',')
            .map(|x| x.trim().trim_matches('"'))
            .filter(|x| !x.is_empty())
            .collect();
        assert_eq!(wasm, names);
    }

    #[test]
    fn report_and_matrix() {
        let text = ATTEMPTS
            .iter()
            .map(|(a, _)| format_line(a, Outcome::Blocked, "x"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = parse_report(&text);
        assert!(missing(&r).is_empty());
        assert!(missing(&r[1..]).contains(&"read-secret"));
        let m = matrix(&[
            LevelReport {
                level: "none".into(),
                results: Some(r),
                skipped: None,
            },
            LevelReport {
                level: "sandbox".into(),
                results: None,
                skipped: Some("not available".into()),
            },
        ]);
        assert!(m.contains(&format!("{n}/{n}", n = ATTEMPTS.len())), "{m}");
        assert!(m.contains("sandbox: skipped: not available"), "{m}");
    }
}
