//! What `paddock status` prints, from the status list of the API: the table (with HEALTH, and
//! INFO cut to the terminal's width), the detail line of apps named on the command line, and
//! the verdict of `status --probe` (is every app as its file wants it?).

use super::api::{AppStatus, StatusList};
use crate::config::RestartPolicy;
use crate::util::human_bytes;
use std::fmt::Write;

/// The table, for the CLI and for the server's `GET /v1/apps?format=table`. `named`: apps
/// were named on the command line, so INFO is shown in full and a detail line follows each app.
/// `width`: the terminal's width, to cut INFO to (`None`: not cut).
pub fn table(apps: &[AppStatus], named: bool, width: Option<usize>) -> String {
    let mut out = String::with_capacity(128 + apps.len() * 104);
    let w = apps.iter().map(|a| a.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:w$}  {:9} {:8} {:>8}  {:>9}  {:>8}  {:>10}  {:9}  LAST EXIT / INFO",
        "NAME", "STATE", "LEVEL", "PID", "UPTIME", "RESTARTS", "MEMORY", "HEALTH"
    );
    // Cells are written into one scratch string each (no allocation per cell once warm).
    fn cell(s: &mut String) -> &mut String {
        s.clear();
        s
    }
    let (mut pid, mut up, mut level, mut mem) =
        (String::new(), String::new(), String::new(), String::new());
    for a in apps {
        match a.pid {
            Some(p) => {
                let _ = write!(cell(&mut pid), "{p}");
            }
            None => cell(&mut pid).push('-'),
        }
        match a.uptime_secs {
            Some(s) => crate::util::write_duration(
                cell(&mut up),
                std::time::Duration::try_from_secs_f64(s).unwrap_or_default(),
            ),
            None => cell(&mut up).push('-'),
        }
        cell(&mut level).push_str(&a.isolation);
        if a.fallback.is_some() {
            level.push('*');
        }
        match a.memory_bytes {
            Some(b) => crate::util::write_bytes(cell(&mut mem), b),
            None => cell(&mut mem).push('-'),
        }
        let health = match a.health {
            None => "-",
            Some(crate::supervise::Health::Healthy) => "healthy",
            Some(crate::supervise::Health::Unhealthy) => "unhealthy",
            Some(crate::supervise::Health::Unknown) => "unknown",
        };
        let start = out.len();
        let _ = write!(
            out,
            "{:w$}  {:9} {:8} {:>8}  {:>9}  {:>8}  {:>10}  {:9}  ",
            a.name, a.state, level, pid, up, a.restarts, mem, health
        );
        let used = out.len() - start;
        let info = info(a);
        match width {
            Some(cols) if !named => out.push_str(&cut(&info, cols.saturating_sub(used))),
            _ => out.push_str(&info),
        }
        out.truncate(out.trim_end().len().max(start));
        out.push('\n');
        if named && let Some(d) = detail(a) {
            let _ = writeln!(out, "{:w$}  {d}", "");
        }
    }
    out
}

/// The INFO column: why the app is in its state, its fallback, or its last exit.
fn info(a: &AppStatus) -> String {
    if !a.message.is_empty() {
        a.message.clone()
    } else if let Some(why) = &a.fallback {
        format!("* fallback from sandbox: {why}")
    } else {
        a.last_exit
            .as_ref()
            .map(|e| format!("last: {}", e.description))
            .unwrap_or_default()
    }
}

/// `s` in at most `room` characters (at least 20, so a narrow terminal still shows something),
/// ending in `…` when cut.
pub fn cut(s: &str, room: usize) -> String {
    let room = room.max(20);
    if s.chars().count() <= room {
        return s.to_string();
    }
    let mut t: String = s.chars().take(room - 1).collect();
    t.push('…');
    t
}

