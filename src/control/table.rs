//! The server's side of `GET /v1/apps?format=table`: the table itself is the CLI's
//! (`view::table`, not cut to a width), and its content type says whether every listed app is
//! READY.

use super::api::AppStatus;

/// The table's content type when every listed app is READY (`paddock status` exits 0)…
pub const ALL_READY: &str = "text/plain; charset=utf-8; paddock-all-ready=1";
/// …and when one is not (it exits 3, like supervisorctl).
pub const NOT_ALL_READY: &str = "text/plain; charset=utf-8; paddock-all-ready=0";

/// Whether every app is READY.
pub fn all_ready(apps: &[AppStatus]) -> bool {
    apps.iter().all(|a| a.state == "READY")
}
