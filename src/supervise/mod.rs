//! The supervision state machine of one app: pure and deterministic.
//!
//! Events go in (operator commands, dependency changes, spawn results, readiness signals, health
//! check results, process exits, timers firing) and actions come out (spawn, signal the process
//! group, kill it, arm or cancel a timer, run a health check). It reads no clock (the
//! caller passes `now`), does no I/O and draws jitter from its own seeded generator, so unit tests
//! drive thousands of crash/restart/stop sequences through it in milliseconds.

use crate::config::{RestartPolicy, RestartSpec};
use serde::Serialize;
use std::time::Duration;

/// A monotonic instant, as a duration since an arbitrary origin chosen by the caller.
pub type Time = Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Not running, and not asked to.
    Stopped,
    /// Asked to run: waiting for its dependencies, or being spawned.
    Starting,
    /// The process runs; its readiness condition does not hold yet.
    Running,
    /// The process runs and is ready (at once, for apps without a readiness condition).
    Ready,
    /// Waiting for the backoff delay before the next start.
    Backoff,
    /// Stop signal sent; waiting for the process to exit (SIGKILL after `stop_timeout`).
    Stopping,
    /// Exited and, by its restart policy, not restarted.
    Exited,
    /// Gave up: too many failed starts in a row.
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Ready => "READY",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }
    /// Up, or on its way up by itself.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Ready | State::Backoff
        )
    }
    /// At rest: nothing will happen without a command.
    pub fn is_down(self) -> bool {
        matches!(self, State::Stopped | State::Exited | State::Fatal)
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The process could not be started at all (exec failed, bad user, …).
    SpawnFailed(String),
    /// A wasm instance trapped (the trap message; the wasm backtrace goes to the app's log).
    Trap(String),
    /// A wasm instance was interrupted by paddock (stop): the wasm counterpart of a signal death.
    Interrupted,
    /// paddock stopped it because it failed a check: not ready in time, failing health checks,
    /// a silent watchdog.
    Failed(String),
    /// An adopted process (started by an earlier paddock) ended: it is not paddock's child, so
    /// its exit status is not known.
    Unknown,
    /// The main process was SIGKILLed by the kernel's OOM killer (its cgroup's memory limit).
    OomKilled,
}

impl Exit {
    pub fn success(&self) -> bool {
        matches!(self, Exit::Code(0))
    }
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal(s) => format!("killed by {}", crate::config::units::signal_name(*s)),
            Exit::SpawnFailed(e) => format!("spawn failed: {e}"),
            Exit::Trap(t) => format!("trap: {t}"),
            Exit::Interrupted => "interrupted by paddock".into(),
            Exit::Failed(why) => format!("stopped by paddock: {why}"),
            Exit::OomKilled => "oom-killed".into(),
            Exit::Unknown => "exited (status unknown: adopted from an earlier paddock)".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// End of the backoff delay: start again.
    Backoff,
    /// End of `stop_timeout`: SIGKILL the group.
    StopTimeout,
    /// `stable_after` of ready (and healthy) uptime reached: forget past failures.
    Stable,
    /// `readiness.timeout` reached without readiness.
    ReadyTimeout,
    /// No `WATCHDOG=1` for `readiness.watchdog`.
    Watchdog,
    /// Time for the next health check.
    HealthCheck,
    /// A scheduled app's next run may be due (the fleet's, not the machine's: see
    /// `crate::fleet::schedule`).
    Schedule,
}

