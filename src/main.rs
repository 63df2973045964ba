//! The `paddock` command: `serve` runs the supervisor; every other verb is a thin client of its
//! control socket.

use clap::{Parser, Subcommand};
use paddock::control::api::*;
use paddock::control::client::Client;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_SOCKET: &str = "/run/paddock/paddock.sock";
const DEFAULT_CONFIG: &str = "/etc/paddock/apps";
const DEFAULT_STATE: &str = "/var/lib/paddock";
const DEFAULT_STORE: &str = paddock::bundle::DEFAULT_STORE;

#[derive(Parser)]
#[command(
    name = "paddock",
    version,
    about = "A process supervisor with per-app isolation levels",
    propagate_version = true
)]
struct Cli {
    /// The control socket of the paddock to talk to (or serve on).
    #[arg(long, global = true, env = "PADDOCK_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Without a verb, paddock serves when it is PID 1 (the init of a container or VM) and
    /// prints this help otherwise.
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the supervisor in the foreground.
    Serve {
        /// A directory of app files (NAME.toml); may be given more than once.
        #[arg(long = "config", default_value = DEFAULT_CONFIG)]
        config: Vec<PathBuf>,
        /// Where logs (and later caches) live.
        #[arg(long, default_value = DEFAULT_STATE)]
        state_dir: PathBuf,
        /// How many wasm instances can run at once (default: the number of wasm apps + 256, at
        /// least 1024).
        #[arg(long, env = "PADDOCK_WASM_SLOTS")]
        wasm_slots: Option<u32>,
        /// The bundle store that `bundle = "NAME"` in app files refers to.
        #[arg(long, env = "PADDOCK_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
        /// Host-wide settings (hostname, log_dir, state_dir, socket, shutdown_timeout,
        /// on_exit); used when present. Command-line flags win over it.
        #[arg(long, default_value = paddock::pid1::DEFAULT_GLOBAL)]
        global: PathBuf,
        /// Also serve Prometheus metrics (GET /metrics only, read-only) on this TCP address,
        /// e.g. 127.0.0.1:9464, [::]:9464 or :9464.
        #[arg(long, value_name = "ADDR", env = "PADDOCK_METRICS_LISTEN")]
        metrics_listen: Option<String>,
    },
    /// Validate app files without running anything; exits non-zero on any error.
    Check {
        #[arg(default_value = DEFAULT_CONFIG)]
        dirs: Vec<PathBuf>,
        /// The bundle store that `bundle = "NAME"` in app files refers to.
        #[arg(long, env = "PADDOCK_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
    },
    /// Write app files from a supervisord config ([program:NAME] sections), systemd .service
    /// units or .timer units (with their service: a scheduled app), reporting each key that
    /// could not be mapped and why (see docs/migrating.md).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The directory to write NAME.toml files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace app files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Build, list, inspect, verify and garbage-collect dependency bundles.
    Bundle {
        /// The bundle store.
        #[arg(long, global = true, env = "PADDOCK_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
        #[command(subcommand)]
        cmd: paddock::bundle::cli::BundleCmd,
    },
    /// Show apps: state, pid, uptime, restarts, memory, health, last exit.
    Status {
        apps: Vec<String>,
        #[arg(long)]
        json: bool,
        /// For containers and orchestrators: exit 0 when every app is as its file wants it
        /// (autostart apps READY, others as asked), else 1, naming the apps that are not.
        #[arg(long, conflicts_with = "json")]
        probe: bool,
    },
    /// Start apps (or `all`) and wait until they run.
    Start {
        #[arg(required = true)]
        apps: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop apps (or `all`) and wait until they have exited.
    Stop {
        #[arg(required = true)]
        apps: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop then start apps (or `all`).
    Restart {
        #[arg(required = true)]
        apps: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Send a signal (HUP, USR1, TERM, 9, …) to apps' main processes.
    Signal {
        signal: String,
        #[arg(required = true)]
        apps: Vec<String>,
    },
    /// Print an app's pid, or paddock's own without an app.
    Pid { app: Option<String> },
    /// Print the end of an app's log, and with -f keep following it.
    Tail {
        app: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: usize,
        #[arg(long)]
        stderr: bool,
    },
    /// Show which apps were added, changed or removed on disk, without acting.
    Reread {
        #[arg(long)]
        json: bool,
    },
    /// Apply the app files on disk: add new apps, remove deleted ones, restart changed ones
    /// (and start a changed autostart app that was FATAL or EXITED); says what it did per app.
    Update {
        #[arg(long)]
        json: bool,
    },
    /// List an app's generations: every applied change of its definition, which one is in
    /// force, which are stable and which were rolled back.
    History {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Take an app back to an earlier generation (default: the last stable one before the
    /// current), applied as `update` applies a changed app.
    Rollback {
        app: String,
        generation: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print state changes as they happen, one JSON object per line.
    Events,
    /// A live view of every app (state, level, health, CPU %, memory, restarts, uptime) with
    /// sorting, filtering, the dependency tree, a log pane and start/stop/restart keys (`?`
    /// lists them). Needs a terminal.
    Top {
        /// How often the apps are read again (at least 100ms); state changes show at once.
        #[arg(long, default_value = "1s", value_parser = paddock::units::parse_duration)]
        interval: std::time::Duration,
    },
    /// Execute the paddock binary anew (a new version after an upgrade), keeping every app
    /// running: same pids, logs, sockets (also on SIGUSR1).
    Reexec,
    /// Stop every app, then exit paddock.
    Shutdown {
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop every app, then power the machine off (when paddock is PID 1 of a VM or host).
    Poweroff,
    /// Stop every app, then reboot the machine (when paddock is PID 1 of a VM or host).
    Reboot,
    /// Log file management.
    Logs {
        #[command(subcommand)]
        cmd: LogsCmd,
    },
    /// What this host offers for each isolation level (namespaces, cgroups, Landlock, seccomp).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Measure the isolation levels side by side on this host: cold start, restart, memory per
    /// instance, density, escapes blocked, supervisor overhead (see docs/bench.md). Runs the
    /// program paddock-bench (crates/paddock-lab, built from a source tree, not installed):
    /// `paddock bench --help`.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Bench {
        /// The arguments of paddock-bench (`paddock bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print the versions of this CLI and of the running paddock.
    Version,
}

#[derive(Subcommand)]
enum LogsCmd {
    /// Reopen every log file (after an external rotator moved them).
    Reopen,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("paddock: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // The descriptor holder `serve` starts (see src/fdstore.rs): kept out of the CLI's parser.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == "__fdholder" {
        paddock::fdstore::holder_main(std::path::Path::new(&args[2]));
    }
    let mut cli = Cli::parse();
    if cli.cmd.is_none() {
        if !paddock::pid1::is_pid1() {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::from(2);
        }
        cli.cmd = Some(Cmd::Serve {
            config: vec![PathBuf::from(DEFAULT_CONFIG)],
            state_dir: PathBuf::from(DEFAULT_STATE),
            store: PathBuf::from(DEFAULT_STORE),
            global: PathBuf::from(paddock::pid1::DEFAULT_GLOBAL),
            wasm_slots: None,
            metrics_listen: None,
        });
    }
    let Some(cmd) = cli.cmd else {
        return ExitCode::from(2);
    };
    let client = Client::new(&cli.socket);
    // App files name bundles of this store (`bundle = "NAME"`).
    if let Cmd::Serve { store, .. } | Cmd::Check { store, .. } | Cmd::Bundle { store, .. } = &cmd {
        paddock::bundle::set_store(store);
    }
    match cmd {
        Cmd::Serve {
            config,
            state_dir,
            global,
            wasm_slots,
            metrics_listen,
            ..
        } => serve(
            config,
            state_dir,
            cli.socket.clone(),
            &global,
            wasm_slots,
            metrics_listen,
        ),
        Cmd::Bundle { store, cmd } => paddock::bundle::cli::run(&store, cmd, &|dirs| {
            // `bundle gc` keeps the bundles the app files use.
            paddock::config::load_dirs(dirs)
                .map(|specs| {
                    specs
                        .values()
                        .filter_map(|s| s.bundle.as_ref().map(|b| b.id.clone()))
                        .collect()
                })
                .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
        }),
        Cmd::Import { files, out, force } => paddock::import::run(&files, &out, force),
        Cmd::Check { dirs, .. } => match paddock::daemon::check_config(&dirs) {
            Ok(apps) => {
                println!("ok: {} apps", apps.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in &errs {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{} error{} found",
                    errs.len(),
                    if errs.len() == 1 { "" } else { "s" }
                );
                ExitCode::from(1)
            }
        },
        Cmd::Status { apps, json, probe } => status(&client, &apps, json, probe),
        Cmd::Start { apps, no_wait } => action(&client, "start", &apps, !no_wait),
        Cmd::Stop { apps, no_wait } => action(&client, "stop", &apps, !no_wait),
        Cmd::Restart { apps, no_wait } => action(&client, "restart", &apps, !no_wait),
        Cmd::Signal { signal, apps } => {
            if let Err(e) = paddock::config::units::parse_signal(&signal) {
                return fail(e);
            }
            let path = format!("/v1/apps/{}/signal?signal={}", apps.join(","), signal);
            report_actions(client.json::<ActionResponse>("POST", &path))
        }
        Cmd::Pid { app } => match app {
            None => match client.json::<VersionInfo>("GET", "/v1/version") {
                Ok((_, v)) => {
                    println!("{}", v.pid);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            Some(a) => match client.json::<StatusList>("GET", &format!("/v1/apps/{a}")) {
                Ok((_, l)) => match l.apps.first().and_then(|s| s.pid) {
                    Some(p) => {
                        println!("{p}");
                        ExitCode::SUCCESS
                    }
                    None => {
                        eprintln!("paddock: {a} is not running");
                        ExitCode::from(1)
                    }
                },
                Err(e) => fail(e),
            },
        },
        Cmd::Tail {
            app,
            follow,
            lines,
            stderr,
        } => {
            let path = format!(
                "/v1/apps/{app}/logs?stream={}&lines={lines}&follow={}",
                if stderr { "stderr" } else { "stdout" },
                follow
            );
            match client.open("GET", &path, None) {
                Ok((200, mut body)) => {
                    let mut out = std::io::stdout().lock();
                    let mut buf = [0u8; 16384];
                    loop {
                        match std::io::Read::read(&mut body, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    ExitCode::SUCCESS
                }
                Ok((_, mut body)) => {
                    let mut s = String::new();
                    let _ = std::io::Read::read_to_string(&mut body, &mut s);
                    fail(
                        serde_json::from_str::<ErrorBody>(&s)
                            .map(|e| e.error)
                            .unwrap_or(s),
                    )
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Events => match client.open("GET", "/v1/events", None) {
            Ok((200, body)) => {
                let mut out = std::io::stdout().lock();
                for line in std::io::BufRead::lines(body) {
                    let Ok(line) = line else { break };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
                ExitCode::SUCCESS
            }
            Ok((status, _)) => fail(format!("paddock answered HTTP {status}")),
            Err(e) => fail(e),
        },
        Cmd::Top { interval } => match paddock::top::run(&cli.socket, interval) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Reread { json } => diff(&client, "GET", "/v1/reread", json),
        Cmd::Update { json } => diff(&client, "POST", "/v1/update", json),
        Cmd::History { app, json } => history(&client, &app, json),
        Cmd::Rollback {
            app,
            generation,
            json,
        } => {
            let path = match generation {
                Some(g) => format!("/v1/apps/{app}/rollback?generation={g}"),
                None => format!("/v1/apps/{app}/rollback"),
            };
            match client.json::<RollbackResponse>("POST", &path) {
                Ok((_, r)) if json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok((_, r)) => {
                    println!("{}: generation {} → {}: {}", r.app, r.from, r.to, r.did);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Reexec => {
            let before = client
                .request("GET", "/v1/version", None)
                .ok()
                .and_then(|r| serde_json::from_str::<VersionInfo>(&r.body).ok());
            match client.request("POST", "/v1/reexec", None) {
                Ok(r) if r.status == 202 => {}
                Ok(r) => return fail(r.body.trim()),
                Err(e) => return fail(e),
            }
            // The next paddock answers on the same socket (requests wait in its backlog).
            let t = std::time::Instant::now();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if let Ok(r) = client.request("GET", "/v1/version", None)
                    && let Ok(v) = serde_json::from_str::<VersionInfo>(&r.body)
                {
                    println!(
                        "re-executed: paddock {}{} (pid {}), {} apps",
                        before
                            .as_ref()
                            .filter(|b| b.version != v.version)
                            .map(|b| format!("{} -> ", b.version))
                            .unwrap_or_default(),
                        v.version,
                        v.pid,
                        v.apps
                    );
                    return ExitCode::SUCCESS;
                }
                if t.elapsed() > std::time::Duration::from_secs(30) {
                    return fail("paddock did not answer within 30 s of re-executing; see its log");
                }
            }
        }
        Cmd::Shutdown { no_wait } => match client.request("POST", "/v1/shutdown", None) {
            Ok(r) if r.status == 202 => {
                if !no_wait {
                    // paddock removes its socket once every app has stopped.
                    while client.request("GET", "/v1/version", None).is_ok() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
                println!("shut down");
                ExitCode::SUCCESS
            }
            Ok(r) => fail(r.body.trim()),
            Err(e) => fail(e),
        },
        Cmd::Doctor { json } => {
            let r = paddock::doctor::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                paddock::doctor::print(&r);
            }
            ExitCode::SUCCESS
        }
        Cmd::Poweroff | Cmd::Reboot => {
            let then = if matches!(cmd, Cmd::Reboot) {
                "reboot"
            } else {
                "poweroff"
            };
            match client.request("POST", &format!("/v1/shutdown?then={then}"), None) {
                Ok(r) if r.status == 202 => {
                    println!("stopping every app, then {then}");
                    ExitCode::SUCCESS
                }
                Ok(r) => fail(r.body.trim()),
                Err(e) => fail(e),
            }
        }
        Cmd::Logs {
            cmd: LogsCmd::Reopen,
        } => match client.request("POST", "/v1/logs/reopen", None) {
            Ok(r) if r.status == 200 => {
                println!("log files reopened");
                ExitCode::SUCCESS
            }
            Ok(r) => fail(r.body.trim()),
            Err(e) => fail(e),
        },
        Cmd::Bench { args } => bench(args),
        Cmd::Version => {
            println!("paddock {} (cli)", env!("CARGO_PKG_VERSION"));
            match client.json::<VersionInfo>("GET", "/v1/version") {
                Ok((_, v)) => println!(
                    "paddock {} (server, pid {}, {} apps)",
                    v.version, v.pid, v.apps
                ),
                Err(e) => println!("server: {e}"),
            }
            ExitCode::SUCCESS
        }
    }
}

fn status(client: &Client, apps: &[String], json: bool, probe: bool) -> ExitCode {
    use paddock::control::view;
    let path = if apps.is_empty() {
        "/v1/apps".to_string()
    } else {
        format!("/v1/apps/{}", apps.join(","))
    };
    if !json && !probe {
        // The table as the server renders it (INFO cut to the terminal's width when no app is
        // named): nothing decoded or formatted here, so the CLI costs about an exec whatever
        // the number of apps.
        let width = if apps.is_empty() {
            view::terminal_width().map_or(String::new(), |w| {
                format!("&width={}", w.clamp(1, u16::MAX as usize))
            })
        } else {
            String::new()
        };
        return match client.text(&format!("{path}?format=table{width}")) {
            Ok((ctype, body)) => {
                let _ = std::io::stdout().lock().write_all(body.as_bytes());
                // Like supervisorctl: non-zero when any listed app is not up and ready.
                if ctype == paddock::control::table::ALL_READY {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                }
            }
            Err(e) => fail(e),
        };
    }
    let list = match client.json::<StatusList>("GET", &path) {
        Ok((_, l)) => l,
        // A probe says "unhealthy" with 1 (a container engine reserves 2).
        Err(e) if probe => {
            eprintln!("paddock: {e}");
            return ExitCode::from(1);
        }
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    if probe {
        let bad = view::probe(&list);
        if bad.is_empty() {
            let _ = writeln!(out, "ok: {} apps as their files want", list.apps.len());
            return ExitCode::SUCCESS;
        }
        for b in &bad {
            let _ = writeln!(out, "{b}");
        }
        return ExitCode::from(1);
    }
    // --json
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// `paddock history APP`: a table, newest last; `*` marks the generation in force.
fn history(client: &Client, app: &str, json: bool) -> ExitCode {
    let h = match client.json::<HistoryResponse>("GET", &format!("/v1/apps/{app}/history")) {
        Ok((_, h)) => h,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&h).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<5} {:<25} {:<8} {:<14} {:<40} NOTE",
        "GEN", "APPLIED", "STATUS", "DIGEST", "CHANGE"
    );
    for g in &h.generations {
        let _ = writeln!(
            out,
            "{:<5} {:<25} {:<8} {:<14} {:<40} {}",
            format!("{}{}", g.generation, if g.current { "*" } else { "" }),
            g.applied,
            g.status,
            &g.digest[..g.digest.len().min(12)],
            g.summary,
            g.note
        );
    }
    if let Some(n) = &h.note {
        let _ = writeln!(out, "{app}: {n}");
    }
    ExitCode::SUCCESS
}

fn report_actions(r: Result<(u16, ActionResponse), String>) -> ExitCode {
    match r {
        Ok((_, resp)) => {
            for x in &resp.results {
                if x.ok {
                    println!("{}: {}", x.app, x.message);
                } else {
                    eprintln!("{}: ERROR ({}): {}", x.app, x.state, x.message);
                }
            }
            if resp.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e),
    }
}

fn action(client: &Client, verb: &str, apps: &[String], wait: bool) -> ExitCode {
    let path = format!("/v1/apps/{}/{verb}?wait={wait}", apps.join(","));
    report_actions(client.json::<ActionResponse>("POST", &path))
}

fn diff(client: &Client, method: &str, path: &str, json: bool) -> ExitCode {
    match client.json::<UpdateResponse>(method, path) {
        Ok((_, r)) if json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok((_, r)) => {
            for e in &r.errors {
                eprintln!("{e}");
            }
            if !r.ok {
                eprintln!("paddock: the app files have errors; nothing was changed");
                return ExitCode::from(1);
            }
            if r.applied && !r.apps.is_empty() {
                for a in &r.apps {
                    match a.change.as_str() {
                        "unchanged" => println!("{}: unchanged", a.app),
                        "removed" => println!("{}: {}", a.app, a.did),
                        c => println!("{}: {c}, {}", a.app, a.did),
                    }
                }
                return ExitCode::SUCCESS;
            }
            let verb = |done: &str, todo: &str| {
                if r.applied {
                    done.to_string()
                } else {
                    todo.to_string()
                }
            };
            for a in &r.added {
                println!("{a}: {}", verb("added", "available"));
            }
            for a in &r.changed {
                println!(
                    "{a}: {}",
                    verb("changed, restarted if it was running", "changed")
                );
            }
            for a in &r.removed {
                println!("{a}: {}", verb("removed", "disappeared"));
            }
            if r.added.is_empty() && r.changed.is_empty() && r.removed.is_empty() {
                println!("no changes");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `paddock serve`, and, as PID 1, the final act: kill what is left, then power off or reboot
/// (a VM) or exit with the supervisor's code (a container). PID 1 never simply returns from an
/// error: a VM would panic.
fn serve(
    config: Vec<PathBuf>,
    state_dir: PathBuf,
    socket: PathBuf,
    global_path: &std::path::Path,
    wasm_slots: Option<u32>,
    metrics_listen: Option<String>,
) -> ExitCode {
    use paddock::pid1::{self, OnExit};
    let explicit = global_path != std::path::Path::new(pid1::DEFAULT_GLOBAL);
    let pid1 = pid1::is_pid1();
    let global = match pid1::load_global(global_path, explicit) {
        Ok(g) => g,
        Err(e) if pid1 => {
            eprintln!("paddock: {e}; going on with defaults");
            pid1::Global {
                shutdown_timeout: std::time::Duration::from_secs(5),
                ..Default::default()
            }
        }
        Err(e) => return fail(e),
    };
    // Flags given on the command line win; the settings file replaces only the defaults.
    let socket = if socket == std::path::Path::new(DEFAULT_SOCKET) {
        global.socket.clone().unwrap_or(socket)
    } else {
        socket
    };
    let state_dir = if state_dir == std::path::Path::new(DEFAULT_STATE) {
        global.state_dir.clone().unwrap_or(state_dir)
    } else {
        state_dir
    };
    let opts = paddock::daemon::Options {
        config_dirs: config,
        socket,
        state_dir,
        global: global.clone(),
        wasm_slots,
        metrics_listen,
    };
    let result = std::panic::catch_unwind(|| paddock::daemon::serve(opts));
    let (code, halt) = match result {
        Ok(Ok(paddock::daemon::Outcome {
            reexec: Some(exe), ..
        })) => {
            // `paddock reexec`: the same pid runs the (possibly new) binary with the same
            // arguments; it adopts the apps, which are still its children.
            use std::os::unix::process::CommandExt;
            eprintln!("paddock: re-executing {}", exe.display());
            let e = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env("PADDOCK_REEXEC", "1")
                .exec();
            eprintln!(
                "paddock: cannot execute {}: {e}; the apps keep running: start paddock again to take them back",
                exe.display()
            );
            (1, None)
        }
        Ok(Ok(out)) => (out.code, out.halt),
        Ok(Err(e)) => {
            eprintln!("paddock: {e}");
            (2, None)
        }
        Err(_) => {
            eprintln!("paddock: internal error (panic); stopping");
            (70, None)
        }
    };
    if !pid1 {
        return ExitCode::from(code as u8);
    }
    eprintln!("paddock: stopping every remaining process");
    pid1::kill_everything_left(global.shutdown_timeout);
    let action = match (halt, global.on_exit) {
        (Some(paddock::daemon::Halt::Reboot), _) | (None, OnExit::Reboot) => Some(true),
        (Some(paddock::daemon::Halt::Poweroff), _) | (None, OnExit::Poweroff) => Some(false),
        (None, OnExit::Auto) if pid1::is_machine_init() => Some(false),
        _ => None,
    };
    match action {
        Some(reboot) => {
            eprintln!(
                "paddock: {}",
                if reboot { "rebooting" } else { "powering off" }
            );
            pid1::halt(reboot)
        }
        None => ExitCode::from(code as u8),
    }
}

/// `paddock bench ARGS`, like cargo's and git's external subcommands: executes the program
/// paddock-bench (crate paddock-lab: the bench is tooling, not part of the product) found next
/// to this executable, then on PATH, and tells it to measure this paddock (`PADDOCK_BIN`).
fn bench(args: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("paddock-bench").to_string_lossy().into_owned());
    let Some(prog) = beside
        .and_then(|p| paddock::config::resolve_program(&p, None, None).ok())
        .or_else(|| paddock::config::resolve_program("paddock-bench", None, None).ok())
    else {
        return fail(
            "paddock bench is not part of this install: from a source tree, `cargo build --release --workspace` then `paddock bench` (or `cargo run --release -p paddock-lab --bin paddock-bench -- …`)",
        );
    };
    let mut cmd = std::process::Command::new(&prog);
    cmd.args(args);
    if let Some(e) = &exe {
        cmd.env("PADDOCK_BIN", e);
    }
    let err = cmd.exec();
    fail(format!("cannot execute {}: {err}", prog.display()))
}
