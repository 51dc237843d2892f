//! The public handle: [`Buffer`], its [`Builder`], and `track`.
//!
//! Owns: configuration and its defaults, starting the coordinator, the hot
//! path (`track`: pick this thread's shard, encode under its lock, seal at a
//! threshold), and the flush / shutdown / stats calls. Must not: await, block
//! on a channel or do I/O inside `track`.

use crate::coordinator::{Command, Coordinator, FlushReport, Shared};
use crate::rowbinary::{encode_row, encode_row_as, EncodeError};
use crate::shard::{shard_for_this_thread, SealTarget, Shard};
use crate::sink::Sink;
use crate::stats::{Counters, Stats};
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Engine configuration. Build it with [`Buffer::builder`]; every knob says
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
            retry: crate::RetryPolicy::default(),
            dead_letter_dir: None,
            spill_dir: None,
            spill_max_bytes: 1 << 30,
            spill_full: crate::SpillFullPolicy::DropNewest,
            spill_family: None,
            when_full: WhenFull::Reject,
            insert_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Worst-case bytes of RowBinary the engine holds, by construction:
    /// open shard buffers, one parked batch per shard, the sealed-batch queue,
    /// and the in-flight INSERTs. A single row larger than `max_bytes` may add
    /// its own size once per shard.
    pub(crate) fn memory_bound(&self) -> usize {
        let open_and_parked = self.shards * 2 * self.max_bytes;
        // The byte budget admits a batch only if it fits, except into an
        // empty queue; the batch count caps it too.
        let queued = self
            .queue_bytes
            .max(self.max_bytes)
            .min(self.queue_batches * self.max_bytes);
        let inflight = self.max_inflight * self.max_insert_bytes.max(self.max_bytes);
        open_and_parked + queued + inflight
    }
}

/// What [`track`](Buffer::track) does when this thread's shard is full (the
/// sink is behind and every queue is at its bound): the lossy-or-not switch.
/// Either way `track` returns at once; to wait for room, call
/// [`track_timeout`](Buffer::track_timeout) (async) or
/// [`track_blocking`](Buffer::track_blocking) (a plain thread) instead.
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
    /// INSERTs allowed in flight at once. Default: 2, so one slow INSERT never
    /// stalls the next while keeping part creation on the server modest.
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.cfg.max_inflight = n;
        self
    }
    /// RowBinary bytes of sealed batches that may wait for an INSERT.
    /// Default: 16 MiB. This queue is what INSERTs are coalesced from, so it
    /// should hold at least one `max_insert_bytes`-worth of the rows you
    /// expect per INSERT (100 000 PostEvents are about 4.5 MB). When it is
    /// full a shard keeps one sealed batch parked, then `track` returns
    /// [`TrackError::Full`]. An empty queue always takes one batch.
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
    /// `Stats::dropped_rows` and logged).
    pub fn dead_letter_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.dead_letter_dir = Some(dir.into());
        self
    }

    /// Where INSERTs whose retries ran out are written instead of dropped
    /// (checksummed, fsynced, renamed into place). A background replayer sends
    /// them again, oldest first, once the sink answers, and on the next start
    /// with the same directory. Give each table its own directory: files
    /// written for another table (per the sink's [`Sink::table`]) are left
    /// for `ch-ingest replay`, never sent here. Default: none.
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

    /// The worst-case RowBinary bytes this configuration can hold in memory.
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
        let cfg = self.cfg;
        let check = |ok: bool, field: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(BuildError::Invalid { field, reason })
            }
        };
        check(cfg.shards >= 1, "shards", "must be at least 1")?;
        check(cfg.max_rows >= 1, "max_rows", "must be at least 1")?;
        check(cfg.max_bytes >= 1, "max_bytes", "must be at least 1")?;
        check(
            !cfg.flush_interval.is_zero(),
            "flush_interval",
            "must be longer than zero",
        )?;
        check(cfg.max_inflight >= 1, "max_inflight", "must be at least 1")?;
        check(
            cfg.queue_batches >= 1,
            "queue_batches",
            "must be at least 1",
        )?;
        check(cfg.queue_bytes >= 1, "queue_bytes", "must be at least 1")?;
        check(
            cfg.max_insert_rows >= 1,
            "max_insert_rows",
            "must be at least 1",
        )?;
        check(
            cfg.max_insert_bytes >= 1,
            "max_insert_bytes",
            "must be at least 1",
        )?;

        check(
            !cfg.insert_timeout.is_zero(),
            "insert_timeout",
            "must be longer than zero",
        )?;
        check(
            cfg.retry.max_attempts >= 1,
            "retry",
            "max_attempts must be at least 1",
        )?;
        // Random per engine: with the batch sequence it makes INSERT ids
        // (dedup tokens, spill files) unique across processes and restarts.
        let instance = crate::retry::Jitter::from_entropy().unit().to_bits() | 1;
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
        // A first guess at a batch's size; shards resize from what they seal.
        let initial = (cfg.max_rows as usize * 64).min(cfg.max_bytes) + 64;
        let columns = OnceLock::new();
        if let Some(t) = &transcoder {
            let _ = columns.set(t.schema().names().clone());
        }
        let shared = Arc::new(Shared {
            shards: (0..cfg.shards)
                .map(|_| Shard::new(initial, transcoder.clone()))
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
            cfg,
        });
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

