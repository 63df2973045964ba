//! Packaging: the app files shipped in packaging/ are valid, and (opt-in, `PADDOCK_DEB_TEST=1`,
//! which `.ci/run` sets) the Debian package builds with cargo-deb and installs with dpkg.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("paddock-t-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check_dir(dir: &Path) {
    let out = run(Command::new(BIN).arg("check").arg(dir));
    assert!(
        out.status.success(),
        "paddock check {} failed:\n{}",
        dir.display(),
        text(&out)
    );
}

/// The app files embedded in a Kubernetes ConfigMap: `  NAME.toml: |` and the lines below it
/// indented by 4 spaces.
fn configmap_apps(yaml: &str) -> Vec<(String, String)> {
    let mut apps = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(": |"))
            .filter(|n| n.ends_with(".toml") && !n.starts_with(' '))
        else {
            continue;
        };
        let mut body = String::new();
        while let Some(l) = lines.peek() {
            if !l.is_empty() && !l.starts_with("    ") {
                break;
            }
            body.push_str(l.get(4..).unwrap_or(""));
            body.push('\n');
            lines.next();
        }
        apps.push((name.to_string(), body));
    }
    apps
}

/// The app files of a Nomad job's templates: `destination = "local/apps/NAME.toml"` and the
/// `data = <<-TOML … TOML` heredoc after it (common indentation removed, as `<<-` does).
fn nomad_apps(hcl: &str) -> Vec<(String, String)> {
    let mut apps = Vec::new();
    let mut name = None;
    let mut lines = hcl.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("destination") {
            let d = d.trim_start_matches([' ', '=']).trim_matches('"');
            name = d.strip_prefix("local/apps/").map(str::to_string);
        } else if t.starts_with("data") && t.ends_with("<<-TOML") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "TOML").collect();
            let indent = body
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let body: String = body
                .iter()
                .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
                .collect();
            apps.push((name.take().expect("a template without destination"), body));
        }
    }
    apps
}

#[test]
fn shipped_app_files_are_valid() {
    // The container image's apps (they use busybox, found in PATH as in the image).
    if !Path::new("/usr/bin/busybox").exists() && !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED shipped_app_files_are_valid: needs busybox (apt-get install busybox)");
        return;
    }
    check_dir(&repo().join("packaging/container/apps"));

    // The Kubernetes ConfigMap and the Nomad templates carry the same two apps.
    for (file, apps) in [
        (
            "packaging/fleet/paddock-pod.yaml",
            configmap_apps(
                &std::fs::read_to_string(repo().join("packaging/fleet/paddock-pod.yaml")).unwrap(),
            ),
        ),
        (
            "packaging/fleet/paddock.nomad.hcl",
            nomad_apps(
                &std::fs::read_to_string(repo().join("packaging/fleet/paddock.nomad.hcl")).unwrap(),
            ),
        ),
    ] {
        let names: Vec<&str> = apps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web.toml", "ticker.toml"], "apps found in {file}");
        let dir = scratch("fleet-apps");
        for (name, body) in &apps {
            std::fs::write(dir.join(name), body).unwrap();
        }
        check_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The example shipped in the .deb (its workdir and user are those of a Debian host).
    let example = std::fs::read_to_string(repo().join("packaging/deb/example-web.toml")).unwrap();
    let dir = scratch("deb-example");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let example = example.replace("\"/srv/www\"", &format!("{:?}", dir.join("www")));
    let apps = dir.join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(apps.join("web.toml"), example).unwrap();
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 && Path::new("/usr/bin/python3").exists() {
        check_dir(&apps);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn cargo_deb() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let candidate = home.join("bin/cargo-deb");
    if candidate.exists() {
        return Some(candidate);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("cargo-deb"))
            .find(|c| c.exists())
    })
}

fn dpkg_installed(pkg: &str) -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", pkg]))
        .stdout
        .starts_with(b"install ok installed")
}

