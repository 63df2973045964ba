//! `[[listen]]`: sockets paddock binds for a native app and hands over with the systemd
//! protocol (`LISTEN_FDS`, see `crate::listen`), and the keys of on-demand start.
//!
//! ```toml
//! start = "on-connection"      # not started until the first connection (default "auto")
//! idle_stop = "10m"            # stopped after this long without a connection
//! [[listen]]
//! address = "127.0.0.1:8080"   # or a Unix socket path: "/run/app.sock"
//! name = "http"                # its LISTEN_FDNAMES entry (default: the app's name)
//! [[listen]]
//! address = "/run/app.sock"
//! mode = "0660"                # a Unix socket file's permissions (default 0666)
//! owner = "www-data:www-data"  # and its owner (default: paddock's user)
//! ```

use super::units::Dur;
use super::{FileCtx, Identity, Isolation};
use crate::listen::Addr;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

/// At most this many sockets per app (descriptors 3 .. 3 + MAX_LISTEN in the app).
pub const MAX_LISTEN: usize = 16;

/// One socket of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenSpec {
    pub addr: Addr,
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// A Unix socket file's mode and owner (uid, gid).
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    address: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    mode: Option<Spanned<toml::Value>>,
    owner: Option<Spanned<String>>,
}

/// `start`: when the app starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Start {
    /// With paddock (or when its dependencies are ready): `autostart` decides.
    Auto,
    /// At the first connection on its sockets.
    OnConnection,
}

pub(super) struct Parsed {
    pub listen: Vec<ListenSpec>,
    pub on_demand: bool,
    pub idle_stop: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn parse(
    cx: &mut FileCtx,
    app: &str,
    raw: Option<&Spanned<Vec<RawListen>>>,
    start: Option<&Spanned<String>>,
    idle_stop: Option<&Spanned<Dur>>,
    autostart: Option<bool>,
    isolation: Isolation,
    readiness_fd: Option<i32>,
) -> Parsed {
    let mut listen: Vec<ListenSpec> = vec![];
    if let Some(raw) = raw {
        if isolation == Isolation::Wasm {
            cx.err_at(
                Some(raw.span()),
                "listen",
                "[[listen]] hands sockets to a native process (levels none, bundle, sandbox); a wasm app served per request listens with [http] listen = [...]",
            );
        } else if raw.get_ref().len() > MAX_LISTEN {
            cx.err_at(
                Some(raw.span()),
                "listen",
                format!(
                    "{} sockets; an app gets at most {MAX_LISTEN}",
                    raw.get_ref().len()
                ),
            );
        } else {
            for (i, l) in raw.get_ref().iter().enumerate() {
                if let Some(s) = one(cx, app, i, l, raw.span(), &listen) {
                    listen.push(s);
                }
            }
        }
    }
    let on_demand = match start.map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "auto")) => false,
        Some((s, "on-connection")) => {
            if listen.is_empty() && raw.is_none() {
                cx.err_at(
                    Some(s.span()),
                    "start",
                    "\"on-connection\" starts the app at the first connection on its sockets: add a [[listen]] table with the address",
                );
            }
            if autostart == Some(true) {
                cx.err_at(
                    Some(s.span()),
                    "start",
                    "\"on-connection\" and autostart = true contradict each other: remove autostart",
                );
            }
            true
        }
        Some((s, other)) => {
            cx.err_at(
                Some(s.span()),
                "start",
                format!("unknown value \"{other}\"; expected \"auto\" or \"on-connection\""),
            );
            false
        }
    };
    let idle = idle_stop.and_then(|d| {
        if !on_demand {
            cx.err_at(
                Some(d.span()),
                "idle_stop",
                "stops an app started on demand once it is idle: it needs start = \"on-connection\"",
            );
            return None;
        }
        if d.get_ref().0 < Duration::from_millis(100) {
            cx.err_at(
                Some(d.span()),
                "idle_stop",
                "must be at least 100ms",
            );
            return None;
        }
        Some(d.get_ref().0)
    });
    if let Some(fd) = readiness_fd
        && !listen.is_empty()
        && (3..3 + listen.len() as i32).contains(&fd)
    {
        cx.err_at(
            None,
            "readiness.notify_fd",
            format!(
                "descriptor {fd} is one of the [[listen]] sockets (3 to {}): use {} or higher",
                2 + listen.len(),
                3 + listen.len()
            ),
        );
    }
    Parsed {
        listen,
        on_demand,
        idle_stop: idle,
    }
}

