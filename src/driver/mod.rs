//! What runs an app. `native` starts processes (level `none`), `wasm` runs WebAssembly modules
//! under wasmtime (level `wasm`); later levels plug in here.

pub mod native;
pub mod wasm;
