//! Generations and automatic rollback against a real `paddock serve`: a bad update rolls back
//! by itself at levels `none`, `bundle` and `wasm`; the bad generation is not applied again
//! until the file changes; the history survives `kill -9` of paddock; `paddock rollback` by
//! hand; precise errors for corrupt history files, unknown apps and generations, and a
//! generation whose bundle is gone.

mod common;
use common::*;
use paddock::control::api::{HistoryResponse, RollbackResponse};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Fast restarts and a short trial, so a bad generation is judged in well under a second.
const RESTART: &str = "[restart]\nbackoff_initial = \"50ms\"\nbackoff_max = \"100ms\"\nmax_failures = 2\nstable_after = \"300ms\"\n";

fn history(p: &Paddock, app: &str) -> HistoryResponse {
    let o = p.cli(&["history", app, "--json"]);
    assert!(o.status.success(), "{}", out_of(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn out_of(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until generation `n` of `app` is stable.
fn wait_stable(p: &Paddock, app: &str, n: u64) {
    wait_for(
        Duration::from_secs(10),
        &format!("{app}: generation {n} stable"),
        || {
            history(p, app)
                .generations
                .iter()
                .any(|g| g.generation == n && g.status == "stable")
        },
    );
}

/// `paddock events`, writing to a file.
fn events(p: &Paddock, file: &Path) -> Child {
    let child = Command::new(BIN)
        .arg("events")
        .env("PADDOCK_SOCKET", p.socket())
        .stdout(std::fs::File::create(file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// Waits until `app` is READY on generation `n`; returns how long it took.
fn wait_generation(p: &Paddock, app: &str, n: u64, within: Duration) -> Duration {
    let t = Instant::now();
    let mut last = None;
    let ok = try_wait(within, || {
        let a = p.app(app);
        let hit = a.state == "READY" && a.generation == Some(n);
        last = Some(a);
        hit
    });
    assert!(ok, "{app} not READY on generation {n}: {last:?}");
    t.elapsed()
}

#[test]
fn a_bad_update_rolls_back_by_itself_and_is_not_applied_again() {
    let v1 = format!("command = [\"/bin/sleep\", \"1001\"]\n{RESTART}");
    let mut p = Paddock::with_apps("rb-none", &[("web", &v1)]).start();
    let log = p.collect_stderr();
    let first = p.wait_state("web", "READY", Duration::from_secs(10)).pid;
    wait_stable(&p, "web", 1);
    let evf = p.dir.path().join("events");
    let mut ev = events(&p, &evf);

    // Generation 2 exits at once: FATAL after two starts, then back to generation 1.
    p.write_app(
        "web",
        &format!("command = [\"/bin/sh\", \"-c\", \"exit 3\"]\n{RESTART}"),
    );
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    let took = wait_generation(&p, "web", 1, Duration::from_secs(10));
    eprintln!("rolled back and READY {took:?} after the update");
    let a = p.app("web");
    assert_ne!(a.pid, first, "generation 1 was started anew");
    let note = a.rollback.clone().unwrap_or_default();
    assert!(
        note.starts_with("rolled back from generation 2 to 1: generation 2 went FATAL"),
        "{a:?}"
    );
    assert!(note.contains("exit status 3"), "{note}");
    assert_eq!(a.message, note, "a READY app's message says it");
    wait_for(
        Duration::from_secs(5),
        "the rollback in events and the log",
        || {
            std::fs::read_to_string(&evf)
                .unwrap_or_default()
                .contains("rolled back from generation 2 to 1")
                && log
                    .lock()
                    .unwrap()
                    .contains("paddock: web: rolled back from generation 2 to 1: ")
        },
    );
    let _ = ev.kill();
    let _ = ev.wait();

    let h = history(&p, "web");
    let gens: Vec<(u64, &str, bool)> = h
        .generations
        .iter()
        .map(|g| (g.generation, g.status.as_str(), g.current))
        .collect();
    assert_eq!(gens, [(1, "stable", true), (2, "bad", false)], "{h:?}");
    assert_eq!(h.generations[1].summary, "command", "{h:?}");
    assert!(h.generations[1].note.contains("went FATAL"), "{h:?}");
    let table = p.cli(&["history", "web"]);
    let table = out_of(&table);
    assert!(table.starts_with("GEN "), "{table}");
    assert!(table.contains("1*") && table.contains(" bad "), "{table}");

    // The same bad file again: not applied.
    let pid = p.app("web").pid;
    let o = p.cli(&["update"]);
    let out = out_of(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("not applied: the app file is generation 2, which was rolled back"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let a = p.app("web");
    assert_eq!(
        (a.state.as_str(), a.pid, a.generation),
        ("READY", pid, Some(1)),
        "{a:?}"
    );

    // A changed file is a new generation.
    p.write_app(
        "web",
        &format!("command = [\"/bin/sleep\", \"1003\"]\n{RESTART}"),
    );
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    wait_generation(&p, "web", 3, Duration::from_secs(10));
    assert_eq!(p.app("web").command, ["/bin/sleep", "1003"]);
    assert!(p.app("web").rollback.is_none());
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn history_survives_kill_9_and_rollback_by_hand_works() {
    let v1 = format!("command = [\"/bin/sleep\", \"1011\"]\n{RESTART}");
    let p = Paddock::with_apps("rb-restart", &[("web", &v1)]).start();
    p.wait_state("web", "READY", Duration::from_secs(10));
    wait_stable(&p, "web", 1);
    p.write_app(
        "web",
        &format!("command = [\"/bin/sleep\", \"1012\"]\n{RESTART}"),
    );
    assert!(p.cli(&["update"]).status.success());
    wait_generation(&p, "web", 2, Duration::from_secs(10));
    wait_stable(&p, "web", 2);
    let before = history(&p, "web");

    // kill -9 of paddock, then a new paddock on the same state directory.
    let mut p = p;
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let p = p.start();
    let a = p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(a.generation, Some(2), "{a:?}");
    let after = history(&p, "web");
    assert_eq!(
        serde_json::to_value(&before.generations).unwrap(),
        serde_json::to_value(&after.generations).unwrap(),
        "the history changed across the restart"
    );

    // Bad requests change nothing.
    let pid = a.pid;
    let o = p.cli(&["rollback", "nope", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        out_of(&o).contains("paddock: no such app: nope (see `paddock status`); nothing was done"),
        "{}",
        out_of(&o)
    );
    let o = p.cli(&["rollback", "web", "9"]);
    assert!(!o.status.success());
    assert!(
        out_of(&o).contains("web has no generation 9; it has 1, 2"),
        "{}",
        out_of(&o)
    );
    let o = p.cli(&["history", "wbe"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        out_of(&o).contains("wbe (did you mean web?)"),
        "{}",
        out_of(&o)
    );
    let r = p
        .client
        .request("POST", "/v1/apps/web/rollback?generation=x", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("generation=x: expected a generation number"),
        "{}",
        r.body
    );
    assert_eq!(p.app("web").pid, pid);

    // By hand, back to generation 1 (the default: the last stable one before the current).
    let o = p.cli(&["rollback", "web", "--json"]);
    assert!(o.status.success(), "{}", out_of(&o));
    let r: RollbackResponse = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r.from, r.to, r.did.as_str()), (2, 1, "restarted"), "{r:?}");
    wait_generation(&p, "web", 1, Duration::from_secs(10));
    assert_eq!(p.app("web").command, ["/bin/sleep", "1011"]);
    // The file on disk (generation 2) is not applied again by `update`.
    let o = p.cli(&["update"]);
    assert!(out_of(&o).contains("not applied"), "{}", out_of(&o));
    assert_eq!(p.app("web").generation, Some(1));
    // ... and not after a restart of paddock either: generation 1 stays in force.
    let mut p = p;
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let p = p.start();
    let a = p.wait_state("web", "READY", Duration::from_secs(10));
    assert_eq!(
        (a.generation, a.command.clone()),
        (Some(1), vec!["/bin/sleep".to_string(), "1011".into()]),
        "{a:?}"
    );
    // Forward again by hand.
    let o = p.cli(&["rollback", "web", "2"]);
    assert!(o.status.success(), "{}", out_of(&o));
    assert!(
        out_of(&o).contains("web: generation 1 → 2: restarted"),
        "{}",
        out_of(&o)
    );
    wait_generation(&p, "web", 2, Duration::from_secs(10));
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn corrupt_or_hostile_history_files_start_afresh() {
    let v = format!("command = [\"/bin/sleep\", \"1021\"]\n{RESTART}");
    let p = Paddock::with_apps("rb-corrupt", &[("a", &v), ("b", &v), ("c", &v)]);
    let dir = p.dir.path().join("state/generations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.json"), "{ not json").unwrap();
    // b's file is c's history: valid JSON, wrong app.
    std::fs::write(
        dir.join("b.json"),
        r#"{"format":1,"app":"c","current":0,"generations":[]}"#,
    )
    .unwrap();
    // c's is a FIFO: refused without blocking.
    assert!(
        Command::new("mkfifo")
            .arg(dir.join("c.json"))
            .status()
            .unwrap()
            .success()
    );
    let mut p = p.start();
    let log = p.collect_stderr();
    for app in ["a", "b", "c"] {
        let a = p.wait_state(app, "READY", Duration::from_secs(10));
        assert_eq!(a.generation, Some(1), "{a:?}");
        assert_eq!(history(&p, app).generations.len(), 1);
    }
    let text = log.lock().unwrap().clone();
    for (app, why) in [
        ("a", "not a history of generations: "),
        ("b", "it is the history of \"c\", not of \"b\""),
        ("c", "is a FIFO, not a regular file"),
    ] {
        let want = format!(
            "paddock: {app}: {}: ",
            dir.join(format!("{app}.json")).display()
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no line for {app}: {text}"));
        assert!(line.contains(why), "{line}");
        assert!(line.contains("starting a fresh history"), "{line}");
        assert!(dir.join(format!("{app}.json.corrupt")).exists());
    }
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn a_bundle_update_that_exits_at_once_rolls_back() {
    if !Path::new("/usr/bin/dash").exists() {
        eprintln!("SKIPPED a_bundle_update_that_exits_at_once_rolls_back: needs /usr/bin/dash");
        return;
    }
    let s = Scratch::new("rb-bundle");
    let store = s.path().join("store");
    let rdir = s.path().join("r");
    std::fs::create_dir_all(&rdir).unwrap();
    let recipe = rdir.join("sw.toml");
    std::fs::write(&recipe, "entry = \"/usr/bin/dash\"\ndata = [\"VERSION\"]\n").unwrap();
    // Each build of recipe `sw` with another VERSION is a new bundle; `bundle = "sw"` follows.
    let build = |v: &str| -> String {
        std::fs::write(rdir.join("VERSION"), format!("{v}\n")).unwrap();
        let o = Command::new(BIN)
            .args(["bundle", "build"])
            .arg(&recipe)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", out_of(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .to_string()
    };
    let id1 = build("good");
    let version = format!("$PADDOCK_BUNDLE{}/VERSION", rdir.display());
    // READY once it has read a good VERSION: a switch waits for the new instance.
    let script =
        format!("read v < {version}; [ \"$v\" = bad ] && exit 1; echo >&3; exec sleep 1031");
    let app = format!(
        "isolation = \"bundle\"\nbundle = \"sw\"\ncommand = [\"dash\", \"-c\", {script:?}]\n[readiness]\nnotify_fd = 3\n{RESTART}"
    );
    let p = Paddock::with_apps("rb-bundle", &[("sw", &app)])
        .start_with(&["--store".as_ref(), store.as_os_str()]);
    let first = p.wait_state("sw", "READY", Duration::from_secs(10)).pid;
    wait_stable(&p, "sw", 1);

    let id2 = build("bad");
    assert_ne!(id1, id2);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    // The new instance gives up; the old one never stopped.
    wait_for(Duration::from_secs(10), "the rollback", || {
        p.app("sw").rollback.is_some()
    });
    let a = p.app("sw");
    assert_eq!(
        (a.state.as_str(), a.pid, a.generation),
        ("READY", first, Some(1)),
        "{a:?}"
    );
    let note = a.rollback.unwrap();
    assert!(
        note.starts_with(
            "rolled back from generation 2 to 1: the new instance of generation 2 gave up"
        ),
        "{note}"
    );
    let h = history(&p, "sw");
    assert_eq!(h.generations[1].status, "bad", "{h:?}");
    assert_eq!(
        h.generations[1].summary,
        format!("bundle {} → {}", &id1[..12], &id2[..12])
    );
    // Not tried again while the store's `sw` is still the bad bundle.
    let o = p.cli(&["update"]);
    assert!(out_of(&o).contains("not applied"), "{}", out_of(&o));
    assert_eq!(p.app("sw").pid, first);

    // A good third bundle is applied; then generation 1's bundle is removed from the store:
    // rolling back to it is refused, and nothing running is disturbed.
    let id3 = build("good3");
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    wait_for(
        Duration::from_secs(10),
        "the switch to generation 3",
        || {
            let a = p.app("sw");
            a.state == "READY" && a.generation == Some(3) && a.pid != first
        },
    );
    let pid3 = p.app("sw").pid;
    std::fs::remove_dir_all(store.join(&id1)).unwrap();
    let o = p.cli(&["rollback", "sw", "1"]);
    assert!(!o.status.success());
    let out = out_of(&o);
    assert!(
        out.contains(&format!(
            "cannot roll sw back to generation 1: generation 1's bundle {} is gone from the store",
            &id1[..12]
        )),
        "{out}"
    );
    assert!(out.contains("nothing was changed"), "{out}");
    let a = p.app("sw");
    assert_eq!(
        (a.state.as_str(), a.pid, a.generation),
        ("READY", pid3, Some(3)),
        "{a:?}"
    );
    assert!(id3.len() == 64);
    assert_eq!(p.shutdown().code(), Some(0));
}

#[test]
fn a_wasm_module_that_traps_at_once_rolls_back() {
    let s = Scratch::new("rb-wasm");
    let module = s.path().join("app.wasm");
    std::fs::copy(wasm_example(Path::new(ROOT), "worker.wasm"), &module).unwrap();
    let app = format!(
        "isolation = \"wasm\"\nmodule = \"{}\"\nargs = [\"--interval\", \"200ms\"]\n{RESTART}",
        module.display()
    );
    let p = Paddock::with_apps("rb-wasm", &[("w", &app)]).start();
    p.wait_state("w", "READY", Duration::from_secs(20));
    wait_stable(&p, "w", 1);

    // The same path, a module that traps at once.
    let bad = wat::parse_str("(module (func (export \"_start\") unreachable))").unwrap();
    std::fs::write(&module, bad).unwrap();
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    wait_generation(&p, "w", 1, Duration::from_secs(20));
    let a = p.app("w");
    let note = a.rollback.clone().unwrap_or_default();
    assert!(
        note.starts_with("rolled back from generation 2 to 1: generation 2 went FATAL"),
        "{a:?}"
    );
    assert!(note.contains("unreachable"), "{note}");
    // Generation 1 runs from paddock's copy of its module (the file now holds the bad one).
    let h = history(&p, "w");
    assert!(h.generations[1].summary.starts_with("module "), "{h:?}");
    let copies: Vec<_> = std::fs::read_dir(p.dir.path().join("state/generations/modules"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    // It keeps ticking.
    let before = std::fs::read_to_string(p.logs_dir().join("w.out")).unwrap_or_default();
    wait_for(Duration::from_secs(5), "ticks of generation 1", || {
        std::fs::read_to_string(p.logs_dir().join("w.out"))
            .unwrap_or_default()
            .len()
            > before.len()
    });
    assert_eq!(p.shutdown().code(), Some(0));
}
