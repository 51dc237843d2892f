//! The public handle: [`Buffer`] and its verbs (`track` and its family,
//! `flush`, `shutdown`, `stats`); the configuration and the builder are in
//! [`config`].
//!
//! Owns: the hot path (`track`: pick this thread's shard, encode under its
//! lock, seal at a threshold), the waiting verbs, and the flush / shutdown /
//! stats calls. Must not: await, block on a channel or do I/O inside `track`.

mod config;

use crate::coordinator::Command;
use crate::engine::{snapshot, Shared, WhenFull};
use crate::receipt::Receipt;
use crate::rowbinary::{encode_row, encode_row_as, EncodeError};
use crate::shard::{shard_for_this_thread, Shard};
use crate::stats::{Counters, Stats};
use crate::FlushReport;
use crate::Settled;
pub use config::{BuildError, Builder};
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) ctrl: mpsc::UnboundedSender<Command>,
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

impl Rejected<crate::json::DecodeError> {
    /// What a JSON or RowBinary `track` tells its caller.
    fn into_json_error(self) -> TrackJsonError {
        match self {
            Rejected::Full => TrackJsonError::Full,
            Rejected::Closed => TrackJsonError::Closed,
            Rejected::Invalid(e) => TrackJsonError::Decode(e),
        }
    }
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

    /// [`track`](Buffer::track), noting the row in `receipt` so that
    /// [`settle`](Buffer::settle) can say what became of it. A row the
    /// [`WhenFull::DropNewest`] policy drops is not noted.
    #[inline]
    pub fn track_noted(&self, row: T, receipt: &mut Receipt) -> Result<(), TrackError<T>> {
        self.track_noting::<true>(row, Some(receipt))
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
        self.track_noting::<POLICY>(row, None)
    }

