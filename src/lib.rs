//! paddock: a process supervisor for Linux with per-app isolation levels.
//!
//! - `config`: app files (TOML), validation, diffing;
//! - `supervise`: the pure restart/stop state machine;
//! - `driver`: starting processes;
//! - `cgroup`: per-app cgroups (v2, hybrid, v1): limits, usage, OOM, killing the whole tree;
//! - `bundle`: dependency bundles (recipes, ELF closure, store, verification, launch);
//! - `logs`: output pipes to rotated files, tail and follow;
//! - `control`: the HTTP/JSON API on a Unix socket, and its client;
//! - `daemon`: the event loop that ties them together (`paddock serve`);
//! - `schedule`: when scheduled apps (`schedule`, `every`) are due; their last-run records;
//! - `import`: app files from supervisord configs and systemd units (`paddock import`);
//! - `top`: the live terminal view (`paddock top`).
//!
//! The bench, the escape matrix and its probe are not part of the product: they are the
//! workspace's crates/paddock-lab, which uses this library.

pub mod adopt;
pub mod bundle;
pub mod cgroup;
pub mod config;
pub mod control;
pub mod daemon;
pub mod diag;
pub mod doctor;
pub mod driver;
pub mod fdstore;
pub mod fleet;
pub mod generations;
pub mod health;
pub mod import;
pub mod journal;
pub mod listen;
pub mod lock;
pub mod logs;
pub mod pid1;
pub mod publish;
pub mod runner;
pub mod sandbox;
pub mod schedule;
pub mod supervise;
pub mod syscalls;
pub mod top;
pub mod units;
pub mod util;
