//! `[logs]`: rotation, where each stream goes (the log directory, a file or a directory of the
//! app's choosing, or paddock's own output) and the format of the lines.

use super::units::Size;
use super::{AppSpec, ConfigError, FileCtx, LogSpec, StdoutMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How each line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-25T10:32:51.024Z text`
    #[default]
    Text,
    /// One JSON object per line: `{"time":…,"app":…,"stream":…,"line":…}`.
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    max_size: Option<Spanned<Size>>,
    keep: Option<Spanned<u32>>,
    stdout: Option<Spanned<String>>,
    stderr: Option<Spanned<String>>,
    combine: Option<bool>,
    format: Option<Spanned<String>>,
}

const STDOUT_VALUES: &str =
    "\"file\", \"inherit\", or an absolute path (a file, or a directory ending in /)";

pub(super) fn logs(cx: &mut FileCtx, name: &str, raw: Option<&RawLogs>) -> LogSpec {
    let mut logs = LogSpec::default();
    let Some(l) = raw else {
        return logs;
    };
    if let Some(s) = &l.max_size {
        logs.max_size = s.get_ref().0;
        if logs.max_size < 1024 {
            cx.err_at(Some(s.span()), "logs.max_size", "must be at least 1KiB");
        }
    }
    if let Some(k) = &l.keep {
        logs.keep = *k.get_ref();
        if logs.keep > 1000 {
            cx.err_at(
                Some(k.span()),
                "logs.keep",
                "at most 1000 rotated files can be kept",
            );
        }
    }
    if let Some(c) = l.combine {
        logs.combine = c;
    }
    if let Some(f) = &l.format {
        match f.get_ref().as_str() {
            "text" => logs.format = LogFormat::Text,
            "json" => logs.format = LogFormat::Json,
            other => cx.err_at(
                Some(f.span()),
                "logs.format",
                format!("unknown format \"{other}\": use \"text\" (the default) or \"json\""),
            ),
        }
    }
    if let Some(s) = &l.stdout {
        logs.at.0[0] = cx.pos(s.span().start);
        match s.get_ref().as_str() {
            "file" => {}
            "inherit" => logs.stdout = StdoutMode::Inherit,
            p => match target(p, name, "out") {
                Ok(t) => logs.stdout_file = Some(t),
                Err(e) => cx.err_at(Some(s.span()), "logs.stdout", e),
            },
        }
    }
    if let Some(s) = &l.stderr {
        logs.at.0[1] = cx.pos(s.span().start);
        let inherit = logs.stdout == StdoutMode::Inherit;
        match s.get_ref().as_str() {
            "file" => {}
            "inherit" => cx.err_at(
                Some(s.span()),
                "logs.stderr",
                "stderr cannot be inherited alone: `stdout = \"inherit\"` hands both streams to paddock's own stdout and stderr",
            ),
            _ if inherit => cx.err_at(
                Some(s.span()),
                "logs.stderr",
                "has no effect with `stdout = \"inherit\"` (both streams go to paddock's own output): remove one of them",
            ),
            _ if logs.combine => cx.err_at(
                Some(s.span()),
                "logs.stderr",
                "has no effect with `combine = true` (stderr goes into stdout's file): remove one of them",
            ),
            p => match target(p, name, "err") {
                Ok(t) => {
                    if logs.stdout_file.as_ref() == Some(&t) {
                        cx.err_at(
                            Some(s.span()),
                            "logs.stderr",
                            format!(
                                "{} is stdout's file too: two streams cannot rotate one file; to have both in one file, write `combine = true` and no stderr",
                                t.display()
                            ),
                        );
                    } else {
                        logs.stderr_file = Some(t);
                    }
                }
                Err(e) => cx.err_at(Some(s.span()), "logs.stderr", e),
            },
        }
    }
    if logs.stdout == StdoutMode::Inherit
        && let Some(f) = &l.format
        && logs.format == LogFormat::Json
    {
        cx.err_at(
            Some(f.span()),
            "logs.format",
            "has no effect with `stdout = \"inherit\"`: paddock does not see that output",
        );
    }
    logs
}

fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The file a stream goes to for `stdout`/`stderr = "<path>"`: the path itself, or, for a
/// directory (written with a trailing `/`, or an existing directory), `DIR/NAME.out` (`.err`).
pub fn target(p: &str, name: &str, ext: &str) -> Result<PathBuf, String> {
    if p.contains('\0') {
        return Err("the path contains a NUL character".into());
    }
    if !p.starts_with('/') {
        return Err(format!(
            "\"{p}\" is not {STDOUT_VALUES}: a path must be absolute (e.g. \"/var/log/{name}.log\" or \"/var/log/{name}/\")"
        ));
    }
    let path = Path::new(p);
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("{p} contains `..`: write the path without it"));
    }
    let meta = std::fs::metadata(path);
    let dir = p.ends_with('/') || meta.as_ref().is_ok_and(|m| m.is_dir());
    let (dir_path, file) = if dir {
        let trimmed = p.trim_end_matches('/');
        let d = Path::new(if trimmed.is_empty() { "/" } else { trimmed });
        (d.to_path_buf(), d.join(format!("{name}.{ext}")))
    } else {
        let parent = path.parent().unwrap_or(Path::new("/"));
        (parent.to_path_buf(), path.to_path_buf())
    };
    match std::fs::metadata(&dir_path) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(if dir {
                format!(
                    "{} is {}, not a directory (without the trailing /, the path names a file)",
                    dir_path.display(),
                    kind(m.file_type())
                )
            } else {
                format!(
                    "{} (the directory of {p}) is {}, not a directory",
                    dir_path.display(),
                    kind(m.file_type())
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the directory {} does not exist: create it (paddock creates log files, not directories)",
                dir_path.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "{}: {}",
                dir_path.display(),
                crate::util::io_reason(&e)
            ));
        }
    }
    match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => {}
        Ok(m) => {
            return Err(format!(
                "{} is {}, not a regular file: name a file (paddock appends to it and rotates it) or a directory ending in /",
                file.display(),
                kind(m.file_type())
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "{}: {}",
                file.display(),
                crate::util::io_reason(&e)
            ));
        }
    }
    // Rotation renames the file within its directory: paddock must be able to write there.
    if let Err(e) = nix::unistd::access(&dir_path, nix::unistd::AccessFlags::W_OK) {
        return Err(format!(
            "paddock cannot create files in {}: {}",
            dir_path.display(),
            e.desc()
        ));
    }
    Ok(file)
}

/// Two apps (or an app's two streams) writing and rotating one file would tear each other's
/// lines and rotations: each explicit log file belongs to one stream.
pub fn check_log_files(apps: &BTreeMap<String, AppSpec>) -> Vec<ConfigError> {
    let mut errors = vec![];
    let mut seen: Vec<(&AppSpec, &Path, usize)> = vec![];
    for a in apps.values() {
        let files = [&a.logs.stdout_file, &a.logs.stderr_file];
        for (i, f) in files.iter().enumerate() {
            let Some(f) = f else { continue };
            if let Some((other, _, j)) = seen.iter().find(|(_, g, _)| *g == f.as_path()) {
                let (line, col) = a.logs.at.0[i];
                let (oline, ocol) = other.logs.at.0[*j];
                errors.push(ConfigError {
                    file: a.file.clone(),
                    line,
                    col,
                    message: format!(
                        "key `logs.{}`: {} is already the {} log of app \"{}\" ({}:{oline}:{ocol}); each log file belongs to one app",
                        ["stdout", "stderr"][i],
                        f.display(),
                        ["stdout", "stderr"][*j],
                        other.name,
                        other.file.display(),
                    ),
                });
            } else {
                seen.push((a, f, i));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_files_or_files_in_directories() {
        let d = std::env::temp_dir().join(format!("paddock-logtarget-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let ds = d.display().to_string();
        assert_eq!(
            target(&format!("{ds}/"), "web", "out").unwrap(),
            d.join("web.out")
        );
        assert_eq!(target(&ds, "web", "err").unwrap(), d.join("web.err"));
        assert_eq!(
            target(&format!("{ds}/x.log"), "web", "out").unwrap(),
            d.join("x.log")
        );
        assert!(
            target("x.log", "web", "out")
                .unwrap_err()
                .contains("must be absolute")
        );
        assert!(target("/a\0b", "web", "out").unwrap_err().contains("NUL"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
