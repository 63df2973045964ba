//! A systemd `.timer` unit with its service: the service is imported as a `.service` is, then
//! becomes a scheduled app: `OnCalendar` → `schedule` (a cron expression, for the calendar
//! specs cron can say), `OnUnitActiveSec`/`OnUnitInactiveSec` → `every`, `Persistent=true` →
//! `catch_up = true`. What cannot be said is noted with the reason.

use super::{Import, Note, q, systemd};
use crate::schedule::Cron;
use std::path::Path;

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One calendar field (`*`, `5`, `1,15`, `1..5`, `0/15`, `*/2`) in cron's words.
fn field(v: &str, what: &str) -> Result<String, String> {
    if v.contains('~') {
        return Err(format!(
            "{what} \"{v}\": `~` (days from the month's end) has no cron form"
        ));
    }
    let items: Vec<String> = v
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let range = range.replace("..", "-");
            match step {
                Some(s) => format!("{range}/{s}"),
                None => range,
            }
        })
        .collect();
    Ok(unpad(&items.join(",")))
}

/// Numbers without their leading zeros (`03` → `3`, `00` → `0`).
fn unpad(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            let t = digits.trim_start_matches('0');
            out.push_str(if t.is_empty() { "0" } else { t });
            digits.clear();
        }
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Day names and ranges (`Mon..Fri`, `Sat,Sun`), expanded to a list of cron's names.
fn weekdays(v: &str) -> Result<String, String> {
    let idx = |n: &str| {
        let n = n.to_ascii_lowercase();
        DAYS.iter()
            .position(|d| n.starts_with(d))
            .ok_or_else(|| format!("\"{n}\" is not a day of the week"))
    };
    let mut days = vec![];
    for item in v.split(',') {
        match item.split_once("..") {
            Some((a, b)) => {
                let (mut i, j) = (idx(a)?, idx(b)?);
                loop {
                    days.push(DAYS[i]);
                    if i == j {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => days.push(DAYS[idx(item)?]),
        }
    }
    Ok(days.join(","))
}

/// An `OnCalendar=` value as a cron expression and an optional time zone.
pub(super) fn calendar(v: &str) -> Result<(String, Option<String>), String> {
    let short = match v.trim().to_ascii_lowercase().as_str() {
        "minutely" => Some("* * * * *"),
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * mon"),
        "monthly" => Some("0 0 1 * *"),
        "yearly" | "annually" => Some("0 0 1 1 *"),
        "quarterly" => Some("0 0 1 1,4,7,10 *"),
        "semiannually" => Some("0 0 1 1,7 *"),
        _ => None,
    };
    if let Some(s) = short {
        return Ok((s.into(), None));
    }
    let (mut dow, mut date, mut time, mut zone) = ("*".to_string(), None, None, None);
    for (i, tok) in v.split_whitespace().enumerate() {
        if tok.contains(':') {
            time = Some(tok);
        } else if tok.contains('-') && tok.starts_with(|c: char| c.is_ascii_digit() || c == '*') {
            date = Some(tok);
        } else if i == 0
            && tok.starts_with(|c: char| c.is_ascii_alphabetic())
            && weekdays(tok).is_ok()
        {
            dow = weekdays(tok)?;
        } else {
            zone = Some(tok.to_string());
        }
    }
    let (mut month, mut day) = ("*".to_string(), "*".to_string());
    if let Some(d) = date {
        let parts: Vec<&str> = d.split('-').collect();
        let (y, m, dd) = match parts.as_slice() {
            [y, m, dd] => (*y, *m, *dd),
            [m, dd] => ("*", *m, *dd),
            _ => return Err(format!("date \"{d}\" is not YEAR-MONTH-DAY")),
        };
        if y != "*" {
            return Err(format!(
                "year \"{y}\": a job for given years has no cron form"
            ));
        }
        month = field(m, "month")?;
        day = field(dd, "day")?;
    }
    let (mut hour, mut minute) = ("0".to_string(), "0".to_string());
    if let Some(t) = time {
        let parts: Vec<&str> = t.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h, m] => (*h, *m, "00"),
            [h, m, s] => (*h, *m, *s),
            _ => return Err(format!("time \"{t}\" is not HOUR:MINUTE[:SECOND]")),
        };
        if !s.trim_start_matches('0').is_empty() {
            return Err(format!("seconds \"{s}\": cron runs on whole minutes"));
        }
        hour = field(h, "hour")?;
        minute = field(m, "minute")?;
    }
    if dow != "*" && day != "*" {
        // systemd wants both to match, cron either one.
        return Err(format!(
            "weekday \"{dow}\" and day \"{day}\" together: systemd runs when both match, cron when either does, so cron cannot say it"
        ));
    }
    let cron = format!("{minute} {hour} {day} {month} {dow}");
    Cron::parse(&cron).map_err(|e| format!("as cron \"{cron}\": {e}"))?;
    Ok((cron, zone))
}

pub(super) fn convert(file: &str, src: &str, dir: &Path) -> Result<Import, String> {
    let unit = file.strip_suffix(".timer").unwrap_or(file);
    let mut service = format!("{unit}.service");
    let mut notes = vec![];
    let mut note = |line: usize, section: &str, k: &str, why: String| {
        notes.push(Note {
            line,
            key: format!("[{section}] {k}"),
            why,
        })
    };
    let mut trigger: Option<(usize, &str, String)> = None;
    let mut catch_up = false;
    let mut section = "";
    for (i, l) in src.lines().enumerate() {
        let (ln, l) = (i + 1, l.trim());
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(h) = l.strip_prefix('[') {
            section = h.trim_end_matches(']');
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return Err(format!("line {ln}: expected Key=value, found {l:?}"));
        };
        let (k, v) = (k.trim(), v.trim());
        match (section, k) {
            ("Timer", "OnCalendar" | "OnUnitActiveSec" | "OnUnitInactiveSec") if trigger.is_some() => {
                note(ln, section, k, "not mapped: a paddock job has one schedule; the first trigger was kept".into());
            }
            ("Timer", "OnCalendar") => trigger = Some((ln, "schedule", v.to_string())),
            ("Timer", "OnUnitActiveSec" | "OnUnitInactiveSec") => {
                note(ln, section, k, "mapped to `every`: paddock's periods are on a fixed grid (multiples since the Unix epoch), not counted from the last run".into());
                trigger = Some((ln, "every", v.to_string()));
            }
            ("Timer", "Persistent") => catch_up = matches!(v, "true" | "yes" | "1" | "on"),
            ("Timer", "Unit") => service = v.to_string(),
            ("Timer", "OnBootSec" | "OnStartupSec" | "OnActiveSec") => note(ln, section, k, "not mapped: paddock runs a job at times or periods, not once after boot; an autostart app that sleeps first does that".into()),
            ("Timer", "AccuracySec" | "RandomizedDelaySec" | "FixedRandomDelay") => note(ln, section, k, "not mapped: paddock starts runs on time; spread jobs by giving them different minutes".into()),
            ("Timer", "WakeSystem") => note(ln, section, k, "not mapped: paddock does not wake a suspended host (after a resume, one run starts within a minute)".into()),
            ("Unit", _) => {}
            ("Install", _) => note(ln, section, k, "not needed: a job in paddock's app directory is scheduled when paddock loads it".into()),
            (s, k) => note(ln, s, k, "not mapped: paddock has no such setting".into()),
        }
    }
    let Some((ln, kind, value)) = trigger else {
        return Err("no OnCalendar, OnUnitActiveSec or OnUnitInactiveSec in [Timer]: nothing says when the job runs".into());
    };
    let path = dir.join(&service);
    let svc_src = crate::util::read_regular_text(&path, 1 << 20)
        .map_err(|e| format!("{service} (the unit this timer starts, beside it): {e}"))?;
    let mut imp = systemd::convert(&service, &svc_src)?;
    for n in &mut imp.notes {
        n.key = format!("{service} {}", n.key);
    }
    let Some(a) = imp.apps.first_mut() else {
        return Err(format!("{service}: no app"));
    };
    a.origin = format!("{file} and {}", a.origin);
    let mut timer_note = |why: String| {
        notes.push(Note {
            line: ln,
            key: format!(
                "[Timer] {}",
                if kind == "every" {
                    "OnUnitActiveSec"
                } else {
                    "OnCalendar"
                }
            ),
            why,
        })
    };
    if kind == "schedule" {
        match calendar(&value) {
            Ok((cron, zone)) => {
                a.set("schedule", q(&cron));
                if let Some(z) = zone {
                    a.set("timezone", q(&z));
                }
                timer_note(format!(
                    "mapped to schedule = \"{cron}\" (UTC unless a zone was given: add timezone = \"local\" for the host's time)"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "line {ln}: OnCalendar={value}: {e}; write the job's schedule by hand (docs/migrating.md)"
                ));
            }
        }
    } else {
        match systemd::span(&value) {
            Some(d) => a.set("every", d),
            None => return Err(format!("line {ln}: {value:?} is not a time span")),
        }
    }
    if catch_up {
        a.set("catch_up", "true".into());
    }
    // What a scheduled app cannot have.
    if a.remove_table("readiness") {
        timer_note("the service's readiness (Type=notify, WatchdogSec) was dropped: nothing waits for a job to be ready".into());
    }
    if a.get_in("restart", "policy") == Some(&q("always")) {
        a.set_in("restart", "policy", q("on-failure"));
        timer_note(
            "Restart=always became on-failure: a job that ended well waits for its next time"
                .into(),
        );
    }
    imp.notes.extend(notes);
    imp.notes.sort_by_key(|n| n.line);
    Ok(imp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendars() {
        let c = |v: &str| calendar(v).map(|(c, z)| (c, z.unwrap_or_default()));
        assert_eq!(c("daily").unwrap().0, "0 0 * * *");
        assert_eq!(c("weekly").unwrap().0, "0 0 * * mon");
        assert_eq!(c("*-*-* 03:30:00").unwrap().0, "30 3 * * *");
        assert_eq!(
            c("Mon..Fri *-*-* 04:00").unwrap().0,
            "0 4 * * mon,tue,wed,thu,fri"
        );
        assert_eq!(c("Sat..Sun 12:00").unwrap().0, "0 12 * * sat,sun");
        assert_eq!(c("*:0/15").unwrap().0, "0/15 * * * *");
        assert_eq!(c("*-*-01 00:00:00").unwrap().0, "0 0 1 * *");
        assert_eq!(c("*-01,07-01 06:00").unwrap().0, "0 6 1 1,7 *");
        assert_eq!(
            c("*-*-* 02:00 Europe/Paris").unwrap(),
            ("0 2 * * *".into(), "Europe/Paris".into())
        );
        assert!(c("2027-01-01 00:00").unwrap_err().contains("year"));
        assert!(c("*-*-* 00:00:30").unwrap_err().contains("seconds"));
        assert!(c("*-02~03").unwrap_err().contains("~"));
        assert!(c("*-*-* 25:00").unwrap_err().contains("out of range"));
        // Friday the 13th: both must match in systemd, either one in cron.
        assert!(
            c("Fri *-*-13 00:00")
                .unwrap_err()
                .contains("cron cannot say it")
        );
        assert!(c("Mon *-*-1..7 09:00").is_err());
    }

    #[test]
    fn a_timer_and_its_service_become_a_job() {
        let d = crate::util::TestDir::new("import-timer");
        std::fs::write(
            d.path().join("backup.service"),
            "[Service]\nType=oneshot\nExecStart=/usr/bin/backup --all\n",
        )
        .unwrap();
        let timer = "[Unit]\nDescription=nightly\n[Timer]\nOnCalendar=Mon..Fri *-*-* 03:30:00\nPersistent=true\nRandomizedDelaySec=5m\n[Install]\nWantedBy=timers.target\n";
        let i = convert("backup.timer", timer, d.path()).unwrap();
        let t = i.apps[0].to_toml();
        for want in [
            "command = [\"/usr/bin/backup\", \"--all\"]",
            "schedule = \"30 3 * * mon,tue,wed,thu,fri\"",
            "catch_up = true",
            "policy = \"never\"",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        let keys: Vec<&str> = i.notes.iter().map(|n| n.key.as_str()).collect();
        assert!(keys.contains(&"[Timer] RandomizedDelaySec"), "{keys:?}");
        assert!(keys.contains(&"[Install] WantedBy"), "{keys:?}");
        let t2 = convert(
            "tick.timer",
            "[Timer]\nOnUnitActiveSec=15min\nUnit=backup.service\n",
            d.path(),
        )
        .unwrap();
        assert!(t2.apps[0].to_toml().contains("every = \"900s\""));
        assert!(convert("x.timer", "[Timer]\nOnBootSec=5m\n", d.path()).is_err());
        let e = convert("gone.timer", "[Timer]\nOnCalendar=daily\n", d.path()).unwrap_err();
        assert!(e.contains("gone.service"), "{e}");
    }
}
