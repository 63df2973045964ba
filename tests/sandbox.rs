//! Level `sandbox` against the real kernel: namespaces, the root made of the bundle, Landlock,
//! capabilities, no_new_privs, seccomp, user namespaces, set-up errors, stop semantics of a
//! PID 1, a real Debian program (redis-server) with a health check, running without root.
//!
//! Needs root (CI runs as root) and Debian's busybox (and redis-server for its test).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn skip(test: &str) -> bool {
    skip_sandbox(test, "level sandbox tests need root (CI runs them as root)")
}

/// One store per test process with the busybox bundle and, when installed, redis, nginx and
/// memcached.
fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        bundle_store(
            "sandbox",
            &[
                ("/usr/bin/busybox", "busybox"),
                ("/usr/bin/redis-server", "redis-server"),
                ("/usr/sbin/nginx", "nginx"),
                ("/usr/bin/memcached", "memcached"),
            ],
        )
    })
}

fn serve(tag: &str, apps: &[(&str, &str)]) -> Paddock {
    Paddock::with_apps(tag, apps).start_with(&["--store".as_ref(), store().as_os_str()])
}

fn out(p: &Paddock, app: &str) -> Vec<String> {
    read_lines(&p.logs_dir().join(format!("{app}.out")))
        .into_iter()
        .map(|l| l.split_once(' ').map_or(l.clone(), |(_, r)| r.to_string()))
        .collect()
}

fn err(p: &Paddock, app: &str) -> Vec<String> {
    read_lines(&p.logs_dir().join(format!("{app}.err")))
}

