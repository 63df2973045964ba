//! Small helpers shared by several modules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An I/O error as a sentence without Rust's "(os error N)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Formats a wall-clock time as RFC 3339 UTC with milliseconds: `2026-11-25T10:10:10.123Z`.
pub fn rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    use std::io::Write;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes of one boot).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, a live local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn rfc3339_string(t: SystemTime) -> String {
    let mut v = Vec::with_capacity(24);
    rfc3339(t, &mut v);
    String::from_utf8(v).unwrap_or_default()
}

/// "1d 2h", "3h 04m", "5m 06s", "7.2s": compact uptime for tables.
/// The one way paddock writes a size (status, limits, messages), in the units app files use:
/// "32MiB", "32.06MiB", "640KiB", "100B".
pub fn human_bytes(n: u64) -> String {
    let mut s = String::new();
    write_bytes(&mut s, n);
    s
}

/// `human_bytes` written into `out`: at most two decimals, trailing zeros dropped, rounded
/// half to even (as `{:.2}` rounds the exact quotient). Integer arithmetic: the status table
/// writes one per app.
pub fn write_bytes(out: &mut String, n: u64) {
    use std::fmt::Write;
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, size) in units {
        if n >= size {
            let (size, n) = (size as u128, n as u128);
            let (mut q, r) = (n * 100 / size, n * 100 % size);
            if 2 * r > size || (2 * r == size && q % 2 == 1) {
                q += 1;
            }
            let (whole, frac) = (q / 100, q % 100);
            let _ = match frac {
                0 => write!(out, "{whole}{u}"),
                f if f % 10 == 0 => write!(out, "{whole}.{}{u}", f / 10),
                f => write!(out, "{whole}.{f:02}{u}"),
            };
            return;
        }
    }
    let _ = write!(out, "{n}B");
}

pub fn human_duration(d: Duration) -> String {
    let mut s = String::new();
    write_duration(&mut s, d);
    s
}

/// `human_duration` written into `out`.
pub fn write_duration(out: &mut String, d: Duration) {
    use std::fmt::Write;
    let s = d.as_secs();
    let _ = if s >= 86_400 {
        write!(out, "{}d {}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        write!(out, "{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        write!(out, "{}m {:02}s", s / 60, s % 60)
    } else {
        let tenths = (d.as_nanos() + 50_000_000) / 100_000_000;
        write!(out, "{}.{}s", tenths / 10, tenths % 10)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer formatting says what the float formatting said.
    #[test]
    fn human_bytes_and_durations_as_before() {
        let old = |n: u64| {
            for (u, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
                if n >= size {
                    let s = format!("{:.2}", n as f64 / size as f64);
                    return format!("{}{u}", s.trim_end_matches('0').trim_end_matches('.'));
                }
            }
            format!("{n}B")
        };
        let mut n: u64 = 0;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while n < (1 << 44) {
            assert_eq!(human_bytes(n), old(n), "{n}");
            // Every small value, then a walk with random steps, and the ties around each unit.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            n = if n < 5000 {
                n + 1
            } else {
                n + 1 + x % (n / 50)
            };
        }
        for size in [1u64 << 10, 1 << 20, 1 << 30] {
            for k in 0..2000u64 {
                let n = size + k * size / 200; // every half-hundredth: the ties
                assert_eq!(human_bytes(n), old(n), "{n}");
            }
        }
        // Tenths, rounded half up on the exact time (the float formatting rounded 0.15 s,
        // stored as 0.1499…, down).
        for (ms, want) in [
            (0u64, "0.0s"),
            (49, "0.0s"),
            (50, "0.1s"),
            (149, "0.1s"),
            (150, "0.2s"),
            (999, "1.0s"),
            (8_660, "8.7s"),
            (59_949, "59.9s"),
        ] {
            assert_eq!(human_duration(Duration::from_millis(ms)), want, "{ms}");
        }
        assert_eq!(human_duration(Duration::from_secs(61)), "1m 01s");
        assert_eq!(human_duration(Duration::from_secs(90_000)), "1d 1h");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339_string(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_601_410_123);
        assert_eq!(rfc3339_string(t), "2026-11-25T10:10:10.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_string(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::from_secs(3)), "3.0s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(human_duration(Duration::from_secs(3700)), "1h 01m");
        assert_eq!(human_duration(Duration::from_secs(90_000)), "1d 1h");
    }
}

/// Writes `DIR/NAME.json` atomically: the JSON of `value` to `DIR/.NAME.tmp` (the directory
/// made if missing), renamed over the file. A reader sees the old record or the new one, never a
/// torn one; a `.NAME.tmp` left by a crash is the reader's to remove. The state directory's
/// per-app records (`crate::adopt`, `crate::schedule::record`) are written this way.
pub fn write_json_record(
    dir: &std::path::Path,
    name: &str,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    match std::fs::write(&tmp, &body) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&tmp, &body)?;
        }
        r => r?,
    }
    std::fs::rename(&tmp, &path)
}

