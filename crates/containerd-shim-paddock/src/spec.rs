//! The parts of the bundle's OCI runtime spec (`config.json`) the wasm level uses, with errors
//! that name the key.

use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Spec {
    /// `process.args`: `[0]` is the module inside the rootfs (or the name of the image's wasm
    /// layer), the rest its arguments.
    pub args: Vec<String>,
    /// `process.env`, as `KEY=VALUE`.
    pub env: Vec<(String, String)>,
    /// `process.cwd`.
    pub cwd: String,
    /// `root.path`, joined to the bundle when relative.
    pub root: PathBuf,
    pub readonly: bool,
    /// `linux.resources.memory.limit` in bytes (absent, 0 or negative: none).
    pub memory_limit: Option<u64>,
    /// `linux.resources.pids.limit` (absent, 0 or negative: none).
    pub pids_limit: Option<u64>,
    /// `linux.resources.cpu.quota` / `period` in cores (no quota, or -1: none).
    pub cpu_limit: Option<f64>,
    /// `process.user`: uid, gid, `additionalGids`.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The CRI plugin's pod sandbox ("pause") container: annotation
    /// `io.kubernetes.cri.container-type = sandbox`.
    pub pod_sandbox: bool,
    /// `annotations["io.paddock.level"]`, when set (see `crate::Level`).
    pub level: Option<String>,
    /// The network the process gets (`linux.namespaces`, entry `network`).
    pub network: Network,
    /// `linux.cgroupsPath` as written (`/default/ID` from ctr; `/kubepods/…/ID` from the CRI
    /// plugin with the cgroupfs driver; `slice:prefix:name` with the systemd driver).
    pub cgroups_path: Option<String>,
    /// `mounts`, in order.
    pub mounts: Vec<Mount>,
}

impl Spec {
    /// `process.env` as an app file's `[env]` table (both levels' apps take it so).
    pub fn env_table(&self) -> toml::Table {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
            .collect()
    }
}

/// One entry of `mounts`.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// `linux.namespaces`' `network` entry, as runc reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Network {
    /// An entry without a path: a new network namespace (`ctr run`).
    New,
    /// An entry with a path: join it (a pod's namespace, made by the CRI plugin).
    Join(PathBuf),
    /// No entry (`ctr run --net-host`, a `hostNetwork` pod): the host's network.
    Host,
}

/// The annotation that picks a container's level over the runtime's default.
pub const LEVEL_ANNOTATION: &str = "io.paddock.level";

/// A positive number of `key` (absent, null, 0 or negative: none).
fn limit(v: &Value, pointer: &str, key: &str) -> Result<Option<u64>, String> {
    match v.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_i64() {
            Some(l) if l > 0 => Ok(Some(l as u64)),
            Some(_) => Ok(None),
            None => Err(format!("{key} = {n} is not a number")),
        },
    }
}

fn id(v: &Value, pointer: &str, key: &str) -> Result<u32, String> {
    match v.pointer(pointer) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{key} = {n} is not a user or group id")),
    }
}

pub fn load(bundle: &Path) -> Result<Spec, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(bundle, &text).map_err(|e| format!("{}: {e}", path.display()))
}

fn strings(v: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}[{i}] is not a string"))
            })
            .collect(),
        Some(_) => Err(format!("{key} is not a list of strings")),
    }
}

