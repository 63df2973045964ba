//! App files: one `NAME.toml` per app in a config directory. Parsing (serde + toml, unknown keys
//! refused), validation with `file:line:col` errors that name the key, loading a directory, and the
//! diff used by `reread` / `update`.

mod collect;
pub mod graph;
pub mod health;
pub mod http;
pub mod logs;
pub mod sandbox;
pub mod suggest;
/// Durations, sizes and signal names (a leaf module of its own; this path stays for callers).
pub use crate::units;
pub mod wasm;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use units::{Dur, Sig};

/// Where an app runs. `none`, `bundle` and `wasm` exist in this build; the other levels are
/// named so that a file asking for them gets a precise error rather than a generic "unknown
/// variant".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    None,
    /// The app's program and libraries come from a bundle (see `crate::bundle`).
    Bundle,
    /// A bundle confined by namespaces, its own root filesystem, Landlock, dropped
    /// capabilities and seccomp (see `crate::sandbox`).
    Sandbox,
    /// A WebAssembly module under wasmtime (see `config::wasm`, `driver::wasm`).
    Wasm,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Bundle => "bundle",
            Isolation::Sandbox => "sandbox",
            Isolation::Wasm => "wasm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StdoutMode {
    #[default]
    File,
    Inherit,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    pub max_failures: u32,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: RestartPolicy::OnFailure,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            max_failures: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogSpec {
    pub max_size: u64,
    pub keep: u32,
    pub stdout: StdoutMode,
    /// stderr goes into the same file as stdout (`NAME.out`).
    pub combine: bool,
    /// `stdout = "<path>"`: the file stdout goes to instead of `LOG_DIR/NAME.out` (for a
    /// directory, `DIR/NAME.out`).
    pub stdout_file: Option<PathBuf>,
    /// `stderr = "<path>"`, likewise.
    pub stderr_file: Option<PathBuf>,
    pub format: logs::LogFormat,
    /// Line and column of the `stdout` and `stderr` keys, for errors found across files.
    #[serde(skip)]
    pub at: Ignored<[(usize, usize); 2]>,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            max_size: 10 << 20,
            keep: 5,
            stdout: StdoutMode::File,
            combine: false,
            stdout_file: None,
            stderr_file: None,
            format: logs::LogFormat::Text,
            at: Ignored([(0, 0); 2]),
        }
    }
}

/// The identity an app runs as, resolved when the file is loaded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identity {
    pub user: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

/// A validated app, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppSpec {
    pub name: String,
    pub file: PathBuf,
    pub command: Vec<String>,
    /// The executable `command[0]` resolved to (through PATH when it has no slash).
    pub program: PathBuf,
    pub workdir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub identity: Option<Identity>,
    pub autostart: bool,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub isolation: Isolation,
    /// With `isolation = "bundle"`: the bundle, program and launch mode, resolved at load.
    pub bundle: Option<crate::bundle::launch::BundleLaunch>,
    pub restart: RestartSpec,
    pub logs: LogSpec,
    /// `[limits]` (enforced for `wasm` only in this build; refused for other levels).
    pub limits: wasm::Limits,
    /// Level `wasm`: the module and its capabilities.
    pub wasm: Option<wasm::WasmSpec>,
    /// A wasm app served per request (`[http]`, see config/http.rs).
    pub http: Option<http::HttpSpec>,
    /// Level `sandbox`: what the app is given (`[sandbox]`).
    pub sandbox: Option<sandbox::SandboxSpec>,
    /// Level `sandbox`: the level to run at when this host cannot sandbox (`fallback`).
    pub fallback: Option<Isolation>,
    /// Start only once these apps are ready.
    pub after: Vec<String>,
    /// Like `after`, and also stop when one of these stops or goes FATAL (start again when back).
    pub requires: Vec<String>,
    /// If this app goes FATAL, paddock stops everything and exits non-zero.
    pub essential: bool,
    pub readiness: health::ReadinessSpec,
    pub health: Option<health::HealthSpec>,
    /// Lines of the `after` and `requires` keys, for dependency errors found across files.
    #[serde(skip)]
    pub deps_line: Ignored<[usize; 2]>,
}

/// A value carried along but never part of equality: moving a key to another line is not a
/// change of the app.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ignored<T>(pub T);

