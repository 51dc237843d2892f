//! Configuration and its builder: every knob, its default and its checks,
//! and `build`, which starts the coordinator and the replayer.
//!
//! Owns: [`Builder`] (every knob's setter and check) and [`BuildError`].
//! Must not: touch the hot path; what `track` reads of the configuration
//! is copied into the shared state at build time.

use super::{Buffer, Inner, Json};
use crate::coordinator::Coordinator;
use crate::engine::{Config, Shared, WhenFull};
use crate::sink::Sink;
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Sets up a [`Buffer`]. Obtained from [`Buffer::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    cfg: Config,
}

impl Builder {
    /// Number of shards (independent buffers). Default: available cores.
    /// Producer threads are spread over them round-robin; with threads <=
    /// shards no two producers ever share a lock.
    pub fn shards(mut self, n: usize) -> Self {
        self.cfg.shards = n;
        self
    }
    /// Rows at which a shard seals its batch. Default: 500 (the seed's
    /// `max_buffer_size`).
    pub fn max_rows(mut self, n: u64) -> Self {
        self.cfg.max_rows = n;
        self
    }
    /// RowBinary bytes at which a shard seals its batch. Default: 1 MiB.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.cfg.max_bytes = n;
        self
    }
    /// Period of the shared tick that seals every non-empty shard. Default:
    /// 10 s (the seed's `flush_interval`).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.cfg.flush_interval = d;
        self
    }
    /// INSERTs allowed in flight at once, per lane of the sink (one for a
    /// single server; a [`ClusterSink`](crate::sink::ClusterSink) routing by
    /// identity has one per shard, so a shard that is down holds only its
    /// own slots). Default: 2, so one slow INSERT never stalls the next
    /// while keeping part creation on the server modest.
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.cfg.max_inflight = n;
        self
    }
    /// RowBinary bytes of sealed batches that may wait for an INSERT.
    /// Default: 16 MiB. This queue is what INSERTs are coalesced from, so it
    /// should hold at least one `max_insert_bytes`-worth of the rows you
    /// expect per INSERT (100 000 PostEvents are about 4.5 MB). When it is
    /// full a shard keeps one sealed batch parked, then `track` returns
    /// [`TrackError::Full`](crate::TrackError::Full). An empty queue always takes one batch.
    pub fn queue_bytes(mut self, n: usize) -> Self {
        self.cfg.queue_bytes = n;
        self
    }
    /// Sealed batches that may wait for an INSERT, whatever their size.
    /// Default: 4096 (the byte budget above is what normally binds).
    pub fn queue_batches(mut self, n: usize) -> Self {
        self.cfg.queue_batches = n;
        self
    }
    /// Queued batches are coalesced into one INSERT up to this many rows.
    /// Default: 100 000 (ClickHouse prefers few large INSERTs).
    pub fn max_insert_rows(mut self, n: u64) -> Self {
        self.cfg.max_insert_rows = n;
        self
    }
    /// ... and up to this many bytes. Default: 16 MiB.
    pub fn max_insert_bytes(mut self, n: usize) -> Self {
        self.cfg.max_insert_bytes = n;
        self
    }

    /// The order each INSERT's rows are sent in. Default:
    /// [`InsertOrder::Sorted`](crate::sink::InsertOrder::Sorted), by the
    /// table's sorting key as the server reports it, which saves the server
    /// its sort (measured in BENCHMARKS.md, "Server-friendly INSERTs"). The
    /// sort runs once per INSERT on a blocking thread, never on `track`'s
    /// path; sinks other than ClickHouse ones ignore it.
    ///
    /// ```
    /// use ch_ingest::{Buffer, sink::{InsertFormat, InsertOrder}};
    /// let builder = Buffer::builder()
    ///     .insert_order(InsertOrder::Arrival)
    ///     .insert_format(InsertFormat::RowBinary); // what every other writer sends
    /// # let _ = builder;
    /// ```
    pub fn insert_order(mut self, order: crate::sink::InsertOrder) -> Self {
        self.cfg.insert_order = order;
        self
    }

    /// The format each INSERT is sent in. Default:
    /// [`InsertFormat::Native`](crate::sink::InsertFormat::Native), one
    /// column-wise block per INSERT, transposed from the shards' RowBinary
    /// by the table's `DESCRIBE`, which the server parses for less CPU;
    /// tables with a column it cannot transpose get RowBinary.
    pub fn insert_format(mut self, format: crate::sink::InsertFormat) -> Self {
        self.cfg.insert_format = format;
        self
    }

    /// How long a sealed batch may wait for others to share its INSERT when
    /// an INSERT slot is free. Default: zero (at low load a sealed batch goes
    /// out at once; under load batches coalesce anyway while INSERTs are in
    /// flight). Set it (e.g. 200 ms) to trade that much latency for fewer,
    /// larger INSERTs at moderate load. Flush and shutdown never wait for it.
    pub fn linger(mut self, d: Duration) -> Self {
        self.cfg.linger = d;
        self
    }

    /// How failed INSERTs are retried. Default: [`RetryPolicy::default`]
    /// (10 attempts, backoff from 100 ms to 10 s with full jitter, none later
    /// than 60 s after the first). [`RetryPolicy::NONE`] is the seed's
    /// "log and drop".
    ///
    /// [`RetryPolicy::default`]: crate::RetryPolicy
    /// [`RetryPolicy::NONE`]: crate::RetryPolicy::NONE
    pub fn retry(mut self, policy: crate::RetryPolicy) -> Self {
        self.cfg.retry = policy;
        self
    }

    /// Where INSERTs that failed for good (a permanent error, or retries used
    /// up) are kept: the exact RowBinary plus a JSON sidecar with the table,
    /// columns, rows and error. Default: none (such rows are counted in
    /// `Stats::dropped_rows` and logged). Created with mode 0700 if missing
    /// (its files 0600: they hold the rows); a path whose last component is
    /// a symlink is refused when the first dead letter is written.
    pub fn dead_letter_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.dead_letter_dir = Some(dir.into());
        self
    }

    /// Where INSERTs whose retries ran out are written instead of dropped
    /// (checksummed, fsynced, renamed into place). A background replayer sends
    /// them again, oldest first, once the sink answers, and on the next start
    /// with the same directory. Give each table its own directory: files
    /// written for another table (per the sink's [`Sink::table`]) are left
    /// for `ch-ingest replay`, never sent here. Created with mode 0700 if
    /// missing (its files 0600: they hold the rows); a path whose last
    /// component is a symlink is refused ([`BuildError::SpillDir`]).
    /// Default: none.
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.spill_dir = Some(dir.into());
        self
    }

    /// Disk budget of the spill directory. Default: 1 GiB.
    pub fn spill_max_bytes(mut self, n: u64) -> Self {
        self.cfg.spill_max_bytes = n;
        self
    }

    /// What happens at the spill budget. Default:
    /// [`SpillFullPolicy::DropNewest`](crate::SpillFullPolicy::DropNewest).
    pub fn spill_full_policy(mut self, policy: crate::SpillFullPolicy) -> Self {
        self.cfg.spill_full = policy;
        self
    }

    /// Makes this engine the successor of `old` on the same spill directory
    /// (for a process that replaces an engine while running, as `ch-ingest
    /// serve` does when a table's schema changes). The two (and any engine
    /// `old` took over) count each other's spill files as their own when
    /// they replay or evict them (`replayed_rows`, `acked_rows`,
    /// `spill_failed_rows`), not as `replayed_foreign_rows`, whichever of
    /// them gets to a file first. The accounting identity in [`Stats`] then
    /// holds over the engines' stats added together ([`Stats::add`]), and
    /// `spill_pending_rows` of that sum falls to zero as the files are
    /// delivered. Default: no predecessor.
    ///
    /// [`Stats`]: crate::Stats
    /// [`Stats::add`]: crate::Stats::add
    pub fn takes_over_spill_of<U>(mut self, old: &Buffer<U>) -> Self {
        self.cfg.spill_family = old.inner.shared.spill.as_ref().map(|d| d.family().clone());
        self
    }

    /// How long one INSERT attempt may take before it counts as a (retryable)
    /// `SinkError::Timeout`. Default: 60 s. Without it a server that accepts
    /// the connection and never answers (frozen, blackholed by a proxy)
    /// would hold an INSERT slot forever.
    pub fn insert_timeout(mut self, d: Duration) -> Self {
        self.cfg.insert_timeout = d;
        self
    }

    /// What `track` and `track_many` do when the buffer is full. Default:
    /// [`WhenFull::Reject`] (the row is handed back). The waiting verbs
    /// ([`Buffer::track_timeout`], [`Buffer::track_blocking`]) never drop.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.cfg.when_full = policy;
        self
    }

    /// The worst-case RowBinary bytes this configuration can hold in
    /// memory over a sink with one lane ([`Buffer::memory_bound`] counts
    /// the lanes of the sink it was built with).
    pub fn memory_bound(&self) -> usize {
        self.cfg.memory_bound()
    }

    /// Starts the engine on the current tokio runtime (multi-thread or
    /// current-thread) and returns its first handle.
    pub fn build<T, S>(self, sink: S) -> Result<Buffer<T>, BuildError>
    where
        T: Serialize,
        S: Sink,
    {
        self.start(sink, None)
    }

    /// Starts an engine for raw JSON rows of `schema` (see
    /// [`Buffer::track_json`]): each object is transcoded straight into
    /// RowBinary, unknown fields ignored.
    pub fn build_json<S: Sink>(
        self,
        schema: crate::Schema,
        sink: S,
    ) -> Result<Buffer<Json>, BuildError> {
        self.start(sink, Some(crate::transcode::Transcoder::new(schema)))
    }

    /// Like [`build_json`](Self::build_json) with a configured
    /// [`Transcoder`](crate::transcode::Transcoder) (e.g. one that rejects
    /// unknown fields).
    pub fn build_transcoded<S: Sink>(
        self,
        transcoder: crate::transcode::Transcoder,
        sink: S,
    ) -> Result<Buffer<Json>, BuildError> {
        self.start(sink, Some(transcoder))
    }

    fn start<T, S: Sink>(
        self,
        sink: S,
        transcoder: Option<crate::transcode::Transcoder>,
    ) -> Result<Buffer<T>, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let mut cfg = self.cfg;
        cfg.lanes = sink.lanes().max(1);
        sink.retry_horizon(cfg.retry.max_elapsed.saturating_add(cfg.insert_timeout));
        sink.insert_shape(&cfg.insert_order, cfg.insert_format);
        cfg.validate()
            .map_err(|(field, reason)| BuildError::Invalid { field, reason })?;
        // Random per engine, from the OS: with the batch sequence it makes
        // INSERT ids (dedup tokens, spill files) unique across processes and
        // restarts, even two started within the same clock tick.
        let instance = rand::random::<u64>() | 1;
        let spill = match &cfg.spill_dir {
            Some(dir) => Some(Arc::new(
                crate::spill::SpillDir::open(
                    dir,
                    cfg.spill_max_bytes,
                    cfg.spill_full,
                    instance,
                    cfg.spill_family.clone(),
                )
                .map_err(|e| BuildError::SpillDir {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?,
            )),
            None => None,
        };

        let (tx, rx) = flume::bounded(cfg.queue_batches);
        let shared = Arc::new(Shared::new(cfg, transcoder, tx, instance, spill));
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let sink = Arc::new(sink);
        // `new` spawns the replayer, on this runtime.
        runtime.spawn(Coordinator::new(shared.clone(), rx, sink).run(ctrl_rx));
        Ok(Buffer {
            inner: Arc::new(Inner { shared, ctrl }),
            _row: PhantomData,
        })
    }
}

/// Why a [`Buffer`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` must run inside a tokio runtime: the coordinator is a task on it.
    #[error("Buffer::build must be called inside a tokio runtime")]
    NoRuntime,
    /// The spill directory could not be created or opened.
    #[error("spill_dir `{path}`: {reason}")]
    SpillDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid {
        /// The builder method's name.
        field: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
}
