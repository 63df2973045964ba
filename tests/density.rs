//! Many wasm instances in one paddock (issue 8's density target): a full `paddock bench` once
//! stalled at about 2,500 instances because each wasm app held seven file descriptors (two log
//! pipes, and duplicates for the guest) until paddock ran out and its control socket could no
//! longer accept: `status` hung. These tests start thousands of instances under a descriptor
//! limit that the old layout would have exhausted many times over, and check that paddock still
//! answers, and that a start paddock cannot admit is refused with its reason. Behaviour only,
//! no timings.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn bench_wasm() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "target/wasm-examples/bench-app.wasm",
        "examples/wasm/bench-app.wasm",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file())
    .expect("bench-app.wasm (examples/wasm/build.sh builds it)")
}

fn wasm_app(module: &std::path::Path) -> String {
    format!(
        "isolation = \"wasm\"\nmodule = {:?}\n",
        module.display().to_string()
    )
}

/// `paddock status` as a separate process that must answer within 10 s.
fn cli_status(p: &Paddock, args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.arg("status").args(args).env("PADDOCK_SOCKET", p.socket());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.output());
    });
    let o = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("`paddock status` did not answer within 10 s")
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() || o.status.code() == Some(3),
        "status: {:?}\n{out}",
        o.status
    );
    out
}

/// Caps paddock's descriptors (soft and hard, so its own raise to the hard limit cannot lift it).
fn limit_fds(c: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec: only setrlimit on a local
    // (async-signal-safe), no allocation.
    unsafe {
        c.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn thousands_of_wasm_instances_and_status_still_answers() {
    const N: usize = 3000;
    let module = bench_wasm();
    let p = Paddock::with_apps("density", &[]);
    let text = wasm_app(&module);
    for i in 0..N {
        p.write_app(&format!("w{i}"), &text);
    }
    // 4096 descriptors: the old layout (7 per wasm app) ran out at about 580 apps.
    let p = p.start_cmd(&["--wasm-slots".as_ref(), "3100".as_ref()], |c| {
        limit_fds(c, 4096)
    });
    wait_for(Duration::from_secs(60), "3000 wasm apps READY", || {
        p.status().iter().filter(|a| a.state == "READY").count() == N
    });
    // The CLI, a fresh connection, answers; so does a single app's status.
    let all = cli_status(&p, &[]);
    assert_eq!(all.lines().filter(|l| l.contains(" READY ")).count(), N);
    let one = cli_status(&p, &["w2999"]);
    assert!(one.contains("READY"), "{one}");
    // Output still reaches the logs (without pipes).
    let log = p.logs_dir().join("w1234.out");
    wait_for(Duration::from_secs(10), "w1234's log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("bench-app ready"))
    });
    // paddock holds about one descriptor per app (its log file), not seven.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .count();
    assert!(fds < N + 200, "{fds} descriptors for {N} wasm apps");
    // Restarting one still works at this density.
    let r = p.post("/v1/apps/w7/restart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(p.app("w7").state, "READY");
    let st = p.shutdown();
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_start_beyond_the_pool_is_refused_with_the_reason() {
    let module = bench_wasm();
    let p = Paddock::with_apps("density-pool", &[]);
    let text = wasm_app(&module);
    for i in 0..12 {
        p.write_app(&format!("w{i:02}"), &text);
    }
    let p = p.start_with(&["--wasm-slots".as_ref(), "8".as_ref()]);
    wait_for(Duration::from_secs(30), "8 READY, 4 refused", || {
        let st = p.status();
        let ready = st.iter().filter(|a| a.state == "READY").count();
        let refused = st
            .iter()
            .filter(|a| {
                a.state != "READY"
                    && a.message.contains(
                        "wasm: the instance pool is full (8 instances; raise --wasm-slots)",
                    )
            })
            .count();
        ready == 8 && refused == 4
    });
    let out = cli_status(&p, &[]);
    assert!(out.contains("instance pool is full"), "{out}");
    // Stopping one frees a slot for a refused app.
    let refused = p
        .status()
        .into_iter()
        .find(|a| a.state != "READY")
        .unwrap()
        .name;
    let ready = p
        .status()
        .into_iter()
        .find(|a| a.state == "READY")
        .unwrap()
        .name;
    assert_eq!(p.post(&format!("/v1/apps/{ready}/stop")).status, 200);
    let r = p.post(&format!("/v1/apps/{refused}/start"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(p.app(&refused).state, "READY");
}
