//! A systemd `.service` unit: the common `[Service]` keys become one app file; `[Unit]` and
//! `[Install]` keys, and everything paddock does not do, are noted with the reason.

use super::{AppOut, Import, Note, app_name, arr, q, secs, split_words};

/// systemd time spans: `90`, `90s`, `1min 30s`, `500ms`, `infinity`.
pub(super) fn span(v: &str) -> Option<String> {
    if let Some(s) = secs(v) {
        return Some(s);
    }
    let mut total = 0f64;
    for part in v.split_whitespace() {
        let i = part.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = part[..i].parse().ok()?;
        total += n * match &part[i..] {
            "ms" | "msec" => 0.001,
            "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            _ => return None,
        };
    }
    (total > 0.0).then(|| q(&format!("{total}s")))
}

/// `A=1 "B=two words"` → pairs.
fn env_assignments(v: &str) -> Result<Vec<(String, String)>, String> {
    split_words(v)?
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{w:?} is not KEY=value"))
        })
        .collect()
}

pub(super) fn convert(file: &str, src: &str) -> Result<Import, String> {
    let unit = file.strip_suffix(".service").unwrap_or(file);
    let name = app_name(unit.trim_end_matches('@'));
    let mut a = AppOut::new(&name, file.to_string());
    let mut imp = Import::default();
    let mut section = String::new();
    let mut note = |line: usize, section: &str, k: &str, why: String| {
        imp.notes.push(Note {
            line,
            key: format!("[{section}] {k}"),
            why,
        })
    };
    let mut pending = String::new();
    let mut start_line = 0;
    let mut kind = "simple".to_string();
    for (i, raw) in src.lines().enumerate() {
        // Continuation lines end in a backslash.
        let l = raw.trim();
        if pending.is_empty() {
            start_line = i + 1;
        }
        if let Some(head) = l.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(l);
        let line = std::mem::take(&mut pending);
        let line = line.trim();
        let ln = start_line;
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            section = h.trim_end_matches(']').to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {ln}: expected Key=value, found {line:?}"));
        };
        let (k, v) = (k.trim(), v.trim());
        match (section.as_str(), k) {
            ("Unit", "Description") => a.origin = format!("{file} ({v})"),
            ("Unit", "After" | "Requires" | "Wants" | "BindsTo" | "Requisite") => note(
                ln,
                &section,
                k,
                format!("not mapped: {v} are systemd units; to order paddock apps, write `after = [\"APP\"]` or `requires = [\"APP\"]`"),
            ),
            ("Unit", "Documentation") => {}
            ("Install", _) => note(
                ln,
                &section,
                k,
                "not needed: every file in paddock's app directory is an app, started at boot when `autostart = true` (the default)".into(),
            ),
            ("Service", "Type") => {
                kind = v.to_string();
                match v {
                    "simple" | "exec" | "idle" => {}
                    "notify" | "notify-reload" => a.set_in("readiness", "notify", "true".into()),
                    "oneshot" => a.set_in("restart", "policy", q("never")),
                    "forking" => note(ln, &section, k, "not mapped: paddock supervises the process it starts; run the program in the foreground (most have a flag such as --foreground, -D or daemonize no)".into()),
                    _ => note(ln, &section, k, format!("not mapped: Type={v}")),
                }
            }
            ("Service", "ExecStart") => {
                if a.has("command") {
                    note(ln, &section, k, "not mapped: one command per app; the first ExecStart was kept".into());
                    continue;
                }
                let v = v.trim_start_matches(['-', '@', '+', '!', ':']);
                let words = split_words(v).map_err(|e| format!("line {ln}: ExecStart: {e}"))?;
                if words.is_empty() {
                    return Err(format!("line {ln}: ExecStart is empty"));
                }
                a.set("command", arr(&words));
            }
            ("Service", "WorkingDirectory") => {
                let v = v.trim_start_matches('-');
                if v == "~" {
                    note(ln, &section, k, "not mapped: `~`: give the directory".into());
                } else {
                    a.set("workdir", q(v));
                }
            }
            ("Service", "Environment") => {
                for (ek, ev) in env_assignments(v).map_err(|e| format!("line {ln}: Environment: {e}"))? {
                    a.set_in("env", &ek, q(&ev));
                }
            }
            ("Service", "User") => a.set("user", q(v)),
            ("Service", "Group") => a.set("group", q(v)),
            ("Service", "Restart") => {
                let p = match v {
                    "no" => "never",
                    "always" => "always",
                    "on-failure" => "on-failure",
                    "on-abnormal" | "on-abort" | "on-watchdog" => {
                        note(ln, &section, k, format!("mapped to policy = \"on-failure\" (which also restarts after a non-zero exit status), the closest to {v}"));
                        "on-failure"
                    }
                    _ => {
                        note(ln, &section, k, format!("not mapped: Restart={v}; paddock has always, on-failure and never"));
                        continue;
                    }
                };
                a.set_in("restart", "policy", q(p));
            }
            ("Service", "RestartSec") => match span(v) {
                Some(d) => a.set_in("restart", "backoff_initial", d),
                None => note(ln, &section, k, format!("not mapped: {v:?}")),
            },
            ("Service", "TimeoutStopSec") => match span(v) {
                Some(d) => a.set("stop_timeout", d),
                None => note(ln, &section, k, format!("not mapped: {v:?}")),
            },
            ("Service", "KillSignal") => a.set("stop_signal", q(v)),
            ("Service", "WatchdogSec") => match span(v) {
                Some(d) => a.set_in("readiness", "watchdog", d),
                None => note(ln, &section, k, format!("not mapped: {v:?}")),
            },
            ("Service", "LimitNOFILE") => match v.split(':').next_back().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => a.set_in("limits", "nofile", n.to_string()),
                None => note(ln, &section, k, format!("not mapped: {v:?}")),
            },
            ("Service", "MemoryMax" | "MemoryLimit" | "TasksMax") if v == "infinity" => {}
            ("Service", "MemoryMax" | "MemoryLimit") => a.set_in("limits", "memory", q(v)),
            ("Service", "TasksMax") => match v.parse::<u64>() {
                Ok(n) => a.set_in("limits", "pids", n.to_string()),
                Err(_) => note(ln, &section, k, format!("not mapped: {v:?} (a number, not a percentage)")),
            },
            ("Service", "CPUQuota") => match v.strip_suffix('%').and_then(|n| n.parse::<f64>().ok()) {
                Some(p) if p > 0.0 => a.set_in("limits", "cpu", format!("{}", p / 100.0)),
                _ => note(ln, &section, k, format!("not mapped: {v:?}")),
            },
            ("Service", "StandardOutput" | "StandardError") => note(ln, &section, k, "not mapped: paddock logs each app's stdout and stderr to files (`paddock tail`); `[logs] stdout = \"inherit\"` sends them to paddock's own output, which systemd journals".into()),
            ("Service", "EnvironmentFile") => note(ln, &section, k, "not mapped: copy its variables into [env]".into()),
            ("Service", "ExecStartPre" | "ExecStartPost" | "ExecStop" | "ExecReload" | "ExecStopPost") => note(ln, &section, k, "not mapped: paddock runs one command per app; put the steps in a wrapper script, or an app of their own ordered with `after`".into()),
            ("Service", "PIDFile") => note(ln, &section, k, "not needed: paddock knows the pid of the process it starts (run it in the foreground)".into()),
            ("Service", "RemainAfterExit") => note(ln, &section, k, "not mapped: an app that ended is EXITED".into()),
            (s, k) => note(ln, s, k, "not mapped: paddock has no such setting".into()),
        }
    }
    if !a.has("command") {
        return Err("no ExecStart in [Service]".into());
    }
    if kind == "oneshot" {
        imp.notes.push(Note {
            line: 0,
            key: "[Service] Type".into(),
            why: "oneshot: written with [restart] policy = \"never\"; it shows EXITED once done"
                .into(),
        });
    }
    imp.apps.push(a);
    Ok(imp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_becomes_an_app() {
        let src = "[Unit]\nDescription=Web\nAfter=network.target\n\n[Service]\nType=notify\nExecStart=-/usr/bin/env \"A B\" \\\n  --flag\nWorkingDirectory=/srv\nEnvironment=X=1 \"Y=two words\"\nUser=www-data\nRestart=on-abnormal\nRestartSec=1min 30s\nTimeoutStopSec=20\nCPUQuota=150%\nPrivateTmp=yes\n\n[Install]\nWantedBy=multi-user.target\n";
        let i = convert("web.service", src).unwrap();
        let t = i.apps[0].to_toml();
        for want in [
            "command = [\"/usr/bin/env\", \"A B\", \"--flag\"]",
            "workdir = \"/srv\"",
            "Y = \"two words\"",
            "user = \"www-data\"",
            "policy = \"on-failure\"",
            "backoff_initial = \"90s\"",
            "stop_timeout = \"20s\"",
            "notify = true",
            "cpu = 1.5",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        let keys: Vec<&str> = i.notes.iter().map(|n| n.key.as_str()).collect();
        for k in [
            "[Unit] After",
            "[Service] PrivateTmp",
            "[Install] WantedBy",
            "[Service] Restart",
        ] {
            assert!(keys.contains(&k), "{k}: {keys:?}");
        }
        assert!(convert("x.service", "[Service]\nUser=x\n").is_err());
    }
}
