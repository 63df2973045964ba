//! In-process writers into the logs: a [`Sink`] sends an app's output straight to the log
//! writer's bounded queue (no pipe, no descriptor), and a [`SinkWriter`] is the same as a tokio
//! `AsyncWrite`, with backpressure when the queue is full. Wasm guests write through these.

use super::{Data, Logs, QUEUE, Stream};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
/// Where an in-process writer (a wasm guest) sends its output: straight to the log writer, with
/// the same bounded queue as the pipe readers, and no descriptor at all. Thousands of wasm apps
/// would otherwise hold two pipes each (four descriptors in paddock) plus their duplicates.
#[derive(Clone)]
pub struct Sink {
    data: mpsc::Sender<Data>,
    app: Arc<str>,
    stream: Stream,
}

impl Data {
    /// The bytes of this chunk (for a [`Sink::channel`] receiver).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl Sink {
    /// A sink whose chunks go to the returned receiver instead of the log writer: for an
    /// embedder that writes a guest's output elsewhere (the containerd shim writes it to
    /// containerd's stdio FIFOs). The queue is bounded like the log writer's.
    pub fn channel(app: Arc<str>, stream: Stream) -> (Sink, mpsc::Receiver<Data>) {
        let (data, rx) = mpsc::channel(QUEUE);
        (Sink { data, app, stream }, rx)
    }
}

impl Logs {
    /// A sink into the log of `app`'s `stream`.
    pub fn sink(&self, app: Arc<str>, stream: Stream) -> Sink {
        Sink {
            data: self.data.clone(),
            app,
            stream,
        }
    }
}

type Reserve = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<mpsc::OwnedPermit<Data>, mpsc::error::SendError<()>>,
            > + Send,
    >,
>;

/// A [`Sink`] as an `AsyncWrite`: each write is one chunk for the writer; a full queue makes the
/// writer wait (backpressure, as a full pipe would).
pub struct SinkWriter {
    sink: Sink,
    /// A place in the queue being waited for (a `Mutex` only to be `Sync`; never contended).
    pending: std::sync::Mutex<Option<Reserve>>,
}

impl Sink {
    pub fn writer(&self) -> SinkWriter {
        SinkWriter {
            sink: self.clone(),
            pending: std::sync::Mutex::new(None),
        }
    }

    /// Sends `bytes` (waits while the queue is full); false if the writer is gone.
    pub async fn write(&self, bytes: Vec<u8>) -> bool {
        self.data
            .send(Data {
                app: self.app.clone(),
                stream: self.stream,
                time: SystemTime::now(),
                bytes,
            })
            .await
            .is_ok()
    }
}

impl tokio::io::AsyncWrite for SinkWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        let slot = match this.pending.get_mut() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let tx = &this.sink.data;
        let fut = slot.get_or_insert_with(|| Box::pin(tx.clone().reserve_owned()));
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                *slot = None;
                match r {
                    Ok(permit) => {
                        permit.send(Data {
                            app: this.sink.app.clone(),
                            stream: this.sink.stream,
                            time: SystemTime::now(),
                            bytes: buf.to_vec(),
                        });
                        Poll::Ready(Ok(buf.len()))
                    }
                    Err(_) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
                }
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
