//! `[http]`: a wasm app whose module is a `wasi:http/incoming-handler` component, served by
//! paddock per request (see `driver::wasm::http`).
//!
//! ```toml
//! isolation = "wasm"
//! module = "http-hello.wasm"
//! [http]
//! listen = ["127.0.0.1:8080", "/run/hello.sock"]  # TCP addresses and Unix socket paths
//! max_concurrent = 64          # requests served at once; more wait (up to request_timeout)
//! request_timeout = "30s"      # a request still running then is interrupted: 504
//! reuse = 0                    # requests an instance may serve; 0 = a fresh one each (default)
//! failures = 5                 # this many failed requests in a row ...
//! failure_window = "10s"       # ... within this long end the app's run: restart policy
//! [limits]
//! memory = "32MiB"             # per request
//! ```

use super::FileCtx;
use super::units::Dur;
use crate::listen::Addr;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpSpec {
    pub listen: Vec<Addr>,
    pub max_concurrent: u32,
    pub request_timeout: Duration,
    /// Requests one instance may serve before it is dropped; 0 (default): a fresh instance per
    /// request.
    pub reuse: u32,
    pub failures: u32,
    pub failure_window: Duration,
}

pub const DEFAULT_MAX_CONCURRENT: u32 = 64;
pub const MAX_MAX_CONCURRENT: u32 = 4096;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_FAILURES: u32 = 5;
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<Spanned<toml::Value>>,
    max_concurrent: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<Dur>>,
    reuse: Option<Spanned<i64>>,
    failures: Option<Spanned<i64>>,
    failure_window: Option<Spanned<Dur>>,
}

/// Parses `[http]` of a wasm app (`kind` is the module's shape from its header).
pub(super) fn parse(
    cx: &mut FileCtx,
    raw: &Spanned<RawHttp>,
    kind: Option<super::wasm::inspect::Kind>,
    module: &str,
) -> Option<HttpSpec> {
    let r = raw.get_ref();
    let mut ok = true;
    if kind == Some(super::wasm::inspect::Kind::Core) {
        cx.err_at(
            Some(raw.span()),
            "http",
            format!("{module} is a WASI preview 1 core module: [http] needs a component exporting wasi:http/incoming-handler (built for wasm32-wasip2 with the wasi:http/proxy world)"),
        );
        ok = false;
    }
    let mut listen = vec![];
    match &r.listen {
        None => {
            cx.err_at(
                Some(raw.span()),
                "http.listen",
                "missing: give the addresses to serve, as in listen = [\"127.0.0.1:8080\"]",
            );
            ok = false;
        }
        Some(l) => match l.get_ref() {
            toml::Value::Array(items) if !items.is_empty() => {
                for it in items {
                    match it.as_str().map(Addr::parse) {
                        Some(Ok(a)) if listen.contains(&a) => {
                            cx.err_at(
                                Some(l.span()),
                                "http.listen",
                                format!("{a} is listed twice"),
                            );
                            ok = false;
                        }
                        Some(Ok(a)) => listen.push(a),
                        Some(Err(e)) => {
                            cx.err_at(Some(l.span()), "http.listen", e);
                            ok = false;
                        }
                        None => {
                            cx.err_at(
                                Some(l.span()),
                                "http.listen",
                                format!("must be a list of strings, not {} {it}", it.type_str()),
                            );
                            ok = false;
                        }
                    }
                }
            }
            other => {
                cx.err_at(
                    Some(l.span()),
                    "http.listen",
                    format!(
                        "must be a non-empty list of addresses, as in [\"127.0.0.1:8080\"], not {} {other}",
                        other.type_str()
                    ),
                );
                ok = false;
            }
        },
    }
    let mut int =
        |v: &Option<Spanned<i64>>, key: &str, lo: i64, hi: i64, what: &str, default: u32| match v {
            None => Some(default),
            Some(n) if (lo..=hi).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                cx.err_at(Some(n.span()), key, format!("must be {lo} to {hi}: {what}"));
                None
            }
        };
    let max_concurrent = int(
        &r.max_concurrent,
        "http.max_concurrent",
        1,
        MAX_MAX_CONCURRENT as i64,
        "the requests served at once (each holds an instance); more wait for a turn",
        DEFAULT_MAX_CONCURRENT,
    );
    let reuse = int(
        &r.reuse,
        "http.reuse",
        0,
        1_000_000,
        "how many requests one instance may serve (0, the default: a fresh instance for every request)",
        0,
    );
    let failures = int(
        &r.failures,
        "http.failures",
        1,
        1_000_000,
        "failed requests in a row (traps, timeouts) that end the app's run and count against its restart policy",
        DEFAULT_FAILURES,
    );
    let mut dur = |v: &Option<Spanned<Dur>>, key: &str, default: Duration, what: &str| match v {
        None => Some(default),
        Some(d) if d.get_ref().0 >= Duration::from_millis(1) => Some(d.get_ref().0),
        Some(d) => {
            cx.err_at(Some(d.span()), key, format!("must be at least 1ms: {what}"));
            None
        }
    };
    let request_timeout = dur(
        &r.request_timeout,
        "http.request_timeout",
        DEFAULT_REQUEST_TIMEOUT,
        "how long a request may run before it is interrupted (504)",
    );
    let failure_window = dur(
        &r.failure_window,
        "http.failure_window",
        DEFAULT_FAILURE_WINDOW,
        "the window within which `failures` failed requests end the app's run",
    );
    if !ok {
        return None;
    }
    Some(HttpSpec {
        listen,
        max_concurrent: max_concurrent?,
        request_timeout: request_timeout?,
        reuse: reuse?,
        failures: failures?,
        failure_window: failure_window?,
    })
}

