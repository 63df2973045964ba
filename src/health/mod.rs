//! Health probes (tcp, http; exec checks are spawned by the daemon like apps) and the readiness
//! channels apps use: an sd_notify datagram socket, or an s6-style descriptor.

use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects to `address`; healthy if the connection is accepted within `timeout`.
pub async fn probe_tcp(address: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => Err(format!(
            "tcp {address}: no answer within {}",
            crate::config::units::format_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("tcp {address}: {}", crate::util::io_reason(&e))),
        Ok(Ok(_)) => Ok(()),
    }
}

/// `GET path` over plain HTTP/1.1; healthy on a 2xx or 3xx status whose body (first 64 KiB)
/// contains `expect_body`, if given.
pub async fn probe_http(
    host: &str,
    port: u16,
    path: &str,
    expect_body: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let fetch = async {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut s = TcpStream::connect(&addr)
            .await
            .map_err(|e| crate::util::io_reason(&e))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: paddock-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| crate::util::io_reason(&e))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        while buf.len() < 64 * 1024 {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| crate::util::io_reason(&e))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<Vec<u8>, String>(buf)
    };
    let buf = match tokio::time::timeout(timeout, fetch).await {
        Err(_) => {
            return Err(format!(
                "{url}: no answer within {}",
                crate::config::units::format_duration(timeout)
            ));
        }
        Ok(Err(e)) => return Err(format!("{url}: {e}")),
        Ok(Ok(b)) => b,
    };
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .filter(|_| text.starts_with("HTTP/"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    if !(200..400).contains(&status) {
        return Err(format!("{url}: HTTP {status}"));
    }
    if let Some(want) = expect_body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(want) {
            return Err(format!(
                "{url}: HTTP {status}, but the body does not contain {want:?}"
            ));
        }
    }
    Ok(())
}

/// One sd_notify assignment paddock understands.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Watchdog,
    Stopping,
    Status(String),
    MainPid(i32),
}

/// Parses an sd_notify datagram (newline-separated `KEY=VALUE`); unknown keys are ignored, as
/// systemd does.
pub fn parse_notify(text: &str) -> Vec<Notice> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            match (k, v) {
                ("READY", "1") => Some(Notice::Ready),
                ("WATCHDOG", "1") => Some(Notice::Watchdog),
                ("STOPPING", "1") => Some(Notice::Stopping),
                ("STATUS", s) => Some(Notice::Status(s.chars().take(256).collect())),
                ("MAINPID", p) => p.trim().parse().ok().map(Notice::MainPid),
                _ => None,
            }
        })
        .collect()
}

/// Creates an app's notify socket at `path` (replacing a stale one), writable by `uid`.
pub fn notify_socket(path: &Path, uid: Option<u32>) -> std::io::Result<tokio::net::UnixDatagram> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.as_os_str().len() >= 108 {
        return Err(std::io::Error::other(format!(
            "socket path {} is too long for a Unix socket (use a shorter --state-dir)",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    let sock = tokio::net::UnixDatagram::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = uid {
        std::os::unix::fs::chown(path, Some(uid), None)?;
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_messages() {
        assert_eq!(
            parse_notify("READY=1\nSTATUS=serving 3 clients\nMAINPID=42\nX=1\nWATCHDOG=1"),
            vec![
                Notice::Ready,
                Notice::Status("serving 3 clients".into()),
                Notice::MainPid(42),
                Notice::Watchdog
            ]
        );
        assert_eq!(parse_notify("READY=0\ngarbage\n\0\0"), vec![]);
        assert_eq!(parse_notify("STOPPING=1"), vec![Notice::Stopping]);
    }

    #[tokio::test]
    async fn probes_against_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for body in ["ok", "ok", "nope"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let status = if body == "nope" {
                    "503 Unavailable"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let t = Duration::from_secs(2);
        assert!(
            probe_http("127.0.0.1", addr.port(), "/h", Some("ok"), t)
                .await
                .is_ok()
        );
        let e = probe_http("127.0.0.1", addr.port(), "/h", Some("ready"), t)
            .await
            .unwrap_err();
        assert!(e.contains("does not contain"), "{e}");
        let e = probe_http("127.0.0.1", addr.port(), "/h", None, t)
            .await
            .unwrap_err();
        assert!(e.contains("HTTP 503"), "{e}");
        server.await.unwrap();
        // Nothing listens there any more.
        let e = probe_tcp(&addr.to_string(), t).await.unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}
