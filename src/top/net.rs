//! The network side of `paddock top`: threads that talk to paddock's public API over its Unix
//! socket and hand what they read to the view through one channel, so that drawing never waits
//! on the socket. Each thread ends when the view has gone (its channel is closed).

use super::model::{self, Row};
use crate::control::client::Client;
use serde_json::Value;
use std::io::{BufRead, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lines of a log kept when the pane opens.
pub const LOG_BACKLOG: usize = 200;

/// What reaches the view.
pub enum Msg {
    Key(ratatui::crossterm::event::KeyEvent),
    /// The terminal changed size (or must be drawn anew).
    Redraw,
    /// The terminal cannot be read any more.
    InputFailed(String),
    /// A refresh of `GET /v1/apps`: the apps, or why paddock could not be asked; when it was read.
    Apps(Result<Vec<Row>, String>, Instant),
    /// A state change from `GET /v1/events`.
    Event {
        app: String,
        to: String,
    },
    /// The event stream is up (`None`) or down (why).
    Events(Option<String>),
    /// A line of the log pane `id`.
    Log {
        id: u64,
        line: String,
    },
    /// The log stream of pane `id` (re)started: what it had shows anew.
    LogReset {
        id: u64,
    },
    /// The log stream of pane `id` ended (why); it is tried again at the refresh interval.
    LogEnd {
        id: u64,
        why: String,
    },
    /// The answer to start/stop/restart.
    Action(String),
}

/// Reads the terminal's keys and resizes.
pub fn input(tx: Sender<Msg>) {
    use ratatui::crossterm::event::{Event, KeyEventKind, read};
    loop {
        let m = match read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
            Ok(Event::Resize(..)) | Ok(Event::FocusGained) => Msg::Redraw,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Msg::InputFailed(format!("reading the terminal: {e}")));
                return;
            }
        };
        if tx.send(m).is_err() {
            return;
        }
    }
}

