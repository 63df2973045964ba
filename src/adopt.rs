//! What a restarted paddock needs to take its apps back: one record per running app process in
//! `STATE_DIR/run/APP.json` (pid, its start time and boot id — so a reused pid is never taken
//! for the app —, process group, cgroup directory, readiness), written when the process starts
//! or becomes ready and removed when it is gone.
//!
//! After a crash (`kill -9`) or `paddock reexec`, `serve` reads the records: a process that is
//! still the one recorded is adopted (supervised, signalled and waited for through a pidfd),
//! one whose app is no longer configured is stopped, and a stale record is dropped.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Records are small; anything bigger is not one of ours.
const MAX_RECORD: u64 = 64 * 1024;

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

fn path_of(dir: &Path, app: &str) -> PathBuf {
    dir.join(format!("{app}.json"))
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (start time in ticks, process group) of a live process, from /proc/PID/stat.
pub fn stat_of(pid: i32) -> Option<(u64, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
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

/// Writes (atomically: a temporary file renamed over) the record of an app.
pub fn write(dir: &Path, r: &Record) -> std::io::Result<()> {
    crate::util::write_json_record(dir, &r.app, r)
}

pub fn remove(dir: &Path, app: &str) {
    let _ = std::fs::remove_file(path_of(dir, app));
}

/// Every record in `dir`; a file that is not a valid record is reported and removed.
pub fn load_all(dir: &Path) -> Vec<Record> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
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
            Ok(r) if r.app == app => out.push(r),
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
    out.sort_by(|a, b| a.app.cmp(&b.app));
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

    #[test]
    fn records_round_trip_and_garbage_is_dropped() {
        let d = crate::util::TestDir::new("adopt");
        let me = std::process::id() as i32;
        let (ticks, pg) = stat_of(me).unwrap();
        let r = Record {
            app: "a".into(),
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
        };
        write(d.path(), &r).unwrap();
        std::fs::write(d.path().join("b.json"), b"{not json").unwrap();
        std::fs::write(d.path().join("c.json"), serde_json::to_vec(&r).unwrap()).unwrap();
        std::fs::write(d.path().join(".a.tmp"), b"torn").unwrap();
        let all = load_all(d.path());
        assert_eq!(all, vec![r.clone()]);
        assert!(r.alive(&boot_id()));
        assert!(
            !Record {
                start_ticks: ticks + 1,
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
        // the bad files are gone
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        remove(d.path(), "a");
        assert!(load_all(d.path()).is_empty());
    }

    #[test]
    fn stat_parses_names_with_parentheses() {
        // Our own name has none; the parser must survive a ')' in the middle anyway.
        assert!(stat_of(std::process::id() as i32).is_some());
        assert!(stat_of(i32::MAX).is_none());
    }
}
