//! glibc's `/etc/ld.so.cache`, the table `ldconfig` writes from `/etc/ld.so.conf`: which file
//! provides which soname. Read the way `elf/dl-cache.c` reads it: the new format
//! ("glibc-ld.so.cache" + version "1.1") alone, or appended after an old-format
//! ("ld.so-1.7.0") table. String offsets of the new format count from its own header.

use std::path::Path;

pub const DEFAULT_CACHE: &str = "/etc/ld.so.cache";

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;

/// `flags & FLAG_TYPE_MASK` of a glibc ELF library.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub flags: i32,
    /// The soname, e.g. "libc.so.6".
    pub key: String,
    /// The file, e.g. "/lib/x86_64-linux-gnu/libc.so.6".
    pub value: String,
    /// Non-zero for entries of a hardware-capability subdirectory.
    pub hwcap: u64,
}

/// A parsed cache: entries in file order (the order the loader tries them).
#[derive(Clone, Debug, Default)]
pub struct Cache {
    pub entries: Vec<Entry>,
}

impl Cache {
    /// Reads the cache file; a missing file is an empty cache (the loader then uses only its
    /// default directories), a damaged one an error.
    pub fn load(path: &Path) -> Result<Cache, String> {
        match std::fs::read(path) {
            Ok(b) => parse(&b).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cache::default()),
            Err(e) => Err(format!(
                "{}: {}",
                path.display(),
                crate::util::io_reason(&e)
            )),
        }
    }

    /// Files registered for a soname, baseline entries (no hwcap) first, in file order.
    pub fn lookup<'a>(&'a self, soname: &str) -> Vec<&'a str> {
        let mut v: Vec<&Entry> = self.entries.iter().filter(|e| e.key == soname).collect();
        v.sort_by_key(|e| e.hwcap != 0);
        v.into_iter().map(|e| e.value.as_str()).collect()
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn cstr_at(b: &[u8], off: usize) -> Result<String, String> {
    let tail = b
        .get(off..)
        .ok_or_else(|| format!("string offset {off} is past the end of the file"))?;
    let end = tail
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| format!("string at offset {off} is not terminated"))?;
    String::from_utf8(tail[..end].to_vec())
        .map_err(|_| format!("string at offset {off} is not UTF-8"))
}

/// Parses the bytes of an `ld.so.cache`.
pub fn parse(b: &[u8]) -> Result<Cache, String> {
    let start = if b.starts_with(NEW_MAGIC) {
        0
    } else if b.starts_with(OLD_MAGIC) {
        let n = u32_at(b, 12).ok_or("truncated old-format header")? as usize;
        let end = n
            .checked_mul(OLD_ENTRY)
            .and_then(|x| x.checked_add(OLD_HEADER))
            .ok_or("old-format entry count overflows")?;
        let aligned = end.div_ceil(8) * 8;
        if !b.get(aligned..).is_some_and(|t| t.starts_with(NEW_MAGIC)) {
            return Err(
                "only the old \"ld.so-1.7.0\" format is present; run ldconfig to rewrite it".into(),
            );
        }
        aligned
    } else {
        return Err(format!(
            "not an ld.so.cache (starts with \"{}\"; expected \"glibc-ld.so.cache1.1\")",
            super::elf::preview(b)
        ));
    };
    let d = &b[start..];
    if d.len() < NEW_HEADER {
        return Err("truncated header".into());
    }
    let nlibs = u32_at(d, 20).ok_or("truncated header")? as usize;
    let endian = d[28];
    let native = if cfg!(target_endian = "little") { 2 } else { 3 };
    if endian != 0 && endian != native {
        return Err(format!(
            "written for the other byte order (flag {endian}); it cannot describe this host's libraries"
        ));
    }
    let table_end = nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|x| x.checked_add(NEW_HEADER))
        .ok_or("entry count overflows")?;
    if table_end > d.len() {
        return Err(format!(
            "claims {nlibs} entries but is only {} bytes long",
            b.len()
        ));
    }
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let o = NEW_HEADER + i * NEW_ENTRY;
        let flags = u32_at(d, o).ok_or("truncated entry")? as i32;
        let key = u32_at(d, o + 4).ok_or("truncated entry")? as usize;
        let value = u32_at(d, o + 8).ok_or("truncated entry")? as usize;
        let hwcap = u64_at(d, o + 16).ok_or("truncated entry")?;
        entries.push(Entry {
            flags,
            key: cstr_at(d, key).map_err(|e| format!("entry {i}: {e}"))?,
            value: cstr_at(d, value).map_err(|e| format!("entry {i}: {e}"))?,
            hwcap,
        });
    }
    Ok(Cache { entries })
}

