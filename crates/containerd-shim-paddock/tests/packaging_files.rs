//! The files of packaging/k8s and packaging/fleet are well-formed (YAML, TOML, HCL) and agree
//! with each other: every RuntimeClass `handler` is a runtime of the containerd snippet, every
//! runtime's `runtime_type` names a shim binary the .deb installs, every pod names a
//! RuntimeClass that exists. And the shim's .deb (cargo-deb, when installed) builds and holds
//! the binary and its sandbox-level link. (The app files inside the fleet manifests are checked
//! by paddock's own tests/packaging.rs.)

use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Every document of a YAML file, each a mapping with `apiVersion` and `kind`.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs = vec![];
    for (i, d) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let v = Yaml::deserialize(d)
            .unwrap_or_else(|e| panic!("{} document {i}: not YAML: {e}", path.display()));
        for key in ["apiVersion", "kind"] {
            assert!(
                v.get(key).and_then(Yaml::as_str).is_some(),
                "{} document {i}: no `{key}`",
                path.display()
            );
        }
        docs.push(v);
    }
    assert!(!docs.is_empty(), "{}: no document", path.display());
    docs
}

fn s<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    let mut at = v;
    for k in path {
        at = at.get(*k)?;
    }
    at.as_str()
}

/// A well-formedness check of HCL as these files write it: strings and heredocs closed,
/// braces and brackets balanced and properly nested, every line a comment, `key = value`, a
/// block header ending in `{`, a closing bracket, or inside a multi-line value.
fn check_hcl(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut stack: Vec<(char, usize)> = vec![];
    let mut heredoc: Option<(String, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some((end, _)) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        let in_list = stack.last().is_some_and(|(c, _)| *c == '[');
        let shape_ok = in_list
            || t.starts_with('}')
            || t.starts_with(']')
            || t.ends_with('{')
            || t.contains('=');
        if !shape_ok {
            return Err(format!("{}:{n}: not HCL: {t}", path.display()));
        }
        let mut chars = t.chars().peekable();
        let mut in_str = false;
        while let Some(c) = chars.next() {
            if in_str {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '#' => break,
                '{' | '[' | '(' => stack.push((c, n)),
                '}' | ']' | ')' => {
                    let open = match c {
                        '}' => '{',
                        ']' => '[',
                        _ => '(',
                    };
                    match stack.pop() {
                        Some((o, _)) if o == open => {}
                        other => {
                            return Err(format!(
                                "{}:{n}: `{c}` closes {other:?} (open bracket and line)",
                                path.display()
                            ));
                        }
                    }
                }
                '<' if t.contains("<<") => {
                    let rest = t.split("<<").nth(1).unwrap_or("");
                    let end = rest.trim_start_matches('-').trim().to_string();
                    if end.is_empty() || !end.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(format!(
                            "{}:{n}: a heredoc without its delimiter",
                            path.display()
                        ));
                    }
                    heredoc = Some((end, n));
                    break;
                }
                _ => {}
            }
        }
        if in_str {
            return Err(format!("{}:{n}: a string is not closed", path.display()));
        }
    }
    if heredoc.is_some() {
        return Err(format!(
            "{}: heredoc from line {} not closed",
            path.display(),
            heredoc.map_or(0, |h| h.1)
        ));
    }
    if !stack.is_empty() {
        return Err(format!(
            "{}: not closed: {stack:?} (bracket, line)",
            path.display()
        ));
    }
    Ok(())
}

