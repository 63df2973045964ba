//! The apps' output pipes, read by one thread (`paddock-pipes`) waiting on an epoll set of all
//! of them: what it reads goes to the writer in chunks, in order per pipe. A pipe costs an
//! entry here (its descriptor, app and stream) and an epoll registration: a task per pipe on
//! the supervisor's runtime cost ~0.75 KiB each, 1.5 MiB for 1000 apps.

use super::{Data, Stream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

struct Pipe {
    fd: OwnedFd,
    app: Arc<str>,
    stream: Stream,
}

/// The pipes being read, by epoll key (a slot; free slots are reused).
#[derive(Default)]
struct Slots {
    pipes: Vec<Option<Pipe>>,
    free: Vec<usize>,
}

pub(super) struct Readers {
    epfd: OwnedFd,
    slots: Mutex<Slots>,
    /// Wakes the thread for a drain (`drain`), registered under `DRAIN`.
    wake: OwnedFd,
    /// Those waiting for the drain in progress.
    drained: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

/// The epoll key of `wake`.
const DRAIN: u64 = u64::MAX;
/// Chunks read from one pipe in a drain at most: an app writing without pause cannot hold a
/// shutdown.
const DRAIN_CHUNKS: usize = 64;

impl Readers {
    /// The epoll set and its thread, which forwards what it reads to `tx` (and ends when
    /// the writer is gone).
    pub(super) fn start(tx: mpsc::Sender<Data>) -> std::io::Result<Arc<Readers>> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: eventfd takes a count and flags and returns a new descriptor or -1.
        let wfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let wake = unsafe { OwnedFd::from_raw_fd(wfd) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: DRAIN,
        };
        // SAFETY: epoll_ctl reads `ev`, a live local; both descriptors are open and owned here.
        if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, wfd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = Arc::new(Readers {
            epfd,
            slots: Mutex::default(),
            wake,
            drained: Mutex::default(),
        });
        let me = r.clone();
        std::thread::Builder::new()
            .name("paddock-pipes".into())
            .spawn(move || me.run(tx))?;
        Ok(r)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        match self.slots.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Reads `fd` (a pipe's non-blocking read end) until EOF.
    pub(super) fn add(&self, fd: OwnedFd, app: Arc<str>, stream: Stream) -> std::io::Result<()> {
        let raw = fd.as_raw_fd();
        let mut s = self.slots();
        let key = match s.free.pop() {
            Some(k) => k,
            None => {
                s.pipes.push(None);
                s.pipes.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: key as u64,
        };
        // SAFETY: epoll_ctl reads `ev`, a live local; both descriptors are open (ours and
        // `fd`, owned by the slot below for as long as it is registered).
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, raw, &mut ev) } != 0
        {
            s.free.push(key);
            return Err(std::io::Error::last_os_error());
        }
        s.pipes[key] = Some(Pipe { fd, app, stream });
        Ok(())
    }

    /// Drops the pipe of `key`: out of the epoll set first (the descriptor holder keeps
    /// another descriptor of the same pipe, which would keep it registered), then closed.
    fn remove(&self, key: usize) {
        let mut s = self.slots();
        if let Some(p) = s.pipes.get_mut(key).and_then(Option::take) {
            // SAFETY: epoll_ctl with EPOLL_CTL_DEL ignores the event pointer; both
            // descriptors are open.
            unsafe {
                libc::epoll_ctl(
                    self.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    p.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
            s.free.push(key);
        }
    }

    /// Asks the thread to read what every pipe holds now and hand it to the writer (before a
    /// flush of the logs: the last lines of apps that just stopped); the receiver is told
    /// once that is done (or dropped if the thread is gone).
    pub(super) fn drain(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.drained.lock() {
            Ok(mut d) => d.push(tx),
            Err(p) => p.into_inner().push(tx),
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        rx
    }

    /// One pipe's chunk to the writer; `false` once the writer is gone.
    fn forward(&self, key: usize, tx: &mpsc::Sender<Data>, chunks: usize) -> bool {
        // Only this thread removes (and closes) pipes: the descriptor stays open while it is
        // read without the lock.
        let Some((fd, app, stream)) = self
            .slots()
            .pipes
            .get(key)
            .and_then(Option::as_ref)
            .map(|p| (p.fd.as_raw_fd(), p.app.clone(), p.stream))
        else {
            return true;
        };
        for _ in 0..chunks {
            match super::read_chunk(fd) {
                Ok(Some(bytes)) => {
                    let d = Data {
                        app: app.clone(),
                        stream,
                        time: SystemTime::now(),
                        bytes,
                    };
                    if tx.blocking_send(d).is_err() {
                        return false; // the writer is gone
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // EOF (every writer closed it) or a hard error.
                Ok(None) | Err(_) => {
                    self.remove(key);
                    break;
                }
            }
        }
        true
    }

    fn run(&self, tx: mpsc::Sender<Data>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: epoll_wait writes at most `events.len()` entries into `events`, a live
            // local array.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    -1,
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for ev in &events[..n as usize] {
                if ev.u64 == DRAIN {
                    let mut count = [0u8; 8];
                    // SAFETY: reads 8 bytes into a live local array from our eventfd.
                    unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                    let waiting = std::mem::take(&mut *match self.drained.lock() {
                        Ok(d) => d,
                        Err(p) => p.into_inner(),
                    });
                    let keys: Vec<usize> = {
                        let s = self.slots();
                        (0..s.pipes.len())
                            .filter(|&k| s.pipes[k].is_some())
                            .collect()
                    };
                    for k in keys {
                        if !self.forward(k, &tx, DRAIN_CHUNKS) {
                            return;
                        }
                    }
                    for w in waiting {
                        let _ = w.send(());
                    }
                } else if !self.forward(ev.u64 as usize, &tx, 1) {
                    return;
                }
            }
        }
    }
}
