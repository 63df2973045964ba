//! The state machine driven with a fake clock: scenarios, then long random event sequences that
//! check the invariants (never two live children, backoff within bounds, FATAL only after
//! `max_failures` consecutive failed starts).

use super::*;
use crate::config::RestartSpec;
use std::collections::BTreeMap;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(p: RestartPolicy, max_failures: u32) -> Policy {
    Policy::simple(
        RestartSpec {
            policy: p,
            backoff_initial: ms(100),
            backoff_max: ms(1600),
            stable_after: ms(10_000),
            max_failures,
        },
        libc::SIGTERM,
        ms(2000),
    )
}

/// A fake world: a clock, armed timers, and at most one process that the machine believes in.
struct World {
    m: Machine,
    now: Time,
    timers: BTreeMap<TimerKind, Time>,
    live: bool,
    spawn_fails: bool,
    signals: Vec<i32>,
    kills: u32,
    spawns: u32,
    checks: u32,
    /// The answer to every health check from now on (None: checks never finish).
    next_check: Option<bool>,
    /// Or answers in a cycle, by check number.
    pattern: Vec<bool>,
}

impl World {
    fn new(p: Policy) -> Self {
        World {
            m: Machine::new(p, 42),
            now: Time::ZERO,
            timers: BTreeMap::new(),
            live: false,
            spawn_fails: false,
            signals: vec![],
            kills: 0,
            spawns: 0,
            checks: 0,
            next_check: None,
            pattern: vec![],
        }
    }

    fn feed(&mut self, ev: Event) {
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            let before_failures = self.m.failures();
            let before_state = self.m.state();
            let mut acts = vec![];
            self.m.handle(ev.clone(), self.now, &mut acts);
            if self.m.state() == State::Fatal && before_state != State::Fatal {
                let max = self.m.policy.restart.max_failures;
                let never = self.m.policy.restart.policy == RestartPolicy::Never;
                assert!(
                    never || (max > 0 && self.m.failures() >= max),
                    "FATAL with {} failures (max {max}) after {ev:?}",
                    self.m.failures()
                );
                let _ = before_failures;
            }
            for a in acts {
                match a {
                    Action::Spawn => {
                        assert!(!self.live, "two live children");
                        self.spawns += 1;
                        assert!(self.m.alive(), "a spawned process counts as alive");
                        if self.spawn_fails {
                            queue.push(Event::SpawnFailed("ENOENT".into()));
                        } else {
                            self.live = true;
                            queue.push(Event::Spawned);
                        }
                    }
                    Action::Signal(s) => self.signals.push(s),
                    Action::KillGroup => self.kills += 1,
                    Action::Arm(k, d) => {
                        if k == TimerKind::Backoff {
                            let r = &self.m.policy.restart;
                            assert!(
                                d <= r.backoff_max.max(MIN_SPAWN_RETRY),
                                "backoff {d:?} above max"
                            );
                            let exp = self.m.failures().saturating_sub(1).min(31);
                            let base = r
                                .backoff_initial
                                .saturating_mul(1 << exp)
                                .min(r.backoff_max);
                            let floor = if matches!(self.m.last_exit(), Some(Exit::SpawnFailed(_)))
                            {
                                MIN_SPAWN_RETRY.min(r.backoff_max.max(MIN_SPAWN_RETRY))
                            } else {
                                Duration::ZERO
                            };
                            let base = base.max(floor);
                            assert!(
                                d >= base.mul_f64(0.75) && d <= base,
                                "backoff {d:?} outside [0.75, 1] x {base:?}"
                            );
                        }
                        self.timers.insert(k, self.now + d);
                    }
                    Action::Cancel(k) => {
                        self.timers.remove(&k);
                    }
                    Action::RunHealthCheck => {
                        assert!(self.live, "health check of a dead app");
                        let answer = if self.pattern.is_empty() {
                            self.next_check
                        } else {
                            Some(self.pattern[self.checks as usize % self.pattern.len()])
                        };
                        self.checks += 1;
                        if let Some(ok) = answer {
                            queue.push(Event::Health(ok));
                        }
                    }
                }
            }
        }
        assert_eq!(
            self.live,
            self.m.alive(),
            "machine and world disagree on liveness"
        );
    }

    /// The process exits by itself.
    /// A stop request arrives while the spawn is still in flight (before exec is confirmed).
    fn stop_before_exec(&mut self) {
        let mut acts = vec![];
        self.m.handle(Event::Start, self.now, &mut acts);
        assert_eq!(acts, vec![Action::Spawn]);
        assert!(self.m.alive());
        self.live = true;
        self.feed(Event::Stop);
        assert_eq!(self.m.state(), State::Stopping);
        self.feed(Event::Spawned);
        assert_eq!(
            self.m.state(),
            State::Stopping,
            "exec confirmed late: still stopping"
        );
        self.exit(Exit::Signal(libc::SIGTERM));
        assert_eq!(self.m.state(), State::Stopped);
    }

    fn exit(&mut self, e: Exit) {
        if self.live {
            self.live = false;
            self.feed(Event::Exited(e));
        }
    }

    /// Advances the clock, firing due timers in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some((&k, &t)) = self.timers.iter().min_by_key(|(_, t)| **t) {
            if t > end {
                break;
            }
            self.timers.remove(&k);
            self.now = t;
            self.feed(Event::Timer(k));
        }
        self.now = end;
    }
}

