//! Images whose layer *is* a wasm module (the media types runwasi accepts). containerd's
//! unpacker only knows tar layers (1.6.20 here: "no processor for media-type"), but it runs a
//! configured *stream processor* on a layer it does not know: this binary, with the action
//! `wasm-layer-to-tar`, reads the module on stdin and writes a one-file tar layer holding it at
//! `/.wasm-layers/<sha256>.wasm`, which the snapshotter unpacks like any layer. The shim then runs
//! that module when `process.args[0]` is not itself a module in the rootfs.

use std::io::{Read, Write};

/// The directory (inside the rootfs) that converted layers land in.
pub const DIR: &str = ".wasm-layers";
/// Largest module accepted (as paddock's wasm driver).
const MAX: u64 = 256 << 20;

/// A ustar header for `name` (< 100 bytes) of `size` bytes, regular file or directory.
fn header(name: &str, size: u64, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, if dir { 0o755 } else { 0o644 });
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// The tar layer for `module`.
pub fn to_tar(module: &[u8]) -> Result<Vec<u8>, String> {
    if module.len() < 8 || &module[..4] != b"\0asm" {
        return Err("the layer is not a WebAssembly module (no \\0asm header)".into());
    }
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(module)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("{DIR}/{hex}.wasm");
    let mut out = Vec::with_capacity(module.len() + 4096);
    out.extend_from_slice(&header(&format!("{DIR}/"), 0, true));
    out.extend_from_slice(&header(&name, module.len() as u64, false));
    out.extend_from_slice(module);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0); // two zero blocks end the archive
    Ok(out)
}

/// The `wasm-layer-to-tar` action: stdin → stdout.
pub fn convert_stdio() -> Result<(), String> {
    let mut module = vec![];
    std::io::stdin()
        .lock()
        .take(MAX + 1)
        .read_to_end(&mut module)
        .map_err(|e| format!("cannot read the layer from stdin: {e}"))?;
    if module.len() as u64 > MAX {
        return Err(format!("the layer is larger than {MAX} bytes"));
    }
    let tar = to_tar(&module)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&tar)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the tar layer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_becomes_a_tar_that_tar_reads() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let tar = to_tar(&module).unwrap();
        assert_eq!(tar.len() % 512, 0);
        let dir = std::env::temp_dir().join(format!("paddock-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("l.tar"), &tar).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-xf")
            .arg(dir.join("l.tar"))
            .status()
            .unwrap();
        assert!(st.success());
        let files: Vec<_> = std::fs::read_dir(dir.join(DIR))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(files[0].path()).unwrap(), module);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            to_tar(b"#!/bin/sh\n")
                .unwrap_err()
                .contains("not a WebAssembly module")
        );
    }
}
