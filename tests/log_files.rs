//! Log files against the real kernel: a full disk (a small tmpfs), per-app files and
//! directories, the JSON format, and `/dev/stdout` reopened by an app running as another user
//! at every native level.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Unmounts (lazily: paddock may still hold files there) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn metrics(p: &Paddock) -> String {
    let r = p
        .client
        .request("GET", "/metrics", None)
        .expect("GET /metrics");
    r.body
}

/// Every line of the app's log files (rotated ones too), oldest file first.
fn all_lines(dir: &Path, base: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(base))
        })
        .collect();
    files.sort();
    files.reverse();
    let mut out = vec![];
    for f in files {
        let b = std::fs::read(&f).unwrap();
        for l in b.split(|&c| c == b'\n') {
            out.push(l.to_vec());
        }
        // The last element after the final newline is empty.
        if out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
    }
    out
}

const PAYLOAD: &str = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789";

/// A line as the fast writer writes it, stamped: `<time> line N PAYLOAD`, or paddock's notice.
fn whole(l: &[u8]) -> bool {
    let Ok(l) = std::str::from_utf8(l) else {
        return false;
    };
    let Some((ts, rest)) = l.split_once(' ') else {
        return false;
    };
    if ts.len() != 24 || !ts.ends_with('Z') {
        return false;
    }
    if let Some(r) = rest.strip_prefix("line ") {
        return r
            .split_once(' ')
            .is_some_and(|(n, p)| n.parse::<u64>().is_ok() && p == PAYLOAD);
    }
    rest.starts_with("paddock: ") && rest.contains(" lines dropped (disk full) since ")
}

