//! App output: pipes → timestamped lines in `<state>/logs/NAME.out` / `NAME.err`, rotated by size.
//!
//! Reader tasks (one per pipe, on the main runtime) read whatever the app wrote and hand it to the
//! writer, a dedicated thread that owns every log file. The data channel is bounded: a slow disk
//! or a chatty app slows only the reading of pipes (the app eventually blocks on a full pipe, as
//! it would on a slow terminal), never the supervisor. Followers (`tail -f`) are fed by the writer
//! right after each write, so rotation is invisible to them and nothing is polled.
//!
//! Layout: this file holds the supervisor's handle ([`Logs`]), the pipe readers and `last_lines`
//! (tail); `sink` the in-process writers (wasm guests); `writer` the writer thread (formats,
//! followers, lost-line notices); `file` one stream's file (whole-line writes, rotation).

mod file;
mod readers;
mod sink;
mod writer;

use crate::config::LogSpec;
pub use sink::{Sink, SinkWriter};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
pub use writer::FOLLOW_BUDGET;
use writer::Writer;

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
    readers: Arc<readers::Readers>,
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
            readers: readers::Readers::start(data.clone())?,
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

    /// Writes out everything the apps wrote so far: what their pipes hold is read first (at
    /// most 2 s), then the writer flushes.
    pub async fn flush(&self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.readers.drain()).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Ctl::Flush(tx));
        let _ = rx.await;
    }

    /// Reads a pipe (its non-blocking read end) until EOF, forwarding everything to the
    /// writer (`readers.rs`).
    pub fn spawn_reader(&self, fd: OwnedFd, app: Arc<str>, stream: Stream) -> std::io::Result<()> {
        self.readers.add(fd, app, stream)
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

/// Lines each app lost (disk full and other write errors), shared with the supervisor.
pub type DropCounts = Arc<std::sync::Mutex<HashMap<Arc<str>, u64>>>;

/// The file a stream of an app goes to.
pub fn stream_path(dir: &Path, app: &str, stream: Stream, spec: &LogSpec) -> PathBuf {
    let own = match stream {
        Stream::Out => &spec.stdout_file,
        Stream::Err => &spec.stderr_file,
    };
    own.clone().unwrap_or_else(|| log_path(dir, app, stream))
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

    pub(super) fn tmp(name: &str) -> PathBuf {
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
}
