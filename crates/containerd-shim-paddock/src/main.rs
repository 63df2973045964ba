//! `containerd-shim-paddock-v1`: a containerd runtime v2 shim (runtime type
//! `io.containerd.paddock.v1`, the RuntimeClass handler `paddock`) that runs a container's
//! WebAssembly entrypoint with paddock's wasm driver, inside this shim process. Installed (or
//! linked) as `containerd-shim-paddock-sandbox-v1` (runtime `io.containerd.paddock-sandbox.v1`)
//! it runs an ordinary image's process under paddock's sandbox instead (see [`Level`]).
//!
//! The shim protocol (see docs/containerd.md):
//! - `start`: containerd runs the binary with `-namespace -address -id … start` in the bundle
//!   directory. It binds the ttrpc socket, starts itself again as the daemon (new session, the
//!   listening socket as descriptor 3), prints the socket address and exits.
//! - the daemon (no action) serves containerd's `Task` service on that socket (`task`) until
//!   `Shutdown`; events (`/tasks/create`, `start`, `exit`, `oom`, `delete`) go to containerd's
//!   ttrpc socket (`TTRPC_ADDRESS`).
//! - `delete`: run by containerd when the daemon is gone: unmounts the rootfs and prints a
//!   `DeleteResponse` (exit status 137).

mod events;
mod flags;
mod layer;
mod mount;
mod sandboxed;
mod spec;
mod task;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use flags::Flags;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the shims' sockets go (as containerd's own shims do).
const SOCKET_ROOT: &str = "/run/containerd/s";
/// The environment variable telling the daemon that descriptor 3 is its listening socket.
const LISTEN_ENV: &str = "PADDOCK_SHIM_LISTEN_FD";
/// The level `start` found in its binary's name, for the daemon (which runs as /proc/self/exe).
const LEVEL_ENV: &str = "PADDOCK_SHIM_LEVEL";

/// The isolation level a container runs at: the runtime's (the name containerd started the
/// shim by: `containerd-shim-paddock-v1` is `wasm`, `containerd-shim-paddock-sandbox-v1` is
/// `sandbox`), unless the container's annotation `io.paddock.level` names another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Wasm,
    Sandbox,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level, String> {
        match s {
            "wasm" => Ok(Level::Wasm),
            "sandbox" => Ok(Level::Sandbox),
            "bundle" | "none" => Err(format!(
                "level {s} is not offered for containers: an image rootfs has no paddock bundle, and running its program outside a sandbox would run it on the host's filesystem; use \"sandbox\" or \"wasm\""
            )),
            _ => Err("unknown level; expected \"wasm\" or \"sandbox\"".into()),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Wasm => "wasm",
            Level::Sandbox => "sandbox",
        }
    }

    /// The level of a binary name (argv[0]).
    fn of_binary(argv0: &str) -> Level {
        let name = Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with("containerd-shim-paddock-sandbox") {
            Level::Sandbox
        } else {
            Level::Wasm
        }
    }
}

