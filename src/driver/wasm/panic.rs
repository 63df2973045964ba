//! The guest's panic message, for its trap. A Rust guest that panics writes
//! `thread 'main' panicked at src/main.rs:19:13:` and the message to stderr, then aborts with
//! `unreachable`: the trap alone says only "unreachable". The guest's stderr goes through a
//! `TailWriter`, which keeps its last few KiB, and the trap's exit carries the panic found there.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// How much of the end of the guest's stderr is kept.
const KEEP: usize = 8 << 10;
/// The longest panic message carried in an exit.
const MAX_MESSAGE: usize = 400;

/// The end of a guest's stderr.
#[derive(Default)]
pub(super) struct Tail(Mutex<Vec<u8>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut b = match self.0.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        b.extend_from_slice(bytes);
        if b.len() > KEEP {
            let cut = b.len() - KEEP;
            b.drain(..cut);
        }
    }

    /// The last panic written, as "panicked at FILE:LINE:COL: MESSAGE".
    pub(super) fn panic_message(&self) -> Option<String> {
        let b = match self.0.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        panic_message(&String::from_utf8_lossy(&b))
    }
}

/// Finds the last Rust panic in `text`: the current form (`panicked at LOC:` then the message
/// on the following lines, up to the `note:` line or the end) and the older one
/// (`panicked at 'MESSAGE', LOC`).
pub(super) fn panic_message(text: &str) -> Option<String> {
    let at = text.rfind("panicked at ")?;
    let rest = &text[at + "panicked at ".len()..];
    let (first, after) = rest.split_once('\n').unwrap_or((rest, ""));
    let first = first.trim_end();
    let msg = if let Some(loc) = first.strip_suffix(':') {
        let body: Vec<&str> = after
            .lines()
            .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:"))
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        if body.is_empty() {
            format!("panicked at {loc}")
        } else {
            format!("panicked at {loc}: {}", body.join(" / "))
        }
    } else if let Some(quoted) = first.strip_prefix('\'')
        && let Some((m, loc)) = quoted.rsplit_once("', ")
    {
        format!("panicked at {loc}: {m}")
    } else {
        format!("panicked at {first}")
    };
    Some(if msg.chars().count() > MAX_MESSAGE {
        let mut m: String = msg.chars().take(MAX_MESSAGE - 1).collect();
        m.push('…');
        m
    } else {
        msg
    })
}

/// An `AsyncWrite` that passes everything on and keeps the end of it in a `Tail`.
pub(super) struct TailWriter<W> {
    inner: W,
    tail: Arc<Tail>,
}

impl<W> TailWriter<W> {
    pub(super) fn new(inner: W, tail: Arc<Tail>) -> Self {
        TailWriter { inner, tail }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for TailWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.tail.push(&buf[..n.min(buf.len())]);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_panic() {
        let t = "crasher: about to panic\n\nthread 'main' panicked at src/main.rs:19:13:\ncrasher: deliberate panic\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(t).unwrap(),
            "panicked at src/main.rs:19:13: crasher: deliberate panic"
        );
        let t = "thread 'main' panicked at 'boom', src/main.rs:2:5\nnote: …\n";
        assert_eq!(
            panic_message(t).unwrap(),
            "panicked at src/main.rs:2:5: boom"
        );
        let t = "thread 'main' panicked at src/lib.rs:1:1:\nline one\nline two\n";
        assert_eq!(
            panic_message(t).unwrap(),
            "panicked at src/lib.rs:1:1: line one / line two"
        );
        assert_eq!(
            panic_message("memory allocation of 1048576 bytes failed\n"),
            None
        );
        let long = format!(
            "thread 'main' panicked at a.rs:1:1:\n{}\n",
            "x".repeat(1000)
        );
        assert_eq!(panic_message(&long).unwrap().chars().count(), MAX_MESSAGE);
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let t = Tail::default();
        t.push(&vec![b'a'; KEEP * 2]);
        t.push(b"\nthread 'main' panicked at x.rs:1:1:\nlate\n");
        assert_eq!(t.panic_message().unwrap(), "panicked at x.rs:1:1: late");
        assert_eq!(t.0.lock().unwrap().len(), KEEP);
    }
}
