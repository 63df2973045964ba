//! `paddock import FILE… --out DIR`: app files from a supervisord config (`[program:x]`
//! sections), systemd `.service` units, or `.timer` units with their service (a scheduled app). Every key is either mapped or reported with the
//! reason it was not (`Note`); the files written are then validated as `paddock check` would.
//! See docs/migrating.md for the key-by-key table.

mod supervisord;
mod systemd;
mod timer;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One app file to write: top-level keys, then tables, in the order they were set.
#[derive(Debug, Default)]
pub struct AppOut {
    pub name: String,
    /// Where it came from (`supervisord.conf [program:redis]`), written as a comment.
    pub origin: String,
    top: Vec<(String, String)>,
    tables: Vec<(String, Vec<(String, String)>)>,
}

impl AppOut {
    pub fn new(name: &str, origin: String) -> AppOut {
        AppOut {
            name: name.to_string(),
            origin,
            ..Default::default()
        }
    }

    /// Sets a top-level key to a TOML value (already formatted: use `q`, `arr`).
    pub fn set(&mut self, key: &str, value: String) {
        self.top.retain(|(k, _)| k != key);
        self.top.push((key.to_string(), value));
    }

    /// Sets `table.key`.
    pub fn set_in(&mut self, table: &str, key: &str, value: String) {
        let t = match self.tables.iter_mut().position(|(t, _)| t == table) {
            Some(i) => &mut self.tables[i].1,
            None => {
                self.tables.push((table.to_string(), vec![]));
                &mut self.tables.last_mut().expect("just pushed").1
            }
        };
        t.retain(|(k, _)| k != key);
        t.push((key.to_string(), value));
    }

    pub fn has(&self, key: &str) -> bool {
        self.top.iter().any(|(k, _)| k == key)
    }

    /// The value of `table.key`, as written.
    pub fn get_in(&self, table: &str, key: &str) -> Option<&String> {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .and_then(|(_, keys)| keys.iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    /// Drops a whole table; whether it was there.
    pub fn remove_table(&mut self, table: &str) -> bool {
        let n = self.tables.len();
        self.tables.retain(|(t, _)| t != table);
        self.tables.len() != n
    }

    pub fn to_toml(&self) -> String {
        let mut s = format!("# Imported from {} by `paddock import`.\n", self.origin);
        let key = |k: &str| {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                k.to_string()
            } else {
                q(k)
            }
        };
        for (k, v) in &self.top {
            s.push_str(&format!("{} = {v}\n", key(k)));
        }
        for (t, keys) in &self.tables {
            s.push_str(&format!("\n[{t}]\n"));
            for (k, v) in keys {
                s.push_str(&format!("{} = {v}\n", key(k)));
            }
        }
        s
    }
}

/// A key that was not mapped, or mapped with a caveat, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub line: usize,
    /// `[program:redis] stdout_logfile`
    pub key: String,
    pub why: String,
}

/// What a source file gives.
#[derive(Debug, Default)]
pub struct Import {
    pub apps: Vec<AppOut>,
    pub notes: Vec<Note>,
}

/// A TOML string.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings.
pub fn arr(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A name paddock accepts (letters, digits, `-`, `_`, `.`, `@`), from a program or unit name.
pub fn app_name(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    match s.as_str() {
        "" => "app".into(),
        "all" => "all-app".into(),
        _ => s.chars().take(64).collect(),
    }
}

/// Splits a command line as POSIX `sh` words are split, without expansions (supervisord uses
/// Python's `shlex.split`; systemd's rules are the same for quotes and backslashes).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => cur.push(c),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// A duration in seconds, as paddock writes it.
pub fn secs(n: &str) -> Option<String> {
    let v: f64 = n.trim().parse().ok()?;
    (v >= 0.0 && v.is_finite()).then(|| q(&format!("{v}s")))
}

/// Reads one source file and turns it into app files (supervisord or systemd, by its name and
/// content).
pub fn convert(path: &Path) -> Result<Import, String> {
    let src = crate::util::read_regular_text(path, 1 << 20)?;
    let here = path
        .parent()
        .map(|p| std::path::absolute(p).unwrap_or(p.to_path_buf()))
        .unwrap_or_default();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".service") {
        systemd::convert(name, &src)
    } else if name.ends_with(".timer") {
        timer::convert(name, &src, &here)
    } else if src.lines().any(|l| l.trim_start().starts_with("[program:")) {
        supervisord::convert(name, &src, &here)
    } else {
        Err("neither a systemd unit (NAME.service) nor a supervisord config with [program:NAME] sections (nor a NAME.timer, read with its service)".into())
    }
}

/// `paddock import`: converts every file, refuses to overwrite app files (unless `force`),
/// writes them, prints what was not mapped and why, and validates what it wrote.
pub fn run(files: &[PathBuf], out: &Path, force: bool) -> ExitCode {
    let mut all = vec![];
    for f in files {
        match convert(f) {
            Ok(i) => all.push((f, i)),
            Err(e) => {
                eprintln!("paddock: import {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    let mut targets = vec![];
    for (f, i) in &all {
        if i.apps.is_empty() {
            eprintln!("paddock: import {}: no program to import", f.display());
            return ExitCode::from(2);
        }
        for a in &i.apps {
            let t = out.join(format!("{}.toml", a.name));
            if targets.contains(&t) {
                eprintln!(
                    "paddock: import: two programs become app \"{}\"; rename one",
                    a.name
                );
                return ExitCode::from(2);
            }
            if t.exists() && !force {
                eprintln!(
                    "paddock: import: {} exists; nothing was written (use --force to replace it)",
                    t.display()
                );
                return ExitCode::from(2);
            }
            targets.push(t);
        }
    }
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!(
            "paddock: import: cannot create {}: {}",
            out.display(),
            crate::util::io_reason(&e)
        );
        return ExitCode::from(2);
    }
    let mut bad = 0;
    for (f, i) in &all {
        for a in &i.apps {
            let t = out.join(format!("{}.toml", a.name));
            if let Err(e) = std::fs::write(&t, a.to_toml()) {
                eprintln!(
                    "paddock: import: cannot write {}: {}",
                    t.display(),
                    crate::util::io_reason(&e)
                );
                return ExitCode::from(2);
            }
            println!("wrote {}", t.display());
        }
        for n in &i.notes {
            println!("{}:{}: {}: {}", f.display(), n.line, n.key, n.why);
        }
    }
    for t in &targets {
        if let Err(errs) = crate::config::load_file(t) {
            for e in errs {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} error(s) in the files written: fix them, then `paddock check`");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"/bin/sh -c 'echo "$X" done' "a b" c\ d """#).unwrap(),
            vec!["/bin/sh", "-c", "echo \"$X\" done", "a b", "c d", ""]
        );
        assert!(split_words("a 'b").is_err());
        assert_eq!(app_name("my prog:1"), "my-prog-1");
        assert_eq!(app_name("all"), "all-app");
    }
}
