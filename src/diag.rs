//! Errors in files an operator wrote (app files, bundle recipes, manifests, paddock.toml): the
//! file, the line and column, and what to do. A leaf module: the configuration and the bundle
//! code both report through it.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

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
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
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
pub fn key_on_line(src: &str, offset: usize) -> Option<(usize, String)> {
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
