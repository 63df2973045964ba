//! A guest that uses its preopened directories the way a careless or hostile program might,
//! for paddock's tests of level `wasm` (built for wasm32-wasip2: the WASI p2 filesystem).
//!
//!   files open-loop PATH [hold]   open PATH again and again until an open fails; print how
//!                                 many opened and why the next failed; with `hold`, keep them
//!                                 open and sleep, else exit 3 (1 if nothing failed by 100,000)
//!   files symlink TARGET LINK     create the symbolic link LINK -> TARGET; exit 0, or 1 with
//!                                 the error

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "open-loop" => open_loop(arg(2), arg(3) == "hold"),
        "symlink" => match symlink(arg(2), arg(3)) {
            Ok(()) => println!("symlink {} -> {}: created", arg(3), arg(2)),
            Err(e) => {
                println!("symlink {} -> {}: {e}", arg(3), arg(2));
                std::process::exit(1);
            }
        },
        other => {
            eprintln!("unknown mode {other:?}: open-loop PATH [hold] | symlink TARGET LINK");
            std::process::exit(2);
        }
    }
}

/// wasi-libc's symlink(3) (std's `std::os::wasi::fs::symlink_path` is unstable).
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let (t, l) = (CString::new(target)?, CString::new(link)?);
    // SAFETY: two NUL-terminated strings that outlive the call.
    if unsafe { symlink(t.as_ptr(), l.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_loop(path: &str, hold: bool) {
    let mut files = vec![];
    let err = loop {
        if files.len() == 100_000 {
            println!("opened {}: no error", files.len());
            std::process::exit(1);
        }
        match std::fs::File::open(path) {
            Ok(f) => files.push(f),
            Err(e) => break e,
        }
    };
    println!("opened {}: then {err}", files.len());
    if !hold {
        std::process::exit(3);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
