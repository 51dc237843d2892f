//! Histograms: how long INSERTs take and how big they are, and how long
//! `track` takes (sampled).
//!
//! Owns: fixed-bucket histograms built from atomics, which the coordinator
//! (per INSERT) and the hot path (one `track` in [`TRACK_SAMPLE`]) record
//! into, and the [`Histograms`] snapshot users and exporters read.
//! Must not: lock or allocate while recording, or time every `track` (a
//! clock read costs as much as the rest of the call).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One `track` call in this many is timed (per shard, by its row count).
pub(crate) const TRACK_SAMPLE: u64 = 1024;

const INSERT_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const INSERT_ROWS: &[f64] = &[1.0, 10.0, 100.0, 500.0, 1e3, 5e3, 1e4, 5e4, 1e5, 5e5, 1e6];
const INSERT_BYTES: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
];
const TRACK_SECONDS: &[f64] = &[
    50e-9, 100e-9, 250e-9, 500e-9, 1e-6, 2.5e-6, 5e-6, 10e-6, 100e-6, 1e-3, 10e-3,
];

/// A snapshot of one histogram, in the shape Prometheus wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(upper bound, observations in this bucket)`, not cumulative; the last
    /// bound is `f64::INFINITY` (Prometheus' `+Inf`).
    pub buckets: Vec<(f64, u64)>,
    /// The sum of every observation.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

impl Histogram {
    /// Adds another snapshot of the same histogram (same buckets).
    pub fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The smallest bucket bound at or above quantile `q` (0..=1): a coarse
    /// percentile, good enough for a report line.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let want = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for &(bound, n) in &self.buckets {
            seen += n;
            if seen >= want.max(1) {
                return Some(bound);
            }
        }
        None
    }
}

/// Snapshots of the engine's histograms (see [`Buffer::histograms`](crate::Buffer::histograms)).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Histograms {
    /// Seconds from an INSERT's dispatch to its outcome, retries included.
    pub insert_seconds: Histogram,
    /// Rows per INSERT.
    pub insert_rows: Histogram,
    /// RowBinary bytes per INSERT.
    pub insert_bytes: Histogram,
    /// Seconds one `track` call took, lock and encoding included (sampled:
    /// one call in 1024 per shard).
    pub track_seconds: Histogram,
}

impl Histograms {
    /// Adds another engine's snapshot, histogram by histogram.
    pub fn add(&mut self, other: &Histograms) {
        self.insert_seconds.add(&other.insert_seconds);
        self.insert_rows.add(&other.insert_rows);
        self.insert_bytes.add(&other.insert_bytes);
        self.track_seconds.add(&other.track_seconds);
    }
}

pub(crate) struct AtomicHistogram {
    bounds: &'static [f64],
    /// One per bound, plus the overflow bucket.
    counts: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
        self.count.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        Histogram {
            buckets,
            sum: f64::from_bits(self.sum_bits.load(Relaxed)),
            count: self.count.load(Relaxed),
        }
    }
}

pub(crate) struct Recorders {
    pub insert_seconds: AtomicHistogram,
    pub insert_rows: AtomicHistogram,
    pub insert_bytes: AtomicHistogram,
    pub track_seconds: AtomicHistogram,
}

impl Default for Recorders {
    fn default() -> Self {
        Self {
            insert_seconds: AtomicHistogram::new(INSERT_SECONDS),
            insert_rows: AtomicHistogram::new(INSERT_ROWS),
            insert_bytes: AtomicHistogram::new(INSERT_BYTES),
            track_seconds: AtomicHistogram::new(TRACK_SECONDS),
        }
    }
}

impl Recorders {
    pub(crate) fn snapshot(&self) -> Histograms {
        Histograms {
            insert_seconds: self.insert_seconds.snapshot(),
            insert_rows: self.insert_rows.snapshot(),
            insert_bytes: self.insert_bytes.snapshot(),
            track_seconds: self.track_seconds.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = AtomicHistogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 1.5, 10.0, 11.0, 1e9] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (10.0, 2), (f64::INFINITY, 2)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 0.5 + 1.0 + 1.5 + 10.0 + 11.0 + 1e9);
        assert_eq!(s.quantile_bound(0.5), Some(10.0));
        assert_eq!(s.quantile_bound(0.99), Some(f64::INFINITY));
        let mut twice = s.clone();
        twice.add(&s);
        assert_eq!(twice.count, 12);
        assert_eq!(twice.buckets[0], (1.0, 4));
    }
}