impl<T> PartialEq for Ignored<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    command: Option<Spanned<Vec<String>>>,
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    autostart: Option<bool>,
    stop_signal: Option<Sig>,
    stop_timeout: Option<Dur>,
    isolation: Option<Spanned<String>>,
    bundle: Option<Spanned<String>>,
    launch: Option<Spanned<String>>,
    restart: Option<RawRestart>,
    logs: Option<logs::RawLogs>,
    // Level `wasm` and [limits]: see config/wasm.rs.
    module: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    wasm: Option<Spanned<wasm::RawWasm>>,
    http: Option<Spanned<http::RawHttp>>,
    limits: Option<Spanned<wasm::RawLimits>>,
    sandbox: Option<Spanned<sandbox::RawSandbox>>,
    fallback: Option<Spanned<String>>,
    after: Option<Spanned<Vec<String>>>,
    requires: Option<Spanned<Vec<String>>>,
    essential: Option<bool>,
    readiness: Option<Spanned<health::RawReadiness>>,
    health: Option<health::RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartPolicy>,
    backoff_initial: Option<Dur>,
    backoff_max: Option<Spanned<Dur>>,
    stable_after: Option<Dur>,
    max_failures: Option<u32>,
}

/// One problem in one app file, with its position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// The key written on the line holding `offset` (its `key =`, quotes taken off) and where that
/// line starts; `None` on a line without one or on a `[table]` header (app files and recipes).
pub(crate) fn key_on_line(src: &str, offset: usize) -> Option<(usize, String)> {
    let offset = offset.min(src.len());
    if !src.is_char_boundary(offset) {
        return None;
    }
    let start = src[..offset].rfind('\n').map_or(0, |p| p + 1);
    let line = src[start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())?;
    (!key.is_empty() && !key.starts_with('[')).then_some((start, key))
}

/// The dotted key written on the line holding `offset` ("restart.policy"), from the line's
/// `key =` and the nearest `[table]` header above it.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let (start, key) = key_on_line(src, offset)?;
    let table = src[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[["))
            .then(|| l.trim_matches(['[', ']', ' ']).to_string())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    })
}

pub(crate) struct FileCtx<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
    /// Keys taken out because they did not deserialize: already reported, so later checks
    /// say nothing more about them (a `command = 5` is not also "missing").
    removed: Vec<String>,
}

impl FileCtx<'_> {
    /// Line and column of a byte offset of the file.
    pub(crate) fn pos(&self, offset: usize) -> (usize, usize) {
        line_col(self.src, offset)
    }

    pub(crate) fn err_at(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        msg: impl Into<String>,
    ) {
        if self.removed.iter().any(|r| {
            key == r
                || key
                    .strip_prefix(r.as_str())
                    .is_some_and(|t| t.starts_with('.'))
        }) {
            return;
        }
        let (line, col) = span.map_or((0, 0), |s| line_col(self.src, s.start));
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("key `{key}`: ")
        };
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: format!("{key}{}", msg.into()),
        });
    }
}

/// App names become file names, metric labels and URL path segments: keep them plain.
pub fn valid_app_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("an app name must be 1 to 64 characters long".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        || name.starts_with('.')
    {
        return Err(format!(
            "app name \"{name}\" may only use letters, digits, '-', '_', '.', '@' and may not start with '.'"
        ));
    }
    if name == "all" {
        return Err(
            "\"all\" is reserved (it means every app on the command line); rename the file".into(),
        );
    }
    Ok(())
}

/// Finds an executable the way execvp would, but at load time so a typo is a config error.
/// The search path when neither the app's `env.PATH` nor paddock's `PATH` gives one, and the
/// `PATH` of a sandboxed app (which gets none of paddock's environment).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn resolve_program(
    prog: &str,
    env_path: Option<&str>,
    workdir: Option<&Path>,
) -> Result<PathBuf, String> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        let p = match workdir {
            Some(w) if !prog.starts_with('/') => w.join(prog),
            _ => PathBuf::from(prog),
        };
        return match std::fs::metadata(&p) {
            Err(e) => Err(format!("{}: {}", p.display(), crate::util::io_reason(&e))),
            Ok(m) if !m.is_file() => Err(format!("{} is not a regular file", p.display())),
            Ok(_) if !is_exec(&p) => {
                Err(format!("{} is not executable (chmod +x it)", p.display()))
            }
            Ok(_) => Ok(p),
        };
    }
    let path = env_path
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(prog);
        if is_exec(&p) {
            return Ok(p);
        }
    }
    Err(format!(
        "\"{prog}\" was not found in PATH ({path}); give an absolute path"
    ))
}

