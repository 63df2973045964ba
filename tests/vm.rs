//! A real VM boot with paddock as PID 1 (opt-in: `PADDOCK_VM_TEST=1`, which `.ci/run` sets).
//!
//! Builds the image of `packaging/vm/` (a Debian cloud kernel, an initramfs with this paddock as
//! /init, a busybox bundle and the apps of `packaging/vm/apps/`), boots it under
//! qemu-system-x86_64 (software emulation unless KVM works) and reads the serial console:
//! the apps ran under paddock as PID 1 (a bare `/init`, no arguments), with the hostname of the
//! image's paddock.toml, cgroup v2 with controllers was mounted inside the VM,
//! the `shutdown` app's request stopped every app in order, and the VM powered off cleanly.
//! Needs root (device nodes in the image, apt for missing packages) and a few minutes at most.

use std::path::{Path, PathBuf};
use std::process::Command;
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

fn line_index(console: &str, needle: &str) -> Option<usize> {
    console.lines().position(|l| l.contains(needle))
}

#[test]
fn vm_boots_with_paddock_as_pid1_and_powers_off() {
    if std::env::var("PADDOCK_VM_TEST").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED vm_boots_with_paddock_as_pid1_and_powers_off: boots a VM under qemu \
             (minutes, root); set PADDOCK_VM_TEST=1 to run it"
        );
        return;
    }
    assert!(
        unsafe { libc::geteuid() } == 0,
        "PADDOCK_VM_TEST=1 needs root (device nodes in the initramfs, apt for qemu and the kernel)"
    );
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
    let build_time = t0.elapsed();

    let t1 = Instant::now();
    let run = Command::new("bash")
        .arg(repo().join("packaging/vm/run.sh"))
        .arg(&out)
        .env("PADDOCK_VM_TIMEOUT", BOOT_TIMEOUT_SECS.to_string())
        .output()
        .expect("run packaging/vm/run.sh");
    let boot_time = t1.elapsed();
    let console = String::from_utf8_lossy(&run.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!(
        "vm test: image built in {:.1}s, VM ran {:.1}s ({})",
        build_time.as_secs_f64(),
        boot_time.as_secs_f64(),
        stderr.lines().find(|l| l.contains("accel=")).unwrap_or("")
    );
    let show = || format!("\n--- serial console ---\n{console}\n--- run.sh stderr ---\n{stderr}");

    assert_ne!(
        run.status.code(),
        Some(124),
        "the VM did not power off within {BOOT_TIMEOUT_SECS}s{}",
        show()
    );
    assert!(
        boot_time < Duration::from_secs(BOOT_TIMEOUT_SECS),
        "the VM ran for {boot_time:?}{}",
        show()
    );

    // paddock ran the apps, as PID 1: the app's parent is pid 1.
    let hello = console
        .lines()
        .find(|l| l.contains("PADDOCK-VM hello: running as pid"))
        .unwrap_or_else(|| panic!("the busybox bundle app never ran{}", show()));
    assert!(
        hello.contains("parent pid 1,"),
        "the app's parent is not PID 1: {hello}{}",
        show()
    );
    // /etc/paddock/paddock.toml was read: its hostname is set.
    assert!(
        hello.contains("on host paddock-vm "),
        "the hostname of paddock.toml was not set: {hello}{}",
        show()
    );
    assert!(
        hello.contains("PADDOCK_APP=hello"),
        "not started by paddock: {hello}{}",
        show()
    );

    // cgroup v2, with controllers, mounted at /sys/fs/cgroup inside the VM.
    let mounts = console
        .lines()
        .find(|l| l.contains("PADDOCK-VM cgroups: mounts="))
        .unwrap_or_else(|| panic!("the cgroups app never ran{}", show()));
    assert!(
        mounts.contains(" /sys/fs/cgroup cgroup2 "),
        "no cgroup2 at /sys/fs/cgroup inside the VM: {mounts}{}",
        show()
    );
    let controllers = console
        .lines()
        .find_map(|l| {
            l.split_once("PADDOCK-VM cgroups: controllers=")
                .map(|x| x.1)
        })
        .unwrap_or_else(|| panic!("the cgroups app printed no controllers{}", show()));
    let controllers: Vec<&str> = controllers.split_whitespace().collect();
    for want in ["cpu", "memory", "pids"] {
        assert!(
            controllers.contains(&want),
            "controller {want} is not offered in the VM's cgroup2 (got {controllers:?}){}",
            show()
        );
    }

    // Orderly shutdown: the app got its stop signal, then the kernel powered the machine off.
    let asked = line_index(&console, "PADDOCK-VM shutdown: asking paddock")
        .unwrap_or_else(|| panic!("the shutdown app never ran{}", show()));
    let stopped = line_index(&console, "PADDOCK-VM hello: got SIGTERM")
        .unwrap_or_else(|| panic!("the hello app was not stopped by its signal{}", show()));
    let power_down = line_index(&console, "reboot: Power down")
        .unwrap_or_else(|| panic!("no \"reboot: Power down\" on the console{}", show()));
    assert!(
        asked < stopped && stopped < power_down,
        "out of order: shutdown asked at line {asked}, hello stopped at {stopped}, power down at {power_down}{}",
        show()
    );
    assert!(
        !console.contains("Kernel panic"),
        "the kernel panicked (did PID 1 exit?){}",
        show()
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "qemu did not exit cleanly{}",
        show()
    );
}
