//! Fuzzing as a habit: every parser of outside input is fed mutated inputs and must answer
//! with a value or an error, never a panic or a hang. A small mutational fuzzer (seeds from the
//! repository and the machine, bit flips, byte and chunk insertions, deletions, splices of a
//! per-format dictionary), deterministic per seed, no dependencies.
//!
//! `cargo test --release --test fuzz` runs a short round per target (CI: a few seconds);
//! `PADDOCK_FUZZ_ITERS=1000000 cargo test --release --test fuzz -- --nocapture` is the long run.
//! `PADDOCK_FUZZ_SEED=N` changes the sequence. An input that panics is written to
//! `target/fuzz-crash-TARGET.bin` and the test fails naming it.

use std::path::{Path, PathBuf};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[&[u8]], max: usize) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.insert(at, rng.next() as u8),
            3 if !v.is_empty() => {
                let len = 1 + rng.below(16.min(v.len()));
                let from = rng.below(v.len() - len + 1);
                v.drain(from..from + len);
            }
            4 | 5 => {
                let word = dict[rng.below(dict.len())];
                v.splice(at..at, word.iter().copied());
            }
            6 if !v.is_empty() => {
                // Duplicate a chunk (repetition finds length and nesting bugs).
                let len = 1 + rng.below(64.min(v.len()));
                let from = rng.below(v.len() - len + 1);
                let chunk: Vec<u8> = v[from..from + len].to_vec();
                v.splice(at..at, chunk);
            }
            7 => {
                // Splice the tail of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.below(4);
                v.splice(at..at, std::iter::repeat_n(0xff_u8, n));
            }
        }
    }
    v.truncate(max);
    v
}

fn iters() -> u64 {
    std::env::var("PADDOCK_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// Runs `target` on mutated inputs; fails on the first panic, with the input saved.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, dict: &[&[u8]], max: usize, target: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = std::env::var("PADDOCK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15_u64);
    let mut rng = Rng(seed ^ name.len() as u64 ^ 0x1234_5678);
    // Seeds themselves, then mutants.
    let n = iters();
    let t = Instant::now();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    for i in 0..n + seeds.len() as u64 {
        let input = if (i as usize) < seeds.len() {
            seeds[i as usize].clone()
        } else {
            mutate(&mut rng, &seeds, dict, max)
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input))).is_err() {
            failure = Some(input);
            break;
        }
    }
    std::panic::set_hook(prev);
    if let Some(input) = failure {
        let path = PathBuf::from(ROOT).join(format!("target/fuzz-crash-{name}.bin"));
        let _ = std::fs::write(&path, &input);
        // Run it again with the hook back, for the message.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        panic!("{name}: an input panicked; saved as {}", path.display());
    }
    println!(
        "fuzz {name}: {n} inputs in {:.2?} ({:.0}/s), no panic",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
}

