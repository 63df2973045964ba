//! Starting a native process: clone (vfork-style), then only async-signal-safe calls in the child (its own
//! session and process group, a clean signal mask and dispositions, stdio, working directory,
//! credentials), then execve. A failure of any step is reported to the parent through a
//! close-on-exec pipe as the step and errno, so "setuid: Operation not permitted" reaches the
//! operator instead of a silent exit 127.
//!
//! Everything the child needs is prepared before the clone (`Prepared`), once per app spec, so a
//! restart costs one clone and one exec.
//!
//! Layout: this file holds the error types (which step failed, with what errno); `prepared`
//! builds the [`Prepared`] form of an app (paths, argv, environment, credentials, sandbox plan),
//! `fds` the descriptors handed to children (stdio, the reserved low slots, pipes), `child` what
//! runs in the cloned child up to execve and the report it sends back, and `spawn` the parent's
//! side of the clone.

mod child;
mod fds;
mod prepared;
mod spawn;

pub use fds::{Sockets, Stdio, dev_null, output_pipe, reserve_low_fds, set_child_nofile};
pub use prepared::{BaseEnv, Prepared};
pub use spawn::{spawn, spawn_in_app, spawn_joined, spawn_with_sockets};
/// The steps of the child between fork and exec, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Session = 1,
    Signals,
    Stdio,
    Chdir,
    Setgroups,
    Setgid,
    Setuid,
    Exec,
    JoinCgroup,
    Nofile,
    Sockets,
}

/// Steps of the sandbox are reported as `SANDBOX_STEP + index in sandbox::Step::ALL`.
const SANDBOX_STEP: u8 = 64;

/// Which step failed: one of the driver's own, or one of the sandbox's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    Spawn(Step),
    Sandbox(crate::sandbox::Step),
}

impl Failed {
    pub fn name(self) -> &'static str {
        match self {
            Failed::Spawn(s) => s.name(),
            Failed::Sandbox(s) => s.name(),
        }
    }
    fn from_u8(n: u8) -> Option<Failed> {
        if n >= SANDBOX_STEP {
            return crate::sandbox::Step::ALL
                .get((n - SANDBOX_STEP) as usize)
                .map(|s| Failed::Sandbox(*s));
        }
        Step::from_u8(n).map(Failed::Spawn)
    }
}

impl Step {
    fn from_u8(n: u8) -> Option<Step> {
        use Step::*;
        [
            Session, Signals, Stdio, Chdir, Setgroups, Setgid, Setuid, Exec, JoinCgroup, Nofile,
            Sockets,
        ]
        .into_iter()
        .find(|s| *s as u8 == n)
    }
    pub fn name(self) -> &'static str {
        match self {
            Step::Session => "setsid",
            Step::Signals => "reset signals",
            Step::Stdio => "set up stdin/stdout/stderr",
            Step::Chdir => "chdir to workdir",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Exec => "execve",
            Step::JoinCgroup => "join cgroup",
            Step::Nofile => "setrlimit RLIMIT_NOFILE",
            Step::Sockets => "hand over the [[listen]] sockets",
        }
    }
}

#[derive(Debug)]
pub struct SpawnError {
    pub step: Option<Failed>,
    pub errno: nix::errno::Errno,
    pub detail: String,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "{}: {}", s.name(), self.errno.desc())?,
            None => write!(f, "{}", self.errno.desc())?,
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}
