//! The keys of a scheduled app: `schedule` (a cron expression) or `every` (a period),
//! `timezone`, `overlap`, `catch_up`, and how they combine with the other keys. A scheduled app
//! runs to completion at its times: it is not started at boot, is not restarted when it ends
//! well, and nothing waits for it to be ready. See docs/config.md#scheduled-apps.

use super::{FileCtx, Isolation, RestartPolicy};
use crate::schedule::{Cron, Overlap, Rule, ScheduleSpec, Zone};
use crate::units::Dur;
use std::time::Duration;
use toml::Spanned;

/// The shortest `every`.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// The keys as written, with the others a schedule constrains.
pub(super) struct Keys<'a> {
    pub schedule: Option<&'a Spanned<String>>,
    pub every: Option<&'a Spanned<Dur>>,
    pub timezone: Option<&'a Spanned<String>>,
    pub overlap: Option<&'a Spanned<String>>,
    pub catch_up: Option<&'a Spanned<bool>>,
    pub autostart: Option<&'a Spanned<bool>>,
    pub policy: Option<&'a Spanned<RestartPolicy>>,
    pub readiness: Option<std::ops::Range<usize>>,
    pub listen: Option<std::ops::Range<usize>>,
    pub start: Option<&'a Spanned<String>>,
    pub http: Option<std::ops::Range<usize>>,
    pub isolation: Isolation,
}

const ONLY_WITH: &str = "is only used with `schedule` or `every` (a scheduled app)";

/// The app's schedule, or None (not scheduled, or an error reported).
pub(super) fn parse(cx: &mut FileCtx, k: &Keys) -> Option<ScheduleSpec> {
    let rule = match (k.schedule, k.every) {
        (None, None) => {
            for (key, span) in [
                ("timezone", k.timezone.map(|s| s.span())),
                ("overlap", k.overlap.map(|s| s.span())),
                ("catch_up", k.catch_up.map(|s| s.span())),
            ] {
                if span.is_some() {
                    cx.err_at(span, key, ONLY_WITH);
                }
            }
            return None;
        }
        (Some(_), Some(e)) => {
            cx.err_at(
                Some(e.span()),
                "every",
                "`schedule` and `every` both say when the app runs: keep one",
            );
            None
        }
        (Some(s), None) => match Cron::parse(s.get_ref()) {
            Ok(c) => Some((Rule::Cron(c), s.get_ref().trim().to_string())),
            Err(e) => {
                cx.err_at(Some(s.span()), "schedule", e);
                None
            }
        },
        (None, Some(e)) => {
            let d = e.get_ref().0;
            if d < MIN_EVERY {
                cx.err_at(Some(e.span()), "every", "must be at least 1s");
                None
            } else {
                // As written ("1h", not "60m").
                let written = cx.src.get(e.span()).map(|t| t.trim_matches(['"', '\'']));
                let text = match written {
                    Some(w) if !w.is_empty() => format!("every {w}"),
                    _ => format!("every {}", crate::units::format_duration(d)),
                };
                Some((Rule::Every(d), text))
            }
        }
    };
    let timezone = match k.timezone {
        None => Some(Zone::utc()),
        Some(t) if k.schedule.is_none() => {
            cx.err_at(
                Some(t.span()),
                "timezone",
                "applies to `schedule` only: `every` counts from the Unix epoch (00:00 UTC), whatever the zone",
            );
            None
        }
        Some(t) => match Zone::parse(t.get_ref()) {
            Ok(z) => Some(z),
            Err(e) => {
                cx.err_at(Some(t.span()), "timezone", e);
                None
            }
        },
    };
    let overlap = match k.overlap.map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "skip")) => Overlap::Skip,
        Some((_, "queue")) => Overlap::Queue,
        Some((o, other)) => {
            cx.err_at(
                Some(o.span()),
                "overlap",
                format!("unknown value \"{other}\"; expected \"skip\" (the default: a run due while one is under way is skipped) or \"queue\" (it runs when that one ends)"),
            );
            Overlap::Skip
        }
    };
    // What a scheduled app cannot be.
    if let Some(a) = k.autostart.filter(|a| *a.get_ref()) {
        cx.err_at(
            Some(a.span()),
            "autostart",
            "a scheduled app starts at its times, not at boot: remove autostart (`paddock start NAME` runs it now)",
        );
    }
    if let Some(p) = k.policy.filter(|p| *p.get_ref() == RestartPolicy::Always) {
        cx.err_at(
            Some(p.span()),
            "restart.policy",
            "\"always\" would start a scheduled app again as soon as its run ends: use \"on-failure\" (the default: a failed run is retried with backoff, up to max_failures) or \"never\"",
        );
    }
    if k.readiness.is_some() {
        cx.err_at(
            k.readiness.clone(),
            "readiness",
            "a scheduled app runs to completion and nothing waits for it to be ready: remove [readiness] (a [health] check can still watch a long run)",
        );
    }
    if k.listen.is_some() {
        cx.err_at(
            k.listen.clone(),
            "listen",
            "[[listen]] hands sockets to a long-running server; a scheduled app is started by its schedule, not by connections",
        );
    }
    if let Some(s) = k.start.filter(|s| s.get_ref() != "auto") {
        cx.err_at(
            Some(s.span()),
            "start",
            "a scheduled app is started by its schedule: remove `start`",
        );
    }
    if k.http.is_some() && k.isolation == Isolation::Wasm {
        cx.err_at(
            k.http.clone(),
            "http",
            "an [http] app is served per request and never runs to completion: a scheduled wasm app is a command module (remove [http] or the schedule)",
        );
    }
    let (rule, text) = rule?;
    Some(ScheduleSpec {
        text,
        rule,
        timezone: timezone?,
        overlap,
        catch_up: k.catch_up.is_some_and(|c| *c.get_ref()),
    })
}

