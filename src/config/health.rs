//! `[readiness]`, `[health]` and the ordering keys (`after`, `requires`, `essential`): parsing,
//! validation, and the dependency graph checks across apps (unknown names, cycles).

use super::FileCtx;
use super::units::Dur;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

/// When an app counts as READY.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReadyWhen {
    /// As soon as the process runs.
    Running,
    /// `READY=1` on `$NOTIFY_SOCKET` (sd_notify).
    Notify,
    /// A newline written to this descriptor (s6 style).
    Fd { fd: i32 },
    /// The first passing health check.
    Health,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadinessSpec {
    pub when: ReadyWhen,
    pub timeout: Duration,
    /// Restart the app when it sends no `WATCHDOG=1` for this long.
    pub watchdog: Option<Duration>,
}

impl Default for ReadinessSpec {
    fn default() -> Self {
        ReadinessSpec {
            when: ReadyWhen::Running,
            timeout: Duration::from_secs(60),
            watchdog: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Probe {
    Exec {
        command: Vec<String>,
    },
    Tcp {
        address: String,
    },
    Http {
        host: String,
        port: u16,
        path: String,
        expect_body: Option<String>,
    },
    /// A wasm app's exported `health` function (0 = healthy), called in a fresh instance.
    Wasm,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub failures: u32,
    pub successes: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    notify: Option<bool>,
    notify_fd: Option<Spanned<i64>>,
    health: Option<bool>,
    timeout: Option<Dur>,
    watchdog: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) kind: Spanned<String>,
    command: Option<Spanned<Vec<String>>>,
    address: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    expect_body: Option<String>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    start_period: Option<Dur>,
    failures: Option<Spanned<u32>>,
    successes: Option<Spanned<u32>>,
}

pub(super) fn readiness(
    cx: &mut FileCtx,
    raw: Option<&Spanned<RawReadiness>>,
    has_health: bool,
) -> ReadinessSpec {
    let mut spec = ReadinessSpec::default();
    let Some(raw_sp) = raw else { return spec };
    let r = raw_sp.get_ref();
    let mut modes = vec![];
    if r.notify == Some(true) {
        modes.push("notify");
        spec.when = ReadyWhen::Notify;
    }
    if let Some(fd) = &r.notify_fd {
        modes.push("notify_fd");
        let n = *fd.get_ref();
        if !(3..=1023).contains(&n) {
            cx.err_at(
                Some(fd.span()),
                "readiness.notify_fd",
                "must be a descriptor number from 3 to 1023 (0, 1, 2 are stdio)",
            );
        }
        spec.when = ReadyWhen::Fd { fd: n as i32 };
    }
    if r.health == Some(true) {
        modes.push("health");
        spec.when = ReadyWhen::Health;
        if !has_health {
            cx.err_at(
                Some(raw_sp.span()),
                "readiness.health",
                "needs a [health] section: the app is ready when its health check first passes",
            );
        }
    }
    if modes.len() > 1 {
        cx.err_at(
            Some(raw_sp.span()),
            "readiness",
            format!(
                "choose one way to signal readiness, not {}",
                modes.join(" and ")
            ),
        );
    }
    if let Some(t) = r.timeout {
        spec.timeout = t.0;
    }
    if let Some(w) = r.watchdog {
        if spec.when != ReadyWhen::Notify {
            cx.err_at(
                Some(raw_sp.span()),
                "readiness.watchdog",
                "WATCHDOG=1 arrives on the notify socket: set notify = true as well",
            );
        }
        if !w.0.is_zero() {
            spec.watchdog = Some(w.0);
        }
    }
    spec
}

/// Splits `http://host:port/path` (plain HTTP only: health endpoints are local).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            "https is not supported for health checks; probe the plain HTTP port or use kind = \"exec\" with curl".to_string()
        } else {
            format!("\"{url}\" is not an http:// URL")
        }
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("invalid port \"{p}\" in \"{url}\""))?,
        ),
        _ => (hostport.trim_matches(['[', ']']).to_string(), 80),
    };
    if host.is_empty() {
        return Err(format!("no host in \"{url}\""));
    }
    Ok((host, port, path.to_string()))
}

