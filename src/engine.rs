//! The engine's state: what every handle, the coordinator and the
//! replayer share, and the configuration it was built with.
//!
//! Owns: [`Config`] (every knob and its default, and the memory bound it
//! implies), [`WhenFull`], [`Shared`] (the shards, the seal target, the
//! spill directory, the instance id, the replayer's wake-up) and
//! [`snapshot`], which reads [`Stats`] off it. Must not: run anything; the
//! coordinator and the replayer act on this state, the handles read it.

use crate::shard::{SealTarget, Shard};
use crate::sink::{InsertFormat, InsertOrder};
use crate::stats::{Counters, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Engine configuration. Build it with [`Buffer::builder`](crate::Buffer::builder); every knob says
/// its default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub shards: usize,
    pub max_rows: u64,
    pub max_bytes: usize,
    pub flush_interval: Duration,
    pub max_inflight: usize,
    pub queue_batches: usize,
    pub queue_bytes: usize,
    pub max_insert_rows: u64,
    pub max_insert_bytes: usize,
    pub linger: Duration,
    pub insert_order: InsertOrder,
    pub insert_format: InsertFormat,
    pub retry: crate::RetryPolicy,
    pub dead_letter_dir: Option<std::path::PathBuf>,
    pub spill_dir: Option<std::path::PathBuf>,
    pub spill_max_bytes: u64,
    pub spill_full: crate::SpillFullPolicy,
    /// The spill family of the engine this one takes over (see
    /// `Builder::takes_over_spill_of`).
    pub spill_family: Option<crate::spill::Family>,
    pub when_full: WhenFull,
    pub insert_timeout: Duration,
    /// The sink's lanes (`Sink::lanes`), each with `max_inflight` slots;
    /// set by `build`.
    pub lanes: usize,
}

impl Default for Config {
    fn default() -> Self {
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            shards,
            max_rows: 500,
            max_bytes: 1 << 20,
            flush_interval: Duration::from_secs(10),
            max_inflight: 2,
            queue_batches: 4096,
            queue_bytes: 16 << 20,
            max_insert_rows: 100_000,
            max_insert_bytes: 16 << 20,
            linger: Duration::ZERO,
            insert_order: Default::default(),
            insert_format: Default::default(),
            retry: crate::RetryPolicy::default(),
            dead_letter_dir: None,
            spill_dir: None,
            spill_max_bytes: 1 << 30,
            spill_full: crate::SpillFullPolicy::DropNewest,
            spill_family: None,
            when_full: WhenFull::Reject,
            insert_timeout: Duration::from_secs(60),
            lanes: 1,
        }
    }
}

/// What the sort of one INSERT holds per row while it runs: the row's place
/// (12 bytes), its key words (8 bytes each; 40 covers keys of up to five
/// columns, strings as ranks), the packed keys and their radix copy (32)
/// and the order (4); rounded up.
const SORT_INDEX_BYTES_PER_ROW: usize = 96;

impl Config {
    /// Worst-case bytes of RowBinary the engine holds, by construction:
    /// open shard buffers, one parked batch per shard, the sealed-batch queue,
    /// and the in-flight INSERTs with what shaping them adds. A single row
    /// larger than `max_bytes` may add its own size once per shard.
    pub(crate) fn memory_bound(&self) -> usize {
        let open_and_parked = self.shards * 2 * self.max_bytes;
        // The byte budget admits a batch only if it fits, except into an
        // empty queue; the batch count caps it too.
        let queued = self
            .queue_bytes
            .max(self.max_bytes)
            .min(self.queue_batches * self.max_bytes);
        let insert = self.max_insert_bytes.max(self.max_bytes);
        // Shaping an INSERT holds a second copy of its rows (the sorted
        // one while sorting, the Native block during an attempt), and the
        // sort its index while it runs.
        let shaping = match (&self.insert_order, self.insert_format) {
            (InsertOrder::Arrival, InsertFormat::RowBinary) => 0,
            (InsertOrder::Arrival, _) => insert,
            _ => insert.saturating_add(
                SORT_INDEX_BYTES_PER_ROW.saturating_mul(self.max_insert_rows as usize),
            ),
        };
        let inflight = self.lanes * self.max_inflight * insert.saturating_add(shaping);
        open_and_parked + queued + inflight
    }

    /// Every knob within its range, or the first one that is not: its
    /// name and why (`BuildError::Invalid` to the builder's caller).
    pub(crate) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let check = |ok: bool, field: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err((field, reason))
            }
        };
        check(self.shards >= 1, "shards", "must be at least 1")?;
        check(self.max_rows >= 1, "max_rows", "must be at least 1")?;
        check(self.max_bytes >= 1, "max_bytes", "must be at least 1")?;
        check(
            !self.flush_interval.is_zero(),
            "flush_interval",
            "must be longer than zero",
        )?;
        check(self.max_inflight >= 1, "max_inflight", "must be at least 1")?;
        check(
            self.queue_batches >= 1,
            "queue_batches",
            "must be at least 1",
        )?;
        check(self.queue_bytes >= 1, "queue_bytes", "must be at least 1")?;
        check(
            self.max_insert_rows >= 1,
            "max_insert_rows",
            "must be at least 1",
        )?;
        check(
            self.max_insert_bytes >= 1,
            "max_insert_bytes",
            "must be at least 1",
        )?;

        check(
            !self.insert_timeout.is_zero(),
            "insert_timeout",
            "must be longer than zero",
        )?;
        check(
            self.retry.max_attempts >= 1,
            "retry",
            "max_attempts must be at least 1",
        )?;
        Ok(())
    }
}

