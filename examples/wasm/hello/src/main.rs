//! The smallest wasm app: prints its arguments and environment, then exits 0.
//! Built for wasm32-wasip1 (hello.wasm, a core module) and wasm32-wasip2 (hello-p2.wasm, a
//! component): the same source, both kinds of module paddock runs.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello from wasm! args: {args:?}");
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    println!("{} environment variables: {vars:?}", vars.len());
    match std::fs::read_dir("/") {
        Ok(entries) => println!("/ has {} entries", entries.count()),
        Err(e) => println!("no filesystem: {e}"),
    }
    eprintln!("hello on stderr");
}
