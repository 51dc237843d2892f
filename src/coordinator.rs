//! The coordinator: one task per buffer that turns sealed batches into INSERTs.
//!
//! Owns: the flush tick, flush and shutdown barriers, coalescing queued
//! batches into INSERTs, the in-flight INSERTs (at most `max_inflight`,
//! overlapping), and the fate of each batch (acknowledged or failed). Must
//! not: encode rows or block producers; it only ever `try_send`s into the
//! channel it drains, and it talks to shards through their short locks.
//!
//! Each INSERT runs as a [`Delivery`] task: attempts with backoff, then, if it
//! still failed, the spill directory (retryable errors) or the dead-letter
//! directory (permanent ones), else it is dropped and counted.

use crate::batch::{Batch, InsertBatch};
use crate::shard::{SealTarget, Shard};
use crate::sink::{Sink, SinkError};
use crate::stats::Counters;
use crate::ticks::Ticks;
use crate::Config;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

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
}

impl Shared {
    /// Seals shard `i`; true when its open buffer is empty afterwards.
    fn seal_shard(&self, i: usize) -> bool {
        let shard = &self.shards[i];
        let mut st = shard.lock();
        shard.seal(&mut st, &self.seal);
        st.rows == 0
    }

    /// Shards that still have unsealed rows after an attempt to seal them all.
    fn seal_all(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| !self.seal_shard(i))
            .collect()
    }

    fn unpark_all(&self) {
        for shard in self.shards.iter() {
            let mut st = shard.lock();
            if st.parked.is_some() {
                Shard::unpark(&mut st, &self.seal);
            }
        }
    }
}

pub(crate) enum Command {
    Flush(oneshot::Sender<FlushReport>),
    Shutdown(oneshot::Sender<FlushReport>),
}

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

/// One failed INSERT in a [`FlushReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedInsert {
    /// The INSERT's id ([`InsertBatch::id`]).
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
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Fate {
    #[default]
    Acked,
    Spilled,
    Failed,
}

#[derive(Clone, Copy, Default)]
struct PartOutcome {
    rows: u64,
    bytes: u64,
    fate: Fate,
}

/// Running sums over every sealed batch below some sequence number.
#[derive(Clone, Copy, Default)]
struct Sums {
    rows: u64,
    bytes: u64,
    batches: u64,
    failed_rows: u64,
    spilled_rows: u64,
}

impl Sums {
    fn of(o: PartOutcome) -> Self {
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

    fn merge(&mut self, o: Sums) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.batches += o.batches;
        self.failed_rows += o.failed_rows;
        self.spilled_rows += o.spilled_rows;
    }
}

/// Completed batches `start..end` above the watermark, their outcomes summed.
#[derive(Clone, Copy)]
struct Done {
    end: u64,
    sums: Sums,
}

struct Waiter {
    start: u64,
    /// Shards whose rows at call time are not sealed yet (a parked batch was in
    /// the way). The barrier is fixed once they all sealed.
    unsealed: Vec<usize>,
    target: Option<u64>,
    tx: oneshot::Sender<FlushReport>,
}

/// Failed INSERTs kept for flush reports; beyond this the oldest are
/// forgotten (they stay counted in `Stats`), so an engine nobody flushes does
/// not grow.
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
struct Ledger {
    /// Every batch with a smaller sequence number is done.
    watermark: u64,
    /// Sums over all batches below `watermark`.
    sums: Sums,
    /// Completed batches above the watermark (out-of-order completions), as
    /// disjoint ranges keyed by their first sequence number.
    ahead: BTreeMap<u64, Done>,
    /// `sums` as it was when the watermark passed each barrier point.
    marks: BTreeMap<u64, Sums>,
    /// Barrier points the watermark has not reached yet.
    pending_marks: Vec<u64>,
    /// Where the next flush's report starts: the last barrier fixed.
    last_target: u64,
    failures: std::collections::VecDeque<FailedInsert>,
    waiters: Vec<Waiter>,
}

impl Ledger {
    fn new() -> Self {
        let mut l = Self::default();
        l.marks.insert(0, Sums::default());
        l
    }

