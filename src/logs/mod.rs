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
    dropped: DropCounts,
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
        let dropped = DropCounts::default();
        let wdropped = dropped.clone();
        std::thread::Builder::new()
            .name("paddock-logs".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
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
                        dropped: wdropped,
                        holding: vec![],
                    }
                    .run(data_rx, ctl_rx),
                );
            })?;
        Ok(Logs {
            dir,
            data,
            ctl,
            dropped,
        })
    }

    /// Lines of `app` that could not be written (disk full …) since paddock started.
    pub fn dropped(&self, app: &str) -> u64 {
        let counts = match self.dropped.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        counts.get(app).copied().unwrap_or(0)
    }

    pub fn send(&self, c: Ctl) {
        let _ = self.ctl.send(c);
    }

    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Ctl::Flush(tx));
        let _ = rx.await;
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
    /// The file ends mid-line (text format: a line arrives in pieces).
    partial: bool,
    /// How many bytes of that unfinished line are in `file` (0 after a reopen or rotation, or
    /// when an earlier paddock wrote them).
    partial_len: u64,
    /// The file as an earlier paddock left it was looked at (see `ends_mid_line`).
    resumed: bool,
    /// The beginning of the current line was dropped: its other pieces are dropped too.
    skipping: bool,
    /// Lines dropped since the last successful write (disk full …), since when, and why.
    lost: u64,
    lost_since: Option<SystemTime>,
    lost_why: String,
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

/// JSON format: a line whose newline has not come yet.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    time: Option<SystemTime>,
    since: Option<std::time::Instant>,
}

/// JSON format: an unfinished line is written as it is (`"partial": true`) once it is this long
/// or this old, and its next piece starts a new object.
const JSON_LINE_MAX: usize = 64 << 10;
const HOLD: std::time::Duration = std::time::Duration::from_secs(1);

struct AppLog {
    spec: LogSpec,
    out: StreamFile,
    err: StreamFile,
    /// JSON format: unfinished lines of stdout and stderr (as written by the app, before
    /// `combine` merges them).
    held: [Held; 2],
}

/// Lines each app lost (disk full and other write errors), shared with the supervisor.
pub type DropCounts = Arc<std::sync::Mutex<HashMap<Arc<str>, u64>>>;

struct Writer {
    dir: PathBuf,
    apps: HashMap<Arc<str>, AppLog>,
    buf: Vec<u8>,
    dropped: DropCounts,
    /// Streams holding an unfinished JSON line.
    holding: Vec<(Arc<str>, Stream)>,
}

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Out => "stdout",
        Stream::Err => "stderr",
    }
}

/// One JSON log object and its newline. Invalid UTF-8 becomes U+FFFD; control characters are
/// escaped, so any input gives one valid JSON line.
fn json_line(
    out: &mut Vec<u8>,
    time: SystemTime,
    app: &str,
    stream: Stream,
    line: &[u8],
    partial: bool,
) {
    out.extend_from_slice(b"{\"time\":\"");
    crate::util::rfc3339(time, out);
    out.extend_from_slice(b"\",\"app\":");
    json_str(out, app);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream_name(stream).as_bytes());
    out.extend_from_slice(b"\",\"line\":");
    json_str(out, &String::from_utf8_lossy(line));
    if partial {
        out.extend_from_slice(b",\"partial\":true");
    }
    out.extend_from_slice(b"}\n");
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes quotes, backslashes and control characters and never fails on a str.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// How many lines `b` holds or starts (an unfinished last line counts).
fn count_lines(b: &[u8]) -> u64 {
    let n = b.iter().filter(|&&c| c == b'\n').count() as u64;
    n + u64::from(!b.is_empty() && !b.ends_with(b"\n"))
}

fn drop_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "disk full".into(),
        Some(libc::EDQUOT) => "disk quota exceeded".into(),
        _ => crate::util::io_reason(e),
    }
}

