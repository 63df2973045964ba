//! The descriptor holder: a small process that keeps descriptors paddock must not lose when it
//! crashes or re-executes itself — the read ends of the apps' log pipes and the control socket's
//! listener — in the spirit of s6-fdholder and systemd's FD store.
//!
//! `paddock serve` starts it (`paddock __fdholder SOCKET`, in a session of its own) the first
//! time, and connects to the one already running after a crash or `paddock reexec`. Over a
//! `SOCK_SEQPACKET` Unix socket in the state directory (mode 0600, peer uid checked) paddock
//! sends each descriptor it wants kept under a name (`P name` + SCM_RIGHTS), drops names
//! (`D name`), fetches everything back at start (`G`, answered by `F name` + descriptor each,
//! then `E`), and says goodbye at a clean shutdown (`B`: the holder closes everything and exits).
//!
//! While paddock is away, an app writing to its log pipe blocks once the pipe is full (64 KiB)
//! instead of dying of SIGPIPE, and its lines reach the log when paddock is back. A holder left
//! without paddock exits by itself once nothing it holds matters any more: no client for 5 s and
//! every pipe it holds has no writer left and nothing unread.

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, socket, sockopt,
};
use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest name the protocol carries.
pub const MAX_NAME: usize = 255;
/// How many descriptors one holder keeps at most (each app holds two; listeners a few).
pub const MAX_HELD: usize = 65536;
const MSG: usize = MAX_NAME + 2;

