//! What a restarted paddock needs to take its apps back: one record per running app process
//! (pid, its start time and boot id — so a reused pid is never taken for the app —, process
//! group, cgroup directory, readiness), written when the process starts or becomes ready and
//! dropped when it is gone.
//!
//! The records live in one journal, `STATE_DIR/run/records`: a line of JSON per change (`Up`
//! with the record, `Gone` with the app's name), appended with one `write(2)` and compacted
//! (the live records written to a temporary file renamed over it) at start and whenever it has
//! grown to four times its size after the last compaction. A file per app, written to a
//! temporary file and renamed, cost two new inodes per start of every app (most of paddock's
//! own time when 1000 apps start). A line cannot be torn by paddock's death (the kernel
//! finishes a `write` into the page cache); a power loss may tear the last one, but records
//! only matter within one boot (the boot id is checked), so none is synced to disk. Records
//! in `STATE_DIR/run/APP.json`, one per file, as earlier builds of paddock wrote them, are read too
//! (an upgrade by `reexec` adopts what the old binary started) and folded into the journal.
//!
//! After a crash (`kill -9`) or `paddock reexec`, `serve` reads the records: a process that is
//! still the one recorded is adopted (supervised, signalled and waited for through a pidfd),
//! one whose app is no longer configured is stopped, and a stale record is dropped.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Records are small; anything bigger is not one of ours.
const MAX_RECORD: u64 = 64 * 1024;
/// The journal's name in the run directory.
pub const JOURNAL: &str = "records";
/// A journal larger than this is not read: compaction keeps it within four times the live
/// records' size (a few hundred bytes an app).
const MAX_JOURNAL: u64 = 64 << 20;
/// The journal is compacted once it is this large and four times its size after the last
/// compaction.
const COMPACT_FLOOR: u64 = 256 << 10;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub app: String,
    pub pid: i32,
    pub pgid: i32,
    /// Field 22 of /proc/PID/stat: clock ticks after boot when the process started.
    pub start_ticks: u64,
    /// /proc/sys/kernel/random/boot_id at the time.
    pub boot_id: String,
    /// The app's cgroup directory name, when it has one.
    #[serde(default)]
    pub cgroup: Option<String>,
    pub ready: bool,
    /// A digest of the definition the process was started from.
    #[serde(default)]
    pub spec_digest: u64,
    /// How to stop it if its app is gone from the configuration.
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
    /// The app's automatic restarts so far, which the next paddock carries on (absent in
    /// records of older versions: 0).
    #[serde(default)]
    pub restarts: u64,
}

pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (start time in ticks, process group) of a live process, from /proc/PID/stat.
pub fn stat_of(pid: i32) -> Option<(u64, i32)> {
    use std::io::Read;
    // One read: the line is a few hundred bytes (the command name at most 64).
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    // The command name (field 2) is in parentheses and may hold any byte: parse after the
    // last ')'.
    let close = buf[..n].iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&buf[close + 1..n]).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): pgrp is field 5, starttime field 22.
    let state = f.first()?;
    if *state == "Z" || *state == "X" {
        return None; // exited, not yet reaped: not a process to adopt
    }
    Some((f.get(19)?.parse().ok()?, f.get(2)?.parse().ok()?))
}

/// How long ago a process started `start_ticks` after boot.
pub fn age(start_ticks: u64) -> std::time::Duration {
    // SAFETY: sysconf takes a constant and returns a number.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let up = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    std::time::Duration::from_secs_f64((up - start_ticks as f64 / hz).max(0.0))
}

impl Record {
    /// The process this record names is still alive and still the same one.
    pub fn alive(&self, boot_id: &str) -> bool {
        self.pid > 1
            && self.boot_id == boot_id
            && stat_of(self.pid).is_some_and(|(t, _)| t == self.start_ticks)
    }
}

/// A line of the journal.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    /// The app's process, as it is now.
    Up(Record),
    /// The app has no process any more.
    Gone(String),
}

/// The journal of records in a run directory (see the module's notes).
pub struct Journal {
    file: crate::journal::Journal,
    /// Record files of an earlier build, read at start: removed once the journal holds what
    /// was kept of them.
    legacy: Vec<PathBuf>,
}

