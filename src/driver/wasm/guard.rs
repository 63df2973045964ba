//! What a guest may hold and create on the host besides memory: a cap on its open descriptors
//! (`[limits] nofile`), a reserve of paddock's own descriptors that no guest can take, and
//! symbolic links in its preopens only with `[wasm] symlinks = true`.
//!
//! Every file, directory and socket a guest opens is one of paddock's own descriptors, held in
//! the store's `ResourceTable` (WASI p1 keeps its fd numbers beside it, pointing into the same
//! table). wasmtime-wasi 48 has no hook to limit them: the table's `max_capacity` counts every
//! resource (streams, pollables) and a full table traps the guest. So paddock shadows the imports
//! that create a descriptor (p1 `path_open`; p2 `descriptor.open-at`, `create-tcp-socket`,
//! `tcp-socket.accept`) with wrappers that check first and then call wasmtime-wasi's own
//! implementation, and the imports that create a symbolic link (p1 `path_symlink`, p2
//! `descriptor.symlink-at`). A refused call is an ordinary error for the guest: `EMFILE` (p1),
//! `error-code.quota` (p2 filesystem: it has no EMFILE), `new-socket-limit` (p2 sockets) for the
//! app's cap; `ENFILE` / `insufficient-memory` when paddock's reserve is reached; `EPERM` /
//! `not-permitted` for a symbolic link.
//!
//! The reserve: wasm guests together never hold a descriptor numbered at or above paddock's
//! RLIMIT_NOFILE minus [`reserve`]. The kernel gives the lowest free number, so before each
//! guest open paddock asks for the lowest free number (a `dup` closed at once): when it is in the
//! reserved range, guests have taken everything below it and the open is refused. What is left
//! (the top range) serves paddock's spawns, pipes, cgroup files, logs and control socket. Opens
//! racing on the wasm worker threads can overshoot by at most one descriptor per worker.

use super::{Guest, P2Wasi};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Caller, Extern, Linker, StoreContextMut};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::sockets::WasiSocketsView;

/// The interfaces shadowed, as wasmtime-wasi 48 names them (a guest importing an older 0.2.x
/// version is linked to them too).
const P2_FS_TYPES: &str = "wasi:filesystem/types@0.2.12";
const P2_TCP: &str = "wasi:sockets/tcp@0.2.12";
const P2_TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";

/// WASI p1 errno values.
const P1_EMFILE: i32 = 33;
const P1_ENFILE: i32 = 41;
const P1_EPERM: i32 = 63;

/// Descriptors kept out of every guest's reach, out of paddock's limit of `limit`: an eighth,
/// at least 256 (and at most half).
pub fn reserve(limit: u64) -> u64 {
    (limit / 8).max(256).min(limit / 2)
}

/// paddock's open-file limit (soft).
fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur
}

/// A descriptor to duplicate for the probe, opened early (when descriptors are plentiful).
static PROBE: OnceLock<Option<std::fs::File>> = OnceLock::new();

/// Opens the probe's descriptor; call when the wasm host starts.
pub(super) fn init() {
    PROBE.get_or_init(|| std::fs::File::open("/dev/null").ok());
}

/// Is the lowest free descriptor number below paddock's reserve?
fn paddock_has_room() -> bool {
    let Some(Some(probe)) = PROBE.get() else {
        return false;
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor this module owns (it stays open for the
    // life of the process); the duplicate is closed at once and used for nothing else.
    let fd = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return false; // EMFILE: nothing left at all
    }
    // SAFETY: `fd` was just returned by fcntl and is owned by no one else.
    unsafe { libc::close(fd) };
    let limit = nofile_limit();
    (fd as u64) < limit.saturating_sub(reserve(limit))
}

/// Why the last descriptor was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The app's `[limits] nofile`.
    App,
    /// paddock's reserve.
    Paddock,
}

/// A guest's descriptors and symbolic links: the policy and its count.
pub(super) struct Files {
    /// `[limits] nofile`.
    pub max: usize,
    /// The preopened directories: open from the start, held by the WASI context.
    preopens: usize,
    /// `[wasm] symlinks`.
    pub symlinks: bool,
    /// An upper bound of the descriptors held: the count at the last scan of the table plus the
    /// opens admitted since (the table is scanned again only when this reaches `max`).
    estimate: usize,
    /// The first refusal, for the report of the guest's end.
    pub refused: Option<Refusal>,
    /// Symbolic links refused.
    pub symlinks_refused: u64,
}

impl Files {
    pub fn new(max: u64, symlinks: bool, preopens: usize) -> Files {
        Files {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            preopens,
            symlinks,
            estimate: preopens,
            refused: None,
            symlinks_refused: 0,
        }
    }

