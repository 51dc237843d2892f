//! Counters: what happened to every row.
//!
//! Owns: the engine-wide counters the coordinator updates and the [`Stats`]
//! snapshot users read. Per-shard counters live in the shard (written under
//! its lock, so producers on different shards never share a cache line).
//! Must not: take locks on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Whether a [`Stats`] field only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// Only grows over the engine's life.
    Counter,
    /// A level: rows or bytes held right now.
    Gauge,
}

/// One [`Stats`] field, for exporters: see [`Stats::fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatField {
    /// The field's name, e.g. `acked_rows`.
    pub name: &'static str,
    /// Its documentation, one line.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: StatKind,
    /// Its value in the snapshot.
    pub value: u64,
}

/// Defines `Stats` and its field list from one declaration, so an exporter can
/// never miss a field or call a gauge a counter.
macro_rules! stats {
    (
        $(#[doc = $sdoc:expr])*
        pub struct Stats {
            $( $(#[doc = $doc:expr])* $kind:ident $name:ident, )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Stats {
            /// Every field with its name, help, kind and value, in declaration
            /// order: what a metrics exporter iterates.
            pub fn fields(&self) -> Vec<StatField> {
                vec![$(StatField {
                    name: stringify!($name),
                    help: concat!($($doc, " ",)*),
                    kind: stats!(@kind $kind),
                    value: self.$name,
                }),*]
            }

            /// Adds another snapshot field by field (e.g. a drained engine's
            /// final counts to its replacement's). `spill_pending_rows` is
            /// worked out again from the summed counters, so a successor
            /// that replayed its predecessor's spill files
            /// ([`Builder::takes_over_spill_of`]) balances the predecessor's
            /// pending rows.
            ///
            /// [`Builder::takes_over_spill_of`]: crate::Builder::takes_over_spill_of
            pub fn add(&mut self, other: &Stats) {
                $( self.$name += other.$name; )*
                self.spill_pending_rows = self
                    .spilled_rows
                    .saturating_sub(self.replayed_rows + self.spill_failed_rows);
            }
        }
    };
    (@kind counter) => { StatKind::Counter };
    (@kind gauge) => { StatKind::Gauge };
}

stats! {
    /// A snapshot of the engine's counters. Every row accepted by `track` is, at
    /// any instant, in exactly one of: `buffered_rows`, `pending_rows` (sealed,
    /// queued or in flight), `acked_rows`, `spill_pending_rows`, `failed_rows`:
    ///
    /// `tracked_rows == buffered_rows + pending_rows + acked_rows + spill_pending_rows + failed_rows`
    ///
    /// (exact once the engine is idle; a snapshot taken mid-flight reads the
    /// counters one after another).
    pub struct Stats {
    /// Rows accepted by `track`.
    counter tracked_rows,
    /// RowBinary bytes of the accepted rows.
    counter tracked_bytes,
    /// Rows handed back with `TrackError::Full`.
    counter rejected_full,
    /// Rows handed back with `TrackError::Closed`.
    counter rejected_closed,
    /// Rows handed back with `TrackError::Encode`.
    counter encode_errors,
    /// Rows in shard buffers, not yet sealed.
    gauge buffered_rows,
    /// RowBinary bytes in shard buffers, not yet sealed.
    gauge buffered_bytes,
    /// Rows sealed and waiting for, or in, an INSERT.
    gauge pending_rows,
    /// RowBinary bytes of sealed batches queued for an INSERT (bounded by
    /// `queue_bytes`; in-flight INSERTs are in `inflight_bytes`).
    gauge queued_bytes,
    /// Batches sealed by the shards (threshold, tick or flush).
    counter sealed_batches,
    /// INSERTs started.
    counter inserts,
    /// INSERTs in flight now (sending, or waiting out a retry backoff).
    gauge inflight_inserts,
    /// Rows in those INSERTs (part of `pending_rows`).
    gauge inflight_rows,
    /// RowBinary bytes in those INSERTs.
    gauge inflight_bytes,
    /// Rows the sink acknowledged.
    counter acked_rows,
    /// Bytes the sink acknowledged.
    counter acked_bytes,
    /// Sealed batches the sink acknowledged.
    counter acked_batches,
    /// Rows whose INSERT was given up on, after its retries (logged once
    /// per INSERT): `dead_lettered_rows + dropped_rows`.
    counter failed_rows,
    /// INSERTs given up on.
    counter failed_inserts,
    /// Of `failed_rows`: kept in the dead-letter directory.
    counter dead_lettered_rows,
    /// Of `failed_rows`: dropped (no dead-letter directory, or it could not
    /// be written).
    counter dropped_rows,
    /// Retry attempts (an INSERT tried three times counts two).
    counter retried_inserts,
    /// Tries that failed over a TLS certificate (also in `retried_inserts`
    /// or `failed_inserts`): a wrong CA, a name or date the server's
    /// certificate is not valid for, or ours refused.
    counter certificate_errors,
    /// Rows sent again by those retries.
    counter retried_rows,
    /// Rows written to the spill directory by this engine.
    counter spilled_rows,
    /// Of those, rows on disk waiting for replay.
    gauge spill_pending_rows,
    /// Of `spilled_rows`, rows that left the spill directory undelivered:
    /// refused for good when replayed, or evicted at the budget (also in
    /// `failed_rows`).
    counter spill_failed_rows,
    /// Of `spilled_rows`, rows the replayer delivered (also in `acked_rows`).
    counter replayed_rows,
    /// Rows from spill files an earlier process left, delivered by the
    /// replayer (not in `tracked_rows`).
    counter replayed_foreign_rows,
    /// Rows not spilled because the spill directory was at its budget
    /// (`SpillFullPolicy::DropNewest`; also in `dropped_rows`).
    counter spill_rejected_rows,
    /// Rows deleted from the spill directory to make room
    /// (`SpillFullPolicy::DropOldest`; this engine's also in `dropped_rows`).
    counter spill_evicted_rows,
    /// Spill files that failed their checksum and were moved to `quarantine/`.
    counter quarantined_files,
    /// Spill files the replayer gave up on: they failed again and again
    /// (retryably) while later files were delivered, and were moved to the
    /// dead letters (their rows, if this engine's, also in `failed_rows`).
    counter replay_given_up_files,
    /// Rows dropped by `WhenFull::DropNewest` (never accepted, not in `tracked_rows`).
    counter dropped_full_rows,
    /// `track_timeout` / `track_blocking` calls that waited their whole
    /// timeout and handed the row back.
    counter block_timeouts,
    }
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
    pub certificate_errors: AtomicU64,
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
    pub replay_given_up_files: AtomicU64,
    pub dropped_full_rows: AtomicU64,
    pub block_timeouts: AtomicU64,
    pub rejected_closed: AtomicU64,
    pub hist: crate::histogram::Recorders,
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
        s.certificate_errors = self.certificate_errors.load(Relaxed);
        s.retried_rows = self.retried_rows.load(Relaxed);
        s.rejected_closed = self.rejected_closed.load(Relaxed);
        s.spilled_rows = self.spilled_rows.load(Relaxed);
        s.replayed_rows = self.replayed_rows.load(Relaxed);
        s.replayed_foreign_rows = self.replayed_foreign_rows.load(Relaxed);
        s.spill_rejected_rows = self.spill_rejected_rows.load(Relaxed);
        s.spill_evicted_rows = self.spill_evicted_rows.load(Relaxed);
        s.quarantined_files = self.quarantined_files.load(Relaxed);
        s.replay_given_up_files = self.replay_given_up_files.load(Relaxed);
        s.dropped_full_rows = self.dropped_full_rows.load(Relaxed);
        s.block_timeouts = self.block_timeouts.load(Relaxed);
        let out_failed = self.spill_out_failed_rows.load(Relaxed);
        s.spill_failed_rows = out_failed;
        s.spill_pending_rows = s.spilled_rows.saturating_sub(s.replayed_rows + out_failed);
        // Rows that reached an outcome straight from an INSERT.
        let settled = (s.acked_rows - s.replayed_rows.min(s.acked_rows))
            + s.spilled_rows
            + (s.failed_rows - out_failed.min(s.failed_rows));
        s.pending_rows = sealed_rows.saturating_sub(settled);
    }
}
