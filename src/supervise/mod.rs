//! The supervision state machine of one app: pure and deterministic.
//!
//! Events go in (operator commands, spawn results, process exits, timers firing) and actions come
//! out (spawn, signal the process group, kill it, arm or cancel a timer). It reads no clock (the
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
    /// Asked to run; the process is being started.
    Starting,
    /// The process runs.
    Running,
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
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }
    /// Up, or on its way up by itself.
    pub fn is_up(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Backoff)
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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// End of the backoff delay: start again.
    Backoff,
    /// End of `stop_timeout`: SIGKILL the group.
    StopTimeout,
    /// `stable_after` of uptime reached: forget past failures.
    Stable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start,
    Stop,
    Restart,
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
    Timer(TimerKind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the process; answer with `Event::Spawned` once it has exec'd, or with
    /// `Event::SpawnFailed`. From this action on the process counts as alive.
    Spawn,
    /// Send this signal to the app's process group.
    Signal(i32),
    /// SIGKILL the app's whole process group (also used to clean up after the main process exits).
    KillGroup,
    Arm(TimerKind, Duration),
    Cancel(TimerKind),
}

/// Restart and stop parameters the machine needs (a slice of the app spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub restart: RestartSpec,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
}

/// The shortest wait before retrying a spawn that failed.
pub const MIN_SPAWN_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Machine {
    pub policy: Policy,
    state: State,
    /// A live main process exists (between Spawned and Exited).
    alive: bool,
    /// Consecutive failed starts (exits before `stable_after`).
    failures: u32,
    /// Automatic restarts since paddock started supervising this app.
    restarts: u64,
    /// Successful spawns ever (a generation number for waiters).
    spawns: u64,
    started_at: Option<Time>,
    state_since: Time,
    last_exit: Option<Exit>,
    /// Start again once the stop completes (restart).
    start_after_stop: bool,
    /// When the pending backoff ends.
    backoff_until: Option<Time>,
    /// The last start was refused (`Event::SpawnRefused`).
    refused: bool,
    rng: u64,
}

impl Machine {
    pub fn new(policy: Policy, seed: u64) -> Self {
        Machine {
            policy,
            state: State::Stopped,
            alive: false,
            failures: 0,
            restarts: 0,
            spawns: 0,
            started_at: None,
            state_since: Duration::ZERO,
            last_exit: None,
            start_after_stop: false,
            backoff_until: None,
            refused: false,
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

    fn spawn(&mut self, now: Time, out: &mut Vec<Action>) {
        self.refused = false;
        self.set(State::Starting, now);
        self.alive = true;
        self.started_at = Some(now);
        out.push(Action::Spawn);
    }

    /// The process is gone (exited, or never exec'd). Decides what comes next.
    fn gone(&mut self, exit: Exit, now: Time, out: &mut Vec<Action>) {
        self.alive = false;
        out.push(Action::Cancel(TimerKind::Stable));
        out.push(Action::KillGroup);
        if self.state == State::Stopping {
            out.push(Action::Cancel(TimerKind::StopTimeout));
            self.last_exit = Some(exit);
            self.set(State::Stopped, now);
            if std::mem::take(&mut self.start_after_stop) {
                self.failures = 0;
                self.spawn(now, out);
            }
        } else {
            self.after_exit(exit, now, out);
        }
    }

    fn begin_stop(&mut self, now: Time, out: &mut Vec<Action>) {
        self.set(State::Stopping, now);
        out.push(Action::Cancel(TimerKind::Stable));
        out.push(Action::Signal(self.policy.stop_signal));
        out.push(Action::Arm(
            TimerKind::StopTimeout,
            self.policy.stop_timeout,
        ));
    }

    /// Decides what follows an exit (or a failed spawn) that nobody asked for.
    fn after_exit(&mut self, exit: Exit, now: Time, out: &mut Vec<Action>) {
        let uptime = self
            .started_at
            .map_or(Duration::ZERO, |s| now.saturating_sub(s));
        let spawn_failed = matches!(exit, Exit::SpawnFailed(_));
        let wants_restart = match self.policy.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        self.last_exit = Some(exit);
        if !wants_restart {
            let s = if spawn_failed {
                State::Fatal
            } else {
                State::Exited
            };
            self.set(s, now);
            return;
        }
        if spawn_failed || uptime < self.policy.restart.stable_after {
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
        self.restarts += 1;
        if delay.is_zero() {
            self.spawn(now, out);
        } else {
            self.set(State::Backoff, now);
            self.backoff_until = Some(now + delay);
            out.push(Action::Arm(TimerKind::Backoff, delay));
        }
    }

    /// Feeds one event; appends the resulting actions to `out`.
    pub fn handle(&mut self, ev: Event, now: Time, out: &mut Vec<Action>) {
        use State::*;
        match ev {
            Event::Start => match self.state {
                Stopped | Exited | Fatal => {
                    self.failures = 0;
                    self.spawn(now, out);
                }
                Backoff => {
                    out.push(Action::Cancel(TimerKind::Backoff));
                    self.spawn(now, out);
                }
                Stopping => self.start_after_stop = true,
                Starting | Running => {}
            },
            Event::Stop => {
                self.start_after_stop = false;
                match self.state {
                    Running | Starting if self.alive => self.begin_stop(now, out),
                    Starting => self.set(Stopped, now), // not spawned yet (waiting)
                    Backoff => {
                        out.push(Action::Cancel(TimerKind::Backoff));
                        self.set(Stopped, now);
                    }
                    Stopping | Stopped | Exited | Fatal | Running => {}
                }
            }
            Event::Restart => {
                if self.alive && matches!(self.state, Running | Starting) {
                    self.begin_stop(now, out);
                    self.start_after_stop = true;
                } else if self.state == Stopping {
                    self.start_after_stop = true;
                } else {
                    self.handle(Event::Start, now, out);
                }
            }
            Event::Spawned => {
                if !self.alive {
                    return;
                }
                self.spawns += 1;
                if self.state == Starting {
                    self.set(Running, now);
                    if !self.policy.restart.stable_after.is_zero() {
                        out.push(Action::Arm(
                            TimerKind::Stable,
                            self.policy.restart.stable_after,
                        ));
                    } else {
                        self.failures = 0;
                    }
                }
            }
            Event::SpawnFailed(e) => {
                if self.alive && matches!(self.state, Starting | Stopping) {
                    self.gone(Exit::SpawnFailed(e), now, out);
                }
            }
            Event::SpawnRefused(e) => {
                if self.alive && matches!(self.state, Starting | Stopping) {
                    self.alive = false;
                    out.push(Action::Cancel(TimerKind::Stable));
                    self.last_exit = Some(Exit::SpawnFailed(e));
                    if self.state == Stopping {
                        out.push(Action::Cancel(TimerKind::StopTimeout));
                        self.start_after_stop = false;
                        self.set(Stopped, now);
                    } else {
                        self.failures = self.failures.saturating_add(1);
                        self.refused = true;
                        self.set(Fatal, now);
                    }
                }
            }
            Event::Exited(exit) => {
                if self.alive {
                    self.gone(exit, now, out);
                }
            }
            Event::Timer(TimerKind::Backoff) => {
                if self.state == Backoff {
                    self.backoff_until = None;
                    self.spawn(now, out);
                }
            }
            Event::Timer(TimerKind::StopTimeout) => {
                if self.state == Stopping && self.alive {
                    out.push(Action::KillGroup);
                }
            }
            Event::Timer(TimerKind::Stable) => {
                if self.alive && self.state == Running {
                    self.failures = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