fn one(
    cx: &mut FileCtx,
    app: &str,
    i: usize,
    l: &RawListen,
    table: std::ops::Range<usize>,
    before: &[ListenSpec],
) -> Option<ListenSpec> {
    let Some(a) = &l.address else {
        cx.err_at(
            Some(table),
            "listen.address",
            format!("missing in [[listen]] number {}: give a TCP address (\"127.0.0.1:8080\") or a Unix socket path (\"/run/{app}.sock\")", i + 1),
        );
        return None;
    };
    let addr = match Addr::parse(a.get_ref()) {
        Ok(addr) => addr,
        Err(e) => {
            cx.err_at(Some(a.span()), "listen.address", e);
            return None;
        }
    };
    if before.iter().any(|b| b.addr == addr) {
        cx.err_at(
            Some(a.span()),
            "listen.address",
            format!("{addr} is listed twice"),
        );
        return None;
    }
    let name = match &l.name {
        None => app.to_string(),
        Some(n) => {
            let s = n.get_ref();
            if s.is_empty()
                || s.len() > 255
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                cx.err_at(
                    Some(n.span()),
                    "listen.name",
                    format!("\"{s}\" is not a descriptor name: 1 to 255 letters, digits, '-', '_', '.' (it goes into LISTEN_FDNAMES, where ':' separates names)"),
                );
                return None;
            }
            s.clone()
        }
    };
    let unix = matches!(addr, Addr::Unix(_));
    let mut mode = 0o666;
    if let Some(m) = &l.mode {
        let parsed = match m.get_ref() {
            toml::Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
            toml::Value::Integer(n) => u32::try_from(*n).ok(),
            _ => None,
        };
        match parsed {
            Some(v) if v <= 0o777 && unix => mode = v,
            _ if !unix => {
                cx.err_at(
                    Some(m.span()),
                    "listen.mode",
                    "is for a Unix socket file; a TCP socket has no mode",
                );
                return None;
            }
            _ => {
                cx.err_at(
                    Some(m.span()),
                    "listen.mode",
                    "must be permission bits in octal, as in mode = \"0660\"",
                );
                return None;
            }
        }
    }
    let owner = match &l.owner {
        None => None,
        Some(o) if !unix => {
            cx.err_at(
                Some(o.span()),
                "listen.owner",
                "is for a Unix socket file; a TCP socket has no owner",
            );
            return None;
        }
        Some(o) => {
            let (u, g) = match o.get_ref().split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (o.get_ref().as_str(), None),
            };
            let user = Spanned::new(o.span(), u.to_string());
            let group = g.map(|g| Spanned::new(o.span(), g.to_string()));
            let mut sub = FileCtx {
                file: cx.file,
                src: cx.src,
                errors: vec![],
                removed: vec![],
                instance: cx.instance,
            };
            let id: Option<Identity> =
                super::parse::resolve_identity(&mut sub, Some(&user), group.as_ref());
            if !sub.errors.is_empty() {
                for mut e in sub.errors {
                    e.message = format!(
                        "key `listen.owner`: {}",
                        e.message
                            .trim_start_matches(|c| c != ':')
                            .trim_start_matches(": ")
                    );
                    cx.errors.push(e);
                }
                return None;
            }
            id.map(|i| (i.uid, i.gid))
        }
    };
    Some(ListenSpec {
        addr,
        name,
        mode,
        owner,
    })
}
