//! The app-file keys of level `wasm` (`module`, `args`, `[wasm]`, `[sandbox]` network lists)
//! and `[limits]`, kept apart from the common keys so each level's schema reads in one place.
//!
//! ```toml
//! isolation = "wasm"
//! module = "worker.wasm"            # relative to the app file
//! args = ["--interval", "1s"]        # argv[1..]; argv[0] is the module's file name
//! env = { GREETING = "hi" }          # the guest's whole environment
//! [wasm]
//! preopens = { "/data" = "/var/lib/app:rw", "/etc/app" = "/etc/app" }   # read-only unless :rw
//! max_instances = 16                 # core instances the app's store may hold
//! fuel = 1000000000                  # optional deterministic budget of wasm instructions
//! symlinks = false                   # may the guest create symbolic links in its preopens
//! [limits]
//! memory = "64MiB"                   # linear memories + tables (default 128MiB)
//! cpu = 0.5                          # share of one core
//! nofile = 256                       # open files, directories, sockets (default 256)
//! [sandbox]
//! network = "host"                   # default "none"
//! tcp_bind = ["127.0.0.1:8080"]
//! tcp_connect = ["10.0.0.0/8:5432"]
//! ```

use super::units::Size;
use super::{FileCtx, Isolation};
pub mod inspect;
pub mod net;

use inspect::Kind;
use net::{AddrPattern, NetPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// `[limits]`: the same keys for every level. `memory` and `cpu` apply to every level (a
/// cgroup for native apps, the store's limits for wasm); `nofile` is RLIMIT_NOFILE for native
/// apps and the cap on the descriptors a wasm guest holds; `pids` (a cgroup's pids.max) is for
/// native apps only. A wasm app always has `memory` and `nofile`: unset, they are
/// [`DEFAULT_WASM_MEMORY`] and [`DEFAULT_WASM_NOFILE`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Limits {
    /// Bytes: a cgroup's memory.max (native), linear memory and tables (wasm).
    pub memory: Option<u64>,
    /// CPU cores: a cgroup's quota (native), a share of one core in (0, 1] (wasm).
    pub cpu: Option<f64>,
    /// Processes and threads in the app's cgroup.
    pub pids: Option<u64>,
    /// Open-file limit (soft = hard) of the app's processes; for a wasm app, the files,
    /// directories (preopens included) and sockets its guest may hold open at once.
    pub nofile: Option<u64>,
}

impl Limits {
    /// The part cgroups enforce.
    pub fn cgroup(&self) -> crate::cgroup::CgLimits {
        crate::cgroup::CgLimits {
            memory: self.memory,
            cpu: self.cpu,
            pids: self.pids,
        }
    }
}

/// A directory the guest sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Preopen {
    pub guest: String,
    pub host: PathBuf,
    pub writable: bool,
}

/// Identifies a module file's content cheaply, so that `update` restarts an app whose module
/// file was replaced (the module is compiled and held in memory, unlike a native program that
/// is exec'd afresh at each start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WasmSpec {
    /// The module file (relative `module` values are joined to the app file's directory).
    pub module: PathBuf,
    pub stamp: ModuleStamp,
    pub kind: Kind,
    /// argv[1..].
    pub args: Vec<String>,
    pub preopens: Vec<Preopen>,
    pub max_instances: u32,
    pub fuel: Option<u64>,
    pub net: NetPolicy,
    /// `[wasm] symlinks`: the guest may create symbolic links in its writable preopens.
    pub symlinks: bool,
    /// `[limits] memory` was left out (the limit is [`DEFAULT_WASM_MEMORY`]).
    pub default_memory: bool,
}