/// `[http]` on an app that is not a wasm app.
pub(super) fn refuse_for_native(cx: &mut FileCtx, raw: &Spanned<RawHttp>, level: &str) {
    cx.err_at(
        Some(raw.span()),
        "http",
        format!("[http] is for wasm apps whose module is a wasi:http component (isolation = \"wasm\"); an isolation = \"{level}\" app listens on its own sockets"),
    );
}

#[cfg(test)]
mod tests {
    use super::super::{AppSpec, ConfigError, parse_app};
    use std::path::PathBuf;

    fn parse(src: &str) -> Result<AppSpec, Vec<ConfigError>> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("paddock-cfg-http-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(d.join("c.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let r = parse_app("web", &d.join("web.toml"), src);
        let _ = std::fs::remove_dir_all(&d);
        r
    }

    fn err(src: &str) -> String {
        parse(src)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    const HEAD: &str = "isolation = \"wasm\"\nmodule = \"c.wasm\"\n";

    #[test]
    fn full_http_table() {
        let a = parse(&format!(
            "{HEAD}[http]\nlisten = [\"127.0.0.1:8080\", \"/run/x.sock\"]\nmax_concurrent = 8\nrequest_timeout = \"2s\"\nreuse = 10\nfailures = 3\nfailure_window = \"1m\"\n"
        ))
        .unwrap();
        let h = a.http.unwrap();
        assert_eq!(h.listen.len(), 2);
        assert_eq!(h.listen[1].to_string(), "unix:/run/x.sock");
        assert_eq!((h.max_concurrent, h.reuse, h.failures), (8, 10, 3));
        assert_eq!(h.request_timeout, std::time::Duration::from_secs(2));
        assert_eq!(h.failure_window, std::time::Duration::from_secs(60));
        let d = parse(&format!("{HEAD}[http]\nlisten = [\"[::1]:0\"]\n")).unwrap();
        let h = d.http.unwrap();
        assert_eq!((h.max_concurrent, h.reuse, h.failures), (64, 0, 5));
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("[http]\n", "web.toml:3:1: key `http.listen`: missing"),
            (
                "[http]\nlisten = []\n",
                "key `http.listen`: must be a non-empty list",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:80\"\n",
                "must be a non-empty list of addresses",
            ),
            (
                "[http]\nlisten = [80]\n",
                "must be a list of strings, not integer 80",
            ),
            (
                "[http]\nlisten = [\"localhost:80\"]\n",
                "web.toml:4:10: key `http.listen`: \"localhost:80\" is not an address",
            ),
            ("[http]\nlisten = [\"unix:x.sock\"]\n", "must be absolute"),
            (
                "[http]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "127.0.0.1:1 is listed twice",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nmax_concurrent = 0\n",
                "web.toml:5:18: key `http.max_concurrent`: must be 1 to 4096",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nreuse = -1\n",
                "key `http.reuse`: must be 0 to 1000000",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nfailures = 0\n",
                "key `http.failures`: must be 1 to",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nrequest_timeout = \"0s\"\n",
                "key `http.request_timeout`: must be at least 1ms",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nfailure_window = \"0ms\"\n",
                "key `http.failure_window`: must be at least 1ms",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nrequest_timeout = \"soon\"\n",
                "http.request_timeout",
            ),
            (
                "[http]\nlisten = [\"127.0.0.1:1\"]\nport = 1\n",
                "unknown field `port`",
            ),
        ];
        for (tail, want) in cases {
            let e = err(&format!("{HEAD}{tail}"));
            assert!(e.contains(want), "{tail:?}: {e}");
        }
        let e =
            err("isolation = \"wasm\"\nmodule = \"m.wasm\"\n[http]\nlisten = [\"127.0.0.1:1\"]\n");
        assert!(
            e.contains("key `http`: m.wasm is a WASI preview 1 core module"),
            "{e}"
        );
        let e = err("command = [\"/bin/true\"]\n[http]\nlisten = [\"127.0.0.1:1\"]\n");
        assert!(e.contains("key `http`: [http] is for wasm apps"), "{e}");
        let _ = PathBuf::new();
    }
}
