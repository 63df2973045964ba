//! The container image, built and run for real with podman: paddock as PID 1 of the container,
//! the example apps up, the HEALTHCHECK (`paddock status --probe`) healthy, and `podman stop`
//! (SIGTERM, as `docker stop` sends) an orderly exit with status 0.
//!
//! The image is packaging/container/Containerfile.local, built from a root filesystem of this
//! host's own files (packaging/container/make-rootfs.sh): this machine has no registry to pull
//! Containerfile's Debian images from. The test checks that both files give the image the same
//! runtime (entrypoint, command, stop signal, health check, port).
//!
//! Everything podman keeps (images, containers, its run state) lives in a scratch directory of
//! the test's own (`--root`, `--runroot`, the vfs storage driver, which mounts nothing), so the
//! host's podman storage is not touched. Needs root and podman (`apt-get install podman`);
//! SKIPPED otherwise, with the reason.

mod common;

use common::{BIN, Scratch, is_root, try_wait};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The lines of a Containerfile that make the runtime: everything from the last `FROM` on, but
/// the build steps (`RUN`, `COPY`, `FROM`), comments and continuation lines.
fn runtime_lines(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let last_from = text.rfind("\nFROM ").expect("a FROM line");
    let mut out = Vec::new();
    let mut continued = false;
    for line in text[last_from..].lines() {
        let l = line.trim();
        let was_continued = continued;
        continued = l.ends_with('\\');
        if was_continued || l.is_empty() || l.starts_with('#') {
            continue;
        }
        if ["FROM ", "RUN ", "COPY "].iter().any(|k| l.starts_with(k)) {
            continue;
        }
        out.push(l.to_string());
    }
    out.sort();
    out
}

#[test]
fn local_containerfile_has_the_same_runtime() {
    let dir = repo().join("packaging/container");
    let registry = runtime_lines(&dir.join("Containerfile"));
    let local = runtime_lines(&dir.join("Containerfile.local"));
    assert_eq!(
        registry, local,
        "packaging/container/Containerfile.local must give the image the runtime of Containerfile \
         (ENTRYPOINT, CMD, STOPSIGNAL, HEALTHCHECK, EXPOSE): tests/container.rs runs the local one"
    );
    assert!(local.iter().any(|l| l.contains("status\", \"--probe\"")));
}

/// podman with its state in `dir`, nothing shared with the host's own podman storage.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "podman {args:?} failed:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