pub fn parse(bundle: &Path, text: &str) -> Result<Spec, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let process = v
        .get("process")
        .ok_or("no `process`: the runtime spec must say what to run")?;
    // May be empty for an image whose layer is the module (checked when the module is found).
    let args = strings(process.get("args"), "process.args")?;
    let mut env = vec![];
    for (i, kv) in strings(process.get("env"), "process.env")?
        .into_iter()
        .enumerate()
    {
        match kv.split_once('=') {
            Some((k, val)) if !k.is_empty() => env.push((k.to_string(), val.to_string())),
            _ => return Err(format!("process.env[{i}] = \"{kv}\" is not KEY=VALUE")),
        }
    }
    let cwd = process
        .get("cwd")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let root = v.get("root");
    let root_path = root
        .and_then(|r| r.get("path"))
        .and_then(Value::as_str)
        .unwrap_or("rootfs");
    let readonly = root
        .and_then(|r| r.get("readonly"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let memory_limit = limit(
        &v,
        "/linux/resources/memory/limit",
        "linux.resources.memory.limit",
    )?;
    let pids_limit = limit(
        &v,
        "/linux/resources/pids/limit",
        "linux.resources.pids.limit",
    )?;
    let cpu_limit = match limit(
        &v,
        "/linux/resources/cpu/quota",
        "linux.resources.cpu.quota",
    )? {
        None => None,
        Some(quota) => {
            let period = limit(
                &v,
                "/linux/resources/cpu/period",
                "linux.resources.cpu.period",
            )?
            .unwrap_or(100_000);
            Some(quota as f64 / period as f64)
        }
    };
    let uid = id(&v, "/process/user/uid", "process.user.uid")?;
    let gid = id(&v, "/process/user/gid", "process.user.gid")?;
    let mut groups = vec![];
    if let Some(a) = v.pointer("/process/user/additionalGids") {
        let list = a
            .as_array()
            .ok_or("process.user.additionalGids is not a list of group ids")?;
        for (i, g) in list.iter().enumerate() {
            groups.push(
                g.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("process.user.additionalGids[{i}] = {g} is not a group id")
                    })?,
            );
        }
    }
    let mut network = Network::Host;
    if let Some(ns) = v.pointer("/linux/namespaces") {
        let list = ns
            .as_array()
            .ok_or("linux.namespaces is not a list of namespaces")?;
        for (i, n) in list.iter().enumerate() {
            if n.get("type").and_then(Value::as_str) != Some("network") {
                continue;
            }
            network = match n.get("path") {
                None | Some(Value::Null) => Network::New,
                Some(Value::String(p)) if p.is_empty() => Network::New,
                Some(Value::String(p)) if p.starts_with('/') => Network::Join(PathBuf::from(p)),
                Some(p) => {
                    return Err(format!(
                        "linux.namespaces[{i}].path = {p} is not an absolute path"
                    ));
                }
            };
        }
    }
    let mut mounts = vec![];
    if let Some(m) = v.get("mounts").filter(|m| !m.is_null()) {
        let list = m.as_array().ok_or("mounts is not a list")?;
        for (i, m) in list.iter().enumerate() {
            let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let destination = field("destination");
            if !destination.starts_with('/') {
                return Err(format!(
                    "mounts[{i}].destination = \"{destination}\" is not an absolute path"
                ));
            }
            if Path::new(&destination)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(format!(
                    "mounts[{i}].destination = \"{destination}\" has a `..`: a mount's place is named from the container's root, without climbing"
                ));
            }
            mounts.push(Mount {
                destination,
                kind: field("type"),
                source: field("source"),
                options: strings(m.get("options"), &format!("mounts[{i}].options"))?,
            });
        }
    }
    let cgroups_path = match v.pointer("/linux/cgroupsPath") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(p) => return Err(format!("linux.cgroupsPath = {p} is not a string")),
    };
    let level = match v.get("annotations").and_then(|a| a.get(LEVEL_ANNOTATION)) {
        None => None,
        Some(Value::String(l)) => Some(l.clone()),
        Some(other) => {
            return Err(format!(
                "annotations[\"{LEVEL_ANNOTATION}\"] = {other} is not a string"
            ));
        }
    };
    let pod_sandbox = v
        .pointer("/annotations/io.kubernetes.cri.container-type")
        .and_then(Value::as_str)
        == Some("sandbox");
    Ok(Spec {
        pod_sandbox,
        args,
        env,
        cwd,
        root: bundle.join(root_path),
        readonly,
        memory_limit,
        pids_limit,
        cpu_limit,
        uid,
        gid,
        groups,
        level,
        network,
        cgroups_path,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ctr_spec() {
        let s = parse(
            Path::new("/b"),
            r#"{"process":{"args":["/hello.wasm","a"],"env":["PATH=/bin","X=a=b"],"cwd":"/"},
                "root":{"path":"rootfs","readonly":true},
                "linux":{"resources":{"memory":{"limit":16777216}}}}"#,
        )
        .unwrap();
        assert_eq!(s.args, ["/hello.wasm", "a"]);
        assert_eq!(s.env[1], ("X".into(), "a=b".into()));
        assert_eq!(s.root, Path::new("/b/rootfs"));
        assert!(s.readonly);
        assert_eq!(s.memory_limit, Some(16 << 20));
        assert!(!s.pod_sandbox);
        let s = parse(
            Path::new("/b"),
            r#"{"process":{"args":["/pause"]},"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#,
        )
        .unwrap();
        assert!(s.pod_sandbox);
        let s = parse(
            Path::new("/b"),
            r#"{"process":{"args":["/bin/sh"],"user":{"uid":1000,"gid":100,"additionalGids":[5]}},
                "annotations":{"io.paddock.level":"sandbox"},
                "linux":{"resources":{"pids":{"limit":64},"memory":{"limit":-1},
                    "cpu":{"quota":50000,"period":100000}}}}"#,
        )
        .unwrap();
        assert_eq!((s.uid, s.gid, s.groups), (1000, 100, vec![5]));
        assert_eq!(s.pids_limit, Some(64));
        assert_eq!(s.cpu_limit, Some(0.5));
        assert_eq!(s.memory_limit, None);
        let cpu = |c: &str| {
            parse(
                Path::new("/b"),
                &format!(r#"{{"process":{{"args":["a"]}},"linux":{{"resources":{{"cpu":{c}}}}}}}"#),
            )
            .map(|s| s.cpu_limit)
        };
        assert_eq!(cpu(r#"{"quota":-1,"period":100000}"#), Ok(None));
        let climbing = parse(
            Path::new("/b"),
            r#"{"process":{"args":["a"]},"mounts":[{"destination":"/../../etc/nologin","type":"bind","source":"/x"}]}"#,
        );
        assert!(climbing.unwrap_err().contains("mounts[0].destination"));
        assert_eq!(cpu(r#"{"quota":200000}"#), Ok(Some(2.0)));
        assert_eq!(cpu(r#"{"shares":1024}"#), Ok(None));
        assert!(
            cpu(r#"{"quota":"lots"}"#)
                .unwrap_err()
                .contains("linux.resources.cpu.quota")
        );
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.level.as_deref(), Some("sandbox"));
        assert_eq!(s.network, Network::Host);
        let net = |ns: &str| {
            parse(
                Path::new("/b"),
                &format!(r#"{{"process":{{"args":["a"]}},"linux":{{"namespaces":{ns}}}}}"#),
            )
            .map(|s| s.network)
        };
        assert_eq!(
            net(r#"[{"type":"pid"},{"type":"network"}]"#),
            Ok(Network::New)
        );
        assert_eq!(
            net(r#"[{"type":"network","path":"/var/run/netns/cni-1"}]"#),
            Ok(Network::Join("/var/run/netns/cni-1".into()))
        );
        assert_eq!(net(r#"[{"type":"pid"}]"#), Ok(Network::Host));
        assert!(
            net(r#"[{"type":"network","path":"rel"}]"#)
                .unwrap_err()
                .contains("linux.namespaces[0].path")
        );
    }

    #[test]
    fn bad_specs_name_the_key() {
        let p = |t| parse(Path::new("/b"), t).unwrap_err();
        assert!(p("{").contains("not valid JSON"));
        assert!(p("{}").contains("no `process`"));
        assert!(p(r#"{"process":{"args":["a",1]}}"#).contains("process.args[1]"));
        assert!(p(r#"{"process":{"args":["a"],"env":["NOEQ"]}}"#).contains("process.env[0]"));
        assert!(
            p(r#"{"process":{"args":["a"]},"linux":{"resources":{"memory":{"limit":"x"}}}}"#)
                .contains("linux.resources.memory.limit")
        );
        assert!(p(r#"{"process":{"args":["a"],"user":{"uid":-1}}}"#).contains("process.user.uid"));
        assert!(
            p(r#"{"process":{"args":["a"]},"annotations":{"io.paddock.level":1}}"#)
                .contains("io.paddock.level")
        );
    }
}
