//! The ledger: what became of every sealed batch, in sequence order, and
//! what callers are told of it ([`FlushReport`], [`FailedInsert`],
//! [`Settled`]).
//!
//! Owns: the watermark below which every batch's fate is known, the ranges
//! completed ahead of it, the sums a flush or shutdown reports, and the
//! failed and spilled INSERTs they and receipts are told about. Must not:
//! start INSERTs or wait; the coordinator's loop feeds it outcomes and asks
//! it which barriers are done.

use crate::receipt::{overlap, Receipt, Span};
use crate::sink::SinkError;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// What a flush (or shutdown) saw happen to the rows that were buffered or in
/// flight when it was called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Rows acknowledged by the sink.
    pub rows: u64,
    /// RowBinary bytes acknowledged.
    pub bytes: u64,
    /// Sealed batches acknowledged.
    pub batches: u64,
    /// Rows whose INSERT failed for good (dead-lettered or dropped).
    pub failed_rows: u64,
    /// Rows whose retries ran out and that were written to the spill
    /// directory; the replayer delivers them later.
    pub spilled_rows: u64,
    /// Exactly which INSERTs failed, with their rows and the error.
    pub failures: Vec<FailedInsert>,
}

impl FlushReport {
    /// True when nothing failed.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What became of the rows of one [`Receipt`] ([`Buffer::settle`]).
///
/// `stored_rows + spilled_rows + failed_rows == rows`.
///
/// [`Buffer::settle`]: crate::Buffer::settle
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// Rows the receipt noted.
    pub rows: u64,
    /// Of those, rows the sink acknowledged.
    pub stored_rows: u64,
    /// Rows whose retries ran out and that were written to the spill
    /// directory; the replayer delivers them later.
    pub spilled_rows: u64,
    /// Rows whose INSERT failed for good (dead-lettered or dropped). Also
    /// rows whose fate the engine no longer remembers: it keeps the last
    /// 4096 failed and 4096 spilled INSERTs, and a receipt settled after
    /// more than that many failed counts its unaccounted rows here, with no
    /// entry in `failures`.
    pub failed_rows: u64,
    /// The failed INSERTs that carried some of these rows (they may have
    /// carried other rows too).
    pub failures: Vec<FailedInsert>,
}

impl Settled {
    /// True when every row was acknowledged or durably spilled.
    pub fn is_stored(&self) -> bool {
        self.failed_rows == 0
    }
}

/// One failed INSERT in a [`FlushReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedInsert {
    /// The INSERT's id ([`InsertBatch::id`](crate::sink::InsertBatch::id)).
    pub insert_id: u64,
    /// Sequence numbers of the sealed batches it carried.
    pub batches: Vec<u64>,
    /// Rows it carried.
    pub rows: u64,
    /// Why it failed (the last attempt's error).
    pub error: SinkError,
    /// Attempts made, retries included.
    pub attempts: u32,
    /// Where its rows were kept, when a dead-letter directory is set.
    pub dead_letter: Option<std::path::PathBuf>,
    /// The shards' row numbers it carried, one span per batch (receipts).
    pub(crate) spans: Vec<Span>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Fate {
    #[default]
    Acked,
    Spilled,
    Failed,
}

#[derive(Clone, Copy, Default)]
pub(crate) struct PartOutcome {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) fate: Fate,
}

/// Running sums over every sealed batch below some sequence number.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sums {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) batches: u64,
    pub(crate) failed_rows: u64,
    pub(crate) spilled_rows: u64,
}

impl Sums {
    pub(crate) fn of(o: PartOutcome) -> Self {
        let mut s = Sums::default();
        match o.fate {
            Fate::Failed => s.failed_rows = o.rows,
            Fate::Spilled => s.spilled_rows = o.rows,
            Fate::Acked => {
                s.rows = o.rows;
                s.bytes = o.bytes;
                s.batches = 1;
            }
        }
        s
    }

