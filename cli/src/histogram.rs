//! A fixed-size log-linear latency histogram (about 6 % resolution), cheap
//! enough to record every `track` call and mergeable across threads.

const SUB: usize = 16;
const GROUPS: usize = 64;

pub struct Histogram {
    counts: Box<[u64]>,
    max: u64,
    total: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; SUB * GROUPS].into_boxed_slice(),
            max: 0,
            total: 0,
        }
    }

    #[inline]
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let group = 63 - v.leading_zeros() as usize; // >= 4
        let shift = group - 4;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        (group - 3) * SUB + sub
    }

    fn lower_bound(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let group = i / SUB + 3;
        let sub = (i % SUB) as u64;
        (SUB as u64 + sub) << (group - 4)
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v).min(SUB * GROUPS - 1)] += 1;
        self.max = self.max.max(v);
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.max = self.max.max(other.max);
        self.total += other.total;
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower_bound(i).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_resolution() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "{p99}");
        assert_eq!(h.max(), 10_000);
        for v in [0u64, 1, 15, 16, 17, 1000, u64::MAX / 2] {
            let i = Histogram::index(v);
            assert!(Histogram::lower_bound(i) <= v, "{v}");
        }
    }
}
