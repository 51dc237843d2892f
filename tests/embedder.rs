//! The embedder's first hour, as a newcomer's program does it from the
//! README alone, against the private 18.16: a row type of their own
//! tracked from four threads, a wrapper sink written the obvious way, and
//! the error paths they meet first (a column the table lacks, a wrong
//! table name), each saying what is wrong where they will look.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink, InsertBatch, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The newcomer's row: the table's columns, named as in the table.
#[derive(serde::Serialize)]
struct Click {
    event_type: String,
    tweet_id: u64,
    occurred_at: u32,
}

/// The same, with a column the table does not have.
#[derive(serde::Serialize)]
struct ClickWithExtra {
    event_type: String,
    tweet_id: u64,
    occurred_at: u32,
    referrer: String,
}

/// A wrapper written the obvious way: count what went through, forward
/// the rest.
struct Counting<S> {
    inner: S,
    rows: Arc<AtomicU64>,
}

impl<S: Sink> Sink for Counting<S> {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.inner.insert(batch).await?;
        self.rows.fetch_add(batch.rows(), Relaxed);
        Ok(())
    }

    fn table(&self) -> Option<&str> {
        self.inner.table()
    }
}

fn click_table(server: &support::Server, name: &str) -> String {
    server.fresh_table(
        name,
        "(event_type String, tweet_id UInt64, occurred_at DateTime) ENGINE = MergeTree ORDER BY tweet_id",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_threads_of_a_row_type_of_their_own_through_a_wrapper_sink() {
    let server = server_or_skip!();
    let table = click_table(server, "embedder_clicks");
    let rows = Arc::new(AtomicU64::new(0));
    let sink = Counting {
        inner: ClickHouseSink::new(nodelay_client().with_url(&server.url), &table),
        rows: rows.clone(),
    };
    let buffer: Buffer<Click> = Buffer::builder().build(sink).unwrap();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let buffer = buffer.clone();
            std::thread::spawn(move || {
                for i in 0..50_000u64 {
                    let click = Click {
                        event_type: "click".into(),
                        tweet_id: t * 1_000_000 + i,
                        occurred_at: 1_700_000_000,
                    };
                    // A full buffer hands the row back: try again.
                    let mut row = click;
                    loop {
                        match buffer.track(row) {
                            Ok(()) => break,
                            Err(e) => {
                                row = e.into_inner();
                                std::thread::sleep(std::time::Duration::from_millis(1));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let report = buffer.shutdown().await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(report.rows, 200_000);
    assert_eq!(rows.load(Relaxed), 200_000);
    let distinct = server.query(&format!("SELECT uniqExact(tweet_id) FROM {table}"));
    assert_eq!(distinct.trim(), "200000");
}

/// A column the table lacks: the INSERT is refused with ClickHouse's own
/// code and text, the rows are listed as failed, and the log names the
/// column (not "no sorting key", which the table has). A wrong table
/// name is asked twice more before it is believed, and the error says so.
#[test]
fn the_first_errors_say_what_is_wrong() {
    let server = server_or_skip!();
    let table = click_table(server, "embedder_extra");
    let (logs, _guard) = support::Captured::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
        let buffer: Buffer<ClickWithExtra> = Buffer::builder()
            .retry(support::check::quick_retries())
            .build(sink)
            .unwrap();
        buffer
            .track(ClickWithExtra {
                event_type: "click".into(),
                tweet_id: 1,
                occurred_at: 1_700_000_000,
                referrer: "r".into(),
            })
            .unwrap();
        let report = buffer.shutdown().await.unwrap();
        assert_eq!(report.failed_rows, 1);
        let error = &report.failures[0].error;
        assert!(error.to_string().contains("referrer"), "{error}");

        let sink =
            ClickHouseSink::new(nodelay_client().with_url(&server.url), "no_such_table_here");
        let buffer: Buffer<PostEvent> = Buffer::builder().build(sink).unwrap();
        buffer
            .track(PostEvent::new("like", 1, 1_700_000_000))
            .unwrap();
        let report = buffer.shutdown().await.unwrap();
        let failure = &report.failures[0];
        assert_eq!(failure.attempts, 1);
        assert!(
            failure
                .error
                .to_string()
                .contains("the same answer 3 times"),
            "{}",
            failure.error
        );
    });
    let text = logs.text();
    assert!(
        text.contains("the rows have a column the table does not") && text.contains("referrer"),
        "{text}"
    );
    assert!(!text.contains("no sorting key"), "{text}");
    assert_eq!(server.count(&table), 0);
}
