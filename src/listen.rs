//! Sockets paddock owns on behalf of its apps.
//!
//! A listening socket is bound once, when the app that names it is loaded, and kept in a
//! [`Registry`] keyed by the address as configured: a restart, a crash, or an `update` that
//! keeps the address finds the same socket (same descriptor, same backlog), so a client never
//! meets a closed port while the app behind it changes. A socket is closed only when no app
//! names its address any more ([`Registry::sweep`]).
//!
//! One abstraction for every consumer: today the per-request wasm apps (`[http] listen`) accept
//! on it inside paddock ([`Socket::tokio`]); a native app can be handed the same descriptor with
//! the systemd protocol (`LISTEN_FDS`, descriptors from 3) through [`Socket::fd`] — the socket
//! is not tied to how it is served.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Connections waiting to be accepted before the kernel refuses more.
pub const BACKLOG: i32 = 1024;

/// Where a socket listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "String")]
pub enum Addr {
    Tcp(SocketAddr),
    /// A Unix stream socket at this absolute path.
    Unix(PathBuf),
}

impl From<Addr> for String {
    fn from(a: Addr) -> String {
        a.to_string()
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Addr {
    /// `"127.0.0.1:8080"`, `"[::1]:8080"`, `"0.0.0.0:80"`, or a Unix socket: `"/run/app.sock"`
    /// or `"unix:/run/app.sock"` (an absolute path). Port 0 asks the kernel for a free port
    /// (`status` shows the one it gave).
    pub fn parse(s: &str) -> Result<Addr, String> {
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.starts_with('/') {
            if path.contains('\0') || path.ends_with('/') {
                return Err(format!("\"{s}\" is not a socket file path"));
            }
            // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
            if path.len() > 107 {
                return Err(format!(
                    "the Unix socket path \"{path}\" is {} bytes long; the kernel allows at most 107",
                    path.len()
                ));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if s.starts_with("unix:") {
            return Err(format!(
                "\"{s}\": a Unix socket path must be absolute, as in \"unix:/run/app.sock\""
            ));
        }
        s.parse::<SocketAddr>().map(Addr::Tcp).map_err(|_| {
            format!(
                "\"{s}\" is not an address to listen on: give an IP address and a port, as in \"127.0.0.1:8080\" or \"[::1]:8080\", or an absolute Unix socket path, as in \"/run/app.sock\""
            )
        })
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub struct Socket {
    /// The address as configured (the registry's key).
    pub addr: Addr,
    /// The address the kernel bound (a port 0 resolved).
    pub local: String,
    fd: OwnedFd,
}

impl Socket {
    /// Binds and listens (non-blocking, close-on-exec; SO_REUSEADDR for TCP). A stale Unix
    /// socket file is replaced; any other file at the path is left alone and refused.
    pub fn bind(addr: &Addr) -> Result<Socket, String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("cannot {what} {addr}: {}", crate::util::io_reason(&e))
        };
        match addr {
            Addr::Tcp(a) => {
                let l = std::net::TcpListener::bind(a).map_err(|e| fail("listen on", e))?;
                l.set_nonblocking(true).map_err(|e| fail("set up", e))?;
                let local = l
                    .local_addr()
                    .map_or_else(|_| a.to_string(), |x| x.to_string());
                let fd = OwnedFd::from(l);
                set_backlog(&fd);
                Ok(Socket {
                    addr: addr.clone(),
                    local,
                    fd,
                })
            }
            Addr::Unix(p) => {
                if let Ok(md) = std::fs::symlink_metadata(p) {
                    if !md.file_type().is_socket() {
                        return Err(format!(
                            "cannot listen on {addr}: {} exists and is not a socket (paddock replaces only a stale socket file)",
                            p.display()
                        ));
                    }
                    let _ = std::fs::remove_file(p);
                }
                let l =
                    std::os::unix::net::UnixListener::bind(p).map_err(|e| fail("listen on", e))?;
                l.set_nonblocking(true).map_err(|e| fail("set up", e))?;
                let fd = OwnedFd::from(l);
                set_backlog(&fd);
                Ok(Socket {
                    addr: addr.clone(),
                    local: addr.to_string(),
                    fd,
                })
            }
        }
    }

    /// A descriptor an earlier paddock left in the descriptor holder, if it is a listening
    /// socket on `addr` (a port 0 matches any port of that address).
    pub fn adopt(addr: &Addr, fd: OwnedFd) -> Option<Socket> {
        use nix::sys::socket::{getsockopt, sockopt};
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return None;
        }
        let (local, fd) = match addr {
            Addr::Tcp(want) => {
                let l = std::net::TcpListener::from(fd);
                let got = l.local_addr().ok()?;
                if got.ip() != want.ip() || (want.port() != 0 && got.port() != want.port()) {
                    return None;
                }
                (got.to_string(), OwnedFd::from(l))
            }
            Addr::Unix(p) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                let got = l.local_addr().ok()?.as_pathname()?.to_path_buf();
                let alive = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket());
                if &got != p || !alive {
                    return None;
                }
                (addr.to_string(), OwnedFd::from(l))
            }
        };
        Some(Socket {
            addr: addr.clone(),
            local,
            fd,
        })
    }

    /// A Unix socket file's mode and owner (`[[listen]] mode`, `owner`).
    pub fn set_access(&self, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let Addr::Unix(p) = &self.addr else {
            return Ok(());
        };
        let fail = |e: std::io::Error| {
            format!(
                "cannot set the mode or owner of {}: {}",
                p.display(),
                crate::util::io_reason(&e)
            )
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(fail)?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(fail)
    }

    /// The listening descriptor itself: what a native app would receive as `LISTEN_FDS`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A tokio listener on a duplicate of the descriptor (the socket stays open while this
    /// one is dropped). Must be called within a tokio runtime.
    pub fn tokio(&self) -> std::io::Result<Listener> {
        let dup = self.fd.try_clone()?;
        Ok(match self.addr {
            Addr::Tcp(_) => Listener::Tcp(tokio::net::TcpListener::from_std(
                std::net::TcpListener::from(dup),
            )?),
            Addr::Unix(_) => Listener::Unix(tokio::net::UnixListener::from_std(
                std::os::unix::net::UnixListener::from(dup),
            )?),
        })
    }
}

/// Set by `paddock reexec`: the next paddock takes the sockets back from the descriptor
/// holder, so their files must stay.
static KEEP_FILES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on a dropped Unix socket leaves its file (see `KEEP_FILES`).
pub fn keep_socket_files() {
    KEEP_FILES.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Addr::Unix(p) = &self.addr
            && !KEEP_FILES.load(std::sync::atomic::Ordering::SeqCst)
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// listen(2) again with paddock's backlog (std uses 128).
fn set_backlog(fd: &OwnedFd) {
    // SAFETY: listen(2) on a descriptor we own; no pointers.
    unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) };
}

/// A socket accepting inside paddock.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// An accepted connection.
pub enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    pub async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s))
            }
            Listener::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What [`busy`] looks for of a socket: its address as configured and as bound (no reference
/// to the socket itself, which stays closable).
#[derive(Clone, Debug)]
pub struct Probe {
    pub addr: Addr,
    pub local: String,
}

impl Probe {
    pub fn of(s: &Socket) -> Probe {
        Probe {
            addr: s.addr.clone(),
            local: s.local.clone(),
        }
    }
}

/// Whether any of `sockets` has a connection open or waiting to be accepted, from the kernel's
/// socket tables in paddock's network namespace (where the sockets and every connection
/// accepted from them live): `/proc/net/tcp` and `tcp6` (a connection on the socket's port, or
/// a listener with a non-empty accept queue) and `/proc/net/unix` (a connected socket with the
/// socket's path). An open connection that stays silent counts as busy, as
/// `systemd-socket-proxyd --exit-idle-time` counts it.
pub fn busy(sockets: &[Probe]) -> bool {
    let ports: Vec<std::net::SocketAddr> = sockets
        .iter()
        .filter_map(|s| match &s.addr {
            Addr::Tcp(_) => s.local.parse().ok(),
            Addr::Unix(_) => None,
        })
        .collect();
    let paths: Vec<&std::path::Path> = sockets
        .iter()
        .filter_map(|s| match &s.addr {
            Addr::Unix(p) => Some(p.as_path()),
            Addr::Tcp(_) => None,
        })
        .collect();
    if !ports.is_empty() {
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(t) = std::fs::read_to_string(table)
                && tcp_busy(&t, &ports)
            {
                return true;
            }
        }
    }
    if !paths.is_empty()
        && let Ok(t) = std::fs::read_to_string("/proc/net/unix")
    {
        return unix_busy(&t, &paths);
    }
    false
}

