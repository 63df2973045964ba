//! supervisord's INI config: each `[program:NAME]` becomes an app file (`numprocs = N` becomes
//! one file with `instances = N` when `%i` can stand for `%(process_num)`, else N files named by
//! `process_name`); `stdout_logfile`/`stderr_logfile` become `[logs]` paths; every other key
//! and section is mapped or noted.

use super::{AppOut, Import, Note, app_name, arr, q, secs, split_words};
use std::path::Path;

struct Section {
    name: String,
    line: usize,
    keys: Vec<(String, String, usize)>,
}

/// INI as supervisord reads it: `key = value` (or `key: value`), `;` and `#` comments (inline
/// after whitespace), indented continuation lines.
fn parse_ini(src: &str) -> Result<Vec<Section>, String> {
    let mut out: Vec<Section> = vec![];
    for (i, raw) in src.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        let cut = |s: &str| -> String {
            let mut end = s.len();
            for pat in [" ;", "\t;", " #", "\t#"] {
                if let Some(p) = s.find(pat) {
                    end = end.min(p);
                }
            }
            s[..end].trim().to_string()
        };
        if raw.starts_with([' ', '\t'])
            && let Some((_, v, _)) = out.last_mut().and_then(|s| s.keys.last_mut())
        {
            v.push('\n');
            v.push_str(&cut(trimmed));
            continue;
        }
        if let Some(h) = trimmed.strip_prefix('[') {
            let Some(name) = h.strip_suffix(']') else {
                return Err(format!(
                    "line {line_no}: a section header must end with ']'"
                ));
            };
            out.push(Section {
                name: name.trim().to_string(),
                line: line_no,
                keys: vec![],
            });
            continue;
        }
        let sep = trimmed
            .find(['=', ':'])
            .ok_or_else(|| format!("line {line_no}: expected `key = value`, found {trimmed:?}"))?;
        let Some(sec) = out.last_mut() else {
            return Err(format!("line {line_no}: a key before any [section]"));
        };
        let key = trimmed[..sep].trim().to_ascii_lowercase();
        sec.keys
            .push((key, cut(trimmed[sep + 1..].trim()), line_no));
    }
    Ok(out)
}

/// `%(program_name)s`, `%(process_num)02d`, `%(here)s`, `%(ENV_X)s`, `%%`.
fn expand(v: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some(r) = rest.strip_prefix('(') else {
            out.push('%');
            continue;
        };
        let close = r.find(')').ok_or("unterminated %(…)")?;
        let name = &r[..close];
        let spec_end = r[close + 1..]
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or("%(…) without a conversion such as s or d")?;
        let spec = &r[close + 1..close + 1 + spec_end];
        let value = if let Some(env) = name.strip_prefix("ENV_") {
            std::env::var(env).map_err(|_| format!("%({name})s: {env} is not set here"))?
        } else {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("unknown expansion %({name})"))?
        };
        let width: usize = spec.trim_start_matches('0').parse().unwrap_or(0);
        if spec.starts_with('0') {
            out.push_str(&format!("{value:0>width$}"));
        } else {
            out.push_str(&format!("{value:>width$}"));
        }
        rest = &r[close + 1 + spec_end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Stands for `%(process_num)` while an `instances` file is written; becomes `%i`.
const PROCESS_NUM: &str = "\u{E000}";

/// Every `%(process_num)` in `v` is `s` or `d` with no width, so `%i` can say it.
fn process_num_plain(v: &str) -> bool {
    v.match_indices("%(process_num)")
        .all(|(i, m)| matches!(v.as_bytes().get(i + m.len()), Some(b's' | b'd')))
}

/// `/dev/stdout` and the like, as supervisord's log file names for its own output.
fn is_own_output(v: &str) -> bool {
    matches!(v, "/dev/stdout" | "/dev/stderr" | "/dev/fd/1" | "/dev/fd/2")
}

/// Why `stream`'s `/dev/stdout` cannot become `stdout = "inherit"`, which sends both streams
/// to paddock's own output: the other stream goes to a file of its own.
fn inherit_clash<'a>(
    stream: &str,
    get: &impl Fn(&str) -> Option<&'a (String, String, usize)>,
    redirect: bool,
) -> Option<String> {
    let other = if stream == "stdout" {
        "stderr_logfile"
    } else {
        "stdout_logfile"
    };
    let v = get(other).map(|(_, v, _)| v.as_str());
    let fine = match v {
        Some(v) if is_own_output(v) => true,
        // stdout to paddock's output; stderr has no file of its own.
        _ if stream == "stdout" => {
            redirect
                || v.is_none_or(|v| {
                    v.eq_ignore_ascii_case("AUTO") || v.eq_ignore_ascii_case("NONE")
                })
        }
        _ => false,
    };
    (!fine).then(|| {
        format!(
            "not mapped: paddock sends an app's output to its own only for both streams (`[logs] stdout = \"inherit\"`), and {other} goes elsewhere; set both to /dev/stdout, or give this stream a file"
        )
    })
}

