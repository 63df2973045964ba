//! App files loaded from config directories (every error of every file and of the dependency
//! graph between them, sorted by file and position), and the diff between the running set and
//! the files on disk that `reread` and `update` act on.

use super::*;

/// Reads one app file (the first instance of a file with `instances`).
pub fn load_file(path: &Path) -> Result<AppSpec, Vec<ConfigError>> {
    load_one(path).0.map(|mut v| v.swap_remove(0))
}

/// One app file, and when it has errors, its place in the dependency graph as far as it can be
/// read (so the graph is checked in the same run).
fn load_one(path: &Path) -> (Result<Vec<AppSpec>, Vec<ConfigError>>, Option<graph::Node>) {
    let err = |m: String| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message: m,
        }]
    };
    let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
        return (Err(err("file name is not valid UTF-8".into())), None);
    };
    // A regular file of at most 1 MiB (an app file is a few lines): a FIFO or a device is
    // refused by its type, without reading.
    let src = match crate::util::read_regular_text(path, 1 << 20) {
        Ok(s) => s,
        Err(e) => {
            let node = graph::Node::lenient(name, path, "");
            return (Err(err(e)), Some(node));
        }
    };
    match parse_app_instances(name, path, &src) {
        Ok(a) => (Ok(a), None),
        Err(e) => (Err(e), Some(graph::Node::lenient(name, path, &src))),
    }
}

/// All apps of a set of config directories, or every error found in them (all files are read,
/// so one run of `paddock check` reports every problem).
pub fn load_dirs(dirs: &[PathBuf]) -> Result<BTreeMap<String, AppSpec>, Vec<ConfigError>> {
    let (apps, errors) = load_dirs_all(dirs);
    if errors.is_empty() {
        Ok(apps)
    } else {
        Err(errors)
    }
}

/// Errors in file, line and column order (a file's own errors before the file-level ones of the
/// next file); the order `check`, `serve` and `update` print them in.
pub fn sort_errors(errors: &mut [ConfigError]) {
    errors.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
}

/// The valid apps of a set of config directories and the errors of the others (for checks
/// that go on with the valid ones, such as loading wasm modules in `paddock check`), every
/// error of every file and of the graph between them, sorted.
pub fn load_dirs_all(dirs: &[PathBuf]) -> (BTreeMap<String, AppSpec>, Vec<ConfigError>) {
    let mut apps: BTreeMap<String, AppSpec> = BTreeMap::new();
    let mut broken: BTreeMap<String, graph::Node> = BTreeMap::new();
    let mut errors = vec![];
    for dir in dirs {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                errors.push(ConfigError {
                    file: dir.clone(),
                    line: 0,
                    col: 0,
                    message: format!(
                        "cannot read config directory: {}",
                        crate::util::io_reason(&e)
                    ),
                });
                continue;
            }
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        files.sort();
        for f in files {
            let (loaded, node) = load_one(&f);
            let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let names: Vec<String> = match &loaded {
                Ok(specs) => specs.iter().map(|a| a.name.clone()).collect(),
                Err(_) => vec![name.to_string()],
            };
            let taken = names.iter().find_map(|n| {
                apps.get(n)
                    .map(|a| (n, &a.file, a.instance.as_ref()))
                    .or(broken.get(n).map(|b| (n, &b.file, None)))
            });
            if let Some((n, prev, inst)) = taken {
                let what = match inst {
                    Some(i) => format!(
                        "it is an instance of \"{}\" ({} has `instances`)",
                        i.group,
                        prev.display()
                    ),
                    None => format!("already defined by {}", prev.display()),
                };
                let mine = if n != name {
                    " (an instance of this file's `instances`)".to_string()
                } else {
                    String::new()
                };
                errors.push(ConfigError {
                    file: f.clone(),
                    line: 0,
                    col: 0,
                    message: format!("duplicate app name \"{n}\"{mine}: {what}; app names must be unique across config directories: rename one of the files"),
                });
                continue;
            }
            match loaded {
                Ok(specs) => {
                    for spec in specs {
                        apps.insert(spec.name.clone(), spec);
                    }
                }
                Err(mut e) => {
                    errors.append(&mut e);
                    if let Some(n) = node {
                        broken.insert(n.name.clone(), n);
                    }
                }
            }
        }
    }
    // A file with `instances` is one node, under the group's name (which `after` and
    // `requires` name).
    let nodes: Vec<graph::Node> = apps
        .values()
        .filter(|a| a.instance.as_ref().is_none_or(|i| i.index == 0))
        .map(graph::Node::of)
        .chain(broken.into_values())
        .collect();
    errors.extend(graph::check_nodes(&nodes));
    errors.extend(sandbox::check_publish(&apps));
    errors.extend(logs::check_log_files(&apps));
    errors.extend(schedule::check_deps(&apps));
    sort_errors(&mut errors);
    (apps, errors)
}

/// What `reread` reports and `update` applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

pub fn diff(old: &BTreeMap<String, &AppSpec>, new: &BTreeMap<String, AppSpec>) -> Diff {
    let mut d = Diff::default();
    for (name, spec) in new {
        match old.get(name) {
            None => d.added.push(name.clone()),
            Some(o) if *o != spec => d.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    d.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    d
}
