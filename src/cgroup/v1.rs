//! cgroup v1 limits and freezing through cgroups-rs, on the hierarchies paddock found itself.
//!
//! cgroups-rs serves well for v1 once it is given explicit paths: its controllers
//! (`MemController`, `CpuController`, `PidController`, `FreezerController`) are built here on
//! the app's directory in each hierarchy. Its `Cgroup::new` is not used: it ignores paddock's own
//! position in each hierarchy and always creates all nine v1 hierarchies (twice the cost of the
//! five paddock needs).

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use std::path::Path;

/// A cgroups-rs error as "what: errno text (what to do)".
fn why(e: cgroups_rs::fs::error::Error) -> String {
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(crate::util::io_reason);
    match io {
        Some(r) => format!("{}: {r}", e.kind()),
        None => e.to_string(),
    }
}

/// `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` when swap accounting exists, so
/// swap does not extend the limit); `None` removes the limit.
pub fn set_memory(dir: &Path, limit: Option<u64>) -> Result<(), String> {
    let c = MemController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    let v = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
    let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    // memsw must stay >= the limit: raise memsw first when the limit goes up or away.
    let first = c.set_limit(v);
    if memsw {
        c.set_memswap_limit(v).map_err(why)?;
    }
    if first.is_err() {
        c.set_limit(v).map_err(why)?;
    }
    Ok(())
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` for a share of cores; `None` removes the quota.
pub fn set_cpu(dir: &Path, cpu: Option<f64>) -> Result<(), String> {
    let c = CpuController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    match cpu {
        Some(cpu) => {
            let (q, p) = super::v2::cpu_quota(cpu);
            c.set_cfs_quota_and_period(Some(q as i64), Some(p))
                .map_err(why)
        }
        None => c.set_cfs_quota(-1).map_err(why),
    }
}

/// `pids.max`; `None` removes the limit.
pub fn set_pids(dir: &Path, max: Option<u64>) -> Result<(), String> {
    let c = PidController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    let v = match max {
        Some(n) => MaxValue::Value(n.min(i64::MAX as u64) as i64),
        None => MaxValue::Max,
    };
    c.set_pid_max(v).map_err(why)
}

pub fn freeze(dir: &Path) -> Result<(), String> {
    FreezerController::new(dir.to_path_buf(), dir.to_path_buf(), false)
        .freeze()
        .map_err(why)
}

pub fn thaw(dir: &Path) -> Result<(), String> {
    FreezerController::new(dir.to_path_buf(), dir.to_path_buf(), false)
        .thaw()
        .map_err(why)
}
