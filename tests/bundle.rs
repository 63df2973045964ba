//! Dependency bundles against real programs: precise recipe and app-file errors, byte-identical
//! rebuilds, two builds of one library side by side, dlopen()ed libraries, tampering, the atomic
//! switch on `update`, gc, and bundles of Debian programs (and of paddock itself) running where
//! the host's library directories are hidden.

mod common;
use common::*;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn have_cc() -> bool {
    Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds examples/hello into `out` (bin/hello, lib/libgreet.so.1, plugins/…).
fn build_example(out: &Path, greeting: &str) {
    let st = Command::new("sh")
        .arg(format!("{ROOT}/examples/hello/build.sh"))
        .arg(out)
        .env("GREETING", greeting)
        .status()
        .expect("run examples/hello/build.sh");
    assert!(st.success(), "examples/hello/build.sh failed");
}

fn bundle(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bundle")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run paddock bundle")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Builds a recipe; returns the bundle id.
fn build(store: &Path, recipe: &Path) -> String {
    let o = bundle(store, &["build", recipe.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "build {} failed:\n{out}{err}",
        recipe.display()
    );
    let id = out
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 64, "{out}");
    id
}

fn recipe(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, body).unwrap();
    p
}

fn skip_without_cc(test: &str) -> bool {
    if have_cc() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs a C compiler (apt-get install gcc libc6-dev)");
    true
}

fn serve(tag: &str, apps: &[(&str, &str)], store: &Path) -> Paddock {
    Paddock::with_apps(tag, apps).start_with(&["--store".as_ref(), store.as_os_str()])
}

fn log(p: &Paddock, app: &str) -> Vec<String> {
    read_lines(&p.logs_dir().join(format!("{app}.out")))
}

fn wait_log(p: &Paddock, app: &str, what: &str) -> Vec<String> {
    wait_for(
        Duration::from_secs(10),
        &format!("{app} to log {what}"),
        || log(p, app).iter().any(|l| l.contains(what)),
    );
    log(p, app)
}

/// Flips one byte of a file in place (keeping its mode), as a tamperer or a bad disk would.
fn flip_byte(path: &Path, at: u64) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x55;
    f.write_all_at(&b, at).unwrap();
    drop(f);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn out_of(o: &Output) -> String {
    let (a, b) = text(o);
    a + &b
}

