//! Per-caller row identity: a [`Receipt`] names the rows one caller
//! tracked; the ledger's [`Settled`](crate::Settled) says what became of
//! exactly those rows.
//!
//! Owns: row identity (a shard and its running row number, [`Span`]), the
//! receipt's record of spans, and counting how many of its rows an INSERT
//! carried. Must not: seal, wait, touch the shards, or know of INSERTs
//! (the coordinator's ledger decides when a receipt is settled and with
//! which INSERTs).
//!
//! Why row numbers and not batch numbers: a row's batch gets its sequence
//! number only when its shard seals, after `track` returned. Each shard
//! numbers its rows as it takes them, and each sealed batch is one
//! contiguous run of those numbers, so "which of my rows did this INSERT
//! carry" is an intersection of ranges, known at any time.

/// A contiguous run of one shard's row numbers: the rows of one sealed batch,
/// or rows a receipt noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub shard: u32,
    pub start: u64,
    pub end: u64,
}

impl Span {
    fn overlap(&self, other: &Span) -> u64 {
        if self.shard != other.shard {
            return 0;
        }
        self.end
            .min(other.end)
            .saturating_sub(self.start.max(other.start))
    }
}

/// Rows in `spans` that `carried` (an INSERT's batches) also holds.
pub(crate) fn overlap(spans: &[Span], carried: &[Span]) -> u64 {
    spans
        .iter()
        .map(|s| carried.iter().map(|c| s.overlap(c)).sum::<u64>())
        .sum()
}

/// The rows one caller tracked through an engine, so that it can wait for
/// and learn the fate of exactly those rows ([`Buffer::settle`]), not of
/// everything the engine buffered.
///
/// Get one from [`Buffer::receipt`], pass it to the `_noted` verbs
/// ([`Buffer::track_noted`], [`Buffer::track_json_noted`],
/// [`Buffer::track_rowbinary_noted`]), then settle it. This is how a server
/// that batches many callers' rows into one INSERT answers each caller for
/// its own rows: one caller's rows failing does not fail the others, and a
/// caller whose rows were stored is told so even if an INSERT carrying other
/// rows failed.
///
/// ```
/// use ch_ingest::{Buffer, PostEvent, sink::MemorySink};
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let buffer: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new())?;
/// buffer.track(PostEvent::new("view", 1, 1_700_000_000))?; // someone else's row
///
/// let mut receipt = buffer.receipt();
/// buffer.track_noted(PostEvent::new("like", 2, 1_700_000_000), &mut receipt)?;
/// buffer.track_noted(PostEvent::new("like", 3, 1_700_000_000), &mut receipt)?;
/// let settled = buffer.settle(receipt).await?;
/// assert_eq!((settled.rows, settled.stored_rows), (2, 2));
/// assert!(settled.is_stored());
/// # buffer.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// [`Buffer::settle`]: crate::Buffer::settle
/// [`Buffer::receipt`]: crate::Buffer::receipt
/// [`Buffer::track_noted`]: crate::Buffer::track_noted
/// [`Buffer::track_json_noted`]: crate::Buffer::track_json_noted
/// [`Buffer::track_rowbinary_noted`]: crate::Buffer::track_rowbinary_noted
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The engine instance it belongs to; settling it on another is refused.
    pub(crate) instance: u64,
    /// The next batch sequence number when the receipt was made: every
    /// batch holding its rows has this number or a later one.
    pub(crate) from: u64,
    pub(crate) spans: Vec<Span>,
    pub(crate) rows: u64,
}

impl Receipt {
    pub(crate) fn new(instance: u64, from: u64) -> Self {
        Self {
            instance,
            from,
            spans: Vec::new(),
            rows: 0,
        }
    }

    /// Rows noted so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Notes row number `row` of shard `shard`. A caller's rows on one
    /// shard are mostly consecutive, so this usually extends a span. A
    /// shard numbers rows upwards, so only its last span can be extended.
    pub(crate) fn note(&mut self, shard: usize, row: u64) {
        let shard = shard as u32;
        self.rows += 1;
        let last = self.spans.iter_mut().rev().find(|s| s.shard == shard);
        if let Some(s) = last.filter(|s| s.end == row) {
            s.end += 1;
            return;
        }
        self.spans.push(Span {
            shard,
            start: row,
            end: row + 1,
        });
    }

    /// For each shard holding its rows, the row number after its last one.
    pub(crate) fn ends(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut shards: Vec<u32> = self.spans.iter().map(|s| s.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        shards.into_iter().map(|shard| {
            let end = self
                .spans
                .iter()
                .filter(|s| s.shard == shard)
                .map(|s| s.end)
                .max()
                .unwrap_or(0);
            (shard as usize, end)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_rows_make_one_span_per_shard_and_overlaps_count_rows() {
        let mut r = Receipt::new(1, 0);
        for row in 10..20 {
            r.note(0, row);
        }
        r.note(1, 5);
        r.note(0, 20);
        r.note(0, 30);
        assert_eq!(r.rows(), 13);
        assert_eq!(
            r.spans,
            vec![
                Span {
                    shard: 0,
                    start: 10,
                    end: 21
                },
                Span {
                    shard: 1,
                    start: 5,
                    end: 6
                },
                Span {
                    shard: 0,
                    start: 30,
                    end: 31
                },
            ]
        );
        assert_eq!(r.ends().collect::<Vec<_>>(), vec![(0, 31), (1, 6)]);
        // A batch of shard 0 holding rows 15..35 carried 6 + 1 of them; one
        // of shard 1 holding 0..5 carried none.
        let carried = [
            Span {
                shard: 0,
                start: 15,
                end: 35,
            },
            Span {
                shard: 1,
                start: 0,
                end: 5,
            },
        ];
        assert_eq!(overlap(&r.spans, &carried), 7);
    }
}