#[test]
fn k8s_and_fleet_files_parse_and_agree() {
    // The containerd snippet: TOML, its CRI runtimes and the binaries they name.
    let snippet = repo().join("packaging/k8s/containerd-config.toml");
    let cfg: toml::Table = std::fs::read_to_string(&snippet)
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{}: not TOML: {e}", snippet.display()));
    let runtimes = cfg
        .get("plugins")
        .and_then(|p| p.get("io.containerd.grpc.v1.cri"))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("{}: no CRI runtimes", snippet.display()));
    // What the .deb puts in /usr/bin (Cargo.toml's [package.metadata.deb] assets).
    let manifest: toml::Table =
        std::fs::read_to_string(repo().join("crates/containerd-shim-paddock/Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let installed: Vec<String> = assets
        .iter()
        .filter_map(|a| {
            let a = a.as_array()?;
            let (src, dst) = (a.first()?.as_str()?, a.get(1)?.as_str()?);
            (dst == "usr/bin/").then(|| {
                Path::new(src)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect();
    let mut handlers = BTreeMap::new();
    for (name, rt) in runtimes {
        let ty = rt
            .get("runtime_type")
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("runtime {name}: no runtime_type"));
        // containerd's rule: io.containerd.X.v1 runs the binary containerd-shim-X-v1.
        let x = ty
            .strip_prefix("io.containerd.")
            .and_then(|t| t.strip_suffix(".v1"))
            .unwrap_or_else(|| {
                panic!("runtime {name}: runtime_type {ty} is not io.containerd.X.v1")
            });
        let binary = format!("containerd-shim-{x}-v1");
        assert!(
            installed.contains(&binary),
            "runtime {name} runs {binary}, which the .deb does not install ({installed:?})"
        );
        handlers.insert(name.clone(), binary);
    }
    // The sandbox-level link points at the shim.
    let link = repo().join("packaging/k8s/containerd-shim-paddock-sandbox-v1");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("containerd-shim-paddock-v1")
    );
    let sp = cfg["stream_processors"]["io.containerd.paddock.wasm-layer"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(sp, "/usr/bin/containerd-shim-paddock-v1");

    // The manifests: YAML; RuntimeClasses name runtimes of the snippet; pods name classes.
    let mut classes = BTreeMap::new();
    let mut pods = vec![];
    for f in files("packaging/k8s", "yaml")
        .into_iter()
        .chain(files("packaging/fleet", "yaml"))
    {
        for d in yaml_docs(&f) {
            match s(&d, &["kind"]) {
                Some("RuntimeClass") => {
                    let name = s(&d, &["metadata", "name"]).unwrap().to_string();
                    let handler = s(&d, &["handler"]).unwrap().to_string();
                    assert!(
                        handlers.contains_key(&handler),
                        "{}: handler {handler} is not a runtime of {} ({:?})",
                        f.display(),
                        snippet.display(),
                        handlers.keys()
                    );
                    assert!(
                        s(&d, &["overhead", "podFixed", "memory"]).is_some(),
                        "{}: no overhead.podFixed.memory",
                        f.display()
                    );
                    classes.insert(name, handler);
                }
                Some("Pod") => pods.push((f.clone(), d)),
                _ => {}
            }
        }
    }
    for h in handlers.keys() {
        assert!(
            classes.values().any(|c| c == h),
            "runtime {h} of the snippet has no RuntimeClass in packaging/k8s"
        );
    }
    for (f, pod) in &pods {
        if let Some(rc) = s(pod, &["spec", "runtimeClassName"]) {
            assert!(
                classes.contains_key(rc),
                "{}: runtimeClassName {rc} is not one of {:?}",
                f.display(),
                classes.keys()
            );
        }
        let containers = pod["spec"]["containers"].as_sequence().unwrap();
        assert!(!containers.is_empty(), "{}: no containers", f.display());
    }
    assert!(classes.contains_key("paddock-wasm") && classes.contains_key("paddock-sandbox"));

    for f in files("packaging/fleet", "hcl") {
        check_hcl(&f).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn hcl_check_finds_errors() {
    let dir = std::env::temp_dir().join(format!("paddock-hcl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = |text: &str| {
        let p = dir.join("x.hcl");
        std::fs::write(&p, text).unwrap();
        check_hcl(&p).is_err()
    };
    assert!(!bad(
        "job \"a\" {\n  x = [\"a\", \"b\"]\n  data = <<-T\n  {\n  T\n}\n"
    ));
    assert!(bad("job \"a\" {\n  x = 1\n"));
    assert!(bad("job \"a\" {\n  x = \"open\n}\n"));
    assert!(bad("job \"a\" {\n  data = <<-T\n  x\n}\n"));
    assert!(bad("job \"a\" {\n  x = [1, 2}\n}\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shim_deb_holds_the_binary_and_its_link() {
    let name = "shim_deb_holds_the_binary_and_its_link";
    let shim = env!("CARGO_BIN_EXE_containerd-shim-paddock-v1");
    if !shim.ends_with("/release/containerd-shim-paddock-v1") {
        println!("SKIPPED {name}: cargo deb packages the release binary: cargo test --release");
        return;
    }
    let cargo_deb = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
            .map(|d| d.join("cargo-deb"))
            .find(|c| c.exists())
    });
    let Some(cargo_deb) = cargo_deb else {
        println!("SKIPPED {name}: cargo-deb is not installed (cargo install cargo-deb --locked)");
        return;
    };
    if !Path::new("/usr/bin/dpkg-deb").exists() {
        println!("SKIPPED {name}: needs dpkg-deb");
        return;
    }
    let out = std::env::temp_dir().join(format!("paddock-shim-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let build = Command::new(&cargo_deb)
        .args([
            "deb",
            "-p",
            "containerd-shim-paddock",
            "--no-build",
            "--strip",
        ])
        .arg("--output")
        .arg(&out)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("no .deb written");
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("-rwxr-xr-x")
                && l.ends_with("./usr/bin/containerd-shim-paddock-v1")),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.ends_with(
            "./usr/bin/containerd-shim-paddock-sandbox-v1 -> containerd-shim-paddock-v1"
        )),
        "{list}"
    );
    for doc in [
        "containerd-config.toml",
        "runtimeclass-paddock-sandbox.yaml",
        "pod-paddock-sandbox.yaml",
    ] {
        assert!(list.contains(doc), "{doc} not in the package: {list}");
    }
    let info = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .args(["Package", "Depends"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: containerd-shim-paddock"), "{info}");
    assert!(info.contains("containerd"), "{info}");
    let size = std::fs::metadata(&deb).unwrap().len();
    println!("{name}: {} ({} KiB)", deb.display(), size / 1024);
    let _ = std::fs::remove_dir_all(&out);
}
