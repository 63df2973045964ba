//! One seam for what runs an app. The supervisor never asks an app's isolation level; it asks
//! its runner what the app is made of, and hands start, stop and kill to the runner's side of
//! the daemon (`daemon/spawn.rs` for processes, `daemon/wasm_apps.rs` and `daemon/http_apps.rs`
//! for wasm). A new kind of app (a container through containerd, a socket-activated process)
//! is a new variant here, and the compiler then lists every place that must learn it.
//!
//! - `Process`: levels `none`, `bundle` and `sandbox`. One main process in its own session and
//!   process group, an optional cgroup, log pipes that paddock reads; it outlives paddock (a
//!   record in the state directory lets the next paddock adopt it). The three levels differ
//!   only in the launch recipe (`driver::native::Prepared`), which the runner does not see.
//! - `Wasm`: a command module or component, an instance on paddock's wasm runtime; output
//!   straight into the logs, limits kept by the store, no signals (WASI has none).
//! - `Http`: a `wasi:http` component served per request (`[http]`): no instance between
//!   requests; stopped by draining its requests.

use crate::config::{AppSpec, Isolation};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    Process,
    Wasm,
    Http,
}

impl Runner {
    pub fn of(spec: &AppSpec) -> Runner {
        Runner::for_level(spec.isolation, spec.http.is_some())
    }

    /// The runner of a level (`http`: the app has an `[http]` table).
    pub fn for_level(level: Isolation, http: bool) -> Runner {
        match level {
            Isolation::Wasm if http => Runner::Http,
            Isolation::Wasm => Runner::Wasm,
            Isolation::None | Isolation::Bundle | Isolation::Sandbox => Runner::Process,
        }
    }

    /// Its output arrives on pipes paddock reads (else it is written to the logs directly).
    pub fn uses_pipes(self) -> bool {
        self == Runner::Process
    }

    /// It runs in a cgroup of its own, where `[limits]` are enforced (wasm: by the store).
    pub fn uses_cgroup(self) -> bool {
        self == Runner::Process
    }

    /// It keeps running when paddock dies, so its record lets the next paddock adopt it.
    pub fn outlives_paddock(self) -> bool {
        self == Runner::Process
    }

    /// Signals reach it (`paddock signal`, the stop signal).
    pub fn takes_signals(self) -> bool {
        self == Runner::Process
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_has_a_runner() {
        for (level, want) in [
            (Isolation::None, Runner::Process),
            (Isolation::Bundle, Runner::Process),
            (Isolation::Sandbox, Runner::Process),
            (Isolation::Wasm, Runner::Wasm),
        ] {
            assert_eq!(Runner::for_level(level, false), want);
        }
        assert_eq!(Runner::for_level(Isolation::Wasm, true), Runner::Http);
        assert!(Runner::Process.uses_pipes() && Runner::Process.outlives_paddock());
        assert!(!Runner::Http.takes_signals() && !Runner::Wasm.uses_cgroup());
    }
}
