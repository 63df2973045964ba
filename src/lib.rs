//! paddock: a process supervisor for Linux with per-app isolation levels.

pub mod config;
pub mod supervise;
pub mod util;
