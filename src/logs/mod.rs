//! App output: pipes → timestamped lines in `<state>/logs/NAME.out` / `NAME.err`, rotated by size.
//!
//! Reader tasks (one per pipe, on the main runtime) read whatever the app wrote and hand it to the
//! writer, a dedicated thread that owns every log file. The data channel is bounded: a slow disk
//! or a chatty app slows only the reading of pipes (the app eventually blocks on a full pipe, as
//! it would on a slow terminal), never the supervisor. Followers (`tail -f`) are fed by the writer
//! right after each write, so rotation is invisible to them and nothing is polled.

use crate::config::LogSpec;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn ext(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

pub enum Ctl {
    Configure {
        app: Arc<str>,
        spec: LogSpec,
    },
    Remove {
        app: Arc<str>,
    },
    Reopen,
    /// The last `lines` lines, then (if `follow`) everything written after them.
    Tail {
        app: Arc<str>,
        stream: Stream,
        lines: usize,
        follow: bool,
        tx: mpsc::Sender<Vec<u8>>,
        /// Bytes sent to `tx` and not yet written to the reader (the reader subtracts what it
        /// writes): a follower holds at most `FOLLOW_BUDGET` of them.
        queued: Arc<std::sync::atomic::AtomicUsize>,
    },
    /// Answered once everything received before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct Data {
    app: Arc<str>,
    stream: Stream,
    time: SystemTime,
    bytes: Vec<u8>,
}

/// The supervisor's handle on the log writer.
#[derive(Clone)]
pub struct Logs {
    pub dir: PathBuf,
    data: mpsc::Sender<Data>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

const READ_CHUNK: usize = 16 * 1024;
/// At most this many chunks wait for the disk (with READ_CHUNK, 4 MiB).
const QUEUE: usize = 256;
/// The longest tail a request can ask for.
pub const MAX_TAIL_LINES: usize = 100_000;
const MAX_TAIL_BYTES: u64 = 8 << 20;

impl Logs {
    /// Starts the writer thread. Files go under `dir` (created if missing).
    pub fn start(dir: PathBuf) -> std::io::Result<Logs> {
        std::fs::create_dir_all(&dir)?;
        let (data, data_rx) = mpsc::channel(QUEUE);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let wdir = dir.clone();
        std::thread::Builder::new()
            .name("paddock-logs".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("paddock: log writer cannot start: {e}");
                        return;
                    }
                };
                rt.block_on(
                    Writer {
                        dir: wdir,
                        apps: HashMap::new(),
                        buf: Vec::with_capacity(READ_CHUNK * 2),
                    }
                    .run(data_rx, ctl_rx),
                );
            })?;
        Ok(Logs { dir, data, ctl })
    }

    pub fn send(&self, c: Ctl) {
        let _ = self.ctl.send(c);
    }

    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Ctl::Flush(tx));
        let _ = rx.await;
    }

    pub fn path(&self, app: &str, stream: Stream) -> PathBuf {
        log_path(&self.dir, app, stream)
    }

    /// Reads a pipe until EOF, forwarding everything to the writer. Runs as a task.
    pub fn spawn_reader(
        &self,
        fd: OwnedFd,
        app: Arc<str>,
        stream: Stream,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
        // the AsyncFd's whole life.
        let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tx = self.data.clone();
        Ok(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let res = guard.try_io(|fd| read_chunk(fd.get_ref().as_raw_fd()));
                match res {
                    Ok(Ok(Some(bytes))) => {
                        if tx
                            .send(Data {
                                app: app.clone(),
                                stream,
                                time: SystemTime::now(),
                                bytes,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => return, // EOF or a hard error
                    Err(_would_block) => continue,
                }
            }
        }))
    }
}

/// Where an in-process writer (a wasm guest) sends its output: straight to the log writer, with
/// the same bounded queue as the pipe readers, and no descriptor at all. Thousands of wasm apps
/// would otherwise hold two pipes each (four descriptors in paddock) plus their duplicates.
#[derive(Clone)]
pub struct Sink {
    data: mpsc::Sender<Data>,
    app: Arc<str>,
    stream: Stream,
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

fn read_chunk(fd: i32) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // SAFETY: reads at most buf.len() bytes into `buf`; `fd` is borrowed from the AsyncFd that
        // owns the pipe's read end, for the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n as usize);
        buf.shrink_to_fit();
        return Ok(Some(buf));
    }
}

pub fn log_path(dir: &Path, app: &str, stream: Stream) -> PathBuf {
    dir.join(format!("{app}.{}", stream.ext()))
}