fn resolve_identity(
    cx: &mut FileCtx,
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
) -> Option<Identity> {
    if user.is_none() && group.is_none() {
        return None;
    }
    let mut id = Identity {
        user: None,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: vec![],
        home: None,
    };
    if let Some(u) = user {
        let lookup = match u.get_ref().parse::<u32>() {
            Ok(n) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)),
            Err(_) => nix::unistd::User::from_name(u.get_ref()),
        };
        match lookup {
            Ok(Some(pw)) => {
                id.uid = pw.uid.as_raw();
                id.gid = pw.gid.as_raw();
                id.home = Some(pw.dir.clone());
                id.user = Some(pw.name.clone());
                if let Ok(cname) = CString::new(pw.name.as_str())
                    && let Ok(gs) = nix::unistd::getgrouplist(&cname, pw.gid)
                {
                    id.groups = gs.iter().map(|g| g.as_raw()).collect();
                }
            }
            Ok(None) => {
                cx.err_at(
                    Some(u.span()),
                    "user",
                    format!(
                        "no such user \"{}\" on this host (see /etc/passwd)",
                        u.get_ref()
                    ),
                );
                return None;
            }
            Err(e) => {
                cx.err_at(
                    Some(u.span()),
                    "user",
                    format!("cannot look up user \"{}\": {e}", u.get_ref()),
                );
                return None;
            }
        }
    }
    if let Some(g) = group {
        let lookup = match g.get_ref().parse::<u32>() {
            Ok(n) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(n)),
            Err(_) => nix::unistd::Group::from_name(g.get_ref()),
        };
        match lookup {
            Ok(Some(gr)) => {
                id.gid = gr.gid.as_raw();
                if user.is_none() {
                    id.groups = vec![id.gid];
                } else if !id.groups.contains(&id.gid) {
                    id.groups.insert(0, id.gid);
                }
            }
            Ok(None) => {
                cx.err_at(
                    Some(g.span()),
                    "group",
                    format!(
                        "no such group \"{}\" on this host (see /etc/group)",
                        g.get_ref()
                    ),
                );
                return None;
            }
            Err(e) => {
                cx.err_at(
                    Some(g.span()),
                    "group",
                    format!("cannot look up group \"{}\": {e}", g.get_ref()),
                );
                return None;
            }
        }
    }
    Some(id)
}