#[test]
fn crash_loop_backs_off_then_fatal() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 5));
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Ready);
    let mut delays = vec![];
    for _ in 0..5 {
        w.advance(ms(10));
        w.exit(Exit::Code(1));
        if w.m.state() == State::Fatal {
            break;
        }
        assert_eq!(w.m.state(), State::Backoff);
        let d = w.timers[&TimerKind::Backoff] - w.now;
        delays.push(d);
        w.advance(d);
        assert_eq!(w.m.state(), State::Ready);
    }
    assert_eq!(w.m.state(), State::Fatal);
    assert_eq!(w.spawns, 5, "five failed starts, then FATAL");
    assert_eq!(delays.len(), 4);
    for (i, d) in delays.iter().enumerate() {
        let base = ms(100 << i);
        assert!(*d <= base && *d >= base.mul_f64(0.75), "{i}: {d:?}");
    }
    // A start from FATAL resets the failure count.
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Ready);
    assert_eq!(w.m.failures(), 0);
}

#[test]
fn policies() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 5));
    w.feed(Event::Start);
    w.exit(Exit::Code(0));
    assert_eq!(
        w.m.state(),
        State::Exited,
        "on-failure: a clean exit is not restarted"
    );

    let mut w = World::new(policy(RestartPolicy::OnFailure, 5));
    w.feed(Event::Start);
    w.exit(Exit::Signal(libc::SIGSEGV));
    assert_eq!(
        w.m.state(),
        State::Backoff,
        "on-failure: a signal death is a failure"
    );

    let mut w = World::new(policy(RestartPolicy::Always, 5));
    w.feed(Event::Start);
    w.exit(Exit::Code(0));
    assert_eq!(
        w.m.state(),
        State::Backoff,
        "always: even a clean exit restarts"
    );

    let mut w = World::new(policy(RestartPolicy::Never, 5));
    w.feed(Event::Start);
    w.exit(Exit::Code(3));
    assert_eq!(w.m.state(), State::Exited, "never: no restart");
    assert_eq!(w.m.last_exit(), Some(&Exit::Code(3)));
}

#[test]
fn an_oom_kill_is_a_failure_and_says_so() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 5));
    w.feed(Event::Start);
    w.exit(Exit::OomKilled);
    assert_eq!(w.m.state(), State::Backoff, "an OOM kill is restarted");
    assert_eq!(w.m.failures(), 1);
    assert_eq!(
        w.m.last_exit().map(|e| e.describe()),
        Some("oom-killed".into())
    );
}

#[test]
fn stable_uptime_resets_failures() {
    let mut w = World::new(policy(RestartPolicy::Always, 3));
    w.feed(Event::Start);
    for _ in 0..2 {
        w.exit(Exit::Code(1));
        w.advance(ms(2000));
    }
    assert_eq!(w.m.failures(), 2);
    w.advance(ms(10_000)); // stable_after passes
    assert_eq!(w.m.failures(), 0);
    w.exit(Exit::Code(1));
    assert_eq!(w.m.state(), State::Backoff);
    let d = w.timers[&TimerKind::Backoff] - w.now;
    assert!(
        d <= ms(100),
        "backoff reset to the initial delay, got {d:?}"
    );
}