    #[inline(always)]
    fn track_noting<const POLICY: bool>(
        &self,
        row: T,
        receipt: Option<&mut Receipt>,
    ) -> Result<(), TrackError<T>> {
        let result = self.append(|st| self.encode(&row, st));
        match result {
            Ok(at) => {
                note(receipt, at);
                Ok(())
            }
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
                    Ok(_) => accepted += 1,
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
        self.track_json_noting(json, None)
    }

    /// [`track_json`](Buffer::track_json), noting the row in `receipt` (see
    /// [`settle`](Buffer::settle)).
    #[inline]
    pub fn track_json_noted(
        &self,
        json: &[u8],
        receipt: &mut Receipt,
    ) -> Result<(), TrackJsonError> {
        self.track_json_noting(json, Some(receipt))
    }

    #[inline(always)]
    fn track_json_noting(
        &self,
        json: &[u8],
        receipt: Option<&mut Receipt>,
    ) -> Result<(), TrackJsonError> {
        let at = self
            .append(|st| match &mut st.transcoder {
                Some(t) => t.transcode(json, &mut st.buf),
                None => Err(not_json()),
            })
            .map_err(Rejected::into_json_error)?;
        note(receipt, at);
        Ok(())
    }

    /// Takes one row already in RowBinary, in the buffer's [`Schema`](crate::Schema)'s
    /// column order (what a ClickHouse client sends with `FORMAT
    /// RowBinary`), with the same guarantees as [`Buffer::track_json`]. The
    /// bytes must be exactly one row: they are walked by the schema first
    /// (lengths, Nullable markers, Enum values), and a row that does not
    /// walk is refused with the column and the offset, nothing of it kept.
    ///
    /// ```
    /// use ch_ingest::{Buffer, Schema, sink::MemorySink};
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let schema = Schema::parse("id UInt8, name String")?;
    /// let buffer = Buffer::builder().build_json(schema, MemorySink::new())?;
    /// buffer.track_rowbinary(&[7, 2, b'h', b'i'])?;
    /// let err = buffer.track_rowbinary(&[7, 9, b'h']).unwrap_err();
    /// assert!(err.to_string().contains("`name`"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[inline]
    pub fn track_rowbinary(&self, row: &[u8]) -> Result<(), TrackJsonError> {
        self.track_rowbinary_noting(row, None)
    }

    /// [`track_rowbinary`](Buffer::track_rowbinary), noting the row in
    /// `receipt` (see [`settle`](Buffer::settle)).
    #[inline]
    pub fn track_rowbinary_noted(
        &self,
        row: &[u8],
        receipt: &mut Receipt,
    ) -> Result<(), TrackJsonError> {
        self.track_rowbinary_noting(row, Some(receipt))
    }

    fn track_rowbinary_noting(
        &self,
        row: &[u8],
        receipt: Option<&mut Receipt>,
    ) -> Result<(), TrackJsonError> {
        let result = self.append(|st| {
            let Some(t) = &st.transcoder else {
                return Err(not_json());
            };
            match crate::rowbinary::decode::row_len(t.schema(), row) {
                Ok(n) if n == row.len() => {
                    st.buf.extend_from_slice(row);
                    Ok(())
                }
                Ok(n) => Err(crate::json::DecodeError {
                    field: None,
                    kind: crate::json::DecodeErrorKind::Invalid,
                    reason: format!("{} bytes after the row's last column", row.len() - n),
                    offset: Some(n),
                }),
                Err(e) => Err(crate::json::DecodeError {
                    field: e.column,
                    kind: crate::json::DecodeErrorKind::Invalid,
                    reason: e.reason,
                    offset: Some(e.offset),
                }),
            }
        });
        let at = result.map_err(Rejected::into_json_error)?;
        note(receipt, at);
        Ok(())
    }

    /// Tracks a whole request of RowBinary rows (`rows` back to back, row
    /// `i` ending at `ends[i]`) all at once or not at all: every row is
    /// checked against the schema before any is taken, and none of the
    /// checks that refuse a row ([`TrackJsonError::Full`],
    /// [`Closed`](TrackJsonError::Closed), a row that does not walk) can
    /// happen after the first row went in. So a client told "error" never
    /// has some of its rows stored.
    ///
    /// The rows go into this thread's shard under one lock, sealing at its
    /// thresholds as usual; while a sealed batch waits for room in the
    /// channel, the rest of the request stays in the open buffer past
    /// `max_bytes`. A shard therefore holds at most `max_bytes` plus one
    /// request beyond its usual bound, which the caller bounds (the front
    /// door's `max_decoded_bytes`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ch_ingest::{sink::MemorySink, Buffer, Schema, TrackJsonError};
    /// let schema = Schema::parse("id UInt8, name String")?;
    /// let sink = MemorySink::new();
    /// let buffer = Buffer::builder().build_json(schema, sink.clone())?;
    /// let rows = [7, 2, b'h', b'i', 8, 0];
    /// buffer.track_rowbinary_all(&rows, &[4, 6], None)?;
    /// // The second row is cut short: neither row is taken.
    /// let err = buffer.track_rowbinary_all(&[9, 0, 10, 3], &[2, 4], None).unwrap_err();
    /// assert!(matches!(err, TrackJsonError::Decode(_)));
    /// assert_eq!(buffer.shutdown().await?.rows, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn track_rowbinary_all(
        &self,
        rows: &[u8],
        ends: &[usize],
        mut receipt: Option<&mut Receipt>,
    ) -> Result<(), TrackJsonError> {
        let shared = &*self.inner.shared;
        let index = shard_for_this_thread(shared.shards.len());
        let shard = &shared.shards[index];
        let mut st = shard.lock();
        self.admit(shard, &mut st)
            .map_err(Rejected::<crate::json::DecodeError>::into_json_error)?;
        let Some(t) = &st.transcoder else {
            return Err(TrackJsonError::Decode(not_json()));
        };
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let row = rows.get(start..end).unwrap_or_default();
            let walked = crate::rowbinary::decode::row_len(t.schema(), row);
            if end < start || end > rows.len() || walked.as_ref().ok() != Some(&row.len()) {
                Shard::bump(&shard.encode_errors, 1);
                let (field, reason, offset) = match walked {
                    Err(e) => (e.column, e.reason, e.offset),
                    Ok(n) => (
                        None,
                        format!("{} bytes after its last column", row.len() - n),
                        n,
                    ),
                };
                return Err(TrackJsonError::Decode(crate::json::DecodeError {
                    field,
                    kind: crate::json::DecodeErrorKind::Invalid,
                    reason: format!("row {}: {reason}", i + 1),
                    offset: Some(offset),
                }));
            }
            start = end;
        }
        let mut start = 0;
        for &end in ends {
            st.buf.extend_from_slice(&rows[start..end]);
            // A seal that finds a batch parked leaves the buffer open past
            // its bound: the request is taken whole either way.
            let row = self.appended(shard, &mut st, end - start);
            note(receipt.as_deref_mut(), (index, row));
            start = end;
        }
        Ok(())
    }

    /// Tracks every line of an NDJSON body. Lines that do not decode are
    /// reported and skipped; good lines are never lost because of bad ones.
    /// If the buffer fills up or closes, the rest of the body is not taken
    /// and `stopped` says from which line.
    pub fn track_ndjson(&self, body: &[u8]) -> NdjsonTracked {
        let mut out = NdjsonTracked::default();
        let mut cursor = crate::json::NdjsonCursor::new(body);
        while let Some((line, result)) = self.track_line(&mut cursor) {
            match result {
                Ok(()) => out.report.accepted += 1,
                Err(TrackJsonError::Decode(error)) => out
                    .report
                    .rejected
                    .push(crate::json::RejectedLine { line, error }),
                Err(other) => {
                    out.stopped = Some((line, other));
                    break;
                }
            }
        }
        out
    }

    /// Tracks the cursor's next line (see [`NdjsonCursor`](crate::json::NdjsonCursor)),
    /// reading it straight from the body into this thread's shard, and
    /// returns its number and outcome; `None` at the end of the body. When
    /// the buffer is full or closed the cursor stays on that line, so the
    /// caller can offer it again, or to another buffer.
    ///
    /// ```
    /// use ch_ingest::{Buffer, Schema, sink::MemorySink};
    /// use ch_ingest::json::NdjsonCursor;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let buffer = Buffer::builder().build_json(Schema::parse("id UInt64")?, MemorySink::new())?;
    /// let mut cursor = NdjsonCursor::new(b"{\"id\": 1}\n{\"id\": -1}\n");
    /// assert!(buffer.track_line(&mut cursor).is_some_and(|(line, r)| line == 1 && r.is_ok()));
    /// assert!(buffer.track_line(&mut cursor).is_some_and(|(line, r)| line == 2 && r.is_err()));
    /// assert!(buffer.track_line(&mut cursor).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn track_line(
        &self,
        cursor: &mut crate::json::NdjsonCursor<'_>,
    ) -> Option<(usize, Result<(), TrackJsonError>)> {
        let line = cursor.next_line()?;
        let result = self.append(|st| match &mut st.transcoder {
            Some(t) => t
                .transcode_line(cursor, &mut st.buf)
                .map_or(Ok(()), |row| row.result),
            None => Err(not_json()),
        });
        Some((line, result.map(drop).map_err(Rejected::into_json_error)))
    }
}

