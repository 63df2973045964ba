//! One app file parsed: its keys checked one by one (every error, with its line and column, in
//! one pass), the program found on PATH or in its bundle, the user and group looked up. What a
//! key means is documented in docs/config.md.

use super::*;

/// The dotted key written on the line holding `offset` ("restart.policy"), from the line's
/// `key =` and the nearest `[table]` header above it.
pub(super) fn key_at(src: &str, offset: usize) -> Option<String> {
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
    pub(super) file: &'a Path,
    pub(super) src: &'a str,
    pub(super) errors: Vec<ConfigError>,
    /// Keys taken out because they did not deserialize: already reported, so later checks
    /// say nothing more about them (a `command = 5` is not also "missing").
    pub(super) removed: Vec<String>,
    /// Parsed as this instance of an app with `instances` (`%i` is replaced).
    pub(super) instance: Option<u32>,
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

pub(super) fn resolve_identity(
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

/// Parses and validates one app file's text as one app (`instances` is checked, not
/// expanded: see `parse_app_instances`). `name` is the app name (the file stem).
pub fn parse_app(name: &str, file: &Path, src: &str) -> Result<AppSpec, Vec<ConfigError>> {
    parse_one(name, file, src, None)
}

/// One app file's apps: the app, or with `instances = N` its N instances `NAME@0` …
/// (config/instances.rs); the errors of the first instance that has any.
pub fn parse_app_instances(
    name: &str,
    file: &Path,
    src: &str,
) -> Result<Vec<AppSpec>, Vec<ConfigError>> {
    let Some(n) = instances::count_of(name, src) else {
        return parse_one(name, file, src, None).map(|a| vec![a]);
    };
    (0..n)
        .map(|i| parse_one(name, file, src, Some(i)))
        .collect()
}

fn parse_one(
    name: &str,
    file: &Path,
    src: &str,
    instance: Option<u32>,
) -> Result<AppSpec, Vec<ConfigError>> {
    let mut cx = FileCtx {
        file,
        src,
        errors: vec![],
        removed: vec![],
        instance,
    };
    if let Err(e) = valid_app_name(name) {
        cx.err_at(None, "", e);
        return Err(cx.errors);
    }
    let group = name;
    let inst_name = instance.map(|i| instances::instance_name(name, i));
    let name = inst_name.as_deref().unwrap_or(name);
    if let Err(e) = valid_app_name(name) {
        cx.err_at(None, "", format!("instance {name}: {e}"));
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
        if let Some(p) = &r.policy {
            restart.policy = *p.get_ref();
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
    let instance = instances::check_keys(
        &mut cx,
        group,
        raw.instances.as_ref(),
        raw.restart
            .as_ref()
            .and_then(|r| r.max_unavailable.as_ref()),
        instance,
    );

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

    let readiness_fd = match readiness.when {
        health::ReadyWhen::Fd { fd } => Some(fd),
        _ => None,
    };
    let sockets = listen::parse(
        &mut cx,
        name,
        raw.listen.as_ref(),
        raw.start.as_ref(),
        raw.idle_stop.as_ref(),
        raw.autostart.as_ref().map(|a| *a.get_ref()),
        isolation,
        readiness_fd,
    );
    let schedule = schedule::parse(
        &mut cx,
        &schedule::Keys {
            schedule: raw.schedule.as_ref(),
            every: raw.every.as_ref(),
            timezone: raw.timezone.as_ref(),
            overlap: raw.overlap.as_ref(),
            catch_up: raw.catch_up.as_ref(),
            autostart: raw.autostart.as_ref(),
            policy: raw.restart.as_ref().and_then(|r| r.policy.as_ref()),
            readiness: raw.readiness.as_ref().map(|r| r.span()),
            listen: raw.listen.as_ref().map(|l| l.span()),
            start: raw.start.as_ref(),
            http: raw.http.as_ref().map(|h| h.span()),
            isolation,
        },
    );

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
        health: health.map(Box::new),
        instance,
        deps_line,
        name: name.to_string(),
        file: file.to_path_buf(),
        command,
        program,
        workdir,
        env,
        identity: identity.map(Box::new),
        // A scheduled app starts at its times, never at boot.
        autostart: raw
            .autostart
            .as_ref()
            .map_or(!sockets.on_demand, |a| *a.get_ref())
            && schedule.is_none(),
        schedule: schedule.map(Box::new),
        listen: sockets.listen,
        on_demand: sockets.on_demand,
        idle_stop: sockets.idle_stop,
        stop_signal: raw.stop_signal.map_or(libc::SIGTERM, |s| s.0),
        stop_timeout: raw.stop_timeout.map_or(Duration::from_secs(10), |d| d.0),
        isolation,
        bundle: bundle_launch.map(Box::new),
        restart,
        rollback: raw.restart.as_ref().and_then(|r| r.rollback),
        logs,
        limits,
        wasm: wasm.map(Box::new),
        http: http.map(Box::new),
        sandbox: sandbox.map(Box::new),
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
