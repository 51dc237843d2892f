//! One shard: an open RowBinary buffer that producer threads append to.
//!
//! Owns: the per-shard buffer, the decision to seal it (at `max_rows` or
//! `max_bytes`), handing sealed batches to the coordinator's channel, and the
//! one "parked" slot that holds a sealed batch while that channel is full.
//! Must not: block on the channel, await, or do I/O: the lock is held for one
//! row's encode, so a producer never waits for more than that.
//!
//! Producer threads stick to one shard (see [`shard_for_this_thread`]), so with
//! threads <= shards the lock is never contended and rows of one thread stay in
//! order within a shard.

use crate::batch::Batch;
use bytes::BytesMut;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Where sealed batches go, and what the shards share for sealing them.
pub(crate) struct SealTarget {
    pub tx: flume::Sender<Batch>,
    /// Engine-wide batch sequence (flush barriers wait on it).
    pub next_seq: AtomicU64,
    /// Shards holding a parked batch; the coordinator retries them.
    pub parked: AtomicUsize,
    pub stats: crate::stats::Counters,
    /// Producers waiting for room sleep here: `track_blocking` on the
    /// condvar, `track_timeout` on the notify.
    pub space: (std::sync::Mutex<()>, std::sync::Condvar),
    pub space_async: tokio::sync::Notify,
    pub space_waiters: AtomicUsize,
    /// RowBinary bytes sealed but not yet taken by the coordinator, and the
    /// budget for them (`queue_bytes`).
    pub queued_bytes: AtomicUsize,
    pub max_queued_bytes: usize,
}

impl SealTarget {
    /// Queues a sealed batch if the byte budget and the channel have room;
    /// hands it back otherwise. An empty queue always takes one batch, so a
    /// batch larger than the budget still moves.
    fn offer(&self, batch: Batch) -> Result<(), Batch> {
        let len = batch.data.len();
        let before = self.queued_bytes.fetch_add(len, Relaxed);
        if before != 0 && before + len > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return Err(batch);
        }
        self.tx.try_send(batch).map_err(|e| {
            self.queued_bytes.fetch_sub(len, Relaxed);
            e.into_inner()
        })
    }

    /// The coordinator took `batch` off the queue.
    pub(crate) fn taken(&self, batch: &Batch) {
        self.queued_bytes.fetch_sub(batch.data.len(), Relaxed);
        if self.space_waiters.load(Relaxed) > 0 {
            self.space.1.notify_all();
            self.space_async.notify_waiters();
        }
    }
}

pub(crate) struct ShardState {
    pub buf: BytesMut,
    pub rows: u64,
    /// A sealed batch the channel had no room for. At most one: while it is
    /// here the open buffer fills up to its limits and then `track` reports
    /// `Full`, which is how back-pressure reaches producers.
    pub parked: Option<Batch>,
    /// Bytes of the last sealed batch, to size the next buffer in one allocation.
    last_len: usize,
    /// For buffers of raw JSON rows: this shard's transcoder (and its scratch).
    pub transcoder: Option<crate::transcode::Transcoder>,
}

/// Padded so two shards never share a cache line.
#[repr(align(128))]
pub(crate) struct Shard {
    state: Mutex<ShardState>,
    /// Its place in the engine's shard list (row identity for receipts).
    index: u32,
    // Written only by the lock holder; read by `stats()` without the lock.
    /// Rows ever taken: also the next row's number (see `receipt`).
    pub tracked_rows: AtomicU64,
    pub tracked_bytes: AtomicU64,
    pub sealed_rows: AtomicU64,
    pub sealed_bytes: AtomicU64,
    pub rejected_full: AtomicU64,
    pub encode_errors: AtomicU64,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        initial_capacity: usize,
        transcoder: Option<crate::transcode::Transcoder>,
    ) -> Self {
        Self {
            index: index as u32,
            state: Mutex::new(ShardState {
                buf: BytesMut::with_capacity(initial_capacity),
                rows: 0,
                parked: None,
                last_len: initial_capacity,
                transcoder,
            }),
            tracked_rows: AtomicU64::new(0),
            tracked_bytes: AtomicU64::new(0),
            sealed_rows: AtomicU64::new(0),
            sealed_bytes: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
            encode_errors: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardState> {
        // Nothing that can panic runs under this lock while the state is
        // inconsistent (encode errors truncate first), so a poisoned lock still
        // guards a valid buffer.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumps a counter that only the lock holder writes: a plain load and
    /// store, no atomic read-modify-write on the hot path.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed) + n, Relaxed);
    }

    /// Seals the open buffer (if it has rows) and hands it to the coordinator.
    /// A parked batch goes first, so one shard's batches keep their order. If
    /// the channel is full the new batch is parked; if a batch is already
    /// parked, the open buffer stays open.
    pub(crate) fn seal(&self, st: &mut ShardState, target: &SealTarget) {
        if !Self::unpark(st, target) || st.rows == 0 {
            return;
        }
        let rows = std::mem::take(&mut st.rows);
        let data = st.buf.split().freeze();
        st.last_len = data.len();
        // One allocation per batch, sized like the last one plus slack, so
        // `track` does not reallocate row by row.
        st.buf.reserve(st.last_len + st.last_len / 8);
        let first = self.sealed_rows.load(Relaxed);
        Self::bump(&self.sealed_rows, rows);
        Self::bump(&self.sealed_bytes, data.len() as u64);
        let batch = Batch {
            seq: target.next_seq.fetch_add(1, Relaxed),
            rows,
            data,
            span: crate::receipt::Span {
                shard: self.index,
                start: first,
                end: first + rows,
            },
        };
        crate::stats::Counters::add(&target.stats.sealed_batches, 1);
        if let Err(batch) = target.offer(batch) {
            // Full, or the coordinator is gone: keep the batch, never drop it here.
            st.parked = Some(batch);
            target.parked.fetch_add(1, Relaxed);
        }
    }

    /// Tries to move the parked batch into the channel. Returns whether the
    /// slot is now free.
    pub(crate) fn unpark(st: &mut ShardState, target: &SealTarget) -> bool {
        let Some(batch) = st.parked.take() else {
            return true;
        };
        match target.offer(batch) {
            Ok(()) => {
                target.parked.fetch_sub(1, Relaxed);
                true
            }
            Err(batch) => {
                st.parked = Some(batch);
                false
            }
        }
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The last `(shards, slot % shards)`: a division costs tens of cycles,
    /// a noticeable slice of a ~40 ns `track`, and a thread almost always
    /// asks about buffers of the same width.
    static LAST_SHARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The shard this thread uses: assigned round-robin on the thread's first
/// `track`, then fixed, so a thread's rows stay in one shard and in order.
#[inline]
pub(crate) fn shard_for_this_thread(shards: usize) -> usize {
    let (width, index) = LAST_SHARD.get();
    if width == shards {
        return index;
    }
    shard_for_this_thread_slow(shards)
}

#[cold]
fn shard_for_this_thread_slow(shards: usize) -> usize {
    let slot = THREAD_SLOT.with(|slot| {
        let mut s = slot.get();
        if s == usize::MAX {
            s = NEXT_THREAD.fetch_add(1, Relaxed);
            slot.set(s);
        }
        s
    });
    let index = slot % shards.max(1);
    LAST_SHARD.set((shards, index));
    index
}
