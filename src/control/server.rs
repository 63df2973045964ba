//! The control socket: accepts connections, checks the caller's uid (SO_PEERCRED), parses one
//! request, routes it to the supervisor task and writes the answer. Bad input gets an HTTP error
//! and never reaches the supervisor; a slow client is cut off; concurrency is bounded.

use super::api::{Call, Format, Halt, Reply, Request, Verb};
use super::board::Board;
use super::http::{self, HttpError, HttpRequest};
use crate::logs::{Ctl, Logs, Stream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

/// How long a client may take to send its request (the CLI sends it at once): a client that
/// trickles it (slowloris) is answered 408 and its slot freed. The same for the metrics port.
const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// Connections open at once, each bounded in time until its request is in; more get 503. High
/// enough that thousands of trickling clients leave room for `paddock status`.
const MAX_CONNECTIONS: usize = 4096;
/// Of those, long-lived streams (`tail -f`, `events`): each holds a buffer, so they have a
/// budget of their own, and short requests never wait for one.
const MAX_STREAMS: usize = 256;

/// Creates the socket (mode 0600). A live paddock on the same path is an error; a stale socket
/// file left by a crash is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create {}: {}",
                dir.display(),
                crate::util::io_reason(&e)
            )
        })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another paddock is already serving on {} (stop it, or use --socket)",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    // SAFETY: umask takes and returns a mode; the old one is restored right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(|e| {
        format!(
            "cannot listen on {}: {}",
            path.display(),
            crate::util::io_reason(&e)
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

/// A listener kept by the descriptor holder is still the socket at `path` (nobody removed or
/// replaced the file meanwhile).
pub fn listens_on(fd: &std::os::fd::OwnedFd, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(addr) = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
        std::os::fd::AsRawFd::as_raw_fd(fd),
    ) else {
        return false;
    };
    let same_path = addr.path().is_some_and(|p| p == path);
    let is_socket =
        std::fs::symlink_metadata(path).is_ok_and(|m| m.mode() & libc::S_IFMT == libc::S_IFSOCK);
    same_path && is_socket
}

/// The control listener handed back by the descriptor holder (after a crash or a re-exec).
pub fn from_held(fd: std::os::fd::OwnedFd) -> Result<UnixListener, String> {
    let l = std::os::unix::net::UnixListener::from(fd);
    l.set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(l))
        .map_err(|e| format!("the control socket kept by the holder: {e}"))
}

/// The control socket and the metrics port, served on a thread of their own.
pub struct ControlThread {
    stop: Option<oneshot::Sender<()>>,
}

