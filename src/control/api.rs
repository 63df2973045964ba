//! The JSON shapes of the control API, shared by the server and the CLI.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub state: String,
    pub pid: Option<i32>,
    pub uptime_secs: Option<f64>,
    /// Seconds in the current state.
    pub since_secs: f64,
    pub restarts: u64,
    pub failures: u32,
    pub last_exit: Option<ExitInfo>,
    /// Why the app is in its state ("retrying in 400ms", "spawn failed: …").
    pub message: String,
    /// The level the app runs at.
    pub isolation: String,
    /// Level sandbox: what it gives (Landlock ABI, network, user namespace, seccomp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Why a sandboxed app runs at its `fallback` level instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Memory in use, when paddock knows it (wasm apps: linear memory and tables); else null.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU time used by the app's cgroup (native apps with a cgroup), in microseconds.
    #[serde(default)]
    pub cpu_usec: Option<u64>,
    /// Processes and threads in the app's cgroup.
    #[serde(default)]
    pub pids: Option<u64>,
    /// The app's cgroup directory (the cgroup2 one on a hybrid host), when it has one.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// `[limits]`, when the app has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsInfo>,
    pub autostart: bool,
    /// `[restart] policy`: with `autostart`, what the app's file wants (see `status --probe`).
    #[serde(default)]
    pub restart_policy: crate::config::RestartPolicy,
    pub command: Vec<String>,
    /// Health check verdict (`healthy`, `unhealthy`, `unknown`); absent without a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::supervise::Health>,
    /// What the last health check said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<String>,
    /// `after`: the apps (or groups of instances) this app starts after, as its file names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// `requires`: the apps (or groups) this app starts after and is stopped with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Dependencies not ready yet, as "name: state" (while STARTING without a process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// `[sandbox] publish`: the host addresses paddock listens on for the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedPort>,
    /// `[[listen]]`: the addresses paddock listens on for the app, as bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
    /// `start = "on-connection"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
    /// A wasm app served per request (`[http]`): its sockets and request figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFigures>,
    /// Lines of output that could not be written to the app's log files (disk full …) since
    /// paddock started; each line is written whole or not at all.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// The generation of its definition in force (see `paddock history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The last automatic or manual rollback ("rolled back from generation 2 to 1: …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// A scheduled app (`schedule`, `every`): its schedule, next and last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleInfo>,
}

/// A scheduled app's schedule in `status`. Times are RFC 3339 in the schedule's time zone, with
/// the same instant as Unix seconds beside them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The cron expression as written, or `every 15m`.
    pub rule: String,
    /// `UTC`, `local` or a zone name (cron expressions only).
    pub timezone: String,
    /// `skip` or `queue`.
    pub overlap: String,
    pub catch_up: bool,
    /// `paddock stop` paused it: no run starts until `paddock start`.
    pub paused: bool,
    /// A run waits for the one under way (`overlap = "queue"`).
    pub queued: bool,
    pub next_run: Option<String>,
    pub next_run_unix: Option<f64>,
    /// Seconds from now to the next run.
    pub next_run_in_secs: Option<f64>,
    /// The start of the run under way.
    pub running_since: Option<String>,
    pub last_run: Option<LastRunInfo>,
    /// Runs since paddock started, by outcome, and due times skipped.
    pub runs: RunCounts,
}

/// The last run of a scheduled app that has ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRunInfo {
    pub start: String,
    pub start_unix: f64,
    pub duration_secs: f64,
    /// Seconds since it ended.
    pub ended_secs_ago: f64,
    /// `success` (exit status 0), `failure` or `stopped`.
    pub outcome: String,
    /// The exit status, when it exited.
    pub exit_code: Option<i32>,
    /// How it ended ("exit status 0", "killed by SIGTERM").
    pub description: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    pub success: u64,
    pub failure: u64,
    pub stopped: u64,
    pub skipped: u64,
}