impl Journal {
    /// The journal of `dir`, not yet read or opened.
    pub fn new(dir: &Path) -> Journal {
        Journal {
            file: crate::journal::Journal::new(
                dir,
                JOURNAL,
                "process records",
                COMPACT_FLOOR,
                MAX_JOURNAL,
            ),
            legacy: vec![],
        }
    }

    /// The run directory it is in.
    pub fn dir(&self) -> &Path {
        self.file.dir()
    }

    /// The app's process as it is now.
    pub fn up(&mut self, r: &Record) -> std::io::Result<()> {
        self.append(&Entry::Up(r.clone()))
    }

    /// The app has no process any more.
    pub fn gone(&mut self, app: &str) -> std::io::Result<()> {
        self.append(&Entry::Gone(app.to_string()))
    }

    fn append(&mut self, e: &Entry) -> std::io::Result<()> {
        if self.file.append(e)? {
            let live: Vec<Record> = self.read().into_values().collect();
            self.rewrite(&live)?;
        }
        Ok(())
    }

    /// Replaces the journal with these records (a temporary file renamed over it).
    pub fn rewrite(&mut self, live: &[Record]) -> std::io::Result<()> {
        let lines: Vec<Entry> = live.iter().map(|r| Entry::Up(r.clone())).collect();
        self.file.replace(&lines)?;
        for p in self.legacy.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    /// The journal's records by app, each as its last line left it.
    fn read(&self) -> std::collections::BTreeMap<String, Record> {
        let mut out = std::collections::BTreeMap::new();
        for e in self.file.read::<Entry>(|_| Ok(())) {
            match e {
                Entry::Up(r) => {
                    out.insert(r.app.clone(), r);
                }
                Entry::Gone(app) => {
                    out.remove(&app);
                }
            }
        }
        out
    }

    /// Every record: the journal's, and those of the files an earlier build wrote (removed
    /// when the caller rewrites the journal with what it keeps).
    pub fn load_all(&mut self) -> Vec<Record> {
        let mut all = self.read();
        for (r, path) in load_files(self.file.dir()) {
            all.insert(r.app.clone(), r);
            self.legacy.push(path);
        }
        all.into_values().collect()
    }
}

/// Records in `APP.json` files (earlier builds of paddock: one file per app) with their paths;
/// a file that is not a valid record is reported and removed.
fn load_files(dir: &Path) -> Vec<(Record, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") && name != format!(".{JOURNAL}.tmp") {
            let _ = std::fs::remove_file(&path); // a write cut short by the crash
            continue;
        }
        let Some(app) = name.strip_suffix(".json") else {
            continue;
        };
        let r = crate::util::read_regular(&path, MAX_RECORD)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
        match r {
            Ok(r) if r.app == app => out.push((r, path)),
            Ok(_) => {
                eprintln!(
                    "paddock: {}: names another app; ignored and removed",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
            }
            Err(why) => {
                eprintln!(
                    "paddock: {}: not a process record ({why}); ignored and removed",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by(|a, b| a.0.app.cmp(&b.0.app));
    out
}

/// A stable digest (FNV-1a) of an app's definition, to tell whether its file changed while the
/// process ran.
pub fn digest(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A pidfd for `pid` (not necessarily our child).
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(app: &str) -> Record {
        let me = std::process::id() as i32;
        let (ticks, pg) = stat_of(me).unwrap();
        Record {
            app: app.into(),
            pid: me,
            pgid: pg,
            start_ticks: ticks,
            boot_id: boot_id(),
            cgroup: None,
            ready: true,
            spec_digest: digest("x"),
            stop_signal: 15,
            stop_timeout_ms: 1000,
            restarts: 3,
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_dropped() {
        let d = crate::util::TestDir::new("adopt");
        let r = me("a");
        let mut j = Journal::new(d.path());
        j.up(&Record {
            ready: false,
            ..r.clone()
        })
        .unwrap();
        j.up(&me("gone")).unwrap();
        j.up(&r).unwrap();
        j.gone("gone").unwrap();
        // A line of garbage (a hand edit) is skipped; the lines around it count.
        let path = d.path().join(JOURNAL);
        let mut text = std::fs::read(&path).unwrap();
        text.extend(b"{not json\n\0\xff\n");
        std::fs::write(&path, &text).unwrap();
        Journal::new(d.path()).up(&me("b")).unwrap();
        // Files of an earlier build: a good one is read, bad ones and torn ones removed.
        std::fs::write(
            d.path().join("c.json"),
            serde_json::to_vec(&me("c")).unwrap(),
        )
        .unwrap();
        std::fs::write(d.path().join("x.json"), serde_json::to_vec(&r).unwrap()).unwrap();
        std::fs::write(d.path().join("y.json"), b"{not json").unwrap();
        std::fs::write(d.path().join(".c.tmp"), b"torn").unwrap();
        let mut j = Journal::new(d.path());
        let all = j.load_all();
        assert_eq!(all, vec![r.clone(), me("b"), me("c")]);
        assert!(r.alive(&boot_id()));
        assert!(
            !Record {
                start_ticks: r.start_ticks + 1,
                ..r.clone()
            }
            .alive(&boot_id())
        );
        assert!(
            !Record {
                boot_id: "other".into(),
                ..r.clone()
            }
            .alive(&boot_id())
        );
        // What is kept is the journal alone.
        j.rewrite(&[me("c")]).unwrap();
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![JOURNAL.to_string()]);
        assert_eq!(Journal::new(d.path()).load_all(), vec![me("c")]);
    }

    #[test]
    fn the_journal_stays_bounded_under_a_crash_loop() {
        let d = crate::util::TestDir::new("adopt-bound");
        let mut j = Journal::new(d.path());
        for n in 0..20_000u64 {
            let app = format!("app{}", n % 10);
            j.up(&Record {
                restarts: n,
                ..me(&app)
            })
            .unwrap();
            if n % 3 == 0 {
                j.gone(&app).unwrap();
            }
        }
        let size = std::fs::metadata(d.path().join(JOURNAL)).unwrap().len();
        assert!(size <= COMPACT_FLOOR + 1024, "journal grew to {size} bytes");
        let all = Journal::new(d.path()).load_all();
        assert_eq!(
            all.len(),
            10 - (0..10).filter(|k| (19_990 + k) % 3 == 0).count()
        );
        assert!(all.iter().any(|r| r.restarts == 19_999));
    }

    #[test]
    fn a_hostile_journal_is_moved_aside_unread() {
        for (what, make) in [("fifo", 0), ("directory", 1), ("huge", 2)] {
            let d = crate::util::TestDir::new(&format!("adopt-{what}"));
            let path = d.path().join(JOURNAL);
            match make {
                0 => {
                    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                    // SAFETY: mkfifo reads the NUL-terminated path, a live CString.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
                1 => std::fs::create_dir(&path).unwrap(),
                _ => {
                    let f = std::fs::File::create(&path).unwrap();
                    f.set_len(MAX_JOURNAL + 1).unwrap();
                }
            }
            let mut j = Journal::new(d.path());
            assert!(j.load_all().is_empty(), "{what}");
            assert!(d.path().join(format!("{JOURNAL}.bad")).exists(), "{what}");
            j.rewrite(&[me("a")]).unwrap();
            assert_eq!(Journal::new(d.path()).load_all(), vec![me("a")], "{what}");
        }
    }

    #[test]
    fn stat_parses_names_with_parentheses() {
        assert!(stat_of(std::process::id() as i32).is_some());
        assert!(stat_of(i32::MAX).is_none());
        // A name with ') ' and a byte that is not UTF-8, on a thread of ours.
        let got = std::thread::spawn(|| {
            let name = b"x) 1 2 (\xff\0";
            // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes, a live
            // array; it renames this thread only.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            // SAFETY: gettid takes nothing.
            let tid = unsafe { libc::gettid() };
            (stat_of(tid), stat_of(std::process::id() as i32))
        })
        .join()
        .unwrap();
        assert!(got.0.is_some());
        assert_eq!(got.0.map(|s| s.1), got.1.map(|s| s.1));
    }
}