pub const DEFAULT_MAX_INSTANCES: u32 = 16;
/// What the instance pool allows one app (see `driver::wasm`).
pub const MAX_MAX_INSTANCES: u32 = 64;
/// A wasm32 linear memory cannot be larger.
pub const MAX_WASM_MEMORY: u64 = 4 << 30;
/// `[limits] memory` of a wasm app that does not set it: a guest lives in paddock's own address
/// space, so it never grows without a bound (a wasm32 memory could reach 4GiB).
pub const DEFAULT_WASM_MEMORY: u64 = 128 << 20;
/// `[limits] nofile` of a wasm app that does not set it: a guest's descriptors are paddock's
/// own, so one guest opening files in a loop must stop long before paddock's limit.
pub const DEFAULT_WASM_NOFILE: u64 = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWasm {
    preopens: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    max_instances: Option<Spanned<u32>>,
    fuel: Option<Spanned<u64>>,
    symlinks: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    memory: Option<Spanned<Size>>,
    cpu: Option<Spanned<f64>>,
    pids: Option<Spanned<i64>>,
    nofile: Option<Spanned<i64>>,
}

/// The keys of an app file that belong to this module.
pub(super) struct RawWasmKeys<'a> {
    pub module: Option<&'a Spanned<String>>,
    pub args: Option<&'a Spanned<Vec<String>>>,
    pub wasm: Option<&'a Spanned<RawWasm>>,
    pub limits: Option<&'a Spanned<RawLimits>>,
    pub sandbox: Option<&'a Spanned<super::sandbox::RawSandbox>>,
    /// Common keys a wasm app cannot have.
    pub command: Option<std::ops::Range<usize>>,
    pub workdir: Option<std::ops::Range<usize>>,
    pub user: Option<std::ops::Range<usize>>,
    pub group: Option<std::ops::Range<usize>>,
    /// `bundle` or `launch`.
    pub bundle: Option<std::ops::Range<usize>>,
}

pub(super) fn parse_limits(cx: &mut FileCtx, raw: Option<&Spanned<RawLimits>>) -> Limits {
    let mut l = Limits::default();
    let Some(raw) = raw else {
        return l;
    };
    if let Some(m) = &raw.get_ref().memory {
        let v = m.get_ref().0;
        if v < 64 << 10 {
            cx.err_at(
                Some(m.span()),
                "limits.memory",
                "must be at least 64KiB (one WebAssembly page)",
            );
        } else {
            l.memory = Some(v);
        }
    }
    if let Some(c) = &raw.get_ref().cpu {
        let v = *c.get_ref();
        if !(v.is_finite() && v > 0.0) {
            cx.err_at(
                Some(c.span()),
                "limits.cpu",
                "must be a share of a core greater than 0, as in 0.5",
            );
        } else {
            l.cpu = Some(v);
        }
    }
    if let Some(p) = &raw.get_ref().pids {
        let v = *p.get_ref();
        if !(1..=4_194_304).contains(&v) {
            cx.err_at(
                Some(p.span()),
                "limits.pids",
                "must be a number of processes (and threads) from 1 to 4194304, as in 64",
            );
        } else {
            l.pids = Some(v as u64);
        }
    }
    if let Some(n) = &raw.get_ref().nofile {
        let v = *n.get_ref();
        if !(3..=1 << 30).contains(&v) {
            cx.err_at(
                Some(n.span()),
                "limits.nofile",
                "must be a number of open files from 3 to 1073741824, as in 1024",
            );
        } else {
            l.nofile = Some(v as u64);
        }
    }
    l
}

/// A native app (level `none` or `bundle`) with wasm-only keys.
pub(super) fn refuse_for_native(cx: &mut FileCtx, k: &RawWasmKeys, level: Isolation) {
    let level = level.as_str();
    if let Some(m) = k.module {
        cx.err_at(
            Some(m.span()),
            "module",
            format!("only wasm apps have a module: add isolation = \"wasm\", or use command = [...] for isolation = \"{level}\""),
        );
    }
    if let Some(a) = k.args {
        cx.err_at(
            Some(a.span()),
            "args",
            "only wasm apps take `args`: put a native program's arguments in `command`",
        );
    }
    if let Some(w) = k.wasm {
        cx.err_at(
            Some(w.span()),
            "wasm",
            "the [wasm] table is for isolation = \"wasm\" only",
        );
    }
    if let Some(s) = k.sandbox
        && level != "sandbox"
    {
        cx.err_at(
                Some(s.span()),
                "sandbox",
                format!("the [sandbox] table is for isolation = \"sandbox\" (or \"wasm\"); isolation = \"{level}\" runs the app unconfined"),
            );
    }
}

