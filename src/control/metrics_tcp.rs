//! `serve --metrics-listen ADDR`: Prometheus' scrape endpoint on TCP. Read-only by design: it
//! answers `GET /metrics` and nothing else (no control verb, no status, no logs), since anyone
//! who can reach the address can use it. Bounded like the control socket, by the same helpers
//! (server.rs): a request must arrive within 3 s, and at most 64 connections are open at once
//! (more get 503).

use super::api::{Call, Reply, Request};
use super::server::{ask, read_within, within_budget, write_reply};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A scraper opens one connection at a time; a few Prometheus servers and a curl fit easily.
const MAX_CONNECTIONS: usize = 64;

/// Parses `ADDR` (`127.0.0.1:9464`, `[::]:9464`, `:9464` for every address) and binds it, or
/// says precisely why not.
pub fn bind(addr: &str) -> Result<TcpListener, String> {
    bind_or_take(addr, None).map(|(l, _)| l)
}

/// The metrics listener: `held` (the one the descriptor holder kept from an earlier paddock,
/// after a crash or a `reexec`) when it listens on `addr`, else a new one (dropping `held`).
/// The flag says whether it is new (and so must be given to the holder).
pub fn bind_or_take(
    addr: &str,
    held: Option<std::os::fd::OwnedFd>,
) -> Result<(TcpListener, bool), String> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let sa: std::net::SocketAddr = full.parse().map_err(|_| {
        format!(
            "--metrics-listen {addr:?}: expected an address and port, such as 127.0.0.1:9464, [::1]:9464 or :9464 (every address)"
        )
    })?;
    if let Some(fd) = held {
        let l = std::net::TcpListener::from(fd);
        // Port 0 asks for a new port each time: never the held one.
        if sa.port() != 0 && l.local_addr().is_ok_and(|a| a == sa) {
            return l
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
                .map(|l| (l, false))
                .map_err(|e| format!("--metrics-listen {addr}: {}", crate::util::io_reason(&e)));
        }
    }
    let l = std::net::TcpListener::bind(sa).map_err(|e| {
        format!(
            "--metrics-listen {addr}: cannot listen: {}",
            crate::util::io_reason(&e)
        )
    })?;
    l.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(l))
        .map(|l| (l, true))
        .map_err(|e| format!("--metrics-listen {addr}: {}", crate::util::io_reason(&e)))
}

pub async fn serve(listener: TcpListener, sup: mpsc::UnboundedSender<Call>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, or the like: back off, the control socket has priority.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sup = sup.clone();
        within_budget(&slots, stream, |s| connection(s, sup));
    }
}

async fn connection(mut s: TcpStream, sup: mpsc::UnboundedSender<Call>) {
    let reply = match read_within(&mut s).await {
        Err(r) => r,
        Ok(r) => match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/metrics") => ask(&sup, Request::Metrics).await,
            (_, "/metrics") => Reply::error(405, format!("{} is not allowed: GET only", r.method)),
            (_, p) => Reply::error(
                404,
                format!(
                    "{p}: this address serves GET /metrics only (control paddock through its socket)"
                ),
            ),
        },
    };
    let _ = write_reply(&mut s, reply).await;
}
