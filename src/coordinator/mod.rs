//! The coordinator: one task per buffer that turns sealed batches into INSERTs.
//!
//! Owns: the flush tick, flush and shutdown barriers, coalescing queued
//! batches into INSERTs, the in-flight INSERTs (at most `max_inflight`,
//! overlapping), and the fate of each batch (acknowledged or failed). Must
//! not: encode rows or block producers; it only ever `try_send`s into the
//! channel it drains, and it talks to shards through their short locks.
//!
//! Split by concern, as a sink is in Vector: this file is the loop; the
//! [`ledger`] knows what became of every batch and answers barriers; each
//! INSERT runs as a [`delivery`] task (attempts, backoff, per-attempt
//! deadlines), and what still failed goes to the [`fallback`] (the spill
//! directory for retryable errors, the dead-letter directory for permanent
//! ones, else it is dropped and counted).

mod delivery;
mod fallback;
mod lanes;

use crate::ledger::{FailedInsert, Fate, FlushReport, Ledger, PartOutcome, Reply, Waiter};
use delivery::Delivery;
use fallback::Delivered;
use lanes::Lanes;

use crate::batch::{Batch, InsertBatch};
use crate::engine::Shared;
use crate::sink::{Sink, SinkError};
use crate::stats::Counters;
use crate::ticks::Ticks;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

pub(crate) enum Command {
    Flush(oneshot::Sender<FlushReport>),
    Shutdown(oneshot::Sender<FlushReport>),
    Settle(crate::Receipt, oneshot::Sender<crate::Settled>),
}

struct Flight {
    /// Without its rows (the delivery holds them; see `Sink::prepare`).
    insert: InsertBatch,
    /// The RowBinary bytes of each sealed batch, for the ledger.
    part_bytes: Vec<u64>,
    lane: usize,
    part_rows: Vec<u64>,
    /// The shards' row numbers of each sealed batch, for receipts.
    part_spans: Vec<crate::receipt::Span>,
    started: tokio::time::Instant,
}

pub(crate) struct Coordinator<S> {
    shared: Arc<Shared>,
    rx: flume::Receiver<Batch>,
    sink: Arc<S>,
    inflight: JoinSet<Delivered>,
    flights: HashMap<tokio::task::Id, Flight>,
    /// `max_inflight` slots per lane of the sink (one for most sinks).
    lanes: Lanes,
    /// Every queued batch would lead an INSERT into a full lane: wait for a
    /// slot, a lane's health to change, or another batch.
    stalled: bool,
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
        let s = crate::engine::snapshot(&self.shared);
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
        let lanes = Lanes::new(shared.cfg.lanes, shared.cfg.max_inflight);
        Self {
            replayer,
            shutdown_replies: Vec::new(),
            shared,
            rx,
            sink,
            inflight: JoinSet::new(),
            flights: HashMap::new(),
            lanes,
            stalled: false,
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
            let can_dispatch = self.lanes.any_room() && !lingering && !self.stalled;
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next_with_id(), if !self.inflight.is_empty() => {
                    self.stalled = false;
                    self.complete(done);
                }
                cmd = ctrl.recv(), if !detached => match cmd {
                    Some(Command::Flush(tx)) => self.add_waiter(tx),
                    Some(Command::Settle(receipt, tx)) => self.add_settle(receipt, tx),
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
                () = self.lanes.health.changed.notified(), if self.stalled => {
                    self.stalled = false;
                }
                () = linger_sleep(self.linger_until), if lingering => {
                    // Time is up: the next pass dispatches what is there.
                    self.linger_until = Some(tokio::time::Instant::now());
                }
                _ = ticks.tick() => {
                    self.stalled = false;
                    self.shared.seal_all();
                }
            }
        }
        // Every row accepted is done now. Receipts settled from here on are
        // answered from what is remembered: those already queued below,
        // later ones by `Buffer::settle` itself once the channel is closed.
        let _ = self
            .shared
            .fates
            .set(std::mem::take(&mut self.ledger.fates));
        ctrl.close();
        while let Some(cmd) = ctrl.recv().await {
            if let (Command::Settle(receipt, tx), Some(fates)) = (cmd, self.shared.fates.get()) {
                let _ = tx.send(fates.settled(&receipt));
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
            reply: Reply::Flush(tx),
        });
        self.advance_barriers();
    }

    /// A barrier for one receipt: seals only the shards whose open buffer
    /// still holds some of its rows, so rows that came after stay buffered
    /// for the next batch instead of going out in a small one.
    fn add_settle(&mut self, receipt: crate::Receipt, tx: oneshot::Sender<crate::Settled>) {
        let unsealed = receipt
            .ends()
            .filter(|&(i, end)| !self.shared.seal_shard_holding(i, end))
            .map(|(i, _)| i)
            .collect();
        self.ledger.waiters.push(Waiter {
            start: self.ledger.last_target,
            unsealed,
            target: None,
            reply: Reply::Settle(receipt, tx),
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
                // Only a flush's target is where the next flush's report
                // starts; a settle reports its own rows, not a range.
                if matches!(w.reply, Reply::Flush(_)) {
                    ledger.fix_target(target);
                }
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
        // The INSERT's identity picks its lane; see `lanes` for when it is
        // not the first batch's sequence number.
        let origin = self.shared.instance;
        let sink = &self.sink;
        let Some((id, lane)) = self.lanes.pick(first.seq, |id| sink.lane(origin, id)) else {
            self.carry.push_front(first);
            self.stalled = true;
            return;
        };
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
        let part_spans = batches.iter().map(|b| b.span).collect();
        let columns = self
            .shared
            .columns
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let insert = Arc::new(
            InsertBatch::from_batches(columns, batches)
                .with_origin(origin)
                .with_id(id),
        );
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
            lane,
            health: self.lanes.health.clone(),
        };
        self.lanes.started(lane);
        let handle = self.inflight.spawn(delivery.run());
        self.flights.insert(
            handle.id(),
            Flight {
                insert: insert.without_body(),
                part_bytes: insert.chunks().iter().map(|c| c.len() as u64).collect(),
                lane,
                part_rows,
                part_spans,
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
        self.lanes.finished(flight.lane);
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
                self.ledger
                    .fates
                    .record_spill(insert.seqs.clone(), flight.part_spans.clone());
                Fate::Spilled
            }
            (Err(error), None) => {
                if spill_rejected {
                    Counters::add(&stats.spill_rejected_rows, insert.rows());
                }
                self.on_failure(insert, &error, attempts, dead_letter.as_deref());
                self.ledger.fates.record_failure(FailedInsert {
                    insert_id: insert.id(),
                    batches: insert.seqs.clone(),
                    rows: insert.rows(),
                    error,
                    attempts,
                    dead_letter,
                    spans: flight.part_spans.clone(),
                });
                Fate::Failed
            }
        };
        for ((&seq, &rows), &bytes) in insert
            .seqs
            .iter()
            .zip(&flight.part_rows)
            .zip(&flight.part_bytes)
        {
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
