//! Just enough HTTP/1.1 for a local control API: one request per connection, bounded head and
//! body, a deadline for slow clients, `Connection: close` on every response.

use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, key: &str) -> bool {
        self.param(key)
            .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes"))
    }
}

/// An HTTP error to send back: status and message.
#[derive(Debug, PartialEq)]
pub struct HttpError(pub u16, pub String);

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads and parses one request.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<HttpRequest, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| HttpError(400, format!("read error: {e}")))?;
        if n == 0 {
            return Err(HttpError(
                400,
                "connection closed before a complete request".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if p + 4 > MAX_HEAD {
                return Err(HttpError(
                    431,
                    format!("request head larger than {MAX_HEAD} bytes"),
                ));
            }
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError(
                431,
                format!("request head larger than {MAX_HEAD} bytes"),
            ));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError(400, "incomplete request head".into()));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError(431, "more than 32 headers".into()));
        }
        Err(e) => return Err(HttpError(400, format!("malformed request: {e}"))),
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/").to_string();
    let mut content_length = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| HttpError(400, "invalid Content-Length".into()))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError(
                411,
                "chunked request bodies are not supported: send Content-Length".into(),
            ));
        }
    }
    if content_length > MAX_BODY {
        return Err(HttpError(
            413,
            format!("request body larger than {MAX_BODY} bytes"),
        ));
    }
    let mut body = buf[head_len..].to_vec();
    while body.len() < content_length {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| HttpError(400, format!("read error: {e}")))?;
        if n == 0 {
            return Err(HttpError(
                400,
                "connection closed in the middle of the body".into(),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = qs
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    Ok(HttpRequest {
        method,
        path: pct_decode(path),
        query,
        body,
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub fn response_head(status: u16, content_type: &str, len: Option<usize>) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n",
        reason(status)
    );
    if let Some(n) = len {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<HttpRequest, HttpError> {
        let mut r = raw;
        read_request(&mut r).await
    }

    #[tokio::test]
    async fn requests() {
        let r = parse(b"GET /v1/apps/a%2Cb?wait=1&n=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1/apps/a,b");
        assert!(r.flag("wait"));
        assert_eq!(r.param("n"), Some("5"));
        let r = parse(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef")
            .await
            .unwrap();
        assert_eq!(r.body, b"abc");
        assert_eq!(parse(b"garbage\r\n\r\n").await.unwrap_err().0, 400);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").await.unwrap_err().0, 400);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()).await.unwrap_err().0, 431);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
                .await
                .unwrap_err()
                .0,
            413
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
                .await
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap_err()
                .0,
            411
        );
        assert_eq!(pct_decode("%zz%41%"), "%zzA%");
    }
}