/// Refreshes the apps at every `interval`, and at once when poked (after an action, or when the
/// event stream comes back), never more often than every 100 ms.
pub fn refresher(socket: &Path, interval: Duration, tx: Sender<Msg>, poke: Receiver<()>) {
    let client = Client::new(socket);
    loop {
        let apps = match client.get_typed("/v1/apps") {
            Ok((_, _, body)) => model::parse_apps(&body),
            Err(e) => Err(e),
        };
        if tx.send(Msg::Apps(apps, Instant::now())).is_err() {
            return;
        }
        match poke.recv_timeout(interval) {
            Ok(()) => {
                std::thread::sleep(Duration::from_millis(100));
                while poke.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Follows `GET /v1/events`, reconnecting at `interval` while paddock is away.
pub fn events(socket: &Path, interval: Duration, tx: Sender<Msg>, poke: Sender<()>) {
    let client = Client::new(socket);
    loop {
        let why = match client.open("GET", "/v1/events", None) {
            Ok((200, r)) => {
                if tx.send(Msg::Events(None)).is_err() {
                    return;
                }
                // Whatever changed while the stream was down.
                let _ = poke.send(());
                for line in r.split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line);
                    let sent = match model::parse_event(&line) {
                        Some((app, to)) => tx.send(Msg::Event { app, to }).is_ok(),
                        // `{"lagged": N}`: events were missed; read the apps anew.
                        None if line.contains("\"lagged\"") => {
                            let _ = poke.send(());
                            true
                        }
                        None => true,
                    };
                    if !sent {
                        return;
                    }
                }
                "the event stream ended".to_string()
            }
            Ok((status, mut r)) => {
                let mut body = String::new();
                let _ = r.by_ref().take(4096).read_to_string(&mut body);
                format!("events: HTTP {status}: {}", error_of(&body))
            }
            Err(e) => e,
        };
        if tx.send(Msg::Events(Some(why))).is_err() {
            return;
        }
        std::thread::sleep(interval);
    }
}

/// The `error` of a JSON error body, or the body itself (cut).
fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .map(|e| model::clean(&e, model::MAX_FIELD))
        .unwrap_or_else(|| model::clean(body.trim(), 120))
}

/// A log stream the view can end: it shuts the socket down under the reading thread.
#[derive(Default)]
pub struct LogHandle {
    cancelled: AtomicBool,
    stream: Mutex<Option<UnixStream>>,
}

impl LogHandle {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Ok(mut s) = self.stream.lock()
            && let Some(s) = s.take()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The longest log line kept (longer ones are cut).
const MAX_LOG_LINE: usize = 2000;

/// Follows `GET /v1/apps/NAME/logs?stream=…&follow=1` for pane `id` until cancelled, reconnecting
/// at `interval`.
pub fn logs(
    socket: &Path,
    app: &str,
    stderr: bool,
    id: u64,
    interval: Duration,
    handle: Arc<LogHandle>,
    tx: Sender<Msg>,
) {
    let client = Client::new(socket);
    let stream = if stderr { "stderr" } else { "stdout" };
    let path = format!("/v1/apps/{app}/logs?stream={stream}&lines={LOG_BACKLOG}&follow=1");
    while !handle.cancelled() {
        let why = match client.open("GET", &path, None) {
            Ok((200, r)) => {
                match (r.get_ref().try_clone(), handle.stream.lock()) {
                    (Ok(s), Ok(mut slot)) => *slot = Some(s),
                    _ => return,
                }
                // Cancelled between the connection and now: the stream was not there to shut.
                if handle.cancelled() || tx.send(Msg::LogReset { id }).is_err() {
                    return;
                }
                for line in r.split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = model::clean(&String::from_utf8_lossy(&line), MAX_LOG_LINE);
                    if tx.send(Msg::Log { id, line }).is_err() {
                        return;
                    }
                }
                "the log stream ended".to_string()
            }
            Ok((status, mut r)) => {
                let mut body = String::new();
                let _ = r.by_ref().take(4096).read_to_string(&mut body);
                format!("HTTP {status}: {}", error_of(&body))
            }
            Err(e) => e,
        };
        if handle.cancelled() || tx.send(Msg::LogEnd { id, why }).is_err() {
            return;
        }
        std::thread::sleep(interval);
    }
}

/// `POST /v1/apps/NAME/VERB?wait=false`: what paddock answered, as one line.
pub fn action(socket: &Path, app: &str, verb: &str, tx: Sender<Msg>, poke: Sender<()>) {
    let client = Client::new(socket);
    let text = match client.request("POST", &format!("/v1/apps/{app}/{verb}?wait=false"), None) {
        Ok(r) => describe_action(app, verb, r.status, &r.body),
        Err(e) => format!("{verb} {app}: {e}"),
    };
    let _ = tx.send(Msg::Action(text));
    let _ = poke.send(());
}

/// One line for an action's answer: `stop web: requested (STOPPING)`, or the error.
pub fn describe_action(app: &str, verb: &str, status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let first = v
        .get("results")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let line = match first {
        Some(r) => {
            let ok = r.get("ok").and_then(Value::as_bool).unwrap_or(false);
            let msg = r.get("message").and_then(Value::as_str).unwrap_or("");
            let state = r.get("state").and_then(Value::as_str).unwrap_or("?");
            if ok {
                format!("{msg} ({state})")
            } else {
                format!("ERROR ({state}): {msg}")
            }
        }
        None => format!("HTTP {status}: {}", error_of(body)),
    };
    model::clean(&format!("{verb} {app}: {line}"), 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_answers() {
        let ok = r#"{"ok":true,"results":[{"app":"web","ok":true,"state":"STOPPING","message":"requested"}]}"#;
        assert_eq!(
            describe_action("web", "stop", 200, ok),
            "stop web: requested (STOPPING)"
        );
        let err = r#"{"error":"no app named \"x\""}"#;
        assert_eq!(
            describe_action("x", "start", 404, err),
            "start x: HTTP 404: no app named \"x\""
        );
        assert_eq!(
            describe_action("x", "start", 500, "garbage\x1b"),
            "start x: HTTP 500: garbage?"
        );
    }
}
