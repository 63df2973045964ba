//! Publishing (`[sandbox] publish`): host TCP listeners that paddock owns and forwards into an
//! app's own network namespace, so a sandboxed server with `network = "none"` is reachable from
//! the host without being given the host's network.
//!
//! - **Listeners are keyed by host address**, not by app. `sync` (at load and after each
//!   `update`) keeps a listener whose address is still published (by the same app, to another
//!   port inside, or even by another app), closes the ones no app publishes any more, and binds
//!   the new ones. A listener lives across its app's restarts. An address that could not be bound
//!   is tried again before each start of its app (`retry`), whose start fails meanwhile.
//! - **Where connections go** (`set_target`): the app's network namespace, a descriptor
//!   duplicated from its prepared sandbox, set when the app's current instance is spawned (a
//!   bundle switch moves it once the new instance is READY), or why there is none.
//! - **Each connection is a task** on paddock's runtime, not a thread. A socket belongs to the
//!   network namespace it was created in, and connect and I/O then work from any thread: one
//!   helper thread (`paddock-publish`) setns()es into the app's namespace (it stays there until
//!   another app's is asked for) and creates the socket; the task connects it to
//!   127.0.0.1:<port inside> and copies bytes both ways, each direction shut down when the other
//!   side finishes sending (half-close), until both are done.
//! - **Nothing listening inside** (or no namespace): the client's connection is reset, and one
//!   line is logged (at most one a second per address, with a count of the lines left out).
//!
//! This module is meant to become paddock's one listener abstraction (issue 16: `[[listen]]`
//! sockets handed to apps).

use crate::config::sandbox::Publish;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Where an app's connections go: its network namespace, or why there is none.
pub type Target = Result<Arc<OwnedFd>, String>;

pub use crate::control::api::PublishedPort;

struct Route {
    app: Arc<str>,
    port: u16,
    target: Target,
}

/// What a listener's tasks share with the `Publisher`.
struct Shared {
    host: SocketAddr,
    route: Mutex<Route>,
    log: Mutex<LogLimit>,
    /// The same for the line saying that the connection limit is reached.
    log_full: Mutex<LogLimit>,
    factory: mpsc::Sender<Req>,
    /// Connections in flight across all published addresses (two descriptors each).
    slots: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct LogLimit {
    last: Option<Instant>,
    left_out: u64,
}

impl Shared {
    /// One line to paddock's stderr, at most one a second per address.
    fn log(&self, line: String) {
        Self::limited(&self.log, line)
    }

    fn limited(limit: &Mutex<LogLimit>, line: String) {
        let mut l = limit.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if l.last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            l.left_out += 1;
            return;
        }
        let more = match l.left_out {
            0 => String::new(),
            n => format!(" ({n} more such lines in the last second not logged)"),
        };
        l.last = Some(now);
        l.left_out = 0;
        eprintln!("{line}{more}");
    }
}

struct Live {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// The socket in paddock's registry (and so in the descriptor holder), when there is one.
    _socket: Option<Arc<crate::listen::Socket>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The accept loop owns the listener: dropping the task closes it. Connections already
        // forwarded go on until either side closes.
        self.task.abort();
    }
}

struct Entry {
    app: Arc<str>,
    port: u16,
    state: Result<Live, String>,
}

/// Every published address of paddock, with its listener.
#[derive(Default)]
pub struct Publisher {
    entries: BTreeMap<SocketAddr, Entry>,
    targets: HashMap<Arc<str>, Target>,
    factory: Option<mpsc::Sender<Req>>,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// paddock's socket registry: a listener found there (one an earlier paddock left in the
    /// descriptor holder) is used as it is; a new one is registered there.
    registry: Option<Arc<Mutex<crate::listen::Registry>>>,
}

/// How many forwarded connections may be open at once, across all published addresses: a
/// quarter of paddock's descriptor limit (each takes two), so that clients of a published port
/// cannot take the descriptors paddock needs to supervise. Further clients wait in the
/// listen backlog.
pub fn max_connections() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        (soft / 4).clamp(64, 16384) as usize
    })
}

