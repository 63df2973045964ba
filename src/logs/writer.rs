//! The log writer: a thread of its own that owns every log file. It formats what the readers
//! and sinks send (time-stamped text lines, or JSON objects with unfinished lines held for a
//! while), writes it through each stream's `file`, writes a notice of lines lost when writing
//! works again, counts drops for the supervisor, and feeds followers (`tail -f`) within a budget.

use super::file::{StreamFile, count_lines, ends_mid_line};
use super::{Ctl, Data, DropCounts, MAX_TAIL_LINES, Stream, last_lines, log_path, stream_path};
use crate::config::LogSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
pub(super) struct Follower {
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

pub(super) struct AppLog {
    spec: LogSpec,
    out: StreamFile,
    err: StreamFile,
    /// JSON format: unfinished lines of stdout and stderr (as written by the app, before
    /// `combine` merges them).
    held: Option<Box<[Held; 2]>>,
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    /// Boxed: the map keeps twice as many slots as apps, each only a pointer wide.
    pub(super) apps: HashMap<Arc<str>, Box<AppLog>>,
    pub(super) buf: Vec<u8>,
    pub(super) dropped: DropCounts,
    /// Streams holding an unfinished JSON line.
    pub(super) holding: Vec<(Arc<str>, Stream)>,
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

impl Writer {
    pub(super) async fn run(
        mut self,
        mut data: mpsc::Receiver<Data>,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
    ) {
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
        self.apps.entry(app.clone()).or_insert_with(|| {
            Box::new(AppLog {
                spec: LogSpec::default(),
                out: StreamFile::default(),
                err: StreamFile::default(),
                held: None,
            })
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
        let entry = self.apps.entry(d.app.clone()).or_insert_with(|| {
            Box::new(AppLog {
                spec: LogSpec::default(),
                out: StreamFile::default(),
                err: StreamFile::default(),
                held: None,
            })
        });
        let AppLog {
            spec,
            out,
            err,
            held,
        } = &mut **entry;
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
                let h = &mut held.get_or_insert_with(Default::default)[d.stream as usize];
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
            let Some(h) = a.held.as_mut().map(|h| &mut h[stream as usize]) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