#[cfg(test)]
pub(crate) fn synth(entries: &[(i32, &str, &str, u64)], old_prefix: usize) -> Vec<u8> {
    // Strings after the table, offsets relative to the new header.
    let mut strings: Vec<u8> = vec![];
    let base = NEW_HEADER + entries.len() * NEW_ENTRY;
    let mut offs = vec![];
    for (_, k, v, _) in entries {
        let ko = base + strings.len();
        strings.extend_from_slice(k.as_bytes());
        strings.push(0);
        let vo = base + strings.len();
        strings.extend_from_slice(v.as_bytes());
        strings.push(0);
        offs.push((ko as u32, vo as u32));
    }
    let mut d = vec![];
    d.extend_from_slice(NEW_MAGIC);
    d.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
    d.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    d.push(2);
    d.extend_from_slice(&[0; 3]);
    d.extend_from_slice(&[0; 16]);
    assert_eq!(d.len(), NEW_HEADER);
    for ((f, _, _, hw), (k, v)) in entries.iter().zip(offs) {
        d.extend_from_slice(&f.to_ne_bytes());
        d.extend_from_slice(&k.to_ne_bytes());
        d.extend_from_slice(&v.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&hw.to_ne_bytes());
    }
    d.extend_from_slice(&strings);
    if old_prefix == 0 {
        return d;
    }
    let mut o = vec![];
    o.extend_from_slice(OLD_MAGIC);
    o.push(0);
    o.extend_from_slice(&(old_prefix as u32).to_ne_bytes());
    o.resize(OLD_HEADER + old_prefix * OLD_ENTRY, 0);
    o.resize(o.len().div_ceil(8) * 8, 0);
    o.extend_from_slice(&d);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_format() {
        let b = synth(
            &[
                (0x0303, "libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1", 0),
                (
                    0x0303,
                    "libc.so.6",
                    "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6",
                    1 << 62,
                ),
                (0x0303, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0),
            ],
            0,
        );
        let c = parse(&b).unwrap();
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.entries[0].key, "libz.so.1");
        assert_eq!(c.entries[0].flags & 0xff, FLAG_ELF_LIBC6);
        assert_eq!(
            c.lookup("libc.so.6"),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6"
            ]
        );
        assert!(c.lookup("libnope.so").is_empty());
    }

    #[test]
    fn new_format_after_old() {
        let b = synth(&[(3, "libm.so.6", "/lib/libm.so.6", 0)], 3);
        assert!(b.starts_with(OLD_MAGIC));
        let c = parse(&b).unwrap();
        assert_eq!(c.lookup("libm.so.6"), vec!["/lib/libm.so.6"]);
    }

    #[test]
    fn damaged_caches_are_refused_precisely() {
        let b = synth(&[(3, "libm.so.6", "/lib/libm.so.6", 0)], 0);
        assert!(parse(&b[..30]).unwrap_err().contains("truncated header"));
        assert!(parse(&b[..60]).unwrap_err().contains("claims 1 entries"));
        let mut bad = b.clone();
        bad.truncate(bad.len() - 1); // drop the last NUL
        assert!(parse(&bad).unwrap_err().contains("not terminated"));
        let mut bad = b.clone();
        bad[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse(&bad).unwrap_err().contains("past the end"));
        let mut bad = b.clone();
        bad[28] = if cfg!(target_endian = "little") { 3 } else { 2 };
        assert!(parse(&bad).unwrap_err().contains("byte order"));
        assert!(
            parse(b"hello world")
                .unwrap_err()
                .contains("not an ld.so.cache")
        );
        let mut old = vec![];
        old.extend_from_slice(OLD_MAGIC);
        old.extend_from_slice(&[0; 5]);
        assert!(parse(&old).unwrap_err().contains("old"));
    }

    #[test]
    fn this_hosts_cache() {
        // The real file, when the host has one: libc must be in it.
        let Ok(b) = std::fs::read(DEFAULT_CACHE) else {
            return;
        };
        let c = parse(&b).unwrap();
        assert!(!c.lookup("libc.so.6").is_empty(), "{:?}", &c.entries[..3]);
    }
}
