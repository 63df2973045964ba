//! `GET /metrics`: Prometheus text exposition of every app, on the control socket and on
//! `serve --metrics-listen ADDR` (see `control::metrics_tcp`).
//!
//! Names follow Prometheus' conventions: a `paddock_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` for counters. Every series of an app exists as long as the
//! app does: `paddock_app_state` has one series per state (0 or 1), so a state change moves a
//! 1, and no series appears or vanishes with it.

use super::*;

/// Every state, in the order `paddock_app_state` lists them.
const STATES: [State; 8] = [
    State::Stopped,
    State::Starting,
    State::Running,
    State::Ready,
    State::Backoff,
    State::Stopping,
    State::Exited,
    State::Fatal,
];

impl Supervisor {
    pub(super) fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(256 + self.fleet.named().len() * 500);
        let apps: Vec<(&App, &crate::fleet::Unit)> = self
            .fleet
            .named()
            .values()
            .filter_map(|&i| Some((self.app(i)?, self.fleet.unit(i)?)))
            .collect();
        let now = self.now();
        s.push_str(
            "# HELP paddock_apps Number of apps paddock supervises.\n# TYPE paddock_apps gauge\n",
        );
        let _ = writeln!(s, "paddock_apps {}", apps.len());
        s.push_str("# HELP paddock_build_info The version of paddock serving (always 1).\n# TYPE paddock_build_info gauge\n");
        let _ = writeln!(
            s,
            "paddock_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        s.push_str("# HELP paddock_app_state State of each app: one series per app and state, 1 for the state it is in and 0 for the others (the series stay when the state changes).\n# TYPE paddock_app_state gauge\n");
        for (a, u) in &apps {
            let now_in = u.m.state();
            for st in STATES {
                let _ = writeln!(
                    s,
                    "paddock_app_state{{app=\"{}\",state=\"{}\"}} {}",
                    a.name,
                    st.as_str(),
                    u8::from(st == now_in)
                );
            }
        }
        s.push_str("# HELP paddock_app_up 1 if the app's process is running.\n# TYPE paddock_app_up gauge\n");
        for (a, u) in &apps {
            let _ = writeln!(
                s,
                "paddock_app_up{{app=\"{}\"}} {}",
                a.name,
                u8::from(u.m.alive())
            );
        }
        s.push_str(
            "# HELP paddock_app_ready 1 if the app is READY.\n# TYPE paddock_app_ready gauge\n",
        );
        for (a, u) in &apps {
            let _ = writeln!(
                s,
                "paddock_app_ready{{app=\"{}\"}} {}",
                a.name,
                u8::from(u.m.state() == State::Ready)
            );
        }
        s.push_str("# HELP paddock_app_healthy Health check verdict: 1 healthy, 0 unhealthy, -1 unknown (apps with a [health] check only).\n# TYPE paddock_app_healthy gauge\n");
        for (a, u) in apps.iter().filter(|a| a.0.spec.health.is_some()) {
            let v = match u.m.health() {
                Health::Healthy => 1,
                Health::Unhealthy => 0,
                Health::Unknown => -1,
            };
            let _ = writeln!(s, "paddock_app_healthy{{app=\"{}\"}} {v}", a.name);
        }
        s.push_str("# HELP paddock_app_health_failures Consecutive failed health checks.\n# TYPE paddock_app_health_failures gauge\n");
        for (a, u) in apps.iter().filter(|a| a.0.spec.health.is_some()) {
            let _ = writeln!(
                s,
                "paddock_app_health_failures{{app=\"{}\"}} {}",
                a.name,
                u.m.checks_failed()
            );
        }
        s.push_str("# HELP paddock_app_restarts_total Automatic restarts of each app.\n# TYPE paddock_app_restarts_total counter\n");
        for (a, u) in &apps {
            let _ = writeln!(
                s,
                "paddock_app_restarts_total{{app=\"{}\"}} {}",
                a.name,
                u.m.restarts()
            );
        }
        s.push_str("# HELP paddock_app_uptime_seconds Seconds since the app's process started (0 when not running).\n# TYPE paddock_app_uptime_seconds gauge\n");
        for (a, u) in &apps {
            let _ = writeln!(
                s,
                "paddock_app_uptime_seconds{{app=\"{}\"}} {:.3}",
                a.name,
                u.m.uptime(now).unwrap_or_default().as_secs_f64()
            );
        }
        s.push_str("# HELP paddock_app_last_exit_code Exit code of the last exit (128+N for death by signal N, -1 for a failed spawn or check, -2 a wasm trap, -3 a wasm interrupt, -4 unknown: a process adopted from an earlier paddock).\n# TYPE paddock_app_last_exit_code gauge\n");
        for (a, u) in &apps {
            if let Some(e) = u.m.last_exit() {
                let code = match e {
                    Exit::Code(c) => *c,
                    Exit::Signal(sg) => 128 + sg,
                    Exit::OomKilled => 128 + libc::SIGKILL,
                    Exit::SpawnFailed(_) | Exit::Failed(_) => -1,
                    Exit::Trap(_) => -2,
                    Exit::Interrupted => -3,
                    Exit::Unknown => -4,
                };
                let _ = writeln!(s, "paddock_app_last_exit_code{{app=\"{}\"}} {code}", a.name);
            }
        }
        let usage: Vec<(&App, crate::cgroup::Usage)> = apps
            .iter()
            .map(|(a, _)| {
                let u = a.cgroup.as_ref().map(|c| c.usage()).unwrap_or_default();
                (*a, u)
            })
            .collect();
        s.push_str("# HELP paddock_app_memory_bytes Memory in use by the app (native: its cgroup's memory; wasm: linear memory and tables).\n# TYPE paddock_app_memory_bytes gauge\n");
        for (a, u) in &usage {
            if let Some(m) = wasm_apps::memory_bytes(a).or(u.memory_bytes) {
                let _ = writeln!(s, "paddock_app_memory_bytes{{app=\"{}\"}} {m}", a.name);
            }
        }
        s.push_str("# HELP paddock_app_cpu_seconds_total CPU time used by the app's cgroup (user and system).\n# TYPE paddock_app_cpu_seconds_total counter\n");
        for (a, u) in &usage {
            if let Some(c) = u.cpu_usec {
                let _ = writeln!(
                    s,
                    "paddock_app_cpu_seconds_total{{app=\"{}\"}} {:.6}",
                    a.name,
                    c as f64 / 1e6
                );
            }
        }
        s.push_str("# HELP paddock_app_pids Processes and threads in the app's cgroup.\n# TYPE paddock_app_pids gauge\n");
        for (a, u) in &usage {
            if let Some(p) = u.pids {
                let _ = writeln!(s, "paddock_app_pids{{app=\"{}\"}} {p}", a.name);
            }
        }
        s.push_str("# HELP paddock_app_memory_limit_bytes [limits] memory of the app.\n# TYPE paddock_app_memory_limit_bytes gauge\n");
        for (a, _) in &apps {
            if let Some(m) = a.spec.limits.memory {
                let _ = writeln!(
                    s,
                    "paddock_app_memory_limit_bytes{{app=\"{}\"}} {m}",
                    a.name
                );
            }
        }
        s.push_str("# HELP paddock_app_cpu_limit_cores [limits] cpu of the app.\n# TYPE paddock_app_cpu_limit_cores gauge\n");
        for (a, _) in &apps {
            if let Some(c) = a.spec.limits.cpu {
                let _ = writeln!(s, "paddock_app_cpu_limit_cores{{app=\"{}\"}} {c}", a.name);
            }
        }
        s.push_str("# HELP paddock_app_pids_limit [limits] pids of the app.\n# TYPE paddock_app_pids_limit gauge\n");
        for (a, _) in &apps {
            if let Some(p) = a.spec.limits.pids {
                let _ = writeln!(s, "paddock_app_pids_limit{{app=\"{}\"}} {p}", a.name);
            }
        }
        s.push_str("# HELP paddock_app_log_lines_dropped_total Lines of output that could not be written to the app's log files (disk full …).\n# TYPE paddock_app_log_lines_dropped_total counter\n");
        for (a, _) in &apps {
            let _ = writeln!(
                s,
                "paddock_app_log_lines_dropped_total{{app=\"{}\"}} {}",
                a.name,
                self.logs.dropped(&a.name)
            );
        }
        schedule_metrics(&mut s, &apps);
        let apps: Vec<&App> = apps.iter().map(|a| a.0).collect();
        http_apps::metrics(&mut s, &apps);
        s
    }
}