impl ControlThread {
    /// Stops accepting connections (they wait in the listeners' backlogs, which the descriptor
    /// holder keeps, for the next paddock); the answers already decided are still written.
    pub fn stop_accepting(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves the control socket (and the metrics port) on a thread with a runtime of its own.
/// Accepting, reading and parsing requests and writing answers never wait for a turn of the
/// supervisor's loop, which may be busy spawning and reaping (50 zero-backoff crash loops):
/// only the request's own answer does. Log tails and event streams run there too.
pub fn start_thread(
    listener: UnixListener,
    metrics: Option<tokio::net::TcpListener>,
    (sup, board): (mpsc::UnboundedSender<Call>, Arc<Board>),
    logs: Logs,
    events: broadcast::Sender<String>,
) -> Result<ControlThread, String> {
    // Taken out of the supervisor's runtime here, registered with the thread's own there.
    let listener = listener
        .into_std()
        .map_err(|e| format!("the control socket: {e}"))?;
    let metrics = match metrics.map(|m| m.into_std()) {
        Some(Err(e)) => return Err(format!("the metrics listener: {e}")),
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control socket's runtime: {e}"))?;
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("paddock-control".into())
        .spawn(move || {
            // SAFETY: gettid and setpriority take integers only; a refusal (no CAP_SYS_NICE)
            // leaves the thread at paddock's own priority.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10);
            }
            rt.block_on(async move {
                let listener = match UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return eprintln!("paddock: the control socket: {e}"),
                };
                let metrics = metrics.and_then(|m| match tokio::net::TcpListener::from_std(m) {
                    Ok(l) => Some(tokio::spawn(super::metrics_tcp::serve(l, sup.clone()))),
                    Err(e) => {
                        eprintln!("paddock: the metrics listener: {e}");
                        None
                    }
                });
                tokio::select! {
                    () = serve(listener, sup, board, logs, events) => {}
                    _ = stopped => {}
                }
                if let Some(m) = metrics {
                    m.abort();
                }
                // The connections already accepted finish on this runtime; the thread ends
                // with the process (an exit, or the exec of `reexec`).
                std::future::pending::<()>().await
            })
        })
        .map_err(|e| format!("cannot start the control socket's thread: {e}"))?;
    Ok(ControlThread { stop: Some(stop) })
}

async fn serve(
    listener: UnixListener,
    sup: mpsc::UnboundedSender<Call>,
    board: Arc<Board>,
    logs: Logs,
    events: broadcast::Sender<String>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    let reserve = Arc::new(std::sync::Mutex::new(Vec::new()));
    refill(&reserve);
    let mut told = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of file descriptors: give one of the reserve back so that this client
                // (`paddock status`, say) is still answered; it is taken again afterwards.
                let freed = reserve.lock().ok().and_then(|mut r| r.pop());
                if !told {
                    told = true;
                    eprintln!(
                        "paddock: out of file descriptors ({}); the control socket serves from its reserve",
                        crate::util::io_reason(&e)
                    );
                }
                if freed.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await; // back off
                continue;
            }
        };
        let (sup, logs, events) = (sup.clone(), logs.clone(), events.clone());
        let (reserve, streams, board) = (reserve.clone(), streams.clone(), board.clone());
        within_budget(&slots, stream, |s| async move {
            connection(s, (sup, board), logs, events, streams).await;
            refill(&reserve);
        });
    }
}

/// Serves an accepted connection with `serve` on a task of its own while `slots` has room
/// (the task holds a slot until it ends); past the budget the client is answered 503 at once.
/// For the control socket and the metrics port alike.
pub(super) fn within_budget<S, F, Fut>(slots: &Arc<Semaphore>, stream: S, serve: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match slots.clone().try_acquire_owned() {
        Ok(permit) => {
            let task = serve(stream);
            tokio::spawn(async move {
                task.await;
                drop(permit);
            });
        }
        Err(_) => {
            tokio::spawn(async move {
                let mut s = stream;
                let _ =
                    write_reply(&mut s, Reply::error(503, "too many connections; try again")).await;
            });
        }
    }
}

