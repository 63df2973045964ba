//! Compiled modules on disk: `<state_dir>/wasm-cache/<key>.cwasm`, so that a module is compiled
//! (Cranelift, 0.1–2 s) once per content and engine configuration, and every later start of
//! paddock loads it in about 100 µs.
//!
//! The key is the SHA-256 of: this file format's version, the module's own SHA-256, its kind
//! (core module or component) and wasmtime's precompile compatibility hash of the engine (which
//! covers the wasmtime version and every engine setting that changes compiled code, fuel
//! included). A different wasmtime or a different engine setting therefore looks up a different
//! file; an old file is simply never read again.
//!
//! File format: the 16-byte magic `paddock-cwasm-1\n`, the SHA-256 of the artifact (32 bytes),
//! the artifact as produced by `Engine::precompile_module` / `precompile_component`.
//!
//! A cache entry is never trusted blindly: it is read entirely into memory and its SHA-256 is
//! compared with its header before wasmtime sees it; a short, foreign, truncated or bit-flipped
//! file is reported, ignored and rebuilt. See `load_or_build` for why handing the verified
//! bytes to wasmtime's `unsafe` deserializer is sound.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 16] = b"paddock-cwasm-1\n";
const HEADER: usize = MAGIC.len() + 32;

/// How a compiled module was obtained (for messages and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded from a verified cache file.
    Hit,
    /// Compiled; written to the cache (when there is one).
    Compiled,
    /// A cache file was there but unusable: compiled again and the file replaced.
    Rebuilt,
}

pub struct Cache {
    dir: Option<PathBuf>,
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Feeds a `std::hash::Hash` value (wasmtime's compatibility hash) into SHA-256, so that the
/// key is the same in every run (std's `DefaultHasher` makes no such promise).
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0 // unused: the digest is taken from the inner state
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache key of a module for an engine.
pub fn key(module_sha: &[u8; 32], component: bool, engine: &wasmtime::Engine) -> String {
    use std::hash::Hash;
    let mut h = ShaHasher(Sha256::new());
    h.0.update(MAGIC);
    h.0.update(module_sha);
    h.0.update([u8::from(component)]);
    engine.precompile_compatibility_hash().hash(&mut h);
    hex(&h.0.finalize())
}

impl Cache {
    /// A cache in `dir` (created with mode 0700 if missing), or none at all (`paddock check`).
    pub fn new(dir: Option<PathBuf>) -> Result<Cache, String> {
        if let Some(d) = &dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| {
                    format!(
                        "cannot create the wasm cache {}: {}",
                        d.display(),
                        crate::util::io_reason(&e)
                    )
                })?;
        }
        Ok(Cache { dir })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.cwasm")))
    }

