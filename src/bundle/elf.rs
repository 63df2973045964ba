//! What the resolver needs from an ELF file: its class, byte order and machine (to skip
//! libraries built for another ABI, such as 32-bit ones), its interpreter (`PT_INTERP`), and its
//! dynamic section (`DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`, `DT_SONAME`, `DF_1_NODEFLIB`).
//! Parsing is goblin's; this module only turns it into plain data and precise errors.

use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};
use goblin::elf::header::{ET_DYN, ET_EXEC};

/// The ABI a loader accepts: class, byte order, machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abi {
    pub class64: bool,
    pub little: bool,
    pub machine: u16,
}

const DF_1_NODEFLIB: u64 = 0x800;

impl Abi {
    pub fn describe(&self) -> String {
        let m = match self.machine {
            EM_X86_64 => "x86-64",
            EM_386 => "i386",
            EM_AARCH64 => "aarch64",
            EM_ARM => "arm",
            EM_RISCV => "riscv",
            EM_PPC64 => "ppc64",
            EM_S390 => "s390",
            _ => "machine",
        };
        format!(
            "{}-bit {}{}",
            if self.class64 { 64 } else { 32 },
            m,
            if m == "machine" {
                format!(" {}", self.machine)
            } else {
                String::new()
            }
        )
    }

    /// Debian's multiarch directory name for this ABI.
    pub fn triplet(&self) -> Option<&'static str> {
        Some(match (self.machine, self.class64, self.little) {
            (EM_X86_64, true, _) => "x86_64-linux-gnu",
            (EM_X86_64, false, _) => "x86_64-linux-gnux32",
            (EM_386, _, _) => "i386-linux-gnu",
            (EM_AARCH64, true, true) => "aarch64-linux-gnu",
            (EM_ARM, false, true) => "arm-linux-gnueabihf",
            (EM_RISCV, true, _) => "riscv64-linux-gnu",
            (EM_PPC64, true, true) => "powerpc64le-linux-gnu",
            (EM_S390, true, _) => "s390x-linux-gnu",
            _ => return None,
        })
    }

    /// What `$PLATFORM` expands to (the kernel's AT_PLATFORM for this machine).
    pub fn platform(&self) -> &'static str {
        match self.machine {
            EM_X86_64 if self.class64 => "x86_64",
            EM_X86_64 | EM_386 => "i686",
            EM_AARCH64 => "aarch64",
            EM_ARM => "v7l",
            EM_RISCV => "riscv64",
            EM_PPC64 => "ppc64le",
            EM_S390 => "s390x",
            _ => "unknown",
        }
    }

    /// What `$LIB` expands to: Debian's loader uses its multiarch directory, others `lib64` or
    /// `lib`.
    pub fn lib_dst(&self) -> String {
        if let Some(t) = self.triplet()
            && (std::path::Path::new("/lib").join(t).is_dir()
                || std::path::Path::new("/usr/lib").join(t).is_dir())
        {
            return format!("lib/{t}");
        }
        if self.class64 { "lib64" } else { "lib" }.into()
    }

    /// The loader's built-in search directories, after `ld.so.cache`.
    pub fn default_dirs(&self) -> Vec<String> {
        let mut v = vec![];
        if let Some(t) = self.triplet() {
            v.push(format!("/lib/{t}"));
            v.push(format!("/usr/lib/{t}"));
        }
        if self.class64 {
            v.push("/lib64".into());
            v.push("/usr/lib64".into());
        }
        v.push("/lib".into());
        v.push("/usr/lib".into());
        v
    }
}