pub(super) fn health(cx: &mut FileCtx, raw: Option<&RawHealth>) -> Option<HealthSpec> {
    let h = raw?;
    let probe = match h.kind.get_ref().as_str() {
        "exec" => match &h.command {
            Some(c) if !c.get_ref().is_empty() && !c.get_ref()[0].is_empty() => {
                if let Err(e) = super::resolve_program(&c.get_ref()[0], None, None) {
                    cx.err_at(Some(c.span()), "health.command", e);
                }
                Probe::Exec {
                    command: c.get_ref().clone(),
                }
            }
            Some(c) => {
                cx.err_at(Some(c.span()), "health.command", "is empty");
                return None;
            }
            None => {
                cx.err_at(
                    Some(h.kind.span()),
                    "health.command",
                    "missing: kind = \"exec\" runs a command, e.g. command = [\"pg_isready\"]",
                );
                return None;
            }
        },
        "tcp" => match &h.address {
            Some(a) => {
                if a.get_ref()
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    cx.err_at(
                        Some(a.span()),
                        "health.address",
                        format!(
                            "\"{}\" is not host:port, e.g. \"127.0.0.1:6379\"",
                            a.get_ref()
                        ),
                    );
                }
                Probe::Tcp {
                    address: a.get_ref().clone(),
                }
            }
            None => {
                cx.err_at(Some(h.kind.span()), "health.address", "missing: kind = \"tcp\" connects to an address, e.g. address = \"127.0.0.1:6379\"");
                return None;
            }
        },
        "http" => match &h.url {
            Some(u) => match parse_url(u.get_ref()) {
                Ok((host, port, path)) => Probe::Http {
                    host,
                    port,
                    path,
                    expect_body: h.expect_body.clone(),
                },
                Err(e) => {
                    cx.err_at(Some(u.span()), "health.url", e);
                    return None;
                }
            },
            None => {
                cx.err_at(Some(h.kind.span()), "health.url", "missing: kind = \"http\" fetches a URL, e.g. url = \"http://127.0.0.1:8080/healthz\"");
                return None;
            }
        },
        "wasm" => Probe::Wasm,
        other => {
            cx.err_at(
                Some(h.kind.span()),
                "health.kind",
                format!(
                    "unknown kind \"{other}\"; expected \"exec\", \"tcp\", \"http\" or \"wasm\""
                ),
            );
            return None;
        }
    };
    let extra = match &probe {
        Probe::Exec { .. } => [
            h.address.as_ref().map(|_| "address"),
            h.url.as_ref().map(|_| "url"),
        ],
        Probe::Tcp { .. } => [
            h.command.as_ref().map(|_| "command"),
            h.url.as_ref().map(|_| "url"),
        ],
        Probe::Http { .. } => [
            h.command.as_ref().map(|_| "command"),
            h.address.as_ref().map(|_| "address"),
        ],
        Probe::Wasm => [
            h.command.as_ref().map(|_| "command"),
            h.address.as_ref().or(h.url.as_ref()).map(|_| "address/url"),
        ],
    };
    for k in extra.into_iter().flatten() {
        cx.err_at(
            Some(h.kind.span()),
            &format!("health.{k}"),
            format!("does not apply to kind = \"{}\"", h.kind.get_ref()),
        );
    }
    let mut spec = HealthSpec {
        probe,
        interval: h.interval.map_or(Duration::from_secs(10), |d| d.0),
        timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
        start_period: h.start_period.map_or(Duration::ZERO, |d| d.0),
        failures: 3,
        successes: 1,
    };
    for (v, key, slot) in [
        (&h.failures, "health.failures", &mut spec.failures),
        (&h.successes, "health.successes", &mut spec.successes),
    ] {
        if let Some(n) = v {
            if *n.get_ref() == 0 {
                cx.err_at(Some(n.span()), key, "must be at least 1");
            }
            *slot = *n.get_ref();
        }
    }
    if spec.interval < Duration::from_millis(10) {
        cx.err_at(
            Some(h.kind.span()),
            "health.interval",
            "must be at least 10ms",
        );
    }
    if spec.timeout.is_zero() {
        cx.err_at(
            Some(h.kind.span()),
            "health.timeout",
            "must be more than 0s",
        );
    }
    Some(spec)
}