/// Reads a file that must be a regular file of at most `limit` bytes: a FIFO, a device
/// (`/dev/zero`), a socket or a directory is refused by its type without reading (the open does
/// not block, even on a FIFO), and a larger file by its size, so a hostile path can neither
/// hang nor exhaust the reader.
pub fn read_regular(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_reason(&e))?;
    let meta = f.metadata().map_err(|e| io_reason(&e))?;
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(kind) = kind {
        return Err(format!(
            "is {kind}, not a regular file; give a regular file"
        ));
    }
    let too_big = || {
        format!(
            "is larger than {} (the limit for this kind of file)",
            crate::units::format_size(limit)
        )
    };
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_reason(&e))?;
    if buf.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &std::path::Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_regular(path, limit)?).map_err(|_| "is not valid UTF-8 text".to_string())
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn fifos_devices_and_huge_files_are_refused_without_reading() {
        let dir = std::env::temp_dir().join(format!("paddock-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("app.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(
            read_regular(&fifo, 1 << 20)
                .unwrap_err()
                .contains("is a FIFO")
        );
        let zero = std::path::Path::new("/dev/zero");
        assert!(
            read_regular(zero, 1 << 20)
                .unwrap_err()
                .contains("character device")
        );
        assert!(
            read_regular(&dir, 1 << 20)
                .unwrap_err()
                .contains("a directory")
        );
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
        assert!(
            read_regular(&big, 1 << 20)
                .unwrap_err()
                .contains("larger than 1MiB")
        );
        std::fs::write(&big, "x = 1\n").unwrap();
        assert_eq!(read_regular_text(&big, 1 << 20).unwrap(), "x = 1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A fresh scratch directory for a unit test (removed when dropped).
#[cfg(test)]
pub struct TestDir(pub std::path::PathBuf);

#[cfg(test)]
impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("paddock-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        TestDir(d)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gives the heap's free pages back to the kernel (every malloc arena's): after a burst of
/// allocations that is over (a status of 1000 apps, the status board dropped), which would
/// otherwise stay in paddock's resident memory.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a size and only gives free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Takes paddock's own code and read-only data out of its page tables once the work that
/// touched them is over (the start of the fleet, a burst of status calls), as a heap trim
/// does for the heap. A process's resident size counts every page of its executable it ever
/// touched, 64 KiB at a time (the kernel maps the neighbours of a faulting page): the start of
/// 1000 apps touches about 6 MiB of a 19 MiB text that is idle afterwards. `MADV_DONTNEED` on a
/// read-only private file mapping only removes the page-table entries: the pages stay in the
/// page cache, shared, and a later use maps them again with a minor fault. Only mappings of
/// paddock's own file that are not writable and hold no private (copy-on-write) page, in
/// memory or swapped out, are touched, so relocated data (RELRO) and `.data` are never given
/// back. Returns the bytes unmapped.
pub fn unmap_idle_code() -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut done = 0;
    for (start, len) in idle_code_ranges(&smaps, exe.dev(), exe.ino()) {
        // SAFETY: the range is a whole mapping of paddock's own executable that is not
        // writable and holds no private page, in memory or in swap (`idle_code_ranges`):
        // dropping its page table entries loses nothing, a later access maps the file's page
        // again.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if r == 0 {
            done += len;
        }
    }
    done
}

/// The mappings in `smaps` (`/proc/self/smaps`) of the file `dev`/`ino` that are read-only and
/// private and hold no private page (`Anonymous:` and `Swap:` both 0): start and length.
fn idle_code_ranges(smaps: &str, dev: u64, ino: u64) -> Vec<(usize, usize)> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut out = vec![];
    // A mapping of ours, read-only, with no private page seen in it so far.
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        // `Anonymous:` (private pages in memory) comes before `Swap:` (swapped out).
        if let Some(anon) = line.strip_prefix("Anonymous:") {
            if anon.trim() != "0 kB" {
                candidate = None;
            }
            continue;
        }
        if let Some(swap) = line.strip_prefix("Swap:") {
            if let Some(c) = candidate.take()
                && swap.trim() == "0 kB"
            {
                out.push(c);
            }
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(d), Some(i)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        candidate = None;
        let ours = i.parse::<u64>() == Ok(ino)
            && d.split_once(':').is_some_and(|(ma, mi)| {
                u32::from_str_radix(ma, 16) == Ok(major) && u32::from_str_radix(mi, 16) == Ok(minor)
            });
        if ours && perms.starts_with("r-") && perms.ends_with('p') && b > a {
            candidate = Some((a, b - a));
        }
    }
    out
}

#[cfg(test)]
mod unmap_tests {
    /// Code and relocated data still work after paddock's own text left the page tables:
    /// calls through vtables and function pointers (RELRO) and the code itself fault back in.
    #[test]
    fn code_unmapped_when_idle_comes_back_on_use() {
        let n = super::unmap_idle_code();
        assert!(
            n > 0,
            "this test binary's text is a read-only mapping of its file"
        );
        let shown: Box<dyn std::fmt::Display> = Box::new(12345u32);
        assert_eq!(format!("{shown}"), "12345");
        let f: fn(u64) -> String = super::human_bytes;
        assert_eq!(f(2048), super::human_bytes(2048));
        // Twice is harmless.
        super::unmap_idle_code();
        assert_eq!(format!("{}", 7u8), "7");
    }

    /// Only read-only private mappings of the executable with no private page, in memory or
    /// swapped out, are chosen: never RELRO (relocated, so private), `.data`, a library.
    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let m = |range: &str, perms: &str, dev: &str, ino: u64, anon: u32, swap: u32| {
            format!(
                "{range} {perms} 00000000 {dev} {ino}    /usr/bin/paddock\nSize: 8 kB\nRss: 8 kB\n\
                 Anonymous: {anon} kB\nKSM: 0 kB\nSwap: {swap} kB\nSwapPss: {swap} kB\n\
                 VmFlags: rd mr mw me\n"
            )
        };
        let dev = libc::makedev(0xfe, 0);
        let smaps = [
            m("1000-2000", "r--p", "fe:00", 42, 0, 0), // rodata: yes
            m("2000-5000", "r-xp", "fe:00", 42, 0, 0), // text: yes
            m("5000-6000", "r--p", "fe:00", 42, 4, 0), // RELRO in memory: no
            m("6000-7000", "r--p", "fe:00", 42, 0, 4), // RELRO swapped out: no
            m("7000-8000", "rw-p", "fe:00", 42, 0, 0), // .data: no
            m("8000-9000", "r-xp", "fe:00", 43, 0, 0), // another file: no
            m("9000-a000", "r-xp", "fe:01", 42, 0, 0), // another device: no
            m("a000-b000", "r-xs", "fe:00", 42, 0, 0), // shared: no
            "b000-c000 rw-p 00000000 00:00 0 \nAnonymous: 0 kB\nSwap: 0 kB\n".to_string(),
        ]
        .concat();
        assert_eq!(
            super::idle_code_ranges(&smaps, dev, 42),
            vec![(0x1000, 0x1000), (0x2000, 0x3000)]
        );
        assert!(super::idle_code_ranges("", dev, 42).is_empty());
        assert!(
            super::idle_code_ranges("garbage\nAnonymous: 0 kB\nSwap: 0 kB\n", dev, 42).is_empty()
        );
    }
}
