//! `paddock top` in a real terminal: tmux runs it against a real `paddock serve`, `send-keys`
//! types and `capture-pane` reads the screen. Each wait polls the screen until a deadline.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of the test's own (its socket in the scratch dir), with one session.
struct Tmux {
    sock: PathBuf,
}

const SESSION: &str = "top";

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.sock).env("TERM", "xterm-256color");
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Typed as text, not as key names.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", SESSION, "-l", text]);
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", SESSION])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `ok` says yes; panics with the last screen after 15 s.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if t.elapsed() > Duration::from_secs(15) {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the session still runs.
    fn alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", SESSION])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// The columns of the table's line of an app (the first whose name column is `name`), without
/// the selection mark: NAME STATE LEVEL HEALTH CPU% MEM RESTARTS UPTIME INFO….
fn row<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .map(|l| {
            l.trim_start_matches(['▸', ' '])
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find(|c| c.first() == Some(&name))
}

fn state_of(screen: &str, name: &str) -> Option<String> {
    row(screen, name).and_then(|c| c.get(1).map(|s| s.to_string()))
}

fn cpu_of(screen: &str, name: &str) -> Option<f64> {
    row(screen, name).and_then(|c| c.get(4).and_then(|s| s.parse().ok()))
}

/// The app names of the table, top to bottom (the lines after the header).
fn names(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains("STATE"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            l.trim_start_matches(['▸', ' '])
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect()
}

fn tmux_version() -> Option<String> {
    let out = Command::new("tmux").arg("-V").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn top_shows_sorts_filters_stops_tails_and_quits_in_tmux() {
    let Some(version) = tmux_version() else {
        println!(
            "SKIPPED top_shows_sorts_filters_stops_tails_and_quits_in_tmux: tmux is not installed (apt-get install tmux)"
        );
        return;
    };
    let sleeper = |first: &str, deps: &str| {
        format!(
            "command = [\"/bin/sh\", \"-c\", \"echo {first}; exec sleep 1000\"]\nstop_timeout = \"2s\"\n{deps}"
        )
    };
    let db = sleeper("db-says-hello", "");
    let web = sleeper("web-line", "requires = [\"db\"]\n");
    let worker = sleeper("worker-line", "after = [\"web\"]\n");
    // A busy loop held to a fifth of a core: the top of the CPU column.
    let burner = "command = [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\nstop_timeout = \"2s\"\n[limits]\ncpu = 0.2\n";
    let p = Paddock::with_apps(
        "top",
        &[
            ("db", &db),
            ("web", &web),
            ("worker", &worker),
            ("burner", burner),
        ],
    )
    .start();
    for a in ["db", "web", "worker", "burner"] {
        p.wait_state(a, "READY", Duration::from_secs(15));
    }
    let tmux = Tmux {
        sock: p.dir.path().join("tmux.sock"),
    };
    let exit = p.dir.path().join("top.exit");
    let err = p.dir.path().join("top.err");
    let line = format!(
        "'{BIN}' top --socket '{}' --interval 300ms 2>'{}'; echo EXIT=$? > '{}'",
        p.socket().display(),
        err.display(),
        exit.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        SESSION,
        "-x",
        "160",
        "-y",
        "40",
        &line,
    ]);
    let t0 = Instant::now();

    // Every app, READY, sorted by name.
    let s = tmux.wait("the four apps READY", |s| {
        ["db", "web", "worker", "burner"]
            .iter()
            .all(|a| state_of(s, a).as_deref() == Some("READY"))
    });
    println!("{version}: first full table after {:?}", t0.elapsed());
    assert_eq!(names(&s), ["burner", "db", "web", "worker"], "{s}");
    assert!(
        s.contains("NAME↑") && s.contains("CPU%") && s.contains("UPTIME"),
        "{s}"
    );
    assert_eq!(row(&s, "db").unwrap()[2], "none", "the level: {s}");

    // Sort: `o` four times reaches CPU%, `O` turns it to descending; the burner comes first
    // once two refreshes gave it a rate.
    tmux.keys(&["o", "o", "o", "o"]);
    tmux.wait("sorted by CPU%", |s| s.contains("CPU%↑"));
    tmux.keys(&["O"]);
    let s = tmux.wait("the burner first by CPU%", |s| {
        s.contains("CPU%↓")
            && names(s).first().map(String::as_str) == Some("burner")
            && cpu_of(s, "burner").is_some_and(|c| c > 5.0)
    });
    let cpu = cpu_of(&s, "burner").unwrap();
    println!("burner CPU% (limit 0.2 core): {cpu}");
    assert!(cpu < 40.0, "cpu = 0.2 holds it near 20%: {s}");
    // Back to names, ascending.
    tmux.keys(&["o", "o", "o", "o", "O"]);
    tmux.wait("sorted by name again", |s| s.contains("NAME↑"));

    // Filter: `/` then text narrows the table; Esc clears.
    tmux.keys(&["/"]);
    tmux.type_text("wor");
    let s = tmux.wait("only worker listed", |s| names(s) == ["worker"]);
    assert!(s.contains("filter: wor"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait("all four again", |s| names(s).len() == 4);

    // The dependency tree: db, web under it, worker under web.
    tmux.keys(&["t"]);
    let s = tmux.wait("the tree", |s| {
        s.contains("└─ web") && s.contains("   └─ worker")
    });
    assert!(s.contains("│ tree"), "{s}");
    tmux.keys(&["t"]);
    tmux.wait("the flat list", |s| !s.contains("└─ web"));

    // Stop web from the keyboard: select it with the filter, `x`; the status line has the
    // answer, the API says STOPPED, and so does the screen.
    tmux.keys(&["/"]);
    tmux.type_text("web");
    tmux.keys(&["Enter"]);
    tmux.wait("web alone, selected", |s| {
        names(s) == ["web"] && s.lines().any(|l| l.starts_with("▸ web"))
    });
    tmux.keys(&["x"]);
    let s = tmux.wait("the stop's answer", |s| s.contains("stop web: requested"));
    println!("status line: {:?}", s.lines().last().unwrap_or(""));
    p.wait_state("web", "STOPPED", Duration::from_secs(10));
    tmux.wait("web STOPPED on screen", |s| {
        state_of(s, "web").as_deref() == Some("STOPPED")
    });
    // And start it again with `s`.
    tmux.keys(&["s"]);
    tmux.wait("the start's answer", |s| s.contains("start web:"));
    p.wait_state("web", "READY", Duration::from_secs(10));
    tmux.wait("web READY on screen", |s| {
        state_of(s, "web").as_deref() == Some("READY")
    });

    // The log pane of db: its first line; `e` switches to stderr (empty).
    tmux.keys(&["Escape", "/"]);
    tmux.type_text("db");
    tmux.keys(&["Enter", "l"]);
    let s = tmux.wait("db's log line", |s| {
        s.contains("logs: db (stdout)") && s.contains("db-says-hello")
    });
    assert_eq!(state_of(&s, "db").as_deref(), Some("READY"), "{s}");
    tmux.keys(&["e"]);
    tmux.wait("the stderr pane", |s| {
        s.contains("logs: db (stderr)") && !s.contains("db-says-hello")
    });

    // Help, then quit: the pane's process exits 0.
    tmux.keys(&["?"]);
    tmux.wait("the help", |s| s.contains("paddock top: keys"));
    tmux.keys(&["Escape"]);
    tmux.wait("the help closed", |s| !s.contains("paddock top: keys"));
    tmux.keys(&["q"]);
    wait_for(Duration::from_secs(10), "top to exit", || {
        std::fs::read_to_string(&exit).is_ok_and(|s| s.contains("EXIT="))
    });
    let code = std::fs::read_to_string(&exit).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(code.trim(), "EXIT=0", "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    wait_for(Duration::from_secs(5), "the tmux session to end", || {
        !tmux.alive()
    });
}

/// paddock goes away under the view: it says so and keeps trying, and shows the apps again
/// once paddock is back.
#[test]
fn top_survives_paddock_going_away_in_tmux() {
    if tmux_version().is_none() {
        println!("SKIPPED top_survives_paddock_going_away_in_tmux: tmux is not installed");
        return;
    }
    let app = "command = [\"/bin/sleep\", \"1000\"]\nstop_timeout = \"2s\"\n";
    let p = Paddock::with_apps("topgone", &[("lonely", app)]).start();
    p.wait_state("lonely", "READY", Duration::from_secs(15));
    let tmux = Tmux {
        sock: p.dir.path().join("tmux.sock"),
    };
    let exit = p.dir.path().join("top.exit");
    let stty = p.dir.path().join("stty");
    // After top: how it left the terminal (not raw: `icanon` and `echo` back on).
    let line = format!(
        "'{BIN}' top --socket '{}' --interval 200ms; echo EXIT=$? > '{}'; stty -a > '{}.new'; mv '{}.new' '{}'",
        p.socket().display(),
        exit.display(),
        stty.display(),
        stty.display(),
        stty.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        SESSION,
        "-x",
        "120",
        "-y",
        "30",
        &line,
    ]);
    tmux.wait("lonely READY", |s| {
        state_of(s, "lonely").as_deref() == Some("READY")
    });
    // paddock stops (its scratch dir stays: the next one serves from it).
    let mut p = p;
    let mut child = p.child.take().unwrap();
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_child(&mut child, Duration::from_secs(30));
    let s = tmux.wait("the view to say paddock is gone", |s| {
        s.contains("paddock unreachable")
    });
    assert!(s.contains("cannot connect to paddock"), "{s}");
    assert!(tmux.alive(), "top must keep running:\n{s}");
    // paddock again on the same socket: the view comes back by itself.
    let _p = p.start();
    tmux.wait("lonely READY again", |s| {
        !s.contains("paddock unreachable") && state_of(s, "lonely").as_deref() == Some("READY")
    });
    // SIGTERM ends it as `q` does, and the terminal is put back.
    let pane: i32 = String::from_utf8_lossy(
        &tmux
            .run(&["display-message", "-p", "-t", SESSION, "#{pane_pid}"])
            .stdout,
    )
    .trim()
    .parse()
    .expect("the pane's pid");
    let top = children_of(pane)
        .first()
        .map(|c| c.0)
        .expect("top under the pane's shell");
    // SAFETY: kill(2) takes no pointers; `top` is the child of the pane's shell, which waits
    // for it, so the pid cannot have been reused.
    unsafe { libc::kill(top, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "top to exit", || stty.exists());
    let code = std::fs::read_to_string(&exit).unwrap();
    assert_eq!(code.trim(), "EXIT=0");
    let modes = std::fs::read_to_string(&stty).unwrap();
    let words: Vec<&str> = modes.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "the terminal is still raw: {modes}"
    );
}

#[test]
fn top_needs_a_terminal() {
    let s = Scratch::new("topnotty");
    let out = Command::new(BIN)
        .args(["top", "--socket"])
        .arg(s.path().join("none.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("paddock: top: standard output is not a terminal"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["top", "--interval", "20ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("below the minimum of 100ms"), "{err}");
}