/// The holder's socket in a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("fdholder.sock")
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn send(sock: BorrowedFd, msg: &[u8], fd: Option<RawFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(msg)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// One message: its bytes and the descriptors it carried (owned from here on). `None` at EOF.
fn recv(sock: BorrowedFd) -> nix::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = [0u8; MSG];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let m = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = vec![];
        if let Ok(cs) = m.cmsgs() {
            for c in cs {
                if let ControlMessageOwned::ScmRights(v) = c {
                    // SAFETY: SCM_RIGHTS installed these descriptors in this process just now;
                    // nothing else owns them.
                    fds.extend(v.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        (m.bytes, fds)
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((buf[..n].to_vec(), fds)))
}

/// paddock's side: a connection to the holder.
pub struct Client {
    sock: OwnedFd,
    /// Set when a send failed: the holder is gone; paddock goes on without it.
    pub broken: Option<String>,
}

impl Client {
    fn connect(path: &Path) -> nix::Result<Client> {
        let sock = seqpacket()?;
        connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(Client { sock, broken: None })
    }

    /// Connects to the holder of `state_dir`, starting one (this same binary) if none answers.
    /// Returns the client and whether the holder was already running (after a crash or a
    /// re-exec of paddock).
    pub fn connect_or_start(state_dir: &Path) -> Result<(Client, bool), String> {
        let path = socket_path(state_dir);
        if let Ok(c) = Client::connect(&path) {
            return Ok((c, true));
        }
        let exe = std::fs::read_link("/proc/self/exe")
            .map_err(|e| format!("cannot find paddock's own binary: {e}"))?;
        let _ = std::fs::remove_file(&path);
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__fdholder")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe; the child gets a session of its own so that a
        // terminal's Ctrl-C or a signal to paddock's process group does not reach it.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the descriptor holder: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(c) = Client::connect(&path) {
                // The holder is our child until we exit: reaped by paddock's reaper (its pid is
                // not an app's).
                std::mem::forget(child);
                return Ok((c, false));
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("the descriptor holder exited at start ({st})"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "the descriptor holder did not listen on {} within 5 s",
                    path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn fail(&mut self, what: &str, e: nix::errno::Errno) {
        if self.broken.is_none() {
            eprintln!(
                "paddock: the descriptor holder is gone ({what}: {e}): app output will not survive a crash of paddock"
            );
            self.broken = Some(format!("{what}: {e}"));
        }
    }

    /// Keeps `fd` under `name` (replacing what it held under that name).
    pub fn put(&mut self, name: &str, fd: BorrowedFd) {
        if self.broken.is_some() || name.len() > MAX_NAME {
            return;
        }
        let msg = [&b"P"[..], name.as_bytes()].concat();
        if let Err(e) = send(self.sock.as_fd(), &msg, Some(fd.as_raw_fd())) {
            self.fail("put", e);
        }
    }

    /// Forgets `name`.
    pub fn del(&mut self, name: &str) {
        if self.broken.is_some() || name.len() > MAX_NAME {
            return;
        }
        let msg = [&b"D"[..], name.as_bytes()].concat();
        if let Err(e) = send(self.sock.as_fd(), &msg, None) {
            self.fail("del", e);
        }
    }

    /// Everything the holder keeps, by name.
    pub fn get_all(&mut self) -> Result<BTreeMap<String, OwnedFd>, String> {
        send(self.sock.as_fd(), b"G", None).map_err(|e| format!("asking the holder: {e}"))?;
        let mut out = BTreeMap::new();
        loop {
            match recv(self.sock.as_fd()) {
                Ok(Some((m, mut fds))) if m.first() == Some(&b'F') && fds.len() == 1 => {
                    let name = String::from_utf8_lossy(&m[1..]).into_owned();
                    out.insert(name, fds.remove(0));
                }
                Ok(Some((m, _))) if m == b"E" => return Ok(out),
                Ok(Some(_)) => return Err("the holder answered out of protocol".into()),
                Ok(None) => return Err("the holder closed the connection".into()),
                Err(e) => return Err(format!("reading from the holder: {e}")),
            }
        }
    }

    /// A clean shutdown: the holder closes everything and exits.
    pub fn bye(mut self) {
        if self.broken.is_none()
            && let Err(e) = send(self.sock.as_fd(), b"B", None)
        {
            self.fail("bye", e);
        }
    }
}

/// `paddock __fdholder SOCKET`: the holder's main loop. Never returns.
pub fn holder_main(path: &Path) -> ! {
    let code = match run_holder(path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("paddock fdholder: {e}");
            1
        }
    };
    let _ = std::fs::remove_file(path);
    std::process::exit(code)
}

fn run_holder(path: &Path) -> Result<(), String> {
    // SAFETY: signal(2) with SIG_IGN: a hang-up or a broken connection must not end the holder.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let listener = seqpacket().map_err(|e| format!("socket: {e}"))?;
    // SAFETY: umask takes and returns a mode; restored right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let r = UnixAddr::new(path).and_then(|a| bind(listener.as_raw_fd(), &a));
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r.map_err(|e| format!("bind {}: {e}", path.display()))?;
    listen(&listener, Backlog::new(8).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| format!("listen: {e}"))?;
    // SAFETY: no arguments.
    let me = unsafe { libc::geteuid() };
    let mut held: BTreeMap<String, OwnedFd> = BTreeMap::new();
    let mut client: Option<OwnedFd> = None;
    let mut alone_since = Some(Instant::now());
    loop {
        let mut pfds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(c) = &client {
            pfds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll reads and writes `pfds`, a live vector of `pfds.len()` entries.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if pfds[0].revents & libc::POLLIN != 0
            && let Ok(fd) = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
        {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let c = unsafe { OwnedFd::from_raw_fd(fd) };
            let same_user = getsockopt(&c, sockopt::PeerCredentials)
                .map(|cr| cr.uid() == me)
                .unwrap_or(false);
            if same_user {
                // A new paddock replaces the old connection (the old one died with its paddock).
                client = Some(c);
                alone_since = None;
            }
        }
        if client.is_some() && pfds.len() > 1 && pfds[1].revents != 0 {
            let c = client.as_ref().map(|c| c.as_raw_fd()).unwrap_or(-1);
            // SAFETY: `c` is the client descriptor owned by `client` for this whole block.
            let cfd = unsafe { BorrowedFd::borrow_raw(c) };
            match recv(cfd) {
                Ok(Some((m, mut fds))) => match m.first() {
                    Some(b'P') if fds.len() == 1 && m.len() > 1 => {
                        let name = String::from_utf8_lossy(&m[1..]).into_owned();
                        if held.len() < MAX_HELD || held.contains_key(&name) {
                            held.insert(name, fds.remove(0));
                        }
                    }
                    Some(b'D') => {
                        held.remove(&*String::from_utf8_lossy(&m[1..]));
                    }
                    Some(b'G') => {
                        for (name, fd) in &held {
                            let msg = [&b"F"[..], name.as_bytes()].concat();
                            if send(cfd, &msg, Some(fd.as_raw_fd())).is_err() {
                                break;
                            }
                        }
                        let _ = send(cfd, b"E", None);
                    }
                    Some(b'B') => return Ok(()),
                    _ => {} // out of protocol: ignored (its descriptors are closed)
                },
                Ok(None) | Err(_) => {
                    client = None;
                    alone_since = Some(Instant::now());
                }
            }
        }
        if let Some(t) = alone_since
            && t.elapsed() >= Duration::from_secs(5)
            && !held.values().any(|fd| pipe_matters(fd.as_fd()))
        {
            return Ok(()); // paddock is not coming back for anything that still matters
        }
    }
}

/// A held pipe still matters while a writer has it open or it holds unread bytes.
fn pipe_matters(fd: BorrowedFd) -> bool {
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return false;
    }
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) };
    if p.revents & libc::POLLHUP == 0 {
        return true; // a writer is still there
    }
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to `unread`, a live local.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut unread) };
    unread > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder on a thread of its own, in a scratch dir, and a client connected to it.
    fn start_holder() -> (
        crate::util::TestDir,
        std::thread::JoinHandle<Result<(), String>>,
        Client,
    ) {
        let dir = crate::util::TestDir::new("fdstore");
        let path = socket_path(dir.path());
        let p2 = path.clone();
        let t = std::thread::spawn(move || run_holder(&p2));
        let c = loop {
            if let Ok(c) = Client::connect(&path) {
                break c;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        (dir, t, c)
    }

    #[test]
    fn put_get_del_and_bye() {
        let (dir, t, mut c) = start_holder();
        let path = socket_path(dir.path());
        let (r, w) = nix::unistd::pipe().unwrap();
        c.put("log/a/out", r.as_fd());
        c.put("x", w.as_fd());
        c.del("x");
        let got = c.get_all().unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["log/a/out"]);
        // The descriptor came back: what is written to the pipe reads from it.
        nix::unistd::write(&w, b"hi").unwrap();
        let mut buf = [0u8; 2];
        nix::unistd::read(got["log/a/out"].as_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // A second client replaces the first (paddock after a crash) and sees the same.
        drop(c);
        let mut c2 = Client::connect(&path).unwrap();
        assert_eq!(c2.get_all().unwrap().len(), 1);
        c2.bye();
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn garbage_and_long_names_do_not_end_the_holder() {
        let (dir, t, mut c) = start_holder();
        let path = socket_path(dir.path());
        for m in [&b"Z"[..], b"P", b"Pnofd", &[0xff; 300]] {
            let _ = send(c.sock.as_fd(), m, None);
        }
        let (r, _w) = nix::unistd::pipe().unwrap();
        c.put(&"n".repeat(MAX_NAME + 1), r.as_fd()); // refused on our side
        assert!(c.get_all().unwrap().is_empty());
        // An empty message reads as a hang-up: that client is dropped, the holder stays.
        let _ = send(c.sock.as_fd(), b"", None);
        drop(c);
        let mut c = Client::connect(&path).unwrap();
        c.put("k", r.as_fd());
        assert_eq!(c.get_all().unwrap().len(), 1);
        c.bye();
        assert!(t.join().unwrap().is_ok());
    }
}