#[test]
fn a_full_disk_drops_whole_lines_counts_them_and_logs_the_recovery() {
    if !is_root() {
        eprintln!(
            "SKIPPED a_full_disk_drops_whole_lines_counts_them_and_logs_the_recovery: needs root (mounts a 256 KiB tmpfs as the log directory)"
        );
        return;
    }
    let fast = format!(
        "command = [\"/bin/sh\", \"-c\", \"i=0; while :; do i=$((i+1)); echo \\\"line $i {PAYLOAD}\\\"; done\"]\n[logs]\nmax_size = \"48KiB\"\nkeep = 8\n"
    );
    let steady = "command = [\"/bin/sh\", \"-c\", \"while :; do echo steady; sleep 0.1; done\"]\n";
    let p = Paddock::with_apps("diskfull", &[("fast", &fast), ("steady", steady)]);
    let logs = p.logs_dir();
    std::fs::create_dir_all(&logs).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k,mode=0755",
            "paddock-test-full",
        ])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(st.success(), "mount a tmpfs on {}", logs.display());
    let _mount = Mount(logs.clone());
    let p = p.start();
    p.wait_state("fast", "READY", Duration::from_secs(10));
    p.wait_state("steady", "READY", Duration::from_secs(10));
    let (fast_pid, steady_pid) = (p.app("fast").pid, p.app("steady").pid);
    // The disk fills up: lines are dropped and counted.
    wait_for(Duration::from_secs(20), "dropped lines", || {
        p.app("fast").log_lines_dropped > 1000
    });
    let dropped = p.app("fast").log_lines_dropped;
    let m = metrics(&p);
    let in_metrics: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("paddock_app_log_lines_dropped_total{app=\"fast\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no counter for fast in /metrics:\n{m}"));
    assert!(in_metrics >= dropped, "{in_metrics} < {dropped}");
    let st = p.cli(&["status", "--json"]);
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("\"log_lines_dropped\""),
        "status --json"
    );
    // While it is full, paddock answers and nothing running is disturbed.
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(p.app("steady").state, "READY");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "status took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Room again (the operator removes old rotated files): writing resumes, and says so. Four
    // times: it fills up again within milliseconds. After the last round nothing is removed, so
    // the last recovery line stays in the files.
    for round in 0..4 {
        for e in std::fs::read_dir(&logs).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("fast.out.") || n.starts_with("steady.out.") {
                // The writer may have rotated it away since the listing: gone is what we want.
                match std::fs::remove_file(e.path()) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    r => r.unwrap(),
                }
            }
        }
        wait_for(
            Duration::from_secs(10),
            &format!("the recovery line ({round})"),
            || {
                all_lines(&logs, "fast.out").iter().any(|l| {
                    String::from_utf8_lossy(l).contains(" lines dropped (disk full) since ")
                })
            },
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGSTOP the writer so the files stop moving while they are read.
    // SAFETY: kill(2) takes no pointers; the pid is the app's, alive (asserted below).
    unsafe { libc::kill(fast_pid.unwrap(), libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    let lines = all_lines(&logs, "fast.out");
    let torn: Vec<String> = lines
        .iter()
        .filter(|l| !whole(l))
        .take(3)
        .map(|l| String::from_utf8_lossy(&l[..l.len().min(200)]).into_owned())
        .collect();
    assert!(
        torn.is_empty(),
        "torn lines among {}: {torn:?}",
        lines.len()
    );
    let notices = lines
        .iter()
        .filter(|l| String::from_utf8_lossy(l).contains(" lines dropped (disk full) since "))
        .count();
    assert!(notices >= 1, "no recovery line");
    // SAFETY: as above.
    unsafe { libc::kill(fast_pid.unwrap(), libc::SIGCONT) };
    for l in all_lines(&logs, "steady.out") {
        let l = String::from_utf8_lossy(&l).into_owned();
        assert!(
            l.ends_with(" steady") || l.contains(" lines dropped (disk full) since "),
            "steady: torn line {l:?}"
        );
    }
    assert_eq!(p.app("fast").pid, fast_pid, "fast was restarted");
    assert_eq!(p.app("steady").pid, steady_pid, "steady was restarted");
    assert_eq!(p.app("fast").restarts + p.app("steady").restarts, 0);
    eprintln!(
        "disk full: {} lines dropped (status), {notices} recovery lines, {} whole lines kept, 0 torn",
        p.app("fast").log_lines_dropped,
        lines.len()
    );
    assert!(p.shutdown().success());
}

#[test]
fn per_app_files_directories_and_json_lines() {
    let s = Scratch::new("logpaths");
    let out_dir = s.path().join("out");
    let err_dir = s.path().join("errs");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::create_dir_all(&err_dir).unwrap();
    // Invalid UTF-8, a quote, a backslash, a tab, an escape character, a 100 KB line, and a
    // piece without its newline (written as partial after a second).
    let script = "printf 'plain\\n'; printf 'bad \\377\\376 utf8\\n'; printf 'q\"uote back\\\\slash\\ttab \\033[1m\\n'; \
                  head -c 100000 /dev/zero | tr '\\0' x; echo; echo to-stderr >&2; printf 'no newline'; exec sleep 1000";
    let json = format!(
        "command = [\"/bin/sh\", \"-c\", {}]\n[logs]\nformat = \"json\"\nstdout = \"{}/json.log\"\nstderr = \"{}/\"\n",
        toml_str(script),
        out_dir.display(),
        err_dir.display()
    );
    // Text into a file of its own, rotated within its bound.
    let rot = format!(
        "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 3000 ]; do echo \\\"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\\"; i=$((i+1)); done; exec sleep 1000\"]\n[logs]\nstdout = \"{}/rot.log\"\nmax_size = \"16KiB\"\nkeep = 2\n",
        out_dir.display()
    );
    let p = Paddock::with_apps("logpaths", &[("json", &json), ("rot", &rot)]).start();
    let json_log = out_dir.join("json.log");
    wait_for(Duration::from_secs(10), "the partial line", || {
        std::fs::read_to_string(&json_log).is_ok_and(|t| t.contains("no newline"))
    });
    let text = std::fs::read(&json_log).unwrap();
    let objs: Vec<serde_json::Value> = text
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(l)))
        })
        .collect();
    let lines: Vec<&str> = objs.iter().map(|o| o["line"].as_str().unwrap()).collect();
    for o in &objs {
        assert_eq!(o["app"], "json");
        assert_eq!(o["stream"], "stdout");
        let t = o["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z'), "time {t}");
    }
    assert_eq!(lines[0], "plain");
    assert_eq!(lines[1], "bad \u{fffd}\u{fffd} utf8");
    assert_eq!(lines[2], "q\"uote back\\slash\ttab \u{1b}[1m");
    // The long line: pieces of at most 64 KiB marked partial, then its end.
    let long: String = lines[3..lines.len() - 1].concat();
    assert_eq!(long, "x".repeat(100_000));
    assert_eq!(objs[3]["partial"], true);
    assert!(objs[lines.len() - 2].get("partial").is_none());
    assert_eq!(*lines.last().unwrap(), "no newline");
    assert_eq!(objs.last().unwrap()["partial"], true);
    // stderr into the directory, as NAME.err.
    wait_for(Duration::from_secs(5), "stderr", || {
        std::fs::read_to_string(err_dir.join("json.err")).is_ok_and(|t| t.contains("to-stderr"))
    });
    let e: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(err_dir.join("json.err"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e["stream"], "stderr");
    assert_eq!(e["line"], "to-stderr");
    assert!(
        !p.logs_dir().join("json.out").exists(),
        "nothing in the log dir"
    );
    // tail reads the app's own file, in its format.
    let t = p.cli(&["tail", "-n", "1", "json"]);
    let last: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(last["line"], "no newline");
    let t = p.cli(&["tail", "--stderr", "json"]);
    assert!(String::from_utf8_lossy(&t.stdout).contains("\"to-stderr\""));
    // Rotation of an app's own file stays bounded.
    wait_for(Duration::from_secs(10), "rot's last line", || {
        std::fs::read_to_string(out_dir.join("rot.log")).is_ok_and(|t| t.contains("line 2999 "))
    });
    for n in ["rot.log", "rot.log.1", "rot.log.2"] {
        let len = std::fs::metadata(out_dir.join(n)).unwrap().len();
        assert!(len <= 16 * 1024, "{n}: {len} bytes");
    }
    assert!(!out_dir.join("rot.log.3").exists());
    let t = p.cli(&["tail", "-n", "1", "rot"]);
    assert!(String::from_utf8_lossy(&t.stdout).contains("line 2999 "));
    // `update` moves an app's log to a directory and to JSON: the next run writes there.
    let moved = out_dir.join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    p.write_app(
        "rot",
        &rot.replace(
            &format!("stdout = \"{}/rot.log\"", out_dir.display()),
            &format!("stdout = \"{}/\"\nformat = \"json\"", moved.display()),
        ),
    );
    let u = p.cli(&["update"]);
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    wait_for(
        Duration::from_secs(10),
        "rot's log in its new place",
        || {
            std::fs::read_to_string(moved.join("rot.out"))
                .is_ok_and(|t| t.contains("\"line\":\"line 2999 "))
        },
    );
    // Follow works on an app's own file too, in both formats.
    let mut child = Command::new(BIN)
        .args(["tail", "-f", "-n", "0", "json"])
        .env("PADDOCK_SOCKET", p.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = p.app("json").pid.unwrap();
    // The app's sleep is the shell itself (exec); write into its stdout from outside.
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/1"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"followed\n"))
        .unwrap();
    let mut got = vec![];
    let mut rd = child.stdout.take().unwrap();
    wait_for(Duration::from_secs(5), "the followed line", || {
        let mut b = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(&mut rd, &mut b) {
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&got).contains("\"line\":\"followed\"")
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_log_paths_are_refused_precisely() {
    let s = Scratch::new("logerrs");
    let apps = s.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let d = s.path().display().to_string();
    std::fs::write(s.path().join("plain"), "").unwrap();
    std::fs::create_dir_all(s.path().join("dir")).unwrap();
    let fifo = s.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let cases: Vec<(&str, String, String)> = vec![
        ("rel", "stdout = \"logs/a.log\"".into(), "key `logs.stdout`: \"logs/a.log\" is not \"file\", \"inherit\", or an absolute path (a file, or a directory ending in /): a path must be absolute (e.g. \"/var/log/rel.log\" or \"/var/log/rel/\")".into()),
        ("noparent", format!("stdout = \"{d}/nosuch/a.log\""), format!("key `logs.stdout`: the directory {d}/nosuch does not exist: create it (paddock creates log files, not directories)")),
        ("nodir", format!("stderr = \"{d}/nosuch/\""), format!("key `logs.stderr`: the directory {d}/nosuch does not exist: create it (paddock creates log files, not directories)")),
        ("parentfile", format!("stdout = \"{d}/plain/a.log\""), format!("key `logs.stdout`: {d}/plain (the directory of {d}/plain/a.log) is a regular file, not a directory")),
        ("slashfile", format!("stdout = \"{d}/plain/\""), format!("key `logs.stdout`: {d}/plain is a regular file, not a directory (without the trailing /, the path names a file)")),
        ("fifo", format!("stdout = \"{}\"", fifo.display()), format!("key `logs.stdout`: {} is a FIFO, not a regular file: name a file (paddock appends to it and rotates it) or a directory ending in /", fifo.display())),
        ("devnull", "stdout = \"/dev/null\"".into(), "key `logs.stdout`: /dev/null is a character device, not a regular file".into()),
        ("dotdot", format!("stdout = \"{d}/dir/../a.log\""), format!("key `logs.stdout`: {d}/dir/../a.log contains `..`: write the path without it")),
        ("errinherit", "stderr = \"inherit\"".into(), "key `logs.stderr`: stderr cannot be inherited alone".into()),
        ("inheritboth", format!("stdout = \"inherit\"\nstderr = \"{d}/dir/\""), "key `logs.stderr`: has no effect with `stdout = \"inherit\"`".into()),
        ("combined", format!("combine = true\nstderr = \"{d}/dir/\""), "key `logs.stderr`: has no effect with `combine = true`".into()),
        ("same", format!("stdout = \"{d}/dir/x.log\"\nstderr = \"{d}/dir/x.log\""), format!("key `logs.stderr`: {d}/dir/x.log is stdout's file too: two streams cannot rotate one file; to have both in one file, write `combine = true` and no stderr")),
        ("fmt", "format = \"yaml\"".into(), "key `logs.format`: unknown format \"yaml\": use \"text\" (the default) or \"json\"".into()),
        ("fmtinherit", "stdout = \"inherit\"\nformat = \"json\"".into(), "key `logs.format`: has no effect with `stdout = \"inherit\"`: paddock does not see that output".into()),
        ("shared1", format!("stdout = \"{d}/dir/shared.log\""), String::new()),
        ("shared2", format!("stderr = \"{d}/dir/shared.log\""), format!("key `logs.stderr`: {d}/dir/shared.log is already the stdout log of app \"shared1\"")),
    ];
    for (name, logs, _) in &cases {
        std::fs::write(
            apps.join(format!("{name}.toml")),
            format!("command = [\"/bin/true\"]\n[logs]\n{logs}\n"),
        )
        .unwrap();
    }
    let o = check(&[&apps]);
    assert!(!o.status.success());
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    for (name, _, want) in &cases {
        if want.is_empty() {
            continue;
        }
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}/{name}.toml:", apps.display())))
            .unwrap_or_else(|| panic!("no error for {name}:\n{text}"));
        assert!(line.contains(want), "{name}: {line}\nwanted: {want}");
    }
    let first = format!("{}/shared1.toml:", apps.display());
    assert!(
        !text.lines().any(|l| l.starts_with(&first)),
        "the first owner of a file is fine:\n{text}"
    );
}

/// One store per test process with the busybox and (when installed) nginx bundles.
fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        bundle_store(
            "logfiles",
            &[
                ("/usr/bin/busybox", "busybox"),
                ("/usr/sbin/nginx", "nginx"),
            ],
        )
    })
}

fn out_lines(p: &Paddock, app: &str, ext: &str) -> Vec<String> {
    read_lines(&p.logs_dir().join(format!("{app}.{ext}")))
        .into_iter()
        .map(|l| l.split_once(' ').map_or(l.clone(), |(_, r)| r.to_string()))
        .collect()
}

#[test]
fn dev_stdout_is_writable_by_the_apps_user_at_every_native_level() {
    if skip_sandbox(
        "dev_stdout_is_writable_by_the_apps_user_at_every_native_level",
        "running apps as another user needs root",
    ) {
        return;
    }
    let script = "echo out-$0 > /dev/stdout && echo err-$0 > /dev/stderr && echo ok-$0";
    let sh = |level: &str, user: Option<&str>, sandbox: &str| {
        let tag = format!("{level}{}", if user.is_some() { "" } else { "-root" });
        let (program, bundle) = match level {
            "none" => ("\"/bin/sh\"", String::new()),
            _ => ("\"busybox\", \"sh\"", "bundle = \"busybox\"\n".to_string()),
        };
        format!(
            "isolation = \"{level}\"\n{bundle}{}command = [{program}, \"-c\", {}, \"{tag}\"]\n[restart]\npolicy = \"never\"\n{sandbox}",
            user.map(|u| format!("user = \"{u}\"\n"))
                .unwrap_or_default(),
            toml_str(script),
        )
    };
    let apps = [
        ("none", sh("none", Some("nobody"), "")),
        ("bundle", sh("bundle", Some("nobody"), "")),
        ("sandbox", sh("sandbox", Some("nobody"), "[sandbox]\n")),
        // Root of its own user namespace: a host uid of its range, not root's.
        ("sandboxroot", sh("sandbox", None, "[sandbox]\n")),
        // Without a user namespace, as nobody on the host.
        (
            "sandboxhost",
            sh("sandbox", Some("nobody"), "[sandbox]\nuserns = false\n"),
        ),
    ];
    let refs: Vec<(&str, &str)> = apps.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let p = Paddock::with_apps("devstdout", &refs)
        .start_with(&["--store".as_ref(), store().as_os_str()]);
    for (app, _) in &apps {
        wait_for(Duration::from_secs(20), &format!("{app} to finish"), || {
            ["EXITED", "FATAL"].contains(&p.app(app).state.as_str())
        });
        let tag = match *app {
            "sandboxroot" => "sandbox-root".to_string(),
            "sandboxhost" => "sandbox".to_string(),
            a => a.to_string(),
        };
        // The lines may reach the files just after the exit is seen.
        try_wait(Duration::from_secs(5), || {
            out_lines(&p, app, "out").contains(&format!("ok-{tag}"))
                && out_lines(&p, app, "err").contains(&format!("err-{tag}"))
        });
        let out = out_lines(&p, app, "out");
        let err = out_lines(&p, app, "err");
        assert!(
            out.contains(&format!("out-{tag}")) && out.contains(&format!("ok-{tag}")),
            "{app}: stdout {out:?}, stderr {err:?}, {}",
            p.app(app).message
        );
        assert!(err.contains(&format!("err-{tag}")), "{app}: stderr {err:?}");
        assert_eq!(p.app(app).state, "EXITED", "{app}");
    }
}

#[test]
fn nginx_as_www_data_logs_to_dev_stdout_and_dev_stderr() {
    if !is_root() {
        eprintln!(
            "SKIPPED nginx_as_www_data_logs_to_dev_stdout_and_dev_stderr: running nginx as www-data needs root"
        );
        return;
    }
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!(
            "SKIPPED nginx_as_www_data_logs_to_dev_stdout_and_dev_stderr: needs nginx (apt-get install nginx)"
        );
        return;
    }
    let s = Scratch::new("nginx-www");
    let mut apps = vec![];
    for level in ["none", "bundle"] {
        let d = s.path().join(level);
        std::fs::create_dir_all(d.join("html")).unwrap();
        std::fs::write(d.join("html/index.html"), "hello\n").unwrap();
        let st = Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
        let port = free_port();
        let dd = d.display();
        std::fs::write(
            d.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\npid {dd}/nginx.pid;\nerror_log /dev/stderr notice;\n\
                 events {{ worker_connections 16; }}\n\
                 http {{ access_log /dev/stdout; client_body_temp_path {dd}/body; proxy_temp_path {dd}/proxy; fastcgi_temp_path {dd}/fastcgi; uwsgi_temp_path {dd}/uwsgi; scgi_temp_path {dd}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {dd}/html; }} }}\n"
            ),
        )
        .unwrap();
        let bundle = if level == "bundle" {
            "bundle = \"nginx\"\n"
        } else {
            ""
        };
        apps.push((
            format!("nginx{level}"),
            format!(
                "isolation = \"{level}\"\n{bundle}user = \"www-data\"\ncommand = [\"/usr/sbin/nginx\", \"-e\", \"/dev/stderr\", \"-p\", \"{dd}\", \"-c\", \"{dd}/nginx.conf\"]\n\
                 [readiness]\nhealth = true\n[health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"200ms\"\n"
            ),
            port,
        ));
    }
    let refs: Vec<(&str, &str)> = apps
        .iter()
        .map(|(n, t, _)| (n.as_str(), t.as_str()))
        .collect();
    let p = Paddock::with_apps("nginx-www", &refs)
        .start_with(&["--store".as_ref(), store().as_os_str()]);
    for (app, _, port) in &apps {
        wait_for(Duration::from_secs(20), "READY or FATAL", || {
            ["READY", "FATAL"].contains(&p.app(app).state.as_str())
        });
        assert_eq!(
            p.app(app).state,
            "READY",
            "{app}: {:?} {:?}",
            p.app(app).message,
            out_lines(&p, app, "err")
        );
        for path in ["/", "/nosuch"] {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(("127.0.0.1", *port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .unwrap();
            let mut b = vec![];
            let _ = c.read_to_end(&mut b);
        }
        wait_for(Duration::from_secs(5), "access log lines", || {
            let out = out_lines(&p, app, "out");
            out.iter().any(|l| l.contains("\"GET / HTTP/1.0\" 200"))
                && out
                    .iter()
                    .any(|l| l.contains("\"GET /nosuch HTTP/1.0\" 404"))
        });
        wait_for(Duration::from_secs(5), "the error log line", || {
            out_lines(&p, app, "err")
                .iter()
                .any(|l| l.contains("/nosuch\" failed (2: No such file or directory)"))
        });
        // The master runs as www-data: it opened /dev/stdout and /dev/stderr itself.
        let pid = p.app(app).pid.unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("Uid:\t33\t"), "{app}: {status}");
    }
}