/// The hard limit of a resource, for the container's own limits: podman's defaults (nofile
/// 1048576) are above what root may set on hosts where root lacks CAP_SYS_RESOURCE, as on this
/// machine, and the runtime then refuses to start the container.
fn hard_limit(res: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives on our stack.
    if unsafe { libc::getrlimit(res, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_max
}

#[test]
fn image_runs_paddock_as_pid1_under_podman() {
    let name = "image_runs_paddock_as_pid1_under_podman";
    if !is_root() {
        eprintln!("SKIPPED {name}: needs root (podman's own storage and the container's cgroups)");
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("SKIPPED {name}: podman is not installed (apt-get install podman)");
        return;
    }
    let scratch = Scratch::new("container");
    let ctx = scratch.path().join("context");
    let made = Command::new("sh")
        .arg(repo().join("packaging/container/make-rootfs.sh"))
        .arg(&ctx)
        .arg(BIN)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "make-rootfs.sh failed:\n{}",
        text(&made)
    );

    let podman = Podman {
        dir: scratch.path().join("podman"),
    };
    let tag = format!("localhost/paddock-test:{}", std::process::id());
    // The docker format: OCI images have no HEALTHCHECK.
    let containerfile = repo().join("packaging/container/Containerfile.local");
    podman.ok(&[
        "build",
        "--quiet",
        "--format",
        "docker",
        "-t",
        &tag,
        "-f",
        containerfile.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let health = podman.ok(&[
        "image",
        "inspect",
        &tag,
        "--format",
        "{{json .HealthCheck}}",
    ]);
    assert!(
        health.contains("--probe"),
        "the image has no HEALTHCHECK with status --probe: {health}"
    );

    // crun refuses a hybrid cgroup layout (v1 controllers beside an empty cgroup2) such as this
    // machine's; runc runs there. On a pure cgroup2 host podman's default runtime is used.
    let hybrid = Path::new("/sys/fs/cgroup/unified").is_dir();
    let nofile = hard_limit(libc::RLIMIT_NOFILE).min(4096);
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(4096);
    let (nofile, nproc) = (format!("nofile={nofile}"), format!("nproc={nproc}"));
    let container = format!("paddock-test-{}", std::process::id());
    let mut run = vec!["run", "--detach", "--name", &container, "--network", "none"];
    if hybrid {
        run.extend(["--runtime", "runc"]);
    }
    // No systemd here to run podman's health check timer: the test runs the check itself.
    run.extend([
        "--health-interval",
        "disable",
        "--ulimit",
        &nofile,
        "--ulimit",
        &nproc,
        &tag,
    ]);
    podman.ok(&run);

    // The HEALTHCHECK turns healthy once both apps are READY (web's http check passed).
    let healthy = try_wait(Duration::from_secs(30), || {
        podman
            .run(&["healthcheck", "run", &container])
            .status
            .success()
    });
    let status = podman.run(&["exec", &container, "paddock", "status"]);
    assert!(
        healthy,
        "podman healthcheck run never succeeded; paddock status:\n{}\nlogs:\n{}",
        text(&status),
        text(&podman.run(&["logs", &container]))
    );
    let table = text(&status);
    for app in ["web", "ticker"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(app) && l.contains("READY")),
            "{app} is not READY:\n{table}"
        );
    }
    // paddock is PID 1 of the container, and the web app answers inside it.
    let comm = podman.ok(&["exec", &container, "cat", "/proc/1/comm"]);
    assert_eq!(comm.trim(), "paddock");
    let page = podman.ok(&[
        "exec",
        &container,
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(page.trim(), "hello from a paddock container");
    // The ticker's output (stdout = "inherit") is the container's output.
    assert!(
        try_wait(Duration::from_secs(10), || text(
            &podman.run(&["logs", &container])
        )
        .contains("tick 1")),
        "no `tick 1` in podman logs:\n{}",
        text(&podman.run(&["logs", &container]))
    );
    // An app that dies is restarted by paddock inside the container, as anywhere else.
    let before = podman.ok(&["exec", &container, "paddock", "status", "web", "--json"]);
    podman.ok(&["exec", &container, "paddock", "signal", "KILL", "web"]);
    assert!(
        try_wait(Duration::from_secs(15), || {
            let now = podman.run(&["exec", &container, "paddock", "status", "web", "--json"]);
            let now = text(&now);
            now.contains("\"restarts\": 1") && now.contains("\"READY\"")
        }),
        "web was not restarted after SIGKILL; before:\n{before}"
    );

    // `podman stop` sends the image's STOPSIGNAL (SIGTERM) to PID 1: paddock stops every app
    // and exits 0, well within the grace period (no SIGKILL from podman).
    let t0 = std::time::Instant::now();
    podman.ok(&["stop", "--time", "30", &container]);
    let took = t0.elapsed();
    let code = podman.ok(&["inspect", &container, "--format", "{{.State.ExitCode}}"]);
    let logs = text(&podman.run(&["logs", &container]));
    assert_eq!(
        code.trim(),
        "0",
        "exit status of the container; logs:\n{logs}"
    );
    assert!(
        took < Duration::from_secs(25),
        "podman stop took {took:?}: paddock did not exit on SIGTERM"
    );
    assert!(
        logs.contains("all apps stopped"),
        "no orderly shutdown in the logs:\n{logs}"
    );
}