/// The wasm part of an app: module file, args, capabilities. `app_file` is the TOML file (a
/// relative `module` or preopen is relative to its directory).
/// `limits` gets the wasm defaults for `memory` and `nofile` when they are unset.
pub(super) fn parse_wasm(
    cx: &mut FileCtx,
    k: &RawWasmKeys,
    limits: &mut Limits,
    app_file: &Path,
) -> Option<WasmSpec> {
    let base = app_file.parent().unwrap_or(Path::new("."));
    for (span, key, why) in [
        (
            &k.command,
            "command",
            "a wasm app has no command: give `module = \"app.wasm\"` and its `args`",
        ),
        (
            &k.workdir,
            "workdir",
            "a wasm app has no working directory on the host: give it directories with [wasm] preopens",
        ),
        (
            &k.user,
            "user",
            "a wasm app runs inside paddock's process and has no uid of its own; its capabilities are its preopens and network lists",
        ),
        (
            &k.group,
            "group",
            "a wasm app runs inside paddock's process and has no gid of its own",
        ),
        (
            &k.bundle,
            "bundle",
            "a wasm app's code is its module: bundles are for isolation = \"bundle\"",
        ),
    ] {
        if let Some(s) = span {
            cx.err_at(Some(s.clone()), key, why);
        }
    }
    let mut ok = true;

    let Some(m) = k.module else {
        cx.err_at(
            Some(0..0),
            "module",
            "missing: a wasm app needs module = \"app.wasm\" (a path relative to this file)",
        );
        return None;
    };
    let module = if m.get_ref().is_empty() || m.get_ref().contains('\0') {
        cx.err_at(Some(m.span()), "module", "must be a file path");
        return None;
    } else {
        base.join(m.get_ref())
    };
    let (kind, stamp) = match read_head(&module) {
        Ok((head, meta)) => match inspect::sniff(&head) {
            Ok(kind) => (
                kind,
                ModuleStamp {
                    size: meta.len(),
                    mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
            ),
            Err(why) => {
                cx.err_at(
                    Some(m.span()),
                    "module",
                    format!("{} is not a WebAssembly module: {why}", module.display()),
                );
                return None;
            }
        },
        Err(e) => {
            cx.err_at(Some(m.span()), "module", e);
            return None;
        }
    };

    let args = match k.args {
        Some(a) if a.get_ref().iter().any(|s| s.contains('\0')) => {
            cx.err_at(
                Some(a.span()),
                "args",
                "arguments may not contain NUL bytes",
            );
            ok = false;
            vec![]
        }
        Some(a) => a.get_ref().clone(),
        None => vec![],
    };

    let mut preopens = vec![];
    let mut max_instances = DEFAULT_MAX_INSTANCES;
    let mut fuel = None;
    let mut symlinks = false;
    if let Some(w) = k.wasm {
        let w = w.get_ref();
        for (g, h) in w.preopens.iter().flatten() {
            let guest = g.get_ref();
            if guest.is_empty() || guest.contains('\0') {
                cx.err_at(
                    Some(g.span()),
                    "wasm.preopens",
                    "a guest path must be a non-empty path such as \"/data\"",
                );
                ok = false;
                continue;
            }
            let (path, writable) = match h.get_ref().rsplit_once(':') {
                Some((p, "rw")) => (p, true),
                Some((p, "ro")) => (p, false),
                _ => (h.get_ref().as_str(), false),
            };
            let key = format!("wasm.preopens.\"{guest}\"");
            if path.is_empty() || path.contains('\0') {
                cx.err_at(
                    Some(h.span()),
                    &key,
                    "give a host directory, as in \"/var/lib/app\" (read-only) or \"/var/lib/app:rw\"",
                );
                ok = false;
                continue;
            }
            let host = base.join(path);
            match std::fs::metadata(&host) {
                Ok(md) if md.is_dir() => preopens.push(Preopen {
                    guest: guest.clone(),
                    host,
                    writable,
                }),
                Ok(_) => {
                    cx.err_at(
                        Some(h.span()),
                        &key,
                        format!(
                            "{} is not a directory (only directories can be preopened)",
                            host.display()
                        ),
                    );
                    ok = false;
                }
                Err(e) => {
                    cx.err_at(
                        Some(h.span()),
                        &key,
                        format!("{}: {}", host.display(), crate::util::io_reason(&e)),
                    );
                    ok = false;
                }
            }
        }
        if let Some(n) = &w.max_instances {
            let v = *n.get_ref();
            if v == 0 || v > MAX_MAX_INSTANCES {
                cx.err_at(
                    Some(n.span()),
                    "wasm.max_instances",
                    format!("must be 1 to {MAX_MAX_INSTANCES} (core instances in the app's store; a component made by wasm32-wasip2 uses a handful)"),
                );
                ok = false;
            } else {
                max_instances = v;
            }
        }
        if let Some(f) = &w.fuel {
            if *f.get_ref() == 0 {
                cx.err_at(
                    Some(f.span()),
                    "wasm.fuel",
                    "must be at least 1 (leave it out for no budget)",
                );
                ok = false;
            } else {
                fuel = Some(*f.get_ref());
            }
        }
        if let Some(v) = &w.symlinks {
            match v.get_ref() {
                toml::Value::Boolean(b) => symlinks = *b,
                other => {
                    cx.err_at(
                        Some(v.span()),
                        "wasm.symlinks",
                        format!(
                            "must be true or false, not {} {other}: true lets the guest create symbolic links in its writable preopens (refused by default)",
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
    }

    if let (Some(mem), Some(r)) = (limits.memory, k.limits)
        && mem > MAX_WASM_MEMORY
    {
        cx.err_at(
            r.get_ref().memory.as_ref().map(|m| m.span()),
            "limits.memory",
            "a wasm app's memory cannot exceed 4GiB (the wasm32 address space)",
        );
        ok = false;
    }
    if let Some(span) = k
        .limits
        .and_then(|r| r.get_ref().pids.as_ref().map(|p| p.span()))
    {
        cx.err_at(
            Some(span),
            "limits.pids",
            "a wasm app runs inside paddock's process: it has no processes of its own to limit (its limits are memory, cpu and nofile)",
        );
        ok = false;
    }
    let default_memory = limits.memory.is_none();
    limits.memory.get_or_insert(DEFAULT_WASM_MEMORY);
    limits.nofile.get_or_insert(DEFAULT_WASM_NOFILE);
    if let (Some(cpu), Some(r)) = (limits.cpu, k.limits)
        && cpu > 1.0
    {
        cx.err_at(
            r.get_ref().cpu.as_ref().map(|c| c.span()),
            "limits.cpu",
            "a wasm instance runs on one thread at a time: give a share of one core, 0 < cpu <= 1",
        );
        ok = false;
    }

    let mut net = NetPolicy::default();
    if let Some(s) = k.sandbox {
        let s = s.get_ref();
        for (key, span) in s.native_only() {
            cx.err_at(
                Some(span),
                key,
                "is for isolation = \"sandbox\"; a wasm app reaches host files only through [wasm] preopens and makes no system calls",
            );
            ok = false;
        }
        match s.network.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "none")) => {}
            Some((_, "host")) => net.host = true,
            Some((n, other)) => {
                cx.err_at(
                    Some(n.span()),
                    "sandbox.network",
                    format!(
                        "unknown value \"{other}\"; expected \"none\" (the default) or \"host\""
                    ),
                );
                ok = false;
            }
        }
        for (list, key, out) in [
            (&s.tcp_bind, "sandbox.tcp_bind", &mut net.tcp_bind),
            (&s.tcp_connect, "sandbox.tcp_connect", &mut net.tcp_connect),
        ] {
            let Some(list) = list else { continue };
            if !net.host && !list.get_ref().is_empty() {
                cx.err_at(
                    Some(list.span()),
                    key,
                    "has no effect without network = \"host\" in [sandbox]",
                );
                ok = false;
            }
            for p in list.get_ref() {
                let super::sandbox::PortOrPattern::Pattern(text) = p.get_ref() else {
                    cx.err_at(
                        Some(p.span()),
                        key,
                        "a wasm app's network lists take address patterns, as in \"127.0.0.1:8080\" or \"10.0.0.0/8:*\"",
                    );
                    ok = false;
                    continue;
                };
                match AddrPattern::parse(text) {
                    Ok(a) => out.push(a),
                    Err(e) => {
                        cx.err_at(Some(p.span()), key, e);
                        ok = false;
                    }
                }
            }
        }
        if net.host && kind == Kind::Core {
            cx.err_at(
                s.network.as_ref().map(|n| n.span()),
                "sandbox.network",
                format!("{} is a WASI preview 1 module, and preview 1 has no sockets: build it for wasm32-wasip2 (a component) to use the network", module.display()),
            );
            ok = false;
        }
    }

    ok.then_some(WasmSpec {
        module,
        stamp,
        kind,
        args,
        preopens,
        max_instances,
        fuel,
        net,
        symlinks,
        default_memory,
    })
}

/// `[readiness]` that needs a process: a wasm guest has no `$NOTIFY_SOCKET` and no extra
/// descriptors (WASI gives it neither). Readiness by health check works.
pub(super) fn refuse_readiness(
    cx: &mut FileCtx,
    r: &super::health::ReadinessSpec,
    span: Option<std::ops::Range<usize>>,
) {
    use super::health::ReadyWhen;
    let what = match r.when {
        ReadyWhen::Notify => Some("notify"),
        ReadyWhen::Fd { .. } => Some("notify_fd"),
        _ if r.watchdog.is_some() => Some("watchdog"),
        _ => None,
    };
    if let Some(key) = what {
        cx.err_at(
            span,
            &format!("readiness.{key}"),
            "a wasm app cannot use it (WASI gives a guest no notify socket and no extra descriptors): use readiness.health = true with a [health] check",
        );
    }
}

fn read_head(path: &Path) -> Result<(Vec<u8>, std::fs::Metadata), String> {
    let reason = |e: std::io::Error| format!("{}: {}", path.display(), crate::util::io_reason(&e));
    let mut f = std::fs::File::open(path).map_err(reason)?;
    let meta = f.metadata().map_err(reason)?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut head = Vec::with_capacity(64);
    f.by_ref().take(64).read_to_end(&mut head).map_err(reason)?;
    Ok((head, meta))
}

/// A problem found when loading an app's module (compiling, linking), reported like a config
/// error at the app file's `module` key.
pub fn module_error(spec: &super::AppSpec, message: &str) -> super::ConfigError {
    let (line, col) = std::fs::read_to_string(&spec.file)
        .ok()
        .and_then(|src| {
            src.lines()
                .take_while(|l| !l.trim_start().starts_with('['))
                .enumerate()
                .find_map(|(i, l)| {
                    let rest = l.trim_start().strip_prefix("module")?;
                    let value = rest.trim_start().strip_prefix('=')?;
                    let col = l.len() - value.trim_start().len() + 1;
                    Some((i + 1, col))
                })
        })
        .unwrap_or((0, 0));
    super::ConfigError {
        file: spec.file.clone(),
        line,
        col,
        message: format!("key `module`: {message}"),
    }
}

#[cfg(test)]
mod tests;