/// The figures of an app served per request, since paddock loaded it (counters survive
/// restarts and updates). Latencies are from the request's arrival to its response head,
/// in log buckets of ±4.5%.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpFigures {
    /// The addresses it accepts on, as bound (a port 0 resolved).
    pub listen: Vec<String>,
    pub requests: u64,
    /// Answered by the guest (any status it chose).
    pub ok: u64,
    pub in_flight: u64,
    /// Instances alive now: 0 when idle (scaled to zero), unless `reuse` keeps some.
    pub instances: u64,
    pub traps: u64,
    pub timeouts: u64,
    /// Answered 503 by paddock: stopped, backing off, FATAL, or busy past the timeout.
    pub refused: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub instantiation_p50_us: Option<f64>,
    pub instantiation_p99_us: Option<f64>,
    /// The most linear memory and tables one request's instance used.
    pub memory_high_bytes: u64,
    /// `[http] reuse` (0: a fresh instance per request).
    pub reuse: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsInfo {
    pub memory_bytes: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
    pub nofile: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusList {
    pub apps: Vec<AppStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionResult {
    pub app: String,
    pub ok: bool,
    pub state: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionResponse {
    pub ok: bool,
    pub results: Vec<ActionResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdateResponse {
    pub ok: bool,
    /// `false` for reread (nothing was changed).
    pub applied: bool,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub errors: Vec<String>,
    /// After `update`: every app and what was done to it, by name.
    #[serde(default)]
    pub apps: Vec<UpdateItem>,
}

/// One app in `update`'s answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateItem {
    pub app: String,
    /// Its file: `added`, `changed`, `removed` or `unchanged`.
    pub change: String,
    /// What paddock did: `started`, `restarted`, `stopped`, `removed`, `not started
    /// (autostart = false)`, `not running: applies at next start`, `stopping: applies at next
    /// start`, `waiting: applies when it starts`, `nothing`.
    pub did: String,
}

/// One generation in `paddock history`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryItem {
    pub generation: u64,
    /// When it was applied (RFC 3339).
    pub applied: String,
    /// `loaded` (paddock's start) or `update`.
    pub source: String,
    /// What changed from the generation before it.
    pub summary: String,
    /// SHA-256 of the resolved definition.
    pub digest: String,
    /// `trial`, `stable` or `bad`.
    pub status: String,
    /// The generation in force.
    pub current: bool,
    /// Why it is bad.
    pub note: String,
}

/// `GET /v1/apps/NAME/history`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub app: String,
    /// The generation in force.
    pub current: u64,
    /// The last rollback, when there was one since the last applied change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Oldest first.
    pub generations: Vec<HistoryItem>,
}

/// `POST /v1/apps/NAME/rollback`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RollbackResponse {
    pub ok: bool,
    pub app: String,
    pub from: u64,
    pub to: u64,
    /// What was done to the app (as `update` says it: `restarted`, `started`, …).
    pub did: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub pid: i32,
    pub apps: usize,
}

/// What happens to the machine once paddock has stopped everything (`paddock poweroff`,
/// `paddock reboot`; only honoured when paddock is PID 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    Poweroff,
    Reboot,
}

/// A reply to a control request: HTTP status, content type, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json<T: serde::Serialize>(status: u16, v: &T) -> Reply {
        let body =
            serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Reply {
            status,
            content_type: "application/json",
            body: body + "\n",
        }
    }
    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &ErrorBody { error: msg.into() })
    }
}

/// What a control request asks of its apps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

/// How a status list is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `?format=json` (the default): a [`StatusList`].
    Json,
    /// `?format=table[&width=N]`: the CLI's table, INFO cut to N columns (not cut without it).
    Table(Option<u16>),
}

/// A control request, as the server parsed it.
#[derive(Debug)]
pub enum Request {
    Status(Vec<String>, Format),
    Action {
        names: Vec<String>,
        verb: Verb,
        wait: bool,
    },
    Signal {
        names: Vec<String>,
        signal: i32,
    },
    Reread,
    Update,
    Shutdown(Option<Halt>),
    ReopenLogs,
    Metrics,
    Version,
    /// Checks that an app exists and writes its logs to files.
    LogTarget(String),
    /// `paddock reexec`: execute the paddock binary anew, keeping every app.
    Reexec,
    /// `paddock history APP`: the app's generations.
    History(String),
    /// `paddock rollback APP [GEN]`: back to a generation (default: the last stable one
    /// before the current).
    Rollback {
        app: String,
        generation: Option<u64>,
    },
}

/// A request and where its reply goes: what the control servers hand to the supervisor.
pub struct Call(pub Request, pub oneshot::Sender<Reply>);

/// A state change, as streamed by `GET /v1/events`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StateEvent {
    pub time: String,
    /// CLOCK_MONOTONIC in nanoseconds when paddock made the change: for precise intervals
    /// between events (`paddock bench`); `time` has milliseconds only.
    #[serde(default)]
    pub mono_ns: u64,
    pub app: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// What `status` says about one published address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The host address paddock listens on ("127.0.0.1:8080", "[::1]:8080").
    pub address: String,
    /// The port inside the app's network namespace (on 127.0.0.1).
    pub port: u16,
    /// Whether paddock holds the listener.
    pub listening: bool,
    /// Why it is not listening, or why connections are not forwarded now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