/// A handle to the engine: cheap to clone, `Send + Sync`, usable from any
/// thread, inside a runtime or not.
///
/// ```
/// use ch_ingest::{Buffer, PostEvent, sink::MemorySink};
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let sink = MemorySink::new();
/// let buffer: Buffer<PostEvent> = Buffer::builder().shards(2).max_rows(500).build(sink.clone())?;
///
/// // From any thread, never blocks:
/// buffer.track(PostEvent::new("impression", 1_234, 1_700_000_000))?;
///
/// let report = buffer.flush().await?; // every row tracked so far is in the sink
/// assert_eq!(report.rows, 1);
/// buffer.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Buffer<T> {
    inner: Arc<Inner>,
    _row: PhantomData<fn(T)>,
}

impl<T> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _row: PhantomData,
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    ctrl: mpsc::UnboundedSender<Command>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.shared.closed.load(Relaxed) {
            return;
        }
        let stats = snapshot(&self.shared);
        let left = stats.buffered_rows + stats.pending_rows;
        if left > 0 {
            tracing::warn!(
                rows = left,
                "ch-ingest Buffer dropped without shutdown(): {left} rows not yet acknowledged; \
                 draining in the background while the runtime lives"
            );
        }
    }
}

impl Buffer<()> {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Cuts a shard's buffer back to `len` if dropped while unwinding: a
/// panic inside a row's encoding (a user's `Serialize`) must not leave half
/// a row for the next one to be appended to.
struct RewindOnUnwind<'a> {
    st: &'a mut crate::shard::ShardState,
    len: usize,
    armed: bool,
}

impl Drop for RewindOnUnwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.st.buf.truncate(self.len);
        }
    }
}

/// Why [`Buffer::append`] did not buffer a row.
enum Rejected<E> {
    Full,
    Closed,
    Invalid(E),
}

impl<T: Serialize> Buffer<T> {
    /// Encodes `row` into this thread's shard. Returns at once: never blocks,
    /// never awaits. On error the row is handed back and nothing was buffered.
    ///
    /// When the shard reaches `max_rows` or `max_bytes` this call seals the
    /// batch and hands it to the coordinator, which starts an INSERT.
    ///
    /// What a full buffer does is the builder's
    /// [`when_full`](Builder::when_full) policy: hand the row back (default)
    /// or drop it and count it. To wait for room instead, use
    /// [`track_timeout`](Buffer::track_timeout) or
    /// [`track_blocking`](Buffer::track_blocking).
    #[inline]
    pub fn track(&self, row: T) -> Result<(), TrackError<T>> {
        self.track_with::<true>(row)
    }

    #[cold]
    fn when_full(&self, row: T) -> Result<(), TrackError<T>> {
        let shared = &*self.inner.shared;
        match shared.cfg.when_full {
            WhenFull::Reject => Err(TrackError::Full(row)),
            WhenFull::DropNewest => {
                Counters::add(&shared.seal.stats.dropped_full_rows, 1);
                Ok(())
            }
        }
    }

