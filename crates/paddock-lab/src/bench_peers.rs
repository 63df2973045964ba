//! `paddock bench --peers`: the same bench app under what a user would otherwise pick, measured
//! in the same run as paddock's levels, side by side:
//!
//! - `plain`: the native bench app exec'd by bash (the reference every ratio is taken to);
//! - `bwrap --unshare-all` (with /dev and /proc) on the same binary;
//! - `crun` with a minimal OCI bundle whose root is paddock's own bundle of the app (in a
//!   private mount namespace without the cgroup2 mount: crun refuses hybrid hosts otherwise);
//! - `wasmtime run` on the same module as level wasm;
//! - `systemd-run --wait` when systemd runs the host.
//!
//! Cold start is the whole process, from bash starting the runner to its exit (`--exit`: the app
//! returns at once), timed by bash's `$EPOCHREALTIME` so that every runner pays the same
//! shell; memory per instance is the PSS of each instance's whole process tree (runner
//! processes included), with the app up and idle.

use crate::bench::Stats;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerResult {
    pub runner: String,
    /// The command it ran (the bench app's path shortened to `APP`).
    pub command: String,
    /// Why it was not measured: not installed, or it failed here (with its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub cold_start: Option<Stats>,
    /// Its median cold start over plain's.
    pub ratio_to_plain: Option<f64>,
    pub memory_per_instance: Option<u64>,
    /// Instances measured for `memory_per_instance`.
    pub instances: usize,
}

