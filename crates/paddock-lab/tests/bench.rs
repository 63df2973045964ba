//! `paddock bench` with small numbers at the levels this build has: the report is complete and
//! sane (every figure present, p99 ≥ median, instances counted). Never asserts timings.

// The harness of paddock's own tests (its BIN is the paddock built beside these tests).
#[path = "../../../tests/common/mod.rs"]
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The repository root, and a fresh app dir `TAG-PID` holding the bench app's native build and
/// its wasm build (CI's fresh one, else the committed one). Not under /tmp: the sandbox level
/// mounts a private /tmp over the bundle's files, and a bundle whose entry lies under /tmp
/// cannot run there (exit status 127 from the loader).
fn app_dir(tag: &str) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = [
        "target/wasm-examples/bench-app.wasm",
        "examples/wasm/bench-app.wasm",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file())
    .expect("bench-app.wasm (examples/wasm/build.sh builds it)");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_paddock-bench-app"),
        dir.join("paddock-bench-app"),
    )
    .unwrap();
    std::fs::copy(&wasm, dir.join("bench-app.wasm")).unwrap();
    (root, dir)
}

#[test]
fn bench_report_is_complete() {
    let (root, dir) = app_dir("bench-app");
    let s = Scratch::new("bench");
    // From the repository root, where the bench finds the wasm probe (as `paddock bench` run
    // from a source tree does).
    let o = std::process::Command::new(BIN)
        .current_dir(&root)
        .arg("bench")
        .arg(&dir)
        .args([
            "--levels",
            "none,bundle,sandbox,wasm",
            "--instances",
            "5",
            "--starts",
            "10",
            "--restarts",
            "10",
            "--budget",
            "32MiB",
            "--max-processes",
            "12",
            "--max-wasm",
            "40",
            "--json",
            "--svg",
        ])
        .arg(s.path().join("bench.svg"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "paddock bench failed:\n{out}\n{err}");
    println!("{out}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert!(r["host"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(r["host"]["cgroup"].as_str().is_some());
    let levels = r["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 4);
    let mut ran = vec![];
    for l in levels {
        let name = l["level"].as_str().unwrap();
        if let Some(why) = l["skipped"].as_str() {
            assert_ne!(name, "none", "level none must run: {why}");
            assert_ne!(name, "wasm", "level wasm must run: {why}");
            println!("level {name} skipped: {why}");
            continue;
        }
        ran.push(name.to_string());
        for fig in ["cold_start", "restart"] {
            let st = &l[fig];
            let (med, p99) = (
                st["median_us"].as_f64().unwrap(),
                st["p99_us"].as_f64().unwrap(),
            );
            assert!(med > 0.0 && p99 >= med, "{name} {fig}: {st}");
            assert_eq!(st["samples"].as_u64(), Some(10), "{name} {fig}");
        }
        assert_eq!(l["instances"].as_u64(), Some(5), "{name}");
        assert!(
            l["memory_per_instance"].as_u64().unwrap() > 0,
            "{name}: {l}"
        );
        let d = &l["density"];
        assert!(d["instances"].as_u64().unwrap() >= 1, "{name}: {d}");
        assert!(d["bytes"].as_u64().unwrap() <= 32 << 20, "{name}: {d}");
        assert!(
            matches!(d["stopped_by"].as_str(), Some("budget" | "cap")),
            "{name}: {d}"
        );
        assert!(l["supervisor_bytes_per_app"].as_u64().is_some(), "{name}");
        assert!(
            l["supervisor_cpu_us_per_app_per_s"].as_f64().unwrap() >= 0.0,
            "{name}"
        );
        let esc = l["escapes"].as_str().unwrap();
        if is_root() && name != "wasm" {
            // The probe's sandbox app uses `[limits]` (cgroups), which is on another branch:
            // until it lands paddock refuses that app file, and says so.
            let waits_for_limits = name == "sandbox" && esc.contains("limits");
            assert!(
                esc.ends_with(&format!("/{} blocked", paddock_lab::escape::ATTEMPTS.len()))
                    || waits_for_limits,
                "{name}: {esc}"
            );
        }
    }
    assert!(ran.contains(&"none".to_string()) && ran.contains(&"wasm".to_string()));
    if is_root() {
        // Root gets every level: bundle and sandbox must have run, not been skipped.
        for l in ["bundle", "sandbox"] {
            assert!(
                ran.contains(&l.to_string()),
                "level {l} did not run as root"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let svg = std::fs::read_to_string(s.path().join("bench.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("cold start"),
        "{svg}"
    );
}

#[test]
fn bench_names_what_to_build() {
    let s = Scratch::new("bench-missing");
    let o = std::process::Command::new(BIN)
        .arg("bench")
        .arg(s.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cargo build --release"), "{err}");
}

/// `paddock bench` executes paddock-bench, built beside it: `--help` is paddock-bench's.
#[test]
fn bench_help_is_paddock_bench_s() {
    let o = std::process::Command::new(BIN)
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("Usage: paddock bench [OPTIONS] [APP_DIR]") && out.contains("--levels"),
        "{out}"
    );
}

/// Where paddock-bench is absent (an install: the .deb ships paddock alone), `paddock bench`
/// says so and how to build it, and exits 2.
#[test]
fn bench_absent_says_how_to_get_it() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-absent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let paddock = dir.join("paddock");
    if std::fs::hard_link(BIN, &paddock).is_err() {
        std::fs::copy(BIN, &paddock).unwrap();
    }
    let o = std::process::Command::new(&paddock)
        .args(["bench", "--quick"])
        .env("PATH", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "paddock bench is not part of this install: from a source tree, `cargo build --release --workspace` then `paddock bench` (or `cargo run --release -p paddock-lab --bin paddock-bench -- …`)"
        ),
        "{err}"
    );
}

/// `--quick --peers` with paddock held to 256 descriptors: the density ramp of level none runs
/// into that limit, which ends the ramp with the reason; the report is complete, every peer is
/// either measured or says why not, progress went to stderr, and the exit status is 0.
#[test]
fn bench_quick_degrades_with_a_reason_and_exits_0() {
    use std::os::unix::process::CommandExt;
    let (root, dir) = app_dir("bench-quick");
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(&root).arg("bench").arg(&dir).args([
        "--quick",
        "--peers",
        "--levels",
        "none,wasm",
        "--max-processes",
        "400",
        "--json",
    ]);
    // SAFETY: setrlimit only changes the limits of the child about to exec; it allocates
    // nothing and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "paddock bench failed:\n{out}\n{err}");
    assert!(
        err.contains("paddock bench: memory and density none") && err.contains("done in"),
        "no progress lines on stderr: {err}"
    );
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(r["quick"], true);
    let levels = r["levels"].as_array().unwrap();
    let none = levels.iter().find(|l| l["level"] == "none").unwrap();
    let d = &none["density"];
    assert_eq!(d["stopped_by"], "descriptors", "{d}");
    assert!(d["instances"].as_u64().unwrap() >= 10, "{d}");
    let wasm = levels.iter().find(|l| l["level"] == "wasm").unwrap();
    assert!(
        wasm["cold_start"]["median_us"].as_f64().unwrap() > 0.0,
        "{wasm}"
    );
    let peers = r["peers"].as_array().unwrap();
    let names: Vec<&str> = peers.iter().filter_map(|p| p["runner"].as_str()).collect();
    assert_eq!(
        names,
        ["plain", "bwrap", "crun", "wasmtime", "systemd-run"],
        "{peers:?}"
    );
    for p in peers {
        assert!(
            p["cold_start"].is_object() || p["skipped"].as_str().is_some_and(|s| !s.is_empty()),
            "a peer neither measured nor explained: {p}"
        );
    }
    assert!(
        peers[0]["cold_start"].is_object(),
        "plain must run: {}",
        peers[0]
    );
}