    /// May the guest open one more descriptor? `table` is its resource table.
    pub fn admit(&mut self, table: &mut ResourceTable) -> Result<(), Refusal> {
        if self.estimate >= self.max {
            self.estimate = self.preopens + count(table);
        }
        let r = if self.estimate >= self.max {
            Err(Refusal::App)
        } else if !paddock_has_room() {
            Err(Refusal::Paddock)
        } else {
            self.estimate += 1;
            return Ok(());
        };
        if let Err(why) = r {
            self.refused.get_or_insert(why);
        }
        r
    }

    /// Why a failure may have happened, for reports.
    pub fn note(&self) -> Option<String> {
        match self.refused? {
            Refusal::App => Some(format!(
                "opening a file or socket was refused: the guest had {} open ([limits] nofile = {})",
                self.max, self.max
            )),
            Refusal::Paddock => {
                let limit = nofile_limit();
                Some(format!(
                    "opening a file or socket was refused: wasm guests hold all of paddock's descriptors but its reserve ({} of {})",
                    reserve(limit),
                    limit
                ))
            }
        }
    }
}

/// Files, directories and sockets the guest opened, from its table: each holds one of
/// paddock's descriptors. A preopen's entries (p1 makes one at its first call, p2 one per
/// `get-directories`) share the context's descriptor (`Arc`), which is counted apart; a directory
/// the guest opened has the only reference to its own.
fn count(table: &mut ResourceTable) -> usize {
    use wasmtime_wasi::filesystem::Descriptor;
    table
        .iter_mut()
        .filter(|e| match e.downcast_ref::<Descriptor>() {
            Some(Descriptor::File(_)) => true,
            Some(Descriptor::Dir(d)) => std::sync::Arc::strong_count(&d.dir) == 1,
            None => {
                e.is::<wasmtime_wasi::p2::TcpSocket>() || e.is::<wasmtime_wasi::p2::UdpSocket>()
            }
        })
        .count()
}