#[test]
fn recipe_errors_are_precise() {
    if skip_without_cc("recipe_errors_are_precise") {
        return;
    }
    let s = Scratch::new("recipe-errors");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "x");
    let fails = |name: &str, body: &str| -> String {
        let r = recipe(s.path(), name, body);
        let o = bundle(&store, &["build", r.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", out_of(&o));
        text(&o).1
    };
    let file = |name: &str| s.path().join(format!("{name}.toml")).display().to_string();

    let e = fails("missing", "entry = \"/nonexistent/bin/prog\"\n");
    assert!(
        e.contains(&format!(
            "{}:1:9: key `entry`: entry /nonexistent/bin/prog: No such file or directory",
            file("missing")
        )),
        "{e}"
    );
    assert!(e.contains("nothing was built"), "{e}");

    let e = fails("notelf", "entry = \"/etc/passwd\"\n");
    assert!(
        e.contains(&format!(
            "{}:1:9: key `entry`: entry /etc/passwd is not an ELF file (it starts with \"root:",
            file("notelf")
        )),
        "{e}"
    );
    std::fs::write(s.path().join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    let e = fails("script", "entry = \"script.sh\"\n");
    assert!(
        e.contains("is a script (#!/bin/sh), not an ELF file"),
        "{e}"
    );
    let e = fails("lib", "entry = \"ex/lib/libgreet.so.1\"\n");
    assert!(e.contains("is a shared library, not a program"), "{e}");

    // An unresolvable DT_NEEDED: the library is named, with the file that needs it and the
    // places searched.
    std::fs::remove_file(ex.join("lib/libgreet.so.1")).unwrap();
    let e = fails(
        "noneeded",
        "# hello without its library\nentry = \"ex/bin/hello\"\n",
    );
    let hello = ex.join("bin/hello").display().to_string();
    assert!(
        e.contains(&format!(
            "{}:2:9: key `entry`: libgreet.so.1, needed by {hello}, was not found; searched RUNPATH {}",
            file("noneeded"),
            ex.join("lib").display()
        )),
        "{e}"
    );
    assert!(e.contains("/etc/ld.so.cache"), "{e}");
    assert!(
        e.contains("/usr/lib/x86_64-linux-gnu") || !cfg!(target_arch = "x86_64"),
        "{e}"
    );
    assert!(e.contains("LD_LIBRARY_PATH is ignored"), "{e}");

    // Several problems at once, each at its own line and key.
    let e = fails(
        "several",
        "entry = \"/bin/sh\"\nlibs = [\"libdoes-not-exist.so.7\"]\ndata = [\"/nonexistent/data\"]\ninclude = [\"/etc\"]\n",
    );
    assert!(
        e.contains(&format!(
            "{}:2:9: key `libs`: libdoes-not-exist.so.7, needed by",
            file("several")
        )),
        "{e}"
    );
    assert!(
        e.contains(":3:9: key `data`: data /nonexistent/data: No such file or directory"),
        "{e}"
    );
    assert!(
        e.contains(":4:12: key `include`: include /etc is a directory; directories go in `data`"),
        "{e}"
    );
    assert!(e.contains("3 errors found"), "{e}");

    let e = fails("typo", "entry = \"/bin/sh\"\nincludes = [\"/bin/ls\"]\n");
    assert!(
        e.contains(&format!(
            "{}:2:1: key `includes`: unknown field `includes`",
            file("typo")
        )),
        "{e}"
    );
    let e = fails("noentry", "include = [\"/bin/ls\"]\n");
    assert!(e.contains(":1:1: key `entry`: missing"), "{e}");
    // Nothing reached the store.
    assert!(
        !store.join("refs").exists() || std::fs::read_dir(store.join("refs")).unwrap().count() == 0
    );
}

#[test]
fn rebuilds_are_byte_identical() {
    if skip_without_cc("rebuilds_are_byte_identical") {
        return;
    }
    let s = Scratch::new("rebuild");
    let ex = s.path().join("ex");
    build_example(&ex, "same");
    let r = recipe(
        s.path(),
        "hello",
        "entry = \"ex/bin/hello\"\nlibs = [\"ex/plugins/libhello-plugin.so.1\"]\ndata = [\"ex/lib\"]\n",
    );
    let (a, b) = (s.path().join("a"), s.path().join("b"));
    let id1 = build(&a, &r);
    let o = bundle(&a, &["build", r.to_str().unwrap()]);
    assert!(
        out_of(&o).starts_with(&format!("unchanged hello {id1}")),
        "{}",
        out_of(&o)
    );
    let id2 = build(&b, &r);
    assert_eq!(id1, id2, "another store, same recipe: same id");
    let m1 = std::fs::read(a.join(&id1).join("manifest.toml")).unwrap();
    let m2 = std::fs::read(b.join(&id2).join("manifest.toml")).unwrap();
    assert_eq!(m1, m2, "manifests must be byte-identical");
    assert_eq!(
        paddock::bundle::sha256_bytes(&m1),
        id1,
        "id = sha256(manifest)"
    );
    let m = String::from_utf8(m1).unwrap();
    assert!(
        !m.contains(a.to_str().unwrap()),
        "no store path in the manifest"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("refs/hello")).unwrap(),
        format!("{id1}\n")
    );
    let o = bundle(&a, &["verify", "hello"]);
    assert!(o.status.success(), "{}", out_of(&o));
    assert!(text(&o).0.starts_with("ok: bundle hello"), "{}", out_of(&o));
    // A changed input is a new id.
    build_example(&ex, "different");
    assert_ne!(build(&a, &r), id1);
}

#[test]
fn two_builds_of_one_library_run_side_by_side() {
    if skip_without_cc("two_builds_of_one_library_run_side_by_side") {
        return;
    }
    let s = Scratch::new("side");
    let store = s.path().join("store");
    // The same path on the host, built twice: a library "upgrade" between two bundles.
    let ex = s.path().join("app");
    build_example(&ex, "greetings from build one");
    let id1 = build(
        &store,
        &recipe(
            s.path(),
            "greet-one",
            "entry = \"app/bin/hello\"\nlibs = [\"app/plugins/libhello-plugin.so.1\"]\n",
        ),
    );
    build_example(&ex, "greetings from build two");
    let id2 = build(
        &store,
        &recipe(
            s.path(),
            "greet-two",
            "entry = \"app/bin/hello\"\nlibs = [\"app/plugins/libhello-plugin.so.1\"]\n",
        ),
    );
    assert_ne!(id1, id2);
    // The host's copies are gone: the bundles must not need them.
    std::fs::remove_dir_all(&ex).unwrap();
    let by_path = format!(
        "isolation = \"bundle\"\nbundle = \"{}\"\nlaunch = \"ld_library_path\"\ncommand = [\"hello\", \"--wait\"]\n",
        store.join(&id1).display()
    );
    let p = serve(
        "side",
        &[
            (
                "one",
                "isolation = \"bundle\"\nbundle = \"greet-one\"\ncommand = [\"hello\", \"--wait\"]\n",
            ),
            (
                "two",
                &format!(
                    "isolation = \"bundle\"\nbundle = \"{}\"\ncommand = [\"hello\", \"--wait\"]\n",
                    &id2[..12]
                ),
            ),
            ("lib_path", &by_path),
        ],
        &store,
    );
    for a in ["one", "two", "lib_path"] {
        p.wait_state(a, "READY", Duration::from_secs(10));
    }
    let one = wait_log(&p, "one", "plugin=");
    let two = wait_log(&p, "two", "plugin=");
    assert!(
        one.iter()
            .any(|l| l.ends_with("greet=greetings from build one")),
        "{one:?}"
    );
    assert!(
        two.iter()
            .any(|l| l.ends_with("greet=greetings from build two")),
        "{two:?}"
    );
    // The loader gets --library-path: nothing leaks into the environment.
    assert!(
        one.iter().any(|l| l.ends_with("LD_LIBRARY_PATH=(unset)")),
        "{one:?}"
    );
    assert!(one.iter().any(|l| l.ends_with("argv0=hello")), "{one:?}");
    assert!(
        one.iter().any(|l| l.ends_with("plugin=hello-plugin 1.0")),
        "{one:?}"
    );
    // launch = "ld_library_path": the program itself, with the bundle's directories.
    let lp = wait_log(&p, "lib_path", "plugin=");
    assert!(
        lp.iter()
            .any(|l| l.ends_with("greet=greetings from build one")),
        "{lp:?}"
    );
    assert!(
        lp.iter().any(|l| l.contains(&format!(
            "LD_LIBRARY_PATH={}",
            store.join(&id1).join("root").display()
        ))),
        "{lp:?}"
    );
    // Both run at once, each with its own libgreet from its own bundle.
    let st = p.status();
    let pid = |n: &str| st.iter().find(|a| a.name == n).and_then(|a| a.pid).unwrap();
    for (app, id) in [("one", &id1), ("two", &id2)] {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", pid(app))).unwrap();
        let greet: Vec<&str> = maps
            .lines()
            .filter(|l| l.contains("libgreet.so.1"))
            .collect();
        assert!(!greet.is_empty(), "{maps}");
        assert!(
            greet.iter().all(|l| l.contains(id.as_str())),
            "{app}: {greet:?}"
        );
        let exe = std::fs::read_link(format!("/proc/{}/exe", pid(app))).unwrap();
        assert!(
            exe.starts_with(store.join(id).join("root")) && exe.to_string_lossy().contains("/ld-"),
            "launched through the bundle's own loader: {}",
            exe.display()
        );
    }
    let st = p.cli(&["status", "one", "--json"]);
    assert!(String::from_utf8_lossy(&st.stdout).contains("\"isolation\": \"bundle\""));
}

#[test]
fn dlopened_library_is_found_only_when_listed_in_libs() {
    if skip_without_cc("dlopened_library_is_found_only_when_listed_in_libs") {
        return;
    }
    let s = Scratch::new("dlopen");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "x");
    build(
        &store,
        &recipe(
            s.path(),
            "with",
            "entry = \"ex/bin/hello\"\nlibs = [\"ex/plugins/libhello-plugin.so.1\"]\n",
        ),
    );
    build(
        &store,
        &recipe(s.path(), "without", "entry = \"ex/bin/hello\"\n"),
    );
    let o = bundle(&store, &["inspect", "with"]);
    let (out, _) = text(&o);
    assert!(out.contains("libhello-plugin.so.1 => "), "{out}");
    assert!(
        out.contains("/plugins/libhello-plugin.so.1 (libs)"),
        "{out}"
    );
    assert!(
        out.contains("libgreet.so.1 => ") && out.contains("/lib/libgreet.so.1 (RUNPATH)"),
        "{out}"
    );
    std::fs::remove_dir_all(&ex).unwrap();
    let app = |b: &str| {
        format!(
            "isolation = \"bundle\"\nbundle = \"{b}\"\ncommand = [\"hello\"]\n[restart]\npolicy = \"never\"\n"
        )
    };
    // A health probe of a bundled app is a host program, not the bundle's.
    let marker = s.path().join("probed");
    let probed = format!(
        "isolation = \"bundle\"\nbundle = \"with\"\ncommand = [\"hello\", \"--wait\"]\n[readiness]\nhealth = true\n[health]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo ok > {}\"]\ninterval = \"100ms\"\n",
        marker.display()
    );
    let p = serve(
        "dlopen",
        &[
            ("with", &app("with")),
            ("without", &app("without")),
            ("probed", &probed),
        ],
        &store,
    );
    p.wait_state("probed", "READY", Duration::from_secs(10));
    assert!(marker.exists(), "the probe ran /bin/sh from the host");
    let with = wait_log(&p, "with", "plugin=");
    let without = wait_log(&p, "without", "plugin=");
    assert!(
        with.iter().any(|l| l.ends_with("plugin=hello-plugin 1.0")),
        "{with:?}"
    );
    assert!(
        without.iter().any(
            |l| l.contains("plugin=none (libhello-plugin.so.1: cannot open shared object file")
        ),
        "{without:?}"
    );
}