/// Where `stdout_logfile`/`stderr_logfile` puts a stream, in paddock's `[logs]`.
#[derive(Debug, PartialEq)]
enum LogPath {
    /// `/dev/stdout` and the like: paddock's own output.
    Inherit,
    /// `AUTO`: paddock's own file, `LOG_DIR/NAME.out` / `.err`.
    Default,
    /// stderr into stdout's file.
    Combine,
    File(String),
    /// Not mapped, and why.
    No(String),
}

/// `v` (expanded; `%i` in it for instances) for `stream`. `redirect`: `redirect_stderr = true`;
/// `same_as_stdout`: the stderr file is stdout's; `instances`: how many share the app file.
fn log_path(
    v: &str,
    stream: &str,
    redirect: bool,
    same_as_stdout: bool,
    instances: Option<usize>,
) -> LogPath {
    if is_own_output(v) {
        return LogPath::Inherit;
    }
    match v.to_ascii_uppercase().as_str() {
        "AUTO" => return LogPath::Default,
        "NONE" => {
            return LogPath::No(format!(
                "not mapped: paddock does not discard output; it stays in LOG_DIR/NAME.{} (rotated: [logs] max_size, keep)",
                if stream == "stdout" { "out" } else { "err" }
            ));
        }
        "SYSLOG" => {
            return LogPath::No(
                "not mapped: paddock writes files (`[logs] format = \"json\"` for a shipper)"
                    .into(),
            );
        }
        _ => {}
    }
    if stream == "stderr" && redirect {
        return LogPath::No(
            "not needed: redirect_stderr = true sends stderr to stdout's file (supervisord ignores stderr_logfile then too)".into(),
        );
    }
    if same_as_stdout {
        return LogPath::Combine;
    }
    if !v.starts_with('/') {
        return LogPath::No(format!(
            "not mapped: {v:?} is not an absolute path; set [logs] {stream} to one"
        ));
    }
    if let Some(n) = instances
        && !v.contains("%i")
    {
        return LogPath::No(format!(
            "not mapped: the {n} instances would share one file, which paddock refuses (each file has one writer); put %(process_num)d in the path"
        ));
    }
    let probe = v.replace("%%", "%").replace("%i", "0");
    let dir = if probe.ends_with('/') {
        Path::new(&probe)
    } else {
        Path::new(&probe).parent().unwrap_or(Path::new("/"))
    };
    if !dir.is_dir() {
        return LogPath::No(format!(
            "not mapped: the directory {} does not exist here (paddock creates log files, not directories); create it and set [logs] {stream} = {}",
            dir.display(),
            q(v)
        ));
    }
    LogPath::File(v.to_string())
}

/// `A="1",B=two` → pairs.
fn env_pairs(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut parts = vec![];
    for c in v.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (k, val) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not KEY=value"))?;
        let val = split_words(val)?.join(" ");
        out.push((k.trim().to_string(), val));
    }
    Ok(out)
}

fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