/// Replaces the WASI p1 imports that open descriptors or create symbolic links.
pub(super) fn shadow_p1(linker: &mut Linker<Guest<WasiP1Ctx>>) -> wasmtime::Result<()> {
    use wasmtime_wasi::WasiView;
    use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
    linker.allow_shadowing(true);
    type OpenArgs = (i32, i32, i32, i32, i32, i64, i64, i32, i32);
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "path_open",
        |mut caller: Caller<'_, Guest<WasiP1Ctx>>, a: OpenArgs| {
            Box::new(async move {
                let g = caller.data_mut();
                match g.limiter.files.admit(g.wasi.ctx().table) {
                    Err(Refusal::App) => return Ok(P1_EMFILE),
                    Err(Refusal::Paddock) => return Ok(P1_ENFILE),
                    Ok(()) => {}
                }
                // What wiggle's generated glue does (wasmtime-wasi's own `path_open`).
                let fuel = wasmtime::AsContextMut::as_context_mut(&mut caller).hostcall_fuel();
                let export = caller.get_export("memory");
                let (mut mem, g) = guest_memory(&mut caller, &export)?;
                <WasiP1Ctx as p1::WasiSnapshotPreview1>::set_hostcall_fuel(&mut g.wasi, fuel);
                p1::path_open(
                    &mut g.wasi,
                    &mut mem,
                    a.0,
                    a.1,
                    a.2,
                    a.3,
                    a.4,
                    a.5,
                    a.6,
                    a.7,
                    a.8,
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "path_symlink",
        |mut caller: Caller<'_, Guest<WasiP1Ctx>>, a: (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let g = caller.data_mut();
                if !g.limiter.files.symlinks {
                    g.limiter.files.symlinks_refused += 1;
                    return Ok(P1_EPERM);
                }
                let fuel = wasmtime::AsContextMut::as_context_mut(&mut caller).hostcall_fuel();
                let export = caller.get_export("memory");
                let (mut mem, g) = guest_memory(&mut caller, &export)?;
                <WasiP1Ctx as p1::WasiSnapshotPreview1>::set_hostcall_fuel(&mut g.wasi, fuel);
                p1::path_symlink(&mut g.wasi, &mut mem, a.0, a.1, a.2, a.3, a.4).await
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The guest's memory and the store's data, as wiggle's glue takes them.
fn guest_memory<'a>(
    caller: &'a mut Caller<'_, Guest<WasiP1Ctx>>,
    export: &'a Option<Extern>,
) -> wasmtime::Result<(wiggle::GuestMemory<'a>, &'a mut Guest<WasiP1Ctx>)> {
    match export {
        Some(Extern::Memory(m)) => {
            let (mem, g) = m.data_and_store_mut(caller);
            Ok((wiggle::GuestMemory::Unshared(mem), g))
        }
        Some(Extern::SharedMemory(m)) => {
            Ok((wiggle::GuestMemory::Shared(m.data()), caller.data_mut()))
        }
        _ => wasmtime::bail!("missing required memory export"),
    }
}

/// Replaces the WASI p2 imports that open descriptors or create symbolic links.
pub(super) fn shadow_p2(
    linker: &mut wasmtime::component::Linker<Guest<P2Wasi>>,
) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::filesystem::types as fs;
    use wasmtime_wasi::p2::bindings::sockets::{network, tcp, tcp_create_socket};
    type Store<'a> = StoreContextMut<'a, Guest<P2Wasi>>;
    linker.allow_shadowing(true);

    let mut i = linker.instance(P2_FS_TYPES)?;
    i.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: Store<'_>,
         (this, path_flags, path, open_flags, flags): (
            Resource<fs::Descriptor>,
            fs::PathFlags,
            String,
            fs::OpenFlags,
            fs::DescriptorFlags,
        )| {
            Box::new(async move {
                let g = store.data_mut();
                match g.limiter.files.admit(&mut g.wasi.table) {
                    Err(Refusal::App) => return Ok((Err(fs::ErrorCode::Quota),)),
                    Err(Refusal::Paddock) => return Ok((Err(fs::ErrorCode::InsufficientMemory),)),
                    Ok(()) => {}
                }
                let mut view = g.filesystem();
                match fs::HostDescriptor::open_at(
                    &mut view, this, path_flags, path, open_flags, flags,
                )
                .await
                {
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => Ok((Err(fs::Host::convert_error_code(&mut view, e)?),)),
                }
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: Store<'_>,
         (this, old_path, new_path): (Resource<fs::Descriptor>, String, String)| {
            Box::new(async move {
                let g = store.data_mut();
                if !g.limiter.files.symlinks {
                    g.limiter.files.symlinks_refused += 1;
                    return Ok((Err(fs::ErrorCode::NotPermitted),));
                }
                let mut view = g.filesystem();
                match fs::HostDescriptor::symlink_at(&mut view, this, old_path, new_path).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(fs::Host::convert_error_code(&mut view, e)?),)),
                }
            })
        },
    )?;

    let mut i = linker.instance(P2_TCP_CREATE)?;
    i.func_wrap(
        "create-tcp-socket",
        |mut store: Store<'_>, (family,): (network::IpAddressFamily,)| {
            let g = store.data_mut();
            if g.limiter.files.admit(&mut g.wasi.table).is_err() {
                return Ok((Err(network::ErrorCode::NewSocketLimit),));
            }
            let mut view = g.sockets();
            match tcp_create_socket::Host::create_tcp_socket(&mut view, family) {
                Ok(s) => Ok((Ok(s),)),
                Err(e) => Ok((Err(network::Host::convert_error_code(&mut view, e)?),)),
            }
        },
    )?;

    let mut i = linker.instance(P2_TCP)?;
    i.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: Store<'_>, (this,): (Resource<wasmtime_wasi::p2::TcpSocket>,)| {
            let g = store.data_mut();
            if g.limiter.files.admit(&mut g.wasi.table).is_err() {
                return Ok((Err(network::ErrorCode::NewSocketLimit),));
            }
            let mut view = g.sockets();
            match tcp::HostTcpSocket::accept(&mut view, this) {
                Ok(s) => Ok((Ok(s),)),
                Err(e) => Ok((Err(network::Host::convert_error_code(&mut view, e)?),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_sizes() {
        assert_eq!(reserve(1024), 256);
        assert_eq!(reserve(20_000), 2_500);
        assert_eq!(reserve(256), 128);
        assert_eq!(reserve(1 << 20), 1 << 17);
    }

    #[test]
    fn cap_counts_and_refuses() {
        init();
        let mut table = ResourceTable::new();
        let mut f = Files::new(3, false, 1);
        assert_eq!(f.admit(&mut table), Ok(()));
        assert_eq!(f.admit(&mut table), Ok(()));
        // The estimate says 2 (nothing was opened really): a scan finds the table empty.
        assert_eq!(f.admit(&mut table), Ok(()));
        assert!(f.refused.is_none());
        let mut none = Files::new(0, false, 0);
        assert_eq!(none.admit(&mut table), Err(Refusal::App));
        assert!(none.note().unwrap().contains("[limits] nofile = 0"));
        assert!(paddock_has_room());
    }
}
