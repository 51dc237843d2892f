//! Helpers for tests of the engine itself (no server needed): the stats
//! identity, a fast retry policy, waiting for a condition, reading back
//! what a `MemorySink` stored, and the rich PostEvent the ClickHouse tests
//! send.

use ch_ingest::sink::MemorySink;
use ch_ingest::{Buffer, PostEvent, RetryPolicy};
use std::time::Duration;

/// Every accepted row is in exactly one place.
pub fn assert_accounted<T>(b: &Buffer<T>) {
    let s = b.stats();
    assert_eq!(
        s.tracked_rows,
        s.buffered_rows + s.pending_rows + s.acked_rows + s.spill_pending_rows + s.failed_rows,
        "{s:?}"
    );
}

/// Retries that give up fast, so spill tests run in milliseconds.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(2)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
        .with_max_elapsed(Duration::from_secs(1))
}

/// Polls `done` every 10 ms for up to 30 s; panics naming `what` after.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `tweet_id`s a sink stored, in the order it stored them.
pub fn tweet_ids(sink: &MemorySink) -> Vec<u64> {
    let schema = ch_ingest::Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    ch_ingest::rowbinary::decode_all(&schema, &sink.concat())
        .unwrap()
        .iter()
        .map(|row| row["tweet_id"].as_u64().unwrap())
        .collect()
}

/// A PostEvent with every optional field exercised, varied by `i`.
pub fn rich_event(i: u64) -> PostEvent {
    PostEvent {
        event_type: ["impression", "like", "retweet"][(i % 3) as usize].into(),
        tweet_id: i,
        occurred_at: 1_700_000_000 + i as u32,
        user_id: i.is_multiple_of(2).then_some(i * 7),
        session_id: i.is_multiple_of(5).then(|| format!("s{i}")),
        client: "web".into(),
        country: *b"US",
        dwell_ms: Some(i as u32),
    }
}