/// Parses and validates one app file's text. `name` is the app name (the file stem).
pub fn parse_app(name: &str, file: &Path, src: &str) -> Result<AppSpec, Vec<ConfigError>> {
    let mut cx = FileCtx {
        file,
        src,
        errors: vec![],
        removed: vec![],
    };
    if let Err(e) = valid_app_name(name) {
        cx.err_at(None, "", e);
        return Err(cx.errors);
    }
    let Some(raw) = collect::deserialize_all::<RawApp>(&mut cx, src) else {
        return Err(cx.errors);
    };
    if cx.removed.iter().any(|k| k == "isolation") {
        // Every other key's meaning depends on the level.
        return Err(cx.errors);
    }

    let isolation = match &raw.isolation {
        None => Isolation::None,
        Some(s) if s.get_ref() == "none" => Isolation::None,
        Some(s) if s.get_ref() == "bundle" => Isolation::Bundle,
        Some(s) if s.get_ref() == "wasm" => Isolation::Wasm,
        Some(s) if s.get_ref() == "sandbox" => Isolation::Sandbox,
        Some(s) => {
            cx.err_at(Some(s.span()), "isolation", format!("unknown level \"{}\"; expected one of \"none\", \"bundle\", \"sandbox\", \"wasm\"", s.get_ref()));
            Isolation::None
        }
    };

    let workdir = raw.workdir.as_ref().and_then(|w| {
        let p = PathBuf::from(w.get_ref());
        if !p.is_absolute() {
            cx.err_at(
                Some(w.span()),
                "workdir",
                format!("\"{}\" must be an absolute path", w.get_ref()),
            );
            return None;
        }
        if isolation == Isolation::Sandbox {
            // A path inside the sandbox's root: checked when the app starts.
            return Some(p);
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Some(p),
            Ok(_) => {
                cx.err_at(
                    Some(w.span()),
                    "workdir",
                    format!("{} is not a directory", p.display()),
                );
                None
            }
            Err(e) => {
                cx.err_at(
                    Some(w.span()),
                    "workdir",
                    format!("{}: {}", p.display(), crate::util::io_reason(&e)),
                );
                None
            }
        }
    });

    let mut env = BTreeMap::new();
    for (k, v) in &raw.env {
        let (ks, vs) = (k.get_ref(), v.get_ref());
        if ks.is_empty() || ks.contains('=') || ks.contains('\0') {
            cx.err_at(
                Some(k.span()),
                "env",
                format!("invalid variable name \"{ks}\": no '=' or NUL, not empty"),
            );
        } else if vs.contains('\0') {
            cx.err_at(
                Some(v.span()),
                &format!("env.{ks}"),
                "values may not contain NUL bytes",
            );
        }
        env.insert(ks.clone(), vs.clone());
    }

    let mut bundle_launch = None;
    let (command, program) = match &raw.command {
        _ if isolation == Isolation::Wasm => (vec![], PathBuf::new()), // see below
        None => {
            cx.err_at(
                Some(0..0),
                "command",
                "missing: every app needs one, e.g. command = [\"/bin/sleep\", \"100\"]",
            );
            (vec![], PathBuf::new())
        }
        Some(c) if c.get_ref().is_empty() || c.get_ref()[0].is_empty() => {
            cx.err_at(
                Some(c.span()),
                "command",
                "is empty: give the program and its arguments, e.g. [\"/bin/sleep\", \"100\"]",
            );
            (vec![], PathBuf::new())
        }
        Some(c) if c.get_ref().iter().any(|a| a.contains('\0')) => {
            cx.err_at(
                Some(c.span()),
                "command",
                "arguments may not contain NUL bytes",
            );
            (vec![], PathBuf::new())
        }
        Some(c)
            if matches!(isolation, Isolation::Bundle | Isolation::Sandbox)
                || raw.bundle.is_some()
                || raw.launch.is_some() =>
        {
            // The program comes from the bundle, not from the host's PATH.
            let (bundle, prog) = bundle_keys(&mut cx, isolation, &raw.bundle, &raw.launch, c);
            bundle_launch = bundle;
            (c.get_ref().clone(), prog)
        }
        Some(c) => {
            let prog = match resolve_program(
                &c.get_ref()[0],
                env.get("PATH").map(String::as_str),
                workdir.as_deref(),
            ) {
                Ok(p) => p,
                Err(e) => {
                    cx.err_at(Some(c.span()), "command", e);
                    PathBuf::new()
                }
            };
            (c.get_ref().clone(), prog)
        }
    };

    let identity = resolve_identity(&mut cx, raw.user.as_ref(), raw.group.as_ref());

    let mut limits = wasm::parse_limits(&mut cx, raw.limits.as_ref());
    let wasm_keys = wasm::RawWasmKeys {
        module: raw.module.as_ref(),
        args: raw.args.as_ref(),
        wasm: raw.wasm.as_ref(),
        limits: raw.limits.as_ref(),
        sandbox: raw.sandbox.as_ref(),
        command: raw.command.as_ref().map(|c| c.span()),
        workdir: raw.workdir.as_ref().map(|w| w.span()),
        user: raw.user.as_ref().map(|u| u.span()),
        group: raw.group.as_ref().map(|g| g.span()),
        bundle: raw
            .bundle
            .as_ref()
            .map(|b| b.span())
            .or(raw.launch.as_ref().map(|l| l.span())),
    };
    let (wasm, command, program) = if isolation == Isolation::Wasm {
        let w = wasm::parse_wasm(&mut cx, &wasm_keys, &mut limits, file);
        // What `status` shows as the command: the module as written, then the arguments.
        let shown = raw.module.as_ref().map(|m| m.get_ref().clone());
        let command = shown
            .into_iter()
            .chain(w.iter().flat_map(|w| w.args.iter().cloned()))
            .collect();
        let program = w.as_ref().map(|w| w.module.clone()).unwrap_or_default();
        (w, command, program)
    } else {
        wasm::refuse_for_native(&mut cx, &wasm_keys, isolation);
        (None, command, program)
    };
    let http = match (&raw.http, isolation) {
        (None, _) => None,
        (Some(h), Isolation::Wasm) => http::parse(
            &mut cx,
            h,
            wasm.as_ref().map(|w| w.kind),
            raw.module.as_ref().map_or("the module", |m| m.get_ref()),
        ),
        (Some(h), level) => {
            http::refuse_for_native(&mut cx, h, level.as_str());
            None
        }
    };
    let sandbox =
        (isolation == Isolation::Sandbox).then(|| sandbox::parse(&mut cx, raw.sandbox.as_ref()));
    if isolation == Isolation::Wasm {
        sandbox::refuse_publish(&mut cx, raw.sandbox.as_ref());
    }
    let fallback = match (&raw.fallback, isolation) {
        (None, _) => None,
        (Some(f), Isolation::Sandbox) => match f.get_ref().as_str() {
            "bundle" => Some(Isolation::Bundle),
            "none" => Some(Isolation::None),
            other => {
                cx.err_at(
                    Some(f.span()),
                    "fallback",
                    format!("unknown level \"{other}\"; a sandboxed app can fall back to \"bundle\" (or \"none\") when the host cannot sandbox it"),
                );
                None
            }
        },
        (Some(f), level) => {
            cx.err_at(
                Some(f.span()),
                "fallback",
                format!("is only used with isolation = \"sandbox\" (level \"{}\" needs nothing special from the host)", level.as_str()),
            );
            None
        }
    };

    let mut restart = RestartSpec::default();
    if let Some(r) = &raw.restart {
        if let Some(p) = r.policy {
            restart.policy = p;
        }
        if let Some(d) = r.backoff_initial {
            restart.backoff_initial = d.0;
        }
        if let Some(d) = &r.backoff_max {
            restart.backoff_max = d.get_ref().0;
            if restart.backoff_max < restart.backoff_initial {
                cx.err_at(
                    Some(d.span()),
                    "restart.backoff_max",
                    "must not be smaller than restart.backoff_initial",
                );
            }
        }
        if let Some(d) = r.stable_after {
            restart.stable_after = d.0;
        }
        if let Some(n) = r.max_failures {
            restart.max_failures = n;
        }
    }
    if restart.backoff_max < restart.backoff_initial {
        restart.backoff_max = restart.backoff_initial;
    }

    let logs = logs::logs(&mut cx, name, raw.logs.as_ref());

    let health = health::health(&mut cx, raw.health.as_ref());
    let readiness = health::readiness(&mut cx, raw.readiness.as_ref(), raw.health.is_some());
    if health
        .as_ref()
        .is_some_and(|h| h.probe == health::Probe::Wasm)
        && isolation != Isolation::Wasm
        && let Some(h) = &raw.health
    {
        cx.err_at(
            Some(h.kind.span()),
            "health.kind",
            "kind = \"wasm\" calls a wasm module's exported `health` function: it is for isolation = \"wasm\" apps",
        );
    }
    if isolation == Isolation::Wasm {
        wasm::refuse_readiness(
            &mut cx,
            &readiness,
            raw.readiness.as_ref().map(|r| r.span()),
        );
    }

    if !cx.errors.is_empty() {
        // In line order, whatever order the checks ran in.
        cx.errors.sort_by_key(|e| (e.line, e.col));
        return Err(cx.errors);
    }
    let line_of = |k: &Option<Spanned<Vec<String>>>| {
        k.as_ref().map_or(0, |s| line_col(src, s.span().start).0)
    };
    let deps_line = Ignored([line_of(&raw.after), line_of(&raw.requires)]);
    let mut requires: Vec<String> = raw.requires.map(|r| r.into_inner()).unwrap_or_default();
    requires.dedup();
    let mut after: Vec<String> = raw.after.map(|r| r.into_inner()).unwrap_or_default();
    after.retain(|a| !requires.contains(a));
    after.dedup();
    Ok(AppSpec {
        after,
        requires,
        essential: raw.essential.unwrap_or(false),
        readiness,
        health,
        deps_line,
        name: name.to_string(),
        file: file.to_path_buf(),
        command,
        program,
        workdir,
        env,
        identity,
        autostart: raw.autostart.unwrap_or(true),
        stop_signal: raw.stop_signal.map_or(libc::SIGTERM, |s| s.0),
        stop_timeout: raw.stop_timeout.map_or(Duration::from_secs(10), |d| d.0),
        isolation,
        bundle: bundle_launch,
        restart,
        logs,
        limits,
        wasm,
        http,
        sandbox,
        fallback,
    })
}