/// One request, read within `REQUEST_DEADLINE`: a late one is answered 408, a malformed one
/// with its HTTP error.
pub(super) async fn read_within<S: AsyncRead + Unpin>(s: &mut S) -> Result<HttpRequest, Reply> {
    match tokio::time::timeout(REQUEST_DEADLINE, http::read_request(s)).await {
        Err(_) => Err(Reply::error(408, "request not received in time")),
        Ok(Err(HttpError(status, msg))) => Err(Reply::error(status, msg)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Descriptors held back for the control socket, so that it can accept a client when paddock
/// has run out of them (the apps' pipes, sockets and log files took the rest).
const RESERVE_FDS: usize = 4;

fn refill(reserve: &std::sync::Mutex<Vec<std::fs::File>>) {
    let Ok(mut r) = reserve.lock() else { return };
    while r.len() < RESERVE_FDS {
        match std::fs::File::open("/dev/null") {
            Ok(f) => r.push(f),
            Err(_) => return,
        }
    }
}

pub(super) async fn write_reply<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    r: Reply,
) -> std::io::Result<()> {
    let head = http::response_head(r.status, r.content_type, Some(r.body.len()));
    s.write_all(head.as_bytes()).await?;
    s.write_all(r.body.as_bytes()).await?;
    write_reply_tail(s).await
}

/// Ends a response: half-close, then drain what the client still sends.
async fn write_reply_tail<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<()> {
    s.shutdown().await?;
    // Lingering close: closing a socket with unread input resets the connection, and the
    // client would lose the answer. Drain what the client still sends, within bounds.
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf).await {
            total += n;
            if n == 0 || total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

fn allowed(s: &UnixStream) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    match s.peer_cred() {
        Ok(c) => c.uid() == 0 || c.uid() == me,
        Err(_) => false,
    }
}

async fn connection(
    mut s: UnixStream,
    (sup, board): (mpsc::UnboundedSender<Call>, Arc<Board>),
    logs: Logs,
    events: broadcast::Sender<String>,
    streams: Arc<tokio::sync::Semaphore>,
) {
    if !allowed(&s) {
        let uid = s.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let _ = write_reply(
            &mut s,
            Reply::error(
                403,
                format!("uid {uid} may not control this paddock (only root and its owner)"),
            ),
        )
        .await;
        return;
    }
    let req = match read_within(&mut s).await {
        Err(r) => {
            let _ = write_reply(&mut s, r).await;
            return;
        }
        Ok(r) => r,
    };
    let log = log_route(&req);
    let is_events = req.method == "GET" && req.path.trim_matches('/') == "v1/events";
    let _stream = if log.as_ref().is_some_and(|l| l.3) || is_events {
        match streams.try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let msg = format!(
                    "too many log and event streams ({MAX_STREAMS}) are open; close some and try again"
                );
                let _ = write_reply(&mut s, Reply::error(503, msg)).await;
                return;
            }
        }
    } else {
        None
    };
    if let Some((name, stream, lines, follow)) = log {
        return tail(s, sup, logs, name, stream, lines, follow).await;
    }
    if is_events {
        return stream_events(s, events.subscribe()).await;
    }
    IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reply = match route(&req) {
        // Status from the board when it is fresh (see `board.rs`); else the supervisor's turn.
        Ok(Request::Status(names, format)) => match board.answer(&names, format, |s| {
            s.log_lines_dropped = logs.dropped(&s.name);
        }) {
            Some(r) => r,
            None => ask(&sup, Request::Status(names, format)).await,
        },
        Ok(request) => ask(&sup, request).await,
        Err(r) => r,
    };
    let head = http::response_head(reply.status, reply.content_type, Some(reply.body.len()));
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(reply.body.as_bytes()).await;
    IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    if reply.body.len() > BIG_ANSWER {
        // The statuses of a thousand apps, and their JSON: given back, not kept resident.
        drop(reply);
        crate::util::trim_heap();
    }
    let _ = write_reply_tail(&mut s).await;
}

/// An answer this large (a status of some 200 apps and more) gives its heap back once written.
const BIG_ANSWER: usize = 256 << 10;

/// Requests answered by the supervisor whose answer is not written yet.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Lets the answers already decided reach their clients (the `shutdown` request's own answer)
/// before paddock exits; waits at most `limit`.
pub async fn drain(limit: Duration) {
    let t = tokio::time::Instant::now();
    while IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) > 0 && t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(super) async fn ask(sup: &mpsc::UnboundedSender<Call>, r: Request) -> Reply {
    let (tx, rx) = oneshot::channel();
    if sup.send(Call(r, tx)).is_err() {
        return Reply::error(503, "paddock is exiting");
    }
    rx.await
        .unwrap_or_else(|_| Reply::error(503, "paddock is exiting"))
}

fn names(seg: &str) -> Vec<String> {
    seg.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn body_json(req: &HttpRequest) -> Result<serde_json::Value, Reply> {
    if req.body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Reply::error(400, format!("request body is not valid JSON: {e}")))
}

