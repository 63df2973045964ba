//! `paddock-bench`: the program behind `paddock bench` (which executes it, found next to
//! paddock, then on PATH). It measures the isolation levels side by side (crate paddock-lab's
//! `bench`); the flags are those of `paddock bench`.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure the isolation levels side by side on this host: cold start, restart, memory per
/// instance, density, escapes blocked, supervisor overhead (see docs/bench.md).
#[derive(Parser)]
#[command(name = "paddock bench", bin_name = "paddock bench", version)]
struct BenchArgs {
    /// The bench app: a directory holding `paddock-bench-app` (native) and `bench-app.wasm`.
    /// Default: `paddock-bench-app` next to this program (cargo build --release --workspace) and
    /// `target/wasm-examples/bench-app.wasm` (examples/wasm/build.sh target/wasm-examples), else
    /// the committed `examples/wasm/bench-app.wasm`.
    app_dir: Option<PathBuf>,
    /// Levels to run, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,bundle,sandbox,wasm"
    )]
    levels: Vec<String>,
    /// Concurrent instances for the memory-per-instance figure [default: 100; --quick: 10].
    #[arg(long)]
    instances: Option<usize>,
    /// Cold starts per level (and runs per peer) [default: 200; --quick: 20].
    #[arg(long)]
    starts: Option<usize>,
    /// Restarts per level [default: 200; --quick: 20].
    #[arg(long)]
    restarts: Option<usize>,
    /// Memory budget for the density figure [default: 1GiB; --quick: 128MiB].
    #[arg(long)]
    budget: Option<String>,
    /// Density cap for process levels (none, bundle, sandbox) [default: 2000; --quick: 30].
    #[arg(long)]
    max_processes: Option<usize>,
    /// Density cap for wasm instances [default: 12000; --quick: 200].
    #[arg(long)]
    max_wasm: Option<usize>,
    /// Skip the escape matrix (--quick skips it too).
    #[arg(long)]
    no_escapes: bool,
    /// A short run (under 30 s): few samples, small ramps, no escape matrix. For a quick look;
    /// quote figures from a full run.
    #[arg(long)]
    quick: bool,
    /// Also run the same app under the other runners installed (bwrap, crun, wasmtime,
    /// systemd-run), side by side with ratios to a plain exec, and say which are missing.
    #[arg(long)]
    peers: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write a bar chart as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("paddock bench: {msg}");
    ExitCode::from(2)
}

/// Finds the bench app's builds (naming what to build when one is missing), runs the levels,
/// prints the table (or JSON) and writes the SVG.
fn main() -> ExitCode {
    let a = BenchArgs::parse();
    let q = a.quick;
    let pick =
        |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
    let (instances, starts, restarts) = (
        pick(a.instances, 100, 10),
        pick(a.starts, 200, 20),
        pick(a.restarts, 200, 20),
    );
    let (max_processes, max_wasm) = (
        pick(a.max_processes, 2000, 30),
        pick(a.max_wasm, 12000, 200),
    );
    let budget = a
        .budget
        .clone()
        .unwrap_or_else(|| if q { "128MiB" } else { "1GiB" }.into());
    let budget = match paddock::config::units::parse_size(&budget) {
        Ok(b) => b,
        Err(e) => return fail(format!("--budget: {e}")),
    };
    for l in &a.levels {
        if !paddock_lab::bench::LEVELS.contains(&l.as_str()) {
            return fail(format!(
                "--levels: unknown level {l:?}; expected some of none,bundle,sandbox,wasm"
            ));
        }
    }
    // The bench app and the probe are built next to this program; the paddock to measure is
    // the one that executed it (`paddock bench` says which), else the one built next to it.
    let exe = std::env::current_exe().unwrap_or_default();
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let paddock = match std::env::var_os("PADDOCK_BIN") {
        Some(p) => PathBuf::from(p),
        None => bin_dir.join("paddock"),
    };
    if !paddock.is_file() {
        return fail(format!(
            "the paddock to measure, {}, is missing: build it with `cargo build --release --workspace`, or run `paddock bench` (it says which paddock to measure in PADDOCK_BIN)",
            paddock.display()
        ));
    }
    let (native, wasm) = match &a.app_dir {
        Some(d) => (d.join("paddock-bench-app"), vec![d.join("bench-app.wasm")]),
        None => (
            bin_dir.join("paddock-bench-app"),
            vec![
                PathBuf::from("target/wasm-examples/bench-app.wasm"),
                PathBuf::from("examples/wasm/bench-app.wasm"),
            ],
        ),
    };
    let probe = bin_dir.join("paddock-probe");
    let wasm_probe = [
        a.app_dir.as_ref().map(|d| d.join("probe.wasm")),
        Some(PathBuf::from("target/wasm-examples/probe.wasm")),
        Some(PathBuf::from("examples/wasm/probe.wasm")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .map(|p| std::path::absolute(&p).unwrap_or(p));
    let natives = a.levels.iter().any(|l| l != "wasm");
    if natives && !native.is_file() {
        return fail(format!(
            "the native bench app {} is missing: build it with `cargo build --release --workspace` (the binary paddock-bench-app, from crates/paddock-lab/bench-app/src/main.rs){}",
            native.display(),
            if a.app_dir.is_some() {
                ", and copy it there"
            } else {
                ""
            }
        ));
    }
    let wasm_path = wasm.iter().find(|p| p.is_file()).cloned();
    if a.levels.iter().any(|l| l == "wasm") && wasm_path.is_none() {
        return fail(format!(
            "the wasm bench app is missing (looked for {}): build it with `bash examples/wasm/build.sh target/wasm-examples` (needs `rustup target add wasm32-wasip1`)",
            wasm.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let escapes = !a.no_escapes && !a.quick;
    if escapes && !probe.is_file() {
        return fail(format!(
            "the escape probe {} is missing: build it with `cargo build --release --workspace`, or pass --no-escapes",
            probe.display()
        ));
    }
    let opts = paddock_lab::bench::Options {
        paddock,
        native: std::path::absolute(&native).unwrap_or(native),
        wasm: wasm_path
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .unwrap_or_default(),
        probe,
        wasm_probe,
        levels: a.levels,
        instances,
        starts,
        restarts,
        budget,
        max_processes,
        max_wasm,
        escapes,
        // Progress goes to stderr in every mode (the report, table or JSON, to stdout).
        progress: true,
        tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        idle_secs: if q { 0.5 } else { 2.0 },
        peers: a.peers,
        quick: q,
        work: std::env::temp_dir().join(format!("paddock-bench-{}", std::process::id())),
    };
    let report = match paddock_lab::bench::run_bench(&opts) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&opts.work);
            return fail(e);
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", paddock_lab::bench::table(&report));
    }
    if let Some(p) = a.svg
        && let Err(e) = std::fs::write(&p, paddock_lab::bench::svg(&report))
    {
        return fail(format!("{}: {e}", p.display()));
    }
    ExitCode::SUCCESS
}