/// A busybox shell script as a sandboxed app that runs once; applets via busybox --install.
fn script_app(script: &str, sandbox: &str) -> String {
    let script = format!(
        "busybox mkdir -p /tmp/bin; busybox --install -s /tmp/bin; export PATH=/tmp/bin; {script}; echo END"
    );
    format!(
        "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"sh\", \"-c\", {}]\n[restart]\npolicy = \"never\"\n[sandbox]\n{sandbox}\n",
        toml_str(&script)
    )
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn wait_end(p: &Paddock, app: &str) -> Vec<String> {
    wait_for(Duration::from_secs(20), &format!("{app} to finish"), || {
        out(p, app).iter().any(|l| l == "END")
    });
    out(p, app)
}

fn has(lines: &[String], what: &str) -> bool {
    lines.iter().any(|l| l.contains(what))
}

#[test]
fn a_sandboxed_app_sees_only_its_bundle_and_what_it_is_given() {
    if skip("a_sandboxed_app_sees_only_its_bundle_and_what_it_is_given") {
        return;
    }
    let host = Scratch::new("sbx-host");
    let secret = host.path().join("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let ro = host.path().join("ro");
    let rw = host.path().join("rw");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    // The app's host ids are a range of its own: a read_write dir must let them write.
    std::fs::set_permissions(&rw, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(ro.join("config"), "from-host").unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = format!(
        "echo ROOT $(ls / | tr '\\n' ' '); echo DEV $(ls /dev | tr '\\n' ' '); \
         echo HOSTNAME $(hostname); echo ID $(id -u); echo ETC $(ls /etc | tr '\\n' ' '); \
         grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
         echo PROCS $(ls /proc | grep -c '^[0-9]'); echo PID $$; \
         cat {secret} && echo SECRET-READ; \
         echo RO $(cat {ro}/config); echo x > {ro}/new && echo RO-WRITTEN; \
         echo data > {rw}/out && echo RW-WRITTEN; ln -s ../secret {rw}/made-rel && echo RW-LINKED; \
         ln -s /etc/passwd /tmp/scratch/l && echo SCRATCH-LINKED; \
         echo t > /tmp/t && echo TMP-WRITTEN; echo c > /cache/c && echo CACHE-WRITTEN; echo s > /tmp/scratch/s && echo SCRATCH-WRITTEN; \
         touch /usr/x && echo USR-WRITTEN; \
         mount -t tmpfs none /tmp/bin && echo MOUNTED; \
         hostname evil && echo HOSTNAME-SET; \
         echo NET $(ls /sys/class/net 2>/dev/null | tr '\\n' ' ') $(ip -o link | cut -d: -f2 | tr '\\n' ' '); \
         cp /usr/bin/busybox /tmp/bb && /tmp/bb true && echo TMP-EXEC",
        secret = secret.display(),
        ro = ro.display(),
        rw = rw.display()
    );
    let app = script_app(
        &script,
        &format!(
            "read_only = [\"{}\"]\nread_write = [\"{}\"]\ntmpfs = [\"/cache\", \"/tmp/scratch\", \"/tmp/bin\"]\naddress_families = [\"AF_NETLINK\"]",
            ro.display(),
            rw.display()
        ),
    );
    let p = serve("sbx-view", &[("view", &app)]);
    let o = wait_end(&p, "view");
    let e = err(&p, "view");
    eprintln!("stdout:\n{}\nstderr:\n{}", o.join("\n"), e.join("\n"));
    // The root: the bundle's top-level entries and what paddock makes, nothing of the host.
    let root = o.iter().find(|l| l.starts_with("ROOT ")).unwrap();
    let mut names: Vec<&str> = root.split_whitespace().skip(1).collect();
    names.sort();
    for must in ["dev", "proc", "tmp", "usr", "cache"] {
        assert!(names.contains(&must), "{root}");
    }
    // /etc holds only the passwd and group files paddock writes (the bundle has none).
    assert!(has(&o, "ETC group passwd"), "{o:?}");
    for never in ["home", "root", "var", "sys", "boot"] {
        assert!(!names.contains(&never), "{never} visible: {root}");
    }
    let dev = o.iter().find(|l| l.starts_with("DEV ")).unwrap();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm",
    ] {
        assert!(dev.split_whitespace().any(|x| x == d), "{dev}");
    }
    assert!(
        !dev.contains("sda") && !dev.contains("vda") && !dev.contains("mem"),
        "{dev}"
    );
    assert!(has(&o, "HOSTNAME view"), "hostname is the app's name");
    assert!(has(&o, "CapEff:\t0000000000000000"));
    assert!(has(&o, "CapBnd:\t0000000000000000"));
    assert!(has(&o, "NoNewPrivs:\t1"));
    assert!(has(&o, "Seccomp:\t2"));
    assert!(
        has(&o, "PID 1"),
        "the app is PID 1 of its own pid namespace"
    );
    let procs: u32 = o
        .iter()
        .find_map(|l| l.strip_prefix("PROCS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(
        procs <= 4,
        "only the sandbox's processes are visible: {procs}"
    );
    assert!(!has(&o, "SECRET-READ") && !has(&o, "s3cr3t"));
    assert!(has(&o, "RO from-host"));
    assert!(!has(&o, "RO-WRITTEN") && !ro.join("new").exists());
    assert!(has(&o, "RW-WRITTEN"));
    // No symbolic links planted in a host dir (a trap for host tools), nor on the /tmp that
    // holds it here; a tmpfs of its own is free.
    assert!(!has(&o, "RW-LINKED") && std::fs::symlink_metadata(rw.join("made-rel")).is_err());
    assert!(has(&o, "SCRATCH-LINKED"), "{o:?}");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "data\n");
    // Root inside is not root outside: what it writes belongs to an unprivileged host uid.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(rw.join("out")).unwrap());
    assert!(owner >= 0x80000, "written as host uid {owner}");
    assert!(has(&o, "TMP-WRITTEN") && has(&o, "CACHE-WRITTEN") && has(&o, "SCRATCH-WRITTEN"));
    assert!(!has(&o, "USR-WRITTEN") && !has(&o, "MOUNTED") && !has(&o, "HOSTNAME-SET"));
    assert!(
        !has(&o, "TMP-EXEC"),
        "Landlock: nothing outside the bundle executes"
    );
    let net = o.iter().find(|l| l.starts_with("NET")).unwrap();
    assert!(net.contains("lo") && !net.contains("eth"), "{net}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    // status shows the level and what it gives.
    let st = p.app("view");
    assert_eq!(st.isolation, "sandbox");
    let sb = st.sandbox.unwrap_or_default();
    assert!(
        sb.contains("landlock ABI") && sb.contains("seccomp"),
        "{sb}"
    );
}

#[test]
fn landlock_limits_tcp_ports_and_host_network_is_opt_in() {
    if skip("landlock_limits_tcp_ports_and_host_network_is_opt_in") {
        return;
    }
    if paddock::sandbox::rules::kernel_abi() < 4 {
        eprintln!("SKIPPED: Landlock ABI < 4 has no TCP rules");
        return;
    }
    let allowed = free_port();
    let denied = free_port();
    let web = format!(
        "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{allowed}\", \"-h\", \"/usr\"]\n\
         [health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{allowed}\"\ninterval = \"200ms\"\n[readiness]\nhealth = true\n\
         [sandbox]\nnetwork = \"host\"\ntcp_bind = [{allowed}]\n"
    );
    let other = format!(
        "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{denied}\"]\n\
         [restart]\npolicy = \"never\"\n[sandbox]\nnetwork = \"host\"\ntcp_bind = [{allowed}]\n"
    );
    let connect = script_app(
        &format!("nc -w 1 127.0.0.1 {allowed} </dev/null && echo CONNECTED"),
        "network = \"host\"",
    );
    let p = serve(
        "sbx-net",
        &[("web", &web), ("other", &other), ("connect", &connect)],
    );
    p.wait_state("web", "READY", Duration::from_secs(20));
    // The host reaches the sandboxed server on the allowed port.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", allowed)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1."), "{resp}");
    // Binding another port is refused by Landlock.
    p.wait_state("other", "EXITED", Duration::from_secs(20));
    let e = err(&p, "other").join("\n");
    assert!(e.contains("ermission denied"), "{e}");
    // Connecting is refused: no tcp_connect port listed.
    let o = wait_end(&p, "connect");
    assert!(!has(&o, "CONNECTED"), "{o:?}");
}

#[test]
fn set_up_failures_name_the_step_and_the_path() {
    if skip("set_up_failures_name_the_step_and_the_path") {
        return;
    }
    let host = Scratch::new("sbx-fail");
    let gone = host.path().join("data");
    std::fs::create_dir_all(&gone).unwrap();
    let app = format!(
        "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"true\"]\nautostart = false\n[sandbox]\nread_write = [\"{}\"]\n",
        gone.display()
    );
    let wd = "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"true\"]\nworkdir = \"/srv/app\"\n";
    let p = serve("sbx-fail", &[("gone", &app), ("wd", wd)]);
    // The path exists when the file is loaded, and is removed before the start.
    std::fs::remove_dir(&gone).unwrap();
    let _ = p.cli(&["start", "gone"]);
    let st = p.wait_state("gone", "FATAL", Duration::from_secs(20));
    let msg = format!("{st:?}");
    assert!(
        msg.contains(&format!("bind {}", gone.display()))
            && msg.contains("No such file or directory"),
        "{msg}"
    );
    let st = p.wait_state("wd", "FATAL", Duration::from_secs(20));
    let msg = format!("{st:?}");
    assert!(
        msg.contains("sandbox: chdir to workdir") && msg.contains("/srv/app"),
        "{msg}"
    );
}

#[test]
fn a_pid_1_without_handlers_stops_at_once() {
    if skip("a_pid_1_without_handlers_stops_at_once") {
        return;
    }
    let app = "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"sleep\", \"1000\"]\nstop_timeout = \"60s\"\n";
    let p = serve("sbx-stop", &[("sleeper", app)]);
    let st = p.wait_state("sleeper", "READY", Duration::from_secs(20));
    let pid = st.pid.unwrap();
    let t = std::time::Instant::now();
    let o = p.cli(&["stop", "sleeper"]);
    assert!(o.status.success(), "{o:?}");
    p.wait_state("sleeper", "STOPPED", Duration::from_secs(10));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(!alive(pid));
}

#[test]
fn user_namespace_maps_the_app_to_an_unprivileged_host_uid() {
    if skip("user_namespace_maps_the_app_to_an_unprivileged_host_uid") {
        return;
    }
    // The default: no `userns` key. `userns = false` is the explicit, weaker opt-out.
    let app = script_app("echo INSIDE $(id -u); sleep 30", "");
    let host_ids = script_app("echo INSIDE $(id -u); sleep 30", "userns = false");
    let p = serve("sbx-userns", &[("u", &app), ("h", &host_ids)]);
    let st = p.wait_state("u", "READY", Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "inside uid", || {
        has(&out(&p, "u"), "INSIDE")
    });
    assert!(has(&out(&p, "u"), "INSIDE 0"), "{:?}", out(&p, "u"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", st.pid.unwrap())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let host_uid: u32 = uid.split_whitespace().nth(1).unwrap().parse().unwrap();
    // A range of its own, between systemd-nspawn's bounds: never a real user's uid.
    assert!(
        (0x80000..0x6fff_0000).contains(&host_uid) && host_uid.is_multiple_of(65536),
        "host view: {uid}"
    );
    let summary = st.sandbox.unwrap_or_default();
    assert!(
        summary.contains(&format!("user namespace (root = host uid {host_uid})")),
        "{summary}"
    );
    // The opt-out runs with the host's ids, and says so.
    let h = p.wait_state("h", "READY", Duration::from_secs(20));
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid.unwrap())).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "{status}"
    );
    assert!(
        h.sandbox
            .unwrap_or_default()
            .contains("host user ids (userns = false)")
    );
}

#[test]
fn a_real_debian_program_runs_sandboxed_with_a_health_check() {
    if skip("a_real_debian_program_runs_sandboxed_with_a_health_check") {
        return;
    }
    if !Path::new("/usr/bin/redis-server").exists() || !Path::new("/usr/bin/redis-cli").exists() {
        eprintln!("SKIPPED: needs redis-server and redis-cli (apt-get install redis-server)");
        return;
    }
    let port = free_port();
    let data = Scratch::new("sbx-redis-data");
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let app = format!(
        "isolation = \"sandbox\"\nbundle = \"redis-server\"\n\
         command = [\"redis-server\", \"--bind\", \"127.0.0.1\", \"--port\", \"{port}\", \"--dir\", \"{dir}\", \"--dbfilename\", \"dump.rdb\", \"--appendonly\", \"no\", \"--supervised\", \"systemd\"]\n\
         [health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"200ms\"\n[readiness]\nnotify = true\n\
         [sandbox]\nnetwork = \"host\"\ntcp_bind = [{port}]\nread_write = [\"{dir}\"]\n",
        dir = data.path().display()
    );
    let p = serve("sbx-redis", &[("redis", &app)]);
    // READY by sd_notify: paddock's notify socket is bound into the sandbox.
    p.wait_state("redis", "READY", Duration::from_secs(30));
    wait_for(Duration::from_secs(10), "redis healthy", || {
        p.app("redis").health == Some(paddock::supervise::Health::Healthy)
    });
    let cli = |args: &[&str]| {
        let o = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "k", "v"]), "OK");
    assert_eq!(cli(&["SAVE"]), "OK");
    assert!(
        data.path().join("dump.rdb").exists(),
        "redis wrote into its read_write dir"
    );
    // In a user namespace (root inside, nobody on the host) it can still notify readiness.
    let userns = format!(
        "isolation = \"sandbox\"\nbundle = \"redis-server\"\n\
         command = [\"redis-server\", \"--bind\", \"127.0.0.1\", \"--port\", \"{}\", \"--save\", \"\", \"--appendonly\", \"no\", \"--supervised\", \"systemd\"]\n\
         [readiness]\nnotify = true\n[sandbox]\nuserns = true\ntcp_bind = [{0}]\n",
        free_port()
    );
    p.write_app("redis-userns", &userns);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{o:?}");
    p.wait_state("redis-userns", "READY", Duration::from_secs(30));
    // It cannot write anywhere else.
    let r = cli(&["CONFIG", "SET", "dir", "/usr"]);
    let s = cli(&["SAVE"]);
    assert!(r.contains("ERR") || s.contains("ERR"), "{r} / {s}");
}