/// `?format=table[&width=N]` (the CLI's status table, INFO cut to N columns) or
/// `?format=json` (the default).
fn table_format(req: &HttpRequest) -> Result<Format, Reply> {
    let width = match req.param("width") {
        None => None,
        Some(w) => match w.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(Reply::error(
                    400,
                    format!("width={w}: expected a number of columns, 1 to 65535"),
                ));
            }
        },
    };
    match (req.param("format"), width) {
        (None | Some("json"), None) => Ok(Format::Json),
        (None | Some("json"), Some(_)) => Err(Reply::error(
            400,
            "width= is for format=table only".to_string(),
        )),
        (Some("table"), w) => Ok(Format::Table(w)),
        (Some(other), _) => Err(Reply::error(
            400,
            format!("format={other}: expected json or table"),
        )),
    }
}

/// Maps a request to a supervisor request (or an HTTP error).
fn route(req: &HttpRequest) -> Result<Request, Reply> {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let m = req.method.as_str();
    let wrong = || {
        Reply::error(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        )
    };
    Ok(match parts.as_slice() {
        ["metrics"] if m == "GET" => Request::Metrics,
        ["v1", "version"] if m == "GET" => Request::Version,
        ["v1", "reexec"] if m == "POST" => Request::Reexec,
        ["v1", "apps"] if m == "GET" => Request::Status(
            req.param("names").map(names).unwrap_or_default(),
            table_format(req)?,
        ),
        ["v1", "apps", n] if m == "GET" => Request::Status(names(n), table_format(req)?),
        ["v1", "apps", n, "history"] if m == "GET" => Request::History(n.to_string()),
        ["v1", "apps", n, "rollback"] if m == "POST" => Request::Rollback {
            app: n.to_string(),
            generation: match req.param("generation") {
                None => None,
                Some(g) => Some(g.parse().ok().filter(|&g: &u64| g > 0).ok_or_else(|| {
                    Reply::error(
                        400,
                        format!("generation={g}: expected a generation number (1, 2, …; see `paddock history`)"),
                    )
                })?),
            },
        },
        ["v1", "apps", n, verb @ ("start" | "stop" | "restart")] if m == "POST" => {
            Request::Action {
                names: names(n),
                verb: match *verb {
                    "start" => Verb::Start,
                    "stop" => Verb::Stop,
                    _ => Verb::Restart,
                },
                wait: req.param("wait").is_none_or(|_| req.flag("wait")),
            }
        }
        ["v1", "apps", n, "signal"] if m == "POST" => {
            let body = body_json(req)?;
            let sig = req.param("signal").map(str::to_string).or_else(|| {
                body.get("signal")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            });
            let sig = sig.ok_or_else(|| {
                Reply::error(400, "name the signal: ?signal=HUP or {\"signal\": \"HUP\"}")
            })?;
            let signal =
                crate::config::units::parse_signal(&sig).map_err(|e| Reply::error(400, e))?;
            Request::Signal {
                names: names(n),
                signal,
            }
        }
        ["v1", "reread"] if m == "GET" || m == "POST" => Request::Reread,
        ["v1", "update"] if m == "POST" => Request::Update,
        ["v1", "shutdown"] if m == "POST" => Request::Shutdown(match req.param("then") {
            None | Some("exit") => None,
            Some("poweroff") => Some(Halt::Poweroff),
            Some("reboot") => Some(Halt::Reboot),
            Some(other) => {
                return Err(Reply::error(
                    400,
                    format!("then={other}: expected exit, poweroff or reboot"),
                ));
            }
        }),
        ["v1", "logs", "reopen"] if m == "POST" => Request::ReopenLogs,
        ["metrics"]
        | ["v1", "version"]
        | ["v1", "apps"]
        | ["v1", "apps", _]
        | ["v1", "apps", _, _]
        | ["v1", "reread"]
        | ["v1", "update"]
        | ["v1", "shutdown"]
        | ["v1", "reexec"]
        | ["v1", "logs", "reopen"] => return Err(wrong()),
        _ => {
            return Err(Reply::error(
                404,
                format!(
                    "no such endpoint: {} {} (see the API reference in docs/api.md)",
                    req.method, req.path
                ),
            ));
        }
    })
}