/// An address of `/proc/net/tcp` or `tcp6`: `HEXIP:HEXPORT`, the IP as 4 (or 16) bytes
/// written as 32-bit words in the host's byte order.
fn proc_addr(s: &str) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for w in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(w * 8..w * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A connection's local address `at` belongs to the listener on `l`: the same port, and the
/// same IP unless the listener takes every address (IPv4 clients of a `[::]` listener show as
/// `::ffff:a.b.c.d`).
fn belongs(at: std::net::SocketAddr, l: std::net::SocketAddr) -> bool {
    let canon = |ip: std::net::IpAddr| ip.to_canonical();
    at.port() == l.port() && (l.ip().is_unspecified() || canon(at.ip()) == canon(l.ip()))
}

/// `/proc/net/tcp` lines: `sl local rem st tx_queue:rx_queue …`, addresses as `HEXIP:HEXPORT`.
fn tcp_busy(table: &str, listeners: &[std::net::SocketAddr]) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().take(5).collect();
        let [_, local, _, st, queues] = f[..] else {
            return false;
        };
        let Some(at) = proc_addr(local) else {
            return false;
        };
        if !listeners.iter().any(|&l| belongs(at, l)) {
            return false;
        }
        match st {
            // LISTEN: connections waiting in its accept queue (rx_queue).
            "0A" => queues
                .split(':')
                .nth(1)
                .and_then(|q| u32::from_str_radix(q, 16).ok())
                .is_some_and(|q| q > 0),
            // ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE_WAIT: a connection the app holds.
            "01" | "02" | "03" | "08" => true,
            _ => false,
        }
    })
}