#[test]
fn without_root_a_sandbox_needs_userns_or_falls_back() {
    if skip("without_root_a_sandbox_needs_userns_or_falls_back") {
        return;
    }
    // Host ids (`userns = false`) need root; the default, a user namespace, does not.
    let refused = "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"sleep\", \"100\"]\n";
    let fallback = format!("{refused}fallback = \"bundle\"\n[sandbox]\nuserns = false\n");
    let refused = format!("{refused}[sandbox]\nuserns = false\n");
    let rootless = script_app(
        "echo INSIDE $(id -u); echo ROOT $(ls / | tr '\\n' ' '); sleep 30",
        "",
    );
    let p = Paddock::with_apps(
        "sbx-rootless",
        &[
            ("refused", &refused),
            ("fallback", &fallback),
            ("rootless", &rootless),
        ],
    )
    .start_as(65534, &["--store".as_ref(), store().as_os_str()]);
    let st = p.wait_state("refused", "FATAL", Duration::from_secs(20));
    let msg = format!("{st:?}");
    assert!(
        msg.contains("paddock is not root") && msg.contains("userns = false"),
        "{msg}"
    );
    let st = p.wait_state("fallback", "READY", Duration::from_secs(20));
    assert_eq!(st.isolation, "bundle");
    assert!(st.fallback.unwrap_or_default().contains("not root"));
    let o = p.cli(&["status", "fallback"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("bundle*"),
        "{o:?}"
    );
    // Rootless sandbox: the app is root of its own user namespace, backed by paddock's uid.
    let unpriv = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map_or(true, |s| s.trim() != "0");
    if !unpriv {
        eprintln!("(rootless sandbox part skipped: unprivileged user namespaces are off)");
        return;
    }
    let st = p.wait_state("rootless", "READY", Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "rootless output", || {
        has(&out(&p, "rootless"), "ROOT")
    });
    let o = out(&p, "rootless");
    assert!(has(&o, "INSIDE 0"), "{o:?}");
    assert!(!has(&o, "var "), "{o:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", st.pid.unwrap())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534"))
    );
}