/// The line below a named app: its sandbox, published ports, cgroup, usage and limits.
fn detail(a: &AppStatus) -> Option<String> {
    if a.cgroup.is_none()
        && a.limits.is_none()
        && a.sandbox.is_none()
        && a.published.is_empty()
        && a.listen.is_empty()
    {
        return None;
    }
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
    if !a.listen.is_empty() {
        d.push(format!(
            "listens on {}{}",
            a.listen.join(", "),
            if a.on_demand {
                " (starts on connection)"
            } else {
                ""
            }
        ));
    }
    if let Some(c) = &a.cgroup {
        d.push(format!("cgroup {c}"));
    }
    if a.memory_bytes.is_some() || l.memory_bytes.is_some() {
        d.push(format!(
            "memory {}{}",
            a.memory_bytes.map_or("-".into(), human_bytes),
            of(l.memory_bytes.map(human_bytes))
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
    Some(d.join(", "))
}

/// Why an app is not as its file wants it, or `None` when it is. An autostart app must be
/// `READY` (or, when its restart policy lets it end, `EXITED` with code 0: a one-shot job that
/// did its work). An app without autostart runs only when asked: it may be `STOPPED` or
/// `EXITED`, and when it was started it must be `READY`. `FATAL`, an unhealthy health check and
/// an app still on its way up (`STARTING`, `RUNNING` not ready, `BACKOFF`, `STOPPING`) are
/// never as wanted.
pub fn not_as_wanted(a: &AppStatus) -> Option<String> {
    if a.health == Some(crate::supervise::Health::Unhealthy) {
        return Some(format!("{} but unhealthy", a.state));
    }
    let clean_exit = a.last_exit.as_ref().is_some_and(|e| e.code == Some(0));
    match a.state.as_str() {
        "READY" => None,
        "EXITED" if !a.autostart => None,
        "EXITED" if clean_exit && a.restart_policy != RestartPolicy::Always => None,
        "STOPPED" if !a.autostart => None,
        "STOPPED" => Some("STOPPED, but its file says autostart: start it".into()),
        "FATAL" => Some(format!("FATAL: {}", a.message)),
        st => {
            let why = info(a);
            Some(if why.is_empty() {
                format!("{st}, not READY")
            } else {
                format!("{st}, not READY: {why}")
            })
        }
    }
}

/// `status --probe`: every app not as its file wants it, as "NAME: why".
pub fn probe(list: &StatusList) -> Vec<String> {
    list.apps
        .iter()
        .filter_map(|a| not_as_wanted(a).map(|why| format!("{}: {why}", a.name)))
        .collect()
}

/// The width of the terminal on stdout, else `COLUMNS`; `None` when neither says (output to a
/// pipe or file is not cut).
pub fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which lives across the
    // call; on a descriptor that is not a terminal it fails with ENOTTY and writes nothing.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        return Some(ws.ws_col as usize);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, state: &str, autostart: bool) -> AppStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "pid": null, "uptime_secs": null, "since_secs": 0.0,
            "restarts": 0, "failures": 0, "last_exit": null, "message": "", "isolation": "none",
            "autostart": autostart, "command": ["x"],
        }))
        .unwrap()
    }

    #[test]
    fn probe_verdicts() {
        assert_eq!(not_as_wanted(&app("a", "READY", true)), None);
        assert!(not_as_wanted(&app("a", "STOPPED", true)).is_some());
        assert_eq!(not_as_wanted(&app("a", "STOPPED", false)), None);
        assert_eq!(not_as_wanted(&app("a", "EXITED", false)), None);
        assert!(not_as_wanted(&app("a", "EXITED", true)).is_some());
        assert!(not_as_wanted(&app("a", "FATAL", false)).is_some());
        assert!(not_as_wanted(&app("a", "BACKOFF", true)).is_some());
        assert!(not_as_wanted(&app("a", "STARTING", false)).is_some());
        let mut a = app("a", "READY", true);
        a.health = Some(crate::supervise::Health::Unhealthy);
        assert_eq!(not_as_wanted(&a).unwrap(), "READY but unhealthy");
    }

    #[test]
    fn info_is_cut_to_the_width_unless_named() {
        let mut a = app("web", "FATAL", true);
        a.message = "x".repeat(400);
        let apps = vec![a];
        let t = table(&apps, false, Some(100));
        let line = t.lines().nth(1).unwrap();
        assert_eq!(line.chars().count(), 100, "{line}");
        assert!(line.ends_with('…'));
        assert!(table(&apps, true, Some(100)).contains(&"x".repeat(400)));
        assert!(table(&apps, false, None).contains(&"x".repeat(400)));
        assert!(t.starts_with("NAME ") && t.contains(" HEALTH "), "{t}");
    }
}
