//! App files: one `NAME.toml` per app in a config directory. Parsing (serde + toml, unknown keys
//! refused), validation with `file:line:col` errors that name the key, loading a directory, and the
//! diff used by `reread` / `update`.

mod collect;
pub mod graph;
pub mod health;
pub mod http;
pub mod instances;
pub mod listen;
pub mod logs;
pub mod sandbox;
pub mod schedule;
pub mod suggest;
/// Durations, sizes and signal names (a leaf module of its own; this path stays for callers).
pub use crate::units;
pub mod wasm;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use units::{Dur, Sig};

/// Where an app runs. `none`, `bundle` and `wasm` exist in this build; the other levels are
/// named so that a file asking for them gets a precise error rather than a generic "unknown
/// variant".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    None,
    /// The app's program and libraries come from a bundle (see `crate::bundle`).
    Bundle,
    /// A bundle confined by namespaces, its own root filesystem, Landlock, dropped
    /// capabilities and seccomp (see `crate::sandbox`).
    Sandbox,
    /// A WebAssembly module under wasmtime (see `config::wasm`, `driver::wasm`).
    Wasm,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Bundle => "bundle",
            Isolation::Sandbox => "sandbox",
            Isolation::Wasm => "wasm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StdoutMode {
    #[default]
    File,
    Inherit,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    pub max_failures: u32,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: RestartPolicy::OnFailure,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            max_failures: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogSpec {
    pub max_size: u64,
    pub keep: u32,
    pub stdout: StdoutMode,
    /// stderr goes into the same file as stdout (`NAME.out`).
    pub combine: bool,
    /// `stdout = "<path>"`: the file stdout goes to instead of `LOG_DIR/NAME.out` (for a
    /// directory, `DIR/NAME.out`).
    pub stdout_file: Option<PathBuf>,
    /// `stderr = "<path>"`, likewise.
    pub stderr_file: Option<PathBuf>,
    pub format: logs::LogFormat,
    /// Line and column of the `stdout` and `stderr` keys, for errors found across files.
    #[serde(skip)]
    pub at: Ignored<[(usize, usize); 2]>,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            max_size: 10 << 20,
            keep: 5,
            stdout: StdoutMode::File,
            combine: false,
            stdout_file: None,
            stderr_file: None,
            format: logs::LogFormat::Text,
            at: Ignored([(0, 0); 2]),
        }
    }
}

/// The identity an app runs as, resolved when the file is loaded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identity {
    pub user: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

/// A validated app, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppSpec {
    pub name: String,
    pub file: PathBuf,
    pub command: Vec<String>,
    /// The executable `command[0]` resolved to (through PATH when it has no slash).
    pub program: PathBuf,
    pub workdir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub identity: Option<Box<Identity>>,
    pub autostart: bool,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub isolation: Isolation,
    /// With `isolation = "bundle"`: the bundle, program and launch mode, resolved at load.
    pub bundle: Option<Box<crate::bundle::launch::BundleLaunch>>,
    pub restart: RestartSpec,
    /// `[restart] rollback`: go back to the last stable generation when a new one fails
    /// (unset: only where a stable generation exists; see `crate::generations`).
    pub rollback: Option<bool>,
    pub logs: LogSpec,
    /// `[limits]` (enforced for `wasm` only in this build; refused for other levels).
    pub limits: wasm::Limits,
    /// Level `wasm`: the module and its capabilities.
    pub wasm: Option<Box<wasm::WasmSpec>>,
    /// A wasm app served per request (`[http]`, see config/http.rs).
    pub http: Option<Box<http::HttpSpec>>,
    /// Level `sandbox`: what the app is given (`[sandbox]`).
    pub sandbox: Option<Box<sandbox::SandboxSpec>>,
    /// Level `sandbox`: the level to run at when this host cannot sandbox (`fallback`).
    pub fallback: Option<Isolation>,
    /// Start only once these apps are ready.
    pub after: Vec<String>,
    /// Like `after`, and also stop when one of these stops or goes FATAL (start again when back).
    pub requires: Vec<String>,
    /// If this app goes FATAL, paddock stops everything and exits non-zero.
    pub essential: bool,
    pub readiness: health::ReadinessSpec,
    pub health: Option<Box<health::HealthSpec>>,
    /// `[[listen]]`: sockets paddock binds and hands over (`LISTEN_FDS`).
    pub listen: Vec<listen::ListenSpec>,
    /// `start = "on-connection"`: started by the first connection on its sockets.
    pub on_demand: bool,
    /// `idle_stop`: an on-demand app is stopped after this long without a connection.
    pub idle_stop: Option<Duration>,
    /// One of the `instances` of an app file (`web@2` of web.toml), see config/instances.rs.
    pub instance: Option<instances::Instance>,
    /// `schedule` or `every`: a job run at its times (config/schedule.rs).
    pub schedule: Option<Box<crate::schedule::ScheduleSpec>>,
    /// Lines of the `after` and `requires` keys, for dependency errors found across files.
    #[serde(skip)]
    pub deps_line: Ignored<[usize; 2]>,
}

/// A value carried along but never part of equality: moving a key to another line is not a
/// change of the app.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ignored<T>(pub T);

impl<T> PartialEq for Ignored<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    command: Option<Spanned<Vec<String>>>,
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    autostart: Option<Spanned<bool>>,
    stop_signal: Option<Sig>,
    stop_timeout: Option<Dur>,
    isolation: Option<Spanned<String>>,
    bundle: Option<Spanned<String>>,
    launch: Option<Spanned<String>>,
    restart: Option<RawRestart>,
    logs: Option<logs::RawLogs>,
    // Level `wasm` and [limits]: see config/wasm.rs.
    module: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    wasm: Option<Spanned<wasm::RawWasm>>,
    http: Option<Spanned<http::RawHttp>>,
    limits: Option<Spanned<wasm::RawLimits>>,
    sandbox: Option<Spanned<sandbox::RawSandbox>>,
    fallback: Option<Spanned<String>>,
    after: Option<Spanned<Vec<String>>>,
    requires: Option<Spanned<Vec<String>>>,
    essential: Option<bool>,
    readiness: Option<Spanned<health::RawReadiness>>,
    health: Option<health::RawHealth>,
    listen: Option<Spanned<Vec<listen::RawListen>>>,
    start: Option<Spanned<String>>,
    idle_stop: Option<Spanned<Dur>>,
    instances: Option<Spanned<i64>>,
    // Scheduled apps: see config/schedule.rs.
    schedule: Option<Spanned<String>>,
    every: Option<Spanned<Dur>>,
    timezone: Option<Spanned<String>>,
    overlap: Option<Spanned<String>>,
    catch_up: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<Spanned<RestartPolicy>>,
    backoff_initial: Option<Dur>,
    backoff_max: Option<Spanned<Dur>>,
    stable_after: Option<Dur>,
    max_failures: Option<u32>,
    rollback: Option<bool>,
    max_unavailable: Option<Spanned<i64>>,
}

pub use crate::diag::{ConfigError, key_on_line, line_col};

mod load;
mod parse;

pub use load::{Diff, diff, load_dirs, load_dirs_all, load_file, sort_errors};
pub use parse::{DEFAULT_PATH, parse_app, parse_app_instances, resolve_program, valid_app_name};
use parse::{FileCtx, key_at};

#[cfg(test)]
mod tests;