struct Follower {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    dropped: u64,
}

/// The most a follower (`tail -f`) may have queued in paddock: a reader that falls further
/// behind loses lines, and is told how many bytes, as journald's and s6-log's readers are. Fifty
/// stalled readers then hold about 12 MiB (plus their sockets' buffers), not a copy each of
/// everything the app writes.
pub const FOLLOW_BUDGET: usize = 256 << 10;

impl Follower {
    /// Queues `chunk` within the budget; false when it did not fit (or the reader is gone).
    fn offer(&self, chunk: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let n = chunk.len();
        if self.queued.load(Ordering::Relaxed) + n > FOLLOW_BUDGET {
            return false;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.try_send(chunk).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[derive(Default)]
struct StreamFile {
    file: Option<File>,
    size: u64,
    /// The last write ended mid-line.
    partial: bool,
    /// The file as an earlier paddock left it was looked at (see `ends_mid_line`).
    resumed: bool,
    followers: Vec<Follower>,
}

/// Whether a log file ends in the middle of a line: an earlier paddock (before a crash or a
/// re-exec) wrote the start of a line whose rest is still to come, without a new time stamp.
fn ends_mid_line(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut last = [0u8; 1];
    len > 0 && f.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

struct AppLog {
    spec: LogSpec,
    out: StreamFile,
    err: StreamFile,
}

struct Writer {
    dir: PathBuf,
    apps: HashMap<Arc<str>, AppLog>,
    buf: Vec<u8>,
}

impl Writer {
    async fn run(mut self, mut data: mpsc::Receiver<Data>, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
        loop {
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(Ctl::Flush(done)) => {
                        // Everything queued before the flush request is written first.
                        while let Ok(d) = data.try_recv() {
                            self.write(d);
                        }
                        let _ = done.send(());
                    }
                    Some(c) => self.control(c),
                    None => return,
                },
                d = data.recv() => match d {
                    Some(d) => self.write(d),
                    None => return,
                },
            }
        }
    }

    fn app(&mut self, app: &Arc<str>) -> &mut AppLog {
        self.apps.entry(app.clone()).or_insert_with(|| AppLog {
            spec: LogSpec::default(),
            out: StreamFile::default(),
            err: StreamFile::default(),
        })
    }

    fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Configure { app, spec } => self.app(&app).spec = spec,
            Ctl::Remove { app } => {
                self.apps.remove(&app);
            }
            Ctl::Reopen => {
                for a in self.apps.values_mut() {
                    a.out.file = None;
                    a.err.file = None;
                }
            }
            Ctl::Tail {
                app,
                stream,
                lines,
                follow,
                tx,
                queued,
            } => {
                let combine = self.apps.get(&app).is_some_and(|a| a.spec.combine);
                let stream = if combine { Stream::Out } else { stream };
                let path = log_path(&self.dir, &app, stream);
                let text = last_lines(&path, lines.min(MAX_TAIL_LINES)).unwrap_or_default();
                if !text.is_empty() && tx.try_send(text).is_err() {
                    return;
                }
                if follow {
                    let a = self.app(&app);
                    let sf = if stream == Stream::Out {
                        &mut a.out
                    } else {
                        &mut a.err
                    };
                    sf.followers.push(Follower {
                        tx,
                        queued,
                        dropped: 0,
                    });
                }
            }
            Ctl::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, d: Data) {
        let dir = self.dir.clone();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let a = self.app(&d.app);
        let stream = if a.spec.combine {
            Stream::Out
        } else {
            d.stream
        };
        let spec = a.spec.clone();
        let sf = if stream == Stream::Out {
            &mut a.out
        } else {
            &mut a.err
        };
        let path = log_path(&dir, &d.app, stream);
        if !sf.resumed {
            sf.resumed = true;
            sf.partial = ends_mid_line(&path);
        }
        let was_partial = sf.partial;
        let mut stamp = Vec::with_capacity(25);
        crate::util::rfc3339(d.time, &mut stamp);
        stamp.push(b' ');
        for piece in d.bytes.split_inclusive(|&b| b == b'\n') {
            if !sf.partial {
                buf.extend_from_slice(&stamp);
            }
            buf.extend_from_slice(piece);
            sf.partial = piece.last() != Some(&b'\n');
        }
        // Write, rotating at line boundaries so no file exceeds max_size (unless a single line
        // is longer than max_size) and no line is split across files.
        let mut rest = &buf[..];
        let mut mid_line = was_partial;
        while !rest.is_empty() {
            if sf.file.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                {
                    Ok(f) => {
                        sf.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        sf.file = Some(f);
                    }
                    Err(e) => {
                        eprintln!(
                            "paddock: cannot open log {}: {}",
                            path.display(),
                            crate::util::io_reason(&e)
                        );
                        break;
                    }
                }
            }
            let room = spec.max_size.saturating_sub(sf.size) as usize;
            let cut = if rest.len() <= room {
                rest.len()
            } else {
                let to_line_end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |p| p + 1);
                match rest[..room].iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    None if sf.size == 0 || mid_line => to_line_end, // finish the line first
                    None => 0,
                }
            };
            if cut > 0 {
                let Some(f) = sf.file.as_mut() else { break };
                if let Err(e) = f.write_all(&rest[..cut]) {
                    eprintln!(
                        "paddock: writing {}: {}",
                        path.display(),
                        crate::util::io_reason(&e)
                    );
                    sf.file = None;
                    break;
                }
                sf.size += cut as u64;
                mid_line = rest[cut - 1] != b'\n';
                rest = &rest[cut..];
            }
            if !rest.is_empty() {
                sf.file = None;
                rotate(&path, spec.keep);
                sf.size = 0;
            }
        }
        sf.followers.retain_mut(|f| {
            if f.dropped > 0 {
                let note = format!(
                    "[paddock: {} bytes dropped, the reader was too slow]\n",
                    f.dropped
                )
                .into_bytes();
                if !f.offer(note) {
                    f.dropped += buf.len() as u64;
                    return !f.tx.is_closed();
                }
                f.dropped = 0;
            }
            if f.tx.is_closed() {
                return false;
            }
            if !f.offer(buf.clone()) {
                f.dropped += buf.len() as u64;
            }
            true
        });
        self.buf = buf;
    }
}