impl Publisher {
    /// Keeps the listeners in `registry` (see the field).
    pub fn use_registry(&mut self, registry: Arc<Mutex<crate::listen::Registry>>) {
        self.registry = Some(registry);
    }

    /// Makes the listeners match `want` (app name, entry): keeps the ones still wanted, closes
    /// the others, binds the new ones. Needs the runtime (listeners register with it).
    pub fn sync(&mut self, want: &[(Arc<str>, Publish)]) {
        let wanted: BTreeMap<SocketAddr, (Arc<str>, u16)> = want
            .iter()
            .map(|(a, p)| (p.host, (a.clone(), p.port)))
            .collect();
        self.entries.retain(|host, _| wanted.contains_key(host));
        self.targets
            .retain(|app, _| wanted.values().any(|(a, _)| a == app));
        for (host, (app, port)) in wanted {
            let target = self.target_of(&app);
            let state = match self.entries.remove(&host) {
                Some(Entry {
                    state: Ok(live), ..
                }) => {
                    *live.shared.route.lock().unwrap_or_else(|e| e.into_inner()) = Route {
                        app: app.clone(),
                        port,
                        target,
                    };
                    Ok(live)
                }
                // New, or not bound before: (again) now.
                _ => self.listen(host, &app, port, target),
            };
            self.entries.insert(host, Entry { app, port, state });
        }
    }

    fn target_of(&self, app: &str) -> Target {
        self.targets
            .get(app)
            .cloned()
            .unwrap_or_else(|| Err("the app has not been started yet".into()))
    }

