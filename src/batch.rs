//! Sealed batches and the INSERTs built from them.
//!
//! Owns: [`Batch`], the immutable RowBinary bytes a shard sealed, and
//! [`InsertBatch`], what one INSERT carries to a [`Sink`](crate::sink::Sink) (one or
//! more batches, concatenated without copying). Must not: encode, decide when
//! to seal, or talk to a sink.

use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;

/// Column names as the sinks see them: borrowed from a Rust type's field
/// names, or owned when they come from a [`Schema`](crate::Schema).
pub type ColumnNames = Arc<[Cow<'static, str>]>;

/// Rows a shard sealed: RowBinary bytes for `rows` complete rows.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// Engine-wide sequence number, allocated when sealed; flush barriers wait on it.
    pub seq: u64,
    pub rows: u64,
    pub data: Bytes,
    /// The shard's row numbers it holds, so receipts can tell their rows.
    pub span: crate::receipt::Span,
}

/// What one INSERT carries: the column names and the RowBinary chunks of one
/// or more sealed batches, in seal order.
///
/// Chunks concatenate: `chunks().concat()` is a valid RowBinary body for
/// `INSERT INTO t (columns) FORMAT RowBinary`. A sink that is retried gets the
/// same value again, so it resends the same bytes.
#[derive(Debug, Clone)]
pub struct InsertBatch {
    pub(crate) id: u64,
    /// The engine instance that sealed it (random per engine; 0 when built
    /// by hand): with `id`, a token no other INSERT shares.
    pub(crate) origin: u64,
    pub(crate) columns: ColumnNames,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) seqs: Vec<u64>,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Read back from a spill file: the servers the sink said may hold a
    /// copy (`Sink::destination`), so a replay goes back there.
    pub(crate) recorded: Option<Arc<[String]>>,
}

impl InsertBatch {
    /// Builds an INSERT from raw parts, to test a [`Sink`](crate::sink::Sink)
    /// of your own without an engine (feature `test-util`).
    #[cfg(feature = "test-util")]
    pub fn new(id: u64, columns: &[&str], chunks: Vec<Bytes>, rows: u64) -> Self {
        Self::from_parts(id, columns, chunks, rows)
    }

    /// An INSERT read back from disk (spill files, dead letters).
    pub(crate) fn from_parts(id: u64, columns: &[&str], chunks: Vec<Bytes>, rows: u64) -> Self {
        let columns = columns.iter().map(|c| Cow::Owned(c.to_string())).collect();
        let bytes = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            id,
            origin: 0,
            columns,
            chunks,
            seqs: vec![id],
            rows,
            bytes,
            recorded: None,
        }
    }

    /// Sets the engine instance this INSERT came from (see [`dedup_token`](Self::dedup_token)).
    pub(crate) fn with_origin(mut self, origin: u64) -> Self {
        self.origin = origin;
        self
    }

    pub(crate) fn with_id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }

    /// The same INSERT (identity, batches, rows) with its rows as `data`:
    /// the rows reordered, in one buffer.
    pub(crate) fn with_body(&self, data: Bytes) -> Self {
        Self {
            chunks: vec![data],
            ..self.clone()
        }
    }

    /// The same INSERT's identity and counts without its rows: what the
    /// coordinator keeps of an INSERT in flight, so the only copy of the
    /// rows is the delivery's (which [`Sink::prepare`](crate::sink::Sink::prepare) may replace).
    pub(crate) fn without_body(&self) -> Self {
        Self {
            chunks: Vec::new(),
            ..self.clone()
        }
    }

    pub(crate) fn with_recorded(mut self, destination: Option<Vec<String>>) -> Self {
        self.recorded = destination.map(Arc::from);
        self
    }

    /// Where a spill file says an earlier try of this INSERT went (see
    /// [`Sink::destination`](crate::sink::Sink::destination)); `None` for
    /// an INSERT that was never spilled.
    pub fn recorded_destination(&self) -> Option<&[String]> {
        self.recorded.as_deref()
    }

    /// A token that is the same on every attempt of this INSERT, retries and
    /// replays from disk included, and different from every other INSERT:
    /// what `insert_deduplication_token` needs.
    pub fn dedup_token(&self) -> String {
        format!("ch-ingest-{:016x}-{}", self.origin, self.id)
    }

    /// The engine instance this INSERT came from.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Stable id: the sequence number of the first sealed batch it carries.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Column names, in RowBinary order.
    pub fn columns(&self) -> &[Cow<'static, str>] {
        &self.columns
    }
    /// The RowBinary body, as the chunks the shards sealed.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }
    /// Number of RowBinary bytes (uncompressed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The whole body as one buffer (copies unless there is a single chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    pub(crate) fn from_batches(columns: ColumnNames, batches: Vec<Batch>) -> Self {
        let id = batches.first().map_or(0, |b| b.seq);
        let mut rows = 0;
        let mut bytes = 0;
        let mut seqs = Vec::with_capacity(batches.len());
        let mut chunks = Vec::with_capacity(batches.len());
        for b in batches {
            rows += b.rows;
            bytes += b.data.len() as u64;
            seqs.push(b.seq);
            chunks.push(b.data);
        }
        Self {
            id,
            origin: 0,
            columns,
            chunks,
            seqs,
            rows,
            bytes,
            recorded: None,
        }
    }
}
