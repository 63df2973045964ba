//! Level `sandbox` figures on this host (run: `cargo bench --bench sandbox`): the cost from
//! spawn to exec of a /bin/true bundle at levels none, bundle and sandbox (every namespace, the
//! root made of the bundle, Landlock, seccomp, capabilities dropped), measured the way paddock
//! spawns: `driver::native::spawn` returns once the child has exec'd. Root only.
//!
//! Figures are printed, never asserted. `--quick` uses fewer rounds.

use paddock::driver::native::{self, BaseEnv, Prepared, Stdio};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("sandbox bench skipped: needs root");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("paddock-bench-sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("apps")).unwrap();
    let store = tmp.join("store");
    let recipe = tmp.join("true.toml");
    std::fs::write(&recipe, "entry = \"/usr/bin/true\"\n").unwrap();
    let o = Command::new(BIN)
        .args(["bundle", "build"])
        .arg(&recipe)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    paddock::bundle::set_store(&store);
    paddock::sandbox::set_scratch_dir(&tmp.join("root"));
    native::reserve_low_fds().unwrap();
    let base = BaseEnv::from_process();
    let variants = [
        ("none", "command = [\"/usr/bin/true\"]\n"),
        (
            "bundle",
            "isolation = \"bundle\"\nbundle = \"true\"\ncommand = [\"true\"]\n",
        ),
        (
            "sandbox",
            "isolation = \"sandbox\"\nbundle = \"true\"\ncommand = [\"true\"]\n",
        ),
        (
            "sandbox, host network",
            "isolation = \"sandbox\"\nbundle = \"true\"\ncommand = [\"true\"]\n[sandbox]\nnetwork = \"host\"\n",
        ),
        (
            "sandbox, userns = false",
            "isolation = \"sandbox\"\nbundle = \"true\"\ncommand = [\"true\"]\n[sandbox]\nuserns = false\n",
        ),
    ];
    let rounds = if quick { 50 } else { 400 };
    // The reference, in the same run: a plain spawn and wait of the same program, as any
    // supervisor or shell does it (std::process::Command: fork/exec, wait).
    let mut plain = vec![];
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        let _ = Command::new("/usr/bin/true").status();
        if i >= rounds / 10 {
            plain.push(t.elapsed()); // after a warm-up
        }
    }
    let (plain_m, plain_p99) = stats(plain);
    println!("spawn to exec of /usr/bin/true ({rounds} rounds after a warm-up; median, p99):");
    println!(
        "  {:24} whole   {:7.3} ms  p99 {:7.3} ms   (the reference)",
        "plain spawn + wait",
        plain_m.as_secs_f64() * 1e3,
        plain_p99.as_secs_f64() * 1e3
    );
    for (name, toml) in variants {
        let file = tmp.join("apps").join("t.toml");
        std::fs::write(&file, toml).unwrap();
        let spec = paddock::config::load_file(&file).unwrap_or_else(|e| panic!("{e:?}"));
        let p = Prepared::new(&spec, &base).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut exec = vec![];
        let mut whole = vec![];
        for i in 0..rounds + rounds / 10 {
            let t = Instant::now();
            let pid =
                native::spawn(&p, &Stdio::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let e = t.elapsed();
            let mut st = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            if i >= rounds / 10 {
                exec.push(e);
                whole.push(t.elapsed());
            }
        }
        let (m, p99) = stats(exec);
        let (wm, wp99) = stats(whole);
        println!(
            "  {name:24} to exec {:7.3} ms  p99 {:7.3} ms   to exit {:7.3} ms  p99 {:7.3} ms   ({:.2}x the plain spawn + wait)",
            m.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            wm.as_secs_f64() * 1e3,
            wp99.as_secs_f64() * 1e3,
            wm.as_secs_f64() / plain_m.as_secs_f64()
        );
    }
    if Path::new("/usr/bin/bwrap").exists() {
        let mut v = vec![];
        for _ in 0..rounds / 4 {
            let t = Instant::now();
            let _ = Command::new("bwrap")
                .args([
                    "--unshare-all",
                    "--ro-bind",
                    "/usr",
                    "/usr",
                    "--symlink",
                    "usr/lib",
                    "/lib",
                    "--symlink",
                    "usr/lib64",
                    "/lib64",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "/usr/bin/true",
                ])
                .status();
            v.push(t.elapsed());
        }
        let (m, p99) = stats(v);
        println!(
            "  {:24} whole   {:7.3} ms  p99 {:7.3} ms",
            "bwrap --unshare-all",
            m.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