fn files(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(ROOT).join(dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v.into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

const TOML_DICT: &[&[u8]] = &[
    b"\n[sandbox]\n",
    b"\n[limits]\n",
    b"\n[health]\n",
    b"\n[restart]\n",
    b"\n[readiness]\n",
    b"\n[wasm]\n",
    b"\n[logs]\n",
    b"\n[[x]]\n",
    b" = ",
    b"\"",
    b"'''",
    b"\"\"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"=",
    b"\\u0000",
    b"\\",
    b"#",
    b"\n",
    b"1e308",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"\"0s\"",
    b"\"1ms\"",
    b"\"99999999999h\"",
    b"\"64MiB\"",
    b"\"16EiB\"",
    b"true",
    b"inf",
    b"nan",
    b"isolation = \"sandbox\"\n",
    b"isolation = \"wasm\"\n",
    b"isolation = \"bundle\"\n",
    b"command = []\n",
    b"user = \"nobody\"\n",
    b"publish = [\"127.0.0.1:0\"]\n",
    b"tcp_bind = [65536]\n",
    b"after = [\"a\"]\n",
    b"stop_signal = \"SIGRTMAX+99\"\n",
    b"cpu = -0.0\n",
    b"\xff\xfe",
    b"\xc3\x28",
];

#[test]
fn app_files() {
    let mut seeds = files("examples/quickstart", "toml");
    seeds.extend(files("examples/ordering", "toml"));
    seeds.extend(files("examples/wasm", "toml"));
    seeds.extend(files("examples/bundles", "toml"));
    seeds.push(
        b"isolation = \"sandbox\"\nbundle = \"b\"\ncommand = [\"x\"]\n[sandbox]\nread_only = [\"/etc\"]\nnetwork = \"host\"\ntcp_bind = [80]\nudp = true\naddress_families = [\"AF_NETLINK\"]\nsyscalls = [\"bpf\"]\ntmp_size = \"8MiB\"\npublish = [\"127.0.0.1:8080:80\"]\n[limits]\nmemory = \"64MiB\"\ncpu = 0.5\npids = 10\nnofile = 100\n".to_vec(),
    );
    let file = Path::new("/nonexistent/apps/app.toml");
    fuzz("app-files", seeds, TOML_DICT, 4096, |b| {
        let _ = paddock::config::parse_app("app", file, &String::from_utf8_lossy(b));
    });
}

#[test]
fn generation_histories() {
    let seeds = vec![
        br#"{"format":1,"app":"app","current":2,"left":1,"generations":[{"number":1,"applied":"2026-11-29T16:10:11.094Z","source":"loaded","digest":"60b343d80d52a6119da29e2a9f9605e0d56233ac5e7a69ce502316572dbba276","summary":"first load","verdict":"stable","note":"","stored":{"file":"/etc/paddock/apps/app.toml","text":"command = ["/bin/true"]
","bundle_id":"ab","bundle_dir":"/var/lib/paddock/bundles/ab","module_sha256":"60b343d80d52a6119da29e2a9f9605e0d56233ac5e7a69ce502316572dbba276"}},{"number":2,"applied":"x","source":"update","digest":"e805adf01963dee13f7d06b80fb1da06d0729e09927fae77a3cce3e29aee52ac","summary":"command","verdict":"bad","note":"went FATAL","stored":{"file":"/a","text":""}}]}"#.to_vec(),
    ];
    let dict: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"null",
        b"true",
        b"1",
        b"-1",
        b"18446744073709551616",
        b"\"trial\"",
        b"\"bad\"",
        b"\"stable\"",
        b"\\u0000",
    ];
    fuzz("generation-histories", seeds, dict, 4096, |b| {
        if let Ok(mut h) = paddock::generations::History::parse(&String::from_utf8_lossy(b), "app")
        {
            // What paddock does with a history it accepted must not panic either.
            let _ = h.target(None);
            let _ = h.target(Some(1));
            let _ = h.refuses("00");
            h.roll_back(1);
            h.record(
                "0".repeat(64),
                "t".into(),
                "update",
                String::new(),
                h.generations.first().map(|g| g.stored.clone()).unwrap_or(
                    paddock::generations::Stored {
                        file: "/a".into(),
                        text: String::new(),
                        bundle_id: None,
                        bundle_dir: None,
                        module_sha256: None,
                    },
                ),
            );
        }
    });
}

#[test]
fn bundle_recipes() {
    let seeds = files("bundles", "toml");
    let file = Path::new("/nonexistent/r.toml");
    fuzz("recipes", seeds, TOML_DICT, 4096, |b| {
        let _ = paddock::bundle::recipe::parse(
            "r",
            file,
            Path::new("/nonexistent"),
            &String::from_utf8_lossy(b),
        );
    });
}

#[test]
fn bundle_manifests() {
    let seeds = vec![
        b"format = 1\nname = \"x\"\nid = \"\"\nloader = \"/lib64/ld-linux-x86-64.so.2\"\nlibrary_path = [\"/lib\"]\n[[program]]\npath = \"/usr/bin/x\"\ninterpreter = \"/lib64/ld-linux-x86-64.so.2\"\n[[file]]\npath = \"/usr/bin/x\"\nsha256 = \"00\"\nsize = 1\nmode = 493\n[[link]]\npath = \"/lib\"\ntarget = \"usr/lib\"\n".to_vec(),
    ];
    let file = Path::new("/nonexistent/manifest.toml");
    fuzz("manifests", seeds, TOML_DICT, 4096, |b| {
        let _ = paddock::bundle::manifest::parse(file, &String::from_utf8_lossy(b));
    });
}

#[test]
fn elf_files() {
    // Real programs' heads (the dynamic section and program headers are near the start).
    let seeds: Vec<Vec<u8>> = ["/usr/bin/true", "/bin/sh", "/usr/bin/busybox"]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|mut b| {
            b.truncate(64 << 10);
            b
        })
        .collect();
    let dict: &[&[u8]] = &[
        b"\x7fELF",
        b"\x00\x00\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x02\x01\x01",
    ];
    fuzz("elf", seeds, dict, 64 << 10, |b| {
        let _ = paddock::bundle::elf::read_abi(b);
        let _ = paddock::bundle::elf::parse(b);
    });
}