/// Apps that wait for a scheduled app (`after`, `requires`): it is up only during its runs, so
/// they would start only then and stop after each. Every such dependency is an error.
pub(super) fn check_deps(
    apps: &std::collections::BTreeMap<String, super::AppSpec>,
) -> Vec<super::ConfigError> {
    let scheduled = |name: &str| {
        apps.get(name)
            .or_else(|| {
                apps.values()
                    .find(|a| a.instance.as_ref().is_some_and(|i| i.group == name))
            })
            .is_some_and(|a| a.schedule.is_some())
    };
    let mut errors = vec![];
    for a in apps
        .values()
        .filter(|a| a.instance.as_ref().is_none_or(|i| i.index == 0))
    {
        for (key, deps, line) in [
            ("after", &a.after, a.deps_line.0[0]),
            ("requires", &a.requires, a.deps_line.0[1]),
        ] {
            for d in deps.iter().filter(|d| scheduled(d)) {
                errors.push(super::ConfigError {
                    file: a.file.clone(),
                    line,
                    col: 1,
                    message: format!("key `{key}`: \"{d}\" is a scheduled app: it is up only while a run is under way, so nothing can wait for it; remove it from `{key}`"),
                });
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn errs(src: &str) -> Vec<String> {
        parse_app("job", Path::new("/apps/job.toml"), src)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn schedule_keys() {
        let a = parse_app(
            "job",
            Path::new("/apps/job.toml"),
            "command = [\"/bin/true\"]\nschedule = \"*/5 * * * *\"\noverlap = \"queue\"\ncatch_up = true\n",
        )
        .unwrap();
        let s = a.schedule.unwrap();
        assert_eq!(s.text, "*/5 * * * *");
        assert_eq!(s.overlap, crate::schedule::Overlap::Queue);
        assert!(s.catch_up && !a.autostart);
        assert_eq!(s.timezone.name, "UTC");
        let a = parse_app(
            "job",
            Path::new("/apps/job.toml"),
            "command = [\"/bin/true\"]\nevery = \"15m\"\nautostart = false\n[restart]\npolicy = \"never\"\n",
        )
        .unwrap();
        assert_eq!(a.schedule.unwrap().text, "every 15m");
        assert!(!a.autostart);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let e = errs("command = [\"/bin/true\"]\nschedule = \"0 25 * * *\"\n");
        assert_eq!(
            e,
            ["/apps/job.toml:2:12: key `schedule`: field 2 (hour) \"25\" is out of range 0-23"]
        );
        let e = errs(
            "command = [\"/bin/true\"]\nschedule = \"@daily\"\nevery = \"1m\"\nautostart = true\noverlap = \"never\"\ntimezone = \"Nowhere/Land\"\n[restart]\npolicy = \"always\"\n[readiness]\nnotify = true\n",
        );
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(
            e[0].contains(":3:9: key `every`: `schedule` and `every`"),
            "{e:#?}"
        );
        assert!(
            e[1].contains(":4:13: key `autostart`: a scheduled app starts at its times"),
            "{e:#?}"
        );
        assert!(
            e[2].contains(":5:11: key `overlap`: unknown value \"never\""),
            "{e:#?}"
        );
        assert!(
            e[3].contains(":6:12: key `timezone`: unknown time zone \"Nowhere/Land\""),
            "{e:#?}"
        );
        assert!(
            e[4].contains(":8:10: key `restart.policy`: \"always\""),
            "{e:#?}"
        );
        assert!(
            e[5].contains("key `readiness`: a scheduled app runs to completion"),
            "{e:#?}"
        );
        let e = errs("command = [\"/bin/true\"]\nevery = \"500ms\"\ntimezone = \"UTC\"\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].contains("key `every`: must be at least 1s"), "{e:#?}");
        assert!(
            e[1].contains("key `timezone`: applies to `schedule` only"),
            "{e:#?}"
        );
        let e = errs("command = [\"/bin/true\"]\nevery = \"soon\"\n");
        assert!(e[0].contains(":2:9: key `every`"), "{e:#?}");
        let e = errs("command = [\"/bin/true\"]\noverlap = \"skip\"\ncatch_up = true\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains("key `overlap`: is only used with `schedule` or `every`"),
            "{e:#?}"
        );
        let e = errs(
            "command = [\"/bin/true\"]\nevery = \"1m\"\nstart = \"on-connection\"\n[[listen]]\naddress = \"tcp://127.0.0.1:0\"\n",
        );
        assert!(
            e.iter()
                .any(|e| e.contains("key `start`: a scheduled app is started by its schedule")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("key `listen`: [[listen]] hands sockets")),
            "{e:#?}"
        );
    }

    #[test]
    fn nothing_may_wait_for_a_scheduled_app() {
        let d = crate::util::TestDir::new("sched-deps");
        std::fs::write(
            d.path().join("job.toml"),
            "command = [\"/bin/true\"]\nevery = \"1m\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("web.toml"),
            "command = [\"/bin/true\"]\nafter = [\"job\"]\n",
        )
        .unwrap();
        let e = load_dirs(&[d.path().to_path_buf()]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].to_string()
                .contains("web.toml:2:1: key `after`: \"job\" is a scheduled app"),
            "{e:#?}"
        );
    }
}