    pub(crate) fn merge(&mut self, o: Sums) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.batches += o.batches;
        self.failed_rows += o.failed_rows;
        self.spilled_rows += o.spilled_rows;
    }
}

/// Completed batches `start..end` above the watermark, their outcomes summed.
#[derive(Clone, Copy)]
pub(crate) struct Done {
    pub(crate) end: u64,
    pub(crate) sums: Sums,
}

pub(crate) struct Waiter {
    pub(crate) start: u64,
    /// Shards whose rows at call time are not sealed yet (a parked batch was in
    /// the way). The barrier is fixed once they all sealed.
    pub(crate) unsealed: Vec<usize>,
    pub(crate) target: Option<u64>,
    pub(crate) reply: Reply,
}

/// Who waits at a barrier, and what they are told.
pub(crate) enum Reply {
    /// `flush` / `shutdown`: everything between the last barrier and this one.
    Flush(oneshot::Sender<FlushReport>),
    /// `settle`: the receipt's own rows.
    Settle(Receipt, oneshot::Sender<Settled>),
}

/// An INSERT whose rows went to the spill directory, for receipts.
struct Spilled {
    batches: Vec<u64>,
    spans: Vec<Span>,
}

/// Failed and spilled INSERTs kept for flush reports and receipts; beyond
/// this the oldest are forgotten (they stay counted in `Stats`), so an
/// engine that fails for days does not grow.
const MAX_REMEMBERED_FAILURES: usize = 4096;

/// Which sealed batches are done, and the barriers waiting on them.
///
/// A flush reports every batch between the previous flush's barrier and its
/// own, so failures that happened before the call are reported too. Memory is
/// bounded by the batches not done yet, not by how long the oldest of them
/// takes: completions above the watermark are kept as ranges of consecutive
/// sequence numbers with summed outcomes (one INSERT retrying for minutes
/// while a million batches complete after it is two ranges, not a million
/// entries), split only at barrier points; sums are kept only at barrier
/// points.
#[derive(Default)]
pub(crate) struct Ledger {
    /// Every batch with a smaller sequence number is done.
    pub(crate) watermark: u64,
    /// Sums over all batches below `watermark`.
    pub(crate) sums: Sums,
    /// Completed batches above the watermark (out-of-order completions), as
    /// disjoint ranges keyed by their first sequence number.
    pub(crate) ahead: BTreeMap<u64, Done>,
    /// `sums` as it was when the watermark passed each barrier point.
    pub(crate) marks: BTreeMap<u64, Sums>,
    /// Barrier points the watermark has not reached yet.
    pub(crate) pending_marks: Vec<u64>,
    /// Where the next flush's report starts: the last barrier fixed.
    pub(crate) last_target: u64,
    /// The failed and spilled INSERTs, for reports and receipts.
    pub(crate) fates: Fates,
    pub(crate) waiters: Vec<Waiter>,
}

/// The failed and spilled INSERTs an engine remembers, with the row spans
/// they carried: what a receipt is settled against. Outlives the
/// coordinator (it is left in `Shared` when the engine stops), so a receipt
/// settled after a shutdown is still told its rows' fate.
#[derive(Default)]
pub(crate) struct Fates {
    failures: std::collections::VecDeque<FailedInsert>,
    spills: std::collections::VecDeque<Spilled>,
    /// One past the highest batch a forgotten failure or spill carried: a
    /// receipt made before that cannot be told its rows' fate for sure.
    forgotten_through: u64,
}

impl Fates {
    pub(crate) fn record_failure(&mut self, f: FailedInsert) {
        if self.failures.len() == MAX_REMEMBERED_FAILURES {
            if let Some(old) = self.failures.pop_front() {
                self.forget(&old.batches);
            }
        }
        self.failures.push_back(f);
    }

    pub(crate) fn record_spill(&mut self, batches: Vec<u64>, spans: Vec<Span>) {
        if self.spills.len() == MAX_REMEMBERED_FAILURES {
            if let Some(old) = self.spills.pop_front() {
                self.forget(&old.batches);
            }
        }
        self.spills.push_back(Spilled { batches, spans });
    }