#[test]
fn deb_builds_and_installs() {
    if std::env::var("PADDOCK_DEB_TEST").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED deb_builds_and_installs: installs the .deb on this machine with dpkg (root); \
             set PADDOCK_DEB_TEST=1 to run it"
        );
        return;
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED deb_builds_and_installs: needs root (dpkg -i)");
        return;
    }
    // cargo-deb packages target/release/paddock as built (--no-build): it must be this binary.
    assert!(
        BIN.ends_with("/release/paddock"),
        "PADDOCK_DEB_TEST=1 needs a release build: cargo test --release ({BIN})"
    );
    let cargo_deb = cargo_deb().expect("cargo-deb not found: cargo install cargo-deb --locked");
    let out_dir = scratch("deb");

    let t0 = Instant::now();
    let build = run(Command::new(&cargo_deb)
        .arg("deb")
        .arg("--no-build")
        .arg("--output")
        .arg(&out_dir)
        .current_dir(repo()));
    assert!(
        build.status.success(),
        "cargo deb failed:\n{}",
        text(&build)
    );
    let deb = String::from_utf8_lossy(&build.stdout).trim().to_string();
    let deb = deb.lines().last().unwrap_or_default().to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).exists(),
        "no .deb written:\n{}",
        text(&build)
    );
    let build_time = t0.elapsed();
    let deb_size = std::fs::metadata(&deb).map_or(0, |m| m.len());
    // The debug info stripped from the binary, in a package of its own beside the .deb.
    let ddeb = deb
        .replace("/paddock_", "/paddock-dbgsym_")
        .replace(".deb", ".ddeb");
    let ddeb = Path::new(&ddeb);
    assert!(
        ddeb.is_file(),
        "no {} written:\n{}",
        ddeb.display(),
        text(&build)
    );

    // The package's metadata.
    let info = run(Command::new("dpkg-deb").args(["-f", &deb, "Package", "Version", "Depends"]));
    let info = text(&info);
    assert!(info.contains("Package: paddock"), "{info}");
    assert!(
        info.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains("libc6"), "dependencies: {info}");

    let was_installed = dpkg_installed("paddock");
    let t1 = Instant::now();
    let install = run(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(
        install.status.success(),
        "dpkg -i failed:\n{}",
        text(&install)
    );
    let install_time = t1.elapsed();
    assert!(
        dpkg_installed("paddock"),
        "dpkg does not list paddock as installed"
    );

    // The files landed.
    let list = text(&run(Command::new("dpkg").args(["-L", "paddock"])));
    for path in [
        "/usr/bin/paddock",
        "/usr/lib/systemd/system/paddock.service",
        "/etc/paddock/apps/README",
        "/usr/share/doc/paddock/README.md",
        "/usr/share/doc/paddock/docs/config.md",
        "/usr/share/doc/paddock/examples/web.toml",
        "/usr/share/doc/paddock/examples/paddock.toml",
        "/usr/share/doc/paddock/copyright",
        "/usr/lib/sysctl.d/60-paddock.conf",
    ] {
        assert!(
            list.lines().any(|l| l == path),
            "{path} not in dpkg -L:\n{list}"
        );
        assert!(Path::new(path).exists(), "{path} was not installed");
    }
    // The package ships one program, paddock, stripped: no ELF file and no executable but
    // /usr/bin/paddock (the bench, the probe and the bench app of crates/paddock-lab stay in
    // the source tree), and no debug info in it (that is in the -dbgsym .ddeb beside the .deb).
    for path in list.lines().map(Path::new) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if !meta.is_file() || path == Path::new("/usr/bin/paddock") {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mut magic = [0u8; 4];
        let is_elf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        assert!(
            !is_elf && meta.permissions().mode() & 0o111 == 0,
            "the package installs a program other than /usr/bin/paddock: {}",
            path.display()
        );
    }
    let bin = std::fs::read("/usr/bin/paddock").unwrap();
    let elf = goblin::elf::Elf::parse(&bin).expect("/usr/bin/paddock is an ELF file");
    let debug: Vec<&str> = elf
        .section_headers
        .iter()
        .filter_map(|sh| elf.shdr_strtab.get_at(sh.sh_name))
        .filter(|n| n.starts_with(".debug_") && *n != ".debug_gdb_scripts")
        .collect();
    assert!(
        debug.is_empty(),
        "/usr/bin/paddock is not stripped: it has {debug:?} ({} bytes)",
        bin.len()
    );
    let installed_size = bin.len();
    let conffiles = text(&run(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Conffiles}",
        "paddock",
    ])));
    assert!(
        conffiles.contains("/etc/paddock/apps/README"),
        "conffiles: {conffiles}"
    );
    // postinst enabled the unit (deb-systemd-helper), even without a running systemd.
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/paddock.service").exists(),
        "paddock.service was not enabled by postinst"
    );

    // The installed binary runs.
    let version = run(Command::new("/usr/bin/paddock").arg("--version"));
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("paddock {}", env!("CARGO_PKG_VERSION"))
    );
    // An empty /etc/paddock/apps is a valid configuration (the README is not an app file).
    let check = run(Command::new("/usr/bin/paddock").args(["check", "/etc/paddock/apps"]));
    assert!(check.status.success(), "{}", text(&check));
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok: 0 apps");
    // The unit file is valid for systemd (when systemd's tools are there).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let verify = run(Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/paddock.service"]));
        let t = text(&verify);
        assert!(
            verify.status.success() && !t.contains("paddock.service:"),
            "systemd-analyze verify:\n{t}"
        );
    }
    // And serves: the same command line as the unit's ExecStart, on a private socket, and tells
    // its parent READY=1 on $NOTIFY_SOCKET as systemd's Type=notify expects.
    let state = scratch("deb-serve");
    let sock = state.join("paddock.sock");
    let notify_path = state.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut serve = Command::new("/usr/bin/paddock")
        .arg("serve")
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(&state)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let ready = match notify.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("nothing: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = None;
    while Instant::now() < deadline {
        let v = run(Command::new("/usr/bin/paddock")
            .arg("version")
            .arg("--socket")
            .arg(&sock));
        if v.status.success() && String::from_utf8_lossy(&v.stdout).contains("(server, pid") {
            answered = Some(String::from_utf8_lossy(&v.stdout).to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = run(Command::new("/usr/bin/paddock")
        .arg("shutdown")
        .arg("--socket")
        .arg(&sock));
    let status = serve.wait().unwrap();
    let _ = std::fs::remove_dir_all(&state);
    assert!(
        answered.is_some(),
        "the installed paddock did not answer on its socket"
    );
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "no READY=1 on NOTIFY_SOCKET (Type=notify would time out); got {ready:?}"
    );
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(status.success(), "paddock serve exited with {status}");

    // Leave the machine as it was.
    if !was_installed {
        let purge = run(Command::new("dpkg").args(["--purge", "paddock"]));
        assert!(
            purge.status.success(),
            "dpkg --purge failed:\n{}",
            text(&purge)
        );
        assert!(!Path::new("/usr/bin/paddock").exists());
        assert!(!Path::new("/etc/paddock/apps/README").exists());
        assert!(
            !Path::new("/etc/systemd/system/multi-user.target.wants/paddock.service").exists(),
            "postrm left the unit enabled"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    eprintln!(
        "deb test: {} ({} bytes) built in {:.1}s, installed in {:.1}s; /usr/bin/paddock {} bytes",
        Path::new(&deb).file_name().unwrap().to_string_lossy(),
        deb_size,
        build_time.as_secs_f64(),
        install_time.as_secs_f64(),
        installed_size
    );
}

#[test]
fn shipped_settings_files_are_valid() {
    use paddock::pid1::{OnExit, load_global};
    // The VM image's /etc/paddock/paddock.toml.
    let vm = load_global(&repo().join("packaging/vm/paddock-vm.toml"), true).unwrap();
    assert_eq!(vm.hostname.as_deref(), Some("paddock-vm"));
    assert_eq!(vm.on_exit, OnExit::Poweroff);
    // The .deb's example, as shipped (all commented out) and with every key switched on.
    let example = repo().join("packaging/deb/example-paddock.toml");
    load_global(&example, true).unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let on: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(k) if k.starts_with(|c: char| c.is_ascii_lowercase()) => format!("{k}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let dir = scratch("settings");
    let p = dir.join("paddock.toml");
    std::fs::write(&p, &on).unwrap();
    let g = load_global(&p, true).unwrap_or_else(|e| panic!("{e}\n{on}"));
    assert_eq!(g.hostname.as_deref(), Some("box-1"));
    assert!(g.log_dir.is_some() && g.state_dir.is_some() && g.socket.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
