//! Link flags for the binaries.

fn main() {
    // Relative relocations packed (DT_RELR): the PIE binary carries ~35,000 of them, whose
    // 850 KB table every start of paddock (the CLI's too) read and kept in memory. The linker
    // leaves the flag out by itself when the C library cannot load such a binary (before
    // glibc 2.36).
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if gnu_linux {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