/// What [`track`](crate::Buffer::track) does when this thread's shard is full (the
/// sink is behind and every queue is at its bound): the lossy-or-not switch.
/// Either way `track` returns at once; to wait for room, call
/// [`track_timeout`](crate::Buffer::track_timeout) (async) or
/// [`track_blocking`](crate::Buffer::track_blocking) (a plain thread) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Hand the row back: `TrackError::Full(row)` (`Stats::rejected_full`).
    /// The caller decides.
    #[default]
    Reject,
    /// Drop the row and return `Ok` (`Stats::dropped_full_rows`): for data
    /// where the newest sample matters less than the request path.
    DropNewest,
}

/// What the handles and the coordinator share.
pub(crate) struct Shared {
    pub cfg: Config,
    pub shards: Box<[Shard]>,
    pub seal: SealTarget,
    pub closed: AtomicBool,
    /// Column names for the sink (from the first row, or the schema).
    pub columns: OnceLock<crate::batch::ColumnNames>,
    /// Field names of a serde row type, for the per-row check in `track`.
    pub row_columns: OnceLock<Arc<[&'static str]>>,
    /// The spill directory, when configured.
    pub spill: Option<Arc<crate::spill::SpillDir>>,
    /// This engine's random instance id (see `InsertBatch::dedup_token`).
    pub instance: u64,
    /// Wakes the replayer (a batch was spilled, or it should stop).
    pub replay_wake: tokio::sync::Notify,
    pub replay_stop: AtomicBool,
    /// What the coordinator remembered of failed and spilled INSERTs, left
    /// here when it stops: receipts settled after that are answered from it.
    pub fates: OnceLock<crate::ledger::Fates>,
}

impl Shared {
    /// The state of a new engine: `cfg.shards` empty shards (each with
    /// `transcoder`, for JSON engines), the seal target over `tx`, no
    /// column names yet (but the transcoder's).
    pub(crate) fn new(
        cfg: Config,
        transcoder: Option<crate::transcode::Transcoder>,
        tx: flume::Sender<crate::batch::Batch>,
        instance: u64,
        spill: Option<Arc<crate::spill::SpillDir>>,
    ) -> Shared {
        // A first guess at a batch's size; shards resize from what they seal.
        let initial = (cfg.max_rows as usize * 64).min(cfg.max_bytes) + 64;
        let columns = OnceLock::new();
        if let Some(t) = &transcoder {
            let _ = columns.set(t.schema().names().clone());
        }
        Shared {
            shards: (0..cfg.shards)
                .map(|i| Shard::new(i, initial, transcoder.clone()))
                .collect(),
            seal: SealTarget {
                tx,
                next_seq: AtomicU64::new(0),
                parked: AtomicUsize::new(0),
                stats: Counters::default(),
                space: Default::default(),
                space_async: tokio::sync::Notify::new(),
                space_waiters: AtomicUsize::new(0),
                queued_bytes: AtomicUsize::new(0),
                max_queued_bytes: cfg.queue_bytes,
            },
            closed: AtomicBool::new(false),
            columns,
            row_columns: OnceLock::new(),
            spill,
            instance,
            replay_wake: tokio::sync::Notify::new(),
            replay_stop: AtomicBool::new(false),
            fates: OnceLock::new(),
            cfg,
        }
    }

    /// Seals shard `i`; true when its open buffer is empty afterwards.
    pub(crate) fn seal_shard(&self, i: usize) -> bool {
        let shard = &self.shards[i];
        let mut st = shard.lock();
        shard.seal(&mut st, &self.seal);
        st.rows == 0
    }

    /// Seals shard `i` if its open buffer holds any row numbered below
    /// `end`; whether none is left open. Read under the lock: a seal on
    /// another thread raises `sealed_rows` before it numbers the batch, and
    /// a barrier fixed in between would not cover it.
    pub(crate) fn seal_shard_holding(&self, i: usize, end: u64) -> bool {
        let Some(shard) = self.shards.get(i) else {
            return true;
        };
        let mut st = shard.lock();
        if shard.sealed_rows.load(Relaxed) >= end {
            return true;
        }
        shard.seal(&mut st, &self.seal);
        shard.sealed_rows.load(Relaxed) >= end
    }

    /// Shards that still have unsealed rows after an attempt to seal them all.
    pub(crate) fn seal_all(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| !self.seal_shard(i))
            .collect()
    }

    pub(crate) fn unpark_all(&self) {
        for shard in self.shards.iter() {
            let mut st = shard.lock();
            if st.parked.is_some() {
                Shard::unpark(&mut st, &self.seal);
            }
        }
    }
}

pub(crate) fn snapshot(shared: &Shared) -> Stats {
    let mut s = Stats::default();
    let (mut sealed, mut sealed_bytes) = (0, 0);
    for shard in shared.shards.iter() {
        s.tracked_rows += shard.tracked_rows.load(Relaxed);
        s.tracked_bytes += shard.tracked_bytes.load(Relaxed);
        s.rejected_full += shard.rejected_full.load(Relaxed);
        s.encode_errors += shard.encode_errors.load(Relaxed);
        sealed += shard.sealed_rows.load(Relaxed);
        sealed_bytes += shard.sealed_bytes.load(Relaxed);
    }
    s.buffered_rows = s.tracked_rows.saturating_sub(sealed);
    s.buffered_bytes = s.tracked_bytes.saturating_sub(sealed_bytes);
    s.queued_bytes = shared.seal.queued_bytes.load(Relaxed) as u64;
    shared.seal.stats.fill(&mut s, sealed);
    s
}
