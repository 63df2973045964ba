//! What a wasm store carries besides the guest: the WASI state ([`P2Wasi`] for components,
//! `WasiP1Ctx` for core modules) and paddock's accounting in [`Guest`]: the [`Limiter`] behind
//! `[limits] memory`, `nofile` and `[wasm] max_instances`, the [`CpuBudget`] behind `[limits]
//! cpu`, the epoch-deadline callback that applies the budget, interruption and health-call
//! budgets, and the [`Shared`] state an instance's task shares with its supervisor-side handle.

use super::{guard, http, human_bytes};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
/// Bytes counted per table element towards `[limits] memory`.
const TABLE_ELEMENT_BYTES: usize = 8;
/// CPU a throttled guest may bank while idle, in nanoseconds of guest time.
const CPU_BURST_NS: f64 = 50e6;

/// State shared between an instance's task and its handle.
pub(super) struct Shared {
    pub(super) interrupt: AtomicBool,
    pub(super) notify: tokio::sync::Notify,
    /// Linear memory + tables in bytes.
    pub(super) memory: AtomicU64,
    /// Nanoseconds spent in polls of the instance's task.
    pub(super) busy_ns: AtomicU64,
    /// Start of the current poll (nanoseconds since `origin`, + 1), 0 outside polls.
    pub(super) poll_start: AtomicU64,
    origin: Instant,
}

impl Shared {
    pub(super) fn new(origin: Instant) -> Shared {
        Shared {
            interrupt: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            memory: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            poll_start: AtomicU64::new(0),
            origin,
        }
    }
    pub(super) fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }
    /// CPU time so far, the current poll included.
    pub(super) fn busy_now(&self) -> u64 {
        let start = self.poll_start.load(Ordering::Relaxed);
        let cur = if start == 0 {
            0
        } else {
            self.now_ns().saturating_sub(start)
        };
        self.busy_ns.load(Ordering::Relaxed) + cur
    }
}

/// WASI preview 2 state of a component's store (`wasi:http` included: the same store type
/// serves commands and per-request components).
pub struct P2Wasi {
    pub(super) ctx: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(super) hooks: http::Hooks,
}

impl P2Wasi {
    pub(super) fn new(ctx: WasiCtx) -> P2Wasi {
        P2Wasi {
            ctx,
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: http::Hooks,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for Guest<P2Wasi> {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// What a store holds: the WASI state and paddock's accounting.
pub struct Guest<W> {
    pub(super) wasi: W,
    pub(super) limiter: Limiter,
    pub(super) cpu: Option<CpuBudget>,
    pub(super) shared: Arc<Shared>,
    /// Health calls: ticks of execution left.
    pub(super) budget_ticks: Option<u64>,
}

impl WasiView for Guest<P2Wasi> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl<W> Guest<W> {
    /// Called by wasmtime when the guest has executed past its epoch deadline (one tick).
    pub(super) fn on_deadline(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.shared.interrupt.load(Ordering::Relaxed) {
            return Err(Trap::Interrupt.into());
        }
        if let Some(left) = &mut self.budget_ticks {
            if *left == 0 {
                return Err(Trap::Interrupt.into());
            }
            *left -= 1;
        }
        if let Some(cpu) = &mut self.cpu
            && let Some(pause) = cpu.charge(Instant::now(), self.shared.busy_now())
        {
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(pause)),
            ));
        }
        // Let the other tasks on this worker run.
        Ok(UpdateDeadline::Yield(1))
    }
}

/// `[limits] memory`, `nofile` and `[wasm] max_instances`, and the memory figure for `status`.
pub(super) struct Limiter {
    pub(super) max: Option<u64>,
    /// `max` is the default for wasm apps (for reports).
    pub(super) default_max: bool,
    pub(super) used: u64,
    pub(super) instances: usize,
    /// The first refused growth: the total it would have reached.
    pub(super) refused: Option<u64>,
    pub(super) shared: Arc<Shared>,
    /// Descriptors and symbolic links.
    pub(super) files: guard::Files,
}

impl Limiter {
    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if self.max.is_some_and(|m| total > m) {
            self.refused.get_or_insert(total);
            return false;
        }
        self.used = total;
        self.shared.memory.store(total, Ordering::Relaxed);
        true
    }

