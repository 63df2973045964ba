//! The figures of an app served per request, as `paddock status` and the metrics show them:
//! counters of requests, instances and failures ([`Stats`]) and latency histograms in
//! logarithmic buckets ([`Histogram`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
/// Latencies in buckets of 2^(1/8) (±4.5%) from 1 µs to ~30 s.
pub struct Histogram {
    buckets: Box<[AtomicU64; 200]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_nanos() as f64 / 1000.0;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.log2() * 8.0).ceil() as usize).min(199)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    /// The `q` quantile (0..=1) in microseconds (the bucket's upper bound), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(2f64.powf(i as f64 / 8.0));
            }
        }
        None
    }
}

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub instances: AtomicU64,
    pub ok: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    /// Answered 503: the app was stopped, backing off, FATAL, or busy past the timeout.
    pub refused: AtomicU64,
    pub memory_high: AtomicU64,
    pub latency: Histogram,
    pub instantiation: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for i in 1..=100u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((500.0..=550.0).contains(&p50), "{p50}");
        assert!((990.0..=1100.0).contains(&p99), "{p99}");
    }
}