    /// Returns the compiled module for `key`: from a verified cache file, else from `build`
    /// (which compiles), writing the result to the cache.
    ///
    /// `deserialize` is called on artifact bytes and is expected to call wasmtime's `unsafe`
    /// `Module::deserialize` / `Component::deserialize`. Their contract is that the bytes be
    /// exactly an output of `Engine::precompile_*` (wasmtime itself rejects, safely, artifacts
    /// of another wasmtime version or an incompatible configuration, but not a doctored
    /// artifact). It holds here because the bytes passed are either
    /// - what `build` (= `Engine::precompile_*`) just returned in this process, or
    /// - the payload of a cache file that paddock wrote right after such a `build`, read fully
    ///   into memory (not mapped: a later change to the file cannot change the loaded code) and
    ///   whose SHA-256 matches the one paddock stored with it, so accidental corruption
    ///   (truncation, a disk error, a partial copy) is caught.
    ///
    /// What a hash does not protect against is someone who can write the cache directory and
    /// forges both: that directory is created 0700 under paddock's state directory, and whoever
    /// can write there can equally replace paddock's binary or app files.
    pub fn load_or_build<T>(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<Vec<u8>, String>,
        deserialize: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<(T, Outcome), String> {
        let path = self.path(key);
        let mut rebuilt = false;
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => match verify(&bytes) {
                    Ok(artifact) => match deserialize(artifact) {
                        Ok(t) => return Ok((t, Outcome::Hit)),
                        Err(e) => {
                            eprintln!(
                                "paddock: wasm cache: {} was rejected by wasmtime ({e}); compiling again",
                                p.display()
                            );
                            rebuilt = true;
                        }
                    },
                    Err(why) => {
                        eprintln!(
                            "paddock: wasm cache: {} is corrupt ({why}); ignoring it and compiling again",
                            p.display()
                        );
                        rebuilt = true;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    eprintln!(
                        "paddock: wasm cache: cannot read {}: {}; compiling again",
                        p.display(),
                        crate::util::io_reason(&e)
                    );
                    rebuilt = true;
                }
            }
        }
        let artifact = build()?;
        let t = deserialize(&artifact)?;
        if let Some(p) = &path
            && let Err(e) = write_entry(p, &artifact)
        {
            eprintln!(
                "paddock: wasm cache: cannot write {}: {}; the module will be compiled again at the next start",
                p.display(),
                crate::util::io_reason(&e)
            );
        }
        Ok((
            t,
            if rebuilt {
                Outcome::Rebuilt
            } else {
                Outcome::Compiled
            },
        ))
    }
}

/// The artifact inside a cache file, if the file is intact.
fn verify(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not a paddock cache file ({} bytes, bad header)",
            bytes.len()
        ));
    }
    let (stored, artifact) = bytes[MAGIC.len()..].split_at(32);
    let actual = sha256(artifact);
    if actual != stored {
        return Err(format!(
            "SHA-256 of the content is {}, the header says {}",
            hex(&actual[..6]),
            hex(&stored[..6])
        ));
    }
    Ok(artifact)
}

/// Writes a cache file atomically: a temporary file in the same directory, then a rename.
fn write_entry(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&sha256(artifact))?;
        f.write_all(artifact)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_damage() {
        let art = b"artifact bytes".to_vec();
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&sha256(&art));
        f.extend_from_slice(&art);
        assert_eq!(verify(&f).unwrap(), &art[..]);
        let mut flipped = f.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(verify(&flipped).unwrap_err().contains("SHA-256"));
        assert!(verify(&f[..f.len() - 3]).is_err());
        assert!(verify(&f[..20]).unwrap_err().contains("bad header"));
        assert!(verify(b"").is_err());
    }

    #[test]
    fn load_or_build_recovers() {
        let dir = std::env::temp_dir().join(format!("paddock-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::new(Some(dir.clone())).unwrap();
        let de = |b: &[u8]| Ok::<_, String>(b.to_vec());
        let (v, o) = c.load_or_build("k", || Ok(b"one".to_vec()), de).unwrap();
        assert_eq!((v.as_slice(), o), (&b"one"[..], Outcome::Compiled));
        let (v, o) = c
            .load_or_build("k", || panic!("must not compile"), de)
            .unwrap();
        assert_eq!((v.as_slice(), o), (&b"one"[..], Outcome::Hit));
        // Corrupt it: it is rebuilt, not trusted.
        let p = c.path("k").unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let (v, o) = c.load_or_build("k", || Ok(b"one".to_vec()), de).unwrap();
        assert_eq!((v.as_slice(), o), (&b"one"[..], Outcome::Rebuilt));
        // A rejected (though intact) artifact is rebuilt too.
        let (_, o) = c
            .load_or_build(
                "k",
                || Ok(b"two".to_vec()),
                |b: &[u8]| {
                    if b == b"one" {
                        Err("incompatible".to_string())
                    } else {
                        Ok(b.to_vec())
                    }
                },
            )
            .unwrap();
        assert_eq!(o, Outcome::Rebuilt);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