pub(super) fn convert(file: &str, src: &str, here: &Path) -> Result<Import, String> {
    let mut imp = Import::default();
    for sec in parse_ini(src)? {
        let Some(prog) = sec.name.strip_prefix("program:") else {
            let why = match sec.name.split(':').next().unwrap_or("") {
                "supervisord" | "unix_http_server" | "inet_http_server" | "supervisorctl" => {
                    "paddock's own settings are `serve` flags and /etc/paddock/paddock.toml (see docs/config.md and docs/pid1.md)"
                }
                "rpcinterface" => "paddock's API is HTTP/JSON on its control socket",
                "group" => {
                    "paddock has no groups: name several apps on the command line (`paddock restart a b`), or order them with `after`/`requires`"
                }
                "include" => "import the included files too (`paddock import a.conf b.conf …`)",
                "eventlistener" => {
                    "no event listeners: read `paddock events` (one JSON line per state change)"
                }
                "fcgi-program" => "no FastCGI sockets: run it as a plain program",
                _ => "unknown section",
            };
            imp.notes.push(Note {
                line: sec.line,
                key: format!("[{}]", sec.name),
                why: format!("not mapped: {why}"),
            });
            continue;
        };
        program(file, prog.trim(), &sec, here, &mut imp)?;
    }
    Ok(imp)
}