#[test]
fn ld_so_cache() {
    let seeds: Vec<Vec<u8>> = std::fs::read("/etc/ld.so.cache")
        .map(|mut b| {
            b.truncate(32 << 10);
            vec![b]
        })
        .unwrap_or_else(|_| vec![b"glibc-ld.so.cache1.1".to_vec()]);
    let dict: &[&[u8]] = &[
        b"glibc-ld.so.cache1.1",
        b"\xff\xff\xff\x7f",
        b"\x00\x00\x00\x00",
    ];
    fuzz("ld-so-cache", seeds, dict, 32 << 10, |b| {
        let _ = paddock::bundle::ldcache::parse(b);
    });
}

#[test]
fn wasm_kind_detection() {
    let seeds: Vec<Vec<u8>> = files("examples/wasm", "wasm")
        .into_iter()
        .map(|mut b| {
            b.truncate(256);
            b
        })
        .chain([
            b"\x00asm\x01\x00\x00\x00".to_vec(),
            b"\x00asm\x0d\x00\x01\x00".to_vec(),
        ])
        .collect();
    let dict: &[&[u8]] = &[b"\x00asm", b"\x01\x00\x00\x00", b"\x0d\x00\x01\x00", b"#!"];
    fuzz("wasm-kind", seeds, dict, 256, |b| {
        let _ = paddock::driver::wasm::inspect::sniff(b);
        let _ = paddock::driver::wasm::inspect::describe_non_wasm(b);
    });
}

#[test]
fn http_requests() {
    let seeds: Vec<Vec<u8>> = [
        "GET /v1/apps HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/apps/web,ticker/restart?wait=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "POST /v1/apps/web/signal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"signal\":\"HUP\"}",
        "GET /v1/apps/ticker/logs?follow=1&lines=5&stream=stderr HTTP/1.0\r\n\r\n",
        "POST /v1/update HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dict: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b"Content-Length: ",
        b"18446744073709551616",
        b"-1",
        b"Transfer-Encoding: chunked",
        b"%",
        b"%zz",
        b"?",
        b"&",
        b"=",
        b",",
        b"..",
        b"/",
        b" ",
        b"HTTP/9.9",
        b"\x00",
        b"\xff",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    fuzz("http", seeds, dict, 16 << 10, |b| {
        let mut r: &[u8] = b;
        let _ = rt.block_on(paddock::control::http::read_request(&mut r));
    });
}

/// The fuzzer itself finds a planted bug (a test that cannot fail proves nothing).
#[test]
#[should_panic(expected = "an input panicked")]
fn the_fuzzer_finds_a_planted_panic() {
    let seeds = vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()];
    fuzz("planted", seeds, &[b"%zz", b"\r\n"], 1024, |b| {
        if b.windows(3).any(|w| w == b"%zz") && b.len() > 20 {
            panic!("planted");
        }
    });
}
