//! The histograms only the server can fill: fsync latency and records per fsync (from the
//! log writer thread), the time from a put's arrival to its confirmation, and the time a
//! worker waits in `reserve` for a job.
//!
//! Each is an [`AtomicHistogram`]: fixed bucket bounds chosen at compile time, one atomic
//! counter per bucket, so recording a value is a short search over a dozen integers and two
//! relaxed atomic additions — no lock, no allocation. They are always recorded (the cost is
//! that of reading the clock once per fsync, batch of puts or blocked reserve) and exported
//! only when `--metrics-listen` is given.

use std::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds in a second, for bounds written in seconds.
const NS: u64 = 1_000_000_000;

/// A histogram of integer observations with fixed bucket bounds.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Inclusive upper bounds of the finite buckets, ascending, in observation units.
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); one more than `bounds` for +Inf.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in observation units.
    sum: AtomicU64,
    /// Factor from observation units to the exported unit (1e-9 for nanoseconds to seconds).
    scale: f64,
}

/// What a histogram holds at one moment, in the exported unit.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound, observations in this bucket)`, not cumulative; the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending) whose values are exported times `scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> AtomicHistogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        self.observe_n(value, 1);
    }

    /// Records `n` observations of the same value.
    pub fn observe_n(&self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self.bounds.partition_point(|&b| b < value);
        self.counts[bucket].fetch_add(n, Ordering::Relaxed);
        self.sum
            .fetch_add(value.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records one duration (for histograms kept in nanoseconds).
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The current figures. Buckets are read one by one, so a snapshot taken while values
    /// are recorded may miss the newest ones, but its count always equals its buckets' sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bound = self
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64 * self.scale);
                (bound, c.load(Ordering::Relaxed))
            })
            .collect();
        HistogramSnapshot {
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// Bounds for disk sync latency, in nanoseconds: 50 µs to 5 s.
const FSYNC_BOUNDS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    NS / 1000,
    NS / 400,
    NS / 200,
    NS / 100,
    NS / 40,
    NS / 20,
    NS / 10,
    NS / 4,
    NS / 2,
    NS,
    5 * NS,
];

/// Bounds for records written per fsync.
const RECORDS_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384];

/// Bounds for a put's time to confirmation, in nanoseconds: 100 µs to 10 s.
const CONFIRM_BOUNDS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    NS / 1000,
    NS / 400,
    NS / 200,
    NS / 100,
    NS / 40,
    NS / 20,
    NS / 10,
    NS / 4,
    NS / 2,
    NS,
    10 * NS,
];

/// Bounds for a worker's wait in `reserve`, in nanoseconds: 1 ms to 1 h.
const WAIT_BOUNDS: &[u64] = &[
    NS / 1000,
    NS / 100,
    NS / 10,
    NS / 2,
    NS,
    5 * NS,
    10 * NS,
    30 * NS,
    60 * NS,
    300 * NS,
    900 * NS,
    3600 * NS,
];

/// The server's histograms (see the module docs).
#[derive(Debug)]
pub struct Timings {
    /// Time one fdatasync of the log took.
    pub fsync: AtomicHistogram,
    /// Records made durable by one fdatasync (the group-commit batch).
    pub records_per_fsync: AtomicHistogram,
    /// Time from a put's command being read to its `INSERTED` being written back. Puts
    /// answered in one write count from the arrival of the oldest of them (commands read
    /// together arrive together).
    pub put_confirm: AtomicHistogram,
    /// Time a `reserve` that returned a job waited for it (0 when one was ready).
    pub reserve_wait: AtomicHistogram,
}

impl Timings {
    /// Empty histograms.
    pub fn new() -> Timings {
        Timings {
            fsync: AtomicHistogram::new(FSYNC_BOUNDS, 1e-9),
            records_per_fsync: AtomicHistogram::new(RECORDS_BOUNDS, 1.0),
            put_confirm: AtomicHistogram::new(CONFIRM_BOUNDS, 1e-9),
            reserve_wait: AtomicHistogram::new(WAIT_BOUNDS, 1e-9),
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_covers_them() {
        static BOUNDS: &[u64] = &[10, 20];
        let h = AtomicHistogram::new(BOUNDS, 0.5);
        h.observe(0);
        h.observe(10);
        h.observe(11);
        h.observe_n(21, 3);
        h.observe_n(5, 0);
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, (10 + 11 + 63) as f64 * 0.5);
        assert_eq!(s.buckets, vec![(5.0, 2), (10.0, 1), (f64::INFINITY, 3)]);
    }

    #[test]
    fn durations_are_exported_in_seconds() {
        let t = Timings::new();
        t.fsync
            .observe_duration(std::time::Duration::from_millis(3));
        let s = t.fsync.snapshot();
        assert_eq!(s.count, 1);
        assert!((s.sum - 0.003).abs() < 1e-12, "{}", s.sum);
        let (bound, n) = s
            .buckets
            .iter()
            .find(|(_, n)| *n == 1)
            .copied()
            .unwrap_or_default();
        assert_eq!((bound, n), (0.005, 1));
    }
}
