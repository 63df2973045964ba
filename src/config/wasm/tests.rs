//! The `[wasm]` keys parsed from real app files in a scratch directory: modules and components
//! told apart by their header, preopens, capabilities, limits and every refusal.

use super::super::{AppSpec, ConfigError, parse_app};
use std::path::{Path, PathBuf};

/// A scratch dir holding `m.wasm` (a core module header), `c.wasm` (a component header),
/// `text.wasm`, and a `data/` directory.
fn scratch() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("paddock-cfg-wasm-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(d.join("c.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    std::fs::write(d.join("text.wasm"), b"hello world\n").unwrap();
    d
}

fn parse(src: &str) -> (Result<AppSpec, Vec<ConfigError>>, PathBuf) {
    let d = scratch();
    let file = d.join("app.toml");
    let r = parse_app("app", &file, src);
    (r, d)
}

fn err(src: &str) -> String {
    let (r, d) = parse(src);
    let _ = std::fs::remove_dir_all(&d);
    r.unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_full_wasm_app() {
    let (r, d) = parse(
        r#"
isolation = "wasm"
module = "c.wasm"
args = ["--port", "80"]
env = { A = "1" }
[wasm]
preopens = { "/data" = "data:rw", "/ro" = "data", "/ro2" = "data:ro" }
max_instances = 8
fuel = 1000
[limits]
memory = "64MiB"
cpu = 0.5
[sandbox]
network = "host"
tcp_bind = ["127.0.0.1:8080"]
tcp_connect = ["10.0.0.0/8:*"]
"#,
    );
    let a = r.unwrap();
    let w = a.wasm.as_ref().unwrap();
    assert_eq!(a.isolation, super::super::Isolation::Wasm);
    assert_eq!(w.module, d.join("c.wasm"));
    assert_eq!(w.kind, super::Kind::Component);
    assert_eq!(w.args, vec!["--port", "80"]);
    assert_eq!(a.command, vec!["c.wasm", "--port", "80"]);
    assert_eq!(w.preopens.len(), 3);
    let data = w.preopens.iter().find(|p| p.guest == "/data").unwrap();
    assert!(data.writable && data.host == d.join("data"));
    assert!(
        w.preopens
            .iter()
            .filter(|p| p.guest != "/data")
            .all(|p| !p.writable)
    );
    assert_eq!((w.max_instances, w.fuel), (8, Some(1000)));
    assert_eq!(a.limits.memory, Some(64 << 20));
    assert_eq!(a.limits.cpu, Some(0.5));
    assert!(w.net.host && w.net.tcp_bind.len() == 1 && w.net.tcp_connect.len() == 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn minimal_wasm_app() {
    let (r, d) = parse("isolation = \"wasm\"\nmodule = \"m.wasm\"\n");
    let a = r.unwrap();
    let w = a.wasm.unwrap();
    assert_eq!(w.kind, super::Kind::Core);
    assert!(w.args.is_empty() && w.preopens.is_empty() && !w.net.host);
    assert_eq!(w.max_instances, super::DEFAULT_MAX_INSTANCES);
    // A wasm app always has a memory and a descriptor limit.
    assert_eq!(
        a.limits,
        super::Limits {
            memory: Some(super::DEFAULT_WASM_MEMORY),
            nofile: Some(super::DEFAULT_WASM_NOFILE),
            ..Default::default()
        }
    );
    assert!(w.default_memory && !w.symlinks);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wasm_nofile_and_symlinks() {
    let (r, d) = parse(
        "isolation = \"wasm\"\nmodule = \"m.wasm\"\n[wasm]\nsymlinks = true\n[limits]\nnofile = 32\nmemory = \"1GiB\"\n",
    );
    let a = r.unwrap();
    let w = a.wasm.unwrap();
    assert!(w.symlinks && !w.default_memory);
    assert_eq!(
        (a.limits.nofile, a.limits.memory),
        (Some(32), Some(1 << 30))
    );
    let _ = std::fs::remove_dir_all(&d);
    let w = "isolation = \"wasm\"\nmodule = \"m.wasm\"\n[wasm]\n";
    let e = err(&format!("{w}symlinks = \"yes\"\n"));
    assert!(
        e.contains(":4:12: key `wasm.symlinks`: must be true or false, not string \"yes\""),
        "{e}"
    );
    let e = err(&format!("{w}symlinks = 1\n"));
    assert!(
        e.contains("key `wasm.symlinks`: must be true or false, not integer 1"),
        "{e}"
    );
    let e = err(&format!("{w}[limits]\nnofile = 2\n"));
    assert!(
        e.contains("key `limits.nofile`: must be a number of open files"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn precise_errors() {
    let w = "isolation = \"wasm\"\n";
    let e = err(&format!("{w}module = \"text.wasm\"\n"));
    assert!(
        e.contains("app.toml:2:10: key `module`:")
            && e.contains(
                "text.wasm is not a WebAssembly module: it is text starting with \"hello world\""
            ),
        "{e}"
    );
    let e = err(&format!("{w}module = \"nope.wasm\"\n"));
    assert!(
        e.contains("key `module`") && e.contains("nope.wasm: No such file"),
        "{e}"
    );
    let e = err(w);
    assert!(e.contains("key `module`: missing"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\ncommand = [\"/bin/true\"]\n"
    ));
    assert!(
        e.contains("key `command`: a wasm app has no command"),
        "{e}"
    );
    let e = err(&format!("{w}module = \"m.wasm\"\nbundle = \"redis\"\n"));
    assert!(
        e.contains("key `bundle`: a wasm app's code is its module"),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"m.wasm\"\nworkdir = \"/tmp\"\nuser = \"root\"\n"
    ));
    assert!(
        e.contains("key `workdir`") && e.contains("key `user`"),
        "{e}"
    );
    let e = err(&format!("{w}module = \"m.wasm\"\n[limits]\ncpu = 1.5\n"));
    assert!(
        e.contains(":4:7: key `limits.cpu`: a wasm instance runs on one thread"),
        "{e}"
    );
    let e = err(&format!("{w}module = \"m.wasm\"\n[limits]\ncpu = 0\n"));
    assert!(e.contains("key `limits.cpu`: must be a share"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[limits]\nmemory = \"1KiB\"\n"
    ));
    assert!(
        e.contains("key `limits.memory`: must be at least 64KiB"),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[limits]\nmemory = \"5GiB\"\n"
    ));
    assert!(e.contains("cannot exceed 4GiB"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[limits]\nswap = \"1GiB\"\n"
    ));
    assert!(e.contains("key `limits.swap`: unknown field `swap`"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[wasm]\npreopens = {{ \"/d\" = \"missing\" }}\n"
    ));
    assert!(
        e.contains("key `wasm.preopens.\"/d\"`") && e.contains("missing: No such file"),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[wasm]\npreopens = {{ \"/d\" = \"m.wasm\" }}\n"
    ));
    assert!(e.contains("is not a directory"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[wasm]\nmax_instances = 0\n"
    ));
    assert!(e.contains("key `wasm.max_instances`: must be 1 to"), "{e}");
    let e = err(&format!("{w}module = \"m.wasm\"\n[wasm]\nfuel = 0\n"));
    assert!(e.contains("key `wasm.fuel`"), "{e}");
    let e = err(&format!(
        "{w}module = \"c.wasm\"\n[sandbox]\ntcp_bind = [\"127.0.0.1:80\"]\n"
    ));
    assert!(
        e.contains("key `sandbox.tcp_bind`: has no effect without network = \"host\""),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"c.wasm\"\n[sandbox]\nnetwork = \"host\"\ntcp_connect = [\"db:5432\"]\n"
    ));
    assert!(
        e.contains(":5:16: key `sandbox.tcp_connect`: invalid address pattern \"db:5432\""),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"c.wasm\"\n[sandbox]\nnetwork = \"bridge\"\n"
    ));
    assert!(
        e.contains("key `sandbox.network`: unknown value \"bridge\""),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[sandbox]\nnetwork = \"host\"\n"
    ));
    assert!(e.contains("preview 1 has no sockets"), "{e}");
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[readiness]\nnotify = true\n"
    ));
    assert!(
        e.contains("key `readiness.notify`: a wasm app cannot use it"),
        "{e}"
    );
    let e = err(&format!(
        "{w}module = \"m.wasm\"\n[readiness]\nnotify_fd = 3\n"
    ));
    assert!(e.contains("key `readiness.notify_fd`"), "{e}");
}

#[test]
fn native_apps_refuse_what_they_cannot_honour() {
    let e = err("command = [\"/bin/true\"]\nmodule = \"m.wasm\"\nargs = []\n");
    assert!(
        e.contains("key `module`: only wasm apps") && e.contains("key `args`"),
        "{e}"
    );
    let e = err("command = [\"/bin/true\"]\n[sandbox]\nnetwork = \"none\"\n");
    assert!(e.contains("key `sandbox`"), "{e}");
    let e = err("command = [\"/bin/true\"]\n[wasm]\nfuel = 1\n");
    assert!(e.contains("key `wasm`"), "{e}");
}

#[test]
fn native_limits() {
    let d = scratch();
    let file = d.join("app.toml");
    std::fs::write(
        &file,
        "command = [\"/bin/true\"]\n[limits]\nmemory = \"256MiB\"\ncpu = 1.5\npids = 64\nnofile = 1024\n",
    )
    .unwrap();
    let a = super::super::load_file(&file).unwrap();
    assert_eq!(a.limits.memory, Some(256 << 20));
    assert_eq!(a.limits.cpu, Some(1.5));
    assert_eq!(a.limits.pids, Some(64));
    assert_eq!(a.limits.nofile, Some(1024));
    let _ = std::fs::remove_dir_all(&d);
    let n = "command = [\"/bin/true\"]\n[limits]\n";
    let e = err(&format!("{n}pids = -1\n"));
    assert!(
        e.contains(":3:8: key `limits.pids`: must be a number of processes"),
        "{e}"
    );
    let e = err(&format!("{n}pids = 0\n"));
    assert!(e.contains("key `limits.pids`"), "{e}");
    let e = err(&format!("{n}nofile = \"x\"\n"));
    assert!(e.contains(":3:10:") && e.contains("limits.nofile"), "{e}");
    let e = err(&format!("{n}memory = \"12 parsecs\"\n"));
    assert!(e.contains(":3:10:") && e.contains("limits.memory"), "{e}");
    let e = err(&format!("{n}cpu = 0\n"));
    assert!(e.contains(":3:7: key `limits.cpu`: must be a share"), "{e}");
    let w = "isolation = \"wasm\"\nmodule = \"m.wasm\"\n[limits]\n";
    let e = err(&format!("{w}pids = 4\n"));
    assert!(
        e.contains("key `limits.pids`: a wasm app runs inside paddock's process"),
        "{e}"
    );
}

#[test]
fn module_error_points_at_the_key() {
    let d = scratch();
    let file = d.join("app.toml");
    std::fs::write(&file, "isolation = \"wasm\"\n  module =  \"m.wasm\"\n").unwrap();
    let spec = super::super::load_file(&file).unwrap();
    let e = super::module_error(&spec, "boom").to_string();
    assert_eq!(e, format!("{}:2:13: key `module`: boom", file.display()));
    let _ = Path::new(&d);
    let _ = std::fs::remove_dir_all(&d);
}