/// The keys of `isolation = "bundle"`: `bundle` and `launch`, and `command[0]` resolved inside
/// the bundle. Returns the launch and the program's path on the host.
fn bundle_keys(
    cx: &mut FileCtx,
    isolation: Isolation,
    bundle: &Option<Spanned<String>>,
    launch: &Option<Spanned<String>>,
    command: &Spanned<Vec<String>>,
) -> (Option<crate::bundle::launch::BundleLaunch>, PathBuf) {
    if !matches!(isolation, Isolation::Bundle | Isolation::Sandbox) {
        for (k, v) in [("bundle", bundle), ("launch", launch)] {
            if let Some(v) = v {
                cx.err_at(
                    Some(v.span()),
                    k,
                    "is only used with isolation = \"bundle\" or \"sandbox\"",
                );
            }
        }
        return (None, PathBuf::new());
    }
    let Some(b) = bundle else {
        cx.err_at(
            Some(0..0),
            "bundle",
            format!("missing: isolation = \"{}\" needs the bundle to run, e.g. bundle = \"nginx\" (a name from `paddock bundle ls`, an id, or a bundle directory)", isolation.as_str()),
        );
        return (None, PathBuf::new());
    };
    match crate::bundle::launch::BundleLaunch::resolve(
        b.get_ref(),
        launch.as_ref().map(|l| l.get_ref().as_str()),
        &command.get_ref()[0],
    ) {
        Ok(l) => {
            let prog = crate::bundle::in_root(&l.root(), &l.program);
            (Some(l), prog)
        }
        Err((key, msg)) => {
            let span = match key {
                "launch" => launch.as_ref().map(|l| l.span()),
                "command" => Some(command.span()),
                _ => Some(b.span()),
            };
            cx.err_at(span, key, msg);
            (None, PathBuf::new())
        }
    }
}

