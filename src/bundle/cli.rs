//! `paddock bundle build|ls|inspect|verify|gc`.

use super::manifest::Bundle;
use super::store::{BuildError, Store};
use super::{human_size, short};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum BundleCmd {
    /// Build bundles from recipes (bundles/NAME.toml) into the store; prints the id.
    Build {
        #[arg(required = true)]
        recipes: Vec<PathBuf>,
    },
    /// List the bundles in the store.
    Ls,
    /// Show a bundle's files and which library satisfied which DT_NEEDED.
    Inspect {
        /// A name (refs/NAME), an id or id prefix, or a bundle directory.
        bundle: String,
    },
    /// Re-hash every file of bundles and compare with their manifests.
    Verify {
        #[arg(required = true)]
        bundles: Vec<String>,
    },
    /// Remove the bundles that no app file uses and no running process has open.
    Gc {
        /// The app directories whose bundles are kept (as for `serve`); may be repeated.
        #[arg(long = "config", default_value = "/etc/paddock/apps")]
        config: Vec<PathBuf>,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The bundle ids the app files of some config directories use, or their errors (given by the
/// caller, which loads app files: the bundle code does not parse them).
pub type AppBundles = dyn Fn(&[PathBuf]) -> Result<BTreeSet<String>, Vec<String>>;

pub fn run(store: &Path, cmd: BundleCmd, apps: &AppBundles) -> ExitCode {
    let st = Store::new(store);
    match cmd {
        BundleCmd::Build { recipes } => build(&st, &recipes),
        BundleCmd::Ls => ls(&st),
        BundleCmd::Inspect { bundle } => match st.find(&bundle) {
            Ok(b) => {
                print!("{}", inspect(&b));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        BundleCmd::Verify { bundles } => {
            let mut ok = true;
            for r in bundles {
                match st.find(&r) {
                    Err(e) => {
                        eprintln!("paddock: {e}");
                        ok = false;
                    }
                    Ok(b) => {
                        let rep = super::verify::full(&b);
                        if rep.problems.is_empty() {
                            println!(
                                "ok: bundle {} ({}): {} files ({}), {} symlinks, {} directories verified",
                                b.manifest.name,
                                short(&b.id),
                                rep.files,
                                human_size(rep.bytes),
                                rep.links,
                                rep.dirs
                            );
                        } else {
                            ok = false;
                            for p in &rep.problems {
                                eprintln!("bundle {} ({}): {p}", b.manifest.name, short(&b.id));
                            }
                            eprintln!(
                                "bundle {} ({}): {} problem{} found",
                                b.manifest.name,
                                short(&b.id),
                                rep.problems.len(),
                                if rep.problems.len() == 1 { "" } else { "s" }
                            );
                        }
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        BundleCmd::Gc { config, dry_run } => gc(&st, &config, dry_run, apps),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("paddock: {msg}");
    ExitCode::from(1)
}

fn build(st: &Store, recipes: &[PathBuf]) -> ExitCode {
    let host = match super::resolve::Host::system() {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let mut ok = true;
    for path in recipes {
        let recipe = match super::recipe::load(path) {
            Ok(r) => r,
            Err(errs) => {
                for e in &errs {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{}: {} error{} found; nothing was built",
                    path.display(),
                    errs.len(),
                    if errs.len() == 1 { "" } else { "s" }
                );
                ok = false;
                continue;
            }
        };
        match st.build(&recipe, &host) {
            Ok(b) => {
                for w in &b.warnings {
                    eprintln!("paddock: warning: {}: {w}", recipe.name);
                }
                let m = &b.bundle.manifest;
                println!(
                    "{} {} {}",
                    if b.reused { "unchanged" } else { "built" },
                    recipe.name,
                    b.bundle.id
                );
                println!(
                    "  {} files ({}), {} symlinks, {} directories; {} programs; entry {}",
                    m.files.len(),
                    human_size(m.total_size()),
                    m.links.len(),
                    m.dirs.len(),
                    m.programs.len(),
                    m.entry
                );
                println!("  {}", b.bundle.dir.display());
            }
            Err(BuildError::Recipe(errs)) => {
                for e in &errs {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{}: {} error{} found; nothing was built",
                    path.display(),
                    errs.len(),
                    if errs.len() == 1 { "" } else { "s" }
                );
                ok = false;
            }
            Err(BuildError::Store(e)) => {
                eprintln!("paddock: {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn ls(st: &Store) -> ExitCode {
    let ids = match st.ids() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let refs = st.refs();
    let mut rows = vec![];
    for id in &ids {
        let names: Vec<&str> = refs
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.as_str())
            .collect();
        let r = if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        };
        match Bundle::open(&st.bundle_dir(id)) {
            Ok(b) => rows.push([
                short(id).to_string(),
                b.manifest.name.clone(),
                r,
                b.manifest.files.len().to_string(),
                human_size(b.manifest.total_size()),
                b.manifest.entry.clone(),
            ]),
            Err(e) => rows.push([
                short(id).to_string(),
                "?".into(),
                r,
                "-".into(),
                "-".into(),
                format!("DAMAGED: {e}"),
            ]),
        }
    }
    let head = ["ID", "NAME", "REFS", "FILES", "SIZE", "ENTRY"];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: [&str; 6]| {
        format!(
            "{:w0$}  {:w1$}  {:w2$}  {:>w3$}  {:>w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
    };
    println!("{}", line(head));
    for r in &rows {
        println!(
            "{}",
            line([
                r[0].as_str(),
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[5].as_str()
            ])
        );
    }
    if rows.is_empty() {
        eprintln!("no bundles in {}", st.dir.display());
    }
    ExitCode::SUCCESS
}

/// The text of `paddock bundle inspect`.
pub fn inspect(b: &Bundle) -> String {
    use std::fmt::Write;
    let m = &b.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "bundle   {}", m.name);
    let _ = writeln!(s, "id       {}", b.id);
    let _ = writeln!(s, "dir      {}", b.dir.display());
    let _ = writeln!(s, "entry    {}", m.entry);
    for p in &m.programs {
        let _ = writeln!(
            s,
            "program  {} ({})",
            p.path,
            p.interpreter
                .as_deref()
                .map_or("static".to_string(), |i| format!("interpreter {i}"))
        );
    }
    let _ = writeln!(
        s,
        "library path (for the loader, in order): {}",
        if m.library_path.is_empty() {
            "(none)".to_string()
        } else {
            m.library_path.join(":")
        }
    );
    let _ = writeln!(
        s,
        "size     {} files, {}; {} symlinks; {} directories",
        m.files.len(),
        human_size(m.total_size()),
        m.links.len(),
        m.dirs.len()
    );
    s.push_str("\ntree:\n");
    let mut all: Vec<(&str, String)> = m
        .files
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                format!(
                    "{:04o} {:>10}  sha256:{}",
                    f.mode,
                    human_size(f.size),
                    short(&f.sha256)
                ),
            )
        })
        .chain(
            m.links
                .iter()
                .map(|l| (l.path.as_str(), format!("-> {}", l.target))),
        )
        .chain(m.dirs.iter().map(|d| (d.as_str(), "directory".to_string())))
        .collect();
    all.sort();
    let w = all.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    for (p, d) in all {
        let _ = writeln!(s, "  {p:w$}  {d}");
    }
    s.push_str("\nclosure (which file satisfied which DT_NEEDED, and how it was found):\n");
    let mut last = "";
    for n in &m.needed {
        if n.by != last {
            let _ = writeln!(s, "  {}", n.by);
            last = &n.by;
        }
        let _ = writeln!(s, "    {} => {} ({})", n.name, n.found, n.via);
    }
    s
}

fn gc(st: &Store, config: &[PathBuf], dry_run: bool, apps: &AppBundles) -> ExitCode {
    let used = match apps(config) {
        Ok(ids) => ids,
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            return fail(
                "the app files have errors, so which bundles are in use is unknown; nothing was removed",
            );
        }
    };
    let busy = super::store::in_use(&st.dir);
    let mut keep = used.clone();
    keep.extend(busy.iter().cloned());
    match st.gc(&keep, dry_run) {
        Err(e) => fail(e),
        Ok(r) => {
            let verb = if dry_run { "would remove" } else { "removed" };
            for (id, name) in &r.removed {
                println!("{verb} {name} {id}");
            }
            for name in &r.refs_removed {
                println!("{verb} ref {name}");
            }
            for id in &r.kept {
                let why = if busy.contains(id) && !used.contains(id) {
                    "in use by a running process"
                } else {
                    "used by an app"
                };
                println!("kept {} ({why})", short(id));
            }
            println!(
                "{verb} {} bundle{} and {} object{}, {}; kept {}",
                r.removed.len(),
                if r.removed.len() == 1 { "" } else { "s" },
                r.objects_removed,
                if r.objects_removed == 1 { "" } else { "s" },
                human_size(r.freed),
                r.kept.len()
            );
            ExitCode::SUCCESS
        }
    }
}