#[test]
fn zero_backoff_restarts_at_once() {
    let mut p = policy(RestartPolicy::Always, 0);
    p.restart.backoff_initial = Duration::ZERO;
    p.restart.backoff_max = Duration::ZERO;
    let mut w = World::new(p);
    w.feed(Event::Start);
    for _ in 0..10_000 {
        w.exit(Exit::Code(1));
        assert_eq!(w.m.state(), State::Ready, "restarted in the same step");
    }
    assert_eq!(w.m.restarts(), 10_000);
}

#[test]
fn stop_escalates_to_kill() {
    let mut w = World::new(policy(RestartPolicy::Always, 5));
    w.feed(Event::Start);
    w.feed(Event::Stop);
    assert_eq!(w.m.state(), State::Stopping);
    assert_eq!(w.signals, vec![libc::SIGTERM]);
    let kills = w.kills;
    w.advance(ms(2000));
    assert_eq!(w.kills, kills + 1, "SIGKILL after stop_timeout");
    w.exit(Exit::Signal(libc::SIGKILL));
    assert_eq!(w.m.state(), State::Stopped);
    assert!(w.timers.is_empty());
}

#[test]
fn restart_waits_for_the_old_process() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 5));
    w.feed(Event::Start);
    w.feed(Event::Restart);
    assert_eq!(w.m.state(), State::Stopping);
    assert_eq!(w.spawns, 1);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Ready);
    assert_eq!(w.spawns, 2);
    assert_eq!(
        w.m.restarts(),
        0,
        "an operator restart is not an automatic one"
    );
}

#[test]
fn stop_during_backoff_and_spawn_failure() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 3));
    w.spawn_fails = true;
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Backoff);
    assert!(matches!(w.m.last_exit(), Some(Exit::SpawnFailed(_))));
    w.feed(Event::Stop);
    assert_eq!(w.m.state(), State::Stopped);
    assert!(w.timers.is_empty());
    w.feed(Event::Start);
    w.advance(ms(10_000));
    assert_eq!(w.m.state(), State::Fatal);
    assert_eq!(w.spawns, 4);
}

#[test]
fn stop_while_exec_is_in_flight() {
    let mut w = World::new(policy(RestartPolicy::Always, 5));
    w.stop_before_exec();
}

#[test]
fn stale_events_are_ignored() {
    let mut w = World::new(policy(RestartPolicy::OnFailure, 3));
    w.feed(Event::Exited(Exit::Code(1)));
    w.feed(Event::Timer(TimerKind::Backoff));
    w.feed(Event::Timer(TimerKind::StopTimeout));
    w.feed(Event::Spawned);
    assert_eq!(w.m.state(), State::Stopped);
    assert_eq!(w.spawns, 0);
}

/// Thousands of random sequences; the invariants are asserted inside `World::feed`.
#[test]
fn random_sequences_keep_invariants() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let policies = [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ];
    let mut fatal_seen = 0;
    for run in 0..2000 {
        let mut p = policy(policies[run % 3], (rnd() % 6) as u32);
        p.ready =
            [ReadyMode::Immediate, ReadyMode::Signal, ReadyMode::Health][(rnd() % 3) as usize];
        p.ready_timeout = ms(500 + rnd() % 3000);
        p.watchdog = (rnd() % 2 == 0).then(|| ms(200 + rnd() % 2000));
        p.health = (p.ready == ReadyMode::Health || rnd() % 2 == 0).then(|| HealthPolicy {
            interval: ms(50 + rnd() % 1000),
            start_period: ms(rnd() % 1000),
            failures: 1 + (rnd() % 3) as u32,
            successes: 1 + (rnd() % 2) as u32,
        });
        p.stop_with_deps = rnd() % 2 == 0;
        p.restart.backoff_initial = ms(rnd() % 300);
        p.restart.backoff_max = p.restart.backoff_initial + ms(rnd() % 5000);
        p.restart.stable_after = ms(rnd() % 3000);
        let mut w = World::new(p);
        for _ in 0..200 {
            w.spawn_fails = rnd() % 10 == 0;
            match rnd() % 12 {
                0 => w.feed(Event::Start),
                1 => w.feed(Event::Stop),
                2 => w.feed(Event::Restart),
                3 => w.exit(Exit::Code((rnd() % 3) as i32)),
                4 => w.exit(Exit::Signal(libc::SIGKILL)),
                5 => w.feed(Event::Ready),
                6 => w.feed(Event::Deps(rnd() % 3 != 0)),
                7 => w.feed(Event::WatchdogPing),
                8 => w.next_check = Some(rnd() % 2 == 0),
                _ => w.advance(ms(rnd() % 4000)),
            }
            let s = w.m.state();
            assert_eq!(
                w.timers.contains_key(&TimerKind::Backoff),
                s == State::Backoff,
                "backoff timer iff BACKOFF ({s:?})"
            );
            if s == State::Stopping {
                assert!(w.m.alive());
            }
            if s.is_down() {
                assert!(!w.m.alive() && !w.live, "{s:?} with a live process");
            }
            if w.m.alive() {
                assert!(
                    matches!(
                        s,
                        State::Starting | State::Running | State::Ready | State::Stopping
                    ),
                    "alive in {s:?}"
                );
            } else {
                assert!(
                    !w.timers.contains_key(&TimerKind::HealthCheck)
                        && !w.timers.contains_key(&TimerKind::Watchdog),
                    "checks armed for a dead app in {s:?}"
                );
            }
            if s == State::Ready {
                assert!(!w.timers.contains_key(&TimerKind::ReadyTimeout));
            }
            if s == State::Fatal {
                fatal_seen += 1;
            }
        }
    }
    assert!(
        fatal_seen > 0,
        "the random walk should reach FATAL sometimes"
    );
}