    /// Like [`track`](Buffer::track), but when the shard is full it waits
    /// for room, up to `timeout`, without blocking the thread (the task
    /// yields to the runtime). At the timeout the row is handed back as
    /// [`TrackError::Full`] (`Stats::block_timeouts`), whatever the
    /// [`when_full`](Builder::when_full) policy says: a caller that waits
    /// wants the row kept or returned, never dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use ch_ingest::{sink::MemorySink, Buffer, PostEvent};
    /// use std::time::Duration;
    /// let buffer: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
    /// let row = PostEvent::new("like", 1, 1_700_000_000);
    /// buffer.track_timeout(row, Duration::from_millis(100)).await.unwrap();
    /// assert_eq!(buffer.shutdown().await.unwrap().rows, 1);
    /// # }
    /// ```
    pub async fn track_timeout(&self, row: T, timeout: Duration) -> Result<(), TrackError<T>> {
        let mut row = match self.track_with::<false>(row) {
            Err(TrackError::Full(row)) => row,
            other => return other,
        };
        let seal = &self.inner.shared.seal;
        let deadline = crate::sink::deadline::after(timeout);
        let _waiting = SpaceWaiter::new(seal);
        loop {
            let room = seal.space_async.notified();
            tokio::pin!(room);
            // Registered before the attempt: room made after it wakes us.
            room.as_mut().enable();
            row = match self.track_with::<false>(row) {
                Err(TrackError::Full(row)) => row,
                other => return other,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                Counters::add(&seal.stats.block_timeouts, 1);
                return Err(TrackError::Full(row));
            }
            // Room also comes from a parked batch the coordinator moves on,
            // which notifies nobody: look again after a millisecond.
            let slice = (deadline - now).min(Duration::from_millis(1));
            let _ = tokio::time::timeout(slice, room).await;
        }
    }

    /// Like [`track_timeout`](Buffer::track_timeout), but waits by blocking
    /// the calling thread: for producers on plain threads. Never call it on
    /// an async runtime's worker thread (it would stall every task there,
    /// the engine's coordinator too on a current-thread runtime).
    pub fn track_blocking(&self, row: T, timeout: Duration) -> Result<(), TrackError<T>> {
        let mut row = match self.track_with::<false>(row) {
            Err(TrackError::Full(row)) => row,
            other => return other,
        };
        let seal = &self.inner.shared.seal;
        let deadline = crate::sink::deadline::after(timeout).into_std();
        let _waiting = SpaceWaiter::new(seal);
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                Counters::add(&seal.stats.block_timeouts, 1);
                return Err(TrackError::Full(row));
            }
            {
                let guard = seal.space.0.lock().unwrap_or_else(|p| p.into_inner());
                // Short slices: a wake-up missed between the failed attempt
                // and this wait costs at most a millisecond.
                let slice = (deadline - now).min(Duration::from_millis(1));
                let _ = seal.space.1.wait_timeout(guard, slice);
            }
            row = match self.track_with::<false>(row) {
                Err(TrackError::Full(row)) => row,
                other => return other,
            };
        }
    }

    /// One attempt; `POLICY` says whether a full buffer goes to the
    /// `when_full` policy (from `track`) or straight back (from its wait loop).
    #[inline(always)]
    fn track_with<const POLICY: bool>(&self, row: T) -> Result<(), TrackError<T>> {
        let result = self.append(|st| self.encode(&row, st));
        match result {
            Ok(()) => Ok(()),
            Err(Rejected::Full) if POLICY => self.when_full(row),
            Err(Rejected::Full) => Err(TrackError::Full(row)),
            Err(Rejected::Closed) => Err(TrackError::Closed(row)),
            Err(Rejected::Invalid(error)) => Err(TrackError::Encode { row, error }),
        }
    }
}

