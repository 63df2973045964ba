//! Scheduled apps (`every`, `schedule`) against real processes: runs at their times, last and
//! next run in status, the table and the metrics; overlap skip with a job longer than its
//! period; a cron schedule's next run; bad schedules refused by `paddock check` with the
//! precise message; a job running at `stop` and at shutdown; the last run kept across a
//! restart, a missed run caught up, a corrupt record ignored; a wasm command app on a schedule.

mod common;
use common::*;
use paddock::control::api::AppStatus;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sched(a: &AppStatus) -> &paddock::control::api::ScheduleInfo {
    a.schedule
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no schedule in status: {a:?}", a.name))
}

fn wall_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn an_every_job_runs_at_its_times_and_status_shows_last_and_next() {
    let scratch = Scratch::new("sched-every");
    let runs = scratch.path().join("runs");
    let job = format!(
        "every = \"1s\"\ncommand = [\"/bin/sh\", \"-c\", \"date +%s.%N >> {}\"]\n",
        runs.display()
    );
    // Yearly (Jan 1, 00:00 UTC), so that it cannot come due while the test runs.
    let hourly = "schedule = \"0 0 1 1 *\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 0\"]\n";
    let p = Paddock::with_apps("sched-every", &[("job", &job), ("hourly", hourly)]).start();
    // Not started at boot: the yearly one is STOPPED, its next run within the year.
    let h = p.app("hourly");
    assert_eq!(h.state, "STOPPED", "{h:?}");
    assert!(!h.autostart);
    let hs = sched(&h);
    assert_eq!(hs.rule, "0 0 1 1 *");
    let left = hs.next_run_in_secs.unwrap();
    assert!(left > 0.0 && left <= 366.0 * 86400.0, "{hs:?}");
    assert!(hs.last_run.is_none());

    wait_for(Duration::from_secs(5), "two runs of the job", || {
        lines(&runs).len() >= 2
    });
    let times: Vec<f64> = lines(&runs).iter().filter_map(|l| l.parse().ok()).collect();
    assert!(times.len() >= 2);
    // One run per due second at most, never a burst.
    for w in times.windows(2) {
        assert!(
            w[1].floor() > w[0].floor(),
            "two runs in one second: {times:?}"
        );
    }
    wait_for(Duration::from_secs(3), "a finished run in status", || {
        sched(&p.app("job")).runs.success >= 2
    });
    let a = p.app("job");
    let s = sched(&a);
    let last = s.last_run.as_ref().unwrap();
    assert_eq!(last.outcome, "success");
    assert_eq!(last.exit_code, Some(0));
    assert!(last.duration_secs < 3.0, "{last:?}");
    assert!((wall_secs() - last.start_unix).abs() < 3.0, "{last:?}");
    let next = s.next_run_unix.unwrap();
    assert!(
        next > wall_secs() - 2.0 && next <= wall_secs() + 1.5,
        "{s:?}"
    );
    assert!(s.next_run.as_ref().unwrap().ends_with("+00:00"), "{s:?}");

    // The table's INFO says the same.
    let out = p.cli(&["status", "job"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("next ") && table.contains("last exit 0"),
        "{table}"
    );
    // So do the metrics.
    let m = p
        .client
        .request("GET", "/metrics", None)
        .expect("metrics")
        .body;
    assert!(
        m.contains("paddock_app_schedule_next_run_timestamp_seconds{app=\"job\"}"),
        "{m}"
    );
    assert!(m.contains("paddock_app_scheduled_runs_total{app=\"job\",outcome=\"skipped\"} 0"));
    let ok_line = m
        .lines()
        .find(|l| {
            l.starts_with("paddock_app_scheduled_runs_total{app=\"job\",outcome=\"success\"}")
        })
        .unwrap();
    let n: u64 = ok_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 2, "{ok_line}");
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn overlap_skip_never_runs_two_at_once_and_counts_the_skips() {
    let scratch = Scratch::new("sched-overlap");
    let log = scratch.path().join("log");
    let lock = scratch.path().join("lock");
    let job = format!(
        "every = \"1s\"\nstop_timeout = \"1s\"\ncommand = [\"/bin/sh\", \"-c\", \"if [ -e {lock} ]; then echo OVERLAP >> {log}; fi; touch {lock}; echo start >> {log}; sleep 2.5; rm -f {lock}; echo end >> {log}\"]\n",
        lock = lock.display(),
        log = log.display()
    );
    let mut p = Paddock::with_apps("sched-overlap", &[("job", &job)]).start();
    let stderr = p.collect_stderr();
    wait_for(Duration::from_secs(10), "two runs ended", || {
        lines(&log).iter().filter(|l| *l == "end").count() >= 2
    });
    let l = lines(&log);
    assert!(!l.iter().any(|x| x == "OVERLAP"), "two runs at once: {l:?}");
    let a = p.app("job");
    let s = sched(&a);
    assert!(s.runs.skipped >= 2, "{s:?}");
    assert!(
        stderr
            .lock()
            .unwrap()
            .contains("skipped: the previous run is still under way"),
        "{}",
        stderr.lock().unwrap()
    );
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn a_cron_schedule_gives_the_next_minute() {
    let p = Paddock::with_apps(
        "sched-cron",
        &[(
            "cron",
            "schedule = \"* * * * *\"\ncommand = [\"/bin/true\"]\n",
        )],
    )
    .start();
    let a = p.app("cron");
    let s = sched(&a);
    assert_eq!((s.rule.as_str(), s.timezone.as_str()), ("* * * * *", "UTC"));
    let next = s.next_run_unix.unwrap();
    let now = wall_secs();
    assert_eq!(next % 60.0, 0.0, "on a minute: {s:?}");
    assert!(next > now - 1.0 && next <= now + 61.0, "{s:?} at {now}");
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn bad_schedules_are_refused_by_check_with_the_precise_message() {
    let d = Scratch::new("sched-check");
    for (name, text) in [
        (
            "hour",
            "schedule = \"0 25 * * *\"\ncommand = [\"/bin/true\"]\n",
        ),
        (
            "both",
            "schedule = \"@daily\"\nevery = \"1m\"\ncommand = [\"/bin/true\"]\n",
        ),
        (
            "boot",
            "every = \"5m\"\nautostart = true\ncommand = [\"/bin/true\"]\n[restart]\npolicy = \"always\"\n",
        ),
        (
            "zone",
            "schedule = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\noverlap = \"maybe\"\ncommand = [\"/bin/true\"]\n",
        ),
    ] {
        std::fs::write(d.path().join(format!("{name}.toml")), text).unwrap();
    }
    let out = check(&[d.path()]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "hour.toml:1:12: key `schedule`: field 2 (hour) \"25\" is out of range 0-23",
        "both.toml:2:9: key `every`: `schedule` and `every` both say when the app runs",
        "boot.toml:2:13: key `autostart`: a scheduled app starts at its times, not at boot",
        "boot.toml:5:10: key `restart.policy`: \"always\" would start a scheduled app again",
        "zone.toml:2:12: key `timezone`: unknown time zone \"Mars/Olympus\"",
        "zone.toml:3:11: key `overlap`: unknown value \"maybe\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn a_running_job_is_stopped_by_stop_and_by_shutdown() {
    let job = "every = \"1s\"\nstop_timeout = \"5s\"\ncommand = [\"/bin/sleep\", \"30\"]\n";
    let p = Paddock::with_apps("sched-stop", &[("job", job)]).start();
    p.wait_state("job", "READY", Duration::from_secs(5));
    let out = p.cli(&["stop", "job"]);
    assert!(out.status.success(), "{out:?}");
    let a = p.wait_state("job", "STOPPED", Duration::from_secs(5));
    let s = sched(&a);
    assert!(s.paused && s.next_run.is_none(), "{s:?}");
    assert_eq!(s.last_run.as_ref().unwrap().outcome, "stopped");
    assert!(a.message.contains("paused"), "{}", a.message);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        p.app("job").state,
        "STOPPED",
        "a paused schedule starts nothing"
    );
    // `start` runs it now and resumes the schedule.
    let out = p.cli(&["start", "job"]);
    assert!(out.status.success(), "{out:?}");
    let a = p.wait_state("job", "READY", Duration::from_secs(5));
    assert!(!sched(&a).paused);
    let pid = a.pid.expect("the run's pid");
    assert!(alive(pid));
    // Shutdown stops the run under way with its stop signal, in well under stop_timeout.
    let t = std::time::Instant::now();
    assert_eq!(p.shutdown().code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(!alive(pid), "the job's process outlived paddock");
}

#[test]
fn the_last_run_survives_a_restart_a_missed_run_is_caught_up_and_bad_records_are_ignored() {
    let scratch = Scratch::new("sched-persist");
    let runs = scratch.path().join("runs");
    let job = format!(
        "schedule = \"0 0 1 1 *\"\ncatch_up = true\ncommand = [\"/bin/sh\", \"-c\", \"echo run >> {}\"]\n",
        runs.display()
    );
    let p = Paddock::with_apps(
        "sched-persist",
        &[
            ("job", &job),
            (
                "other",
                "schedule = \"0 0 1 1 *\"\ncommand = [\"/bin/true\"]\n",
            ),
        ],
    );
    // Yearly jobs (Jan 1, 00:00 UTC: none comes due while the test runs), and a run 400 days
    // ago: the Jan 1 run since was missed while paddock was down.
    let dir = p.dir.path().join("state/schedule");
    std::fs::create_dir_all(&dir).unwrap();
    let long_ago = ((wall_secs() - 400.0 * 86400.0) * 1000.0) as i64;
    std::fs::write(
        dir.join("job.json"),
        format!("{{\"app\":\"job\",\"last_start\":{long_ago}}}"),
    )
    .unwrap();
    // Hostile records: garbage, and one naming another app.
    std::fs::write(dir.join("other.json"), b"\xff\xfe{{{ not json").unwrap();
    let mut p = p.start();
    let stderr = p.collect_stderr();
    wait_for(Duration::from_secs(5), "the caught-up run", || {
        sched(&p.app("job")).last_run.is_some()
    });
    assert_eq!(lines(&runs), ["run"]);
    let o = p.app("other");
    assert!(sched(&o).last_run.is_none());
    assert_eq!(o.state, "STOPPED");
    let before = sched(&p.app("job")).last_run.clone().unwrap();
    // paddock stops (SIGTERM) and starts again on the same state directory.
    let mut child = p.child.take().unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_child(&mut child, Duration::from_secs(15)).code(),
        Some(0)
    );
    let err = stderr.lock().unwrap().clone();
    assert!(
        err.contains("while paddock was down: running it now"),
        "{err}"
    );
    assert!(err.contains("not a schedule record"), "{err}");
    let p = p.start();
    // The last run is known before any run, and nothing is caught up again.
    let a = p.app("job");
    let after = sched(&a).last_run.clone().unwrap();
    assert_eq!(
        (after.start_unix, after.duration_secs, after.outcome),
        (before.start_unix, before.duration_secs, before.outcome)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&runs), ["run"]);
    let out = p.cli(&["status", "job"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("last exit 0"), "{table}");
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn a_wasm_command_app_runs_on_a_schedule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = wasm_example(root, "hello.wasm");
    let app = format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\nevery = \"1s\"\n",
        module.display()
    );
    let p = Paddock::with_apps("sched-wasm", &[("hello", &app)]).start();
    wait_for(Duration::from_secs(6), "two wasm runs", || {
        sched(&p.app("hello")).runs.success >= 2
    });
    let a = p.app("hello");
    assert_eq!(a.isolation, "wasm");
    assert_eq!(sched(&a).last_run.as_ref().unwrap().outcome, "success");
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn a_systemd_timer_imports_as_a_job_that_check_accepts() {
    let d = Scratch::new("sched-import");
    std::fs::write(
        d.path().join("nightly.service"),
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("nightly.timer"),
        "[Timer]\nOnCalendar=Mon..Fri *-*-* 03:30:00\nPersistent=true\nAccuracySec=1h\n",
    )
    .unwrap();
    let out_dir = d.path().join("apps");
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg(d.path().join("nightly.timer"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("[Timer] AccuracySec: not mapped"), "{text}");
    let app = std::fs::read_to_string(out_dir.join("nightly.toml")).unwrap();
    assert!(
        app.contains("schedule = \"30 3 * * mon,tue,wed,thu,fri\"")
            && app.contains("catch_up = true"),
        "{app}"
    );
    assert!(check(&[&out_dir]).status.success());
}
