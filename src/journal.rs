//! A file of JSON lines that paddock keeps its state in (`adopt.rs`: the running processes;
//! `daemon/generations/store.rs`: the histories of generations): a line appended with one
//! `write(2)` per change (whole in the file or absent: paddock's death cannot tear it), and
//! compacted — the live lines written to a temporary file renamed over it — once it has grown
//! to four times its size after the last compaction (and past a floor), so that it stays
//! within a bound whatever the rate of changes. Reading is bounded too: a file that is not a
//! regular one or is over its limit is moved aside unread (`NAME.bad`), a line that does not
//! parse is reported with its number and skipped.

use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

pub struct Journal {
    dir: PathBuf,
    name: &'static str,
    /// What its lines are, for messages ("process records").
    what: &'static str,
    /// Open for appending once something was written.
    file: Option<std::fs::File>,
    /// Its size now, when it is compacted next, the least size compacted, the most read.
    bytes: u64,
    compact_at: u64,
    floor: u64,
    max: u64,
}

impl Journal {
    /// The journal `DIR/NAME`, not yet read or opened.
    pub fn new(
        dir: &Path,
        name: &'static str,
        what: &'static str,
        floor: u64,
        max: u64,
    ) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            name,
            what,
            file: None,
            bytes: 0,
            compact_at: floor,
            floor,
            max,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join(format!(".{}.tmp", self.name))
    }

    /// Appends `v` as a line; `Ok(true)` once the journal is due for compaction.
    pub fn append(&mut self, v: &impl Serialize) -> std::io::Result<bool> {
        use std::io::Write;
        let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.path())?;
            self.bytes = f.metadata()?.len();
            self.file = Some(f);
        }
        let r = self.file.as_mut().expect("opened above").write_all(&line);
        if let Err(e) = r {
            self.file = None; // opened again at the next line
            return Err(e);
        }
        self.bytes += line.len() as u64;
        Ok(self.bytes >= self.compact_at)
    }

    /// Replaces the journal with these lines (a temporary file renamed over it).
    pub fn replace<'a, T: Serialize + 'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a T>,
    ) -> std::io::Result<()> {
        let mut body = vec![];
        for v in lines {
            body.extend(serde_json::to_vec(v).map_err(std::io::Error::other)?);
            body.push(b'\n');
        }
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(self.tmp(), &body)?;
        std::fs::rename(self.tmp(), self.path())?;
        self.file = None; // the old file, renamed over
        self.bytes = body.len() as u64;
        self.compact_at = (self.bytes * 4).max(self.floor);
        Ok(())
    }

    /// Every line that parses as a `T` and passes `check`, in order; a temporary file left by
    /// a compaction cut short is removed.
    pub fn read<T: DeserializeOwned>(&self, check: impl Fn(&T) -> Result<(), String>) -> Vec<T> {
        let path = self.path();
        let _ = std::fs::remove_file(self.tmp());
        let mut out = vec![];
        if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return out;
        }
        let body = match crate::util::read_regular(&path, self.max) {
            Ok(b) => b,
            Err(why) => {
                let aside = self.dir.join(format!("{}.bad", self.name));
                let moved = std::fs::rename(&path, &aside).is_ok();
                eprintln!(
                    "paddock: {}: not a journal of {} ({why}); ignored{}",
                    path.display(),
                    self.what,
                    if moved {
                        format!(" and moved to {}", aside.display())
                    } else {
                        String::new()
                    }
                );
                return out;
            }
        };
        let mut bad = 0;
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let v = serde_json::from_slice::<T>(line)
                .map_err(|e| format!("not a line of {} ({e})", self.what))
                .and_then(|v| check(&v).map(|_| v));
            match v {
                Ok(v) => out.push(v),
                Err(why) => {
                    bad += 1;
                    if bad <= 3 {
                        eprintln!("paddock: {} line {}: {why}; skipped", path.display(), i + 1);
                    }
                }
            }
        }
        if bad > 3 {
            eprintln!(
                "paddock: {}: {bad} lines in all were skipped",
                path.display()
            );
        }
        out
    }
}
