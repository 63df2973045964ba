//! A `wasi:http/incoming-handler` component (the `wasi:http/proxy` world) that paddock serves
//! per request: every request gets a fresh instance, so nothing below survives between requests
//! unless the app sets `[http] reuse`.
//!
//! - `/`        answers `hello from paddock` (and `$GREETING` when set)
//! - `/echo`    echoes the request body
//! - `/count`   a global counter, incremented per request: always 1 with a fresh instance
//! - `/sleep?ms=N` answers after N milliseconds (for in-flight and drain tests)
//! - `/trap`    panics (a wasm trap: 500, the trap and its backtrace in the app's log)
//! - `/loop`    spins forever (504 at `[http] request_timeout`)
//! - `/alloc`   allocates past any sane `[limits] memory` (refused growth, then a trap)
//! - `/status?code=N` answers with status N (for health-check tests)

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

static COUNT: AtomicU64 = AtomicU64::new(0);

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(b) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    {
        let Ok(mut w) = b.write() else { return };
        // `blocking_write_and_flush` takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            if w.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = w.flush();
    }
    let _ = OutgoingBody::finish(b, None);
}

fn query_num(q: &str, key: &str) -> Option<u64> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        let pq = req.path_with_query().unwrap_or_default();
        let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
        match path {
            "/" => {
                let greeting = std::env::var("GREETING").unwrap_or_default();
                let text = if greeting.is_empty() {
                    "hello from paddock\n".to_string()
                } else {
                    format!("hello from paddock: {greeting}\n")
                };
                respond(out, 200, text.as_bytes())
            }
            "/count" => respond(out, 200, format!("{n}\n").as_bytes()),
            "/echo" => {
                let mut data = vec![];
                if let Ok(body) = req.consume()
                    && let Ok(mut s) = body.stream()
                {
                    let _ = s.read_to_end(&mut data);
                }
                respond(out, 200, &data)
            }
            "/sleep" => {
                let ms = query_num(query, "ms").unwrap_or(100);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, format!("slept {ms}ms\n").as_bytes())
            }
            "/status" => {
                let code = query_num(query, "code").unwrap_or(200) as u16;
                respond(out, code, format!("status {code}\n").as_bytes())
            }
            "/trap" => panic!("trap requested by {pq}"),
            "/loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/alloc" => {
                // 1 GiB, touched: more than any [limits] memory an example sets.
                let mut v: Vec<Vec<u8>> = vec![];
                for _ in 0..1024 {
                    v.push(vec![1u8; 1 << 20]);
                }
                respond(out, 200, format!("allocated {} MiB\n", v.len()).as_bytes())
            }
            _ => respond(out, 404, b"not found\n"),
        }
    }
}