#[test]
fn each_sandbox_has_its_own_network_kept_across_restarts() {
    if skip("each_sandbox_has_its_own_network_kept_across_restarts") {
        return;
    }
    // Two apps bind the same loopback port: each has its own network namespace.
    let web = "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:7777\"]\n[sandbox]\ntcp_bind = [7777]\n";
    let p = serve("sbx-netns", &[("a", web), ("b", web)]);
    let a = p.wait_state("a", "READY", Duration::from_secs(20));
    let b = p.wait_state("b", "READY", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    for (n, st) in [("a", &a), ("b", &b)] {
        let now = p.app(n);
        assert_eq!(
            now.pid,
            st.pid,
            "{n} kept running: {now:?} {:?}",
            err(&p, n)
        );
    }
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let (na, nb) = (ns(a.pid.unwrap()), ns(b.pid.unwrap()));
    assert_ne!(na, nb);
    assert_ne!(na, std::fs::read_link("/proc/self/ns/net").unwrap());
    // A restart finds the same namespace (and the port free again).
    let o = p.cli(&["restart", "a"]);
    assert!(o.status.success(), "{o:?}");
    let again = p.wait_state("a", "READY", Duration::from_secs(20));
    assert_ne!(again.pid, a.pid);
    assert_eq!(ns(again.pid.unwrap()), na);
}

#[test]
fn kept_capabilities_survive_for_a_non_root_user_and_seccomp_can_be_off() {
    if skip("kept_capabilities_survive_for_a_non_root_user_and_seccomp_can_be_off") {
        return;
    }
    // As nobody, with CAP_NET_BIND_SERVICE kept (ambient), it may bind port 80 (in its own
    // network namespace, allowed by tcp_bind); without the capability it may not.
    let script = "echo ID $(id -u); grep -E '^(CapEff|CapAmb|Seccomp):' /proc/self/status; \
                  httpd -p 127.0.0.1:80 -h /usr && echo BOUND-80";
    let keep = format!(
        "user = \"nobody\"\n{}",
        script_app(
            script,
            "tcp_bind = [80]\ncapabilities = [\"NET_BIND_SERVICE\"]\nseccomp = \"off\""
        )
    );
    let drop = format!(
        "user = \"nobody\"\n{}",
        script_app(script, "tcp_bind = [80]")
    );
    let p = serve("sbx-caps", &[("keep", &keep), ("drop", &drop)]);
    let k = wait_end(&p, "keep");
    let d = wait_end(&p, "drop");
    eprintln!("keep: {k:?}\ndrop: {d:?}\n{:?}", err(&p, "drop"));
    assert!(has(&k, "ID 65534") && has(&d, "ID 65534"));
    // CAP_NET_BIND_SERVICE is bit 10.
    assert!(has(&k, "CapEff:\t0000000000000400"), "{k:?}");
    assert!(has(&k, "CapAmb:\t0000000000000400"), "{k:?}");
    assert!(has(&k, "BOUND-80"), "{k:?}");
    assert!(has(&k, "Seccomp:\t0"), "{k:?}");
    assert!(has(&d, "CapEff:\t0000000000000000"), "{d:?}");
    assert!(has(&d, "Seccomp:\t2"), "{d:?}");
    assert!(!has(&d, "BOUND-80"), "{d:?}");
}

#[test]
fn an_exec_health_check_runs_inside_the_apps_sandbox() {
    if skip("an_exec_health_check_runs_inside_the_apps_sandbox") {
        return;
    }
    let rw = Scratch::new("sbx-check");
    std::fs::set_permissions(
        rw.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let view = rw.path().join("view");
    // The check writes what it sees into the app's read_write dir, then passes.
    let check = format!(
        "echo PID $(busybox readlink /proc/self/ns/pid) MNT $(busybox readlink /proc/self/ns/mnt) \
         NET $(busybox readlink /proc/self/ns/net) ID $(busybox id -u) \
         $(busybox grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status | busybox tr '\\t\\n' '  ') \
         ROOT $(busybox ls / | busybox tr '\\n' ' ') > {v}.tmp && busybox mv {v}.tmp {v}",
        v = view.display()
    );
    let app = format!(
        "isolation = \"sandbox\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"sleep\", \"1000\"]\n\
         [health]\nkind = \"exec\"\ncommand = [\"busybox\", \"sh\", \"-c\", {}]\ninterval = \"200ms\"\n\
         [readiness]\nhealth = true\n[sandbox]\nread_write = [\"{}\"]\n",
        toml_str(&check),
        rw.path().display()
    );
    let p = serve("sbx-check", &[("checked", &app)]);
    let st = p.wait_state("checked", "READY", Duration::from_secs(20));
    let pid = st.pid.unwrap();
    wait_for(Duration::from_secs(10), "the check's view", || {
        view.exists()
    });
    let seen = std::fs::read_to_string(&view).unwrap();
    eprintln!("the check saw: {seen}");
    let link = |ns: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for (key, ns) in [("PID", "pid"), ("MNT", "mnt"), ("NET", "net")] {
        assert!(
            seen.contains(&format!("{key} {}", link(ns))),
            "{key}: the check is in the app's {ns} namespace: {seen}"
        );
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert!(!seen.contains(&*host.to_string_lossy()), "{seen}");
    }
    assert!(seen.contains("ID 0"), "{seen}");
    assert!(seen.contains("Seccomp: 2"), "{seen}");
    assert!(seen.contains("NoNewPrivs: 1"), "{seen}");
    assert!(seen.contains("CapEff: 0000000000000000"), "{seen}");
    // It sees the sandbox's root, not the host's.
    assert!(
        seen.contains("ROOT ") && !seen.contains(" home ") && !seen.contains(" boot "),
        "{seen}"
    );
    // It wrote as the app's unprivileged host uid.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&view).unwrap());
    assert!(owner >= 0x80000, "written as host uid {owner}");
    // A check program that is not in the bundle is refused with the reason.
    let bad = app.replace(
        "command = [\"busybox\", \"sh\"",
        "command = [\"/usr/bin/redis-cli\"",
    );
    let p2 = serve("sbx-check-bad", &[("bad", &bad)]);
    wait_for(Duration::from_secs(20), "the check's error", || {
        p2.app("bad")
            .health_detail
            .unwrap_or_default()
            .contains("not in the bundle")
    });
}

#[test]
fn nginx_and_memcached_as_nobody_run_sandboxed_with_health_checks() {
    if skip("nginx_and_memcached_as_nobody_run_sandboxed_with_health_checks") {
        return;
    }
    if !Path::new("/usr/sbin/nginx").exists() || !Path::new("/usr/bin/memcached").exists() {
        eprintln!("SKIPPED: needs nginx and memcached (apt-get install nginx memcached)");
        return;
    }
    let (nport, mport) = (free_port(), free_port());
    let conf = Scratch::new("sbx-nginx-conf");
    // nginx's master stays root of its user namespace; its worker switches to nobody:nogroup,
    // named in the sandbox's /etc/passwd and /etc/group. Switching users takes the capabilities
    // to do so (every capability is dropped unless listed; in the app's user namespace they act
    // on its own range of host ids only).
    std::fs::write(
        conf.path().join("nginx.conf"),
        nginx_conf(
            "/tmp",
            Some("nobody nogroup"),
            &format!("listen 127.0.0.1:{nport}; root /usr/share/nginx/html;"),
        ),
    )
    .unwrap();
    let nginx = format!(
        "isolation = \"sandbox\"\nbundle = \"nginx\"\ncommand = [\"/usr/sbin/nginx\", \"-e\", \"stderr\", \"-p\", \"/tmp\", \"-c\", \"{c}/nginx.conf\"]\n\
         [readiness]\nhealth = true\n[health]\nkind = \"http\"\nurl = \"http://127.0.0.1:{nport}/\"\ninterval = \"200ms\"\n\
         [sandbox]\nnetwork = \"host\"\ntcp_bind = [{nport}]\nread_only = [\"{c}\"]\ncapabilities = [\"SETUID\", \"SETGID\", \"CHOWN\"]\n",
        c = conf.path().display()
    );
    let memcached = format!(
        "isolation = \"sandbox\"\nbundle = \"memcached\"\ncommand = [\"memcached\", \"-u\", \"nobody\", \"-l\", \"127.0.0.1\", \"-p\", \"{mport}\", \"-U\", \"0\"]\n\
         [readiness]\nhealth = true\n[health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{mport}\"\ninterval = \"200ms\"\n\
         [sandbox]\nnetwork = \"host\"\ntcp_bind = [{mport}]\ncapabilities = [\"SETUID\", \"SETGID\"]\n"
    );
    let p = serve(
        "sbx-daemons",
        &[("nginx", &nginx), ("memcached", &memcached)],
    );
    for app in ["nginx", "memcached"] {
        wait_for(Duration::from_secs(30), "READY or FATAL", || {
            ["READY", "FATAL"].contains(&p.app(app).state.as_str())
        });
        assert_eq!(p.app(app).state, "READY", "{app}: {:?}", err(&p, app));
        let st = p.app(app);
        assert_eq!(
            st.health,
            Some(paddock::supervise::Health::Healthy),
            "{app}"
        );
    }
    let ask = |port: u16, req: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut b = vec![0u8; 4096];
        let n = c.read(&mut b).unwrap();
        String::from_utf8_lossy(&b[..n]).into_owned()
    };
    let page = ask(nport, "GET / HTTP/1.0\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200"), "nginx: {page:?}");
    assert!(
        ask(mport, "version\r\n").starts_with("VERSION"),
        "memcached"
    );
    // memcached switched to nobody inside: its host uid is the app's range + 65534.
    let pid = p.app("memcached").pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap();
    assert!(
        uid >= 0x80000 && uid % 65536 == 65534,
        "memcached runs as host uid {uid}"
    );
}
