//! How wasm instances share paddock: [`MapBudget`] admits a start only while the process has
//! room for its memory mappings (`vm.max_map_count`), [`Ticker`] advances the engines' epochs
//! while some guest runs (so a spinning guest yields and `[limits] cpu` is enforced), and
//! [`Metered`] wraps a guest's task to measure its CPU time and tell the ticker when it runs.

use super::TICK;
use super::store::Shared;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::Engine;
/// Mappings reserved for everything else in paddock (malloc arenas, threads, libraries).
const MAPS_RESERVE: usize = 4096;
/// Mappings a wasm instance is assumed to take until paddock has measured it: its linear memory
/// slot (image, heap, the rest: 3), its fiber stack and guard (2), tables (2 each) and more; a
/// core module of one memory and one table measured 12.2 here.
const MAPS_PER_INSTANCE: usize = 16;

/// Every wasm instance lives in paddock's address space and takes a dozen memory mappings, and
/// the kernel caps the mappings of a process at `vm.max_map_count` (65530 by default: about
/// 5,000 instances). Past it every mmap fails, and the next allocation aborts paddock. So a start
/// is admitted only while there is room, measured: when the running instances reach the
/// estimated capacity, paddock counts its mappings (`/proc/self/maps`), learns the cost per
/// instance and the room left, and refuses the start with the reason when there is none.
pub(super) struct MapBudget {
    /// Mappings before any instance.
    base: usize,
    /// Instances admitted without measuring again.
    cap: AtomicUsize,
    /// The last refusal: (instances running then, when, why). Repeated while no instance has
    /// ended, for a few seconds, without counting again (counting 60,000 mappings takes
    /// milliseconds, and a thousand refused apps retry).
    refused: Mutex<Option<(usize, Instant, String)>>,
}

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

fn count_maps() -> usize {
    std::fs::read("/proc/self/maps")
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

impl MapBudget {
    pub(super) fn new() -> MapBudget {
        let base = count_maps();
        let cap = max_map_count().saturating_sub(base + MAPS_RESERVE) / MAPS_PER_INSTANCE;
        MapBudget {
            base,
            cap: AtomicUsize::new(cap),
            refused: Mutex::new(None),
        }
    }

    /// May one more instance start, with `live` running?
    pub(super) fn admit(&self, live: usize) -> Result<(), String> {
        if live < self.cap.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Ok(r) = self.refused.lock()
            && let Some((n, at, why)) = &*r
            && live >= *n
            && at.elapsed() < Duration::from_secs(5)
        {
            return Err(why.clone());
        }
        let max = max_map_count();
        let now = count_maps();
        let per = if live >= 16 {
            now.saturating_sub(self.base).div_ceil(live).max(1)
        } else {
            MAPS_PER_INSTANCE
        };
        let room = max.saturating_sub(now + MAPS_RESERVE) / per;
        if room == 0 {
            let why = format!(
                "wasm: no room for another instance: paddock has {now} memory mappings and the kernel allows {max} (vm.max_map_count); each instance takes about {per}, so {live} instances is the most this host allows; raise it, e.g. `sysctl -w vm.max_map_count=1048576`"
            );
            if let Ok(mut r) = self.refused.lock() {
                *r = Some((live, Instant::now(), why.clone()));
            }
            return Err(why);
        }
        self.cap.store(live + room, Ordering::Relaxed);
        Ok(())
    }
}

/// Advances the epoch of every engine every `TICK`, but only while some guest task is being
/// polled: an idle paddock (or one whose wasm apps all wait for I/O or timers) wakes no one.
pub(super) struct Ticker {
    active: AtomicUsize,
    stop: AtomicBool,
    pub(super) engines: Mutex<Vec<Engine>>,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    pub(super) fn start() -> std::io::Result<Arc<Ticker>> {
        let t = Arc::new(Ticker {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            engines: Mutex::new(vec![]),
            thread: OnceLock::new(),
        });
        let t2 = t.clone();
        let h = std::thread::Builder::new()
            .name("paddock-epoch".into())
            .spawn(move || {
                loop {
                    if t2.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if t2.active.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    for e in t2.engines.lock().map(|g| g.clone()).unwrap_or_default() {
                        e.increment_epoch();
                    }
                }
            })?;
        let _ = t.thread.set(h.thread().clone());
        Ok(t)
    }
    pub(super) fn enter(&self) {
        if self.active.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(th) = self.thread.get()
        {
            th.unpark();
        }
    }
    pub(super) fn leave(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
    pub(super) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(th) = self.thread.get() {
            th.unpark();
        }
    }
}

/// A guest's task, measuring the time spent in its polls (for `cpu`) and telling the ticker
/// when guests run.
pub(super) struct Metered<F> {
    pub(super) inner: Pin<Box<F>>,
    pub(super) shared: Arc<Shared>,
    pub(super) ticker: Arc<Ticker>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.ticker.enter();
        let start = self.shared.now_ns();
        self.shared.poll_start.store(start, Ordering::Relaxed);
        let r = self.inner.as_mut().poll(cx);
        let spent = self.shared.now_ns().saturating_sub(start);
        self.shared.busy_ns.fetch_add(spent, Ordering::Relaxed);
        self.shared.poll_start.store(0, Ordering::Relaxed);
        self.ticker.leave();
        r
    }
}
