//! The exits only a wasm instance has (a trap, an interruption by paddock) go through the same
//! policy as process exits.

use super::*;
use crate::config::RestartSpec;

fn machine(p: RestartPolicy) -> Machine {
    Machine::new(
        Policy::simple(
            RestartSpec {
                policy: p,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                stable_after: Duration::from_secs(10),
                max_failures: 3,
            },
            libc::SIGTERM,
            Duration::from_secs(5),
        ),
        7,
    )
}

fn run(m: &mut Machine, ev: Event, now: Time) -> Vec<Action> {
    let mut out = vec![];
    m.handle(ev, now, &mut out);
    out
}

#[test]
fn a_trap_is_a_failure_restarted_with_backoff_then_fatal() {
    let mut m = machine(RestartPolicy::OnFailure);
    let mut now = Duration::ZERO;
    let acts = run(&mut m, Event::Start, now);
    assert!(acts.contains(&Action::Spawn));
    run(&mut m, Event::Spawned, now);
    for i in 1..=3 {
        now += Duration::from_millis(10);
        let acts = run(&mut m, Event::Exited(Exit::Trap("unreachable".into())), now);
        if i < 3 {
            assert_eq!(m.state(), State::Backoff);
            assert!(
                acts.iter()
                    .any(|a| matches!(a, Action::Arm(TimerKind::Backoff, _)))
            );
            now += Duration::from_secs(1);
            run(&mut m, Event::Timer(TimerKind::Backoff), now);
            run(&mut m, Event::Spawned, now);
        }
    }
    assert_eq!(m.state(), State::Fatal);
    assert_eq!(m.last_exit(), Some(&Exit::Trap("unreachable".into())));
    assert_eq!(m.last_exit().unwrap().describe(), "trap: unreachable");
    assert!(!Exit::Trap(String::new()).success());
}

#[test]
fn an_interrupt_ends_a_stop() {
    let mut m = machine(RestartPolicy::Always);
    run(&mut m, Event::Start, Duration::ZERO);
    run(&mut m, Event::Spawned, Duration::ZERO);
    let acts = run(&mut m, Event::Stop, Duration::from_secs(1));
    assert!(acts.contains(&Action::Signal(libc::SIGTERM)));
    run(
        &mut m,
        Event::Exited(Exit::Interrupted),
        Duration::from_secs(1),
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.last_exit().unwrap().describe(), "interrupted by paddock");
}

#[test]
fn a_late_instantiation_failure_counts_as_a_failed_spawn() {
    let mut m = machine(RestartPolicy::Never);
    run(&mut m, Event::Start, Duration::ZERO);
    run(&mut m, Event::Spawned, Duration::ZERO);
    run(
        &mut m,
        Event::Exited(Exit::SpawnFailed("instantiation failed".into())),
        Duration::ZERO,
    );
    assert_eq!(m.state(), State::Fatal, "never + failed spawn = FATAL");
}
