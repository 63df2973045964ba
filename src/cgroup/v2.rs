//! The cgroup v2 file formats and the controller-enabling logic, as pure functions (unit-tested
//! with fixture strings), plus the few v2 writes paddock makes.
//!
//! cgroups-rs 0.5.1 cannot serve here: its v2 root is fixed at /sys/fs/cgroup (so the cgroup2
//! mount at /sys/fs/cgroup/unified of a hybrid host is out of its reach), and it has no notion of
//! paddock's own position nor of the "no internal processes" rule that decides where paddock
//! itself must live. These files are simple enough to write directly.

use std::path::Path;

/// The controllers paddock uses for limits and accounting on v2.
pub const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

/// A value of a flat keyed file (`memory.events`, `cpu.stat`, v1 `memory.oom_control`):
/// lines of `key value`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(key)).then(|| f.next()?.parse().ok())?
    })
}

/// `cpu.max` for a share of cores: quota and period in microseconds (period 100 ms; the quota
/// is at least 1 ms, the kernel's minimum).
pub fn cpu_max(cpu: f64) -> String {
    let (quota, period) = cpu_quota(cpu);
    format!("{quota} {period}")
}

/// Quota and period (µs) for a share of cores.
pub fn cpu_quota(cpu: f64) -> (u64, u64) {
    const PERIOD: u64 = 100_000;
    let q = (cpu * PERIOD as f64).round();
    let q = if q.is_finite() { q as u64 } else { u64::MAX };
    (q.max(1000), PERIOD)
}

/// A single-value file: a number, or `max` (None).
pub fn number_or_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// What to write to `cgroup.subtree_control` so that `wanted` controllers are enabled, given
/// the cgroup's `cgroup.controllers` (available) and `cgroup.subtree_control` (enabled).
/// Returns the line to write (empty: nothing to do) and the wanted controllers that are not
/// available at all.
pub fn subtree_plan(available: &str, enabled: &str, wanted: &[&str]) -> (String, Vec<String>) {
    let avail: Vec<&str> = available.split_whitespace().collect();
    let on: Vec<&str> = enabled.split_whitespace().collect();
    let mut write = vec![];
    let mut missing = vec![];
    for w in wanted {
        if !avail.contains(w) {
            missing.push(w.to_string());
        } else if !on.contains(w) {
            write.push(format!("+{w}"));
        }
    }
    (write.join(" "), missing)
}

/// The `populated` flag of `cgroup.events`.
pub fn populated(events: &str) -> Option<bool> {
    keyed(events, "populated").map(|v| v != 0)
}

/// Enables `wanted` in `dir`'s subtree_control; returns the controllers now enabled there.
pub fn enable(dir: &Path, wanted: &[&str]) -> Result<Vec<String>, String> {
    let avail = super::read(&dir.join("cgroup.controllers"))?;
    let enabled = super::read(&dir.join("cgroup.subtree_control"))?;
    let (line, _missing) = subtree_plan(&avail, &enabled, wanted);
    if !line.is_empty() {
        super::write(&dir.join("cgroup.subtree_control"), &line)?;
    }
    let enabled = super::read(&dir.join("cgroup.subtree_control"))?;
    Ok(enabled.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_events_and_cpu_stat() {
        let ev = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(ev, "oom_kill"), Some(1));
        assert_eq!(keyed(ev, "oom"), Some(1));
        assert_eq!(keyed(ev, "max"), Some(12));
        assert_eq!(keyed(ev, "nope"), None);
        let st = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n";
        assert_eq!(keyed(st, "usage_usec"), Some(123456));
        // v1 memory.oom_control has the same shape.
        let oc = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(oc, "oom_kill"), Some(3));
        assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
        assert_eq!(populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(populated("populated 1\nfrozen 0\n"), Some(true));
    }

    #[test]
    fn cpu_max_formatting() {
        assert_eq!(cpu_max(0.5), "50000 100000");
        assert_eq!(cpu_max(2.0), "200000 100000");
        assert_eq!(cpu_max(0.25), "25000 100000");
        assert_eq!(cpu_max(0.001), "1000 100000"); // the kernel's minimum quota
        assert_eq!(number_or_max("max\n"), None);
        assert_eq!(number_or_max("268435456\n"), Some(268435456));
    }

    #[test]
    fn subtree_control_logic() {
        let (w, m) = subtree_plan("cpuset cpu io memory hugetlb pids rdma misc", "", &WANTED);
        assert_eq!(w, "+cpu +memory +pids");
        assert!(m.is_empty());
        let (w, m) = subtree_plan("cpu io memory pids", "memory pids", &WANTED);
        assert_eq!(w, "+cpu");
        assert!(m.is_empty());
        let (w, m) = subtree_plan("cpu memory pids", "cpu memory pids", &WANTED);
        assert_eq!(w, "");
        assert!(m.is_empty());
        // The controller-less cgroup2 of a hybrid host.
        let (w, m) = subtree_plan("", "", &WANTED);
        assert_eq!(w, "");
        assert_eq!(m, ["cpu", "memory", "pids"]);
        let (w, m) = subtree_plan("memory io", "", &WANTED);
        assert_eq!(w, "+memory");
        assert_eq!(m, ["cpu", "pids"]);
    }
}