    fn forget(&mut self, batches: &[u64]) {
        let last = batches.iter().max().map_or(0, |b| b + 1);
        self.forgotten_through = self.forgotten_through.max(last);
    }

    /// What became of a receipt's rows; every batch holding them is done.
    pub(crate) fn settled(&self, receipt: &Receipt) -> Settled {
        let mut s = Settled {
            rows: receipt.rows,
            ..Settled::default()
        };
        // Batches numbered below `from` were sealed before the receipt
        // was made: they cannot hold its rows.
        let recent = |batches: &[u64]| batches.iter().any(|&b| b >= receipt.from);
        for f in self.failures.iter().filter(|f| recent(&f.batches)) {
            let n = overlap(&receipt.spans, &f.spans);
            if n > 0 {
                s.failed_rows += n;
                s.failures.push(f.clone());
            }
        }
        for spill in self.spills.iter().filter(|s| recent(&s.batches)) {
            s.spilled_rows += overlap(&receipt.spans, &spill.spans);
        }
        let known = s.failed_rows + s.spilled_rows;
        if self.forgotten_through > receipt.from {
            // Some of its rows may have been in an INSERT no longer
            // remembered: only what is known to be spilled is not failed.
            s.failed_rows = receipt.rows - s.spilled_rows;
        } else {
            s.stored_rows = receipt.rows.saturating_sub(known);
        }
        s
    }
}

impl Ledger {
    pub(crate) fn new() -> Self {
        let mut l = Self::default();
        l.marks.insert(0, Sums::default());
        l
    }

    pub(crate) fn record(&mut self, seq: u64, outcome: PartOutcome) {
        let mut start = seq;
        let mut done = Done {
            end: seq + 1,
            sums: Sums::of(outcome),
        };
        // Join the range ending here and the one starting right after, but
        // never across a barrier point: its sums must be exact there.
        if !self.pending_marks.contains(&seq) {
            if let Some((&s, before)) = self.ahead.range(..seq).next_back() {
                if before.end == seq {
                    let before = *before;
                    self.ahead.remove(&s);
                    start = s;
                    let mut sums = before.sums;
                    sums.merge(done.sums);
                    done.sums = sums;
                }
            }
        }
        if !self.pending_marks.contains(&done.end) {
            if let Some(after) = self.ahead.remove(&done.end) {
                done.end = after.end;
                done.sums.merge(after.sums);
            }
        }
        self.ahead.insert(start, done);
        while let Some(d) = self.ahead.remove(&self.watermark) {
            self.sums.merge(d.sums);
            self.watermark = d.end;
            self.mark_if_pending();
        }
    }

    pub(crate) fn mark_if_pending(&mut self) {
        let w = self.watermark;
        if let Some(i) = self.pending_marks.iter().position(|&m| m == w) {
            self.pending_marks.swap_remove(i);
            self.marks.insert(w, self.sums);
        }
    }

    pub(crate) fn fix_target(&mut self, target: u64) {
        self.last_target = self.last_target.max(target);
        if target <= self.watermark {
            // Only reachable when target == watermark (targets are read after
            // sealing, so they are never below batches still pending).
            self.marks.entry(target).or_insert(self.sums);
        } else if !self.pending_marks.contains(&target) {
            self.pending_marks.push(target);
        }
    }

    pub(crate) fn resolve(&mut self) {
        let watermark = self.watermark;
        let mut i = 0;
        while i < self.waiters.len() {
            match self.waiters[i].target {
                Some(t) if t <= watermark => {
                    let w = self.waiters.swap_remove(i);
                    // The caller may have stopped waiting; that is fine.
                    match w.reply {
                        Reply::Flush(tx) => {
                            let _ = tx.send(self.report(w.start, t));
                        }
                        Reply::Settle(receipt, tx) => {
                            let _ = tx.send(self.fates.settled(&receipt));
                        }
                    }
                }
                _ => i += 1,
            }
        }
        let floor = self
            .waiters
            .iter()
            .map(|w| w.start)
            .min()
            .unwrap_or(self.last_target)
            .min(self.last_target);
        self.marks = self.marks.split_off(&floor);
        // Failures and spills stay (up to MAX_REMEMBERED_FAILURES) even below
        // every barrier: a receipt may be settled after its rows' INSERT
        // failed and a flush passed it.
    }

