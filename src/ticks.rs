//! The shared flush tick.
//!
//! Owns: when the coordinator seals every non-empty shard on time. Kept apart
//! so tests drive it with tokio's paused clock (`tokio::time::pause` /
//! `advance`) instead of sleeping. Must not: seal anything itself.

use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};

pub(crate) struct Ticks {
    interval: Interval,
}

impl Ticks {
    /// First tick one `period` from now, then every `period`. A tick that
    /// comes late (busy runtime) is not followed by a burst of catch-up ticks.
    pub(crate) fn new(period: Duration) -> Self {
        let start = Instant::now()
            .checked_add(period)
            .unwrap_or_else(Instant::now);
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval }
    }

    pub(crate) async fn tick(&mut self) {
        self.interval.tick().await;
    }
}
