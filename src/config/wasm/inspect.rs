//! What kind of file a `module` is, from its first bytes, and what to tell the operator when it
//! is not a WebAssembly binary paddock can run.

use serde::Serialize;

/// The two shapes of WebAssembly binary paddock runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A core module: a WASI preview 1 command exporting `_start` (wasm32-wasip1).
    Core,
    /// A component of the `wasi:cli/command` world exporting `wasi:cli/run` (wasm32-wasip2).
    Component,
    /// A component exporting `wasi:http/incoming-handler` (the `wasi:http/proxy` world),
    /// served per request (`[http]`). Known once the component is loaded, not from its header.
    Http,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Core => "a WASI preview 1 core module",
            Kind::Component => "a WASI preview 2 component",
            Kind::Http => "a wasi:http component (served per request)",
        }
    }
}

/// Reads the 8-byte header: `\0asm`, then a 16-bit version and a 16-bit layer (0 for core
/// modules, version 1; 1 for components).
pub fn sniff(head: &[u8]) -> Result<Kind, String> {
    if head.len() >= 8 && &head[..4] == b"\0asm" {
        let version = u16::from_le_bytes([head[4], head[5]]);
        let layer = u16::from_le_bytes([head[6], head[7]]);
        return match (layer, version) {
            (0, 1) => Ok(Kind::Core),
            (1, _) => Ok(Kind::Component),
            _ => Err(format!(
                "it is a WebAssembly binary of an unknown encoding (version {version}, layer {layer}); paddock runs core modules (version 1) and components"
            )),
        };
    }
    Err(format!(
        "{}; a WebAssembly binary starts with the bytes 00 61 73 6d (\"\\0asm\")",
        describe_non_wasm(head)
    ))
}

/// A short description of what a file that is not wasm looks like.
pub fn describe_non_wasm(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".into();
    }
    if head.len() < 8 && b"\0asm".starts_with(&head[..head.len().min(4)]) {
        return format!("the file is truncated ({} bytes)", head.len());
    }
    if head.starts_with(b"\x7fELF") {
        return "it is an ELF file (a native program, or a precompiled .cwasm): give the .wasm file, or run native programs with isolation = \"none\" and command = [...]".into();
    }
    if head.starts_with(b"#!") {
        return "it is a script (it starts with \"#!\"): run scripts with isolation = \"none\""
            .into();
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return "it is gzip-compressed data: decompress it first".into();
    }
    if head.starts_with(b"PK\x03\x04") {
        return "it is a zip archive".into();
    }
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    if trimmed.starts_with("(module")
        || trimmed.starts_with("(component")
        || trimmed.starts_with(";;")
    {
        return "it is WebAssembly text (.wat), not a binary: convert it with `wasm-tools parse FILE.wat -o FILE.wasm` (or `wat2wasm`)".into();
    }
    let printable = head
        .iter()
        .take(64)
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80);
    if printable && std::str::from_utf8(head).is_ok() {
        let first: String = trimmed.chars().take(24).collect();
        let first = first.lines().next().unwrap_or("");
        return format!("it is text starting with \"{}\"", first.escape_default());
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("it starts with the bytes {}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(sniff(b"\0asm\x01\0\0\0rest").unwrap(), Kind::Core);
        assert_eq!(sniff(b"\0asm\x0d\0\x01\0").unwrap(), Kind::Component);
        assert!(
            sniff(b"\0asm\x02\0\0\0")
                .unwrap_err()
                .contains("unknown encoding")
        );
        assert!(sniff(b"").unwrap_err().contains("empty"));
        assert!(sniff(b"\0as").unwrap_err().contains("truncated"));
        assert!(sniff(b"\x7fELF\x02\x01\x01\0").unwrap_err().contains("ELF"));
        assert!(sniff(b"#!/bin/sh\necho").unwrap_err().contains("script"));
        assert!(sniff(b"  (module (func))").unwrap_err().contains(".wat"));
        let e = sniff(b"hello world\n").unwrap_err();
        assert!(e.contains("text starting with \"hello world\""), "{e}");
        assert!(e.contains("00 61 73 6d"), "{e}");
        let e = sniff(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap_err();
        assert!(e.contains("bytes 01 02 03 04 05 06 07 08"), "{e}");
    }
}