    fn record(&mut self, seq: u64, outcome: PartOutcome) {
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

    fn mark_if_pending(&mut self) {
        let w = self.watermark;
        if let Some(i) = self.pending_marks.iter().position(|&m| m == w) {
            self.pending_marks.swap_remove(i);
            self.marks.insert(w, self.sums);
        }
    }

    fn record_failure(&mut self, f: FailedInsert) {
        if self.failures.len() == MAX_REMEMBERED_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(f);
    }

    fn fix_target(&mut self, target: u64) {
        self.last_target = self.last_target.max(target);
        if target <= self.watermark {
            // Only reachable when target == watermark (targets are read after
            // sealing, so they are never below batches still pending).
            self.marks.entry(target).or_insert(self.sums);
        } else if !self.pending_marks.contains(&target) {
            self.pending_marks.push(target);
        }
    }

    fn resolve(&mut self) {
        let watermark = self.watermark;
        let mut i = 0;
        while i < self.waiters.len() {
            match self.waiters[i].target {
                Some(t) if t <= watermark => {
                    let w = self.waiters.swap_remove(i);
                    let report = self.report(w.start, t);
                    // The caller may have stopped waiting; that is fine.
                    let _ = w.tx.send(report);
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
        while self
            .failures
            .front()
            .is_some_and(|f| f.batches.iter().all(|&b| b < floor))
        {
            self.failures.pop_front();
        }
    }

    fn report(&self, start: u64, end: u64) -> FlushReport {
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

struct Flight {
    insert: Arc<InsertBatch>,
    part_rows: Vec<u64>,
    started: tokio::time::Instant,
}

pub(crate) struct Coordinator<S> {
    shared: Arc<Shared>,
    rx: flume::Receiver<Batch>,
    sink: Arc<S>,
    inflight: JoinSet<Delivered>,
    flights: HashMap<tokio::task::Id, Flight>,
    /// Batches taken off the queue but not sent yet: one that did not fit
    /// the last INSERT, or the ones gathered while lingering. Oldest first.
    carry: VecDeque<Batch>,
    ledger: Ledger,
    draining: bool,
    /// While set, the carried batch waits (up to `linger`) for more to
    /// coalesce with it instead of going out at once.
    linger_until: Option<tokio::time::Instant>,
    jitter: crate::retry::Jitter,
    /// The spill replayer, stopped and joined before shutdown answers, so no
    /// replay INSERT (or file move) happens after `shutdown` returns.
    replayer: Option<tokio::task::JoinHandle<()>>,
    /// Shutdown callers, answered once the drain and the replayer are done.
    shutdown_replies: Vec<(oneshot::Receiver<FlushReport>, oneshot::Sender<FlushReport>)>,
}

impl<S> Drop for Coordinator<S> {
    /// Runs when the coordinator ends, also when its runtime is dropped
    /// under it. From then on nothing would ever seal or send, so `track`
    /// must say `Closed` (counted in `rejected_closed`) instead of taking
    /// rows that vanish.
    fn drop(&mut self) {
        if self.shared.closed.swap(true, Relaxed) {
            return;
        }
        let s = crate::buffer::snapshot(&self.shared);
        tracing::error!(
            buffered_rows = s.buffered_rows,
            pending_rows = s.pending_rows,
            "ch-ingest coordinator stopped without shutdown() (its tokio runtime was dropped): \
             these rows will not be delivered; track now returns Closed"
        );
    }
}

impl<S: Sink> Coordinator<S> {
    pub(crate) fn new(shared: Arc<Shared>, rx: flume::Receiver<Batch>, sink: Arc<S>) -> Self {
        let replayer = shared
            .spill
            .is_some()
            .then(|| tokio::spawn(crate::replay::run(sink.clone(), shared.clone())));
        Self {
            replayer,
            shutdown_replies: Vec::new(),
            shared,
            rx,
            sink,
            inflight: JoinSet::new(),
            flights: HashMap::new(),
            carry: VecDeque::new(),
            ledger: Ledger::new(),
            draining: false,
            linger_until: None,
            jitter: crate::retry::Jitter::from_entropy(),
        }
    }

    pub(crate) async fn run(mut self, mut ctrl: mpsc::UnboundedReceiver<Command>) {
        let mut ticks = Ticks::new(self.shared.cfg.flush_interval);
        let mut detached = false;
        loop {
            if self.shared.seal.parked.load(Relaxed) > 0 {
                self.shared.unpark_all();
            }
            self.advance_barriers();
            if self.draining && self.ledger.waiters.is_empty() && self.idle() {
                break;
            }
            let lingering = self.lingering();
            let can_dispatch = self.inflight.len() < self.shared.cfg.max_inflight && !lingering;
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next_with_id(), if !self.inflight.is_empty() => {
                    self.complete(done);
                }
                cmd = ctrl.recv(), if !detached => match cmd {
                    Some(Command::Flush(tx)) => self.add_waiter(tx),
                    Some(Command::Shutdown(tx)) => {
                        self.begin_drain();
                        let (inner_tx, inner_rx) = oneshot::channel();
                        self.shutdown_replies.push((inner_rx, tx));
                        self.add_waiter(inner_tx);
                    }
                    None => {
                        // Every handle is gone without shutdown(): drain what we have.
                        detached = true;
                        self.begin_drain();
                    }
                },
                first = next_batch(&mut self.carry, &self.rx, &self.shared.seal), if can_dispatch => {
                    if let Some(first) = first {
                        if self.linger_until.is_none() && !self.shared.cfg.linger.is_zero() {
                            // Hold it back for a while; see `lingering`.
                            self.linger_until =
                                Some(crate::sink::deadline::after(self.shared.cfg.linger));
                            self.carry.push_back(first);
                        } else {
                            self.dispatch(first);
                        }
                    }
                }
                Ok(more) = self.rx.recv_async(), if lingering => {
                    // Keep the queue moving while lingering, so producers
                    // are not refused for a wait we chose.
                    self.shared.seal.taken(&more);
                    self.carry.push_back(more);
                }
                () = linger_sleep(self.linger_until), if lingering => {
                    // Time is up: the next pass dispatches what is there.
                    self.linger_until = Some(tokio::time::Instant::now());
                }
                _ = ticks.tick() => {
                    self.shared.seal_all();
                }
            }
        }
        // Spilled files stay for the next start (or `ch-ingest replay`).
        self.shared.replay_stop.store(true, Relaxed);
        self.shared.replay_wake.notify_one();
        if let Some(replayer) = self.replayer.take() {
            // At most one replay INSERT is in progress, bounded by
            // `insert_timeout`; letting it finish keeps its file's fate exact.
            let _ = replayer.await;
        }
        for (report, tx) in self.shutdown_replies.drain(..) {
            if let Ok(report) = report.await {
                let _ = tx.send(report);
            }
        }
        if detached {
            let s = &self.shared.seal.stats;
            tracing::info!(
                acked_rows = s.acked_rows.load(Relaxed),
                failed_rows = s.failed_rows.load(Relaxed),
                "buffer drained after its last handle was dropped"
            );
        }
    }

    fn begin_drain(&mut self) {
        // Producers check `closed` under the shard lock, and sealing takes the
        // same lock, so every row accepted before this point is sealed below.
        self.shared.closed.store(true, Relaxed);
        self.draining = true;
    }

    fn add_waiter(&mut self, tx: oneshot::Sender<FlushReport>) {
        let start = self.ledger.last_target;
        let unsealed = self.shared.seal_all();
        self.ledger.waiters.push(Waiter {
            start,
            unsealed,
            target: None,
            tx,
        });
        self.advance_barriers();
    }

    /// Fixes the target of barriers whose shards are all sealed, and answers
    /// the ones whose batches are all done.
    fn advance_barriers(&mut self) {
        if self.draining {
            self.shared.seal_all();
        }
        let shared = &self.shared;
        let ledger = &mut self.ledger;
        for i in 0..ledger.waiters.len() {
            let w = &mut ledger.waiters[i];
            if w.target.is_some() {
                continue;
            }
            w.unsealed.retain(|&s| !shared.seal_shard(s));
            if w.unsealed.is_empty() {
                let target = shared.seal.next_seq.load(Relaxed);
                w.target = Some(target);
                ledger.fix_target(target);
            }
        }
        self.ledger.resolve();
    }

    fn idle(&self) -> bool {
        self.carry.is_empty()
            && self.rx.is_empty()
            && self.inflight.is_empty()
            && self.shared.seal.parked.load(Relaxed) == 0
            && self.shared.shards.iter().all(|s| s.lock().rows == 0)
    }

    /// Whether the carried batch should keep waiting for company: only with
    /// `linger` set, never during a flush or shutdown, and not once the queue
    /// already holds a full INSERT's worth.
    fn lingering(&self) -> bool {
        let Some(until) = self.linger_until else {
            return false;
        };
        let cfg = &self.shared.cfg;
        let queued_rows =
            self.carry.iter().map(|b| b.rows).sum::<u64>() + self.rx.len() as u64 * cfg.max_rows;
        let queued_bytes = self.shared.seal.queued_bytes.load(Relaxed)
            + self.carry.iter().map(|b| b.data.len()).sum::<usize>();
        tokio::time::Instant::now() < until
            && !self.draining
            && self.ledger.waiters.is_empty()
            && queued_rows < cfg.max_insert_rows
            && queued_bytes < cfg.max_insert_bytes
    }

    /// Starts one INSERT with `first` and whatever else is already queued, up
    /// to `max_insert_rows` / `max_insert_bytes`.
    fn dispatch(&mut self, first: Batch) {
        self.linger_until = None;
        let cfg = &self.shared.cfg;
        let mut rows = first.rows;
        let mut bytes = first.data.len();
        let mut batches = vec![first];
        while rows < cfg.max_insert_rows && bytes < cfg.max_insert_bytes {
            // Held batches first: they are older than anything queued.
            let next = match self.carry.pop_front() {
                Some(b) => b,
                None => {
                    let Ok(b) = self.rx.try_recv() else { break };
                    self.shared.seal.taken(&b);
                    b
                }
            };
            if rows + next.rows > cfg.max_insert_rows
                || bytes + next.data.len() > cfg.max_insert_bytes
            {
                self.carry.push_front(next);
                break;
            }
            rows += next.rows;
            bytes += next.data.len();
            batches.push(next);
        }
        let part_rows = batches.iter().map(|b| b.rows).collect();
        let columns = self
            .shared
            .columns
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let insert =
            Arc::new(InsertBatch::from_batches(columns, batches).with_origin(self.shared.instance));
        let stats = &self.shared.seal.stats;
        Counters::add(&stats.inserts, 1);
        Counters::add(&stats.inflight_inserts, 1);
        Counters::add(&stats.inflight_rows, insert.rows());
        Counters::add(&stats.inflight_bytes, insert.bytes());
        let delivery = Delivery {
            sink: self.sink.clone(),
            shared: self.shared.clone(),
            insert: insert.clone(),
            jitter: crate::retry::Jitter::new(self.jitter.unit().to_bits() ^ insert.id()),
        };
        let handle = self.inflight.spawn(delivery.run());
        self.flights.insert(
            handle.id(),
            Flight {
                insert,
                part_rows,
                started: tokio::time::Instant::now(),
            },
        );
    }

    fn complete(&mut self, done: Result<(tokio::task::Id, Delivered), tokio::task::JoinError>) {
        let (id, delivered) = match done {
            Ok((id, delivered)) => (id, delivered),
            Err(e) => {
                let msg = if e.is_panic() {
                    "the sink panicked"
                } else {
                    "the sink task was cancelled"
                };
                let delivered = Delivered {
                    result: Err(SinkError::Other(msg.into())),
                    attempts: 1,
                    ..Delivered::default()
                };
                (e.id(), delivered)
            }
        };
        let Delivered {
            result,
            attempts,
            dead_letter,
            spilled,
            spill_rejected,
            evicted,
        } = delivered;
        if evicted.quarantined > 0 {
            Counters::add(
                &self.shared.seal.stats.quarantined_files,
                evicted.quarantined,
            );
        }
        if evicted.rows > 0 {
            let stats = &self.shared.seal.stats;
            Counters::add(&stats.spill_evicted_rows, evicted.rows);
            for c in [
                &stats.spill_out_failed_rows,
                &stats.failed_rows,
                &stats.dropped_rows,
            ] {
                Counters::add(c, evicted.own_rows);
            }
        }
        let stats = &self.shared.seal.stats;
        stats.inflight_inserts.fetch_sub(1, Relaxed);
        let Some(flight) = self.flights.remove(&id) else {
            return;
        };
        let insert = &flight.insert;
        stats.inflight_rows.fetch_sub(insert.rows(), Relaxed);
        stats.inflight_bytes.fetch_sub(insert.bytes(), Relaxed);
        let hist = &stats.hist;
        hist.insert_seconds
            .record(flight.started.elapsed().as_secs_f64());
        hist.insert_rows.record(insert.rows() as f64);
        hist.insert_bytes.record(insert.bytes() as f64);
        let fate = match (result, spilled) {
            (Ok(()), _) => {
                Counters::add(&stats.acked_rows, insert.rows());
                Counters::add(&stats.acked_bytes, insert.bytes());
                Counters::add(&stats.acked_batches, flight.part_rows.len() as u64);
                Fate::Acked
            }
            (Err(error), Some(path)) => {
                Counters::add(&stats.spilled_rows, insert.rows());
                tracing::warn!(
                    insert_id = insert.id(),
                    rows = insert.rows(),
                    attempts,
                    %error,
                    path = %path.display(),
                    "INSERT retries used up; rows spilled to disk for replay"
                );
                self.shared.replay_wake.notify_one();
                Fate::Spilled
            }
            (Err(error), None) => {
                if spill_rejected {
                    Counters::add(&stats.spill_rejected_rows, insert.rows());
                }
                self.on_failure(insert, &error, attempts, dead_letter.as_deref());
                self.ledger.record_failure(FailedInsert {
                    insert_id: insert.id(),
                    batches: insert.seqs.clone(),
                    rows: insert.rows(),
                    error,
                    attempts,
                    dead_letter,
                });
                Fate::Failed
            }
        };
        for ((&seq, &rows), chunk) in insert
            .seqs
            .iter()
            .zip(&flight.part_rows)
            .zip(&insert.chunks)
        {
            let bytes = chunk.len() as u64;
            self.ledger.record(seq, PartOutcome { rows, bytes, fate });
        }
    }

    /// Counts and logs an INSERT given up on (after its retries). Its rows
    /// are in the dead-letter directory when `dead_letter` says so, else
    /// dropped.
    fn on_failure(
        &mut self,
        insert: &InsertBatch,
        error: &SinkError,
        attempts: u32,
        dead_letter: Option<&std::path::Path>,
    ) {
        let stats = &self.shared.seal.stats;
        Counters::add(&stats.failed_rows, insert.rows());
        Counters::add(&stats.failed_inserts, 1);
        match dead_letter {
            Some(path) => {
                Counters::add(&stats.dead_lettered_rows, insert.rows());
                tracing::error!(
                    insert_id = insert.id(),
                    rows = insert.rows(),
                    attempts,
                    code_name = error.code_name().unwrap_or(""),
                    class_reason = error.code_reason().unwrap_or(""),
                    %error,
                    path = %path.display(),
                    "INSERT failed; rows kept as a dead letter"
                );
            }
            None => {
                Counters::add(&stats.dropped_rows, insert.rows());
                tracing::error!(
                    insert_id = insert.id(),
                    rows = insert.rows(),
                    bytes = insert.bytes(),
                    attempts,
                    retryable = error.is_retryable(),
                    code_name = error.code_name().unwrap_or(""),
                    class_reason = error.code_reason().unwrap_or(""),
                    %error,
                    "INSERT failed; rows dropped (no dead-letter directory configured)"
                );
            }
        }
    }
}

/// What an INSERT task reports back.
pub(crate) struct Delivered {
    result: Result<(), SinkError>,
    attempts: u32,
    dead_letter: Option<std::path::PathBuf>,
    spilled: Option<std::path::PathBuf>,
    /// Not spilled: the directory was at its budget (`DropNewest`).
    spill_rejected: bool,
    /// Rows deleted from the spill directory to make room.
    evicted: crate::spill::Evicted,
}

impl Default for Delivered {
    fn default() -> Self {
        Self {
            result: Ok(()),
            attempts: 0,
            dead_letter: None,
            spilled: None,
            spill_rejected: false,
            evicted: Default::default(),
        }
    }
}

/// One INSERT's life: attempts with backoff per the retry policy, then, if
/// it still failed and a dead-letter directory is set, its bytes on disk.
/// Runs as its own task holding one `max_inflight` slot, so a retrying
/// INSERT never blocks the shards, and its memory stays inside the bound.
struct Delivery<S> {
    sink: Arc<S>,
    shared: Arc<Shared>,
    insert: Arc<InsertBatch>,
    jitter: crate::retry::Jitter,
}

impl<S: Sink> Delivery<S> {
    async fn run(mut self) -> Delivered {
        let cfg = &self.shared.cfg;
        let stats = &self.shared.seal.stats;
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            // One span per attempt: with `RUST_LOG=ch_ingest=info` and span
            // close events on, each INSERT is one line with its fields and time.
            let span = tracing::info_span!(
                "insert",
                table = self.sink.table().unwrap_or(""),
                insert_id = self.insert.id(),
                rows = self.insert.rows(),
                bytes = self.insert.bytes(),
                attempt = attempts,
                outcome = tracing::field::Empty,
            );
            let deadline = crate::sink::deadline::after(cfg.insert_timeout);
            let attempt = crate::sink::deadline::run(deadline, self.sink.insert(&self.insert))
                .instrument(span.clone());
            let error = match attempt.await {
                Some(Ok(())) => {
                    span.record("outcome", "ok");
                    break Ok(());
                }
                Some(Err(e)) => e,
                None => SinkError::Timeout,
            };
            let delay = if error.is_retryable() {
                cfg.retry
                    .next_delay(attempts, started.elapsed(), &mut self.jitter)
            } else {
                None
            };
            span.record(
                "outcome",
                match (&error, delay) {
                    (SinkError::Timeout, Some(_)) => "timeout, retrying",
                    (SinkError::Timeout, None) => "timeout, given up",
                    (_, Some(_)) => "failed, retrying",
                    (_, None) => "failed, given up",
                },
            );
            drop(span);
            let Some(delay) = delay else {
                break Err(error);
            };
            Counters::add(&stats.retried_inserts, 1);
            Counters::add(&stats.retried_rows, self.insert.rows());
            tracing::warn!(
                insert_id = self.insert.id(),
                rows = self.insert.rows(),
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                %error,
                "INSERT failed; retrying"
            );
            tokio::time::sleep(delay).await;
        };
        let mut delivered = Delivered {
            attempts,
            ..Delivered::default()
        };
        if let (Err(error), Some(spill)) = (&result, &self.shared.spill) {
            if error.is_retryable() {
                let (spill, insert, table) = (
                    spill.clone(),
                    self.insert.clone(),
                    self.sink.table().map(str::to_owned),
                );
                let written =
                    tokio::task::spawn_blocking(move || spill.write(table.as_deref(), &insert))
                        .await;
                let written = match written {
                    Ok((written, evicted)) => {
                        // Evicted files are gone whether or not the new one
                        // then made it to disk.
                        delivered.evicted = evicted;
                        Ok(written)
                    }
                    Err(panicked) => Err(panicked),
                };
                match written {
                    Ok(Ok(crate::spill::Written::Spilled(path))) => {
                        delivered.spilled = Some(path);
                        delivered.result = result;
                        return delivered;
                    }
                    Ok(Ok(crate::spill::Written::Rejected)) => {
                        delivered.spill_rejected = true;
                        tracing::error!(
                            insert_id = self.insert.id(),
                            rows = self.insert.rows(),
                            "spill directory at its budget; batch not spilled"
                        );
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "could not write a spill file"),
                    Err(e) => tracing::error!(error = %e, "the spill writer panicked"),
                }
            }
        }
        let dead_letter = match (&result, &cfg.dead_letter_dir) {
            (Err(error), Some(dir)) => {
                let (dir, insert, table) = (
                    dir.clone(),
                    self.insert.clone(),
                    self.sink.table().map(str::to_owned),
                );
                let error = error.clone();
                let written = tokio::task::spawn_blocking(move || {
                    crate::dead_letter::write(&dir, table.as_deref(), &insert, attempts, &error)
                })
                .await;
                match written {
                    Ok(Ok(path)) => Some(path),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "could not write a dead letter");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the dead-letter writer panicked");
                        None
                    }
                }
            }
            _ => None,
        };
        delivered.result = result;
        delivered.dead_letter = dead_letter;
        delivered
    }
}

async fn linger_sleep(until: Option<tokio::time::Instant>) {
    if let Some(until) = until {
        tokio::time::sleep_until(until).await;
    }
}

/// The carried-over batch (already off the queue), else the next queued one.
async fn next_batch(
    carry: &mut VecDeque<Batch>,
    rx: &flume::Receiver<Batch>,
    seal: &crate::shard::SealTarget,
) -> Option<Batch> {
    match carry.pop_front() {
        Some(b) => Some(b),
        None => {
            let b = rx.recv_async().await.ok()?;
            seal.taken(&b);
            Some(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(rows: u64) -> PartOutcome {
        PartOutcome {
            rows,
            bytes: rows * 10,
            fate: Fate::Acked,
        }
    }

    #[test]
    fn completions_behind_one_slow_insert_stay_a_few_ranges() {
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
    fn barrier_sums_are_exact_whatever_the_completion_order() {
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
    fn a_failed_insert_with_a_batch_before_the_barrier_is_in_that_report() {
        let mut l = Ledger::new();
        l.fix_target(10);
        // INSERT 12 carried batch 7, parked earlier and sealed before the
        // barrier, with batch 12 sealed after it.
        l.record_failure(FailedInsert {
            insert_id: 12,
            batches: vec![12, 7],
            rows: 2,
            error: SinkError::Other("no".into()),
            attempts: 1,
            dead_letter: None,
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
