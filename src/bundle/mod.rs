//! Dependency bundles: an app's own executables plus exactly the shared libraries they load,
//! built by parsing ELF files (never by running them), stored by content hash, verified before
//! each start and launched through the bundle's own ELF interpreter (isolation level `bundle`).
//!
//! - `recipe`: `bundles/NAME.toml` (entry, include, data, libs) with `file:line:col` errors;
//! - `elf`, `ldcache`: ELF headers and dynamic sections, glibc's `/etc/ld.so.cache`;
//! - `resolve`: the closure, searched the way glibc's loader searches (RPATH, RUNPATH, cache,
//!   default directories; `$ORIGIN`, `$LIB`, `$PLATFORM`);
//! - `manifest`: the deterministic `manifest.toml`, whose sha256 is the bundle id;
//! - `store`: objects by sha256, one materialised tree per bundle, refs, `ls`, `gc`;
//! - `verify`: full checks (`paddock bundle verify`) and the cached check before each start;
//! - `launch`: the app keys `bundle` / `launch` and the exec plan of a bundled app;
//! - `cli`: `paddock bundle build|ls|inspect|verify|gc`.

pub mod cli;
pub mod elf;
pub mod launch;
pub mod ldcache;
pub mod manifest;
pub mod recipe;
pub mod resolve;
pub mod store;
pub mod verify;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Where bundles live unless `--store` (or `PADDOCK_STORE`) says otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/paddock/bundles";

static STORE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the store that app files' `bundle = "NAME"` keys are resolved in (`--store`).
pub fn set_store(dir: &Path) {
    if let Ok(mut s) = STORE.write() {
        *s = Some(dir.to_path_buf());
    }
}

/// The store app files are resolved in.
pub fn store_dir() -> PathBuf {
    STORE
        .read()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE))
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// sha256 and size of a file's content, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    sha256_reader(&mut f)
}

pub fn sha256_reader(r: &mut impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// A bundle id: the 64 lowercase hex digits of a sha256.
pub fn is_id(s: &str) -> bool {
    is_hex(s) && s.len() == 64
}

pub fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first 12 digits of an id, for tables and messages.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Lexically normalises an absolute path: removes `.`, empty components and resolves `..`
/// (`..` at the root stays at the root). `None` for a relative path.
pub fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = vec![];
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The directory part of a normalised absolute path ("/" for "/x").
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A relative symlink target that leads from the directory `from_dir` to `to` (both normalised
/// absolute paths), as `ln -sr` would write it.
pub fn relative_target(from_dir: &str, to: &str) -> String {
    let a: Vec<&str> = from_dir.split('/').filter(|c| !c.is_empty()).collect();
    let b: Vec<&str> = to.split('/').filter(|c| !c.is_empty()).collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<&str> = vec![".."; a.len() - common];
    out.extend(&b[common..]);
    out.join("/")
}

/// `path` inside a tree rooted at `root` (`path` is absolute in the bundle).
pub fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A TOML basic string, escaped.
pub(crate) fn toml_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                o.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Human size: "812 B", "4.2 KiB", "13.0 MiB".
pub fn human_size(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else if n < 1 << 30 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize("/a/./b//c/../d").as_deref(), Some("/a/b/d"));
        assert_eq!(normalize("/../..").as_deref(), Some("/"));
        assert_eq!(normalize("a/b"), None);
        assert_eq!(parent("/usr/lib/x.so"), "/usr/lib");
        assert_eq!(parent("/x"), "/");
        assert_eq!(basename("/usr/lib/x.so"), "x.so");
        assert_eq!(
            relative_target("/lib64", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            "../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        assert_eq!(
            relative_target("/usr/bin", "/usr/bin/redis-check-rdb"),
            "redis-check-rdb"
        );
        assert_eq!(relative_target("/", "/a/b"), "a/b");
    }

    #[test]
    fn hashing() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_id(&sha256_bytes(b"")));
        assert!(!is_id("ABC"));
        assert_eq!(toml_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
