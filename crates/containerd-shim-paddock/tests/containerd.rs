//! The shim under a real containerd (Debian's), driven with `ctr`: a private containerd (its own
//! root, state, sockets and config; the CRI plugin off) with `containerd-shim-paddock-v1` on its
//! PATH, OCI image archives made here from the example wasm modules and imported with
//! `ctr image import`, then `ctr run --runtime io.containerd.paddock.v1`: output reaches ctr,
//! exit codes propagate, `ctr task kill` stops a long-running guest, a memory bomb over
//! `--memory-limit` is reported as an OOM (exit 137 and a /tasks/oom event), a non-wasm
//! entrypoint is refused with the key named. Every wait is bounded; containerd, the shims and
//! the snapshot mounts are cleaned up however the test ends. Needs root and containerd.

#[path = "../../../tests/common/mod.rs"]
mod common;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-paddock-v1");
const RUNTIME: &str = "io.containerd.paddock.v1";
/// The same binary under its sandbox name (`containerd-shim-paddock-sandbox-v1`).
const SANDBOX_RUNTIME: &str = "io.containerd.paddock-sandbox.v1";

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// An example module of the repository (see `common::wasm_example`).
fn example(name: &str) -> PathBuf {
    common::wasm_example(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), name)
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An OCI image archive (oci-layout, index.json, blobs) whose one layer holds `wasm` as
/// /app.wasm, the image's entrypoint; named `name` for `ctr image import`.
fn image_archive(dir: &Path, wasm: &Path, name: &str) -> PathBuf {
    let work = dir.join(format!("img-{}", sha(name.as_bytes())));
    let layer_dir = work.join("layer");
    std::fs::create_dir_all(&layer_dir).unwrap();
    std::fs::copy(wasm, layer_dir.join("app.wasm")).unwrap();
    let layer_tar = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&layer_dir)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("app.wasm")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed for the layer");
    let layer = std::fs::read(&layer_tar).unwrap();
    let diff_id = format!("sha256:{}", sha(&layer));
    let index = |md: String, ms: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        })
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app.wasm"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    oci_archive(
        dir,
        &work,
        name,
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
        &config,
        index,
    )
}