/// Notes where a row went in the caller's receipt, if it keeps one.
#[inline(always)]
fn note(receipt: Option<&mut Receipt>, (shard, row): (usize, u64)) {
    if let Some(r) = receipt {
        r.note(shard, row);
    }
}

/// The error of a JSON `track` on a buffer of typed rows.
fn not_json() -> crate::json::DecodeError {
    crate::json::DecodeError {
        field: None,
        kind: crate::json::DecodeErrorKind::Invalid,
        reason: "this buffer was not built with build_json".into(),
        offset: None,
    }
}

/// What [`Buffer::track_ndjson`] did with a body.
#[derive(Debug, Default)]
pub struct NdjsonTracked {
    /// Lines buffered, and lines rejected with their errors.
    pub report: crate::json::NdjsonReport,
    /// Set when the buffer was full or closed: the 1-based line from which
    /// nothing was taken, and why.
    pub stopped: Option<(usize, TrackJsonError)>,
}

impl<T> Buffer<T> {
    /// The hot path shared by every `track` flavour: this thread's shard,
    /// its lock, [`append_locked`](Self::append_locked), and the sampled
    /// latency.
    #[inline]
    /// One row into this thread's shard ([`append_locked`](Self::append_locked)).
    /// Where it went: the shard and the row's number in it.
    fn append<E>(
        &self,
        encode: impl FnOnce(&mut crate::shard::ShardState) -> Result<(), E>,
    ) -> Result<(usize, u64), Rejected<E>> {
        let shared = &*self.inner.shared;
        let index = shard_for_this_thread(shared.shards.len());
        let shard = &shared.shards[index];
        // Sampled latency: read before the lock so lock waits count too.
        let timed = (shard.tracked_rows.load(Relaxed))
            .is_multiple_of(crate::histogram::TRACK_SAMPLE)
            .then(std::time::Instant::now);
        let mut st = shard.lock();
        let row = self.append_locked(shard, &mut st, encode)?;
        drop(st);
        if let Some(t0) = timed {
            let seconds = t0.elapsed().as_secs_f64();
            shared.seal.stats.hist.track_seconds.record(seconds);
        }
        Ok((index, row))
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
    ) -> Result<u64, Rejected<E>> {
        self.admit(shard, st)?;
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
        Ok(self.appended(shard, st, st.buf.len() - before))
    }

