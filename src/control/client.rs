//! The CLI's side of the control socket: one blocking request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub struct Client {
    pub socket: PathBuf,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    fn connect(&self) -> Result<UnixStream, String> {
        UnixStream::connect(&self.socket).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    " — is `paddock serve` running? (point to it with --socket or PADDOCK_SOCKET)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    " — only root and the user running paddock may use it"
                }
                _ => "",
            };
            format!(
                "cannot connect to paddock at {}: {}{hint}",
                self.socket.display(),
                crate::util::io_reason(&e)
            )
        })
    }

    /// Sends a request and returns the response head's status and a reader over the body.
    pub fn open(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, BufReader<UnixStream>), String> {
        self.open_typed(method, path, body).map(|(s, _, r)| (s, r))
    }

    /// A GET: status, content type and body.
    pub fn get_typed(&self, path: &str) -> Result<(u16, String, String), String> {
        let (status, ctype, mut r) = self.open_typed("GET", path, None)?;
        let mut body = String::new();
        r.read_to_string(&mut body)
            .map_err(|e| format!("reading the response: {e}"))?;
        Ok((status, ctype, body))
    }

    /// Like `open`, with the response's content type.
    fn open_typed(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String, BufReader<UnixStream>), String> {
        let mut s = self.connect()?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("sending the request: {e}"))?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("reading the response: {e}"))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("paddock sent a malformed response: {:?}", line.trim()))?;
        let mut ctype = String::new();
        loop {
            line.clear();
            let n = r
                .read_line(&mut line)
                .map_err(|e| format!("reading the response: {e}"))?;
            if n == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-type")
            {
                ctype = v.trim().to_string();
            }
        }
        Ok((status, ctype, r))
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, String> {
        let (status, mut r) = self.open(method, path, body)?;
        let mut body = String::new();
        r.read_to_string(&mut body)
            .map_err(|e| format!("reading the response: {e}"))?;
        Ok(Response { status, body })
    }

    /// A GET answered with text (`?format=table`): content type and body; an error
    /// (`{"error": …}`, any status but 200) as `Err`.
    pub fn text(&self, path: &str) -> Result<(String, String), String> {
        let (status, ctype, body) = self.get_typed(path)?;
        if status == 200 {
            return Ok((ctype, body));
        }
        Err(error_of(status, &body))
    }

    /// Like `request`, but decodes a JSON body, turning `{"error": …}` into `Err`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(u16, T), String> {
        let r = self.request(method, path, None)?;
        if let Ok(v) = serde_json::from_str::<T>(&r.body) {
            return Ok((r.status, v));
        }
        Err(error_of(r.status, &r.body))
    }
}

/// What an answer that is not the expected one says: its `{"error": …}`, or the answer itself.
fn error_of(status: u16, body: &str) -> String {
    match serde_json::from_str::<super::api::ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => format!(
            "unexpected answer from paddock (HTTP {status}): {}",
            body.trim()
        ),
    }
}