    pub(crate) fn report(&self, start: u64, end: u64) -> FlushReport {
        let zero = Sums::default();
        let a = self.marks.get(&start).copied().unwrap_or(zero);
        let b = self.marks.get(&end).copied().unwrap_or(self.sums);
        FlushReport {
            rows: b.rows - a.rows,
            bytes: b.bytes - a.bytes,
            batches: b.batches - a.batches,
            failed_rows: b.failed_rows - a.failed_rows,
            spilled_rows: b.spilled_rows - a.spilled_rows,
            failures: self
                .fates
                .failures
                .iter()
                // An INSERT may carry batches on both sides of a barrier
                // (a parked batch sealed earlier rides with later ones):
                // it belongs to every report that counts one of them.
                .filter(|f| f.batches.iter().any(|b| (start..end).contains(b)))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn acked(rows: u64) -> PartOutcome {
        PartOutcome {
            rows,
            bytes: rows * 10,
            fate: Fate::Acked,
        }
    }

    #[test]
    pub(crate) fn completions_behind_one_slow_insert_stay_a_few_ranges() {
        let mut l = Ledger::new();
        // Batch 0 is the INSERT that retries for minutes; a million others
        // complete after it, in two interleaved streams.
        for seq in (1..1_000_000).step_by(2).chain((2..1_000_000).step_by(2)) {
            l.record(seq, acked(1));
            assert!(l.ahead.len() <= 500_001);
        }
        assert_eq!(l.ahead.len(), 1, "one range of 999 999 batches");
        assert_eq!(l.watermark, 0);
        l.record(0, acked(1));
        assert_eq!(
            (l.watermark, l.sums.rows, l.sums.batches),
            (1_000_000, 1_000_000, 1_000_000)
        );
        assert!(l.ahead.is_empty());
    }

    #[test]
    pub(crate) fn barrier_sums_are_exact_whatever_the_completion_order() {
        // Completion orders from a fixed xorshift, barriers between.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut l = Ledger::new();
            let n = 200u64;
            let target = 1 + next() % (n - 1);
            l.fix_target(target);
            let mut order: Vec<u64> = (0..n).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            for &seq in &order {
                l.record(seq, acked(seq + 1));
            }
            let report = l.report(0, target);
            let want: u64 = (1..=target).sum();
            assert_eq!((report.rows, report.batches), (want, target));
            assert_eq!(l.sums.rows, (1..=n).sum::<u64>());
        }
    }

    #[test]
    pub(crate) fn a_failed_insert_with_a_batch_before_the_barrier_is_in_that_report() {
        let mut l = Ledger::new();
        l.fix_target(10);
        // INSERT 12 carried batch 7, parked earlier and sealed before the
        // barrier, with batch 12 sealed after it.
        l.fates.record_failure(FailedInsert {
            insert_id: 12,
            batches: vec![12, 7],
            rows: 2,
            error: SinkError::Other("no".into()),
            attempts: 1,
            dead_letter: None,
            spans: Vec::new(),
        });
        for seq in 0..13 {
            let fate = if seq == 7 || seq == 12 {
                Fate::Failed
            } else {
                Fate::Acked
            };
            l.record(
                seq,
                PartOutcome {
                    rows: 1,
                    bytes: 1,
                    fate,
                },
            );
        }
        let report = l.report(0, 10);
        assert_eq!(report.failed_rows, 1);
        assert_eq!(
            report.failures.len(),
            1,
            "failed_rows counted it, so must failures"
        );
        assert!(!report.is_complete());
    }
}