/// The ABI in an ELF header, or `None` if the bytes are not an ELF file.
pub fn read_abi(b: &[u8]) -> Option<Abi> {
    if b.len() < 20 || &b[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match b[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match b[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = [b[18], b[19]];
    let machine = if little {
        u16::from_le_bytes(m)
    } else {
        u16::from_be_bytes(m)
    };
    Some(Abi {
        class64,
        little,
        machine,
    })
}

/// The ABI of a file on disk (reads its first 64 bytes): `Ok(None)` if it is not ELF.
pub fn file_abi(path: &std::path::Path) -> std::io::Result<Option<Abi>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut b = [0u8; 64];
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(read_abi(&b[..n]))
}

/// The dynamic-linking facts of one ELF file.
#[derive(Clone, Debug, PartialEq)]
pub struct ElfInfo {
    pub abi: Abi,
    /// `ET_EXEC` or `ET_DYN` (other types are refused by `parse`).
    pub executable_type: bool,
    /// A shared object with no interpreter and no entry point: a library, not a program.
    pub library_only: bool,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    pub nodeflib: bool,
}

/// The first bytes of a file, printable, for "it starts with …" messages.
pub fn preview(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .take(16)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    s
}

/// Parses an ELF file's bytes. Errors say why the file is unusable.
pub fn parse(bytes: &[u8]) -> Result<ElfInfo, String> {
    let Some(abi) = read_abi(bytes) else {
        return Err(if bytes.is_empty() {
            "is empty, not an ELF file".into()
        } else if bytes.starts_with(b"#!") {
            let line = bytes.split(|&c| c == b'\n').next().unwrap_or_default();
            let line = &line[..line.len().min(80)];
            format!(
                "is a script ({}), not an ELF file",
                String::from_utf8_lossy(line).trim()
            )
        } else {
            format!("is not an ELF file (it starts with \"{}\")", preview(bytes))
        });
    };
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| format!("is a damaged ELF file: {e}"))?;
    let t = elf.header.e_type;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let interp = elf.interpreter.map(str::to_string);
    Ok(ElfInfo {
        abi,
        executable_type: t == ET_EXEC || t == ET_DYN,
        library_only: t == ET_DYN && interp.is_none() && elf.entry == 0,
        interp,
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        soname: elf.soname.map(str::to_string),
        nodeflib: elf
            .dynamic
            .as_ref()
            .is_some_and(|d| d.info.flags_1 & DF_1_NODEFLIB != 0),
    })
}

/// Expands the loader's dynamic string tokens in one RPATH/RUNPATH entry: `$ORIGIN` (the
/// directory of the object), `$LIB`, `$PLATFORM`, also written `${…}`. Returns the expansion and
/// whether it used `$ORIGIN` (such a directory moves with the object, inside the bundle).
/// An unknown token is kept as written, as glibc does.
pub fn expand_dst(entry: &str, origin: &str, abi: &Abi) -> (String, bool) {
    let mut out = String::with_capacity(entry.len() + origin.len());
    let mut used_origin = false;
    let mut rest = entry;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(j) => (&inner[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        match name {
            "ORIGIN" => {
                out.push_str(origin);
                used_origin = true;
            }
            "LIB" => out.push_str(&abi.lib_dst()),
            "PLATFORM" => out.push_str(abi.platform()),
            _ => {
                out.push('$');
                rest = after;
                continue;
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    (out, used_origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X64: Abi = Abi {
        class64: true,
        little: true,
        machine: EM_X86_64,
    };

    #[test]
    fn origin_and_tokens() {
        let e = |s| expand_dst(s, "/opt/app/bin", &X64);
        assert_eq!(e("$ORIGIN/../lib"), ("/opt/app/bin/../lib".into(), true));
        assert_eq!(e("${ORIGIN}/lib"), ("/opt/app/bin/lib".into(), true));
        assert_eq!(e("/usr/lib"), ("/usr/lib".into(), false));
        assert_eq!(e("/x/$PLATFORM/y"), ("/x/x86_64/y".into(), false));
        assert_eq!(e("/x/${PLATFORM}"), ("/x/x86_64".into(), false));
        let (lib, _) = e("/usr/$LIB");
        assert!(
            lib == "/usr/lib/x86_64-linux-gnu" || lib == "/usr/lib64",
            "{lib}"
        );
        assert_eq!(e("/a/$FOO/b"), ("/a/$FOO/b".into(), false));
        assert_eq!(e("$ORIGINAL"), ("$ORIGINAL".into(), false));
        assert_eq!(e("/a/${ORIGIN"), ("/a/${ORIGIN".into(), false));
        assert_eq!(e("$ORIGIN"), ("/opt/app/bin".into(), true));
    }

    #[test]
    fn abi_of_headers() {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
        h.resize(20, 0);
        h[18] = 62;
        assert_eq!(read_abi(&h), Some(X64));
        h[4] = 1;
        h[18] = 3;
        let a = read_abi(&h).unwrap();
        assert!(!a.class64);
        assert_eq!(a.describe(), "32-bit i386");
        assert_eq!(read_abi(b"#!/bin/sh\n"), None);
        assert!(parse(b"#!/bin/sh\necho\n").unwrap_err().contains("script"));
        assert!(
            parse(b"root:x:0:0:root:/root:/bin/bash\n")
                .unwrap_err()
                .contains("not an ELF file (it starts with \"root:x:0:0:root:")
        );
        assert!(parse(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn parses_a_real_program() {
        let Ok(b) = std::fs::read("/bin/sh") else {
            return;
        };
        let Ok(i) = parse(&b) else { return };
        assert!(i.executable_type);
        assert!(i.needed.iter().any(|n| n.starts_with("libc.so")), "{i:?}");
    }
}
