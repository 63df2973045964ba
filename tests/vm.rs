//! A real VM boot with paddock as PID 1 (opt-in: `PADDOCK_VM_TEST=1`, which `.ci/run` sets).
//!
//! Builds the image of `packaging/vm/` (a Debian cloud kernel, an initramfs with this paddock as
//! /init, a busybox bundle and the apps of `packaging/vm/apps/`), boots it under
//! qemu-system-x86_64 (software emulation unless KVM works) and reads the serial console:
//! the apps ran under paddock as PID 1 (a bare `/init`, no arguments), with the hostname of the
//! image's paddock.toml, cgroup v2 with controllers was mounted inside the VM and paddock put an app with [limits] in a
//! cgroup of it (memory.max, pids.max, cpu.max as configured), and each way of
//! ending the machine stopped every app in order and then powered it off (or rebooted it)
//! cleanly. Four boots: `paddock shutdown` with `on_exit = "poweroff"`, SIGPWR to PID 1,
//! `paddock reboot`, and Ctrl-Alt-Del pressed through qemu's monitor. Needs root (device nodes in the image, apt for missing packages).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");
/// qemu is killed after this long (software emulation on a loaded 2-core machine: a boot takes
/// 5–20 s; the budget is generous on purpose).
const BOOT_TIMEOUT_SECS: u64 = 300;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/vm` next to the binary's profile directory (target/release/paddock → target/vm): the
/// kernel download cached there by the scripts is shared with manual runs.
fn out_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"))
        .join("vm")
}

struct Boot {
    how: &'static str,
    status: Option<i32>,
    console: String,
    stderr: String,
    took: Duration,
}

impl Boot {
    /// Boots the image; `stop` is passed as `paddock_vm.stop=` to the image's `shutdown` app.
    fn run(out: &Path, how: &'static str, stop: Option<&str>) -> Boot {
        let t = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("packaging/vm/run.sh"))
            .arg(out)
            .env("PADDOCK_VM_TIMEOUT", BOOT_TIMEOUT_SECS.to_string());
        if let Some(s) = stop {
            cmd.env("PADDOCK_VM_APPEND", format!("paddock_vm.stop={s}"));
        }
        // With `wait`, nothing in the VM ends it: the hypervisor presses Ctrl-Alt-Del through
        // qemu's monitor once the `shutdown` app says so.
        let monitor = out.join("monitor.sock");
        if stop == Some("wait") {
            cmd.env("PADDOCK_VM_MONITOR", &monitor);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run packaging/vm/run.sh");
        let mut err_pipe = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            s
        });
        let mut console = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut buf = Vec::new();
        while lines.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf).replace('\r', "");
            if stop == Some("wait")
                && line.contains("PADDOCK-VM shutdown: leaving it to the hypervisor")
            {
                press_ctrl_alt_del(&monitor);
                console.push_str("[test: pressed Ctrl-Alt-Del]\n");
            }
            console.push_str(&line);
            buf.clear();
        }
        let status = child.wait().expect("wait for run.sh");
        let boot = Boot {
            how,
            status: status.code(),
            console,
            stderr: err_reader.join().unwrap_or_default(),
            took: t.elapsed(),
        };
        eprintln!(
            "vm test: boot \"{how}\" took {:.1}s ({})",
            boot.took.as_secs_f64(),
            boot.stderr
                .lines()
                .find(|l| l.contains("accel="))
                .unwrap_or("")
        );
        boot
    }

    fn show(&self) -> String {
        format!(
            " [boot: {}]\n--- serial console ---\n{}\n--- run.sh stderr ---\n{}",
            self.how, self.console, self.stderr
        )
    }

    fn line(&self, needle: &str) -> &str {
        self.console
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with \"{needle}\" on the console{}", self.show()))
    }

    fn index(&self, needle: &str) -> usize {
        self.console
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with \"{needle}\" on the console{}", self.show()))
    }

    /// What every boot must show: the apps ran under paddock as PID 1, then `asked` started an
    /// orderly stop that reached the app before the kernel's `end` line, without a panic, and
    /// qemu exited 0 in time.
    fn check_common(&self, asked: &str, end: &str) {
        assert_ne!(
            self.status,
            Some(124),
            "the VM did not end within {BOOT_TIMEOUT_SECS}s{}",
            self.show()
        );
        assert!(
            self.took < Duration::from_secs(BOOT_TIMEOUT_SECS),
            "the VM ran for {:?}{}",
            self.took,
            self.show()
        );
        // paddock ran the apps, as PID 1: the app's parent is pid 1.
        let hello = self.line("PADDOCK-VM hello: running as pid");
        assert!(
            hello.contains("parent pid 1,"),
            "the app's parent is not PID 1: {hello}{}",
            self.show()
        );
        assert!(
            hello.contains("PADDOCK_APP=hello"),
            "not started by paddock: {hello}{}",
            self.show()
        );
        // /etc/paddock/paddock.toml was read: its hostname is set.
        assert!(
            hello.contains("on host paddock-vm "),
            "the hostname of paddock.toml was not set: {hello}{}",
            self.show()
        );
        // Orderly: the request, then the app's stop signal, then the kernel's last word.
        let asked = self.index(asked);
        let stopped = self.index("PADDOCK-VM hello: got SIGTERM");
        let end = self.index(end);
        assert!(
            asked < stopped && stopped < end,
            "out of order: asked at line {asked}, hello stopped at {stopped}, end at {end}{}",
            self.show()
        );
        assert!(
            !self.console.contains("Kernel panic"),
            "the kernel panicked (did PID 1 exit?){}",
            self.show()
        );
        assert_eq!(
            self.status,
            Some(0),
            "qemu did not exit cleanly{}",
            self.show()
        );
    }
}

/// `sendkey ctrl-alt-delete` on qemu's human monitor: the kernel (Ctrl-Alt-Del disabled by
/// paddock) sends SIGINT to PID 1.
fn press_ctrl_alt_del(monitor: &Path) {
    let mut m = UnixStream::connect(monitor)
        .unwrap_or_else(|e| panic!("qemu monitor {}: {e}", monitor.display()));
    m.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    // The banner ends with the first prompt; the command's echo is followed by the next one.
    for prompts in [1, 2] {
        while String::from_utf8_lossy(&seen).matches("(qemu)").count() < prompts {
            match m.read(&mut chunk) {
                Ok(0) | Err(_) => panic!(
                    "qemu monitor: no prompt; got {:?}",
                    String::from_utf8_lossy(&seen)
                ),
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        if prompts == 1 {
            m.write_all(b"sendkey ctrl-alt-delete\n").unwrap();
        }
    }
}

#[test]
fn vm_boots_with_paddock_as_pid1_and_powers_off() {
    if std::env::var("PADDOCK_VM_TEST").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED vm_boots_with_paddock_as_pid1_and_powers_off: boots a VM under qemu \
             (root, up to a few minutes); set PADDOCK_VM_TEST=1 to run it"
        );
        return;
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED vm_boots_with_paddock_as_pid1_and_powers_off: needs root (device nodes in \
             the initramfs, apt for qemu and the kernel package)"
        );
        return;
    }
    let out = out_dir();

    let t0 = Instant::now();
    let build = Command::new("bash")
        .arg(repo().join("packaging/vm/build-initramfs.sh"))
        .arg(&out)
        .env("PADDOCK_BIN", BIN)
        .output()
        .expect("run packaging/vm/build-initramfs.sh");
    assert!(
        build.status.success(),
        "build-initramfs.sh failed ({}):\n{}{}",
        build.status,
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!("vm test: image built in {:.1}s", t0.elapsed().as_secs_f64());

    // 1. `paddock shutdown`, and on_exit = "poweroff" from paddock.toml.
    let boot = Boot::run(&out, "paddock shutdown", None);
    boot.check_common(
        "PADDOCK-VM shutdown: asking paddock for an orderly shutdown",
        "reboot: Power down",
    );
    // cgroup v2, with controllers, mounted at /sys/fs/cgroup inside the VM by paddock.
    let mounts = boot.line("PADDOCK-VM cgroups: mounts=");
    assert!(
        mounts.contains(" /sys/fs/cgroup cgroup2 "),
        "no cgroup2 at /sys/fs/cgroup inside the VM: {mounts}{}",
        boot.show()
    );
    let controllers = boot
        .line("PADDOCK-VM cgroups: controllers=")
        .split_once("controllers=")
        .map(|x| x.1)
        .unwrap_or_default();
    let controllers: Vec<&str> = controllers.split_whitespace().collect();
    for want in ["cpu", "memory", "pids"] {
        assert!(
            controllers.contains(&want),
            "controller {want} is not offered in the VM's cgroup2 (got {controllers:?}){}",
            boot.show()
        );
    }
    boot.line("paddock: mounted cgroup2 on /sys/fs/cgroup");
    // ... and paddock used it, with controllers, for the [limits] of the app `cgroups`: its
    // cgroup is under /sys/fs/cgroup/paddock, with the limits written by the v2 code.
    boot.line("paddock: cgroup: v2 at /sys/fs/cgroup, controllers cpu memory pids; apps in /sys/fs/cgroup/paddock");
    let cg = boot.line("PADDOCK-VM cgroups: this app is in cgroup");
    assert!(cg.contains("0::/paddock/cgroups"), "{cg}{}", boot.show());
    let limits = boot.line("PADDOCK-VM cgroups: limits");
    assert!(
        limits.contains("memory.max=50331648 pids.max=16 cpu.max=50000 100000"),
        "the app's limits are not in its cgroup: {limits}{}",
        boot.show()
    );

    // A wasm app ran under paddock's wasmtime in the VM.
    boot.line(r#"hello from wasm! args: ["PADDOCK-VM", "wasm"]"#);
    // A sandboxed app ran on the initramfs root: PID 1 of its namespace, its own hostname and
    // root (the busybox bundle, /dev, /proc, /tmp), no_new_privs, seccomp, no capabilities,
    // inside its cgroup (namespaced: it sees itself at the root; no /sys in a sandbox).
    let sb = boot.line("PADDOCK-VM sandbox: pid");
    for want in [
        "pid 1 host sandbox ",
        "[dev ",
        " proc ",
        " tmp ",
        " usr ",
        "NoNewPrivs: 1",
        "Seccomp: 2",
        "CapEff: 0000000000000000",
    ] {
        assert!(
            sb.contains(want),
            "sandbox line lacks {want:?}: {sb}{}",
            boot.show()
        );
    }
    // /etc holds only the passwd and group files paddock writes for a sandbox.
    let etc = boot.line("PADDOCK-VM sandbox: etc");
    assert!(
        etc.contains("etc [group passwd ] uid 0 root"),
        "the host's /etc is visible: {etc}{}",
        boot.show()
    );
    let cg = boot.line("PADDOCK-VM sandbox: cgroup");
    assert!(cg.contains("[0::/]"), "{cg}{}", boot.show());
    boot.line("PADDOCK-VM sandbox: host file hidden");

    // 2. SIGPWR to PID 1 (a UPS daemon, LXC): the same orderly power off.
    let boot = Boot::run(&out, "SIGPWR", Some("sigpwr"));
    boot.check_common(
        "PADDOCK-VM shutdown: sending SIGPWR to PID 1",
        "reboot: Power down",
    );

    // 3. `paddock reboot`: an orderly stop, then a reboot (qemu -no-reboot exits on it).
    let boot = Boot::run(&out, "paddock reboot", Some("reboot"));
    boot.check_common(
        "PADDOCK-VM shutdown: asking paddock to reboot",
        "reboot: Restarting system",
    );
    assert!(
        !boot.console.contains("reboot: Power down"),
        "powered off instead of rebooting{}",
        boot.show()
    );

    // 4. Ctrl-Alt-Del from the hypervisor: SIGINT to PID 1, the same orderly power off.
    let boot = Boot::run(&out, "Ctrl-Alt-Del", Some("wait"));
    boot.check_common("[test: pressed Ctrl-Alt-Del]", "reboot: Power down");
}