fn program(
    file: &str,
    prog: &str,
    sec: &Section,
    here: &Path,
    imp: &mut Import,
) -> Result<(), String> {
    let get = |k: &str| sec.keys.iter().find(|(kk, _, _)| kk == k);
    let numprocs: usize = match get("numprocs") {
        None => 1,
        Some((_, v, l)) => v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("line {l}: numprocs = {v:?}: expected 1 to 1000"))?,
    };
    let numprocs_start: usize = get("numprocs_start")
        .and_then(|(_, v, _)| v.parse().ok())
        .unwrap_or(0);
    // `numprocs = N` becomes one file with `instances = N` when paddock's `%i` (0 … N-1, no
    // padding) can say what `%(process_num)` said; else N app files.
    let instances_why_not = if numprocs < 2 {
        None
    } else if numprocs as i64 > crate::config::instances::MAX_INSTANCES {
        Some(format!(
            "paddock runs at most {} instances of one file",
            crate::config::instances::MAX_INSTANCES
        ))
    } else if numprocs_start != 0 {
        Some(format!(
            "numprocs_start = {numprocs_start}: paddock's instances count from 0"
        ))
    } else {
        sec.keys
            .iter()
            .filter(|(k, _, _)| k != "process_name")
            .find(|(_, v, _)| !process_num_plain(v))
            .map(|(k, _, _)| format!("{k} pads %(process_num): paddock's %i is the bare number"))
    };
    let as_instances = numprocs > 1 && instances_why_not.is_none();
    let runs = if as_instances { 1 } else { numprocs };
    let redirect = get("redirect_stderr").is_some_and(|(_, v, _)| truthy(v) == Some(true));
    for i in 0..runs {
        let num = numprocs_start + i;
        let vars = [
            ("program_name", prog.to_string()),
            ("group_name", prog.to_string()),
            (
                "process_num",
                if as_instances {
                    PROCESS_NUM.to_string()
                } else {
                    num.to_string()
                },
            ),
            ("numprocs", numprocs.to_string()),
            ("here", here.display().to_string()),
            (
                "host_node_name",
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ];
        let x = |v: &str, l: usize| {
            let s = expand(v, &vars).map_err(|e| format!("line {l}: {e}"))?;
            // In an instances file every other `%` is doubled (docs/config.md#instances).
            Ok::<_, String>(if as_instances {
                s.replace('%', "%%").replace(PROCESS_NUM, "%i")
            } else {
                s
            })
        };
        let pname = match get("process_name") {
            Some((_, v, l)) if !as_instances && (numprocs > 1 || v != "%(program_name)s") => {
                x(v, *l)?
            }
            _ => prog.to_string(),
        };
        let name = app_name(&pname);
        let mut a = AppOut::new(&name, format!("{file} [program:{prog}]"));
        if as_instances {
            a.set("instances", numprocs.to_string());
        }
        // Notes are taken once, from the first process.
        let mut notes = vec![];
        let mut note = |l: usize, k: &str, why: String| {
            if i == 0 {
                notes.push(Note {
                    line: l,
                    key: format!("[program:{prog}] {k}"),
                    why,
                });
            }
        };
        if name != pname {
            note(
                sec.line,
                "process_name",
                format!(
                    "the app is named \"{name}\" (paddock's names are letters, digits, - _ . @)"
                ),
            );
        }
        let autorestart = get("autorestart").map(|(_, v, _)| v.to_ascii_lowercase());
        for (k, raw, l) in &sec.keys {
            let l = *l;
            let v = x(raw, l)?;
            match k.as_str() {
                "command" => {
                    let words = split_words(&v).map_err(|e| format!("line {l}: command: {e}"))?;
                    if words.is_empty() {
                        return Err(format!("line {l}: command is empty"));
                    }
                    a.set("command", arr(&words));
                }
                "directory" => a.set("workdir", q(&v)),
                "environment" => {
                    for (ek, ev) in env_pairs(&v).map_err(|e| format!("line {l}: environment: {e}"))? {
                        a.set_in("env", &ek, q(&ev));
                    }
                }
                "user" => a.set("user", q(&v)),
                "autostart" => match truthy(&v) {
                    Some(b) => a.set("autostart", b.to_string()),
                    None => note(l, k, format!("not mapped: {v:?} is not true or false")),
                },
                "autorestart" => {
                    let p = match v.to_ascii_lowercase().as_str() {
                        "true" => "always",
                        "false" => "never",
                        "unexpected" => "on-failure",
                        _ => {
                            note(l, k, format!("not mapped: {v:?}"));
                            continue;
                        }
                    };
                    a.set_in("restart", "policy", q(p));
                }
                "exitcodes" => {
                    let codes: Vec<&str> = v.split(',').map(str::trim).collect();
                    if codes != ["0"] && autorestart.as_deref() != Some("true") && autorestart.as_deref() != Some("false") {
                        note(l, k, format!("not mapped: paddock counts every non-zero exit as a failure (exitcodes = {v}); make the program exit 0 when it ends as expected"));
                    }
                }
                "startsecs" => {
                    if let Some(d) = secs(&v) {
                        a.set_in("restart", "stable_after", d);
                    }
                    note(l, k, format!("mapped to [restart] stable_after = \"{v}s\" (a run that long resets the failure count); for when the app is ready, give it [readiness] (health = true with a [health] check, or notify) instead of a delay"));
                }
                "startretries" => match v.parse::<u32>() {
                    Ok(n) => a.set_in("restart", "max_failures", (n + 1).to_string()),
                    Err(_) => note(l, k, format!("not mapped: {v:?} is not a number")),
                },
                "stopsignal" => a.set("stop_signal", q(&v)),
                "stopwaitsecs" => match secs(&v) {
                    Some(d) => a.set("stop_timeout", d),
                    None => note(l, k, format!("not mapped: {v:?} is not a number of seconds")),
                },
                "stopasgroup" | "killasgroup" => note(l, k, "not needed: paddock always signals the app's whole process group and kills its whole cgroup".into()),
                "redirect_stderr" => {
                    if truthy(&v) == Some(true) {
                        a.set_in("logs", "combine", "true".into());
                    }
                }
                "stdout_logfile" | "stderr_logfile" => {
                    let stream = if k == "stdout_logfile" { "stdout" } else { "stderr" };
                    let same_as_stdout = stream == "stderr"
                        && get("stdout_logfile").is_some_and(|(_, o, _)| o == raw);
                    match log_path(&v, stream, redirect, same_as_stdout, as_instances.then_some(numprocs)) {
                        // paddock's `stdout = "inherit"` takes both streams.
                        LogPath::Inherit => match inherit_clash(stream, &get, redirect) {
                            None => a.set_in("logs", "stdout", q("inherit")),
                            Some(why) => note(l, k, why),
                        },
                        LogPath::Default => {}
                        LogPath::Combine => a.set_in("logs", "combine", "true".into()),
                        LogPath::File(p) => a.set_in("logs", stream, q(&p)),
                        LogPath::No(why) => note(l, k, why),
                    }
                }
                "stdout_logfile_maxbytes" | "stderr_logfile_maxbytes" => {
                    if v != "0" {
                        a.set_in("logs", "max_size", q(&v));
                    }
                }
                "stdout_logfile_backups" | "stderr_logfile_backups" => match v.parse::<u32>() {
                    Ok(n) => a.set_in("logs", "keep", n.min(1000).to_string()),
                    Err(_) => note(l, k, format!("not mapped: {v:?}")),
                },
                "numprocs" => {
                    if as_instances {
                        note(l, k, format!("mapped to instances = {numprocs}: apps {prog}@0 … {prog}@{} (%(process_num) became %i); `paddock restart {prog}` restarts them one at a time", numprocs - 1));
                    } else if numprocs > 1 {
                        let why = instances_why_not.as_deref().unwrap_or("");
                        note(l, k, format!("written as {numprocs} app files named by process_name ({name}, …), not as instances ({why}); start and stop them together by listing them or with `all`"));
                    }
                }
                "numprocs_start" => {}
                "process_name" => {
                    if as_instances && raw != "%(program_name)s" {
                        note(l, k, format!("not mapped: instances are named {prog}@0 … {prog}@{}", numprocs - 1));
                    }
                }
                "priority" => note(l, k, "not mapped: paddock orders by `after`/`requires` (start once another is READY), not by number".into()),
                "umask" => note(l, k, "not mapped: set it in the command (`sh -c 'umask 022; exec …'`)".into()),
                "serverurl" => note(l, k, "not needed: paddock's CLI finds its socket by --socket or PADDOCK_SOCKET".into()),
                other => note(l, other, "not mapped: paddock has no such setting".into()),
            }
        }
        if !a.has("command") {
            return Err(format!(
                "line {}: [program:{prog}] has no command",
                sec.line
            ));
        }
        imp.notes.extend(notes);
        imp.apps.push(a);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_programs_and_notes_the_rest() {
        let src = "[supervisord]\nlogfile=/tmp/s.log\n\n[program:w]\ncommand=/bin/sh -c 'echo \"$G\"' ; comment\ndirectory=/tmp\nenvironment=G=\"hello world\",M=x\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)02d\nautorestart=unexpected\nstartsecs=3\npriority=5\n";
        let i = convert("s.conf", src, Path::new("/etc")).unwrap();
        // numprocs with process_num only in process_name: one file with instances.
        assert_eq!(i.apps.len(), 1);
        assert_eq!(i.apps[0].name, "w");
        let t = i.apps[0].to_toml();
        assert!(t.contains("instances = 2"), "{t}");
        assert!(
            t.contains("command = [\"/bin/sh\", \"-c\", 'echo \"$G\"']"),
            "{t}"
        );
        assert!(t.contains("G = \"hello world\""), "{t}");
        assert!(t.contains("policy = \"on-failure\""), "{t}");
        assert!(t.contains("stable_after = \"3s\""), "{t}");
        let keys: Vec<&str> = i.notes.iter().map(|n| n.key.as_str()).collect();
        assert!(keys.contains(&"[supervisord]"), "{keys:?}");
        assert!(keys.contains(&"[program:w] priority"), "{keys:?}");
        assert!(keys.contains(&"[program:w] startsecs"), "{keys:?}");
        assert_eq!(
            i.notes
                .iter()
                .filter(|n| n.key.ends_with("priority"))
                .count(),
            1
        );
        assert!(convert("s.conf", "[program:x]\ndirectory=/\n", Path::new("/")).is_err());
        assert!(
            convert("s.conf", "[program:x]\ncommand='a\n", Path::new("/"))
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn numprocs_become_instances_when_percent_i_can_say_it() {
        let src = "[program:w]\ncommand=/bin/echo %(process_num)d 100%%\nnumprocs=3\nstdout_logfile=/tmp/w-%(process_num)s.log\n";
        let i = convert("s.conf", src, Path::new("/etc")).unwrap();
        assert_eq!(i.apps.len(), 1);
        let t = i.apps[0].to_toml();
        assert!(t.contains("instances = 3"), "{t}");
        assert!(
            t.contains(r#"command = ["/bin/echo", "%i", "100%%"]"#),
            "{t}"
        );
        assert!(t.contains(r#"stdout = "/tmp/w-%i.log""#), "{t}");
        // Padded numbers, or numbering from 1: N files, and the note says why.
        for (src, why) in [
            (
                "[program:w]\ncommand=/bin/echo %(process_num)02d\nnumprocs=2\n",
                "command pads",
            ),
            (
                "[program:w]\ncommand=/bin/echo\nnumprocs=2\nnumprocs_start=1\nprocess_name=w%(process_num)d\n",
                "numprocs_start = 1",
            ),
        ] {
            let i = convert("s.conf", src, Path::new("/etc")).unwrap();
            assert_eq!(i.apps.len(), 2, "{src}");
            assert!(i.notes.iter().any(|n| n.why.contains(why)), "{:?}", i.notes);
        }
        // One log file for every instance is not mapped.
        let src = "[program:w]\ncommand=/bin/echo %(process_num)d\nnumprocs=2\nstdout_logfile=/tmp/w.log\n";
        let i = convert("s.conf", src, Path::new("/etc")).unwrap();
        assert!(!i.apps[0].to_toml().contains("[logs]"));
        assert!(
            i.notes
                .iter()
                .any(|n| n.why.contains("would share one file")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn own_output_only_for_both_streams() {
        let conv = |keys: &str| {
            let src = format!("[program:w]\ncommand=/bin/true\n{keys}");
            let i = convert("s.conf", &src, Path::new("/etc")).unwrap();
            (i.apps[0].to_toml(), i.notes)
        };
        // stdout to paddock's output, stderr to a file: not inherit (which takes both).
        let (t, notes) = conv("stdout_logfile=/dev/stdout\nstderr_logfile=/tmp/x.err\n");
        assert!(!t.contains("inherit"), "{t}");
        assert!(t.contains(r#"stderr = "/tmp/x.err""#), "{t}");
        assert!(
            notes
                .iter()
                .any(|n| n.key.ends_with("stdout_logfile") && n.why.contains("both streams")),
            "{notes:?}"
        );
        // The reverse order keeps stdout's file.
        let (t, _) = conv("stdout_logfile=/tmp/x.out\nstderr_logfile=/dev/stderr\n");
        assert!(
            t.contains(r#"stdout = "/tmp/x.out""#) && !t.contains("inherit"),
            "{t}"
        );
        // Both, or stdout alone: inherit.
        for keys in [
            "stdout_logfile=/dev/stdout\nstderr_logfile=/dev/stderr\n",
            "stdout_logfile=/dev/stdout\n",
            "stdout_logfile=/dev/stdout\nredirect_stderr=true\n",
        ] {
            let (t, _) = conv(keys);
            assert!(t.contains(r#"stdout = "inherit""#), "{keys}: {t}");
        }
        // More processes than paddock's instances: N files.
        let src = "[program:w]\ncommand=/bin/echo %(process_num)d\nnumprocs=300\n";
        let i = convert("s.conf", src, Path::new("/etc")).unwrap();
        assert_eq!(i.apps.len(), 300);
        assert!(
            i.notes
                .iter()
                .any(|n| n.why.contains("at most 256 instances")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn log_files() {
        use LogPath::*;
        assert_eq!(
            log_path("/tmp/a.log", "stdout", false, false, None),
            File("/tmp/a.log".into())
        );
        assert_eq!(
            log_path("/tmp/", "stderr", false, false, None),
            File("/tmp/".into())
        );
        assert_eq!(log_path("AUTO", "stdout", false, false, None), Default);
        assert_eq!(
            log_path("/dev/stdout", "stdout", false, false, None),
            Inherit
        );
        assert_eq!(log_path("/tmp/a.log", "stderr", false, true, None), Combine);
        for (v, stream, redirect, why) in [
            ("NONE", "stdout", false, "does not discard"),
            ("syslog", "stdout", false, "writes files"),
            ("/tmp/b.log", "stderr", true, "redirect_stderr"),
            ("rel.log", "stdout", false, "not an absolute path"),
            (
                "/nonexistent-dir/a.log",
                "stdout",
                false,
                "does not exist here",
            ),
        ] {
            match log_path(v, stream, redirect, false, None) {
                No(w) => assert!(w.contains(why), "{v}: {w}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn expansions() {
        let vars = [
            ("program_name", "web".to_string()),
            ("process_num", "3".to_string()),
        ];
        assert_eq!(
            expand("%(program_name)s-%(process_num)03d 100%%", &vars).unwrap(),
            "web-003 100%"
        );
        assert!(expand("%(nope)s", &vars).is_err());
    }
}
