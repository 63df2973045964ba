//! The app `paddock bench` runs at every level: one Rust source, built natively (the binary
//! `paddock-bench-app` of crates/paddock-lab) and to WebAssembly (`bench-app.wasm`, by
//! examples/wasm/build.sh).
//!
//! - `bench-app`: prints `bench-app ready`, answers each line of stdin with `ok LINE`, and once
//!   stdin is closed (paddock gives apps /dev/null; wasm guests get no stdin) stays up, idle.
//! - `bench-app --exit`: exits at once with status 0 (to measure restarts).
//! - `bench-app --http ADDR`: a long-running HTTP/1.1 server (keep-alive, a thread per
//!   connection) answering `hello from paddock` to every request: the native side of
//!   paddock-lab's benches/http.rs, next to the per-request wasm app `examples/wasm/http-hello`.

use std::io::BufRead;

fn main() {
    if std::env::args().any(|a| a == "--exit") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--http") {
        let addr = args.get(i + 1).map_or("127.0.0.1:8090", String::as_str);
        return http(addr);
    }
    println!("bench-app ready");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        println!("ok {line}");
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn http(addr: &str) {
    use std::io::{Read, Write};
    let l = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-app: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("bench-app listening on {addr}");
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            let mut have = 0;
            loop {
                // One request: headers up to the blank line (bodies are not expected).
                while !buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    if have == buf.len() {
                        return;
                    }
                }
                let end = buf[..have]
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(0)
                    + 4;
                let close = String::from_utf8_lossy(&buf[..end])
                    .to_ascii_lowercase()
                    .contains("connection: close");
                buf.copy_within(end..have, 0);
                have -= end;
                let body = "hello from paddock\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if c.write_all(resp.as_bytes()).is_err() || close {
                    return;
                }
            }
        });
    }
}