/// NAME.out.(k-1) → NAME.out.k, …, NAME.out → NAME.out.1; keeps `keep` old files.
fn rotate(path: &Path, keep: u32) {
    let numbered = |k: u32| PathBuf::from(format!("{}.{k}", path.display()));
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = std::fs::remove_file(numbered(keep));
    for k in (1..keep).rev() {
        let _ = std::fs::rename(numbered(k), numbered(k + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// The last `n` lines of a file (at most MAX_TAIL_BYTES of them).
pub fn last_lines(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if n == 0 || len == 0 {
        return Ok(vec![]);
    }
    let mut start = len;
    let mut data: Vec<u8> = vec![];
    const BLOCK: u64 = 64 * 1024;
    loop {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&data);
        data = block;
        start = from;
        // Count newlines, ignoring a trailing one.
        let body = data.strip_suffix(b"\n").unwrap_or(&data);
        let newlines = body.iter().filter(|&&b| b == b'\n').count();
        if newlines >= n || start == 0 || len - start >= MAX_TAIL_BYTES {
            let body_len = body.len();
            let mut seen = 0;
            let mut cut = 0;
            for i in (0..body_len).rev() {
                if data[i] == b'\n' {
                    seen += 1;
                    if seen == n {
                        cut = i + 1;
                        break;
                    }
                }
            }
            if seen < n && start > 0 {
                // Hit the byte cap mid-line: drop the partial first line.
                cut = data.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
            }
            return Ok(data.split_off(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("paddock-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tail_lines() {
        let d = tmp("tail");
        let p = d.join("a.out");
        std::fs::write(&p, "1\n2\n3\n4\n").unwrap();
        assert_eq!(last_lines(&p, 2).unwrap(), b"3\n4\n");
        assert_eq!(last_lines(&p, 10).unwrap(), b"1\n2\n3\n4\n");
        assert_eq!(last_lines(&p, 0).unwrap(), b"");
        std::fs::write(&p, "1\n2\npartial").unwrap();
        assert_eq!(last_lines(&p, 2).unwrap(), b"2\npartial");
        let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &big).unwrap();
        assert_eq!(
            last_lines(&p, 3).unwrap(),
            b"line 99997\nline 99998\nline 99999\n"
        );
        assert_eq!(last_lines(&p, 100_000).unwrap().len(), big.len());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rotation_keeps_n() {
        let d = tmp("rot");
        let p = d.join("a.out");
        for i in 0..5 {
            std::fs::write(&p, format!("{i}")).unwrap();
            rotate(&p, 2);
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_to_string(d.join("a.out.1")).unwrap(), "4");
        assert_eq!(std::fs::read_to_string(d.join("a.out.2")).unwrap(), "3");
        assert!(!d.join("a.out.3").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
