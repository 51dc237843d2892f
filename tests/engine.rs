//! Engine behaviour against in-memory sinks: thresholds, the tick (on tokio's
//! paused clock), flush and shutdown barriers, back-pressure, failures,
//! ordering and accounting. The same scenarios against a real ClickHouse are
//! in `clickhouse.rs`.

use ch_ingest::rowbinary::EncodeError;
use ch_ingest::sink::{InsertBatch, MemorySink, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent, RetryPolicy, TrackError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

mod support;
use support::check::{assert_accounted, quick_retries, tweet_ids, wait_until};

fn ev(i: u64) -> PostEvent {
    PostEvent::new("like", i, 1_700_000_000)
}

async fn wait_rows(sink: &MemorySink, rows: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.rows() < rows {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sink has {} of {rows} rows",
            sink.rows()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_500th_row_triggers_an_insert_without_flush() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .flush_interval(Duration::from_secs(3600))
        .build(sink.clone())
        .unwrap();
    for i in 0..499 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.rows(), 0, "499 rows must stay buffered");
    assert_eq!(b.stats().buffered_rows, 499);
    b.track(ev(499)).unwrap();
    wait_rows(&sink, 500).await;
    assert_eq!(sink.batches().len(), 1);
    assert_accounted(&b);
}

#[tokio::test(start_paused = true)]
async fn the_tick_seals_partial_batches() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .flush_interval(Duration::from_secs(10))
        .build(sink.clone())
        .unwrap();
    for i in 0..10 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(sink.rows(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.rows(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_every_row_tracked_before_it() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder().shards(4).build(sink.clone()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..1234u64 {
                    b.track(ev(t * 10_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(sink.rows(), 4 * 1234);
    assert_eq!(b.stats().acked_rows, 4 * 1234);
    assert!(report.rows <= 4 * 1234);
    assert!(report.is_complete());
    assert_accounted(&b);
}

#[tokio::test]
async fn shutdown_drains_and_closes() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder().shards(2).build(sink.clone()).unwrap();
    for i in 0..777 {
        b.track(ev(i)).unwrap();
    }
    let report = b.shutdown().await.unwrap();
    assert_eq!(sink.rows(), 777);
    assert_eq!(report.rows, 777);
    match b.track(ev(1)) {
        Err(TrackError::Closed(row)) => assert_eq!(row.tweet_id, 1),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(b.flush().await.is_err());
    assert_eq!(b.stats().rejected_closed, 1);
}

#[tokio::test]
async fn without_retries_failed_inserts_are_reported_counted_and_dropped() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(100)
        .retry(RetryPolicy::NONE)
        .build(sink.clone())
        .unwrap();
    sink.set_failing(true);
    for i in 0..250 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(report.rows, 0);
    assert_eq!(report.failed_rows, 250);
    assert_eq!(report.failures.iter().map(|f| f.rows).sum::<u64>(), 250);
    assert!(matches!(report.failures[0].error, SinkError::Network(_)));
    sink.set_failing(false);
    for i in 0..50 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!((report.rows, report.failed_rows), (50, 0));
    let s = b.stats();
    assert_eq!(
        (s.failed_rows, s.acked_rows, s.tracked_rows),
        (250, 50, 300)
    );
    assert_eq!(
        (s.dropped_rows, s.dead_lettered_rows, s.retried_inserts),
        (250, 0, 0)
    );
    assert_accounted(&b);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff_until_they_succeed() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(100)
        .build(sink.clone())
        .unwrap();
    sink.fail_next(3);
    let started = tokio::time::Instant::now();
    for i in 0..100 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.rows, 100);
    assert_eq!(sink.attempts(), 4);
    assert_eq!(sink.rows(), 100, "acknowledged once, no duplicates");
    let s = b.stats();
    assert_eq!(
        (s.retried_inserts, s.retried_rows, s.failed_rows),
        (3, 300, 0)
    );
    // Backoff: three waits of at most 100, 200 and 400 ms (full jitter).
    assert!(started.elapsed() <= Duration::from_millis(700));
    assert_accounted(&b);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_dead_lettered_at_once_with_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new();
    sink.fail_with(SinkError::Server {
        code: Some(60),
        message: "Code: 60, e.displayText() = DB::Exception: Table default.t doesn't exist".into(),
    });
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .dead_letter_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    sink.fail_next(1);
    let mut expected = bytes::BytesMut::new();
    let mut cols = None;
    for i in 0..10 {
        let learned =
            ch_ingest::rowbinary::encode_row(&ev(i), &mut expected, cols.as_deref()).unwrap();
        cols = cols.or(learned);
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(report.failed_rows, 10);
    let failure = &report.failures[0];
    assert_eq!(failure.attempts, 1, "a permanent error is never retried");
    let data = failure.dead_letter.clone().expect("dead-lettered");
    assert_eq!(
        std::fs::read(&data).unwrap(),
        &expected[..],
        "the exact bytes"
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["rows"], 10);
    assert_eq!(sidecar["code"], 60);
    assert_eq!(sidecar["attempts"], 1);
    assert_eq!(sidecar["columns"][0], "event_type");
    assert!(sidecar["error"].as_str().unwrap().contains("doesn't exist"));
    let s = b.stats();
    assert_eq!(
        (s.dead_lettered_rows, s.dropped_rows, s.retried_inserts),
        (10, 0, 0)
    );
    assert_accounted(&b);
}

#[tokio::test(start_paused = true)]
async fn retries_end_at_max_attempts_and_the_rows_become_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(5)
        .retry(RetryPolicy::default().with_max_attempts(4))
        .dead_letter_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    sink.set_failing(true);
    for i in 0..5 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(sink.attempts(), 4);
    assert_eq!(report.failures[0].attempts, 4);
    assert!(report.failures[0].dead_letter.is_some());
    let s = b.stats();
    assert_eq!((s.retried_inserts, s.dead_lettered_rows), (3, 5));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "data + sidecar, no temp files"
    );
    assert_accounted(&b);
}

/// A sink that holds every INSERT until the test releases it.
#[derive(Clone)]
struct Gate {
    open: Arc<Semaphore>,
    inner: MemorySink,
}

impl Sink for Gate {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.open.acquire().await.unwrap().forget();
        self.inner.insert(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_makes_track_return_full_with_the_row_and_bounded_memory() {
    let gate = Gate {
        open: Arc::new(Semaphore::new(0)),
        inner: MemorySink::new(),
    };
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .queue_batches(2)
        .max_inflight(1)
        .max_insert_rows(10)
        .build(gate.clone())
        .unwrap();
    let mut accepted = 0u64;
    let mut full = None;
    for i in 0..1000 {
        match b.track(ev(i)) {
            Ok(()) => accepted += 1,
            Err(TrackError::Full(row)) => {
                full = Some(row);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        if accepted == 10 {
            // The first sealed batch must reach the gate before the queue
            // fills; on a loaded machine the coordinator may not have run yet.
            wait_until("the first INSERT at the gate", || {
                b.stats().inflight_inserts == 1
            })
            .await;
        }
        tokio::task::yield_now().await;
    }
    let row = full.expect("track must report Full once the queue is full");
    // in flight (10) + queue (2 x 10) + parked (10) + open (10)
    assert!(accepted <= 50, "accepted {accepted}");
    assert_eq!(row.tweet_id, accepted);
    let s = b.stats();
    assert_eq!(s.rejected_full, 1);
    assert_eq!(
        (s.inflight_inserts, s.inflight_rows),
        (1, 10),
        "one INSERT held by the gate"
    );
    assert!(s.inflight_bytes > 0 && s.pending_rows >= s.inflight_rows);
    // Two sealed batches wait in the queue; the open buffer holds the rest.
    assert!(s.queued_bytes > 0, "{s:?}");
    assert_eq!(s.buffered_bytes > 0, s.buffered_rows > 0, "{s:?}");
    gate.open.add_permits(1_000);
    let report = b.flush().await.unwrap();
    assert_eq!(report.rows, accepted);
    assert_eq!(gate.inner.rows(), accepted);
    b.track(row).unwrap();
    assert_accounted(&b);
}

#[derive(Serialize)]
struct Seq {
    thread: u8,
    seq: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_threads_arrive_exactly_once_and_in_order() {
    const PER_THREAD: u32 = 250_000;
    let sink = MemorySink::new();
    let b: Buffer<Seq> = Buffer::builder()
        .shards(4)
        .max_inflight(1)
        .queue_batches(4096)
        .build(sink.clone())
        .unwrap();
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let mut row = Seq { thread: t, seq };
                    loop {
                        match b.track(row) {
                            Ok(()) => break,
                            Err(TrackError::Full(r)) => {
                                row = r;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    b.shutdown().await.unwrap();
    let bytes = sink.concat();
    assert_eq!(bytes.len(), 4 * PER_THREAD as usize * 5);
    let mut next = [0u32; 4];
    for row in bytes.chunks_exact(5) {
        let t = row[0] as usize;
        let seq = u32::from_le_bytes(row[1..5].try_into().unwrap());
        assert_eq!(seq, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [PER_THREAD; 4]);
}

#[tokio::test]
async fn a_bad_row_is_handed_back_and_leaves_the_batch_intact() {
    #[derive(Serialize)]
    struct Maybe {
        a: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<u32>,
    }
    let sink = MemorySink::new();
    let b: Buffer<Maybe> = Buffer::builder().shards(1).build(sink.clone()).unwrap();
    b.track(Maybe { a: 1, b: Some(2) }).unwrap();
    match b.track(Maybe { a: 3, b: None }) {
        Err(TrackError::Encode { row, error }) => {
            assert_eq!(row.a, 3);
            assert_eq!(error, EncodeError::SkippedField("b"));
            assert!(error.to_string().contains("`b`"));
        }
        other => panic!("{other:?}"),
    }
    b.track(Maybe { a: 5, b: Some(6) }).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        sink.concat(),
        [1, 0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 6, 0, 0, 0]
    );
    assert_eq!(b.stats().encode_errors, 1);
    assert_eq!(b.columns(), Some(vec!["a", "b"]));
}

#[tokio::test]
async fn dropping_the_last_handle_drains_in_the_background() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder().shards(1).build(sink.clone()).unwrap();
    for i in 0..42 {
        b.track(ev(i)).unwrap();
    }
    drop(b);
    wait_rows(&sink, 42).await;
}

#[test]
fn track_works_from_threads_outside_the_runtime_on_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = rt
        .block_on(async { Buffer::builder().shards(1).build(sink.clone()) })
        .unwrap();
    let b2 = b.clone();
    std::thread::spawn(move || {
        for i in 0..1000 {
            b2.track(ev(i)).unwrap();
        }
    })
    .join()
    .unwrap();
    let report = rt.block_on(b.shutdown()).unwrap();
    assert_eq!(report.rows, 1000);
    assert_eq!(sink.rows(), 1000);
}

#[test]
fn build_outside_a_runtime_is_a_typed_error() {
    let r: Result<Buffer<PostEvent>, _> = Buffer::builder().build(MemorySink::new());
    assert_eq!(r.err(), Some(ch_ingest::BuildError::NoRuntime));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r: Result<Buffer<PostEvent>, _> =
        rt.block_on(async { Buffer::builder().max_rows(0).build(MemorySink::new()) });
    assert!(r.err().unwrap().to_string().contains("max_rows"));
}

#[tokio::test]
async fn json_rows_are_transcoded_and_bad_lines_reported() {
    let schema = ch_ingest::Schema::parse("id UInt64, name String").unwrap();
    let sink = MemorySink::new();
    let b = Buffer::builder()
        .shards(1)
        .max_rows(2)
        .queue_batches(1)
        .max_inflight(1)
        .build_json(schema, sink.clone())
        .unwrap();
    let body = b"{\"id\":1,\"name\":\"a\"}\n{\"id\":\"x\"}\n\n{\"name\":\"b\",\"id\":2}\n";
    let tracked = b.track_ndjson(body);
    assert_eq!(tracked.report.accepted, 2);
    assert_eq!(tracked.report.rejected.len(), 1);
    assert_eq!(tracked.report.rejected[0].line, 2);
    assert_eq!(
        tracked.report.rejected[0].error.field.as_deref(),
        Some("id")
    );
    assert!(tracked.stopped.is_none());
    b.flush().await.unwrap();
    assert_eq!(
        sink.concat(),
        [1, 0, 0, 0, 0, 0, 0, 0, 1, b'a', 2, 0, 0, 0, 0, 0, 0, 0, 1, b'b']
    );
    assert_eq!(b.columns(), Some(vec!["id", "name"]));
    b.shutdown().await.unwrap();
    let tracked = b.track_ndjson(body);
    assert!(matches!(
        tracked.stopped,
        Some((1, ch_ingest::TrackJsonError::Closed))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_many_takes_a_batch_in_order_and_hands_back_the_refused_row() {
    let gate = Gate {
        open: Arc::new(Semaphore::new(0)),
        inner: MemorySink::new(),
    };
    let b: Buffer<Seq> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .queue_batches(2)
        .max_inflight(1)
        .max_insert_rows(10)
        .build(gate.clone())
        .unwrap();
    let mut rows = (0..1_000u32).map(|seq| Seq { thread: 7, seq });
    // in flight + queue + parked + open, then the refusal hands the row back.
    let refused = match b.track_many(&mut rows) {
        Err(TrackError::Full(row)) => row,
        other => panic!("expected Full, got {:?}", other.map_err(|e| e.to_string())),
    };
    let accepted = b.stats().tracked_rows;
    assert!((10..=50).contains(&accepted), "accepted {accepted}");
    assert_eq!(
        u64::from(refused.seq),
        accepted,
        "the refused row is the next one"
    );
    assert_eq!(
        rows.next().map(|r| r.seq),
        Some(refused.seq + 1),
        "the rest stay in the iterator"
    );
    gate.open.add_permits(1_000);
    assert_eq!(b.flush().await.unwrap().rows, accepted);
    // The retry loop a caller writes: the refused row first, then the rest.
    let mut pending = Some(refused);
    let mut taken = 0u64;
    loop {
        let mut batch = pending.take().into_iter().chain(rows.by_ref());
        match b.track_many(&mut batch) {
            Ok(n) => {
                taken += n as u64;
                break;
            }
            Err(TrackError::Full(row)) => {
                taken = b.stats().tracked_rows - accepted;
                pending = Some(row);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted + taken, 999, "every row but the one taken out");
    b.shutdown().await.unwrap();
    let bytes = gate.inner.concat();
    let seqs: Vec<u32> = bytes
        .chunks_exact(5)
        .map(|r| u32::from_le_bytes(r[1..5].try_into().unwrap()))
        .collect();
    let mut want: Vec<u32> = (0..1_000).collect();
    want.remove(accepted as usize + 1); // taken out by `rows.next()` above
    assert_eq!(seqs, want, "order kept, nothing lost or duplicated");
    let mut more = (0..3u32).map(|seq| Seq { thread: 7, seq });
    assert!(matches!(b.track_many(&mut more), Err(TrackError::Closed(r)) if r.seq == 0));
    assert_accounted(&b);
}

#[tokio::test(start_paused = true)]
async fn linger_holds_a_lone_batch_back_then_sends_it_and_a_full_queue_goes_at_once() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(100)
        .linger(Duration::from_secs(2))
        .flush_interval(Duration::from_secs(3600))
        .build(sink.clone())
        .unwrap();
    for i in 0..10 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sink.rows(), 0, "a lone sealed batch lingers");
    for i in 10..20 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.batches().len(), 1, "both batches went out together");
    assert_eq!(sink.rows(), 20);
    // A full INSERT's worth does not wait.
    for i in 20..120 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.rows(), 120);
    // Nor does a flush.
    for i in 120..130 {
        b.track(ev(i)).unwrap();
    }
    // (A flush reports every row since the previous flush: all 130.)
    assert_eq!(b.flush().await.unwrap().rows, 130);
    assert_eq!(sink.rows(), 130);
    assert_accounted(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_spill_to_disk_and_replay_exactly_once_when_the_sink_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(10)
        .retry(quick_retries())
        .spill_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    sink.set_failing(true);
    for i in 0..100 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(
        (report.rows, report.spilled_rows, report.failed_rows),
        (0, 100, 0)
    );
    let s = b.stats();
    assert_eq!((s.spilled_rows, s.spill_pending_rows), (100, 100));
    assert_eq!(ch_ingest::test_util::spill::QUARANTINE, "quarantine");
    assert_accounted(&b);
    sink.set_failing(false);
    wait_until("replay", || b.stats().spill_pending_rows == 0).await;
    let s = b.stats();
    assert_eq!(
        (s.replayed_rows, s.acked_rows, s.failed_rows),
        (100, 100, 0)
    );
    let mut ids = tweet_ids(&sink);
    ids.sort_unstable();
    assert_eq!(ids, (0..100).collect::<Vec<_>>(), "every row once");
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 0, "replayed files are deleted");
    assert_accounted(&b);
    b.shutdown().await.unwrap();
}

/// Spills 30 rows as three files from a buffer whose sink always fails,
/// then shuts it down: the files stay for the next start.
async fn leave_three_spill_files(dir: &std::path::Path) {
    leave_spill_files(dir, None, 0).await;
}

/// A sink that says which table it writes to.
struct ForTable(&'static str, MemorySink);

impl Sink for ForTable {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.1.insert(batch).await
    }

    fn table(&self) -> Option<&str> {
        Some(self.0)
    }
}

/// Three spill files of 10 rows, ids from `first`, written for `table`.
async fn leave_spill_files(dir: &std::path::Path, table: Option<&'static str>, first: u64) {
    let sink = MemorySink::new();
    sink.set_failing(true);
    let builder = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(10)
        .max_inflight(1)
        .retry(quick_retries())
        .spill_dir(dir);
    let b: Buffer<PostEvent> = match table {
        Some(t) => builder.build(ForTable(t, sink)),
        None => builder.build(sink),
    }
    .unwrap();
    for i in first..first + 30 {
        b.track(ev(i)).unwrap();
        if i % 10 == 9 {
            assert_eq!(b.flush().await.unwrap().spilled_rows, 10);
        }
    }
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_files_written_for_another_table_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    leave_spill_files(dir.path(), Some("a"), 0).await;
    // Newer, so replayed after `a`'s files have been looked at.
    leave_spill_files(dir.path(), Some("b"), 100).await;
    assert_eq!(ch_ingest_spill_files(dir.path()).len(), 6);
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .spill_dir(dir.path())
        .build(ForTable("b", sink.clone()))
        .unwrap();
    wait_until("b's files replayed", || {
        b.stats().replayed_foreign_rows == 30
    })
    .await;
    assert_eq!(tweet_ids(&sink), (100..130).collect::<Vec<_>>());
    assert_eq!(ch_ingest_spill_files(dir.path()).len(), 3, "a's files stay");
    b.shutdown().await.unwrap();
}

/// Holds every insert a while, so two replayers overlap on each file.
struct Slow(MemorySink);

impl Sink for Slow {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.0.insert(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replayers_on_one_directory_send_each_file_once() {
    // Across a schema swap the sidecar runs two engines of one table on one
    // spill directory for a while; both replay it.
    let dir = tempfile::tempdir().unwrap();
    leave_spill_files(dir.path(), None, 0).await;
    let sink = MemorySink::new();
    let build = || -> Buffer<PostEvent> {
        Buffer::builder()
            .spill_dir(dir.path())
            .build(Slow(sink.clone()))
            .unwrap()
    };
    let (a, b) = (build(), build());
    wait_until("every file replayed", || {
        ch_ingest_spill_files(dir.path()).is_empty()
            && a.stats().replayed_foreign_rows + b.stats().replayed_foreign_rows == 30
    })
    .await;
    let mut ids = tweet_ids(&sink);
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>(), "a file was sent twice");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

fn ch_ingest_spill_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spill"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_start_replays_what_an_earlier_process_spilled() {
    let dir = tempfile::tempdir().unwrap();
    leave_three_spill_files(dir.path()).await;
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .spill_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    wait_until("replay on start", || b.stats().replayed_foreign_rows == 30).await;
    assert_eq!(
        tweet_ids(&sink),
        (0..30).collect::<Vec<_>>(),
        "oldest first"
    );
    let s = b.stats();
    assert_eq!(
        (s.tracked_rows, s.acked_rows, s.replayed_rows),
        (0, 0, 0),
        "not ours"
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_bit_flipped_spill_files_are_quarantined_and_the_rest_replays() {
    let dir = tempfile::tempdir().unwrap();
    leave_three_spill_files(dir.path()).await;
    let files = ch_ingest_spill_files(dir.path());
    let mut flipped = std::fs::read(&files[0]).unwrap();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    std::fs::write(&files[0], flipped).unwrap();
    let whole = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &whole[..whole.len() - 7]).unwrap();
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .spill_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    wait_until("replay", || b.stats().replayed_foreign_rows == 10).await;
    wait_until("quarantine", || b.stats().quarantined_files == 2).await;
    assert_eq!(tweet_ids(&sink), (20..30).collect::<Vec<_>>());
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 2);
    assert!(ch_ingest_spill_files(dir.path()).is_empty());
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_spill_budget_the_newest_batch_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new();
    sink.set_failing(true);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(10)
        .max_inflight(1)
        .retry(quick_retries())
        .spill_dir(dir.path())
        .spill_max_bytes(1_000)
        .build(sink.clone())
        .unwrap();
    for i in 0..100 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    let s = b.stats();
    assert!(s.spilled_rows > 0 && s.spilled_rows < 100, "{s:?}");
    assert_eq!(s.spill_rejected_rows, 100 - s.spilled_rows);
    assert_eq!(s.dropped_rows, s.spill_rejected_rows);
    assert_eq!(report.spilled_rows + report.failed_rows, 100);
    assert_accounted(&b);
    b.shutdown().await.unwrap();
}

fn gated(when_full: ch_ingest::WhenFull) -> (Gate, Buffer<PostEvent>) {
    let gate = Gate {
        open: Arc::new(Semaphore::new(0)),
        inner: MemorySink::new(),
    };
    let b = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .queue_batches(1)
        .max_inflight(1)
        .max_insert_rows(10)
        .when_full(when_full)
        .build(gate.clone())
        .unwrap();
    (gate, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_drop_newest_drops_and_counts_and_never_refuses() {
    let (gate, b) = gated(ch_ingest::WhenFull::DropNewest);
    for i in 0..1_000 {
        b.track(ev(i)).unwrap();
    }
    let s = b.stats();
    assert!(s.dropped_full_rows > 0);
    assert_eq!(s.tracked_rows + s.dropped_full_rows, 1_000);
    assert_eq!(
        s.rejected_full, s.dropped_full_rows,
        "each refusal was a drop"
    );
    gate.open.add_permits(1_000);
    assert_eq!(b.shutdown().await.unwrap().rows, s.tracked_rows);
    assert_eq!(gate.inner.rows(), s.tracked_rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_blocking_waits_for_room_then_gives_the_row_back_at_the_timeout() {
    let (gate, b) = gated(ch_ingest::WhenFull::Reject);
    let mut i = 0;
    // Fill until Full, twice: in between the coordinator takes what it can
    // while the gate holds the sink, then nothing moves.
    let mut full = None;
    for _ in 0..2 {
        full = Some(loop {
            match b.track(ev(i)) {
                Ok(()) => i += 1,
                Err(TrackError::Full(row)) => break row,
                Err(e) => panic!("{e}"),
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = full.unwrap();
    assert_eq!(b.stats().block_timeouts, 0, "track never waits");
    match b.track_blocking(full, Duration::from_millis(50)) {
        Err(TrackError::Full(row)) => assert_eq!(row.tweet_id, i),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().block_timeouts, 1);
    // With room coming, a blocked track succeeds instead.
    let (gate2, b2) = gated(ch_ingest::WhenFull::Reject);
    let producer = {
        let b2 = b2.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                b2.track_blocking(ev(i), Duration::from_secs(30)).unwrap();
            }
        })
    };
    wait_until("the producer to block", || b2.stats().rejected_full > 0).await;
    assert!(!producer.is_finished(), "blocked, not refused");
    gate2.open.add_permits(1_000);
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    assert_eq!(b2.shutdown().await.unwrap().rows, 200);
    assert_eq!(b2.stats().block_timeouts, 0);
    gate.open.add_permits(1_000);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn track_timeout_waits_without_blocking_the_runtime_even_with_drop_newest() {
    // One thread runs the producer, the coordinator and the sink: a
    // blocking wait here would deadlock, an async one lets them deliver.
    let (gate, b) = gated(ch_ingest::WhenFull::DropNewest);
    let opener = {
        let gate = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            gate.open.add_permits(1_000);
        })
    };
    for i in 0..200 {
        b.track_timeout(ev(i), Duration::from_secs(30))
            .await
            .unwrap();
    }
    opener.await.unwrap();
    let s = b.stats();
    assert_eq!(
        s.dropped_full_rows, 0,
        "a waiting caller's rows are never dropped"
    );
    assert!(s.rejected_full > 0, "it did wait: {s:?}");
    assert_eq!(b.shutdown().await.unwrap().rows, 200);
    assert_eq!(gate.inner.rows(), 200);
    // The timeout hands the row back, whatever the policy.
    let (gate, b) = gated(ch_ingest::WhenFull::DropNewest);
    let mut i = 0;
    // Fill until a row is dropped, twice: in between the coordinator takes
    // what it can while the gate holds the sink, then nothing moves.
    for round in 1..=2 {
        while b.stats().dropped_full_rows < round {
            b.track(ev(i)).unwrap();
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match b.track_timeout(ev(7_777), Duration::from_millis(20)).await {
        Err(TrackError::Full(row)) => assert_eq!(row.tweet_id, 7_777),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().block_timeouts, 1);
    gate.open.add_permits(1_000);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_and_its_predecessor_count_each_others_spill_as_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let spilling = |sink: &MemorySink| {
        sink.set_failing(true);
        Buffer::builder()
            .shards(1)
            .max_rows(10)
            .max_inflight(1)
            .retry(quick_retries())
            .spill_dir(dir.path())
    };
    let down = MemorySink::new();
    let old: Buffer<PostEvent> = spilling(&down).build(down.clone()).unwrap();
    for i in 0..20 {
        old.track(ev(i)).unwrap();
    }
    assert_eq!(old.flush().await.unwrap().spilled_rows, 20);
    // The successor spills too, while the old engine still runs: each
    // replays whatever it claims first, the other's files included.
    let up = MemorySink::new();
    let new: Buffer<PostEvent> = spilling(&up)
        .takes_over_spill_of(&old)
        .build(up.clone())
        .unwrap();
    for i in 100..110 {
        new.track(ev(i)).unwrap();
    }
    assert_eq!(new.flush().await.unwrap().spilled_rows, 10);
    down.set_failing(false);
    up.set_failing(false);
    let sum = || {
        let mut sum = old.stats();
        sum.add(&new.stats());
        sum
    };
    wait_until("every file replayed", || {
        sum().replayed_rows == 30 && ch_ingest_spill_files(dir.path()).is_empty()
    })
    .await;
    old.shutdown().await.unwrap();
    new.shutdown().await.unwrap();
    let sum = sum();
    assert_eq!(sum.replayed_foreign_rows, 0);
    assert_eq!(sum.spill_pending_rows, 0);
    assert_eq!(sum.tracked_rows, 30);
    assert_eq!(
        sum.tracked_rows,
        sum.buffered_rows
            + sum.pending_rows
            + sum.acked_rows
            + sum.spill_pending_rows
            + sum.failed_rows
    );
    let mut ids = tweet_ids(&down);
    ids.extend(tweet_ids(&up));
    ids.sort_unstable();
    assert_eq!(ids, (0..20).chain(100..110).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_many_follows_the_when_full_policy_exactly_as_track() {
    // DropNewest: never refuses, drops and counts what does not fit.
    let (gate, b) = gated(ch_ingest::WhenFull::DropNewest);
    let mut rows = (0..1_000).map(ev);
    let accepted = b.track_many(&mut rows).expect("DropNewest never refuses");
    assert_eq!(
        rows.next().map(|e| e.tweet_id),
        None,
        "the whole iterator was taken"
    );
    let s = b.stats();
    assert!(s.dropped_full_rows > 0, "{s:?}");
    assert_eq!(accepted as u64, s.tracked_rows);
    assert_eq!(s.tracked_rows + s.dropped_full_rows, 1_000);
    gate.open.add_permits(1_000);
    assert_eq!(b.shutdown().await.unwrap().rows, s.tracked_rows);

    // Reject: hands back the first row that does not fit, the rest stay.
    let (gate, b) = gated(ch_ingest::WhenFull::Reject);
    let mut rows = (0..1_000).map(ev);
    let refused = match b.track_many(&mut rows) {
        Err(TrackError::Full(row)) => row,
        other => panic!("{other:?}"),
    };
    let s = b.stats();
    assert_eq!(refused.tweet_id, s.tracked_rows);
    assert_eq!(rows.next().map(|e| e.tweet_id), Some(s.tracked_rows + 1));
    gate.open.add_permits(1_000);
    assert_eq!(b.shutdown().await.unwrap().rows, s.tracked_rows);
}

#[tokio::test]
async fn rowbinary_rows_are_walked_by_the_schema_and_a_bad_one_leaves_nothing() {
    let schema =
        ch_ingest::Schema::parse("id UInt8, tag Enum8('a' = 1, 'b' = 2), name Nullable(String)")
            .unwrap();
    let sink = MemorySink::new();
    let b = Buffer::builder()
        .shards(1)
        .build_json(schema, sink.clone())
        .unwrap();
    b.track_rowbinary(&[1, 2, 0, 1, b'x']).unwrap();
    let field = |row: &[u8]| match b.track_rowbinary(row) {
        Err(ch_ingest::TrackJsonError::Decode(e)) => e.field,
        other => panic!("{row:?} was not refused: {other:?}"),
    };
    // An Enum value the type does not have, a Nullable marker that is not
    // 0 or 1, a string longer than the bytes, a row with bytes after it.
    assert_eq!(field(&[2, 3, 1]).as_deref(), Some("tag"));
    assert_eq!(field(&[2, 1, 7]).as_deref(), Some("name"));
    assert_eq!(field(&[2, 1, 0, 5, b'x']).as_deref(), Some("name"));
    assert_eq!(field(&[2, 1, 1, 0]), None);
    b.track_rowbinary(&[3, 1, 1]).unwrap();
    b.flush().await.unwrap();
    assert_eq!(sink.concat(), [1, 2, 0, 1, b'x', 3, 1, 1]);
    assert_eq!(sink.rows(), 2);
}

#[tokio::test]
async fn a_receipt_settles_for_its_own_rows_only() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(10)
        .retry(RetryPolicy::NONE)
        .build(sink.clone())
        .unwrap();
    // A's 10 rows seal at the threshold and their INSERT fails.
    sink.fail_next(1);
    let mut a = b.receipt();
    for i in 0..10 {
        b.track_noted(ev(i), &mut a).unwrap();
    }
    let a = b.settle(a).await.unwrap();
    assert_eq!((a.rows, a.stored_rows, a.failed_rows), (10, 0, 10));
    assert_eq!(a.failures.len(), 1);
    assert!(!a.is_stored());
    // B's 4 rows and C's 3 share one batch; only B settles, and its
    // answer does not mention A's failure.
    let mut b_rows = b.receipt();
    for i in 10..14 {
        b.track_noted(ev(i), &mut b_rows).unwrap();
    }
    let mut c = b.receipt();
    for i in 14..17 {
        b.track_noted(ev(i), &mut c).unwrap();
    }
    let settled = b.settle(b_rows).await.unwrap();
    assert_eq!((settled.rows, settled.stored_rows), (4, 4));
    assert!(settled.failures.is_empty() && settled.is_stored());
    // C's rows went out in that same batch: settling it answers at once.
    let settled = b.settle(c).await.unwrap();
    assert_eq!((settled.rows, settled.stored_rows), (3, 3));
    assert_eq!(sink.rows(), 7);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn settling_seals_only_the_shards_holding_the_receipts_rows() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(1_000)
        .build(sink.clone())
        .unwrap();
    let mut mine = b.receipt();
    b.track_noted(ev(1), &mut mine).unwrap();
    b.track_noted(ev(2), &mut mine).unwrap();
    let again = mine.clone();
    let settled = b.settle(mine).await.unwrap();
    assert_eq!(settled.stored_rows, 2);
    assert_eq!(sink.rows(), 2);
    // Someone else's row, then a receipt with nothing noted and one whose
    // rows are delivered already: neither seals that row.
    b.track(ev(3)).unwrap();
    assert_eq!(b.settle(b.receipt()).await.unwrap(), Default::default());
    assert_eq!(b.settle(again).await.unwrap().stored_rows, 2);
    assert_eq!(b.stats().buffered_rows, 1, "row 3 is still buffered");
    // A settle does not move where flush reports start: this one covers
    // everything since the engine started, the settled rows included.
    let report = b.flush().await.unwrap();
    assert_eq!(report.rows, 3);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_receipt_settled_after_a_flush_reported_its_failure_still_sees_it() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(5)
        .retry(RetryPolicy::NONE)
        .build(sink.clone())
        .unwrap();
    sink.set_failing(true);
    let mut late = b.receipt();
    for i in 0..5 {
        b.track_noted(ev(i), &mut late).unwrap();
    }
    // A flush passes the failed batch before the receipt is settled.
    assert_eq!(b.flush().await.unwrap().failed_rows, 5);
    sink.set_failing(false);
    let settled = b.settle(late).await.unwrap();
    assert_eq!((settled.failed_rows, settled.failures.len()), (5, 1));
    // And a settled failure is still in the next flush's report (settles
    // do not move its start), which /v1/flush answers with.
    let mut other = b.receipt();
    for i in 5..10 {
        sink.fail_next(1);
        b.track_noted(ev(i), &mut other).unwrap();
    }
    assert_eq!(b.settle(other).await.unwrap().failed_rows, 5);
    assert_eq!(b.flush().await.unwrap().failed_rows, 5);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipts_spilled_rows_are_counted_as_spilled_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .retry(quick_retries())
        .spill_dir(dir.path())
        .build(sink.clone())
        .unwrap();
    sink.set_failing(true);
    let mut r = b.receipt();
    for i in 0..3 {
        b.track_noted(ev(i), &mut r).unwrap();
    }
    let settled = b.settle(r).await.unwrap();
    assert_eq!(
        (
            settled.stored_rows,
            settled.spilled_rows,
            settled.failed_rows
        ),
        (0, 3, 0)
    );
    assert!(settled.is_stored(), "durably spilled counts as kept");
    sink.set_failing(false);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_receipt_of_another_engine_settles_as_closed() {
    let one: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
    let two: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
    let mut r = one.receipt();
    one.track_noted(ev(1), &mut r).unwrap();
    assert_eq!(two.settle(r).await, Err(ch_ingest::Closed));
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_receipt_settled_after_shutdown_is_told_its_rows_fate() {
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(4)
        .max_insert_rows(4)
        .retry(RetryPolicy::NONE)
        .build(sink.clone())
        .unwrap();
    // Four rows fail in one INSERT; three more are drained by the shutdown.
    sink.fail_next(1);
    let mut failed = b.receipt();
    for i in 0..4 {
        b.track_noted(ev(i), &mut failed).unwrap();
    }
    let mut drained = b.receipt();
    for i in 4..7 {
        b.track_noted(ev(i), &mut drained).unwrap();
    }
    let report = b.shutdown().await.unwrap();
    assert_eq!((report.rows, report.failed_rows), (3, 4));
    // Both settle after the engine stopped (a front door whose engine was
    // swapped mid-request does this), and each is told the truth.
    let settled = b.settle(drained).await.unwrap();
    assert_eq!((settled.rows, settled.stored_rows), (3, 3));
    let settled = b.settle(failed).await.unwrap();
    assert_eq!((settled.failed_rows, settled.failures.len()), (4, 1));
    assert_eq!(b.settle(b.receipt()).await.unwrap(), Default::default());
}
