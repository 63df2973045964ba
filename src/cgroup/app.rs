//! One app's cgroup ([`AppCgroup`]), in every hierarchy paddock uses: the `cgroup.procs` a
//! child joins before exec, limits applied (also to a running app), members, a kill of the
//! whole tree (`cgroup.kill`, or freeze, SIGKILL each, thaw on v1), OOM-kill counting, usage
//! for status and metrics, and removal.

use super::{CgLimits, Dir, Kind, v1, v2, write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Resource use of an app's cgroup (None: not known on this host).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
}

/// One app's cgroup, in every hierarchy paddock uses.
#[derive(Debug)]
pub struct AppCgroup {
    /// Shared with the usage gauges handed out (`usage_gauge`, one per status board entry): a
    /// directory made later gives this app a new list, the gauges keep theirs.
    pub(super) dirs: std::sync::Arc<Vec<Dir>>,
    /// Directories made only once a limit needs them (lean.rs).
    pub(super) deferred: Vec<Dir>,
    pub limits: CgLimits,
    /// The OOM-kill counter when the current process started.
    pub(super) oom_seen: u64,
    /// The last usage read and when (`usage`), shared with the status board's gauge.
    pub(super) cached: std::sync::Arc<std::sync::Mutex<Cached>>,
}

/// How old the usage in status and metrics may be before it is read again: reading three cgroup
/// files per app on every `paddock status` took 30 ms with 1000 apps.
pub const USAGE_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(1000);
/// Usage older than `USAGE_MAX_AGE` but younger than this is answered at once, and read again
/// in the background (`paddock-usage`) for the next question (stale-while-revalidate): a
/// `paddock status` every few seconds never waits for 3000 cgroup files, and what it shows is
/// at most as old as the time since the one before. Older usage is read before answering.
pub const USAGE_STALE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// An app's last usage read, and whether a read in the background is asked for.
#[derive(Debug, Default)]
pub struct Cached {
    at: Option<std::time::Instant>,
    usage: Usage,
    pending: bool,
}

type Cache = std::sync::Arc<std::sync::Mutex<Cached>>;
type Dirs = std::sync::Arc<Vec<Dir>>;

/// The thread that reads usage in the background, and its queue (one entry per app at most:
/// `Cached::pending`).
struct Refresher {
    queue: std::sync::Mutex<Vec<(Cache, Dirs)>>,
    wake: std::sync::Condvar,
}