pub use super::graph::check_graph;

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn parse(name: &str, src: &str) -> Result<AppSpec, Vec<ConfigError>> {
        parse_app(name, Path::new(&format!("/apps/{name}.toml")), src)
    }

    #[test]
    fn readiness_and_health_keys() {
        let a = parse("a", "command = [\"/bin/true\"]\n[readiness]\nnotify = true\nwatchdog = \"5s\"\ntimeout = \"3s\"\n").unwrap();
        assert_eq!(a.readiness.when, ReadyWhen::Notify);
        assert_eq!(a.readiness.watchdog, Some(Duration::from_secs(5)));
        let a = parse(
            "a",
            "command = [\"/bin/true\"]\n[readiness]\nnotify_fd = 3\n",
        )
        .unwrap();
        assert_eq!(a.readiness.when, ReadyWhen::Fd { fd: 3 });
        let a = parse("a", "command = [\"/bin/true\"]\n[readiness]\nhealth = true\n[health]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/healthz\"\nexpect_body = \"ok\"\n").unwrap();
        let h = a.health.unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/healthz".into(),
                expect_body: Some("ok".into())
            }
        );
        assert_eq!(
            (h.interval, h.timeout, h.failures, h.successes),
            (Duration::from_secs(10), Duration::from_secs(2), 3, 1)
        );
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[readiness]\nhealth = true\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(
            e.contains("readiness.health") && e.contains("[health]"),
            "{e}"
        );
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[readiness]\nnotify = true\nnotify_fd = 4\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(e.contains("choose one"), "{e}");
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[readiness]\nnotify_fd = 1\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(e.contains(":3:13: key `readiness.notify_fd`"), "{e}");
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[health]\nkind = \"grpc\"\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(
            e.contains(":3:8: key `health.kind`: unknown kind \"grpc\""),
            "{e}"
        );
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[health]\nkind = \"tcp\"\naddress = \"localhost\"\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(
            e.contains("health.address") && e.contains("host:port"),
            "{e}"
        );
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[health]\nkind = \"http\"\nurl = \"https://x/\"\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(e.contains("https is not supported"), "{e}");
        let e = parse(
            "a",
            "command = [\"/bin/true\"]\n[health]\nkind = \"exec\"\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(e.contains("health.command") && e.contains("missing"), "{e}");
        let e = parse("a", "command = [\"/bin/true\"]\n[health]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nfailures = 0\n").unwrap_err()[0].to_string();
        assert!(e.contains("health.failures"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("http://[::1]:81/x?y").unwrap(),
            ("::1".into(), 81, "/x?y".into())
        );
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://x:99999/").is_err());
    }

    #[test]
    fn graph_errors_name_the_cycle() {
        let mk = |n: &str, after: &str| {
            parse(
                n,
                &format!("command = [\"/bin/true\"]\nafter = [{after}]\n"),
            )
            .unwrap()
        };
        let apps: BTreeMap<String, AppSpec> = [
            ("a", mk("a", "\"b\"")),
            ("b", mk("b", "\"c\"")),
            ("c", mk("c", "\"a\"")),
            ("d", mk("d", "\"a\"")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let e = check_graph(&apps);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].to_string()
                .contains("dependency cycle: a -> b -> c -> a"),
            "{}",
            e[0]
        );
        assert!(
            e[0].to_string().starts_with("/apps/a.toml:2:1:"),
            "{}",
            e[0]
        );
        let apps: BTreeMap<String, AppSpec> = [("a", mk("a", "\"zz\""))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert!(
            check_graph(&apps)[0]
                .to_string()
                .contains("depends on \"zz\", but no app has that name")
        );
        let apps: BTreeMap<String, AppSpec> = [("a", mk("a", "\"a\""))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert!(
            check_graph(&apps)[0]
                .to_string()
                .contains("cannot depend on itself")
        );
    }
}
