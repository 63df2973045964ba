//! What a scheduled app's last run was, kept in `STATE_DIR/schedule/APP.json` so that a
//! restarted or re-executed paddock still shows it, can tell whether a run was missed while it
//! was down (`catch_up`), and keeps a schedule paused by `paddock stop` paused. Written when a
//! run ends and when the schedule is paused or resumed. A record that is not one (hostile,
//! truncated, too big, naming another app) is ignored with a log line and removed.

use super::Wall;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MAX_RECORD: u64 = 16 * 1024;
/// Times beyond year 9999 (in ms since the epoch, either way) are not from a clock.
const MAX_TIME: i64 = 253_402_300_799_000;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exit status 0.
    Success,
    /// Any other end nobody asked for (a non-zero status, a signal, a spawn that failed, a trap).
    Failure,
    /// Stopped by `paddock stop`, an update's removal, or paddock's shutdown.
    Stopped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Stopped => "stopped",
        }
    }
}

/// One finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it started (wall clock, ms since the epoch).
    pub start: Wall,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// The exit status, when it exited.
    pub code: Option<i32>,
    /// The exit as `status` words it ("exit status 0", "killed by SIGTERM").
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub app: String,
    #[serde(default)]
    pub last: Option<LastRun>,
    /// When the last run started, also while one is under way (what `catch_up` counts from).
    #[serde(default)]
    pub last_start: Option<Wall>,
    /// `paddock stop` paused the schedule.
    #[serde(default)]
    pub paused: bool,
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("schedule")
}

fn path_of(dir: &Path, app: &str) -> PathBuf {
    dir.join(format!("{app}.json"))
}

/// Writes the record (a new file renamed over the old one).
pub fn write(dir: &Path, r: &Record) -> std::io::Result<()> {
    crate::util::write_json_record(dir, &r.app, r)
}

pub fn remove(dir: &Path, app: &str) {
    let _ = std::fs::remove_file(path_of(dir, app));
}

/// The app's record, if it has a valid one. A file that is not a valid record is logged,
/// removed and taken as none.
pub fn load(dir: &Path, app: &str) -> Option<Record> {
    let path = path_of(dir, app);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        _ => {}
    }
    let r = crate::util::read_regular(&path, MAX_RECORD)
        .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
        .and_then(|r| {
            if r.app != app {
                Err(format!("names another app (\"{}\")", r.app))
            } else if r.last.as_ref().is_some_and(|l| l.description.len() > 4096) {
                Err("its exit description is too long".into())
            } else if r
                .last
                .as_ref()
                .map(|l| l.start)
                .into_iter()
                .chain(r.last_start)
                .any(|t| !(-MAX_TIME..=MAX_TIME).contains(&t))
                || r.last
                    .as_ref()
                    .is_some_and(|l| l.duration_ms > MAX_TIME as u64)
            {
                Err("a time out of range".into())
            } else {
                Ok(r)
            }
        });
    match r {
        Ok(r) => Some(r),
        Err(why) => {
            eprintln!(
                "paddock: {}: not a schedule record ({why}); ignored and removed",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_ignored() {
        let d = crate::util::TestDir::new("sched-record");
        let dir = d.path().join("schedule");
        assert_eq!(load(&dir, "job"), None);
        let r = Record {
            app: "job".into(),
            last: Some(LastRun {
                start: 1_700_000_000_000,
                duration_ms: 1500,
                outcome: Outcome::Success,
                code: Some(0),
                description: "exit status 0".into(),
            }),
            last_start: Some(1_700_000_000_000),
            paused: true,
        };
        write(&dir, &r).unwrap();
        assert_eq!(load(&dir, "job"), Some(r.clone()));
        for bad in [
            &b"not json"[..],
            b"{\"app\":\"other\"}",
            b"{\"app\":\"job\",\"last_start\":\"x\"}",
            b"{\"app\":\"job\",\"last\":{\"start\":1e400}}",
            b"{\"app\":\"job\",\"last_start\":9223372036854775807}",
            &[0xff; 40000][..],
        ] {
            std::fs::write(dir.join("job.json"), bad).unwrap();
            assert_eq!(load(&dir, "job"), None);
            assert!(!dir.join("job.json").exists(), "a bad record is removed");
        }
        std::fs::create_dir_all(dir.join("job.json")).unwrap();
        assert_eq!(load(&dir, "job"), None, "a directory is no record");
    }
}
