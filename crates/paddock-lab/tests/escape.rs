//! The escape matrix (issues 5 and 12): `paddock-probe` runs as an app at levels none, bundle
//! and sandbox (default settings), its network attempts again at `sandbox/host-net`, and its
//! wasm build (examples/wasm/probe) at level wasm; it makes every attempt of
//! `paddock_lab::escape::ATTEMPTS`. At `sandbox`, `sandbox/host-net` and `wasm` every one must be
//! blocked. Also checks that the host is unaffected afterwards: the probe undoes whatever it
//! managed at level `none`.

// The harness of paddock's own tests (its BIN is the paddock built beside these tests).
#[path = "../../../tests/common/mod.rs"]
mod common;
use common::*;
use paddock_lab::escape::{
    ATTEMPTS, HOST_NET, MatrixOptions, Outcome, evidence, matrix, missing, missing_of, run_matrix,
};
use std::path::PathBuf;

#[test]
fn escape_matrix() {
    if !is_root() {
        eprintln!(
            "SKIPPED escape_matrix: needs root (the probe mounts, ptraces, changes the hostname; the sandbox level needs root)"
        );
        return;
    }
    let s = Scratch::new("escape");
    let opts = MatrixOptions {
        paddock: PathBuf::from(BIN),
        probe: PathBuf::from(env!("CARGO_BIN_EXE_paddock-probe")),
        // The wasm probe: CI's fresh build, else the committed one.
        wasm_probe: [
            "target/wasm-examples/probe.wasm",
            "examples/wasm/probe.wasm",
        ]
        .iter()
        .map(|p| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(p)
        })
        .find(|p| p.is_file()),
        levels: vec![
            "none".into(),
            "bundle".into(),
            "sandbox".into(),
            "wasm".into(),
        ],
        work: s.path().join("work"),
        verbose: true,
    };
    let runs = run_matrix(&opts).expect("run the matrix");
    let reports: Vec<_> = runs.iter().map(|r| r.report.clone()).collect();
    println!("{}", matrix(&reports));
    println!("{}", evidence(&reports));
    let levels: Vec<&str> = runs.iter().map(|r| r.report.level.as_str()).collect();
    assert_eq!(levels, ["none", "bundle", "sandbox", HOST_NET, "wasm"]);
    for r in &runs {
        assert!(
            r.config_error.is_none(),
            "level {}: paddock refused the probe's app file (fix probe_app in src/escape.rs): {:?}",
            r.report.level,
            r.config_error
        );
        assert!(
            r.host_problems.is_empty(),
            "level {}: the host was affected: {:?}",
            r.report.level,
            r.host_problems
        );
    }
    // none and bundle must run and report every attempt.
    for r in &runs[..2] {
        let res = r.report.results.as_ref().unwrap_or_else(|| {
            panic!(
                "level {} did not run: {:?}",
                r.report.level, r.report.skipped
            )
        });
        assert!(
            missing(res).is_empty(),
            "level {}: missing {:?}",
            r.report.level,
            missing(res)
        );
        assert_eq!(res.len(), ATTEMPTS.len());
        for x in res {
            assert_ne!(x.result, Outcome::Error, "level {}: {x:?}", r.report.level);
        }
    }
    // As root at level none, reading a root-only file is the baseline escape.
    let none = runs[0].report.results.as_ref().unwrap();
    assert!(
        none.iter()
            .any(|x| x.attempt == "read-secret" && x.result == Outcome::Escaped)
    );
    // sandbox (at its defaults), its host-network column and wasm block every attempt.
    let mut let_through = vec![];
    for r in &runs[2..] {
        let level = &r.report.level;
        let res = r
            .report
            .results
            .as_ref()
            .unwrap_or_else(|| panic!("level {level} did not run: {:?}", r.report.skipped));
        assert!(
            missing_of(level, res).is_empty(),
            "{level}: missing {:?}",
            missing_of(level, res)
        );
        for x in res {
            if x.result != Outcome::Blocked {
                let_through.push(format!(
                    "{level} {} {}: {}",
                    x.attempt,
                    x.result.as_str(),
                    x.detail
                ));
            }
        }
    }
    assert!(
        let_through.is_empty(),
        "{} attempts not blocked:\n{}",
        let_through.len(),
        let_through.join("\n")
    );
}
