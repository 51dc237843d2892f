//! Retries: how often and how long one INSERT is tried again.
//!
//! Owns: the [`RetryPolicy`] knobs (every default documented), exponential
//! backoff with full jitter, and the decision "try again at T" or "give up".
//! Must not: classify errors (that is [`SinkError::is_retryable`]), sleep,
//! or know where a given-up batch goes (dead letters, spill: the coordinator).
//!
//! [`SinkError::is_retryable`]: crate::sink::SinkError::is_retryable

use std::time::Duration;

/// How a failed INSERT is retried. Only errors that
/// [`SinkError::is_retryable`](crate::sink::SinkError::is_retryable) calls
/// retryable are retried; any other failure gives up at once.
///
/// The wait before retry `n` (1-based) is drawn uniformly from
/// `0 ..= min(max_backoff, initial_backoff x 2^(n-1))` ("full jitter"), so
/// many clients recovering at once do not hit the server in lock step.
///
/// Built from [`RetryPolicy::default`] (or [`RetryPolicy::NONE`]) with the
/// `with_*` methods; the fields can be read, and new knobs can be added
/// without breaking anyone (`#[non_exhaustive]`).
///
/// ```
/// use ch_ingest::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_max_elapsed(Duration::from_secs(30));
/// assert_eq!(policy.initial_backoff, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; 1 means never retry.
    /// Default: 10.
    pub max_attempts: u32,
    /// Upper bound of the first wait. Default: 100 ms.
    pub initial_backoff: Duration,
    /// Upper bound of any wait. Default: 10 s.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started.
    /// Default: 60 s, so a batch never waits on a dead server for long while
    /// holding an INSERT slot (a spill directory is where it waits longer).
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Attempts in all, the first one included (1: never retry; 0 is taken
    /// as 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Upper bound of the first wait.
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Upper bound of any wait.
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// No retry starts later than this after the first attempt started.
    pub fn with_max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// Never retry: the seed's behaviour.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        max_elapsed: Duration::ZERO,
    };

    /// The wait before the next attempt, after `attempts` attempts that
    /// started `elapsed` ago, or `None` when the policy says give up.
    pub(crate) fn next_delay(
        &self,
        attempts: u32,
        elapsed: Duration,
        jitter: &mut Jitter,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let delay = self.backoff(attempts, jitter);
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }

    /// The wait after the `n`-th failure in a row (1-based), without the
    /// attempt and time limits: full jitter over
    /// `0 ..= min(max_backoff, initial_backoff x 2^(n-1))`. The one backoff
    /// formula: INSERT retries and the spill replayer both use it.
    pub(crate) fn backoff(&self, n: u32, jitter: &mut Jitter) -> Duration {
        let exp = n.saturating_sub(1).min(30);
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        cap.mul_f64(jitter.unit())
    }
}

/// A small xorshift generator for jitter, seeded from the OS: statistical
/// quality is all that matters here, and one `u64` of state per INSERT
/// task is cheaper than a `rand` generator's.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        // Never zero: xorshift would stay at zero forever.
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Seeded from the OS, different per engine.
    pub(crate) fn from_entropy() -> Self {
        Self::new(rand::random())
    }

    /// Uniform in [0, 1].
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(3600),
        };
        let mut j = Jitter::new(7);
        for attempt in 1..40 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(30))
                .min(Duration::from_secs(2));
            let mut max_seen = Duration::ZERO;
            for _ in 0..200 {
                let d = p.next_delay(attempt, Duration::ZERO, &mut j).unwrap();
                assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
                max_seen = max_seen.max(d);
            }
            // Full jitter spreads over the whole range, not just near the cap.
            assert!(max_seen > cap.mul_f64(0.8), "attempt {attempt}");
        }
    }

    #[test]
    fn gives_up_on_attempts_and_on_elapsed_time() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut j = Jitter::new(1);
        assert!(p.next_delay(1, Duration::ZERO, &mut j).is_some());
        assert!(p.next_delay(2, Duration::ZERO, &mut j).is_some());
        assert!(p.next_delay(3, Duration::ZERO, &mut j).is_none());
        assert!(p
            .next_delay(1, Duration::from_millis(1_001), &mut j)
            .is_none());
        assert!(RetryPolicy::NONE
            .next_delay(1, Duration::ZERO, &mut j)
            .is_none());
    }
}
