//! Fewer cgroup directories per app, made early: what limits startup with 1000 apps.
//!
//! On a hybrid host paddock used to make six directories per app (the cgroup2 one and memory,
//! cpu, cpuacct, pids, freezer) and the child wrote its pid into six `cgroup.procs` before exec.
//! With a cgroup2 directory that has `cgroup.kill`, membership, kill and cpu usage come from it;
//! of the v1 hierarchies only memory and pids are needed from the start (their usage is in
//! status), cpu only for `limits.cpu` (made when one is set, also on a running app), cpuacct
//! and freezer not at all. The directories of the apps that start with paddock are made on a
//! thread of their own while the supervisor spawns (`precreate`).

use super::{AppCgroup, CgLimits, Cgroups, Dir, Kind, mkdir, write};

/// Whether an app's cgroup has a directory in a hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// From its creation.
    Now,
    /// Once a limit needs it (`limits.cpu`).
    Later,
    /// Never: another hierarchy does its job.
    Never,
}

impl Cgroups {
    pub(super) fn need(&self, k: &Kind, l: &CgLimits) -> Need {
        let Kind::V1 { controllers } = k else {
            return Need::Now;
        };
        if !self.v2_kill {
            return Need::Now; // v1 only (or a cgroup2 without cgroup.kill): freezer, cpuacct
        }
        let has = |c: &str| controllers.iter().any(|x| x == c);
        if has("memory") || has("pids") {
            Need::Now
        } else if has("cpu") {
            if l.cpu.is_some() {
                Need::Now
            } else {
                Need::Later
            }
        } else {
            Need::Never
        }
    }

    /// Makes the directories of the apps `names` (those without limits need no more) on a
    /// thread, while the supervisor starts them: `create` finds them made, or makes them itself
    /// if it gets there first. Joined, and what no app took removed, by `remove_bases`.
    pub fn precreate(&self, names: Vec<String>) {
        if self.unavailable.is_some() || names.is_empty() {
            return;
        }
        let bases: Vec<std::sync::Arc<super::Base>> = self
            .bases
            .iter()
            .filter(|(k, _)| self.need(k, &CgLimits::default()) == Need::Now)
            .map(|(_, b)| b.clone())
            .collect();
        let fresh = self.fresh.clone();
        let t = std::thread::Builder::new()
            .name("paddock-cgroups".into())
            .spawn(move || {
                for n in names {
                    let mut new = true;
                    for b in &bases {
                        new &= b.mkdir_new(&n).unwrap_or(false);
                    }
                    if new && let Ok(mut s) = fresh.lock() {
                        s.insert(n);
                    }
                }
            });
        if let (Ok(t), Ok(mut slot)) = (t, self.precreating.lock()) {
            *slot = Some(t);
        }
    }

    /// Waits for `precreate`'s thread, then removes the app directories left empty under the
    /// bases (apps that never started) and the bases.
    pub(super) fn remove_leftovers(&self) {
        if let Some(t) = self.precreating.lock().ok().and_then(|mut s| s.take()) {
            let _ = t.join();
        }
        if let Ok(mut s) = self.fresh.lock() {
            *s = Default::default();
        }
        for (_, b) in &self.bases {
            for e in std::fs::read_dir(&b.path).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path()); // a populated one stays (EBUSY)
                }
            }
        }
    }
}

impl AppCgroup {
    /// Makes the directories put off until now that `l` needs (a `limits.cpu` given to a
    /// running app by `update`), and moves the app's processes into them: its children from
    /// now on start there; a process forked while this runs may stay outside.
    pub(super) fn create_deferred(&mut self, l: &CgLimits) -> Result<(), String> {
        let mut i = 0;
        while i < self.deferred.len() {
            if !(l.cpu.is_some() && self.deferred[i].has("cpu")) {
                i += 1;
                continue;
            }
            let d: Dir = self.deferred.remove(i);
            mkdir(&d.path())?;
            let procs = d.file("cgroup.procs");
            for pid in self.members() {
                write(&procs, &pid.to_string())?;
            }
            std::sync::Arc::make_mut(&mut self.dirs).push(d);
        }
        Ok(())
    }
}