pub const TIMER_KINDS: [TimerKind; 7] = [
    TimerKind::Backoff,
    TimerKind::StopTimeout,
    TimerKind::Stable,
    TimerKind::ReadyTimeout,
    TimerKind::Watchdog,
    TimerKind::HealthCheck,
    TimerKind::Schedule,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start,
    Stop,
    Restart,
    /// The app's dependencies are (true) or are no longer (false) all ready.
    Deps(bool),
    /// The spawn requested by `Action::Spawn` succeeded.
    Spawned,
    /// The spawn requested by `Action::Spawn` failed.
    SpawnFailed(String),
    /// The spawn was refused for a reason that retrying will not fix (a bundle file that does
    /// not match its manifest): the app goes `FATAL` at once, without backoff or retries, until
    /// an operator starts it again.
    SpawnRefused(String),
    /// The app's main process exited.
    Exited(Exit),
    /// A live process of the app, started by an earlier paddock (before a crash or a re-exec),
    /// is taken over: the app is up again without a spawn, READY at once if it was before.
    Adopted {
        ready: bool,
        age: Duration,
        /// The automatic restarts the earlier paddock had counted, carried on.
        restarts: u64,
    },
    /// The app signalled readiness (`READY=1`, a newline on its readiness descriptor).
    Ready,
    /// `WATCHDOG=1` from the app.
    WatchdogPing,
    /// The result of the health check requested by `Action::RunHealthCheck`.
    Health(bool),
    Timer(TimerKind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the process; answer with `Event::Spawned` or `Event::SpawnFailed`. From this action
    /// on the process counts as alive.
    Spawn,
    /// Send this signal to the app's process group.
    Signal(i32),
    /// SIGKILL the app's whole process group (also used to clean up after the main process exits).
    KillGroup,
    Arm(TimerKind, Duration),
    Cancel(TimerKind),
    /// Run one health check; answer with `Event::Health`.
    RunHealthCheck,
}

/// How readiness is decided (the mechanism — socket, descriptor — is the caller's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyMode {
    /// Ready as soon as the process runs.
    Immediate,
    /// Ready on `Event::Ready`.
    Signal,
    /// Ready on the first passing health check.
    Health,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthPolicy {
    pub interval: Duration,
    pub start_period: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// Restart, stop, readiness and health parameters the machine needs (a slice of the app spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub restart: RestartSpec,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub ready: ReadyMode,
    pub ready_timeout: Duration,
    pub watchdog: Option<Duration>,
    pub health: Option<HealthPolicy>,
    /// Stop when the dependencies go away (`requires`), not only wait for them (`after`).
    pub stop_with_deps: bool,
}

impl Policy {
    pub fn simple(restart: RestartSpec, stop_signal: i32, stop_timeout: Duration) -> Policy {
        Policy {
            restart,
            stop_signal,
            stop_timeout,
            ready: ReadyMode::Immediate,
            ready_timeout: Duration::from_secs(60),
            watchdog: None,
            health: None,
            stop_with_deps: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No verdict yet (or no health check).
    Unknown,
    Healthy,
    Unhealthy,
}

/// The shortest wait before retrying a spawn that failed.
pub const MIN_SPAWN_RETRY: Duration = Duration::from_millis(100);

/// The first health check runs this soon after the start (or after `interval`, if shorter).
pub const FIRST_CHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Machine {
    pub policy: Policy,
    state: State,
    /// A live main process exists (from Spawn until it is gone).
    alive: bool,
    /// The operator (or autostart) wants the app up.
    wants_up: bool,
    /// All dependencies are ready.
    deps_ok: bool,
    /// Consecutive failed starts.
    failures: u32,
    /// Automatic restarts since paddock started supervising this app (carried across a crash
    /// or `reexec` of paddock by the app's record).
    restarts: u64,
    /// Successful spawns ever (a generation number for waiters).
    spawns: u64,
    started_at: Option<Time>,
    state_since: Time,
    last_exit: Option<Exit>,
    /// Start again once the stop completes (restart, or dependencies that went away).
    start_after_stop: bool,
    /// The stop under way was paddock's verdict on a failed check: count it as a failure.
    stop_reason: Option<String>,
    /// When the pending backoff ends.
    backoff_until: Option<Time>,
    /// The last start was refused (`Event::SpawnRefused`).
    refused: bool,
    health: Health,
    checks_ok: u32,
    checks_failed: u32,
    rng: u64,
}

impl Machine {
    pub fn new(policy: Policy, seed: u64) -> Self {
        Machine {
            policy,
            state: State::Stopped,
            alive: false,
            wants_up: false,
            deps_ok: true,
            failures: 0,
            restarts: 0,
            spawns: 0,
            started_at: None,
            state_since: Duration::ZERO,
            last_exit: None,
            start_after_stop: false,
            stop_reason: None,
            backoff_until: None,
            refused: false,
            health: Health::Unknown,
            checks_ok: 0,
            checks_failed: 0,
            rng: seed | 1,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn alive(&self) -> bool {
        self.alive
    }
    pub fn failures(&self) -> u32 {
        self.failures
    }
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
    pub fn spawns(&self) -> u64 {
        self.spawns
    }
    pub fn last_exit(&self) -> Option<&Exit> {
        self.last_exit.as_ref()
    }
    pub fn state_since(&self) -> Time {
        self.state_since
    }
    pub fn health(&self) -> Health {
        self.health
    }
    /// Consecutive failed health checks.
    pub fn checks_failed(&self) -> u32 {
        self.checks_failed
    }
    pub fn wants_up(&self) -> bool {
        self.wants_up
    }
    pub fn deps_ok(&self) -> bool {
        self.deps_ok
    }
    /// In STARTING with no process: waiting for dependencies.
    pub fn waiting(&self) -> bool {
        self.state == State::Starting && !self.alive
    }
    pub fn uptime(&self, now: Time) -> Option<Duration> {
        if self.alive {
            self.started_at.map(|s| now.saturating_sub(s))
        } else {
            None
        }
    }
    /// The app is `FATAL` because its last start was refused, not after retries.
    pub fn refused(&self) -> bool {
        self.refused && self.state == State::Fatal
    }
    pub fn backoff_until(&self) -> Option<Time> {
        if self.state == State::Backoff {
            self.backoff_until
        } else {
            None
        }
    }

    fn set(&mut self, s: State, now: Time) {
        if s != self.state {
            self.state = s;
            self.state_since = now;
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The delay before start number `failures + 1`: `backoff_initial * 2^(failures-1)`, capped at
    /// `backoff_max`, minus up to 25% jitter so a herd of apps does not restart in lockstep.
    pub fn backoff_delay(&mut self) -> Duration {
        let r = &self.policy.restart;
        let exp = self.failures.saturating_sub(1).min(40);
        let base = r
            .backoff_initial
            .saturating_mul(1u32 << exp.min(31))
            .min(r.backoff_max);
        if base.is_zero() {
            return base;
        }
        let jitter = (self.next_rand() % 1000) as f64 / 4000.0; // [0, 0.25)
        base.mul_f64(1.0 - jitter)
    }

    /// Spawns now if the dependencies allow it; otherwise waits in STARTING.
    fn try_start(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.deps_ok {
            self.spawn(now, out);
        } else {
            self.set(State::Starting, now);
        }
    }

    fn spawn(&mut self, now: Time, out: &mut Vec<Action>) {
        self.refused = false;
        self.set(State::Starting, now);
        self.alive = true;
        self.started_at = Some(now);
        self.health = Health::Unknown;
        self.checks_ok = 0;
        self.checks_failed = 0;
        out.push(Action::Spawn);
    }

    fn begin_stop(&mut self, now: Time, out: &mut Vec<Action>) {
        self.set(State::Stopping, now);
        for k in [
            TimerKind::Stable,
            TimerKind::ReadyTimeout,
            TimerKind::Watchdog,
            TimerKind::HealthCheck,
        ] {
            out.push(Action::Cancel(k));
        }
        out.push(Action::Signal(self.policy.stop_signal));
        out.push(Action::Arm(
            TimerKind::StopTimeout,
            self.policy.stop_timeout,
        ));
    }

    /// paddock's verdict: the app failed a check. Stop it; the stop counts as a failed start.
    fn fail(&mut self, why: String, now: Time, out: &mut Vec<Action>) {
        self.stop_reason = Some(why);
        self.begin_stop(now, out);
    }

    fn on_ready(&mut self, now: Time, out: &mut Vec<Action>) {
        self.set(State::Ready, now);
        out.push(Action::Cancel(TimerKind::ReadyTimeout));
        // Past failures are forgotten after `stable_after` of readiness (and health, when checked).
        if self.policy.health.is_none() || self.health == Health::Healthy {
            self.arm_stable(out);
        }
    }

    fn arm_stable(&mut self, out: &mut Vec<Action>) {
        if self.policy.restart.stable_after.is_zero() {
            self.failures = 0;
        } else {
            out.push(Action::Arm(
                TimerKind::Stable,
                self.policy.restart.stable_after,
            ));
        }
    }

    /// The process is gone (exited, or never exec'd). Decides what comes next.
    fn gone(&mut self, exit: Exit, now: Time, out: &mut Vec<Action>) {
        self.alive = false;
        for k in [
            TimerKind::Stable,
            TimerKind::ReadyTimeout,
            TimerKind::Watchdog,
            TimerKind::HealthCheck,
        ] {
            out.push(Action::Cancel(k));
        }
        out.push(Action::KillGroup);
        if self.state == State::Stopping {
            out.push(Action::Cancel(TimerKind::StopTimeout));
            if let Some(why) = self.stop_reason.take() {
                self.after_exit(Exit::Failed(why), now, out);
                return;
            }
            self.last_exit = Some(exit);
            self.set(State::Stopped, now);
            if std::mem::take(&mut self.start_after_stop) {
                self.failures = 0;
                self.try_start(now, out);
            }
        } else {
            self.after_exit(exit, now, out);
        }
    }

    /// Decides what follows an exit (or a failed spawn, or a failed check) nobody asked for.
    fn after_exit(&mut self, exit: Exit, now: Time, out: &mut Vec<Action>) {
        let uptime = self
            .started_at
            .map_or(Duration::ZERO, |s| now.saturating_sub(s));
        let spawn_failed = matches!(exit, Exit::SpawnFailed(_));
        let check_failed = matches!(exit, Exit::Failed(_));
        let wants_restart = match self.policy.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        self.last_exit = Some(exit);
        self.start_after_stop = false;
        if !wants_restart {
            let s = if spawn_failed {
                State::Fatal
            } else {
                State::Exited
            };
            self.set(s, now);
            return;
        }
        // A failed check always counts: an app that is up but never healthy is not stable.
        if spawn_failed || check_failed || uptime < self.policy.restart.stable_after {
            self.failures = self.failures.saturating_add(1);
        } else {
            self.failures = 0;
        }
        let max = self.policy.restart.max_failures;
        if max > 0 && self.failures >= max {
            self.set(State::Fatal, now);
            return;
        }
        let mut delay = self.backoff_delay();
        if spawn_failed {
            // A spawn that fails fails at once: with a zero backoff it would loop hot. Wait at
            // least this long before trying again.
            delay = delay.max(MIN_SPAWN_RETRY);
        }
        self.restarts = self.restarts.saturating_add(1);
        if delay.is_zero() {
            self.try_start(now, out);
        } else {
            self.set(State::Backoff, now);
            self.backoff_until = Some(now + delay);
            out.push(Action::Arm(TimerKind::Backoff, delay));
        }
    }

    fn up_and_alive(&self) -> bool {
        self.alive && matches!(self.state, State::Running | State::Ready)
    }

    /// The process runs (spawned, or adopted — then `ready` if it was READY before).
    fn started(&mut self, ready: bool, now: Time, out: &mut Vec<Action>) {
        if let Some(w) = self.policy.watchdog {
            out.push(Action::Arm(TimerKind::Watchdog, w));
        }
        if let Some(h) = &self.policy.health {
            out.push(Action::Arm(
                TimerKind::HealthCheck,
                h.interval.min(FIRST_CHECK),
            ));
        }
        if ready || self.policy.ready == ReadyMode::Immediate {
            self.on_ready(now, out);
        } else {
            self.set(State::Running, now);
            out.push(Action::Arm(
                TimerKind::ReadyTimeout,
                self.policy.ready_timeout,
            ));
        }
    }

    /// Feeds one event; appends the resulting actions to `out`.
    pub fn handle(&mut self, ev: Event, now: Time, out: &mut Vec<Action>) {
        use State::*;
        match ev {
            Event::Start => {
                self.wants_up = true;
                match self.state {
                    Stopped | Exited | Fatal => {
                        self.failures = 0;
                        self.try_start(now, out);
                    }
                    Backoff => {
                        out.push(Action::Cancel(TimerKind::Backoff));
                        self.try_start(now, out);
                    }
                    Stopping => self.start_after_stop = true,
                    Starting | Running | Ready => {}
                }
            }
            Event::Stop => {
                self.wants_up = false;
                self.start_after_stop = false;
                self.stop_reason = None;
                match self.state {
                    Running | Ready | Starting if self.alive => self.begin_stop(now, out),
                    Starting => self.set(Stopped, now), // was waiting for dependencies
                    Backoff => {
                        out.push(Action::Cancel(TimerKind::Backoff));
                        self.set(Stopped, now);
                    }
                    Stopping | Stopped | Exited | Fatal | Running | Ready => {}
                }
            }
            Event::Restart => {
                self.wants_up = true;
                if self.alive && matches!(self.state, Running | Ready | Starting) {
                    self.begin_stop(now, out);
                    self.start_after_stop = true;
                } else if self.state == Stopping {
                    self.start_after_stop = true;
                    self.stop_reason = None;
                } else {
                    self.handle(Event::Start, now, out);
                }
            }
            Event::Deps(ok) => {
                self.deps_ok = ok;
                if ok {
                    if self.waiting() && self.wants_up {
                        self.spawn(now, out);
                    }
                } else if self.policy.stop_with_deps {
                    match self.state {
                        Running | Ready | Starting if self.alive => {
                            self.begin_stop(now, out);
                            self.start_after_stop = self.wants_up;
                        }
                        Backoff => {
                            out.push(Action::Cancel(TimerKind::Backoff));
                            self.set(Starting, now); // wait for the dependencies
                        }
                        _ => {}
                    }
                }
            }
            Event::Spawned => {
                if !self.alive {
                    return;
                }
                self.spawns += 1;
                if self.state != Starting {
                    return;
                }
                self.started(false, now, out);
            }
            Event::Adopted {
                ready,
                age,
                restarts,
            } => {
                if self.alive || !matches!(self.state, Stopped | Exited | Fatal) {
                    return;
                }
                self.restarts = restarts;
                self.wants_up = true;
                self.failures = 0;
                self.spawn(now, out);
                out.retain(|a| *a != Action::Spawn);
                self.started_at = Some(now.saturating_sub(age));
                self.spawns += 1;
                self.started(ready, now, out);
            }
            Event::SpawnFailed(e) => {
                if self.alive && matches!(self.state, Starting | Stopping) {
                    self.gone(Exit::SpawnFailed(e), now, out);
                }
            }
            Event::SpawnRefused(e) => {
                if self.alive && self.state == Stopping {
                    // Stopped before it started: an ordinary stop, not retried either.
                    self.start_after_stop = false;
                    self.stop_reason = None;
                    self.gone(Exit::SpawnFailed(e), now, out);
                } else if self.alive && self.state == Starting {
                    self.alive = false;
                    for k in [
                        TimerKind::Stable,
                        TimerKind::ReadyTimeout,
                        TimerKind::Watchdog,
                        TimerKind::HealthCheck,
                    ] {
                        out.push(Action::Cancel(k));
                    }
                    self.last_exit = Some(Exit::SpawnFailed(e));
                    self.failures = self.failures.saturating_add(1);
                    self.refused = true;
                    self.set(Fatal, now);
                }
            }
            Event::Exited(exit) => {
                if self.alive {
                    self.gone(exit, now, out);
                }
            }
            Event::Ready => {
                if self.alive && self.state == Running && self.policy.ready == ReadyMode::Signal {
                    self.on_ready(now, out);
                }
            }
            Event::WatchdogPing => {
                if let (true, Some(w)) = (self.up_and_alive(), self.policy.watchdog) {
                    out.push(Action::Arm(TimerKind::Watchdog, w));
                }
            }
            Event::Health(ok) => {
                let Some(h) = self.policy.health.clone() else {
                    return;
                };
                if !self.up_and_alive() {
                    return;
                }
                out.push(Action::Arm(TimerKind::HealthCheck, h.interval));
                if ok {
                    self.checks_ok = self.checks_ok.saturating_add(1);
                    self.checks_failed = 0;
                    if self.state == Running && self.policy.ready == ReadyMode::Health {
                        self.health = Health::Healthy;
                        self.on_ready(now, out);
                    } else if self.checks_ok >= h.successes && self.health != Health::Healthy {
                        self.health = Health::Healthy;
                        if self.state == Ready {
                            self.arm_stable(out);
                        }
                    }
                    return;
                }
                self.checks_ok = 0;
                self.checks_failed = self.checks_failed.saturating_add(1);
                // Before READY only the readiness timeout judges; in start_period failures are
                // forgiven.
                let in_grace = self
                    .started_at
                    .is_some_and(|s| now.saturating_sub(s) < h.start_period);
                if self.state != Ready || in_grace {
                    return;
                }
                out.push(Action::Cancel(TimerKind::Stable));
                if self.checks_failed >= h.failures {
                    self.health = Health::Unhealthy;
                    let n = self.checks_failed;
                    self.fail(
                        format!(
                            "health check failed {n} time{} in a row",
                            if n == 1 { "" } else { "s" }
                        ),
                        now,
                        out,
                    );
                }
            }
            Event::Timer(TimerKind::Backoff) => {
                if self.state == Backoff {
                    self.backoff_until = None;
                    self.try_start(now, out);
                }
            }
            Event::Timer(TimerKind::StopTimeout) => {
                if self.state == Stopping && self.alive {
                    out.push(Action::KillGroup);
                }
            }
            Event::Timer(TimerKind::Stable) => {
                if self.alive && self.state == Ready {
                    self.failures = 0;
                }
            }
            Event::Timer(TimerKind::ReadyTimeout) => {
                if self.alive && self.state == Running {
                    let t = crate::config::units::format_duration(self.policy.ready_timeout);
                    self.fail(format!("not ready within {t}"), now, out);
                }
            }
            Event::Timer(TimerKind::Watchdog) => {
                if self.up_and_alive()
                    && let Some(w) = self.policy.watchdog
                {
                    let t = crate::config::units::format_duration(w);
                    self.fail(format!("watchdog: no WATCHDOG=1 for {t}"), now, out);
                }
            }
            Event::Timer(TimerKind::HealthCheck) => {
                if self.up_and_alive() && self.policy.health.is_some() {
                    out.push(Action::RunHealthCheck);
                }
            }
            // The fleet's timer: it never reaches a machine.
            Event::Timer(TimerKind::Schedule) => {}
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_wasm;
