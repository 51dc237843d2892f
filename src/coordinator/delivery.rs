//! The delivery of one INSERT: attempts under the per-attempt deadline,
//! backoff with jitter between them per the retry policy, one tracing span
//! per attempt; what is left after the last attempt goes to the fallback.
//!
//! Owns: the attempt loop and the report an INSERT task hands back. Must
//! not: write files (the fallback does) or count outcomes in the ledger.

use super::fallback::{self, Delivered};
use crate::batch::InsertBatch;
use crate::engine::Shared;
use crate::sink::{Sink, SinkError};
use crate::stats::Counters;
use std::sync::Arc;
use tracing::Instrument;

/// One INSERT's life: attempts with backoff per the retry policy, then, if
/// it still failed and a dead-letter directory is set, its bytes on disk.
/// Runs as its own task holding one `max_inflight` slot, so a retrying
/// INSERT never blocks the shards, and its memory stays inside the bound.
pub(super) struct Delivery<S> {
    pub(super) sink: Arc<S>,
    pub(super) shared: Arc<Shared>,
    pub(super) insert: Arc<InsertBatch>,
    pub(super) jitter: crate::retry::Jitter,
    /// The sink lane it goes to, and where to say that it is failing.
    pub(super) lane: usize,
    pub(super) health: Arc<super::lanes::Health>,
}

impl<S: Sink> Delivery<S> {
    pub(super) async fn run(mut self) -> Delivered {
        // Shaped once (the table's key order): every attempt, spill and
        // dead letter below carries these bytes.
        self.insert = self.sink.prepare(self.insert.clone()).await;
        let cfg = &self.shared.cfg;
        let stats = &self.shared.seal.stats;
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let mut failing = false;
        let result = loop {
            attempts += 1;
            // One span per attempt: with `RUST_LOG=ch_ingest=info` and span
            // close events on, each INSERT is one line with its fields and time.
            let span = tracing::info_span!(
                "insert",
                table = self.sink.table().unwrap_or(""),
                insert_id = self.insert.id(),
                rows = self.insert.rows(),
                bytes = self.insert.bytes(),
                attempt = attempts,
                outcome = tracing::field::Empty,
            );
            let deadline = crate::sink::deadline::after(cfg.insert_timeout);
            let attempt = crate::sink::deadline::run(deadline, self.sink.insert(&self.insert))
                .instrument(span.clone());
            let error = match attempt.await {
                Some(Ok(())) => {
                    span.record("outcome", "ok");
                    break Ok(());
                }
                Some(Err(e)) => e,
                None => SinkError::Timeout,
            };
            if let SinkError::Certificate { .. } = error {
                Counters::add(&stats.certificate_errors, 1);
            }
            let delay = if error.is_retryable() {
                cfg.retry
                    .next_delay(attempts, started.elapsed(), &mut self.jitter)
            } else {
                None
            };
            span.record(
                "outcome",
                match (&error, delay) {
                    (SinkError::Timeout, Some(_)) => "timeout, retrying",
                    (SinkError::Timeout, None) => "timeout, given up",
                    (_, Some(_)) => "failed, retrying",
                    (_, None) => "failed, given up",
                },
            );
            drop(span);
            let Some(delay) = delay else {
                break Err(error);
            };
            if !failing {
                failing = true;
                self.health.failing(self.lane);
            }
            Counters::add(&stats.retried_inserts, 1);
            Counters::add(&stats.retried_rows, self.insert.rows());
            tracing::warn!(
                insert_id = self.insert.id(),
                rows = self.insert.rows(),
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                %error,
                "INSERT failed; retrying"
            );
            tokio::time::sleep(delay).await;
        };
        if failing {
            self.health.recovered(self.lane);
        }
        let destination = match (&result, &self.shared.spill) {
            (Err(_), Some(_)) => self.sink.destination(&self.insert),
            _ => None,
        };
        fallback::keep(
            &self.shared,
            self.sink.table(),
            &self.insert,
            destination,
            attempts,
            result,
        )
        .await
    }
}
