//! `serve --metrics-listen ADDR`: Prometheus' scrape endpoint on TCP. Read-only by design: it
//! answers `GET /metrics` and nothing else (no control verb, no status, no logs), since anyone
//! who can reach the address can use it. Bounded like the control socket: a request must
//! arrive within 3 s, and at most 64 connections are open at once (more get 503).

use super::api::{Call, Reply, Request};
use super::http::{self, HttpError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// A scraper opens one connection at a time; a few Prometheus servers and a curl fit easily.
const MAX_CONNECTIONS: usize = 64;

/// Parses `ADDR` (`127.0.0.1:9464`, `[::]:9464`, `:9464` for every address) and binds it, or
/// says precisely why not.
pub fn bind(addr: &str) -> Result<TcpListener, String> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let sa: std::net::SocketAddr = full.parse().map_err(|_| {
        format!(
            "--metrics-listen {addr:?}: expected an address and port, such as 127.0.0.1:9464, [::1]:9464 or :9464 (every address)"
        )
    })?;
    let l = std::net::TcpListener::bind(sa).map_err(|e| {
        format!(
            "--metrics-listen {addr}: cannot listen: {}",
            crate::util::io_reason(&e)
        )
    })?;
    l.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(l))
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
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    connection(stream, sup).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut s = stream;
                    let r = Reply::error(503, "too many connections; try again");
                    let _ = write_reply(&mut s, r).await;
                });
            }
        }
    }
}

async fn connection(mut s: TcpStream, sup: mpsc::UnboundedSender<Call>) {
    let req = match tokio::time::timeout(REQUEST_DEADLINE, http::read_request(&mut s)).await {
        Err(_) => Err(Reply::error(408, "request not received in time")),
        Ok(Err(HttpError(status, msg))) => Err(Reply::error(status, msg)),
        Ok(Ok(r)) => Ok(r),
    };
    let reply = match req {
        Err(r) => r,
        Ok(r) => match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/metrics") => ask(&sup).await,
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

async fn ask(sup: &mpsc::UnboundedSender<Call>) -> Reply {
    let (tx, rx) = oneshot::channel();
    if sup.send(Call(Request::Metrics, tx)).is_err() {
        return Reply::error(503, "paddock is exiting");
    }
    rx.await
        .unwrap_or_else(|_| Reply::error(503, "paddock is exiting"))
}

async fn write_reply(s: &mut TcpStream, r: Reply) -> std::io::Result<()> {
    let head = http::response_head(r.status, r.content_type, Some(r.body.len()));
    s.write_all(head.as_bytes()).await?;
    s.write_all(r.body.as_bytes()).await?;
    s.shutdown().await?;
    // Read what the client still sends (bounded) so the close does not reset the answer.
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf).await {
            total += n;
            if n == 0 || total > 1 << 16 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}