#[test]
fn tampered_bundle_refuses_the_start_and_names_the_file() {
    if skip_without_cc("tampered_bundle_refuses_the_start_and_names_the_file") {
        return;
    }
    let s = Scratch::new("tamper");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "x");
    let r = recipe(s.path(), "hello", "entry = \"ex/bin/hello\"\n");
    let id = build(&store, &r);
    let lib = ex.join("lib/libgreet.so.1").display().to_string();
    let in_tree = store
        .join(&id)
        .join("root")
        .join(lib.trim_start_matches('/'));
    let p = serve(
        "tamper",
        &[(
            "a",
            "isolation = \"bundle\"\nbundle = \"hello\"\ncommand = [\"hello\", \"--wait\"]\n[restart]\npolicy = \"always\"\nmax_failures = 0\nbackoff_initial = \"0s\"\n",
        )],
        &store,
    );
    p.wait_state("a", "READY", Duration::from_secs(10));
    wait_log(&p, "a", "plugin=");

    // One byte of the bundled library, with its modification time put back: the ctime still
    // tells the cache that the file changed.
    let before = std::fs::metadata(&in_tree).unwrap().modified().unwrap();
    flip_byte(&in_tree, 200);
    std::fs::File::options()
        .write(true)
        .open(&in_tree)
        .map(|f| f.set_modified(before))
        .ok();
    let o = p.cli(&["restart", "a"]);
    assert_eq!(o.status.code(), Some(1), "{}", out_of(&o));
    let msg = out_of(&o);
    assert!(
        msg.contains(&format!("{lib} (")) && msg.contains("was modified"),
        "{msg}"
    );
    let st = p.wait_state("a", "FATAL", Duration::from_secs(5));
    assert!(
        st.message.contains("not retried") && st.message.contains("libgreet.so.1"),
        "{st:?}"
    );
    // No retry storm, although the policy would restart at once forever.
    std::thread::sleep(Duration::from_millis(500));
    let st = p.app("a");
    assert_eq!(st.state, "FATAL");
    assert_eq!(st.restarts, 0, "{st:?}");
    assert_eq!(st.failures, 1, "{st:?}");
    assert_eq!(
        log(&p, "a").iter().filter(|l| l.contains("greet=")).count(),
        1,
        "started once, before the tampering"
    );
    let o = bundle(&store, &["verify", "hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains(&format!("{lib} (")), "{}", out_of(&o));

    // Rebuilding the same recipe repairs the bundle (same id); an operator start then works.
    build_example(&ex, "x");
    assert_eq!(build(&store, &r), id);
    let o = p.cli(&["start", "a"]);
    assert!(o.status.success(), "{}", out_of(&o));

    // A missing file, and a file slipped into the tree, are refused the same way.
    std::fs::rename(&in_tree, s.path().join("away")).unwrap();
    let o = p.cli(&["restart", "a"]);
    assert!(
        out_of(&o).contains("libgreet.so.1") && out_of(&o).contains("is missing"),
        "{}",
        out_of(&o)
    );
    std::fs::rename(s.path().join("away"), &in_tree).unwrap();
    let o = p.cli(&["start", "a"]);
    assert!(o.status.success(), "{}", out_of(&o));
    let extra = store.join(&id).join("root/lib/x86_64-linux-gnu/libz.so.1");
    std::fs::write(&extra, "not a library").unwrap();
    let o = p.cli(&["restart", "a"]);
    assert!(
        out_of(&o).contains("/lib/x86_64-linux-gnu/libz.so.1")
            && out_of(&o).contains("not in the manifest"),
        "{}",
        out_of(&o)
    );
    p.wait_state("a", "FATAL", Duration::from_secs(5));
}

#[test]
fn update_switches_to_a_new_bundle_without_a_gap() {
    if !Path::new("/usr/bin/dash").exists() {
        eprintln!("SKIPPED update_switches_to_a_new_bundle_without_a_gap: needs /usr/bin/dash");
        return;
    }
    let s = Scratch::new("switch");
    let store = s.path().join("store");
    let logf = s.path().join("events");
    let pidf = s.path().join("pid");
    let version = |n: u32| -> String {
        let dir = s.path().join(format!("v{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), format!("{n}\n")).unwrap();
        build(
            &store,
            &recipe(
                &dir,
                "sw",
                "entry = \"/usr/bin/dash\"\ndata = [\"VERSION\"]\n",
            ),
        )
    };
    let id1 = version(1);
    // Each instance notes whether the previous one is still alive when it starts, and takes a
    // second to exit after SIGTERM. A stop-then-start restart would never see an overlap.
    let script = format!(
        "echo start $PADDOCK_BUNDLE_ID >> {log}; \
         for p in $(cat {pid} 2>/dev/null); do kill -0 $p 2>/dev/null && echo overlap $p >> {log}; done; \
         echo $$ > {pid}; trap 'sleep 1; echo stopped $$ >> {log}; exit 0' TERM; \
         while :; do sleep 0.05; done",
        log = logf.display(),
        pid = pidf.display()
    );
    let app = format!(
        "isolation = \"bundle\"\nbundle = \"sw\"\ncommand = [\"dash\", \"-c\", {script:?}]\nstop_timeout = \"10s\"\n"
    );
    let p = serve("switch", &[("sw", &app)], &store);
    let first = p
        .wait_state("sw", "READY", Duration::from_secs(10))
        .pid
        .unwrap();
    wait_for(Duration::from_secs(5), "pid file", || pidf.exists());

    let id2 = version(2);
    assert_ne!(id1, id2);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    wait_for(Duration::from_secs(10), "the old instance to stop", || {
        read_lines(&logf).iter().any(|l| l.starts_with("stopped"))
    });
    let ev = read_lines(&logf);
    assert_eq!(ev[0], format!("start {id1}"), "{ev:?}");
    assert_eq!(ev[1], format!("start {id2}"), "{ev:?}");
    assert_eq!(
        ev[2],
        format!("overlap {first}"),
        "the new instance ran before the old one stopped: {ev:?}"
    );
    assert_eq!(ev[3], format!("stopped {first}"), "{ev:?}");
    let st = p.wait_state("sw", "READY", Duration::from_secs(5));
    assert_ne!(st.pid, Some(first));
    assert!(!alive(first));
    assert_eq!(p.status().len(), 1);
    let second = st.pid.unwrap();

    // A new bundle that cannot start: the running instance stays, the failure is reported.
    let id3 = version(3);
    let version_file = store.join(&id3).join("root").join(
        s.path()
            .join("v3/VERSION")
            .to_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    flip_byte(&version_file, 0);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    let st = p.app("sw");
    assert_eq!(
        (st.state.as_str(), st.pid),
        ("READY", Some(second)),
        "{st:?}"
    );
    assert!(
        st.message
            .contains(&format!("update to bundle {} failed", &id3[..12])),
        "{st:?}"
    );
    assert!(st.message.contains("was modified"), "{st:?}");
    assert!(alive(second));
    // Repaired and updated again: the switch happens.
    assert_eq!(version(3), id3);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    wait_for(Duration::from_secs(10), "the switch to v3", || {
        read_lines(&logf)
            .iter()
            .any(|l| *l == format!("start {id3}"))
            && p.app("sw").pid.is_some_and(|x| x != second)
    });
    assert_eq!(p.shutdown().code(), Some(0));
}

/// With a readiness condition, the old instance is stopped only once the new one is READY.
#[test]
fn bundle_switch_waits_until_the_new_instance_is_ready() {
    if !Path::new("/usr/bin/dash").exists() {
        eprintln!(
            "SKIPPED bundle_switch_waits_until_the_new_instance_is_ready: needs /usr/bin/dash"
        );
        return;
    }
    let s = Scratch::new("switch-ready");
    let store = s.path().join("store");
    let logf = s.path().join("events");
    let version = |n: u32| -> String {
        let dir = s.path().join(format!("v{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), format!("{n}\n")).unwrap();
        build(
            &store,
            &recipe(
                &dir,
                "sw",
                "entry = \"/usr/bin/dash\"\ndata = [\"VERSION\"]\n",
            ),
        )
    };
    let id1 = version(1);
    // Ready half a second after the start (a newline on descriptor 3); quick to stop.
    let script = format!(
        "echo start $PADDOCK_BUNDLE_ID >> {log}; sleep 0.5; echo ready $PADDOCK_BUNDLE_ID >> {log}; echo >&3; \
         trap 'echo stopped $PADDOCK_BUNDLE_ID >> {log}; exit 0' TERM; while :; do sleep 0.05; done",
        log = logf.display()
    );
    let app = format!(
        "isolation = \"bundle\"\nbundle = \"sw\"\ncommand = [\"dash\", \"-c\", {script:?}]\n[readiness]\nnotify_fd = 3\n"
    );
    let p = serve("switch-ready", &[("sw", &app)], &store);
    p.wait_state("sw", "READY", Duration::from_secs(10));
    let id2 = version(2);
    let o = p.cli(&["update"]);
    assert!(o.status.success(), "{}", out_of(&o));
    // During the switch the app stays READY on the old instance.
    let st = p.app("sw");
    assert_eq!(st.state, "READY");
    assert!(
        st.message
            .contains(&format!("switching to bundle {}", &id2[..12])),
        "{st:?}"
    );
    wait_for(Duration::from_secs(10), "the old instance to stop", || {
        read_lines(&logf).iter().any(|l| l.starts_with("stopped"))
    });
    let ev = read_lines(&logf);
    assert_eq!(
        ev,
        vec![
            format!("start {id1}"),
            format!("ready {id1}"),
            format!("start {id2}"),
            format!("ready {id2}"),
            format!("stopped {id1}"),
        ]
    );
    assert_eq!(
        p.wait_state("sw", "READY", Duration::from_secs(5)).message,
        ""
    );
}

#[test]
fn app_files_with_bundle_errors_are_refused_precisely() {
    if skip_without_cc("app_files_with_bundle_errors_are_refused_precisely") {
        return;
    }
    let s = Scratch::new("appkeys");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "x");
    let id = build(
        &store,
        &recipe(s.path(), "hello", "entry = \"ex/bin/hello\"\n"),
    );
    let apps = s.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let put = |n: &str, t: &str| std::fs::write(apps.join(format!("{n}.toml")), t).unwrap();
    put("a", "isolation = \"bundle\"\ncommand = [\"hello\"]\n");
    put(
        "b",
        "isolation = \"bundle\"\nbundle = \"nosuch\"\ncommand = [\"hello\"]\n",
    );
    put(
        "c",
        "isolation = \"bundle\"\nbundle = \"hello\"\ncommand = [\"nginx\"]\n",
    );
    put(
        "d",
        "isolation = \"bundle\"\nbundle = \"hello\"\nlaunch = \"magic\"\ncommand = [\"hello\"]\n",
    );
    put("e", "bundle = \"hello\"\ncommand = [\"/bin/true\"]\n");
    put(
        "f",
        "isolation = \"bundle\"\nbundle = \"store/x\"\ncommand = [\"hello\"]\n",
    );
    put(
        "ok",
        &format!(
            "isolation = \"bundle\"\nbundle = \"{id}\"\ncommand = [\"{}\"]\n",
            ex.join("bin/hello").display()
        ),
    );
    let check = || {
        Command::new(BIN)
            .arg("check")
            .arg(&apps)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap()
    };
    let o = check();
    let e = text(&o).1;
    let f = |n: &str| apps.join(format!("{n}.toml")).display().to_string();
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("{}:1:1: key `bundle`: missing", f("a"))),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:2:10: key `bundle`: no bundle \"nosuch\" in",
            f("b")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}:3:11: key `command`: bundle hello (", f("c")))
            && e.contains("\"nginx\" is not a program of the bundle"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:3:10: key `launch`: unknown launch mode \"magic\"",
            f("d")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:1:10: key `bundle`: is only used with isolation = \"bundle\"",
            f("e")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}:2:10: key `bundle`: \"store/x\" is a relative path",
            f("f")
        )),
        "{e}"
    );
    assert!(e.contains("6 errors found"), "{e}");
    assert!(!e.contains("ok.toml"), "{e}");

    // A manifest edited after the build no longer matches its id.
    for n in ["a", "b", "c", "d", "e", "f"] {
        std::fs::remove_file(apps.join(format!("{n}.toml"))).unwrap();
    }
    put(
        "n",
        "isolation = \"bundle\"\nbundle = \"hello\"\ncommand = [\"hello\"]\n",
    );
    assert!(check().status.success(), "{}", out_of(&check()));
    let mf = store.join(&id).join("manifest.toml");
    std::fs::set_permissions(&mf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = std::fs::read_to_string(&mf).unwrap();
    std::fs::write(&mf, m.replacen("mode = \"0555\"", "mode = \"0755\"", 1)).unwrap();
    let e = text(&check()).1;
    assert!(
        e.contains("key `bundle`")
            && e.contains("the manifest was changed after the bundle was built"),
        "{e}"
    );
}

#[test]
fn gc_removes_only_unused_bundles() {
    if skip_without_cc("gc_removes_only_unused_bundles") {
        return;
    }
    let s = Scratch::new("gc");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "one");
    let used = build(
        &store,
        &recipe(s.path(), "used", "entry = \"ex/bin/hello\"\n"),
    );
    build_example(&ex, "two");
    let old = build(
        &store,
        &recipe(s.path(), "unused", "entry = \"ex/bin/hello\"\n"),
    );
    build_example(&ex, "three");
    let newer = build(
        &store,
        &recipe(s.path(), "unused", "entry = \"ex/bin/hello\"\n"),
    );
    let apps = s.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("a.toml"),
        "isolation = \"bundle\"\nbundle = \"used\"\ncommand = [\"hello\"]\n",
    )
    .unwrap();
    let ls = text(&bundle(&store, &["ls"])).0;
    assert_eq!(ls.lines().count(), 4, "{ls}");
    assert!(ls.contains(&used[..12]) && ls.contains(&old[..12]), "{ls}");

    let o = bundle(
        &store,
        &["gc", "--config", apps.to_str().unwrap(), "--dry-run"],
    );
    let out = text(&o).0;
    assert!(out.contains(&format!("would remove unused {old}")), "{out}");
    assert!(store.join(&old).exists(), "dry run removes nothing");
    let o = bundle(&store, &["gc", "--config", apps.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out_of(&o));
    let out = text(&o).0;
    assert!(
        out.contains(&format!("removed unused {old}"))
            && out.contains(&format!("removed unused {newer}")),
        "{out}"
    );
    assert!(out.contains("removed ref unused"), "{out}");
    assert!(!store.join(&old).exists() && !store.join(&newer).exists());
    assert!(!store.join("refs/unused").exists());
    assert!(store.join(&used).exists());
    // What remains is intact: objects shared with removed bundles (libc, the loader) stayed.
    let o = bundle(&store, &["verify", "used"]);
    assert!(o.status.success(), "{}", out_of(&o));
    let objects: usize = std::fs::read_dir(store.join("objects"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum();
    assert_eq!(
        objects, 4,
        "hello, libgreet, libc, ld.so of the kept bundle"
    );
    // App files with errors: nothing is removed.
    std::fs::write(apps.join("b.toml"), "command = [").unwrap();
    let o = bundle(&store, &["gc", "--config", apps.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("nothing was removed"), "{}", out_of(&o));
}

/// Mount an empty read-only tmpfs over the host's library directories, in a new mount namespace
/// of the child only.
fn hide_host_libraries(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let dirs: Vec<std::ffi::CString> = [
        "/usr/lib",
        "/lib",
        "/lib64",
        "/usr/lib64",
        "/usr/lib32",
        "/usr/libx32",
        "/usr/local/lib",
    ]
    .iter()
    .map(|d| std::ffi::CString::new(*d).unwrap())
    .collect();
    // SAFETY: the closure runs in the forked child before exec: only unshare, mount and access
    // (async-signal-safe) with C-string literals and the CStrings of `dirs`, allocated before the
    // fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for d in &dirs {
                if libc::access(d.as_ptr(), libc::F_OK) == 0
                    && libc::mount(
                        c"tmpfs".as_ptr(),
                        d.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                        c"size=16k,mode=755".as_ptr().cast(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn talk(port: u16, req: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(req);
            let mut buf = vec![0u8; 4096];
            let mut got = vec![];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if req.starts_with(b"PING") {
                    break;
                }
            }
            last = String::from_utf8_lossy(&got).into_owned();
            if !last.is_empty() {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

/// The proof that a bundle needs nothing from the host's libraries: paddock itself (bundled) and
/// real Debian programs (bundled) run in a mount namespace where /usr/lib, /lib, /lib64 are
/// empty.
#[test]
fn bundles_run_with_the_hosts_libraries_hidden() {
    let name = "bundles_run_with_the_hosts_libraries_hidden";
    if !is_root() {
        eprintln!("SKIPPED {name}: needs root (mount namespace)");
        return;
    }
    for p in [
        "/usr/bin/redis-server",
        "/usr/sbin/nginx",
        "/usr/bin/busybox",
    ] {
        if !Path::new(p).exists() {
            eprintln!("SKIPPED {name}: needs {p} (apt-get install redis-server nginx busybox)");
            return;
        }
    }
    if skip_without_cc(name) {
        return;
    }
    let s = Scratch::new("hidden");
    let store = s.path().join("store");
    let ex = s.path().join("ex");
    build_example(&ex, "from the bundle");
    for (n, body) in [
        ("paddock-self", format!("entry = \"{BIN}\"\n")),
        (
            "redis-server",
            std::fs::read_to_string(format!("{ROOT}/bundles/redis-server.toml")).unwrap(),
        ),
        (
            "nginx",
            std::fs::read_to_string(format!("{ROOT}/bundles/nginx.toml")).unwrap(),
        ),
        (
            "busybox",
            std::fs::read_to_string(format!("{ROOT}/bundles/busybox.toml")).unwrap(),
        ),
        (
            "hello",
            "entry = \"ex/bin/hello\"\nlibs = [\"ex/plugins/libhello-plugin.so.1\"]\n".into(),
        ),
    ] {
        build(&store, &recipe(s.path(), n, &body));
    }
    let www = s.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served from a bundle\n").unwrap();
    let (rport, nport, bport) = (free_port(), free_port(), free_port());
    let conf_file = s.path().join("nginx.conf");
    let d = s.path().display();
    std::fs::write(
        &conf_file,
        nginx_conf(
            &d.to_string(),
            None,
            &format!("listen 127.0.0.1:{nport}; root {};", www.display()),
        ),
    )
    .unwrap();
    let apps = s.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let app = |n: &str, t: String| std::fs::write(apps.join(format!("{n}.toml")), t).unwrap();
    app(
        "redis",
        format!(
            "isolation = \"bundle\"\nbundle = \"redis-server\"\ncommand = [\"redis-server\", \"--bind\", \"127.0.0.1\", \"--port\", \"{rport}\", \"--save\", \"\", \"--appendonly\", \"no\"]\n"
        ),
    );
    app(
        "nginx",
        format!(
            "isolation = \"bundle\"\nbundle = \"nginx\"\ncommand = [\"/usr/sbin/nginx\", \"-e\", \"stderr\", \"-p\", \"{d}\", \"-c\", \"{}\"]\n",
            conf_file.display()
        ),
    );
    app(
        "busybox",
        format!(
            "isolation = \"bundle\"\nbundle = \"busybox\"\ncommand = [\"busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{bport}\", \"-h\", \"{}\"]\n",
            www.display()
        ),
    );
    app(
        "hello",
        "isolation = \"bundle\"\nbundle = \"hello\"\ncommand = [\"hello\", \"--wait\"]\n".into(),
    );

    // paddock itself, from its bundle, through the bundle's loader, in the namespace.
    let b = paddock::bundle::store::Store::new(&store)
        .find("paddock-self")
        .unwrap();
    let launch = paddock::bundle::launch::BundleLaunch::from_bundle(
        &b,
        "paddock-self",
        paddock::bundle::launch::LaunchMode::Loader,
        "paddock",
    )
    .unwrap();
    let sock = s.path().join("paddock.sock");
    let state = s.path().join("state");
    let argv: Vec<String> = [
        "paddock",
        "serve",
        "--config",
        apps.to_str().unwrap(),
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let plan = launch.exec_plan(&argv, &Default::default(), false);
    let mut cmd = Command::new(&plan.path);
    {
        use std::os::unix::process::CommandExt;
        cmd.arg0(&plan.argv[0]);
    }
    cmd.args(&plan.argv[1..])
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(s.path().join("paddock.err")).unwrap());
    hide_host_libraries(&mut cmd);
    let mut child = cmd
        .spawn()
        .expect("start the bundled paddock in a namespace");
    let client = paddock::control::client::Client::new(&sock);
    let serving = try_wait(Duration::from_secs(20), || {
        client.request("GET", "/v1/version", None).is_ok()
    });
    let errlog = || std::fs::read_to_string(s.path().join("paddock.err")).unwrap_or_default();
    if !serving {
        let _ = child.kill();
        panic!("bundled paddock did not serve:\n{}", errlog());
    }
    let status = || {
        client
            .json::<paddock::control::api::StatusList>("GET", "/v1/apps")
            .unwrap()
            .1
            .apps
    };
    let all_running = try_wait(Duration::from_secs(20), || {
        status().iter().all(|a| a.state == "READY")
    });
    let st = status();
    assert!(all_running, "{st:?}\n{}", errlog());

    // The host's libraries really are hidden for paddock and its apps.
    let pd = child.id();
    for dir in ["usr/lib", "lib64"] {
        let n = std::fs::read_dir(format!("/proc/{pd}/root/{dir}"))
            .unwrap()
            .count();
        assert_eq!(n, 0, "/{dir} must be empty in the namespace");
    }
    assert!(
        std::fs::read_dir("/usr/lib").unwrap().count() > 0,
        "but not outside it"
    );
    // They work (so they have finished loading).
    let pong = talk(rport, b"PING\r\n");
    assert!(pong.starts_with("+PONG"), "redis: {pong:?}");
    let page = talk(nport, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("served from a bundle"),
        "nginx: {page:?}"
    );
    let page = talk(bport, b"GET /index.html HTTP/1.0\r\n\r\n");
    assert!(
        page.contains("200") && page.contains("served from a bundle"),
        "busybox: {page:?}"
    );
    wait_for(Duration::from_secs(10), "hello's output", || {
        read_lines(&state.join("logs/hello.out"))
            .iter()
            .any(|l| l.contains("plugin="))
    });
    let hello = read_lines(&state.join("logs/hello.out"));
    assert!(
        hello.iter().any(|l| l.ends_with("greet=from the bundle")),
        "{hello:?}"
    );
    assert!(
        hello.iter().any(|l| l.ends_with("plugin=hello-plugin 1.0")),
        "{hello:?}"
    );

    // Every shared object mapped by paddock and by its apps comes from the store.
    let st = status();
    let store_c = std::fs::canonicalize(&store).unwrap();
    let mut pids = vec![pd as i32];
    pids.extend(st.iter().filter_map(|a| a.pid));
    for pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let objs: Vec<&str> = maps
            .lines()
            .filter_map(|l| l.find('/').map(|i| &l[i..]))
            .filter(|p| p.contains(".so"))
            .collect();
        assert!(
            !objs.is_empty(),
            "pid {pid} ({:?}): {maps}",
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        );
        for o in objs {
            assert!(
                o.starts_with(store_c.to_str().unwrap()),
                "pid {pid} maps {o} from outside the store"
            );
        }
    }
    // SAFETY: kill(2) takes no pointers; the pid is of the child this test started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(pd as i32, libc::SIGTERM) };
    let code = wait_child(&mut child, Duration::from_secs(30));
    assert_eq!(code.code(), Some(0), "{}", errlog());
}