fn with(mut p: Policy, f: impl FnOnce(&mut Policy)) -> Policy {
    f(&mut p);
    p
}

#[test]
fn readiness_signal_and_timeout() {
    let p = with(policy(RestartPolicy::OnFailure, 2), |p| {
        p.ready = ReadyMode::Signal;
        p.ready_timeout = ms(1000);
    });
    let mut w = World::new(p);
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Running, "not ready until it says so");
    w.advance(ms(500));
    w.feed(Event::Ready);
    assert_eq!(w.m.state(), State::Ready);
    assert!(!w.timers.contains_key(&TimerKind::ReadyTimeout));
    // A second start that never becomes ready: stopped at the timeout, counted as a failure.
    w.feed(Event::Restart);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Running);
    w.advance(ms(1000));
    assert_eq!(w.m.state(), State::Stopping);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Backoff);
    assert!(matches!(w.m.last_exit(), Some(Exit::Failed(m)) if m.contains("not ready within 1s")));
    w.advance(ms(200));
    w.advance(ms(1000)); // never ready again
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Fatal, "retried, then FATAL");
}

#[test]
fn health_failures_restart_after_exactly_n_misses() {
    let p = with(policy(RestartPolicy::Always, 0), |p| {
        p.health = Some(HealthPolicy {
            interval: ms(100),
            start_period: Duration::ZERO,
            failures: 3,
            successes: 1,
        });
    });
    let mut w = World::new(p);
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Ready);
    w.next_check = Some(true);
    w.advance(ms(100));
    assert_eq!(w.m.health(), Health::Healthy);
    for i in 1..=3 {
        w.next_check = Some(false);
        w.advance(ms(100));
        if i < 3 {
            assert_eq!(w.m.state(), State::Ready, "after {i} misses");
        }
    }
    assert_eq!(
        w.m.state(),
        State::Stopping,
        "restart after exactly 3 misses"
    );
    assert_eq!(w.m.health(), Health::Unhealthy);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Backoff);
    assert_eq!(w.m.failures(), 1);
}

#[test]
fn flapping_health_ends_fatal() {
    let p = with(policy(RestartPolicy::Always, 3), |p| {
        p.restart.stable_after = ms(1000);
        p.health = Some(HealthPolicy {
            interval: ms(400),
            start_period: Duration::ZERO,
            failures: 1,
            successes: 1,
        });
    });
    let mut w = World::new(p);
    // Every start: healthy at the first check (400 ms), failing at the second (800 ms), so it is
    // never healthy for stable_after.
    w.pattern = vec![true, false];
    w.feed(Event::Start);
    for _ in 0..20 {
        w.advance(ms(400));
        w.advance(ms(400));
        assert_eq!(w.m.state(), State::Stopping);
        w.exit(Exit::Signal(libc::SIGTERM));
        if w.m.state() == State::Fatal {
            break;
        }
        w.advance(ms(2000)); // backoff, then a new start
    }
    assert_eq!(w.m.state(), State::Fatal);
    assert_eq!(w.spawns, 3);
}