type LogRoute = (String, Stream, usize, bool);

fn log_route(req: &HttpRequest) -> Option<LogRoute> {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "apps", n, "logs"] if req.method == "GET" => {
            let stream = if matches!(req.param("stream"), Some("stderr" | "err")) {
                Stream::Err
            } else {
                Stream::Out
            };
            let lines = req
                .param("lines")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10usize)
                .min(crate::logs::MAX_TAIL_LINES);
            Some((n.to_string(), stream, lines, req.flag("follow")))
        }
        _ => None,
    }
}

/// `GET /v1/apps/NAME/logs?stream=stdout|stderr&lines=N&follow=1`: the last lines, then, with
/// follow, every new line until the client goes away. The body is close-delimited text.
async fn tail(
    mut s: UnixStream,
    sup: mpsc::UnboundedSender<Call>,
    logs: Logs,
    name: String,
    stream: Stream,
    lines: usize,
    follow: bool,
) {
    let check = ask(&sup, Request::LogTarget(name.clone())).await;
    if check.status != 200 {
        let _ = write_reply(&mut s, check).await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    logs.send(Ctl::Tail {
        app: name.as_str().into(),
        stream,
        lines,
        follow,
        tx,
        queued: queued.clone(),
    });
    if s.write_all(http::response_head(200, "text/plain; charset=utf-8", None).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = s.into_split();
    let mut scratch = [0u8; 256];
    let mut client_open = true;
    let mut watch = tokio::time::interval(HANGUP_CHECK);
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(c) => {
                    let written = wr.write_all(&c).await;
                    queued.fetch_sub(c.len(), std::sync::atomic::Ordering::Relaxed);
                    if written.is_err() {
                        return;
                    }
                }
                None => break,
            },
            n = rd.read(&mut scratch), if client_open => match n {
                // The client closed: gone (hung up), or only its sending side (half-closed:
                // keep writing, and look again now and then).
                Ok(0) if hung_up(rd.as_ref()) => return,
                Ok(0) => client_open = false,
                Ok(_) => {}
                Err(_) => return, // the client went away
            },
            _ = watch.tick(), if !client_open => if hung_up(rd.as_ref()) {
                return;
            },
        }
    }
    let _ = wr.shutdown().await;
}

/// How often a half-closed streaming client is looked at again for a hang-up.
const HANGUP_CHECK: Duration = Duration::from_millis(500);

/// Whether the peer of a Unix stream has closed it entirely (POLLHUP: both directions shut), as
/// opposed to a half-close (POLLRDHUP only), which a client may do after its request.
fn hung_up(s: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// `GET /v1/events`: every state change from now on, one JSON object per line, until the client
/// goes away. A client too slow to keep up is told how many events it missed.
async fn stream_events(s: UnixStream, mut rx: broadcast::Receiver<String>) {
    let (mut rd, mut wr) = s.into_split();
    if wr
        .write_all(http::response_head(200, "application/x-ndjson", None).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut scratch = [0u8; 256];
    let mut client_open = true;
    let mut watch = tokio::time::interval(HANGUP_CHECK);
    loop {
        tokio::select! {
            _ = watch.tick(), if !client_open => if hung_up(rd.as_ref()) {
                return;
            },
            ev = rx.recv() => {
                let line = match ev {
                    Ok(l) => l,
                    Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"lagged\":{n}}}"),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if wr.write_all(line.as_bytes()).await.is_err() || wr.write_all(b"\n").await.is_err() {
                    return;
                }
            }
            n = rd.read(&mut scratch), if client_open => match n {
                Ok(0) if hung_up(rd.as_ref()) => return,
                Ok(0) => client_open = false,
                Ok(_) => {}
                Err(_) => return,
            },
        }
    }
}