    /// Whether a locked shard takes a row now: the buffer is open, and the
    /// shard below its thresholds (sealing first when it is not, which
    /// only fails while a parked batch waits for room).
    #[inline(always)]
    fn admit<E>(
        &self,
        shard: &Shard,
        st: &mut crate::shard::ShardState,
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
        Ok(())
    }

    /// Counts a row of `bytes` just appended to a locked shard, sealing at
    /// a threshold (a seal that finds a parked batch leaves the buffer
    /// open); the row's number in the shard.
    #[inline(always)]
    fn appended(&self, shard: &Shard, st: &mut crate::shard::ShardState, bytes: usize) -> u64 {
        let shared = &*self.inner.shared;
        st.rows += 1;
        let row = shard.tracked_rows.load(Relaxed);
        Shard::bump(&shard.tracked_rows, 1);
        Shard::bump(&shard.tracked_bytes, bytes as u64);
        if st.rows >= shared.cfg.max_rows || st.buf.len() >= shared.cfg.max_bytes {
            shard.seal(st, &shared.seal);
        }
        row
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

    /// A new, empty [`Receipt`] for this engine: note rows in it with the
    /// `_noted` verbs, then [`settle`](Buffer::settle) it.
    pub fn receipt(&self) -> Receipt {
        let shared = &self.inner.shared;
        Receipt::new(shared.instance, shared.seal.next_seq.load(Relaxed))
    }

    /// Seals the shards that still hold rows of `receipt` and resolves once
    /// every one of its rows has been acknowledged, spilled or has failed;
    /// [`Settled`] counts each and lists the failed INSERTs that carried
    /// them. It waits as a flush does (for every batch sealed before its
    /// barrier, also other callers' slower ones) but seals no shard that
    /// holds none of its rows, reports only its own rows, and does not
    /// move where the next [`flush`](Buffer::flush) report starts.
    ///
    /// The request is sent when this is called, not when the future is
    /// first polled, so several receipts settled together are sealed
    /// together, and their rows coalesce into as few INSERTs as
    /// `max_insert_rows` allows. A receipt settled after the engine shut
    /// down is answered from the failed and spilled INSERTs it remembered
    /// (its rows were all done by then); a receipt of another engine settles
    /// as [`Closed`]. See [`Receipt`] for an example.
    pub fn settle(
        &self,
        receipt: Receipt,
    ) -> impl std::future::Future<Output = Result<Settled, Closed>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let shared = &self.inner.shared;
        let now = if receipt.instance != shared.instance {
            Some(Err(Closed))
        } else {
            match self.inner.ctrl.send(Command::Settle(receipt, tx)) {
                Ok(()) => None,
                // The coordinator closes its channel only after leaving
                // what it remembered in `fates`.
                Err(mpsc::error::SendError(cmd)) => Some(match (cmd, shared.fates.get()) {
                    (Command::Settle(receipt, _), Some(fates)) => Ok(fates.settled(&receipt)),
                    _ => Err(Closed),
                }),
            }
        };
        async move {
            match now {
                Some(answer) => answer,
                None => rx.await.map_err(|_| Closed),
            }
        }
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
    Decode(crate::json::DecodeError),
}

/// The buffer has shut down (or its runtime is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the buffer is shut down")]
pub struct Closed;