impl<T: Serialize> Buffer<T> {
    /// Tracks rows from `rows` until it ends or a row is refused, taking the
    /// shard's lock once for all of them: for callers that already hold a
    /// batch (a decoded request body, a drained local queue).
    ///
    /// Returns how many rows were accepted. On a refusal the error hands back
    /// the refused row, exactly as [`track`](Buffer::track) would, and the
    /// rows after it stay in the iterator, untouched. The lock is held while
    /// the iterator runs, so keep it cheap (no I/O) and the batch bounded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use ch_ingest::{sink::MemorySink, Buffer, PostEvent};
    /// let sink = MemorySink::new();
    /// let buffer: Buffer<PostEvent> = Buffer::builder().build(sink.clone()).unwrap();
    /// let mut rows = (0..1_000).map(|i| PostEvent::new("like", i, 1_700_000_000));
    /// assert_eq!(buffer.track_many(&mut rows).unwrap(), 1_000);
    /// assert_eq!(buffer.shutdown().await.unwrap().rows, 1_000);
    /// # }
    /// ```
    pub fn track_many<I: Iterator<Item = T>>(&self, rows: &mut I) -> Result<usize, TrackError<T>> {
        let shared = &*self.inner.shared;
        let shard = &shared.shards[shard_for_this_thread(shared.shards.len())];
        let mut accepted = 0;
        'locked: loop {
            let mut st = shard.lock();
            loop {
                let Some(row) = rows.next() else {
                    return Ok(accepted);
                };
                match self.append_locked(shard, &mut st, |st| self.encode(&row, st)) {
                    Ok(()) => accepted += 1,
                    Err(Rejected::Full) => {
                        // The builder's policy, exactly as `track`.
                        drop(st);
                        self.when_full(row)?;
                        continue 'locked;
                    }
                    Err(Rejected::Closed) => return Err(TrackError::Closed(row)),
                    Err(Rejected::Invalid(error)) => return Err(TrackError::Encode { row, error }),
                }
            }
        }
    }

    #[inline(always)]
    fn encode(&self, row: &T, st: &mut crate::shard::ShardState) -> Result<(), EncodeError> {
        let shared = &*self.inner.shared;
        match shared.row_columns.get() {
            Some(columns) => encode_row_as(row, &mut st.buf, columns),
            None => first_row(shared, row, &mut st.buf),
        }
    }
}

/// Counts a producer waiting for room while it lives, so the coordinator
/// only wakes waiters when there are some.
struct SpaceWaiter<'a>(&'a crate::shard::SealTarget);

impl<'a> SpaceWaiter<'a> {
    fn new(seal: &'a crate::shard::SealTarget) -> Self {
        seal.space_waiters.fetch_add(1, Relaxed);
        Self(seal)
    }
}

impl Drop for SpaceWaiter<'_> {
    fn drop(&mut self) {
        self.0.space_waiters.fetch_sub(1, Relaxed);
    }
}