    /// Why a failure may have happened, for reports.
    pub(super) fn note(&self) -> Option<String> {
        let memory = self.max.zip(self.refused).map(|(max, wanted)| {
            format!(
                "memory growth to {} was refused: [limits] memory = {}{}",
                human_bytes(wanted),
                human_bytes(max),
                if self.default_max {
                    " (the default for wasm apps; set [limits] memory to change it)"
                } else {
                    ""
                }
            )
        });
        match (memory, self.files.note()) {
            (Some(m), Some(f)) => Some(format!("{m}; {f}")),
            (m, f) => m.or(f),
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            (current * TABLE_ELEMENT_BYTES) as u64,
            (desired * TABLE_ELEMENT_BYTES) as u64,
        ))
    }
    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.instances * 4
    }
    fn memories(&self) -> usize {
        self.instances * 2
    }
}

/// `[limits] cpu`: a token bucket of guest time, refilled at `share` of wall time. When it runs
/// dry at an epoch deadline, the guest sleeps until it is even.
pub struct CpuBudget {
    share: f64,
    tokens: f64,
    last: Instant,
    charged: u64,
}

impl CpuBudget {
    pub fn new(share: f64, now: Instant) -> CpuBudget {
        CpuBudget {
            share,
            tokens: CPU_BURST_NS * share,
            last: now,
            charged: 0,
        }
    }

    /// Accounts for the guest time used so far (`busy_ns`, cumulative) and returns how long the
    /// guest must pause, if it is over its share.
    pub fn charge(&mut self, now: Instant, busy_ns: u64) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as f64;
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.share).min(CPU_BURST_NS * self.share);
        self.tokens -= busy_ns.saturating_sub(self.charged) as f64;
        self.charged = self.charged.max(busy_ns);
        if self.tokens >= 0.0 {
            return None;
        }
        let pause = Duration::from_nanos((-self.tokens / self.share) as u64);
        self.tokens = 0.0;
        self.last = now + pause; // the pause pays the debt; it earns nothing more
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_budget_throttles_to_share() {
        let t0 = Instant::now();
        let mut b = CpuBudget::new(0.25, t0);
        // The initial burst is allowed.
        assert_eq!(b.charge(t0, 10_000_000), None);
        // Running flat out for 100 ms of wall time at a 25% share: must pause ~ 3x as long as
        // the excess, minus the burst.
        let t1 = t0 + Duration::from_millis(100);
        let pause = b.charge(t1, 100_000_000).expect("over budget");
        // tokens: 12.5ms burst - 10ms + 25ms refill (capped at 12.5ms) - 90ms = -77.5ms → 310ms
        let ms = pause.as_secs_f64() * 1000.0;
        assert!((300.0..=320.0).contains(&ms), "{ms}");
        // Over a long run, guest time / wall time converges to the share.
        let mut now = t1 + pause;
        let mut busy = 100_000_000u64;
        let start = (now, busy);
        for _ in 0..1000 {
            now += Duration::from_millis(10);
            busy += 10_000_000;
            if let Some(p) = b.charge(now, busy) {
                now += p;
            }
        }
        let share = (busy - start.1) as f64 / (now - start.0).as_nanos() as f64;
        assert!((0.24..=0.26).contains(&share), "{share}");
    }

    #[test]
    fn limiter_counts_and_refuses() {
        let shared = Arc::new(Shared::new(Instant::now()));
        let mut l = Limiter {
            max: Some(1 << 20),
            default_max: false,
            used: 0,
            instances: 4,
            refused: None,
            shared: shared.clone(),
            files: guard::Files::new(16, false, 0),
        };
        assert!(l.grow(0, 512 << 10));
        assert!(l.grow(512 << 10, 1 << 20));
        assert!(!l.grow(1 << 20, (1 << 20) + 65536));
        assert_eq!(shared.memory.load(Ordering::Relaxed), 1 << 20);
        let n = l.note().unwrap();
        assert!(
            n.contains("1.06MiB was refused") && n.contains("= 1MiB"),
            "{n}"
        );
        assert_eq!(human_bytes(33620400), "32.06MiB");
        assert_eq!(human_bytes(640 << 10), "640KiB");
        assert_eq!(human_bytes(100), "100B");
    }
}