/// The refresher, started at the first use (None: no thread could be started; usage is then
/// read before answering).
fn refresher() -> Option<&'static Refresher> {
    static R: std::sync::OnceLock<Option<&'static Refresher>> = std::sync::OnceLock::new();
    *R.get_or_init(|| {
        let r: &'static Refresher = Box::leak(Box::new(Refresher {
            queue: Default::default(),
            wake: Default::default(),
        }));
        std::thread::Builder::new()
            .name("paddock-usage".into())
            .spawn(move || {
                loop {
                    let batch = {
                        let mut q = lock(&r.queue);
                        while q.is_empty() {
                            q = match r.wake.wait(q) {
                                Ok(q) => q,
                                Err(p) => p.into_inner(),
                            };
                        }
                        std::mem::take(&mut *q)
                    };
                    for (cache, dirs) in batch {
                        let u = read_usage(&dirs);
                        let mut c = lock(&cache);
                        (c.at, c.usage, c.pending) = (Some(std::time::Instant::now()), u, false);
                    }
                }
            })
            .ok()
            .map(|_| r)
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl AppCgroup {
    /// The directories (the first one is the one shown in status).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path()).collect()
    }

    /// Opens each directory's `cgroup.procs` (O_WRONLY|O_CLOEXEC) for a spawn: the child
    /// writes "0" to each. Not kept open (six descriptors per app on a hybrid host would bound
    /// how many apps fit under paddock's descriptor limit), nor their paths kept (made here).
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, String> {
        self.dirs
            .iter()
            .map(|d| {
                d.open("cgroup.procs", libc::O_WRONLY).map_err(|e| {
                    format!(
                        "{}: {}",
                        d.file("cgroup.procs").display(),
                        crate::util::io_reason(&e)
                    )
                })
            })
            .collect()
    }

    /// Sets (or, for keys now absent, removes) the limits.
    pub fn apply(&mut self, l: &CgLimits) -> Result<(), String> {
        self.create_deferred(l)?;
        for d in self.dirs.iter() {
            let p = &d.path();
            let v2 = matches!(*d.kind, Kind::V2 { .. });
            if d.has("memory") && (l.memory.is_some() || self.limits.memory.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("memory.max"),
                        &l.memory.map_or("max".into(), |m| m.to_string()),
                    )
                    .and_then(|()| {
                        // No swap beyond the limit; absent without swap accounting.
                        let sw = p.join("memory.swap.max");
                        if sw.exists() {
                            let v = if l.memory.is_some() { "0" } else { "max" };
                            write(&sw, v)
                        } else {
                            Ok(())
                        }
                    })
                } else {
                    v1::set_memory(p, l.memory)
                };
                r.map_err(|e| format!("key `limits.memory`: {e}"))?;
            }
            if d.has("cpu") && (l.cpu.is_some() || self.limits.cpu.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("cpu.max"),
                        &l.cpu.map_or("max 100000".into(), v2::cpu_max),
                    )
                } else {
                    v1::set_cpu(p, l.cpu)
                };
                r.map_err(|e| format!("key `limits.cpu`: {e}"))?;
            }
            if d.has("pids") && (l.pids.is_some() || self.limits.pids.is_some()) {
                let r = if v2 {
                    write(
                        &p.join("pids.max"),
                        &l.pids.map_or("max".into(), |n| n.to_string()),
                    )
                } else {
                    v1::set_pids(p, l.pids)
                };
                r.map_err(|e| format!("key `limits.pids`: {e}"))?;
            }
        }
        self.limits = *l;
        Ok(())
    }

    /// The directory membership is read from: the cgroup2 one if any, else the first.
    fn main_dir(&self) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.is_v2()).or(self.dirs.first())
    }

    /// Pids in the cgroup (zombies are not listed).
    pub fn members(&self) -> Vec<i32> {
        let Some(d) = self.main_dir() else {
            return vec![];
        };
        std::fs::read_to_string(d.file("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs everything in the cgroup: `cgroup.kill` on cgroup2 (also the controller-less
    /// one of a hybrid host), else freeze, kill each member, thaw (v1).
    pub fn kill(&self) -> Result<(), String> {
        if let Some(d) = self.dirs.iter().find(|d| d.is_v2()) {
            let k = d.file("cgroup.kill");
            if k.exists() {
                return write(&k, "1");
            }
        }
        if self.members().is_empty() {
            return Ok(());
        }
        let freezer = self.dirs.iter().find(|d| d.has("freezer"));
        if let Some(f) = freezer {
            v1::freeze(&f.path())?;
        }
        for _ in 0..100 {
            let m = self.members();
            if m.is_empty() {
                break;
            }
            for pid in m {
                // SAFETY: kill(2) takes no pointers; pids just read from the app's cgroup.procs (a
                // member that exits meanwhile could in theory be reused: the usual race of pid
                // kills, frozen away with a freezer).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if freezer.is_some() {
                break; // frozen: nothing can fork meanwhile
            }
        }
        if let Some(f) = freezer {
            v1::thaw(&f.path())?;
        }
        Ok(())
    }

    /// Kills what is left and waits (bounded) until the cgroup is empty: a new instance must not
    /// start next to the old one's processes.
    pub fn kill_and_wait(&self, within: std::time::Duration) -> Result<(), String> {
        if self.members().is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        self.kill()?;
        loop {
            let m = self.members();
            if m.is_empty() {
                return Ok(());
            }
            if t.elapsed() > within {
                return Err(format!(
                    "processes of the previous instance are still in cgroup {} after SIGKILL: {}",
                    self.main_dir()
                        .map_or(String::new(), |d| d.path().display().to_string()),
                    m.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }

    /// The kernel's OOM-kill counter of the cgroup (v2 memory.events, v1 memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        let d = self.dirs.iter().find(|d| d.has("memory"))?;
        let f = if matches!(*d.kind, Kind::V2 { .. }) {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        v2::keyed(&std::fs::read_to_string(d.file(f)).ok()?, "oom_kill")
    }

    /// Remembers the counter when a process starts.
    pub fn mark_start(&mut self) {
        if self.limits.memory.is_some() {
            self.oom_seen = self.oom_kills().unwrap_or(self.oom_seen);
        }
    }

    /// Whether the kernel OOM-killed something in the cgroup since the process started.
    pub fn oom_killed_since_start(&mut self) -> bool {
        match self.oom_kills() {
            Some(n) if n > self.oom_seen => {
                self.oom_seen = n;
                true
            }
            _ => false,
        }
    }

    /// The usage, read at most `USAGE_MAX_AGE` ago.
    pub fn usage(&self) -> Usage {
        cached_usage(&self.cached, &self.dirs)
    }

    /// `usage` for another thread, whenever it asks (the status board): the same cache, the
    /// same directories.
    pub fn usage_gauge(&self) -> impl Fn() -> Usage + Send + Sync + 'static {
        let (cached, dirs) = (self.cached.clone(), self.dirs.clone()); // two reference counts
        move || cached_usage(&cached, &dirs)
    }

    /// The usage as the kernel has it now.
    pub fn read_usage(&self) -> Usage {
        read_usage(&self.dirs)
    }

    /// Removes the directories (the cgroup must be empty: kill first). Retries briefly while
    /// killed processes finish exiting.
    pub fn remove(self) -> Result<(), String> {
        let mut errs = vec![];
        for d in self.dirs.iter() {
            let mut last = None;
            for _ in 0..200 {
                match std::fs::remove_dir(d.path()) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if let Some(e) = last {
                errs.push(format!(
                    "rmdir {}: {}",
                    d.path().display(),
                    crate::util::io_reason(&e)
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

/// The usage in `cache`: as it is when read less than `USAGE_MAX_AGE` ago; as it is, with a
/// read in the background asked for, when less than `USAGE_STALE_MAX` ago; else read now.
fn cached_usage(cache: &Cache, dirs: &Dirs) -> Usage {
    let now = std::time::Instant::now();
    let mut c = lock(cache);
    match c.at.map(|at| now.saturating_duration_since(at)) {
        Some(age) if age < USAGE_MAX_AGE => return c.usage,
        Some(age) if age < USAGE_STALE_MAX => {
            if c.pending {
                return c.usage;
            }
            if let Some(r) = refresher() {
                c.pending = true;
                lock(&r.queue).push((cache.clone(), dirs.clone()));
                r.wake.notify_one();
                return c.usage;
            }
        }
        _ => {}
    }
    let u = read_usage(dirs);
    (c.at, c.usage) = (Some(now), u);
    u
}

/// The usage of these directories as the kernel has it now.
fn read_usage(dirs: &[Dir]) -> Usage {
    let mut u = Usage::default();
    let mut buf = [0u8; 1024];
    for d in dirs {
        let v2 = matches!(*d.kind, Kind::V2 { .. });
        if d.has("memory") && u.memory_bytes.is_none() {
            let f = if v2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            };
            u.memory_bytes = d.read_small(f, &mut buf).and_then(v2::number_or_max);
        }
        if d.has("pids") && u.pids.is_none() {
            u.pids = d
                .read_small("pids.current", &mut buf)
                .and_then(v2::number_or_max);
        }
        if u.cpu_usec.is_none() {
            if d.is_v2() {
                // cpu.stat's usage_usec exists on every cgroup2 directory, controller or not.
                u.cpu_usec = d
                    .read_small("cpu.stat", &mut buf)
                    .and_then(|s| v2::keyed(s, "usage_usec"));
            } else if d.has("cpuacct") {
                u.cpu_usec = d
                    .read_small("cpuacct.usage", &mut buf)
                    .and_then(v2::number_or_max)
                    .map(|ns| ns / 1000);
            }
        }
    }
    u
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Usage read less than a second ago is answered as it is; up to `USAGE_STALE_MAX` old, as
    /// it is while `paddock-usage` reads it again for the next question; older, read first.
    /// A directory in /tmp stands in for the cgroup (the files are the same text).
    #[test]
    fn stale_usage_is_answered_at_once_and_read_again_behind() {
        let t = crate::util::TestDir::new("usage");
        let app = t.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let mem = |v: u64| std::fs::write(app.join("memory.current"), format!("{v}\n")).unwrap();
        mem(100);
        std::fs::write(app.join("pids.current"), "3\n").unwrap();
        let d = Dir {
            kind: Arc::new(Kind::V2 {
                controllers: vec!["memory".into(), "pids".into()],
            }),
            base: Arc::new(super::super::Base::new(t.path().to_path_buf())),
            name: "app".into(),
        };
        let dirs: Dirs = Arc::new(vec![d]);
        let cache: Cache = Default::default();
        let age = |a: Duration| lock(&cache).at = Instant::now().checked_sub(a);

        let u = cached_usage(&cache, &dirs);
        assert_eq!(
            (u.memory_bytes, u.pids, u.cpu_usec),
            (Some(100), Some(3), None)
        );
        mem(200);
        assert_eq!(
            cached_usage(&cache, &dirs).memory_bytes,
            Some(100),
            "fresh: kept"
        );
        age(Duration::from_secs(2));
        assert_eq!(
            cached_usage(&cache, &dirs).memory_bytes,
            Some(100),
            "stale: at once"
        );
        let start = Instant::now();
        while cached_usage(&cache, &dirs).memory_bytes != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(5), "never read again");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!lock(&cache).pending);
        mem(300);
        age(USAGE_STALE_MAX + Duration::from_secs(1));
        assert_eq!(
            cached_usage(&cache, &dirs).memory_bytes,
            Some(300),
            "too old: read first"
        );
    }
}
