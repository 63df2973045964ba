//! Misbehaves on purpose, in the way its first argument says:
//! - `exit N`: prints a line and exits with status N (default 3);
//! - `panic`: panics (a Rust panic aborts: the instance traps);
//! - `trap`: executes `unreachable`;
//! - `grow`: allocates 1 MiB after 1 MiB until allocation fails (see `[limits] memory`);
//! - `spin`: loops forever without a system call (see `[limits] cpu` and stop).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("exit");
    match mode {
        "exit" => {
            let code = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
            println!("crasher: exiting with status {code}");
            std::process::exit(code);
        }
        "panic" => {
            println!("crasher: about to panic");
            panic!("crasher: deliberate panic");
        }
        "trap" => {
            println!("crasher: about to execute unreachable");
            #[cfg(target_family = "wasm")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_family = "wasm"))]
            std::process::abort();
        }
        "grow" => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(vec![7u8; 1 << 20]);
                if held.len() % 8 == 0 {
                    println!("crasher: holding {} MiB", held.len());
                }
            }
        }
        "spin" => {
            println!("crasher: spinning");
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        other => {
            eprintln!("crasher: unknown mode {other:?}: exit N | panic | trap | grow | spin");
            std::process::exit(2);
        }
    }
}