/// The first row of a serde buffer: learns the column names (or, when
/// another thread learned them first, checks this row against them).
#[cold]
fn first_row<T: Serialize>(
    shared: &Shared,
    row: &T,
    buf: &mut bytes::BytesMut,
) -> Result<(), EncodeError> {
    let before = buf.len();
    let Some(learned) = encode_row(row, buf, None)? else {
        return Ok(());
    };
    let learned: Arc<[&'static str]> = Arc::from(learned);
    let set = shared.row_columns.get_or_init(|| learned.clone());
    if **set == *learned {
        shared.columns.get_or_init(|| {
            learned
                .iter()
                .map(|&c| std::borrow::Cow::Borrowed(c))
                .collect()
        });
        return Ok(());
    }
    buf.truncate(before);
    let index = set
        .iter()
        .zip(learned.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(set.len().min(learned.len()));
    Err(EncodeError::ColumnMismatch {
        index,
        expected: set.get(index).copied().unwrap_or(""),
        found: learned.get(index).copied().unwrap_or(""),
    })
}

/// The row type of a buffer built with [`Builder::build_json`]: rows arrive
/// as JSON objects and are transcoded for the buffer's [`Schema`](crate::Schema).
#[derive(Debug, Clone, Copy)]
pub struct Json;

impl Buffer<Json> {
    /// Transcodes one JSON object into this thread's shard, with the same
    /// guarantees as [`Buffer::track`]: never blocks, and on error nothing of
    /// the row is buffered.
    ///
    /// ```
    /// use ch_ingest::{Buffer, Schema, sink::MemorySink};
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let schema = Schema::parse("id UInt64, name String")?;
    /// let buffer = Buffer::builder().build_json(schema, MemorySink::new())?;
    /// buffer.track_json(br#"{"name": "x", "id": "42"}"#)?;
    /// let err = buffer.track_json(br#"{"id": "minus one"}"#).unwrap_err();
    /// assert!(err.to_string().contains("`id`"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[inline]
    pub fn track_json(&self, json: &[u8]) -> Result<(), TrackJsonError> {
        let result = self.append(|st| match &mut st.transcoder {
            Some(t) => t.transcode(json, &mut st.buf),
            None => Err(crate::DecodeError {
                field: None,
                kind: crate::DecodeErrorKind::Invalid,
                reason: "this buffer was not built with build_json".into(),
                offset: None,
            }),
        });
        match result {
            Ok(()) => Ok(()),
            Err(Rejected::Full) => Err(TrackJsonError::Full),
            Err(Rejected::Closed) => Err(TrackJsonError::Closed),
            Err(Rejected::Invalid(e)) => Err(TrackJsonError::Decode(e)),
        }
    }

    /// Tracks every line of an NDJSON body. Lines that do not decode are
    /// reported and skipped; good lines are never lost because of bad ones.
    /// If the buffer fills up or closes, the rest of the body is not taken
    /// and `stopped` says from which line.
    pub fn track_ndjson(&self, body: &[u8]) -> NdjsonTracked {
        let mut out = NdjsonTracked::default();
        for (line, json) in crate::json::ndjson_lines(body) {
            match self.track_json(json) {
                Ok(()) => out.report.accepted += 1,
                Err(TrackJsonError::Decode(error)) => out
                    .report
                    .rejected
                    .push(crate::RejectedLine { line, error }),
                Err(other) => {
                    out.stopped = Some((line, other));
                    break;
                }
            }
        }
        out
    }
}

/// What [`Buffer::track_ndjson`] did with a body.
#[derive(Debug, Default)]
pub struct NdjsonTracked {
    /// Lines buffered, and lines rejected with their errors.
    pub report: crate::NdjsonReport,
    /// Set when the buffer was full or closed: the 1-based line from which
    /// nothing was taken, and why.
    pub stopped: Option<(usize, TrackJsonError)>,
}

impl<T> Buffer<T> {
    /// The hot path shared by every `track` flavour: this thread's shard,
    /// its lock, [`append_locked`](Self::append_locked), and the sampled
    /// latency.
    #[inline]
    fn append<E>(
        &self,
        encode: impl FnOnce(&mut crate::shard::ShardState) -> Result<(), E>,
    ) -> Result<(), Rejected<E>> {
        let shared = &*self.inner.shared;
        let shard = &shared.shards[shard_for_this_thread(shared.shards.len())];
        // Sampled latency: read before the lock so lock waits count too.
        let timed = (shard.tracked_rows.load(Relaxed))
            .is_multiple_of(crate::histogram::TRACK_SAMPLE)
            .then(std::time::Instant::now);
        let mut st = shard.lock();
        self.append_locked(shard, &mut st, encode)?;
        drop(st);
        if let Some(t0) = timed {
            let seconds = t0.elapsed().as_secs_f64();
            shared.seal.stats.hist.track_seconds.record(seconds);
        }
        Ok(())
    }

    /// One row into a locked shard: closed and full checks, `encode`,
    /// counters, seal at a threshold. The one append path (`track`,
    /// `track_many`, `track_json`). If `encode` panics (a user's
    /// `Serialize`), the buffer is cut back to where the row started before
    /// the panic leaves the lock, so the rows around it stay intact.
    #[inline(always)]
    fn append_locked<E>(
        &self,
        shard: &Shard,
        st: &mut crate::shard::ShardState,
        encode: impl FnOnce(&mut crate::shard::ShardState) -> Result<(), E>,
    ) -> Result<(), Rejected<E>> {
        let shared = &*self.inner.shared;
        let cfg = &shared.cfg;
        if shared.closed.load(Relaxed) {
            Counters::add(&shared.seal.stats.rejected_closed, 1);
            return Err(Rejected::Closed);
        }
        if st.rows >= cfg.max_rows || st.buf.len() >= cfg.max_bytes {
            // Only reachable when a parked batch kept the last seal from happening.
            shard.seal(st, &shared.seal);
            if st.rows != 0 {
                Shard::bump(&shard.rejected_full, 1);
                return Err(Rejected::Full);
            }
        }
        let before = st.buf.len();
        let mut rewind = RewindOnUnwind {
            st,
            len: before,
            armed: true,
        };
        let encoded = encode(&mut *rewind.st);
        // Returned (Ok or Err, which truncate by themselves): nothing to cut.
        rewind.armed = false;
        let st = &mut *rewind.st;
        if let Err(e) = encoded {
            Shard::bump(&shard.encode_errors, 1);
            return Err(Rejected::Invalid(e));
        }
        st.rows += 1;
        Shard::bump(&shard.tracked_rows, 1);
        Shard::bump(&shard.tracked_bytes, (st.buf.len() - before) as u64);
        if st.rows >= cfg.max_rows || st.buf.len() >= cfg.max_bytes {
            shard.seal(st, &shared.seal);
        }
        Ok(())
    }

    /// Seals every shard and resolves once every row accepted before the call
    /// has been acknowledged by the sink, or has failed (the report says
    /// exactly which INSERTs failed, with their rows and errors).
    pub async fn flush(&self) -> Result<FlushReport, Closed> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ctrl
            .send(Command::Flush(tx))
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Stops accepting rows (`track` then returns [`TrackError::Closed`]),
    /// drains everything buffered and in flight, and reports what happened to
    /// it. Other handles see the buffer closed too.
    pub async fn shutdown(&self) -> Result<FlushReport, Closed> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ctrl
            .send(Command::Shutdown(tx))
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        snapshot(&self.inner.shared)
    }

    /// Snapshots of the INSERT latency and size histograms and the sampled
    /// `track` latency (what the `metrics` feature exports).
    pub fn histograms(&self) -> crate::Histograms {
        self.inner.shared.seal.stats.hist.snapshot()
    }

    /// A function that snapshots [`stats`](Self::stats) and
    /// [`histograms`](Self::histograms) without keeping the engine open (when
    /// the last `Buffer` handle drops, the engine still drains and stops):
    /// what an exporter holds.
    pub fn stats_reader(&self) -> impl Fn() -> (Stats, crate::Histograms) + Send + Sync + 'static {
        let shared = self.inner.shared.clone();
        move || (snapshot(&shared), shared.seal.stats.hist.snapshot())
    }

    /// The worst-case RowBinary bytes this buffer can hold (see ARCHITECTURE.md).
    pub fn memory_bound(&self) -> usize {
        self.inner.shared.cfg.memory_bound()
    }

    /// Column names, once the first row has been tracked.
    pub fn columns(&self) -> Option<Vec<&str>> {
        let names = self.inner.shared.columns.get()?;
        Some(names.iter().map(|c| &**c).collect())
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

/// Why `track` handed a row back. The row is inside: nothing was buffered.
pub enum TrackError<T> {
    /// This thread's shard is full because the sink is behind (the queue of
    /// sealed batches is full). Counted in [`Stats::rejected_full`].
    Full(T),
    /// The buffer was shut down.
    Closed(T),
    /// The row could not be encoded as RowBinary.
    Encode {
        /// The row, handed back.
        row: T,
        /// Which field and why.
        error: EncodeError,
    },
}

impl<T> TrackError<T> {
    /// The row that was not buffered.
    pub fn into_inner(self) -> T {
        match self {
            TrackError::Full(row) | TrackError::Closed(row) | TrackError::Encode { row, .. } => row,
        }
    }
}

impl<T> fmt::Debug for TrackError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackError::Full(_) => f.write_str("Full(..)"),
            TrackError::Closed(_) => f.write_str("Closed(..)"),
            TrackError::Encode { error, .. } => f
                .debug_struct("Encode")
                .field("error", error)
                .finish_non_exhaustive(),
        }
    }
}

impl<T> fmt::Display for TrackError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackError::Full(_) => f.write_str("buffer full: the sink is behind; row handed back"),
            TrackError::Closed(_) => f.write_str("buffer closed; row handed back"),
            TrackError::Encode { error, .. } => write!(f, "row not encodable: {error}"),
        }
    }
}

impl<T> std::error::Error for TrackError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrackError::Encode { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why [`Buffer::track_json`] did not buffer a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackJsonError {
    /// This thread's shard is full because the sink is behind.
    #[error("buffer full: the sink is behind")]
    Full,
    /// The buffer was shut down.
    #[error("buffer closed")]
    Closed,
    /// The row is not valid for the schema.
    #[error("row rejected: {0}")]
    Decode(crate::DecodeError),
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

/// The buffer has shut down (or its runtime is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the buffer is shut down")]
pub struct Closed;
