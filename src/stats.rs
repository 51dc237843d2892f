//! Counters: what happened to every row.
//!
//! Owns: the engine-wide counters the coordinator updates and the [`Stats`]
//! snapshot users read. Per-shard counters live in the shard (written under
//! its lock, so producers on different shards never share a cache line).
//! Must not: take locks on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the engine's counters. Every row accepted by `track` is, at
/// any instant, in exactly one of: `buffered_rows`, `pending_rows` (sealed,
/// queued or in flight), `acked_rows`, `spill_pending_rows`, `failed_rows`:
///
/// `tracked_rows == buffered_rows + pending_rows + acked_rows + spill_pending_rows + failed_rows`
///
/// (exact once the engine is idle; a snapshot taken mid-flight reads the
/// counters one after another).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Rows accepted by `track`.
    pub tracked_rows: u64,
    /// RowBinary bytes of the accepted rows.
    pub tracked_bytes: u64,
    /// Rows handed back with `TrackError::Full`.
    pub rejected_full: u64,
    /// Rows handed back with `TrackError::Closed`.
    pub rejected_closed: u64,
    /// Rows handed back with `TrackError::Encode`.
    pub encode_errors: u64,
    /// Rows in shard buffers, not yet sealed.
    pub buffered_rows: u64,
    /// Rows sealed and waiting for, or in, an INSERT.
    pub pending_rows: u64,
    /// Batches sealed by the shards (threshold, tick or flush).
    pub sealed_batches: u64,
    /// INSERTs started.
    pub inserts: u64,
    /// INSERTs in flight now (sending, or waiting out a retry backoff).
    pub inflight_inserts: u64,
    /// Rows in those INSERTs (part of `pending_rows`).
    pub inflight_rows: u64,
    /// RowBinary bytes in those INSERTs.
    pub inflight_bytes: u64,
    /// Rows the sink acknowledged.
    pub acked_rows: u64,
    /// Bytes the sink acknowledged.
    pub acked_bytes: u64,
    /// Sealed batches the sink acknowledged.
    pub acked_batches: u64,
    /// Rows whose INSERT was given up on, after its retries (logged once
    /// per INSERT): `dead_lettered_rows + dropped_rows`.
    pub failed_rows: u64,
    /// INSERTs given up on.
    pub failed_inserts: u64,
    /// Of `failed_rows`: kept in the dead-letter directory.
    pub dead_lettered_rows: u64,
    /// Of `failed_rows`: dropped (no dead-letter directory, or it could not
    /// be written).
    pub dropped_rows: u64,
    /// Retry attempts (an INSERT tried three times counts two).
    pub retried_inserts: u64,
    /// Rows sent again by those retries.
    pub retried_rows: u64,
    /// Rows written to the spill directory by this engine.
    pub spilled_rows: u64,
    /// Of those, rows on disk waiting for replay.
    pub spill_pending_rows: u64,
    /// Of `spilled_rows`, rows the replayer delivered (also in `acked_rows`).
    pub replayed_rows: u64,
    /// Rows from spill files an earlier process left, delivered by the
    /// replayer (not in `tracked_rows`).
    pub replayed_foreign_rows: u64,
    /// Rows not spilled because the spill directory was at its budget
    /// (`SpillFullPolicy::DropNewest`; also in `dropped_rows`).
    pub spill_rejected_rows: u64,
    /// Rows deleted from the spill directory to make room
    /// (`SpillFullPolicy::DropOldest`; this engine's also in `dropped_rows`).
    pub spill_evicted_rows: u64,
    /// Spill files that failed their checksum and were moved to `quarantine/`.
    pub quarantined_files: u64,
    /// Rows dropped by `WhenFull::DropNewest` (never accepted, not in `tracked_rows`).
    pub dropped_full_rows: u64,
    /// `track` calls that waited the whole `WhenFull::Block` timeout.
    pub block_timeouts: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub sealed_batches: AtomicU64,
    pub inserts: AtomicU64,
    pub inflight_inserts: AtomicU64,
    pub inflight_rows: AtomicU64,
    pub inflight_bytes: AtomicU64,
    pub acked_rows: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub acked_batches: AtomicU64,
    pub failed_rows: AtomicU64,
    pub failed_inserts: AtomicU64,
    pub dead_lettered_rows: AtomicU64,
    pub dropped_rows: AtomicU64,
    pub retried_inserts: AtomicU64,
    pub retried_rows: AtomicU64,
    pub spilled_rows: AtomicU64,
    pub replayed_rows: AtomicU64,
    pub replayed_foreign_rows: AtomicU64,
    pub spill_rejected_rows: AtomicU64,
    pub spill_evicted_rows: AtomicU64,
    /// This engine's spilled rows that left the spill directory other than
    /// by replay (evicted, or refused for good on replay): in `failed_rows`.
    pub spill_out_failed_rows: AtomicU64,
    pub quarantined_files: AtomicU64,
    pub dropped_full_rows: AtomicU64,
    pub block_timeouts: AtomicU64,
    pub rejected_closed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Fills the engine-wide part of a snapshot; `sealed_rows` is the sum of
    /// the shards' counters.
    pub(crate) fn fill(&self, s: &mut Stats, sealed_rows: u64) {
        s.sealed_batches = self.sealed_batches.load(Relaxed);
        s.inserts = self.inserts.load(Relaxed);
        s.inflight_inserts = self.inflight_inserts.load(Relaxed);
        s.inflight_rows = self.inflight_rows.load(Relaxed);
        s.inflight_bytes = self.inflight_bytes.load(Relaxed);
        s.acked_rows = self.acked_rows.load(Relaxed);
        s.acked_bytes = self.acked_bytes.load(Relaxed);
        s.acked_batches = self.acked_batches.load(Relaxed);
        s.failed_rows = self.failed_rows.load(Relaxed);
        s.failed_inserts = self.failed_inserts.load(Relaxed);
        s.dead_lettered_rows = self.dead_lettered_rows.load(Relaxed);
        s.dropped_rows = self.dropped_rows.load(Relaxed);
        s.retried_inserts = self.retried_inserts.load(Relaxed);
        s.retried_rows = self.retried_rows.load(Relaxed);
        s.rejected_closed = self.rejected_closed.load(Relaxed);
        s.spilled_rows = self.spilled_rows.load(Relaxed);
        s.replayed_rows = self.replayed_rows.load(Relaxed);
        s.replayed_foreign_rows = self.replayed_foreign_rows.load(Relaxed);
        s.spill_rejected_rows = self.spill_rejected_rows.load(Relaxed);
        s.spill_evicted_rows = self.spill_evicted_rows.load(Relaxed);
        s.quarantined_files = self.quarantined_files.load(Relaxed);
        s.dropped_full_rows = self.dropped_full_rows.load(Relaxed);
        s.block_timeouts = self.block_timeouts.load(Relaxed);
        let out_failed = self.spill_out_failed_rows.load(Relaxed);
        s.spill_pending_rows = s.spilled_rows.saturating_sub(s.replayed_rows + out_failed);
        // Rows that reached an outcome straight from an INSERT.
        let settled = (s.acked_rows - s.replayed_rows.min(s.acked_rows))
            + s.spilled_rows
            + (s.failed_rows - out_failed.min(s.failed_rows));
        s.pending_rows = sealed_rows.saturating_sub(settled);
    }
}
