//! One stream's log file: [`StreamFile`] appends whole lines (a line is written whole or not
//! at all; a failed write cuts the file back to its last line end and counts the lines lost),
//! rotates by size at line ends (`rotate`), and knows whether an earlier paddock left the file
//! mid-line.

use super::writer::Follower;
use crate::config::LogSpec;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
#[derive(Default)]
pub(super) struct StreamFile {
    pub(super) file: Option<File>,
    pub(super) size: u64,
    /// The file ends mid-line (text format: a line arrives in pieces).
    pub(super) partial: bool,
    /// How many bytes of that unfinished line are in `file` (0 after a reopen or rotation, or
    /// when an earlier paddock wrote them).
    pub(super) partial_len: u64,
    /// The file as an earlier paddock left it was looked at (see `ends_mid_line`).
    pub(super) resumed: bool,
    /// The beginning of the current line was dropped: its other pieces are dropped too.
    pub(super) skipping: bool,
    /// Lines dropped since the last successful write (disk full …), since when, and why.
    pub(super) lost: u64,
    pub(super) lost_since: Option<SystemTime>,
    pub(super) lost_why: String,
    pub(super) followers: Vec<Follower>,
}

/// Whether a log file ends in the middle of a line: an earlier paddock (before a crash or a
/// re-exec) wrote the start of a line whose rest is still to come, without a new time stamp.
pub(super) fn ends_mid_line(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut last = [0u8; 1];
    len > 0 && f.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

/// How many lines `b` holds or starts (an unfinished last line counts).
pub(super) fn count_lines(b: &[u8]) -> u64 {
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

impl StreamFile {
    /// Writes `buf` (whole lines; the first may finish the line the file ends with, the last
    /// may be unfinished), rotating at line ends. A line is written whole or not at all: when
    /// a write fails (disk full), the file is cut back to its last line end and the lines not
    /// written are counted as lost. Returns how much of `buf` is in the file.
    pub(super) fn put(&mut self, app: &str, path: &Path, spec: &LogSpec, buf: &[u8]) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tests::tmp;
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