/// Writes all of `b`, or says how much was written before the error.
fn write_counted(f: &mut File, b: &[u8]) -> (usize, Option<std::io::Error>) {
    let mut done = 0;
    while done < b.len() {
        match f.write(&b[done..]) {
            Ok(0) => return (done, Some(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// The file a stream of an app goes to.
pub fn stream_path(dir: &Path, app: &str, stream: Stream, spec: &LogSpec) -> PathBuf {
    let own = match stream {
        Stream::Out => &spec.stdout_file,
        Stream::Err => &spec.stderr_file,
    };
    own.clone().unwrap_or_else(|| log_path(dir, app, stream))
}

impl StreamFile {
    /// Writes `buf` (whole lines; the first may finish the line the file ends with, the last
    /// may be unfinished), rotating at line ends. A line is written whole or not at all: when
    /// a write fails (disk full), the file is cut back to its last line end and the lines not
    /// written are counted as lost. Returns how much of `buf` is in the file.
    fn put(&mut self, app: &str, path: &Path, spec: &LogSpec, buf: &[u8]) -> usize {
        let mut pos = 0;
        let mut mid_line = self.partial;
        while pos < buf.len() {
            if self.file.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                {
                    Ok(f) => {
                        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        self.file = Some(f);
                    }
                    Err(e) => {
                        self.lose(app, path, &e, &buf[pos..]);
                        return pos;
                    }
                }
            }
            let rest = &buf[pos..];
            let room = spec.max_size.saturating_sub(self.size) as usize;
            let cut = if rest.len() <= room {
                rest.len()
            } else {
                let to_line_end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |p| p + 1);
                match rest[..room].iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    None if self.size == 0 || mid_line => to_line_end, // finish the line first
                    None => 0,
                }
            };
            if cut > 0 {
                let Some(f) = self.file.as_mut() else { break };
                let base = self.size;
                let (n, err) = write_counted(f, &rest[..cut]);
                if let Some(e) = err {
                    // Back to the last line end written: the line being written goes. The
                    // file's real length is the reference (someone may have truncated it, as
                    // logrotate's copytruncate does), and the file is never lengthened.
                    let end = f.metadata().map_or(base + n as u64, |m| m.len());
                    let start = end.saturating_sub(n as u64);
                    let keep = match rest[..n].iter().rposition(|&b| b == b'\n') {
                        Some(p) => p + 1,
                        None => 0,
                    };
                    let to = if keep == 0 && mid_line {
                        start.saturating_sub(self.partial_len)
                    } else {
                        start + keep as u64
                    }
                    .min(end);
                    if let Err(te) = f.set_len(to) {
                        eprintln!(
                            "paddock: {app}: cannot cut {} back to its last whole line: {}",
                            path.display(),
                            crate::util::io_reason(&te)
                        );
                    }
                    self.size = to;
                    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
                    if !full {
                        self.file = None;
                    }
                    self.lose(app, path, &e, &rest[keep..]);
                    return pos + keep;
                }
                self.size += cut as u64;
                // How much of the line the file now ends with is in it, if it is unfinished.
                self.partial_len = if rest[cut - 1] == b'\n' {
                    0
                } else {
                    match rest[..cut].iter().rposition(|&b| b == b'\n') {
                        Some(p) => (cut - p - 1) as u64,
                        None if mid_line => self.partial_len + cut as u64,
                        None => cut as u64,
                    }
                };
                mid_line = rest[cut - 1] != b'\n';
                pos += cut;
            }
            if pos < buf.len() {
                self.file = None;
                rotate(path, spec.keep);
                self.size = 0;
                self.partial_len = 0;
            }
        }
        self.partial = mid_line;
        pos
    }

    /// Counts `rest` (not written) as lost lines (the file ends at a line end).
    fn lose(&mut self, app: &str, path: &Path, e: &std::io::Error, rest: &[u8]) {
        if self.lost == 0 {
            eprintln!(
                "paddock: {app}: writing {}: {}; its lines are dropped until writing works again",
                path.display(),
                crate::util::io_reason(e)
            );
            self.lost_since = Some(SystemTime::now());
            self.lost_why = drop_reason(e);
        }
        self.lost += count_lines(rest);
        self.partial = false;
        self.partial_len = 0;
        // The rest of an unfinished line that was dropped is dropped too.
        self.skipping = !rest.is_empty() && !rest.ends_with(b"\n");
    }
}

impl Writer {
    async fn run(mut self, mut data: mpsc::Receiver<Data>, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
        let mut tick = tokio::time::interval(HOLD / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(Ctl::Flush(done)) => {
                        // Everything queued before the flush request is written first.
                        while let Ok(d) = data.try_recv() {
                            self.write(d);
                        }
                        self.release_held(true);
                        let _ = done.send(());
                    }
                    Some(c) => self.control(c),
                    None => return,
                },
                d = data.recv() => match d {
                    Some(d) => self.write(d),
                    None => return,
                },
                _ = tick.tick(), if !self.holding.is_empty() => self.release_held(false),
            }
        }
    }

    fn app(&mut self, app: &Arc<str>) -> &mut AppLog {
        self.apps.entry(app.clone()).or_insert_with(|| AppLog {
            spec: LogSpec::default(),
            out: StreamFile::default(),
            err: StreamFile::default(),
            held: Default::default(),
        })
    }

    fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Configure { app, spec } => {
                let a = self.app(&app);
                if a.spec.stdout_file != spec.stdout_file
                    || a.spec.stderr_file != spec.stderr_file
                    || a.spec.combine != spec.combine
                    || a.spec.format != spec.format
                {
                    // Another file or format: start afresh at the next write.
                    for sf in [&mut a.out, &mut a.err] {
                        sf.file = None;
                        sf.partial = false;
                        sf.partial_len = 0;
                        sf.resumed = false;
                    }
                }
                a.spec = spec;
            }
            Ctl::Remove { app } => {
                self.apps.remove(&app);
                self.holding.retain(|(a, _)| *a != app);
            }
            Ctl::Reopen => {
                for a in self.apps.values_mut() {
                    a.out.file = None;
                    a.out.partial_len = 0;
                    a.err.file = None;
                    a.err.partial_len = 0;
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
                let (combine, path) = match self.apps.get(&app) {
                    Some(a) => {
                        let stream = if a.spec.combine { Stream::Out } else { stream };
                        (
                            a.spec.combine,
                            stream_path(&self.dir, &app, stream, &a.spec),
                        )
                    }
                    None => (false, log_path(&self.dir, &app, stream)),
                };
                let stream = if combine { Stream::Out } else { stream };
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
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let entry = self.apps.entry(d.app.clone()).or_insert_with(|| AppLog {
            spec: LogSpec::default(),
            out: StreamFile::default(),
            err: StreamFile::default(),
            held: Default::default(),
        });
        let AppLog {
            spec,
            out,
            err,
            held,
        } = entry;
        let stream = if spec.combine { Stream::Out } else { d.stream };
        let sf = if stream == Stream::Out { out } else { err };
        if !sf.resumed {
            sf.resumed = true;
            if spec.format == crate::config::logs::LogFormat::Text {
                sf.partial = ends_mid_line(&stream_path(&self.dir, &d.app, stream, spec));
            }
        }
        let mut pieces = d.bytes.split_inclusive(|&b| b == b'\n');
        if sf.skipping {
            // The rest of a line whose beginning was dropped.
            for piece in pieces.by_ref() {
                if piece.ends_with(b"\n") {
                    sf.skipping = false;
                    break;
                }
            }
        }
        match spec.format {
            crate::config::logs::LogFormat::Text => {
                let mut stamp = Vec::with_capacity(25);
                crate::util::rfc3339(d.time, &mut stamp);
                stamp.push(b' ');
                let mut partial = sf.partial;
                for piece in pieces {
                    if !partial {
                        buf.extend_from_slice(&stamp);
                    }
                    buf.extend_from_slice(piece);
                    partial = piece.last() != Some(&b'\n');
                }
            }
            crate::config::logs::LogFormat::Json => {
                let h = &mut held[d.stream as usize];
                let was_empty = h.bytes.is_empty();
                for piece in pieces {
                    if let Some(line) = piece.strip_suffix(b"\n") {
                        let (time, line) = if h.bytes.is_empty() {
                            (d.time, line)
                        } else {
                            h.bytes.extend_from_slice(line);
                            (h.time.unwrap_or(d.time), &h.bytes[..])
                        };
                        json_line(&mut buf, time, &d.app, d.stream, line, false);
                        h.bytes.clear();
                        h.time = None;
                        h.since = None;
                    } else {
                        if h.bytes.is_empty() {
                            h.time = Some(d.time);
                            h.since = Some(std::time::Instant::now());
                        }
                        h.bytes.extend_from_slice(piece);
                        while h.bytes.len() >= JSON_LINE_MAX {
                            let cut = utf8_cut(&h.bytes, JSON_LINE_MAX);
                            json_line(
                                &mut buf,
                                h.time.unwrap_or(d.time),
                                &d.app,
                                d.stream,
                                &h.bytes[..cut],
                                true,
                            );
                            h.bytes.drain(..cut);
                            h.time = Some(d.time);
                        }
                    }
                }
                if was_empty && !h.bytes.is_empty() {
                    self.holding.push((d.app.clone(), d.stream));
                }
            }
        }
        self.output(&d.app, stream, &buf);
        self.buf = buf;
    }

    /// Writes formatted lines to an app's stream file (after the notice of lines lost before,
    /// if any), and passes what was written on to the followers.
    fn output(&mut self, app: &Arc<str>, stream: Stream, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let dir = &self.dir;
        let Some(a) = self.apps.get_mut(app) else {
            return;
        };
        let path = stream_path(dir, app, stream, &a.spec);
        let format = a.spec.format;
        let sf = if stream == Stream::Out {
            &mut a.out
        } else {
            &mut a.err
        };
        let lost_before = sf.lost;
        let mut notice = vec![];
        let mut written = 0;
        if sf.lost > 0 {
            let now = SystemTime::now();
            let text = format!(
                "{} lines dropped ({}) since {}",
                sf.lost,
                sf.lost_why,
                crate::util::rfc3339_string(sf.lost_since.unwrap_or(now))
            );
            match format {
                crate::config::logs::LogFormat::Text => {
                    crate::util::rfc3339(now, &mut notice);
                    notice.push(b' ');
                    notice.extend_from_slice(b"paddock: ");
                    notice.extend_from_slice(text.as_bytes());
                    notice.push(b'\n');
                }
                crate::config::logs::LogFormat::Json => {
                    let line = format!("paddock: {text}");
                    json_line(&mut notice, now, app, stream, line.as_bytes(), false);
                }
            }
            let n = sf.put(app, &path, &a.spec, &notice);
            if n == notice.len() {
                eprintln!("paddock: {app}: {text}; writing {} again", path.display());
                sf.lost = 0;
                sf.lost_since = None;
                written = n;
            } else {
                // Still failing: the notice itself is not a lost line, the data is.
                sf.lost = lost_before + count_lines(buf);
                sf.skipping = !buf.ends_with(b"\n");
                notice.clear();
            }
        }
        let done = if written > 0 || lost_before == 0 {
            sf.put(app, &path, &a.spec, buf)
        } else {
            0
        };
        let newly_lost = sf
            .lost
            .saturating_sub(if written > 0 { 0 } else { lost_before });
        if newly_lost > 0 {
            let mut counts = match self.dropped.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            *counts.entry(app.clone()).or_insert(0) += newly_lost;
        }
        notice.extend_from_slice(&buf[..done]);
        if notice.is_empty() {
            return;
        }
        let sent = &notice;
        sf.followers.retain_mut(|f| {
            if f.dropped > 0 {
                let note = format!(
                    "[paddock: {} bytes dropped, the reader was too slow]\n",
                    f.dropped
                )
                .into_bytes();
                if !f.offer(note) {
                    f.dropped += sent.len() as u64;
                    return !f.tx.is_closed();
                }
                f.dropped = 0;
            }
            if f.tx.is_closed() {
                return false;
            }
            if !f.offer(sent.clone()) {
                f.dropped += sent.len() as u64;
            }
            true
        });
    }

    /// JSON format: writes unfinished lines held for longer than HOLD (all of them with
    /// `all`), each as an object with `"partial": true`.
    fn release_held(&mut self, all: bool) {
        let holding = std::mem::take(&mut self.holding);
        let mut buf = std::mem::take(&mut self.buf);
        for (app, stream) in holding {
            let Some(a) = self.apps.get_mut(&app) else {
                continue;
            };
            let h = &mut a.held[stream as usize];
            if h.bytes.is_empty() {
                continue;
            }
            if !all && h.since.is_some_and(|s| s.elapsed() < HOLD) {
                self.holding.push((app, stream));
                continue;
            }
            buf.clear();
            json_line(
                &mut buf,
                h.time.unwrap_or_else(SystemTime::now),
                &app,
                stream,
                &h.bytes,
                true,
            );
            h.bytes.clear();
            h.time = None;
            h.since = None;
            let to = if a.spec.combine { Stream::Out } else { stream };
            self.output(&app, to, &buf);
        }
        self.buf = buf;
    }
}

/// The longest prefix of `b` of at most `max` bytes that does not end inside a UTF-8 character.
fn utf8_cut(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut cut = max;
    // Back over at most 3 continuation bytes to the start of the character they belong to.
    let mut back = 0;
    while cut > 0 && back < 4 && b[cut] & 0xC0 == 0x80 {
        cut -= 1;
        back += 1;
    }
    if cut == 0 || back == 4 { max } else { cut }
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
    fn json_lines_are_valid_for_any_bytes() {
        let mut out = vec![];
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123);
        json_line(
            &mut out,
            t,
            "a\"b",
            Stream::Err,
            b"x\xff\xfe\"\\\t\x1b\x00",
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(out.ends_with(b"}\n") && out.iter().filter(|&&c| c == b'\n').count() == 1);
        assert_eq!(v["app"], "a\"b");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "x\u{fffd}\u{fffd}\"\\\t\u{1b}\u{0}");
        assert_eq!(v["partial"], true);
        assert_eq!(v["time"], "2025-11-24T16:00:00.123Z");
    }

    #[test]
    fn cuts_keep_utf8_characters_whole() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_cut(s, 100), s.len());
        assert_eq!(utf8_cut(s, 2), 1);
        assert_eq!(utf8_cut(s, 3), 3);
        assert_eq!(utf8_cut(s, 5), 3);
        assert_eq!(utf8_cut(s, 6), 6);
        assert_eq!(utf8_cut(s, 9), 6);
        assert_eq!(
            utf8_cut(b"\x80\x80\x80\x80\x80", 3),
            3,
            "not UTF-8: cut anyway"
        );
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"a\nb"), 2);
        assert_eq!(count_lines(b"a\nb\n"), 2);
    }

    #[test]
    fn a_failed_write_drops_whole_lines() {
        // /dev/full refuses every write with ENOSPC, as a full disk does.
        let mut sf = StreamFile::default();
        let spec = LogSpec::default();
        let n = sf.put("t", Path::new("/dev/full"), &spec, b"one\ntwo\nthr");
        assert_eq!(n, 0);
        assert_eq!(sf.lost, 3);
        assert!(sf.skipping, "the rest of `thr…` is dropped too");
        assert!(!sf.partial);
        assert_eq!(sf.lost_why, "disk full");
        // A regular file takes the next lines again.
        let d = tmp("put");
        let p = d.join("a.out");
        let mut sf = StreamFile::default();
        assert_eq!(sf.put("t", &p, &spec, b"ab"), 2);
        assert!(sf.partial);
        assert_eq!(sf.partial_len, 2);
        assert_eq!(sf.put("t", &p, &spec, b"c\nd"), 3);
        assert_eq!(sf.partial_len, 1);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc\nd");
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