fn main() {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-paddock-v1: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!(
            "containerd-shim-paddock-v1 {} (paddock levels wasm and sandbox)",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let r = match flags.action.as_deref() {
        Some("start") => start(&flags),
        Some("delete") => delete(&flags),
        // containerd's stream processor for wasm layers (see layer.rs).
        Some("wasm-layer-to-tar") => layer::convert_stdio(),
        None => serve(&flags),
        Some(other) => Err(format!(
            "unknown action \"{other}\": containerd runs this shim with `start`, `delete` or no action"
        )),
    };
    if let Err(e) = r {
        eprintln!("containerd-shim-paddock-v1: {e}");
        std::process::exit(1);
    }
}

/// `unix://` address of the socket of container `id` (containerd's own formula: SHA-256 of
/// address/namespace/id, so two containerds never share one).
fn socket_path(f: &Flags) -> PathBuf {
    use sha2::Digest;
    let joined = Path::new(&f.address).join(&f.namespace).join(&f.id);
    let sum = sha2::Sha256::digest(joined.as_os_str().as_encoded_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_ROOT).join(hex)
}

fn start(f: &Flags) -> Result<(), String> {
    f.require_start()?;
    let path = socket_path(f);
    std::fs::create_dir_all(SOCKET_ROOT)
        .map_err(|e| format!("cannot create {SOCKET_ROOT} for the shim socket: {e}"))?;
    if path.exists() {
        // A live shim for this id answers; a stale file (crashed shim) is replaced.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "a shim for container {} in namespace {} is already listening on {}",
                f.id,
                f.namespace,
                path.display()
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "-namespace",
        &f.namespace,
        "-id",
        &f.id,
        "-address",
        &f.address,
    ]);
    if !f.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &f.publish_binary]);
    }
    if f.debug {
        cmd.arg("-debug");
    }
    let level = Level::of_binary(&std::env::args().next().unwrap_or_default());
    cmd.env(LISTEN_ENV, "3")
        .env(LEVEL_ENV, level.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let lfd = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (setsid,
    // dup2, fcntl) on descriptors this process owns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if lfd == 3 {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(lfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the shim daemon: {e}"))?;
    drop(child); // the daemon outlives this process; containerd's reaper or init reaps it
    let address = format!("unix://{}", path.display());
    // containerd reads the address from stdout; `address` in the bundle lets tools find it.
    let _ = std::fs::write("address", &address);
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the address to containerd: {e}"))
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

fn delete(f: &Flags) -> Result<(), String> {
    let bundle = if f.bundle.is_empty() {
        std::env::current_dir().map_err(|e| format!("cannot read the bundle directory: {e}"))?
    } else {
        PathBuf::from(&f.bundle)
    };
    // A sandboxed container's process outlives its shim (it is another process, reparented):
    // it ends here, with whatever is left in its cgroup.
    sandboxed::cleanup_after_shim(&f.namespace, &f.id, &bundle);
    mount::unmount_rootfs(&bundle.join("rootfs"));
    let _ = std::fs::remove_file(socket_path(f));
    let resp = containerd_shim_protos::shim::shim::DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(now()).into(),
        ..Default::default()
    };
    let bytes = resp
        .write_to_bytes()
        .map_err(|e| format!("cannot encode the delete response: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the delete response: {e}"))
}

/// containerd's `log` FIFO in the bundle directory becomes stderr: the shim's messages land in
/// containerd's log.
fn redirect_stderr_to_log() {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open("log")
    else {
        return;
    };
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; dup2 onto 2 replaces stderr, which no
    // other thread uses yet (the daemon is single-threaded here).
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        libc::dup2(fd, 2);
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}
impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

fn serve(f: &Flags) -> Result<(), String> {
    if f.namespace.is_empty() || f.id.is_empty() {
        return Err(
            "the daemon needs -namespace and -id (containerd starts it through `start`)".into(),
        );
    }
    redirect_stderr_to_log();
    let fd: i32 = std::env::var(LISTEN_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!("{LISTEN_ENV} is not set: the daemon is started by `start`, not by hand")
        })?;
    // The listening socket moves above the descriptors paddock's native driver reserves for a
    // child's stdio (3..26, `reserve_low_fds`), close-on-exec.
    // SAFETY: F_DUPFD_CLOEXEC of the descriptor `start` passed us, then closing that number;
    // nothing else owns either.
    let high = unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
        if high >= 0 {
            libc::close(fd);
        }
        high
    };
    if high < 0 {
        return Err(format!(
            "cannot move the listening socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `high` is the new descriptor just made; nothing else owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(high) };
    paddock::driver::native::reserve_low_fds()
        .map_err(|e| format!("cannot reserve descriptors for the container's process: {e}"))?;
    let level = match std::env::var(LEVEL_ENV) {
        Ok(l) => Level::parse(&l).map_err(|e| format!("{LEVEL_ENV}={l}: {e}"))?,
        Err(_) => Level::Wasm,
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher = events::Publisher::new(&ttrpc_address, &f.namespace);
    let service = task::Service::new(publisher, level, &f.namespace);
    let done = service.done();
    let service = Arc::new(service);
    // containerd 2 calls the task API as containerd.task.v3.Task (what the protos generate),
    // containerd 1.6/1.7 as containerd.task.v2.Task: the same messages under both names.
    let mut methods = containerd_shim_protos::create_task(service.clone());
    for (path, handler) in containerd_shim_protos::create_task(service) {
        if let Some(rest) = path.strip_prefix("/containerd.task.v3.Task/") {
            methods.insert(format!("/containerd.task.v2.Task/{rest}"), handler);
        }
    }
    let mut server = ttrpc::Server::new()
        // The server owns the descriptor from here on (and closes it at shutdown).
        .add_listener(listener.into_raw_fd())
        .map_err(|e| format!("cannot use the listening socket: {e}"))?
        .register_service(methods);
    server
        .start()
        .map_err(|e| format!("cannot start the ttrpc server: {e}"))?;
    done.wait();
    server.shutdown();
    let _ = std::fs::remove_file(socket_path(f));
    Ok(())
}
