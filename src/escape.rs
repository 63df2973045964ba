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

/// Every attempt, in the order the probe makes them, with what it does.
pub const ATTEMPTS: &[(&str, &str)] = &[
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
    ("fork-bomb", "fork 500 processes (killed and reaped after)"),
    ("memory-bomb", "touch 256 MiB (released after)"),
    (
        "cpu-hog",
        "spin for 1 s: more than 0.5 of a core is an escape",
    ),
];

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
    ATTEMPTS
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| !report.iter().any(|r| r.attempt == *a))
        .collect()
}

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
    /// "12/14 blocked", or the skip reason.
    pub fn summary(&self) -> String {
        match (&self.results, &self.skipped) {
            (Some(r), _) => format!(
                "{}/{} blocked",
                r.iter().filter(|x| x.result == Outcome::Blocked).count(),
                ATTEMPTS.len()
            ),
            (None, Some(why)) => format!("skipped: {}", why.trim().replace('\n', "; ")),
            (None, None) => "skipped".into(),
        }
    }
}

/// The matrix as an aligned table: one row per attempt, one column per level.
pub fn matrix(levels: &[LevelReport]) -> String {
    let w = ATTEMPTS.iter().map(|(a, _)| a.len()).max().unwrap_or(8);
    let mut s = format!("{:w$}", "attempt");
    for l in levels {
        s += &format!("  {:9}", l.level);
    }
    s.push('\n');
    for (a, _) in ATTEMPTS {
        s += &format!("{a:w$}");
        for l in levels {
            let cell = match &l.results {
                Some(r) => r
                    .iter()
                    .find(|x| x.attempt == *a)
                    .map_or("missing", |x| x.result.as_str()),
                None => "-",
            };
            s += &format!("  {cell:9}");
        }
        s.push('\n');
    }
    s += &format!("{:w$}", "blocked");
    for l in levels {
        let cell = match &l.results {
            Some(r) => format!(
                "{}/{}",
                r.iter().filter(|x| x.result == Outcome::Blocked).count(),
                ATTEMPTS.len()
            ),
            None => "skipped".into(),
        };
        s += &format!("  {cell:9}");
    }
    s.push('\n');
    for l in levels {
        if let Some(why) = &l.skipped {
            s += &format!("{}: skipped: {why}\n", l.level);
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

/// The app file of the probe at `level`. `none` and `bundle` get no limits (this build refuses
/// `[limits]` at native levels); `sandbox` gets the limits and `[sandbox]` keys of its issue, so
/// it lights up when that level lands.
pub fn probe_app(level: &str, probe: &Path, env: &[(String, String)], rw: &Path) -> String {
    let env = env
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let common = format!(
        "env = {{ {env} }}\nstop_timeout = \"5s\"\n\n[restart]\npolicy = \"never\"\n\n[logs]\ncombine = true\n"
    );
    match level {
        "none" => format!("command = [{:?}]\n{common}", probe.display().to_string()),
        "bundle" => format!(
            "isolation = \"bundle\"\nbundle = \"paddock-probe\"\ncommand = [\"paddock-probe\"]\n{common}"
        ),
        "sandbox" => format!(
            "isolation = \"sandbox\"\nbundle = \"paddock-probe\"\ncommand = [\"paddock-probe\"]\n{common}\n\
             [limits]\npids = 64\nmemory = \"64MiB\"\ncpu = 0.2\n\n\
             [sandbox]\nread_write = [{:?}]\nnetwork = \"none\"\ntcp_bind = []\ntcp_connect = []\nseccomp = \"default\"\n",
            rw.display().to_string()
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

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = vec![];
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid != me && String::from_utf8_lossy(&cmd).contains(needle) {
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

/// Runs the probe as a paddock app at each level, one `paddock serve` per level, and collects
/// its reports. A level that this paddock refuses (`paddock check` fails for the probe's app
/// file) is reported as skipped with paddock's own words; `wasm` runs the wasm probe when
/// it is given. Needs root for a meaningful `none` column (otherwise most attempts are
/// blocked by plain Unix permissions).
pub fn run_matrix(o: &MatrixOptions) -> Result<Vec<LevelRun>, String> {
    let w = &o.work;
    let _ = std::fs::remove_dir_all(w);
    let rw = w.join("rw");
    let outside = w.join("outside");
    let mnt = rw.join("mnt");
    for d in [&rw, &outside, &mnt, &w.join("suid")] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
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
    let mut runs = vec![];
    for level in &o.levels {
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
    let dir = o.work.join(level);
    let apps = dir.join("apps");
    let _ = std::fs::create_dir_all(&apps);
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
    let (Ok(v), Ok(sv), Ok(l)) = (&mut victim, &mut sig_victim, &listener) else {
        return LevelRun {
            report: LevelReport {
                level: level.into(),
                results: None,
                skipped: Some("could not start the victims or the listener".into()),
            },
            host_problems: vec![],
            config_error: None,
        };
    };
    let s = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = vec![
        ("PROBE_SECRET".into(), s(secret)),
        ("PROBE_OUTSIDE".into(), s(outside)),
        ("PROBE_VICTIM_MARK".into(), nonce.clone()),
        ("PROBE_VICTIM_PID".into(), v.id().to_string()),
        ("PROBE_SIGNAL_PID".into(), sv.id().to_string()),
        (
            "PROBE_CONNECT_PORT".into(),
            l.local_addr().map(|a| a.port()).unwrap_or(0).to_string(),
        ),
        ("PROBE_BIND_PORT".into(), bind_port.to_string()),
        ("PROBE_MOUNT_DIR".into(), s(mnt)),
        ("PROBE_HOST_UTS".into(), ns("uts")),
        ("PROBE_HOST_MNT".into(), ns("mnt")),
        ("PROBE_SETUID".into(), s(suid)),
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
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match serve {
                Err(e) => run.report.skipped = Some(format!("paddock serve: {e}")),
                Ok(mut child) => {
                    let client = crate::control::client::Client::new(&sock);
                    let done = wait_until(Duration::from_secs(120), || {
                        client
                            .json::<crate::control::api::StatusList>("GET", "/v1/apps/probe")
                            .is_ok_and(|(_, l)| {
                                l.apps.first().is_some_and(|a| {
                                    matches!(a.state.as_str(), "EXITED" | "FATAL" | "STOPPED")
                                })
                            })
                    });
                    let log = std::fs::read_to_string(dir.join("state/logs/probe.out"))
                        .unwrap_or_default();
                    if !done {
                        run.host_problems
                            .push("the probe did not finish within 120 s".into());
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
    let left = processes_with("paddock-probe");
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
        assert!(m.contains("14/14"), "{m}");
        assert!(m.contains("sandbox: skipped: not available"), "{m}");
    }
}
