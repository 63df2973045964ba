//! A tiny HTTP server on WASI 0.2 sockets (`std::net::TcpListener`, built for wasm32-wasip2).
//!
//! Listens on `$ADDR` (default `127.0.0.1:8080`); `GET /health` answers `ok`, anything else
//! `hello from wasm (request N)`. paddock lets it bind only what `[sandbox] tcp_bind` allows.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn handle(mut s: TcpStream, n: u64) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 << 10 {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        req.extend_from_slice(&buf[..k]);
    }
    let text = String::from_utf8_lossy(&req);
    let line = text.lines().next().unwrap_or("").to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/health" {
        ("200 OK", "ok\n".to_string())
    } else {
        ("200 OK", format!("hello from wasm (request {n})\n"))
    };
    println!("{line} -> {status}");
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("http: listening on http://{addr}/");
    let mut n = 0;
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                n += 1;
                if let Err(e) = handle(s, n) {
                    eprintln!("http: request {n}: {e}");
                }
            }
            Err(e) => eprintln!("http: accept: {e}"),
        }
    }
}