    /// Binds `host` and starts its accept loop.
    fn listen(
        &mut self,
        host: SocketAddr,
        app: &Arc<str>,
        port: u16,
        target: Target,
    ) -> Result<Live, String> {
        let factory = match &self.factory {
            Some(f) => f.clone(),
            None => {
                let f = start_factory().map_err(|e| {
                    format!(
                        "cannot start the publishing thread: {}",
                        crate::util::io_reason(&e)
                    )
                })?;
                self.factory = Some(f.clone());
                f
            }
        };
        let slots = self
            .slots
            .get_or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max_connections())))
            .clone();
        let addr = crate::listen::Addr::Tcp(host);
        // Only a socket no app holds (one taken back from the descriptor holder): an address
        // an app listens on itself is not shared with a forwarder.
        let registered = self
            .registry
            .as_ref()
            .and_then(|r| r.lock().ok()?.get(&addr))
            .filter(|s| Arc::strong_count(s) <= 2);
        if let Some(s) = registered {
            let listener = match s.tokio() {
                Ok(crate::listen::Listener::Tcp(l)) => l,
                Ok(_) => return Err(format!("publish {host}: not a TCP socket")),
                Err(e) => return Err(format!("publish {host}: {}", crate::util::io_reason(&e))),
            };
            return Ok(self.start(listener, host, app, port, target, factory, slots, Some(s)));
        }
        let listener = bind(host).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EADDRINUSE) => {
                    "; another program (or app) has it: stop it, or publish another port"
                }
                Some(libc::EADDRNOTAVAIL) => "; no interface of this host has that address",
                Some(libc::EACCES) => "; ports below 1024 need paddock to run as root",
                _ => "",
            };
            format!("publish {host}: {}{hint}", crate::util::io_reason(&e))
        })?;
        let socket = self.registry.as_ref().and_then(|r| {
            use std::os::fd::AsFd;
            let dup = listener.as_fd().try_clone_to_owned().ok()?;
            let mut r = r.lock().ok()?;
            r.adopt(addr.clone(), dup).then(|| r.get(&addr)).flatten()
        });
        Ok(self.start(listener, host, app, port, target, factory, slots, socket))
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        listener: TcpListener,
        host: SocketAddr,
        app: &Arc<str>,
        port: u16,
        target: Target,
        factory: mpsc::Sender<Req>,
        slots: Arc<tokio::sync::Semaphore>,
        socket: Option<Arc<crate::listen::Socket>>,
    ) -> Live {
        let shared = Arc::new(Shared {
            host,
            route: Mutex::new(Route {
                app: app.clone(),
                port,
                target,
            }),
            log: Mutex::new(LogLimit::default()),
            log_full: Mutex::new(LogLimit::default()),
            factory,
            slots,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Live {
            shared,
            task,
            _socket: socket,
        }
    }

    /// Tries again to bind the addresses of `app` that could not be bound; the first error left.
    pub fn retry(&mut self, app: &str) -> Result<(), String> {
        let hosts: Vec<SocketAddr> = self
            .entries
            .iter()
            .filter(|(_, e)| &*e.app == app && e.state.is_err())
            .map(|(h, _)| *h)
            .collect();
        let mut first = Ok(());
        for host in hosts {
            let Some((app, port)) = self.entries.get(&host).map(|e| (e.app.clone(), e.port)) else {
                continue;
            };
            let target = self.target_of(&app);
            let state = self.listen(host, &app, port, target);
            if let (Err(e), Ok(())) = (&state, &first) {
                first = Err(e.clone());
            }
            if let Some(e) = self.entries.get_mut(&host) {
                e.state = state;
            }
        }
        first
    }

    /// Whether any address is published.
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether `app` publishes anything.
    pub fn has(&self, app: &str) -> bool {
        self.entries.values().any(|e| &*e.app == app)
    }

    /// Sends the connections of `app` to `target` from now on.
    pub fn set_target(&mut self, app: &str, target: Result<OwnedFd, String>) {
        let Some(name) = self
            .entries
            .values()
            .find(|e| &*e.app == app)
            .map(|e| e.app.clone())
        else {
            return;
        };
        // The same namespace as before (a restart): keep the descriptor the helper thread is
        // already in.
        let target = match (target, self.targets.get(app)) {
            (Ok(fd), Some(Ok(old))) if same_file(&fd, old) => Ok(old.clone()),
            (t, _) => t.map(Arc::new),
        };
        for e in self.entries.values() {
            if e.app == name
                && let Ok(live) = &e.state
            {
                live.shared
                    .route
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .target = target.clone();
            }
        }
        self.targets.insert(name, target);
    }

    /// The published addresses of `app`, for `status`.
    pub fn status(&self, app: &str) -> Vec<PublishedPort> {
        let target = self.targets.get(app);
        self.entries
            .iter()
            .filter(|(_, e)| &*e.app == app)
            .map(|(host, e)| PublishedPort {
                address: host.to_string(),
                port: e.port,
                listening: e.state.is_ok(),
                error: match (&e.state, target) {
                    (Err(why), _) => Some(why.clone()),
                    (Ok(_), Some(Err(why))) => Some(format!("not forwarding: {why}")),
                    _ => None,
                },
            })
            .collect()
    }
}

/// The namespace a sandboxed app's connections go to, from its prepared launch.
pub fn target_of(p: &crate::driver::native::Prepared) -> Result<OwnedFd, String> {
    if p.level != crate::config::Isolation::Sandbox {
        return Err(format!(
            "the app runs at level {} (its fallback), in the host's network: connect to it directly",
            p.level.as_str()
        ));
    }
    let Some(ns) = p.netns() else {
        return Err("paddock is not root: the app's network namespace belongs to its own user namespace, which paddock cannot enter (publishing needs paddock to run as root)".into());
    };
    ns.try_clone_to_owned().map_err(|e| {
        format!(
            "cannot hold the app's network namespace: {}",
            crate::util::io_reason(&e)
        )
    })
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let st = |fd: &OwnedFd| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: fstat writes into the buffer given, which is large enough; fd is open.
        let r = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        // SAFETY: fstat filled it (r == 0), or it is still zeroed, a valid `stat`.
        (r == 0).then(|| unsafe { st.assume_init() })
    };
    match (st(a), st(b)) {
        (Some(x), Some(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

fn bind(host: SocketAddr) -> io::Result<TcpListener> {
    let s = if host.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As every server does: a restart of paddock can bind while old connections linger.
    s.set_reuseaddr(true)?;
    s.bind(host)?;
    s.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let slot = match shared.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                Shared::limited(
                    &shared.log_full,
                    format!(
                        "paddock: publish {}: {} connections are open through published ports, the most paddock forwards at once; new clients wait",
                        shared.host,
                        max_connections()
                    ),
                );
                let Ok(slot) = shared.slots.clone().acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        match listener.accept().await {
            Ok((client, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    forward(shared, client, peer).await;
                    drop(slot);
                });
            }
            Err(e) => {
                let app = shared
                    .route
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .app
                    .clone();
                shared.log(format!(
                    "paddock: {app}: publish {}: accept: {}",
                    shared.host,
                    crate::util::io_reason(&e)
                ));
                // Out of descriptors, most likely: give the connections in flight time to end.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection: to the app's namespace, then bytes both ways until both sides are done.
async fn forward(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr) {
    let (app, port, target) = {
        let r = shared.route.lock().unwrap_or_else(|e| e.into_inner());
        (r.app.clone(), r.port, r.target.clone())
    };
    let inside = match target {
        Ok(ns) => connect_inside(&shared.factory, ns, port).await,
        Err(why) => Err(why),
    };
    match inside {
        Ok(mut inside) => {
            let _ = client.set_nodelay(true);
            let _ = inside.set_nodelay(true);
            // Errors (a reset from either side) end the connection: both sockets are dropped.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut inside).await;
        }
        Err(why) => {
            shared.log(format!(
                "paddock: {app}: publish {}: {why}; reset the connection from {peer}",
                shared.host
            ));
            reset_on_close(&client);
        }
    }
}

/// SO_LINGER 0: closing sends a reset, not a FIN (the client is told at once that nobody
/// answered, as when nothing listens).
fn reset_on_close(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `l` (of the size given) during the call; the socket is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

async fn connect_inside(
    factory: &mpsc::Sender<Req>,
    ns: Arc<OwnedFd>,
    port: u16,
) -> Result<TcpStream, String> {
    let (tx, rx) = oneshot::channel();
    factory
        .send(Req { ns, reply: tx })
        .map_err(|_| "the publishing thread is gone".to_string())?;
    let fd = rx
        .await
        .map_err(|_| "the publishing thread is gone".to_string())?
        .map_err(|e| {
            format!(
                "cannot make a socket in the app's network namespace: {}",
                crate::util::io_reason(&e)
            )
        })?;
    // SAFETY: `fd` is a TCP socket just created for us and owned by nobody else.
    let sock = unsafe { TcpSocket::from_raw_fd(fd.into_raw_fd()) };
    sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => {
                format!("nothing listens on port {port} in the app's network namespace")
            }
            _ => format!(
                "connecting to port {port} in the app's network namespace: {}",
                crate::util::io_reason(&e)
            ),
        })
}

/// A request to the helper thread: a TCP socket in namespace `ns`.
struct Req {
    ns: Arc<OwnedFd>,
    reply: oneshot::Sender<io::Result<OwnedFd>>,
}

fn start_factory() -> io::Result<mpsc::Sender<Req>> {
    let (tx, rx) = mpsc::channel::<Req>();
    std::thread::Builder::new()
        .name("paddock-publish".into())
        .spawn(move || {
            // The namespace this thread is in (None: paddock's own, or unknown after a failure).
            let mut current: Option<Arc<OwnedFd>> = None;
            while let Ok(req) = rx.recv() {
                let _ = req.reply.send(socket_in(&mut current, req.ns));
            }
        })?;
    Ok(tx)
}

/// A non-blocking TCP socket created in namespace `ns`, entering it first if this thread is
/// elsewhere. Only this thread's namespace changes (setns(CLONE_NEWNET) is per thread), and
/// this thread does nothing else.
fn socket_in(current: &mut Option<Arc<OwnedFd>>, ns: Arc<OwnedFd>) -> io::Result<OwnedFd> {
    if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &ns)) {
        *current = None;
        // SAFETY: `ns` is an open network-namespace descriptor; setns changes nothing but the
        // calling thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        *current = Some(ns);
    }
    // SAFETY: plain socket(2); the descriptor returned is owned by the OwnedFd made from it.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