/// Scheduled apps: the next and last run times, and runs by outcome (with skipped due times).
fn schedule_metrics(s: &mut String, apps: &[(&App, &crate::fleet::Unit)]) {
    use std::fmt::Write;
    let sched: Vec<(&App, &crate::fleet::Sched)> = apps
        .iter()
        .filter_map(|(a, u)| Some((*a, u.sched.as_deref()?)))
        .collect();
    if sched.is_empty() {
        return;
    }
    s.push_str("# HELP paddock_app_schedule_next_run_timestamp_seconds When a scheduled app runs next (Unix time; absent while paused).\n# TYPE paddock_app_schedule_next_run_timestamp_seconds gauge\n");
    for (a, sc) in &sched {
        if let Some(t) = sc.next {
            let _ = writeln!(
                s,
                "paddock_app_schedule_next_run_timestamp_seconds{{app=\"{}\"}} {:.3}",
                a.name,
                t as f64 / 1000.0
            );
        }
    }
    s.push_str("# HELP paddock_app_schedule_last_run_timestamp_seconds When a scheduled app's last finished run started (Unix time).\n# TYPE paddock_app_schedule_last_run_timestamp_seconds gauge\n");
    for (a, sc) in &sched {
        if let Some(l) = &sc.last {
            let _ = writeln!(
                s,
                "paddock_app_schedule_last_run_timestamp_seconds{{app=\"{}\"}} {:.3}",
                a.name,
                l.start as f64 / 1000.0
            );
        }
    }
    s.push_str("# HELP paddock_app_schedule_last_run_duration_seconds How long a scheduled app's last finished run took.\n# TYPE paddock_app_schedule_last_run_duration_seconds gauge\n");
    for (a, sc) in &sched {
        if let Some(l) = &sc.last {
            let _ = writeln!(
                s,
                "paddock_app_schedule_last_run_duration_seconds{{app=\"{}\"}} {:.3}",
                a.name,
                l.duration_ms as f64 / 1000.0
            );
        }
    }
    s.push_str("# HELP paddock_app_scheduled_runs_total Runs of a scheduled app since paddock started, by outcome: success (exit 0), failure, stopped, and skipped (due while a run was under way).\n# TYPE paddock_app_scheduled_runs_total counter\n");
    for (a, sc) in &sched {
        let c = sc.counts;
        for (outcome, n) in [
            ("success", c.success),
            ("failure", c.failure),
            ("stopped", c.stopped),
            ("skipped", c.skipped),
        ] {
            let _ = writeln!(
                s,
                "paddock_app_scheduled_runs_total{{app=\"{}\",outcome=\"{outcome}\"}} {n}",
                a.name
            );
        }
    }
}
