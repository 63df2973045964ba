//! Bundle figures on this host (run: `cargo bench --bench bundle`):
//! - building a bundle (redis-server, or dash if redis is not installed) into an empty store, and
//!   rebuilding it unchanged; resolving its closure alone;
//! - the check before a start: the first one (hashes every file) and later ones (cached by file
//!   identity: a few `stat` calls);
//! - start-to-exit of a small program run directly and through its bundle's loader;
//! - time until N bundled apps are all READY under one `paddock serve`, against N plain ones.
//!
//! Figures are printed, never asserted. `--quick` uses fewer apps and shorter loops.

use paddock::bundle::launch::{BundleLaunch, LaunchMode};
use paddock::bundle::store::Store;
use paddock::control::api::StatusList;
use paddock::control::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paddock");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn build(store: &Path, recipe: &Path) -> (Duration, String) {
    let t = Instant::now();
    let o = Command::new(BIN)
        .args(["bundle", "build"])
        .arg(recipe)
        .arg("--store")
        .arg(store)
        .output()
        .expect("paddock bundle build");
    let d = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let id = out
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string();
    (d, id)
}

/// Time until every app of a config dir is READY.
fn serve_until_ready(dir: &Path, store: &Path, n: usize) -> Duration {
    let sock = dir.join("sock");
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("apps"))
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("paddock serve");
    let client = Client::new(&sock);
    let d = loop {
        if let Ok((_, l)) = client.json::<StatusList>("GET", "/v1/apps")
            && l.apps.len() == n
            && l.apps.iter().all(|a| a.state == "READY")
        {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(120) {
            panic!("apps not READY after 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: kill(2) takes no pointers; the pid is of the child this bench started and has not
    // waited for yet, so it cannot have been reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    d
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let tmp = std::env::temp_dir().join(format!("paddock-bench-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let store = tmp.join("store");

    // Building.
    let (name, entry) = if Path::new("/usr/bin/redis-server").exists() {
        ("redis-server", "/usr/bin/redis-server")
    } else {
        ("dash", "/usr/bin/dash")
    };
    let recipe = tmp.join(format!("{name}.toml"));
    std::fs::write(&recipe, format!("entry = \"{entry}\"\n")).unwrap();
    let (cold, id) = build(&store, &recipe);
    let (warm, _) = build(&store, &recipe);
    let r = paddock::bundle::recipe::load(&recipe).unwrap_or_else(|e| panic!("{e:?}"));
    let host = paddock::bundle::resolve::Host::system().unwrap();
    let rounds = if quick { 5 } else { 30 };
    let resolve = median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let c = paddock::bundle::resolve::resolve(&r, &host).unwrap();
                std::hint::black_box(c);
                t.elapsed()
            })
            .collect(),
    );
    let b = Store::new(&store).find(&id).unwrap();
    let files = b.manifest.files.len();
    let size = b.manifest.total_size();
    println!(
        "bundle {name}: {files} files, {}",
        paddock::bundle::human_size(size)
    );
    println!(
        "  build into an empty store (whole CLI process):   {}",
        ms(cold)
    );
    println!(
        "  rebuild, unchanged (whole CLI process):          {}",
        ms(warm)
    );
    println!(
        "  closure resolution alone (median):               {}",
        ms(resolve)
    );

    // The check before each start.
    let dir = b.dir.clone();
    let first = median(
        (0..rounds)
            .map(|_| {
                let mut c = paddock::bundle::verify::Cache::default();
                let t = Instant::now();
                c.check(&dir, &id).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    let mut cache = paddock::bundle::verify::Cache::default();
    cache.check(&dir, &id).unwrap();
    let cached = median(
        (0..rounds * 20)
            .map(|_| {
                let t = Instant::now();
                cache.check(&dir, &id).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "  check before a start, first (hashes {files} files): {}",
        ms(first)
    );
    println!(
        "  check before a start, cached (stat only):         {}",
        us(cached)
    );

    // Start-to-exit, direct and through the bundle's loader.
    let ex = tmp.join("ex");
    let have_cc = Command::new("sh")
        .arg(format!("{ROOT}/examples/hello/build.sh"))
        .arg(&ex)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_cc {
        println!("(no C compiler: start and serve figures skipped)");
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    let hrecipe = tmp.join("hello.toml");
    std::fs::write(
        &hrecipe,
        "entry = \"ex/bin/hello\"\nlibs = [\"ex/plugins/libhello-plugin.so.1\"]\n",
    )
    .unwrap();
    let (_, hid) = build(&store, &hrecipe);
    let hb = Store::new(&store).find(&hid).unwrap();
    let launch = BundleLaunch::from_bundle(&hb, "hello", LaunchMode::Loader, "hello").unwrap();
    let plan = launch.exec_plan(&["hello".to_string()], &Default::default(), false);
    let runs = if quick { 50 } else { 300 };
    let time_runs = |mut make: Box<dyn FnMut() -> Command>| {
        median(
            (0..runs)
                .map(|_| {
                    let mut c = make();
                    c.stdout(Stdio::null()).stderr(Stdio::null());
                    let t = Instant::now();
                    let st = c.status().expect("run hello");
                    assert!(st.success());
                    t.elapsed()
                })
                .collect(),
        )
    };
    let direct_path = ex.join("bin/hello");
    let direct = time_runs(Box::new(move || Command::new(&direct_path)));
    let loader = time_runs(Box::new(move || {
        let mut c = Command::new(&plan.path);
        c.args(&plan.argv[1..]);
        c
    }));
    println!("hello (libc + libgreet, dlopen of a plugin), start to exit, median of {runs}:");
    println!("  run directly from the host:             {}", ms(direct));
    println!("  through the bundle's loader:            {}", ms(loader));

    // Many apps under one paddock.
    let n = if quick { 100 } else { 500 };
    let mut figures = vec![];
    for (label, body) in [
        (
            "plain (isolation none)",
            format!(
                "command = [\"{}\", \"--wait\"]\n",
                ex.join("bin/hello").display()
            ),
        ),
        (
            "bundled (isolation bundle)",
            "isolation = \"bundle\"\nbundle = \"hello\"\ncommand = [\"hello\", \"--wait\"]\n"
                .to_string(),
        ),
    ] {
        let d: PathBuf = tmp.join(format!("serve-{}", figures.len()));
        std::fs::create_dir_all(d.join("apps")).unwrap();
        for i in 0..n {
            std::fs::write(d.join("apps").join(format!("h{i}.toml")), &body).unwrap();
        }
        figures.push((label, serve_until_ready(&d, &store, n)));
    }
    println!("{n} apps running hello --wait, exec of `paddock serve` until all are READY:");
    for (label, d) in figures {
        println!("  {label:28} {}", ms(d));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
