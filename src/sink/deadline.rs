//! The deadline of one delivery attempt, as the sink sees it.
//!
//! Owns: carrying the instant by which the current attempt must be over
//! from the caller (an INSERT's delivery task, the replayer) into the sink
//! without widening the [`Sink`](super::Sink) trait: a task-local, set for
//! the duration of one `insert` call. Must not: sleep, retry, or decide the
//! deadline (that is `insert_timeout`, the builder's knob).
//!
//! A sink that knows the deadline (the ClickHouse sink) gives each endpoint
//! only part of it and ends its own request before the caller's timer fires,
//! so a timed-out request is aborted by its owner instead of left running.

use std::future::Future;
use tokio::time::Instant;

/// How much later than the deadline the caller's own timer fires: the sink
/// is expected to have ended the attempt itself by then.
const GRACE: std::time::Duration = std::time::Duration::from_millis(200);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `attempt` with `deadline` visible to the sink through [`current`];
/// `None` (timed out) once `deadline` plus a short grace has passed.
pub(crate) async fn run<F: Future>(deadline: Instant, attempt: F) -> Option<F::Output> {
    let timer = deadline.checked_add(GRACE).unwrap_or(deadline);
    DEADLINE
        .scope(deadline, tokio::time::timeout_at(timer, attempt))
        .await
        .ok()
}

/// `d` from now, or a century from now when `d` is too large for an
/// `Instant` (a configured `Duration::MAX` means "no limit", not a panic).
pub(crate) fn after(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// The current attempt's deadline, when the caller set one.
pub(crate) fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}
