//! The `paddock status` table. The server renders it (`GET /v1/apps?format=table`) and the CLI
//! copies it to its output: with 1000 apps, decoding the JSON and rendering it again took the
//! CLI longer than everything else together.

use super::api::AppStatus;
use std::fmt::Write;

/// The table's content type when every listed app is READY (`paddock status` exits 0)…
pub const ALL_READY: &str = "text/plain; charset=utf-8; paddock-all-ready=1";
/// …and when one is not (it exits 3, like supervisorctl).
pub const NOT_ALL_READY: &str = "text/plain; charset=utf-8; paddock-all-ready=0";

/// The table of `apps`; `detailed` (apps named on the command line) adds a line per app with
/// its cgroup, usage, limits, sandbox and published ports.
pub fn render(apps: &[AppStatus], detailed: bool) -> String {
    let mut out = String::with_capacity(128 + apps.len() * 96);
    let w = apps.iter().map(|a| a.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:w$}  {:9} {:8} {:>8}  {:>9}  {:>8}  {:>9}  LAST EXIT / INFO",
        "NAME", "STATE", "LEVEL", "PID", "UPTIME", "RESTARTS", "MEMORY"
    );
    for a in apps {
        let pid = a.pid.map_or("-".into(), |p| p.to_string());
        let up = a.uptime_secs.map_or("-".into(), |s| {
            crate::util::human_duration(std::time::Duration::from_secs_f64(s))
        });
        let level = if a.fallback.is_some() {
            format!("{}*", a.isolation)
        } else {
            a.isolation.clone()
        };
        let info = if !a.message.is_empty() {
            a.message.clone()
        } else if let Some(why) = &a.fallback {
            format!("* fallback from sandbox: {why}")
        } else {
            a.last_exit
                .as_ref()
                .map(|e| format!("last: {}", e.description))
                .unwrap_or_default()
        };
        let mem = a.memory_bytes.map_or("-".into(), short_size);
        let _ = writeln!(
            out,
            "{:w$}  {:9} {:8} {:>8}  {:>9}  {:>8}  {:>9}  {}",
            a.name, a.state, level, pid, up, a.restarts, mem, info
        );
        // Named apps: their cgroup, usage and limits below the line.
        if detailed
            && (a.cgroup.is_some()
                || a.limits.is_some()
                || a.sandbox.is_some()
                || !a.published.is_empty())
        {
            let l = a.limits.clone().unwrap_or_default();
            let of = |v: Option<String>| v.map_or(String::new(), |v| format!(" of {v}"));
            let mut d = vec![];
            if let Some(sb) = &a.sandbox {
                d.push(format!("sandbox: {sb}"));
            }
            for p in &a.published {
                d.push(format!(
                    "published {} -> port {} inside{}",
                    p.address,
                    p.port,
                    p.error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                ));
            }
            if let Some(c) = &a.cgroup {
                d.push(format!("cgroup {c}"));
            }
            if a.memory_bytes.is_some() || l.memory_bytes.is_some() {
                d.push(format!(
                    "memory {}{}",
                    a.memory_bytes.map_or("-".into(), short_size),
                    of(l.memory_bytes.map(short_size))
                ));
            }
            if a.cpu_usec.is_some() || l.cpu.is_some() {
                d.push(format!(
                    "cpu {}{}",
                    a.cpu_usec
                        .map_or("-".into(), |u| format!("{:.2}s", u as f64 / 1e6)),
                    l.cpu
                        .map_or(String::new(), |c| format!(" (limit {c} cores)"))
                ));
            }
            if a.pids.is_some() || l.pids.is_some() {
                d.push(format!(
                    "pids {}{}",
                    a.pids.map_or("-".into(), |p| p.to_string()),
                    of(l.pids.map(|p| p.to_string()))
                ));
            }
            if let Some(n) = l.nofile {
                d.push(format!("nofile {n}"));
            }
            let _ = writeln!(out, "{:w$}  {}", "", d.join(", "));
        }
    }
    out
}

/// Whether every app is READY.
pub fn all_ready(apps: &[AppStatus]) -> bool {
    apps.iter().all(|a| a.state == "READY")
}

/// A size for the status table: "12.3M", "256M", "1.5G".
pub fn short_size(n: u64) -> String {
    let (v, u) = match n {
        n if n >= 1 << 30 => (n as f64 / (1u64 << 30) as f64, "G"),
        n if n >= 1 << 20 => (n as f64 / (1u64 << 20) as f64, "M"),
        n if n >= 1 << 10 => (n as f64 / 1024.0, "K"),
        n => return format!("{n}B"),
    };
    if v >= 100.0 || v.fract() < 0.05 {
        format!("{v:.0}{u}")
    } else {
        format!("{v:.1}{u}")
    }
}
