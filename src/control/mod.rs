//! The control API: HTTP/1.1 + JSON on a Unix socket (`server`), and the client the CLI uses.

pub mod api;
pub mod board;
pub mod client;
pub mod http;
pub mod metrics_tcp;
pub mod server;
pub mod table;
pub mod view;
