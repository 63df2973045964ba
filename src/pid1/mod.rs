//! paddock as PID 1 of a container or a VM, and the host-wide settings file.
//!
//! - `/etc/paddock/paddock.toml` (`Global`): hostname, log directory, socket, shutdown timeout and
//!   what to do when everything has stopped;
//! - early setup on a bare filesystem (a VM's initramfs): /proc, /sys, /dev, /dev/pts, /dev/shm,
//!   /run and the cgroup2 hierarchy, each only if not mounted yet;
//! - the final act: after the apps stopped, kill whatever is left, sync, then power off, reboot
//!   (VM) or exit with the supervisor's code (container).
//!
//! Reaping and signal routing are the supervisor's own (`daemon`): as PID 1 every orphan of the
//! machine is reparented to paddock and reaped there like any pid that is not an app.

use crate::config::units::Dur;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_GLOBAL: &str = "/etc/paddock/paddock.toml";

/// What paddock does once every app has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// PID 1 of a VM or host: power off; PID 1 of a container, or not PID 1: exit.
    #[default]
    Auto,
    Poweroff,
    Reboot,
    Exit,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Global {
    pub hostname: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// After the orderly stop, processes still alive get SIGTERM, then SIGKILL this much later.
    pub shutdown_timeout: Duration,
    pub on_exit: OnExit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    hostname: Option<String>,
    log_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    shutdown_timeout: Option<Dur>,
    on_exit: Option<OnExit>,
}

/// Reads the settings file; a missing file means defaults (unless `required`).
pub fn load_global(path: &Path, required: bool) -> Result<Global, String> {
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Global {
                shutdown_timeout: Duration::from_secs(5),
                ..Default::default()
            });
        }
        Err(e) => {
            return Err(format!(
                "{}: {}",
                path.display(),
                crate::util::io_reason(&e)
            ));
        }
    };
    let raw: RawGlobal = toml::from_str(&src).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| crate::diag::line_col(&src, s.start));
        format!("{}:{line}:{col}: {} (keys: hostname, log_dir, state_dir, socket, shutdown_timeout, on_exit)", path.display(), e.message().trim())
    })?;
    if let Some(h) = &raw.hostname
        && (h.is_empty()
            || h.len() > 64
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(format!(
            "{}: hostname \"{h}\" must be 1 to 64 letters, digits, '-' or '.'",
            path.display()
        ));
    }
    for (k, p) in [
        ("log_dir", &raw.log_dir),
        ("state_dir", &raw.state_dir),
        ("socket", &raw.socket),
    ] {
        if p.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(format!("{}: {k} must be an absolute path", path.display()));
        }
    }
    Ok(Global {
        hostname: raw.hostname,
        log_dir: raw.log_dir,
        state_dir: raw.state_dir,
        socket: raw.socket,
        shutdown_timeout: raw.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
        on_exit: raw.on_exit.unwrap_or_default(),
    })
}

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// PID 1 of a whole machine (VM or host) rather than of a container: only there is the kernel's
/// own thread kthreadd, pid 2, visible.
pub fn is_machine_init() -> bool {
    is_pid1() && std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd")
}

fn mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(target)))
}

/// Mounts what a bare root filesystem lacks. Each step is skipped when already in place and a
/// failure is reported, never fatal (a container may forbid mounts it already provides).
pub fn early_mounts() -> Vec<String> {
    use nix::mount::{MsFlags, mount};
    let mut notes = vec![];
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let steps: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        ("/proc", "proc", "proc", nosuid, None),
        ("/sys", "sysfs", "sysfs", nosuid, None),
        (
            "/dev",
            "devtmpfs",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "/run",
            "tmpfs",
            "run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("/sys/fs/cgroup", "cgroup2", "cgroup2", nosuid, None),
    ];
    for (target, fstype, source, flags, data) in steps {
        let already = if target == "/proc" {
            Path::new("/proc/self/mountinfo").exists()
        } else {
            mounted(target)
        };
        if already {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        match mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => notes.push(format!("mounted {fstype} on {target}")),
            Err(e) => notes.push(format!("cannot mount {fstype} on {target}: {}", e.desc())),
        }
    }
    notes
}