/// `/proc/net/unix` lines: `Num RefCount Protocol Flags Type St Inode Path`; an accepted
/// connection carries its listener's path, a listener has the flag `__SO_ACCEPTCON` (0x10000).
fn unix_busy(table: &str, paths: &[&std::path::Path]) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            return false;
        }
        let listening = u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x10000 != 0);
        !listening && paths.iter().any(|p| p.as_os_str() == f[7])
    })
}

/// Every socket paddock holds, by configured address.
#[derive(Default)]
pub struct Registry {
    sockets: HashMap<Addr, Arc<Socket>>,
}

impl Registry {
    /// The sockets for `addrs`: the ones already bound are reused, the others bound now.
    pub fn acquire(&mut self, addrs: &[Addr]) -> Result<Vec<Arc<Socket>>, String> {
        let mut out = Vec::with_capacity(addrs.len());
        for a in addrs {
            let s = match self.sockets.get(a) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Socket::bind(a)?);
                    self.sockets.insert(a.clone(), s.clone());
                    s
                }
            };
            out.push(s);
        }
        Ok(out)
    }

    /// Takes a socket an earlier paddock bound (from the descriptor holder) as the one for
    /// `addr`; false when `fd` is not a listening socket on it (it is closed then).
    pub fn adopt(&mut self, addr: Addr, fd: OwnedFd) -> bool {
        match Socket::adopt(&addr, fd) {
            Some(s) => {
                self.sockets.insert(addr, Arc::new(s));
                true
            }
            None => false,
        }
    }

    /// The socket bound for `addr`, if there is one.
    pub fn get(&self, addr: &Addr) -> Option<Arc<Socket>> {
        self.sockets.get(addr).cloned()
    }

    /// The addresses held, with their sockets.
    pub fn iter(&self) -> impl Iterator<Item = (&Addr, &Arc<Socket>)> {
        self.sockets.iter()
    }

    /// Closes the sockets no app holds any more.
    pub fn sweep(&mut self) {
        self.sockets.retain(|_, s| Arc::strong_count(s) > 1);
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Addr::parse("127.0.0.1:8080").unwrap(),
            Addr::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert!(matches!(Addr::parse("[::1]:80").unwrap(), Addr::Tcp(_)));
        assert_eq!(
            Addr::parse("unix:/run/a.sock").unwrap(),
            Addr::Unix("/run/a.sock".into())
        );
        assert_eq!(
            Addr::parse("/run/a.sock").unwrap(),
            Addr::Unix("/run/a.sock".into())
        );
        let e = Addr::parse("localhost:80").unwrap_err();
        assert!(e.contains("IP address and a port"), "{e}");
        assert!(Addr::parse("unix:run/a").unwrap_err().contains("absolute"));
        assert!(
            Addr::parse(&format!("/{}", "a".repeat(120)))
                .unwrap_err()
                .contains("107")
        );
        assert_eq!(Addr::parse("/x.sock").unwrap().to_string(), "unix:/x.sock");
    }

    #[test]
    fn kernel_tables_tell_busy_from_idle() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:1F91 0100007F:C350 06 00000000:00000000 00:00000000 00000000     0        0 0 1\n";
        let at = |s: &str| -> Vec<std::net::SocketAddr> { vec![s.parse().unwrap()] };
        assert!(
            !tcp_busy(tcp, &at("127.0.0.1:8080")),
            "an idle listener and a TIME_WAIT elsewhere"
        );
        assert!(
            !tcp_busy(tcp, &at("127.0.0.1:8081")),
            "TIME_WAIT is not a connection the app holds"
        );
        let waiting = tcp.replace("0A 00000000:00000000", "0A 00000000:00000002");
        assert!(
            tcp_busy(&waiting, &at("127.0.0.1:8080")),
            "two connections wait in the accept queue"
        );
        let open = tcp.replace(" 06 ", " 01 ");
        assert!(tcp_busy(&open, &at("127.0.0.1:8081")));
        assert!(tcp_busy(&open, &at("0.0.0.0:8081")), "a wildcard listener");
        assert!(tcp_busy(&open, &at("[::]:8081")), "a dual-stack listener");
        assert!(
            !tcp_busy(&open, &at("10.1.2.3:8081")),
            "the same port on another address is not this socket's"
        );
        assert!(!tcp_busy("garbage\n1 2\n: : : :\n", &at("127.0.0.1:8080")));
        // tcp6: ::1 port 8080, established; and an IPv4 client of a [::] listener.
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000\n\
   1: 0000000000000000FFFF00000100007F:1F91 0000000000000000FFFF00000100007F:C351 01 00000000:00000000\n";
        assert!(tcp_busy(tcp6, &at("[::1]:8080")));
        assert!(!tcp_busy(tcp6, &at("[::2]:8080")));
        assert!(tcp_busy(tcp6, &at("127.0.0.1:8081")), "v4-mapped");
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/a.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/a.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 102\n";
        assert!(unix_busy(unix, &[std::path::Path::new("/run/a.sock")]));
        assert!(!unix_busy(unix, &[std::path::Path::new("/run/b.sock")]));
        let idle = unix.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(!unix_busy(&idle, &[std::path::Path::new("/run/a.sock")]));
    }

    #[test]
    fn registry_keeps_and_sweeps() {
        let mut r = Registry::default();
        let a = Addr::parse("127.0.0.1:0").unwrap();
        let s1 = r.acquire(std::slice::from_ref(&a)).unwrap();
        let s2 = r.acquire(std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            s1[0].raw_fd(),
            s2[0].raw_fd(),
            "the same socket, bound once"
        );
        assert!(s1[0].local.starts_with("127.0.0.1:") && !s1[0].local.ends_with(":0"));
        drop((s1, s2));
        r.sweep();
        assert!(r.is_empty());
        let dir = std::env::temp_dir().join(format!("paddock-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        std::fs::write(&p, b"x").unwrap();
        let e = Socket::bind(&Addr::Unix(p.clone())).unwrap_err();
        assert!(e.contains("is not a socket"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let s = Socket::bind(&Addr::Unix(p.clone())).unwrap();
        drop(s);
        assert!(!p.exists(), "the socket file goes with the socket");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
