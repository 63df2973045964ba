//! One paddock per state directory and per cgroup name: an exclusive `flock` on
//! `STATE_DIR/lock` (and, as root, on `/run/paddock/cgroup-NAME.lock`), held for paddock's life.
//! The file holds the holder's pid, so a second `paddock serve` refuses with it instead of
//! starting a second copy of every app. The kernel drops the lock when paddock exits, however it
//! exits (a crash or `kill -9` included), so a stale file never blocks a restart.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock: released when dropped (or when the process ends).
pub struct Held {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Takes the lock at `path` for `what` (used in the error), writing our pid into it.
pub fn take(path: &Path, what: &str) -> Result<Held, String> {
    let reason = |e: &std::io::Error| format!("{}: {}", path.display(), crate::util::io_reason(e));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| reason(&e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| reason(&e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(format!(
                "another paddock{} is running with this {what} ({} is locked); stop it first, or give this one its own {what}",
                if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
                path.display()
            ));
        }
        return Err(reason(&e));
    }
    let pid = std::process::id().to_string();
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(pid.as_bytes()))
        .map_err(|e| reason(&e))?;
    Ok(Held {
        _file: f,
        path: path.to_path_buf(),
    })
}

/// The locks of `paddock serve`: the state directory's, and, as root (where paddock makes
/// cgroups), the cgroup name's.
pub fn serve_locks(state_dir: &Path, cgroup_name: &str) -> Result<Vec<Held>, String> {
    let mut held = vec![take(
        &state_dir.join("lock"),
        "state directory (--state-dir)",
    )?];
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } == 0 {
        held.push(take(
            &Path::new("/run/paddock").join(format!("cgroup-{cgroup_name}.lock")),
            "cgroup name (PADDOCK_CGROUP_NAME)",
        )?);
    }
    Ok(held)
}

/// The cgroup name under paddock's own cgroup: `PADDOCK_CGROUP_NAME`, default `paddock` (tests
/// and side-by-side instances give each paddock its own).
pub fn instance_name() -> Result<String, String> {
    match std::env::var("PADDOCK_CGROUP_NAME") {
        Err(_) => Ok("paddock".into()),
        Ok(n) if crate::config::valid_app_name(&n).is_ok() => Ok(n),
        Ok(n) => Err(format!(
            "PADDOCK_CGROUP_NAME={n:?}: give 1 to 64 letters, digits, '-', '_', '.', '@', not starting with '.'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("paddock-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("lock");
        let first = take(&p, "this state directory").unwrap();
        // flock locks belong to the open file: a second open in the same process conflicts.
        let e = take(&p, "this state directory").err().unwrap();
        assert!(
            e.contains(&format!("another paddock (pid {})", std::process::id()))
                && e.contains("this state directory"),
            "{e}"
        );
        drop(first);
        assert!(take(&p, "this state directory").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