pub struct Options {
    pub native: PathBuf,
    pub wasm: PathBuf,
    /// paddock's bundle of the app (`<store>/<id>`), for crun's root; None: crun skipped.
    pub bundle: Option<PathBuf>,
    pub work: PathBuf,
    pub runs: usize,
    pub instances: usize,
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .unwrap_or_else(|| paddock::config::DEFAULT_PATH.into())
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The cgroup2 mount of a hybrid host (crun refuses to run while it is visible), if any.
fn hybrid_cgroup2() -> Option<String> {
    let host = paddock::cgroup::detect();
    match host.layout {
        paddock::cgroup::Layout::Hybrid => host.v2.map(|(m, _)| m.display().to_string()),
        _ => None,
    }
}

struct Runner {
    name: &'static str,
    /// Shell words (already quoted) that run the app, idle; `--exit` is added for a cold start;
    /// `$i` is the run number.
    argv: Vec<String>,
    /// A shell line run once before the loop (crun: hide the cgroup2 mount).
    prelude: String,
    /// Wrap the loop in a private mount namespace.
    private_mounts: bool,
    /// Shown in the report instead of the full command.
    shown: String,
    /// Memory per instance is measured (not for crun: its containers outlive a killed crun).
    memory: bool,
}

/// Runs `runs` cold starts of a runner, each timed by bash; microseconds.
fn cold_starts(r: &Runner, runs: usize) -> Result<Vec<f64>, String> {
    // crun's app arguments are in its bundle's config.json.
    let exit = if r.name == "crun" { "" } else { " --exit" };
    let cmd = r.argv.join(" ") + exit;
    let script = format!(
        "{}\nfor i in $(seq 1 {runs}); do t0=$EPOCHREALTIME; {cmd} </dev/null >/dev/null 2>/tmp/.paddock-bench-peer-$$; rc=$?; t1=$EPOCHREALTIME; \
         if [ $rc -ne 0 ]; then echo \"fail $rc $(head -c 300 /tmp/.paddock-bench-peer-$$)\"; rm -f /tmp/.paddock-bench-peer-$$; exit 0; fi; \
         echo \"ok ${{t0/[.,]/}} ${{t1/[.,]/}}\"; done; rm -f /tmp/.paddock-bench-peer-$$",
        r.prelude
    );
    let mut c = if r.private_mounts {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "bash", "-c", &script]);
        c
    } else {
        let mut c = Command::new("bash");
        c.args(["-c", &script]);
        c
    };
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = vec![];
    for line in text.lines() {
        let mut w = line.splitn(3, ' ');
        match (w.next(), w.next(), w.next()) {
            (Some("ok"), Some(a), Some(b)) => {
                let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                    continue;
                };
                v.push(b.saturating_sub(a) as f64);
            }
            (Some("fail"), Some(rc), rest) => {
                let msg = rest.unwrap_or("").trim().replace('\n', " ");
                return Err(format!("exit status {rc}: {msg}"));
            }
            _ => {}
        }
    }
    if v.is_empty() {
        return Err(format!(
            "no run completed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(v)
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Every process whose process group is `pgid` (the host's view).
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// `n` instances of the app under a runner, up and idle: the PSS of their process trees / n.
fn memory_per_instance(r: &Runner, n: usize) -> Result<u64, String> {
    use std::os::unix::process::CommandExt;
    let script = format!("exec {}", r.argv.join(" "));
    let mut kids = vec![];
    let mut err = None;
    for i in 0..n {
        match Command::new("bash")
            .args(["-c", &script.replace("$i", &i.to_string())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(c) => kids.push(c),
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(600));
    let mut total = 0u64;
    let mut alive = 0usize;
    for k in &mut kids {
        if k.try_wait().ok().flatten().is_none() {
            alive += 1;
            total += group_members(k.id() as i32)
                .into_iter()
                .map(pss_kib)
                .sum::<u64>();
        }
    }
    for k in &mut kids {
        // SAFETY: kill(2) takes no pointers; the group our own unreaped child leads.
        unsafe { libc::kill(-(k.id() as i32), libc::SIGKILL) };
        let _ = k.wait();
    }
    if let Some(e) = err {
        return Err(e);
    }
    if alive < kids.len() || alive == 0 {
        return Err(format!("{} of {n} instances exited early", n - alive));
    }
    Ok(total * 1024 / alive as u64)
}

/// A minimal OCI bundle for crun whose root is paddock's bundle of the app.
fn oci_bundle(o: &Options, bundle: &Path) -> Result<PathBuf, String> {
    let root = bundle.join("root");
    // Mount points for /proc and /dev (the bench's own scratch store: nothing else uses it).
    for d in ["proc", "dev"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let dir = o.work.join("oci");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [o.native.display().to_string(), "--exit"],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": root.display().to_string(), "readonly": true},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=1m"]}
        ],
        "linux": {"namespaces": [
            {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
            {"type": "uts"}, {"type": "mount"}
        ]}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Measures every peer; the first result is `plain`.
pub fn run(o: &Options, mut step: impl FnMut(&str)) -> Vec<PeerResult> {
    let app = sh_quote(&o.native.display().to_string());
    let mut runners: Vec<(Runner, Option<String>)> = vec![(
        Runner {
            name: "plain",
            argv: vec![app.clone()],
            prelude: String::new(),
            private_mounts: false,
            shown: "APP --exit".into(),
            memory: true,
        },
        None,
    )];
    let missing = |p: &str| Some(format!("not installed ({p} is not in PATH)"));
    runners.push((
        Runner {
            name: "bwrap",
            argv: [
                "bwrap",
                "--unshare-all",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([app.clone()])
            .collect(),
            prelude: String::new(),
            private_mounts: false,
            shown: "bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc APP --exit".into(),
            memory: true,
        },
        which("bwrap").is_none().then(|| missing("bwrap")).flatten(),
    ));
    let crun_skip = match (which("crun"), &o.bundle) {
        (None, _) => missing("crun"),
        (_, None) => Some("paddock's bundle of the app could not be built".into()),
        (Some(_), Some(b)) => oci_bundle(o, b).err(),
    };
    let oci = o.work.join("oci");
    runners.push((
        Runner {
            name: "crun",
            argv: vec![
                "crun".into(),
                "run".into(),
                "--bundle".into(),
                sh_quote(&oci.display().to_string()),
                "pb$$-$i".into(),
            ],
            prelude: hybrid_cgroup2()
                .map(|m| format!("umount -l {} 2>/dev/null", sh_quote(&m)))
                .unwrap_or_default(),
            private_mounts: true,
            shown: "crun run --bundle OCI (root: paddock's bundle of APP; pid, net, ipc, uts, mount namespaces)".into(),
            memory: false,
        },
        crun_skip,
    ));
    runners.push((
        Runner {
            name: "wasmtime",
            argv: vec![
                "wasmtime".into(),
                "run".into(),
                sh_quote(&o.wasm.display().to_string()),
            ],
            prelude: String::new(),
            private_mounts: false,
            shown: "wasmtime run bench-app.wasm --exit".into(),
            memory: true,
        },
        if which("wasmtime").is_none() {
            missing("wasmtime")
        } else if !o.wasm.is_file() {
            Some("the wasm bench app is missing".into())
        } else {
            None
        },
    ));
    let systemd = Path::new("/run/systemd/system").is_dir();
    runners.push((
        Runner {
            name: "systemd-run",
            argv: vec![
                "systemd-run".into(),
                "--quiet".into(),
                "--wait".into(),
                "--collect".into(),
                app.clone(),
            ],
            prelude: String::new(),
            private_mounts: false,
            shown: "systemd-run --quiet --wait --collect APP --exit".into(),
            memory: false,
        },
        match which("systemd-run") {
            None => missing("systemd-run"),
            Some(_) if !systemd => Some(
                "installed, but systemd does not run this host (no /run/systemd/system)".into(),
            ),
            Some(_) => None,
        },
    ));
    let mut out: Vec<PeerResult> = vec![];
    let mut plain_median = None;
    for (r, skip) in runners {
        step(&format!("peers: {}", r.name));
        let mut p = PeerResult {
            runner: r.name.into(),
            command: r.shown.clone(),
            skipped: skip,
            ..Default::default()
        };
        if p.skipped.is_none() {
            match cold_starts(&r, o.runs) {
                Ok(v) => p.cold_start = Stats::of(v),
                Err(e) => p.skipped = Some(format!("failed here: {e}")),
            }
        }
        if p.skipped.is_none() && r.memory {
            match memory_per_instance(&r, o.instances) {
                Ok(b) => {
                    p.memory_per_instance = Some(b);
                    p.instances = o.instances;
                }
                Err(e) => eprintln!("paddock bench: {}: memory not measured: {e}", r.name),
            }
        }
        let med = p.cold_start.as_ref().map(|s| s.median_us);
        if r.name == "plain" {
            plain_median = med;
        }
        p.ratio_to_plain = match (med, plain_median) {
            (Some(m), Some(b)) if b > 0.0 => Some(m / b),
            _ => None,
        };
        out.push(p);
    }
    out
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// What each column and level of the bench table means: which binary ran how, with which
/// limits, and what the ≥ and = marks say.
pub fn notes(r: &crate::bench::Report) -> String {
    let mut s = String::from("\nwhat ran (the same app at each level, no level with [limits]):\n");
    for l in &r.levels {
        let what = match l.level.as_str() {
            "none" => {
                "the native binary as a plain process (its own cgroup when paddock has cgroups)"
            }
            "bundle" => {
                "the same binary from paddock's bundle of it (its own loader and libraries)"
            }
            "sandbox" => {
                "the bundle in new namespaces, with Landlock, seccomp and dropped capabilities"
            }
            "wasm" => {
                "the same source built to wasm: an instance inside paddock (pooling allocator)"
            }
            _ => "",
        };
        s += &format!("  {:8} {what}\n", l.level);
    }
    s += "  ≥ N: the ramp stopped at the cap (--max-processes, --max-wasm) or at the named host limit, not at the budget\n";
    s += "  paddock mem/app: paddock's own PSS growth per supervised app (a wasm instance lives in paddock: that is its mem/instance)\n";
    s += "  paddock cpu/app idle: paddock's CPU time per app and second while the apps idle\n";
    if r.quick {
        s += "  --quick: few samples, small ramps, no escape matrix; for a figure to quote, run without it\n";
    }
    s
}

/// The peers table: paddock's levels and the other runners, with ratios to plain.
pub fn table(r: &crate::bench::Report) -> String {
    if r.peers.is_empty() {
        return String::new();
    }
    let plain = r
        .peers
        .iter()
        .find(|p| p.runner == "plain")
        .and_then(|p| p.cold_start.as_ref())
        .map(|s| s.median_us);
    let ratio = |m: f64| plain.map_or("-".into(), |b| format!("{:.2}×", m / b));
    let mut rows: Vec<[String; 5]> = vec![[
        "runner".into(),
        "cold start med/p99".into(),
        "× plain".into(),
        "mem/instance".into(),
        "how".into(),
    ]];
    for l in r.levels.iter().filter(|l| l.skipped.is_none()) {
        let Some(c) = &l.cold_start else { continue };
        rows.push([
            format!("paddock {}", l.level),
            format!("{} / {}", fmt_us(c.median_us), fmt_us(c.p99_us)),
            ratio(c.median_us),
            l.memory_per_instance
                .map_or("-".into(), crate::bench::fmt_bytes),
            "STOPPED→READY in paddock's events (spawn to running, no exit)".into(),
        ]);
    }
    let mut absent = vec![];
    for p in &r.peers {
        if let Some(why) = &p.skipped {
            absent.push(format!("{}: {why}", p.runner));
            continue;
        }
        let c = p.cold_start.as_ref();
        rows.push([
            p.runner.clone(),
            c.map_or("-".into(), |c| {
                format!("{} / {}", fmt_us(c.median_us), fmt_us(c.p99_us))
            }),
            p.ratio_to_plain.map_or("-".into(), |x| format!("{x:.2}×")),
            p.memory_per_instance
                .map_or("-".into(), crate::bench::fmt_bytes),
            p.command.clone(),
        ]);
    }
    let width: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::from(
        "\npeers, same app, same run (runners: whole process from bash's exec to exit, APP --exit; \
         mem/instance: PSS of each instance's process tree, app idle):\n",
    );
    for row in &rows {
        for (c, w) in width.iter().enumerate() {
            s += &row[c];
            s += &" ".repeat(w - row[c].chars().count() + 2);
        }
        s += &row[4];
        s.push('\n');
    }
    for a in absent {
        s += &format!("  not measured: {a}\n");
    }
    s
}