/// Reads one app file.
pub fn load_file(path: &Path) -> Result<AppSpec, Vec<ConfigError>> {
    load_one(path).0
}

/// One app file, and when it has errors, its place in the dependency graph as far as it can be
/// read (so the graph is checked in the same run).
fn load_one(path: &Path) -> (Result<AppSpec, Vec<ConfigError>>, Option<graph::Node>) {
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
    match parse_app(name, path, &src) {
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
            let prev = apps
                .get(name)
                .map(|a| &a.file)
                .or(broken.get(name).map(|n| &n.file));
            if let Some(prev) = prev {
                errors.push(ConfigError {
                    file: f.clone(),
                    line: 0,
                    col: 0,
                    message: format!("duplicate app name \"{name}\": already defined by {}; app names must be unique across config directories", prev.display()),
                });
                continue;
            }
            match loaded {
                Ok(spec) => {
                    apps.insert(spec.name.clone(), spec);
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
    let nodes: Vec<graph::Node> = apps
        .values()
        .map(graph::Node::of)
        .chain(broken.into_values())
        .collect();
    errors.extend(graph::check_nodes(&nodes));
    errors.extend(sandbox::check_publish(&apps));
    errors.extend(logs::check_log_files(&apps));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<AppSpec, Vec<ConfigError>> {
        parse_app("web", Path::new("/etc/paddock/apps/web.toml"), src)
    }

    fn first_err(src: &str) -> String {
        parse(src).unwrap_err()[0].to_string()
    }

    fn all_errs(src: &str) -> String {
        parse(src)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn sandbox_keys_are_checked_precisely() {
        let sb = "isolation = \"sandbox\"\nbundle = \"/nonexistent/bundle\"\ncommand = [\"x\"]\n";
        let cases = [
            (
                "[sandbox]\nread_write = [\"relative\"]\n",
                ":5:15: key `sandbox.read_write`: \"relative\" must be an absolute path",
            ),
            (
                "[sandbox]\nread_only = [\"/no/such/dir\"]\n",
                "key `sandbox.read_only`: /no/such/dir: No such file or directory on this host; create it, or remove it from the list",
            ),
            (
                "[sandbox]\nread_only = [\"/etc\"]\nread_write = [\"/etc\"]\n",
                "key `sandbox.read_write`: /etc is already listed in sandbox.read_only",
            ),
            (
                "[sandbox]\ntmpfs = [\"/proc/x\"]\n",
                "key `sandbox.tmpfs`: /proc is made by paddock",
            ),
            (
                "[sandbox]\nread_only = [\"/\"]\n",
                "would give the app the whole host",
            ),
            (
                "[sandbox]\ntcp_bind = [70000]\n",
                "key `sandbox.tcp_bind`: a native sandbox restricts TCP by port",
            ),
            (
                "[sandbox]\ntcp_connect = [\"10.0.0.1:5432\"]\n",
                "key `sandbox.tcp_connect`: a native sandbox restricts TCP by port",
            ),
            (
                "[sandbox]\ncapabilities = [\"FLY\"]\n",
                "key `sandbox.capabilities`: unknown capability \"FLY\"",
            ),
            (
                "[sandbox]\nseccomp = \"strict\"\n",
                "key `sandbox.seccomp`: unknown value \"strict\"",
            ),
            (
                "[sandbox]\nnetwork = \"bridge\"\n",
                "key `sandbox.network`: unknown value \"bridge\"",
            ),
            ("[sandbox]\nuserns = \"yes\"\n", "key `sandbox.userns`"),
            ("[sandbox]\nudp = 1\n", "key `sandbox.udp`"),
            (
                "[sandbox]\naddress_families = [\"AF_NETLINK\", \"AF_FOO\"]\n",
                ":5:35: key `sandbox.address_families`: unknown or unsupported family \"AF_FOO\"; AF_UNIX, AF_INET and AF_INET6 are always allowed, and these can be added: AF_NETLINK,",
            ),
            (
                "[sandbox]\nsyscalls = [\"io_uring_setup\", \"nosuchcall\"]\n",
                ":5:31: key `sandbox.syscalls`: unknown system call \"nosuchcall\"",
            ),
            (
                "[sandbox]\ntmp_size = \"1KiB\"\n",
                "key `sandbox.tmp_size`: must be at least 1MiB",
            ),
            (
                "[sandbox]\ntmp_size = \"lots\"\n",
                "key `sandbox.tmp_size`: ",
            ),
            ("[sandbox]\nhostname = \"x\"\n", "unknown field `hostname`"),
            (
                "fallback = \"wasm\"\n",
                "key `fallback`: unknown level \"wasm\"",
            ),
        ];
        for (extra, want) in cases {
            let e = all_errs(&format!("{sb}{extra}"));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = all_errs("command = [\"/bin/true\"]\nfallback = \"bundle\"\n");
        assert!(
            e.contains("key `fallback`: is only used with isolation = \"sandbox\""),
            "{e}"
        );
        let e = all_errs("command = [\"/bin/true\"]\n[sandbox]\nread_only = [\"/etc\"]\n");
        assert!(
            e.contains("the [sandbox] table is for isolation = \"sandbox\""),
            "{e}"
        );
        let e = all_errs("isolation = \"sandbox\"\ncommand = [\"x\"]\n");
        assert!(
            e.contains("missing: isolation = \"sandbox\" needs the bundle"),
            "{e}"
        );
    }

    #[test]
    fn one_line_app() {
        let a = parse(r#"command = ["/bin/sleep", "100007"]"#).unwrap();
        assert_eq!(a.command, vec!["/bin/sleep", "100007"]);
        assert!(a.autostart);
        assert_eq!(a.stop_signal, libc::SIGTERM);
        assert_eq!(a.stop_timeout, Duration::from_secs(10));
        assert_eq!(a.restart, RestartSpec::default());
        assert_eq!(a.logs, LogSpec::default());
    }

    #[test]
    fn path_lookup() {
        let a = parse(r#"command = ["sleep", "1"]"#).unwrap();
        assert!(a.program.ends_with("sleep"));
        assert!(first_err(r#"command = ["no-such-prog-xyz"]"#).contains("not found in PATH"));
    }

    #[test]
    fn full_file() {
        let a = parse(
            r#"
command = ["/bin/sh", "-c", "echo hi"]
workdir = "/tmp"
env = { A = "1" }
autostart = false
stop_signal = "INT"
stop_timeout = "2s"
isolation = "none"
[restart]
policy = "always"
backoff_initial = "0s"
backoff_max = "1m"
stable_after = "500ms"
max_failures = 0
[logs]
max_size = "64KiB"
keep = 2
stdout = "inherit"
combine = true
"#,
        )
        .unwrap();
        assert_eq!(a.stop_signal, libc::SIGINT);
        assert_eq!(a.restart.policy, RestartPolicy::Always);
        assert_eq!(a.restart.backoff_initial, Duration::ZERO);
        assert_eq!(a.restart.backoff_max, Duration::from_secs(60));
        assert_eq!(a.logs.max_size, 65536);
        assert_eq!(a.logs.stdout, StdoutMode::Inherit);
        assert!(a.logs.combine && !a.autostart);
        assert_eq!(a.env["A"], "1");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = first_err("command = [\"/bin/true\"]\n[restart]\npolcy = \"always\"\n");
        assert!(
            e.starts_with(
                "/etc/paddock/apps/web.toml:3:1: key `restart.polcy`: unknown field `polcy`"
            ),
            "{e}"
        );
        assert!(e.contains("policy"), "{e}");
        let e = first_err("command = [\"/bin/true\"]\nstop_timeout = \"10x\"\n");
        assert!(
            e.contains(":2:") && e.contains("key `stop_timeout`") && e.contains("unknown unit"),
            "{e}"
        );
        let e = first_err("command = [\"/bin/true\"]\nstop_timeout = 10\n");
        assert!(
            e.contains("key `stop_timeout`") && e.contains("\"10s\""),
            "{e}"
        );
        let e = first_err("command = [\"/bin/true\"]\n[restart]\npolicy = \"sometimes\"\n");
        assert!(
            e.contains(":3:") && e.contains("restart.policy") && e.contains("always"),
            "{e}"
        );
        let e = first_err("command = []\n");
        assert!(e.contains(":1:11: key `command`: is empty"), "{e}");
        let e = first_err("workdir = \"/\"\n");
        assert!(e.contains("key `command`: missing"), "{e}");
        let e = first_err("command = [\"/nonexistent/bin/x\"]\n");
        assert!(
            e.contains("No such file or directory") || e.contains("does not exist"),
            "{e}"
        );
        let e = first_err("command = [\"/etc/passwd\"]\n");
        assert!(e.contains("not executable"), "{e}");
        let e = first_err("command = [\"/bin/true\"]\nisolation = \"vm\"\n");
        assert!(e.contains("key `isolation`: unknown level \"vm\""), "{e}");
        let e = first_err("command = [\"/bin/true\"]\nuser = \"no-such-user-xyz\"\n");
        assert!(e.contains("key `user`: no such user"), "{e}");
        let e = first_err("command = [\"/bin/true\"]\nstop_signal = \"FOO\"\n");
        assert!(e.contains("key `stop_signal`: unknown signal"), "{e}");
        let e = first_err("command = [\"/bin/true\"\n");
        assert!(e.contains("web.toml:"), "{e}");
        let e = first_err(
            "command = [\"/bin/true\"]\n[restart]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n",
        );
        assert!(e.contains("restart.backoff_max"), "{e}");
        let e = first_err("command = [\"/bin/true\"]\nenv = { \"A=B\" = \"1\" }\n");
        assert!(
            e.contains("web.toml:2:9: key `env`: invalid variable name"),
            "{e}"
        );
        let e = first_err("command = [\"/bin/true\"]\n[logs]\nmax_size = \"12XB\"\n");
        assert!(
            e.contains("logs.max_size") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn names() {
        assert!(valid_app_name("web-1_a.b@x").is_ok());
        assert!(valid_app_name("all").is_err());
        assert!(valid_app_name("a b").is_err());
        assert!(valid_app_name(".hidden").is_err());
        assert!(valid_app_name("").is_err());
    }

    #[test]
    fn diffing() {
        let a = parse(r#"command = ["/bin/sleep", "1"]"#).unwrap();
        let mut b = a.clone();
        b.command[1] = "2".into();
        let mut c = a.clone();
        c.name = "other".into();
        let old: BTreeMap<String, &AppSpec> = [("web".to_string(), &a)].into();
        let new: BTreeMap<String, AppSpec> =
            [("web".to_string(), b), ("other".to_string(), c)].into();
        let d = diff(&old, &new);
        assert_eq!(d.added, vec!["other"]);
        assert_eq!(d.changed, vec!["web"]);
        assert!(d.removed.is_empty());
        let d = diff(&old, &BTreeMap::new());
        assert_eq!(d.removed, vec!["web"]);
    }
}