#[test]
fn start_period_forgives_failures() {
    let p = with(policy(RestartPolicy::Always, 0), |p| {
        p.health = Some(HealthPolicy {
            interval: ms(100),
            start_period: ms(1000),
            failures: 1,
            successes: 1,
        });
    });
    let mut w = World::new(p);
    w.feed(Event::Start);
    for _ in 0..5 {
        w.next_check = Some(false);
        w.advance(ms(100));
    }
    assert_eq!(w.m.state(), State::Ready);
    w.advance(ms(400));
    assert_eq!(w.m.state(), State::Ready, "still within start_period");
    w.advance(ms(100));
    assert_eq!(
        w.m.state(),
        State::Stopping,
        "the first failure after start_period counts"
    );
}

#[test]
fn ready_on_first_passing_check() {
    let p = with(policy(RestartPolicy::Always, 0), |p| {
        p.ready = ReadyMode::Health;
        p.health = Some(HealthPolicy {
            interval: ms(100),
            start_period: Duration::ZERO,
            failures: 1,
            successes: 1,
        });
    });
    let mut w = World::new(p);
    w.feed(Event::Start);
    w.next_check = Some(false);
    w.advance(ms(100));
    assert_eq!(
        w.m.state(),
        State::Running,
        "a failing check before READY only delays readiness"
    );
    w.next_check = Some(true);
    w.advance(ms(100));
    assert_eq!(w.m.state(), State::Ready);
}

#[test]
fn watchdog_expiry_restarts() {
    let p = with(policy(RestartPolicy::Always, 0), |p| {
        p.ready = ReadyMode::Signal;
        p.watchdog = Some(ms(300));
    });
    let mut w = World::new(p);
    w.feed(Event::Start);
    w.feed(Event::Ready);
    for _ in 0..5 {
        w.advance(ms(200));
        w.feed(Event::WatchdogPing);
    }
    assert_eq!(w.m.state(), State::Ready, "pinged in time");
    w.advance(ms(300));
    assert_eq!(w.m.state(), State::Stopping);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert!(matches!(w.m.last_exit(), Some(Exit::Failed(m)) if m.contains("watchdog")));
}

#[test]
fn dependencies_gate_and_requires_stops() {
    let mut w = World::new(with(policy(RestartPolicy::OnFailure, 0), |p| {
        p.stop_with_deps = true
    }));
    w.feed(Event::Deps(false));
    w.feed(Event::Start);
    assert_eq!(w.m.state(), State::Starting);
    assert!(w.m.waiting() && w.spawns == 0);
    w.feed(Event::Deps(true));
    assert_eq!(w.m.state(), State::Ready);
    // The required app goes away: stop, then wait for it, then start again.
    w.feed(Event::Deps(false));
    assert_eq!(w.m.state(), State::Stopping);
    w.exit(Exit::Signal(libc::SIGTERM));
    assert_eq!(w.m.state(), State::Starting);
    assert!(w.m.waiting());
    w.feed(Event::Deps(true));
    assert_eq!(w.m.state(), State::Ready);
    assert_eq!(w.spawns, 2);
    // An operator stop while waiting ends the wait.
    w.feed(Event::Deps(false));
    w.exit(Exit::Signal(libc::SIGTERM));
    w.feed(Event::Stop);
    assert_eq!(w.m.state(), State::Stopped);
    w.feed(Event::Deps(true));
    assert_eq!(
        w.m.state(),
        State::Stopped,
        "stopped by the operator: stays stopped"
    );
    // `after` only: a dependency going away does not stop a running app.
    let mut w = World::new(policy(RestartPolicy::OnFailure, 0));
    w.feed(Event::Start);
    w.feed(Event::Deps(false));
    assert_eq!(w.m.state(), State::Ready);
}