pub fn set_hostname(name: &str) -> Result<(), String> {
    nix::unistd::sethostname(name)
        .map_err(|e| format!("cannot set the hostname to {name}: {}", e.desc()))
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 (an orderly shutdown) instead of rebooting at once.
pub fn disable_cad() {
    // SAFETY: reboot(RB_DISABLE_CAD) takes an integer command; it only changes what Ctrl-Alt-Del
    // does.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// Everything still alive after the apps stopped (their leftovers, strays): SIGTERM, a grace
/// period, SIGKILL; reaping all the while. Only meaningful as PID 1, where kill(-1) reaches every
/// process but ourselves.
pub fn kill_everything_left(grace: Duration) {
    // SAFETY: kill(2) takes no pointers; as PID 1, kill(-1) reaches every process but ourselves,
    // which is the intent.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + grace;
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes only to `st`, a live local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r < 0 {
            return; // ECHILD: nothing left
        }
        if r == 0 {
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // SAFETY: kill(2) takes no pointers; as above, everything but ourselves.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: waitpid accepts a null status pointer (no status is written).
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
}

/// The last act of PID 1 in a VM: flush the disks and power off (or reboot). Does not return.
pub fn halt(reboot: bool) -> ! {
    // SAFETY: sync takes nothing and reboot an integer command; if reboot returns we wait forever
    // below (PID 1 must not exit).
    unsafe {
        libc::sync();
        libc::reboot(if reboot {
            libc::RB_AUTOBOOT
        } else {
            libc::RB_POWER_OFF
        });
    }
    // reboot(2) failed (no CAP_SYS_BOOT?): PID 1 must not exit; wait for the end.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// sd_notify to paddock's own parent (systemd `Type=notify`): paddock's `$NOTIFY_SOCKET`,
/// captured at start and removed from the environment its apps inherit.
pub struct ParentNotify(Option<PathBuf>);

impl ParentNotify {
    pub fn from_env() -> ParentNotify {
        let p = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        // SAFETY: called at start-up, before any thread is spawned.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        ParentNotify(p)
    }
    /// paddock has a parent that listens.
    pub fn wanted(&self) -> bool {
        self.0.is_some()
    }
    pub fn send(&self, msg: &str) {
        let Some(path) = &self.0 else { return };
        let Ok(s) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let bytes = msg.as_bytes();
        // Abstract sockets are written "@name".
        let r = match path.to_str().and_then(|p| p.strip_prefix('@')) {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| s.send_to_addr(bytes, &a))
            }
            None => s.send_to(bytes, path),
        };
        if let Err(e) = r {
            eprintln!(
                "paddock: sd_notify to {}: {}",
                path.display(),
                crate::util::io_reason(&e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_file() {
        let d = std::env::temp_dir().join(format!("paddock-global-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("paddock.toml");
        assert_eq!(load_global(&p, false).unwrap().on_exit, OnExit::Auto);
        assert!(load_global(&p, true).is_err());
        std::fs::write(&p, "hostname = \"box-1\"\nshutdown_timeout = \"2s\"\non_exit = \"reboot\"\nsocket = \"/run/p.sock\"\n").unwrap();
        let g = load_global(&p, true).unwrap();
        assert_eq!(
            (g.hostname.as_deref(), g.shutdown_timeout, g.on_exit),
            (Some("box-1"), Duration::from_secs(2), OnExit::Reboot)
        );
        std::fs::write(&p, "hostname = \"box-1\"\nonexit = \"reboot\"\n").unwrap();
        let e = load_global(&p, true).unwrap_err();
        assert!(
            e.contains("paddock.toml:2:1: unknown field `onexit`"),
            "{e}"
        );
        std::fs::write(&p, "on_exit = \"halt\"\n").unwrap();
        assert!(load_global(&p, true).unwrap_err().contains("on_exit"));
        std::fs::write(&p, "hostname = \"no spaces\"\n").unwrap();
        assert!(load_global(&p, true).unwrap_err().contains("hostname"));
        std::fs::write(&p, "socket = \"relative.sock\"\n").unwrap();
        assert!(load_global(&p, true).unwrap_err().contains("absolute"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