/// An OCI image archive in runwasi's layout: the module itself is the one layer (media type
/// `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`), platform wasip1/wasm, no
/// entrypoint file in a rootfs. The config's diff_id is the digest of the tar the shim's
/// `wasm-layer-to-tar` stream processor makes of it (what containerd checks after unpacking).
fn wasm_layer_archive(dir: &Path, wasm: &Path, name: &str) -> PathBuf {
    let work = dir.join(format!("img-{}", sha(name.as_bytes())));
    let module = std::fs::read(wasm).unwrap();
    let conv = Command::new(SHIM)
        .arg("wasm-layer-to-tar")
        .stdin(std::fs::File::open(wasm).unwrap())
        .output()
        .unwrap();
    assert!(
        conv.status.success(),
        "wasm-layer-to-tar: {}",
        text(&conv.stderr)
    );
    let diff_id = format!("sha256:{}", sha(&conv.stdout));
    let index = |md: String, ms: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "annotations": {"io.containerd.image.name": name},
                "platform": {"architecture": "wasm", "os": "wasip1"},
            }],
        })
    };
    let config = serde_json::json!({
        "architecture": "wasm", "os": "wasip1",
        "config": {"Entrypoint": ["hello.wasm"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let media = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
    oci_archive(dir, &work, name, &module, media, &config, index)
}

/// Writes an OCI image layout in `work` (the one layer, the config, the manifest, the index
/// made by `index` from the manifest's digest and size, `oci-layout`) and tars it into `dir`.
fn oci_archive(
    dir: &Path,
    work: &Path,
    name: &str,
    layer: &[u8],
    layer_media: &str,
    config: &serde_json::Value,
    index: impl Fn(String, usize) -> serde_json::Value,
) -> PathBuf {
    let blobs = work.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = sha(bytes);
        std::fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let (ld, ls) = put(layer);
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": layer_media, "digest": ld, "size": ls}],
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    std::fs::write(work.join("index.json"), index(md, ms).to_string()).unwrap();
    std::fs::write(work.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let out = dir.join(format!("{}.tar", sha(name.as_bytes())));
    let st = Command::new("tar")
        .arg("-C")
        .arg(work)
        .arg("-cf")
        .arg(&out)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success(), "tar failed for the archive");
    out
}

/// Runs `cmd` to its end, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().unwrap();
            panic!("{cmd:?} did not finish within {limit:?} (killed: {s})");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A private containerd; everything it started is stopped and unmounted on drop.
struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// `tag`: tests of one process run in parallel, each with its own containerd.
    fn start(tag: &str) -> Result<Containerd, String> {
        let dir = std::env::temp_dir().join(format!("paddock-ctd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(SHIM, dir.join("bin/containerd-shim-paddock-v1")).unwrap();
        std::os::unix::fs::symlink(SHIM, dir.join("bin/containerd-shim-paddock-sandbox-v1"))
            .unwrap();
        let sock = dir.join("c.sock");
        let d = dir.display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\
             [stream_processors]\n  [stream_processors.\"io.containerd.paddock.wasm-layer\"]\n\
             accepts = [\"application/vnd.bytecodealliance.wasm.component.layer.v0+wasm\", \"application/wasm\"]\n\
             returns = \"application/vnd.oci.image.layer.v1.tar\"\n\
             path = \"{SHIM}\"\n    args = [\"wasm-layer-to-tar\"]\n"
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .env("PADDOCK_SHIM_WASM_CACHE", dir.join("wasm-cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start containerd: {e}"))?;
        let c = Containerd {
            dir,
            sock,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = run_bounded(c.ctr().arg("version"), Duration::from_secs(10));
            if o.status.success() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer within 20 s: {}\n{}",
                    String::from_utf8_lossy(&o.stderr),
                    c.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.sock);
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr run --rm --runtime paddock IMAGE ID ARGS…`, bounded.
    fn run(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let mut c = self.ctr();
        c.args(["run", "--rm", "--runtime", RUNTIME]);
        c.args(extra).arg(image).arg(id).args(args);
        run_bounded(&mut c, Duration::from_secs(60))
    }

    /// Processes whose command line names our containerd's socket (its shims).
    fn shims(&self) -> Vec<i32> {
        let needle = self.sock.to_string_lossy().into_owned();
        let mut pids = vec![];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim-paddock-v1") && cmd.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Mount points under our directory, deepest first.
    fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut m: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        m.reverse();
        m
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.shims() {
            // SAFETY: kill(2) on a shim of this test's containerd (matched by its socket path).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for m in self.mounts() {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 on a mount point under this test's directory.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn containerd_runs_wasm_with_paddock() {
    let name = "containerd_runs_wasm_with_paddock";
    if !is_root() {
        println!("SKIPPED {name}: needs root (containerd, mounts of the snapshots)");
        return;
    }
    for cmd in ["containerd", "ctr", "tar"] {
        if !on_path(cmd) {
            println!("SKIPPED {name}: `{cmd}` is not on PATH (apt-get install containerd)");
            return;
        }
    }
    let ctd = match Containerd::start("wasm") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let images = ctd.dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (module, image) in [
        ("hello.wasm", "docker.io/paddock/hello:latest"),
        ("crasher.wasm", "docker.io/paddock/crasher:latest"),
        ("worker.wasm", "docker.io/paddock/worker:latest"),
    ] {
        let archive = image_archive(&images, &example(module), image);
        let o = run_bounded(
            ctd.ctr().args(["image", "import"]).arg(&archive),
            Duration::from_secs(60),
        );
        assert!(
            o.status.success(),
            "ctr image import {image}: {}",
            text(&o.stderr)
        );
    }

    // An image whose layer is the module (runwasi's media type), unpacked through the shim's
    // stream processor; `process.args[0]` names the layer, the rest are the guest's arguments.
    let archive = wasm_layer_archive(
        &images,
        &example("hello.wasm"),
        "docker.io/paddock/layer:latest",
    );
    let o = run_bounded(
        ctd.ctr()
            .args(["image", "import", "--all-platforms"])
            .arg(&archive),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "ctr image import (wasm layer): {}",
        text(&o.stderr)
    );
    let o = ctd.run(
        &[],
        "docker.io/paddock/layer:latest",
        "layer",
        &["hello.wasm", "x", "y"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "wasm layer: {}\n{}",
        text(&o.stderr),
        ctd.log()
    );
    assert!(
        text(&o.stdout).contains(r#"hello from wasm! args: ["x", "y"]"#),
        "stdout: {}",
        text(&o.stdout)
    );

    // Output reaches ctr (stdout and stderr), arguments and exit status 0.
    let o = ctd.run(
        &[],
        "docker.io/paddock/hello:latest",
        "hello",
        &["/app.wasm", "one", "two"],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(
        o.status.code(),
        Some(0),
        "hello: {out}\n{err}\n{}",
        ctd.log()
    );
    assert!(
        out.contains(r#"hello from wasm! args: ["one", "two"]"#),
        "stdout: {out}"
    );
    assert!(err.contains("hello on stderr"), "stderr: {err}");

    // The image's entrypoint is used when ctr gives no command.
    let o = ctd.run(&[], "docker.io/paddock/hello:latest", "hello2", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("hello from wasm! args: []"));

    // An exit code propagates.
    let o = ctd.run(
        &[],
        "docker.io/paddock/crasher:latest",
        "exit7",
        &["/app.wasm", "exit", "7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));

    // `ctr task kill` stops a long-running guest (SIGTERM: 143).
    let out_file = ctd.dir.join("worker.out");
    let mut worker = ctd
        .ctr()
        .args([
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "docker.io/paddock/worker:latest",
            "worker",
        ])
        .args(["/app.wasm", "--interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains("tick 2")
    {
        if Instant::now() > deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the worker printed no `tick 2` in 30 s: {}", ctd.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run_bounded(
        ctd.ctr().args(["task", "kill", "worker"]),
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "ctr task kill: {}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = worker.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("`ctr task kill` did not stop the worker within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(143), "worker after SIGTERM");

    // A pod's sandbox ("pause") container, as the CRI plugin marks it, runs nothing and stays
    // RUNNING until it is killed.
    let mut pause = ctd
        .ctr()
        .args(["run", "--rm", "--runtime", RUNTIME])
        .args(["--annotation", "io.kubernetes.cri.container-type=sandbox"])
        .args(["docker.io/paddock/hello:latest", "pod-sandbox", "/pause"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = run_bounded(ctd.ctr().args(["task", "ls"]), Duration::from_secs(10));
        if text(&o.stdout)
            .lines()
            .any(|l| l.starts_with("pod-sandbox") && l.contains("RUNNING"))
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = pause.kill();
            let _ = pause.wait();
            panic!(
                "the pod sandbox container is not RUNNING: {}",
                text(&o.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run_bounded(
        ctd.ctr()
            .args(["task", "kill", "-s", "SIGKILL", "pod-sandbox"]),
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "ctr task kill: {}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = pause.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = pause.kill();
            let _ = pause.wait();
            panic!("the pod sandbox container did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(137), "pod sandbox after SIGKILL");

    // A memory bomb over the container's memory limit: exit 137 and a /tasks/oom event.
    let events_file = ctd.dir.join("events");
    let mut events = ctd
        .ctr()
        .arg("events")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&events_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let o = ctd.run(
        &["--memory-limit", "33554432"],
        "docker.io/paddock/crasher:latest",
        "bomb",
        &["/app.wasm", "grow"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(137), "memory bomb: {err}");
    assert!(
        err.contains("memory growth to") && err.contains("was refused"),
        "stderr: {err}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ev = String::new();
    while !(ev.contains("/tasks/oom") && ev.contains("/tasks/exit")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ev = std::fs::read_to_string(&events_file).unwrap_or_default();
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        ev.contains(r#"/tasks/oom {"container_id":"bomb"}"#),
        "events: {ev}"
    );
    assert!(ev.contains(r#""exit_status":137"#), "events: {ev}");

    // An entrypoint that is not wasm is refused, naming the key.
    let o = ctd.run(
        &[],
        "docker.io/paddock/hello:latest",
        "bad",
        &["/nothing.wasm"],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("process.args[0] = \"/nothing.wasm\""),
        "stderr: {}",
        text(&o.stderr)
    );

    // Every shim has exited (each container's shim ends at its delete) and no rootfs is left
    // mounted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctd.shims().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ctd.shims(), Vec::<i32>::new(), "shims left running");
    let rootfs: Vec<String> = ctd
        .mounts()
        .into_iter()
        .filter(|m| m.ends_with("/rootfs"))
        .collect();
    assert!(rootfs.is_empty(), "rootfs left mounted: {rootfs:?}");
}

/// The containers whose user-namespace id ranges the shims have claimed (`namespace/id`).
fn id_claims() -> Vec<String> {
    std::fs::read_dir("/run/paddock-shim/id-ranges")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// Empty directories removed on drop (cgroups this test made).
struct RemoveDirs(Vec<PathBuf>);

impl Drop for RemoveDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// An OCI image archive of one layer made of the directory `rootfs`, with `entrypoint` and
/// `PATH` in its config.
fn rootfs_archive(dir: &Path, rootfs: &Path, name: &str, entrypoint: &[&str]) -> PathBuf {
    let work = dir.join(format!("img-{}", sha(name.as_bytes())));
    std::fs::create_dir_all(&work).unwrap();
    let layer_tar = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed for the layer");
    let layer = std::fs::read(&layer_tar).unwrap();
    let diff_id = format!("sha256:{}", sha(&layer));
    let index = |md: String, ms: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        })
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    oci_archive(
        dir,
        &work,
        name,
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
        &config,
        index,
    )
}

/// A root filesystem of the host's busybox with the libraries `ldd` lists (a dynamically
/// linked image: its own loader and libc run inside the sandbox), the applets the test uses
/// as links, and a small script. None when the host has no busybox.
fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())?;
    let root = dir.join("busybox-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    let ldd = Command::new("ldd").arg(bb).output().ok()?;
    for line in text(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(p, &to).unwrap();
        }
    }
    for applet in [
        "sh", "cat", "echo", "sleep", "ls", "grep", "head", "tr", "id", "wc", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), "hello from the image\n").unwrap();
    let script = root.join("bin/hello.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat /etc/motd\necho \"args: $*\"\necho \"on stderr\" >&2\nexit ${EXIT:-0}\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(root)
}

/// Whether this host's cgroup layout gives the shim a memory controller (v1 memory, or v2 with
/// memory enabled), and why not.
fn memory_controller() -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v1 = info.lines().any(|l| {
        l.contains(" - cgroup ")
            && l.split_whitespace()
                .last()
                .is_some_and(|o| o.split(',').any(|x| x == "memory"))
    });
    if v1 {
        return Ok(());
    }
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if v2.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    Err("no memory cgroup controller on this host (neither a v1 memory hierarchy nor memory in /sys/fs/cgroup/cgroup.controllers)".into())
}

#[test]
fn containerd_runs_sandbox_with_paddock() {
    let name = "containerd_runs_sandbox_with_paddock";
    if !is_root() {
        println!("SKIPPED {name}: needs root (containerd, mounts of the snapshots)");
        return;
    }
    for cmd in ["containerd", "ctr", "tar", "ldd"] {
        if !on_path(cmd) {
            println!("SKIPPED {name}: `{cmd}` is not on PATH (apt-get install containerd)");
            return;
        }
    }
    // ctr's containers go to the cgroup /default/<id> of each hierarchy (linux.cgroupsPath):
    // the /default this test makes is removed at its end.
    let cgroup_defaults: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .chain(
            Path::new("/sys/fs/cgroup/cgroup.procs")
                .exists()
                .then(|| PathBuf::from("/sys/fs/cgroup")),
        )
        .map(|h| h.join("default"))
        .collect();
    let made_defaults = RemoveDirs(
        cgroup_defaults
            .iter()
            .filter(|d| !d.exists())
            .cloned()
            .collect(),
    );
    let ctd = match Containerd::start("sandbox") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let images = ctd.dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let Some(rootfs) = busybox_rootfs(&images) else {
        println!("SKIPPED {name}: no busybox on this host (apt-get install busybox)");
        return;
    };
    let image = "docker.io/paddock/busybox:latest";
    let archive = rootfs_archive(&images, &rootfs, image, &["/bin/hello.sh"]);
    let o = run_bounded(
        ctd.ctr().args(["image", "import"]).arg(&archive),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "ctr image import: {}", text(&o.stderr));
    let run = |extra: &[&str], id: &str, args: &[&str]| {
        let mut c = ctd.ctr();
        c.args(["run", "--rm", "--runtime", SANDBOX_RUNTIME]);
        c.args(extra).arg(image).arg(id).args(args);
        run_bounded(&mut c, Duration::from_secs(60))
    };

    // The entrypoint (a script of the image, through its /bin/sh) runs; stdout and stderr reach
    // ctr; the exit status propagates.
    let o = run(&["--env", "EXIT=3"], "hello", &[]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(
        o.status.code(),
        Some(3),
        "hello: {out}\n{err}\n{}",
        ctd.log()
    );
    assert!(out.contains("hello from the image"), "stdout: {out}");
    assert!(err.contains("on stderr"), "stderr: {err}");
    let o = run(&[], "args", &["/bin/hello.sh", "one", "two"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("args: one two"));

    // Isolation: its own pid namespace (pid 1, no host process visible), no capabilities, a
    // read-only image root with a writable /tmp, root inside mapped to an unprivileged uid.
    let probe = "echo pid=$$; ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status; \
                 if echo x > /etc/x 2>/dev/null; then echo root-writable; else echo root-readonly; fi; \
                 echo y > /tmp/y && cat /tmp/y; cat /proc/self/uid_map";
    let o = run(&[], "probe", &["/bin/sh", "-c", probe]);
    let out = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "probe: {out}\n{}",
        text(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    let procs: usize = lines[1].trim().parse().unwrap();
    assert!(
        procs <= 3,
        "the sandbox sees {procs} processes in /proc: {out}"
    );
    assert!(
        lines[2].ends_with("0000000000000000"),
        "capabilities: {out}"
    );
    assert_eq!(lines[3], "root-readonly", "{out}");
    assert_eq!(lines[4], "y", "{out}");
    let map: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(map[0], "0", "{out}");
    assert_ne!(map[1], "0", "root inside is host root: {out}");

    // Bind mounts of the spec (ctr --mount; a pod's volumes, /etc/hosts, secrets): read-write
    // (the directory is world-writable: root inside is an unprivileged uid outside) and
    // read-only.
    let data = ctd.dir.join("data");
    let ro = ctd.dir.join("ro");
    for d in [&data, &ro] {
        std::fs::create_dir_all(d).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::write(data.join("in.txt"), "from the host\n").unwrap();
    let rw_mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let ro_mount = format!(
        "type=bind,src={},dst=/srv/ro,options=rbind:ro",
        ro.display()
    );
    let o = run(
        &["--mount", &rw_mount, "--mount", &ro_mount],
        "mounts",
        &[
            "/bin/sh",
            "-c",
            "cat /data/in.txt; echo out > /data/out.txt; \
             if echo x > /srv/ro/x 2>/dev/null; then echo ro-writable; else echo ro-readonly; fi",
        ],
    );
    let out = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "mounts: {out}\n{}",
        text(&o.stderr)
    );
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("ro-readonly"), "{out}");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap_or_default(),
        "out\n"
    );
    assert!(!ro.join("x").exists());

    // The network as the spec says: its own namespace (only loopback) by default; the host's
    // with --net-host (no network namespace in the spec); a given one joined (--with-ns, as the
    // CRI plugin gives a pod's).
    let ifaces = |o: &Output| text(&o.stdout).lines().filter(|l| l.contains(':')).count();
    let o = run(&[], "net-own", &["/bin/cat", "/proc/net/dev"]);
    assert_eq!(ifaces(&o), 1, "own network: {}", text(&o.stdout));
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter(|l| l.contains(':'))
        .count();
    let o = run(&["--net-host"], "net-host", &["/bin/cat", "/proc/net/dev"]);
    assert_eq!(ifaces(&o), host_ifaces, "--net-host: {}", text(&o.stdout));
    if on_path("unshare") {
        let mut holder = Command::new("unshare")
            .args(["-n", "sleep", "120"])
            .spawn()
            .unwrap();
        let ns = format!("/proc/{}/ns/net", holder.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = loop {
            let l = std::fs::read_link(&ns).unwrap();
            if l != std::fs::read_link("/proc/self/ns/net").unwrap() || Instant::now() > deadline {
                break l;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let with = format!("network:{ns}");
        let o = run(
            &["--with-ns", &with],
            "net-join",
            &["/bin/ls", "-l", "/proc/self/ns/net"],
        );
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            text(&o.stdout).contains(&*want.to_string_lossy()),
            "joined {}: {} {}",
            want.display(),
            text(&o.stdout),
            text(&o.stderr)
        );
    }

    // `ctr task kill` stops it: SIGTERM, which a shell as the init of its pid namespace does
    // not handle, reported as 143 as for any process it would have ended.
    let mut long = ctd
        .ctr()
        .args(["run", "--rm", "--runtime", SANDBOX_RUNTIME, image, "long"])
        .args(["/bin/sh", "-c", "echo started; sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    let mut so = long.stdout.take().unwrap();
    let t = std::thread::spawn(move || so.read_exact(&mut first).map(|()| first));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t.is_finished(),
        "the container printed nothing in 30 s: {}",
        ctd.log()
    );
    assert_eq!(&t.join().unwrap().unwrap(), b"started\n");
    // Its user namespace's id range is claimed (no other container of the node gets it).
    assert!(
        id_claims().iter().any(|c| c == "default/long"),
        "no id range claimed for default/long: {:?}",
        id_claims()
    );
    // Its process is in the cgroup the spec names (/default/long), in the hierarchies paddock
    // puts a container without a CPU limit in (cgroup2; v1 memory and pids).
    for d in cgroup_defaults.iter().filter(|d| {
        let h = d.parent().and_then(Path::file_name).unwrap_or_default();
        d.parent() == Some(Path::new("/sys/fs/cgroup"))
            || ["unified", "memory", "pids"].iter().any(|x| h == *x)
    }) {
        let procs = std::fs::read_to_string(d.join("long/cgroup.procs")).unwrap_or_default();
        assert!(
            !procs.trim().is_empty(),
            "no process in {}",
            d.join("long").display()
        );
    }
    let o = run_bounded(
        ctd.ctr().args(["task", "kill", "long"]),
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "ctr task kill: {}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = long.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = long.kill();
            let _ = long.wait();
            panic!("`ctr task kill` did not stop the container within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(143), "after SIGTERM");

    // The systemd driver's cgroupsPath (slice:prefix:name, as kubelet's default driver gives
    // it): the scope's directory under the slice's, in each hierarchy. Half a CPU: the CFS
    // quota. Stopped with SIGKILL: 137.
    let mut sd = ctd
        .ctr()
        .args(["run", "--rm", "--runtime", SANDBOX_RUNTIME, "--cpus", "0.5"])
        .args(["--cgroup", "paddock-test-x.slice:ptest:sd"])
        .args([image, "sd", "/bin/sh", "-c", "echo started; sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut so = sd.stdout.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut first = [0u8; 8];
        so.read_exact(&mut first).map(|()| first)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = t.is_finished() && t.join().unwrap().is_ok();
    let scope = Path::new("paddock.slice/paddock-test.slice/paddock-test-x.slice/ptest-sd.scope");
    let memory = Path::new("/sys/fs/cgroup/memory");
    let in_scope =
        std::fs::read_to_string(memory.join(scope).join("cgroup.procs")).unwrap_or_default();
    // The quota, where this host's cpu controller is: v1's cpu hierarchy, or cgroup2's cpu.max.
    let quota = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup/cpu")
            .join(scope)
            .join("cpu.cfs_quota_us"),
    )
    .or_else(|_| std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(scope).join("cpu.max")))
    .unwrap_or_default();
    let _ = run_bounded(
        ctd.ctr().args(["task", "kill", "-s", "SIGKILL", "sd"]),
        Duration::from_secs(10),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sd.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = sd.kill();
            let _ = sd.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for h in &cgroup_defaults {
        let root = h.parent().unwrap();
        // The slices this test made (the scope itself is removed at Delete).
        for d in scope
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
        {
            let _ = std::fs::remove_dir(root.join(d));
        }
    }
    assert!(started, "the sd container printed nothing: {}", ctd.log());
    if memory.is_dir() {
        assert!(
            !in_scope.trim().is_empty(),
            "no process in {}",
            memory.join(scope).display()
        );
    }
    assert_eq!(status.and_then(|s| s.code()), Some(137), "sd after SIGKILL");
    assert!(
        quota.starts_with("50000"),
        "--cpus 0.5 gave the scope a CFS quota of {quota:?} (want 50000 of 100000)"
    );

    // The shim dies (SIGKILL): containerd runs `delete`, which ends the container's process
    // (it does not die with its shim: it is another process) and removes its cgroup.
    let mut orphan = ctd
        .ctr()
        .args(["run", "--rm", "--runtime", SANDBOX_RUNTIME])
        .args([image, "orphan", "/bin/sh", "-c", "echo started; sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut so = orphan.stdout.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut first = [0u8; 8];
        so.read_exact(&mut first).map(|()| first)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = t.is_finished() && t.join().unwrap().is_ok();
    let procs_file = Path::new("/sys/fs/cgroup/unified/default/orphan/cgroup.procs");
    let procs_file = if procs_file.exists() {
        procs_file.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup/default/orphan/cgroup.procs")
    };
    let procs: Vec<i32> = std::fs::read_to_string(&procs_file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let shim: Vec<i32> = ctd
        .shims()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("\0orphan\0"))
                .unwrap_or(false)
        })
        .collect();
    for p in &shim {
        // SAFETY: kill(2) on the shim of this test's container `orphan`.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = orphan.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = orphan.kill();
            let _ = orphan.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(started, "orphan printed nothing: {}", ctd.log());
    assert_eq!(shim.len(), 1, "the shim of `orphan`: {shim:?}");
    assert!(!procs.is_empty(), "no process in {}", procs_file.display());
    assert!(
        status.is_some(),
        "ctr run did not end after its shim was killed: {}",
        ctd.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while procs.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !procs.iter().any(|p| alive(*p)),
        "the container's processes {procs:?} outlived its shim's delete"
    );

    // A memory hog over --memory-limit: the kernel's OOM killer in the container's cgroup,
    // exit 137 and a /tasks/oom event.
    match memory_controller() {
        Err(why) => println!("SKIPPED {name} (OOM part): {why}"),
        Ok(()) => {
            let events_file = ctd.dir.join("events");
            let mut events = ctd
                .ctr()
                .arg("events")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&events_file).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
            let o = run(
                &["--memory-limit", "33554432"],
                "hog",
                &["/bin/sh", "-c", hog],
            );
            assert_eq!(
                o.status.code(),
                Some(137),
                "memory hog: {}\n{}",
                text(&o.stdout),
                text(&o.stderr)
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ev = String::new();
            while !(ev.contains("/tasks/oom") && ev.contains("/tasks/exit"))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
                ev = std::fs::read_to_string(&events_file).unwrap_or_default();
            }
            let _ = events.kill();
            let _ = events.wait();
            assert!(
                ev.contains(r#"/tasks/oom {"container_id":"hog"}"#),
                "events: {ev}"
            );
            assert!(ev.contains(r#""exit_status":137"#), "events: {ev}");
        }
    }

    // The level can be chosen per container by annotation: `wasm` on this image is refused
    // naming the key (its entrypoint is no module); an unknown level names the annotation.
    let o = run(&["--annotation", "io.paddock.level=wasm"], "as-wasm", &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("is not a WebAssembly module"),
        "stderr: {}",
        text(&o.stderr)
    );
    let o = run(&["--annotation", "io.paddock.level=vm"], "as-vm", &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("io.paddock.level"),
        "stderr: {}",
        text(&o.stderr)
    );
    // A program the image does not have is refused, naming the key.
    let o = run(&[], "missing", &["nothing-here"]);
    assert!(
        text(&o.stderr).contains("process.args[0] = \"nothing-here\""),
        "stderr: {}",
        text(&o.stderr)
    );

    // Every shim has exited, no rootfs is left mounted, and no container cgroup is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctd.shims().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ctd.shims(), Vec::<i32>::new(), "shims left running");
    let rootfs: Vec<String> = ctd
        .mounts()
        .into_iter()
        .filter(|m| m.ends_with("/rootfs"))
        .collect();
    assert!(rootfs.is_empty(), "rootfs left mounted: {rootfs:?}");
    // The containers' cgroups (where ctr's spec says, linux.cgroupsPath = /default/<id>, in
    // each hierarchy) are gone; /default too, if this test made it.
    let ids = [
        "hello", "args", "probe", "net-own", "net-host", "net-join", "long", "hog",
    ];
    for d in &cgroup_defaults {
        for id in ids {
            assert!(!d.join(id).exists(), "cgroup {} left", d.join(id).display());
        }
    }
    drop(made_defaults);
    // Every id range claimed is given back.
    let left: Vec<String> = id_claims()
        .into_iter()
        .filter(|c| ids.iter().any(|id| *c == format!("default/{id}")))
        .collect();
    assert!(left.is_empty(), "id ranges still claimed: {left:?}");
}