/// A refused spawn (a bundle that fails verification) is FATAL at once, whatever the policy:
/// no backoff timer, no retry, until an operator starts the app again.
#[test]
fn refused_spawn_is_fatal_without_retries() {
    for (p, max) in [
        (RestartPolicy::Always, 0),
        (RestartPolicy::OnFailure, 5),
        (RestartPolicy::Never, 1),
    ] {
        let mut m = Machine::new(policy(p, max), 7);
        let mut acts = vec![];
        m.handle(Event::Start, Time::ZERO, &mut acts);
        assert_eq!(acts, vec![Action::Spawn]);
        acts.clear();
        m.handle(
            Event::SpawnRefused("libz.so.1 was modified".into()),
            ms(1),
            &mut acts,
        );
        assert_eq!(m.state(), State::Fatal, "{p:?}");
        assert!(m.refused() && !m.alive());
        assert!(
            !acts
                .iter()
                .any(|a| matches!(a, Action::Arm(..) | Action::Spawn)),
            "no retry may be scheduled: {acts:?}"
        );
        assert_eq!(
            m.last_exit(),
            Some(&Exit::SpawnFailed("libz.so.1 was modified".into()))
        );
        assert_eq!(m.restarts(), 0);
        // Timers and stray events change nothing.
        acts.clear();
        m.handle(Event::Timer(TimerKind::Backoff), ms(10_000), &mut acts);
        m.handle(Event::Exited(Exit::Code(1)), ms(10_001), &mut acts);
        assert!(acts.is_empty() && m.state() == State::Fatal);
        // An operator start tries again; a good spawn clears the refusal.
        m.handle(Event::Start, ms(20_000), &mut acts);
        assert_eq!(acts, vec![Action::Spawn]);
        assert!(!m.refused());
        m.handle(Event::Spawned, ms(20_000), &mut acts);
        assert_eq!(m.state(), State::Ready);
    }
}

#[test]
fn refused_spawn_while_stopping_ends_stopped() {
    let mut m = Machine::new(policy(RestartPolicy::Always, 0), 7);
    let mut acts = vec![];
    m.handle(Event::Start, Time::ZERO, &mut acts);
    m.handle(Event::Restart, ms(1), &mut acts);
    assert_eq!(m.state(), State::Stopping);
    acts.clear();
    m.handle(Event::SpawnRefused("bad".into()), ms(2), &mut acts);
    assert_eq!(m.state(), State::Stopped);
    assert!(!m.refused() && !m.alive());
    assert!(acts.contains(&Action::Cancel(TimerKind::StopTimeout)));
    assert!(!acts.contains(&Action::Spawn), "{acts:?}");
}

#[test]
fn adopted_process_is_up_without_a_spawn() {
    let mut m = Machine::new(Policy::simple(RestartSpec::default(), 15, secs(5)), 1);
    let mut out = vec![];
    m.handle(
        Event::Adopted {
            ready: true,
            age: secs(30),
            restarts: 7,
        },
        secs(100),
        &mut out,
    );
    assert!(!out.contains(&Action::Spawn));
    assert_eq!(m.state(), State::Ready);
    assert!(m.alive() && m.wants_up());
    assert_eq!(m.uptime(secs(100)), Some(secs(30)));
    // The earlier paddock's restart count goes on.
    assert_eq!(m.restarts(), 7);
    // A forged record's count does not wrap.
    let mut big = Machine::new(Policy::simple(RestartSpec::default(), 15, secs(5)), 1);
    big.handle(
        Event::Adopted {
            ready: true,
            age: secs(1),
            restarts: u64::MAX,
        },
        secs(100),
        &mut vec![],
    );
    big.handle(Event::Exited(Exit::Unknown), secs(101), &mut vec![]);
    assert_eq!(big.restarts(), u64::MAX);
    // Its end (status unknown) is an ordinary unexpected exit: restarted by the policy.
    out.clear();
    m.handle(Event::Exited(Exit::Unknown), secs(101), &mut out);
    assert!(out.contains(&Action::KillGroup));
    assert_ne!(m.state(), State::Ready);
    // Adopting twice, or while up, does nothing.
    let mut m2 = Machine::new(Policy::simple(RestartSpec::default(), 15, secs(5)), 1);
    m2.handle(Event::Start, secs(1), &mut out);
    out.clear();
    m2.handle(
        Event::Adopted {
            ready: true,
            age: secs(0),
            restarts: 0,
        },
        secs(2),
        &mut out,
    );
    assert!(out.is_empty());
}

#[test]
fn adopted_not_ready_waits_for_readiness_with_its_timeout() {
    let mut p = Policy::simple(RestartSpec::default(), 15, secs(5));
    p.ready = ReadyMode::Signal;
    let mut m = Machine::new(p, 1);
    let mut out = vec![];
    m.handle(
        Event::Adopted {
            ready: false,
            age: secs(1),
            restarts: 0,
        },
        secs(10),
        &mut out,
    );
    assert_eq!(m.state(), State::Running);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Arm(TimerKind::ReadyTimeout, _)))
    );
    m.handle(Event::Ready, secs(11), &mut out);
    assert_eq!(m.state(), State::Ready);
}
