//! The shape of INSERTs, seen on the real 18.16 server: a materialized view
//! receives each INSERT's block as it was sent (before the MergeTree sorts
//! it into a part) and copies it into a `Log` table, which keeps rows in
//! the order they came. So the `Log` table shows exactly the order the
//! engine sent: it must hold the tracked rows (as a multiset) in the
//! table's key order, in both formats, and in arrival order when asked.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink, InsertFormat, InsertOrder};
use ch_ingest::{Buffer, PostEvent};
use std::time::Duration;

/// Rows from two producer threads (so shard batches interleave), keys
/// deliberately out of order; every row unique by `tweet_id`.
fn events() -> Vec<PostEvent> {
    let types = ["view", "like", "share", "reply", "bookmark"];
    (0..20_000u64)
        .map(|i| {
            let mut e = PostEvent::new(
                types[(i * 7 % 5) as usize],
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20,
                1_700_000_000 + ((i * 13) % 600) as u32,
            );
            e.user_id = (i % 3 != 0).then_some(i);
            e.client = ["ios", "web", ""][(i % 3) as usize].into();
            e
        })
        .collect()
}

/// The rows of `select` as TSV lines, in the order the `Log` table holds
/// them: read by one stream (with more, Log reads its blocks in parallel
/// and the order of the answer is not the order stored).
fn lines(server: &support::Server, select: &str) -> Vec<String> {
    server
        .query(&format!("{select} SETTINGS max_threads = 1"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends `events()` through an engine; (table, the view's copy, INSERTs made).
async fn send(
    server: &support::Server,
    name: &str,
    order: InsertOrder,
    format: InsertFormat,
) -> (String, String, u64) {
    let table = server.fresh_table(
        &format!("shaped_{name}"),
        "(event_type String, tweet_id UInt64, occurred_at DateTime, user_id Nullable(UInt64), \
         session_id Nullable(String), client String, country FixedString(2), dwell_ms Nullable(UInt32)) \
         ENGINE = MergeTree ORDER BY (event_type, occurred_at, tweet_id)",
    );
    let seen = server.fresh_table(
        &format!("seen_{name}"),
        "(event_type String, tweet_id UInt64, occurred_at DateTime, user_id Nullable(UInt64)) ENGINE = Log",
    );
    let view = format!("{table}_mv");
    server.query(&format!("DROP TABLE IF EXISTS {view}"));
    server.query(&format!(
        "CREATE MATERIALIZED VIEW {view} TO {seen} AS \
         SELECT event_type, tweet_id, occurred_at, user_id FROM {table}"
    ));
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let buffer: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .max_rows(1_000)
        .max_insert_rows(100_000)
        // INSERTs commit in dispatch order, so the view's copy is in send order.
        .max_inflight(1)
        .flush_interval(Duration::from_secs(60))
        .insert_order(order)
        .insert_format(format)
        .build(sink)
        .unwrap();
    let all = events();
    std::thread::scope(|s| {
        for half in all.chunks(all.len() / 2) {
            let buffer = &buffer;
            s.spawn(move || {
                for e in half {
                    buffer.track(e.clone()).unwrap();
                }
            });
        }
    });
    // Sealed batches queue while nothing is in flight only briefly; one
    // flush takes what is there as few INSERTs as fit.
    let report = buffer.flush().await.unwrap();
    assert_eq!(report.rows, all.len() as u64, "{report:?}");
    buffer.shutdown().await.unwrap();
    let inserts = buffer.stats().inserts;
    assert_eq!(server.count(&table), all.len() as u64);
    (table, seen, inserts)
}

fn tsv(e: &PostEvent) -> String {
    let user = e.user_id.map_or("\\N".to_string(), |u| u.to_string());
    format!(
        "{}\t{}\t{}\t{user}",
        e.event_type, e.tweet_id, e.occurred_at
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_inserts_hold_the_same_rows_in_key_order() {
    let server = server_or_skip!();
    let mut want: Vec<String> = events().iter().map(tsv).collect();
    want.sort();
    for format in [InsertFormat::Native, InsertFormat::RowBinary] {
        let (_, seen, inserts) =
            send(server, &format.to_string(), InsertOrder::Sorted, format).await;
        let sent = lines(
            server,
            &format!("SELECT event_type, tweet_id, toUInt32(occurred_at), user_id FROM {seen}"),
        );
        let mut multiset = sent.clone();
        multiset.sort();
        assert!(multiset == want, "{format}: not the rows tracked");
        // Each INSERT is one block in the view, sorted within itself: the
        // key goes down only where one INSERT ends and the next begins.
        let key = |l: &String| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f[2].parse::<u32>().unwrap(),
                f[1].parse::<u64>().unwrap(),
            )
        };
        let descents = sent.windows(2).filter(|w| key(&w[0]) > key(&w[1])).count() as u64;
        assert!(
            descents < inserts,
            "{format}: {descents} places where the key goes down, for {inserts} INSERT(s)"
        );
        // And it did reorder: the tracked order goes down all the time.
        assert!(
            inserts < 10,
            "{inserts} INSERTs: too many to show the order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_order_is_kept_when_asked() {
    let server = server_or_skip!();
    let (_, seen, _) = send(
        server,
        "arrival",
        InsertOrder::Arrival,
        InsertFormat::Native,
    )
    .await;
    let sent = lines(
        server,
        &format!("SELECT event_type, tweet_id, toUInt32(occurred_at), user_id FROM {seen}"),
    );
    // Each producer's rows keep their relative order.
    let all = events();
    for half in all.chunks(all.len() / 2) {
        let mine: std::collections::HashSet<String> = half.iter().map(tsv).collect();
        let got: Vec<&String> = sent.iter().filter(|l| mine.contains(*l)).collect();
        let want: Vec<String> = half.iter().map(tsv).collect();
        let same = got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| *g == w);
        let first = got.iter().zip(&want).position(|(g, w)| *g != w);
        assert!(
            same,
            "a producer's rows are not in the order tracked: {} of {} rows, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_key_and_a_table_without_one() {
    let server = server_or_skip!();
    // Declared: by tweet_id only.
    let (_, seen, inserts) = send(
        server,
        "declared",
        InsertOrder::SortedBy(vec!["tweet_id".into()]),
        InsertFormat::Native,
    )
    .await;
    let ids: Vec<u64> = lines(server, &format!("SELECT tweet_id FROM {seen}"))
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 20_000);
    let descents = ids.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    assert!(descents < inserts, "not by tweet_id: {descents} descents");

    // A Log table has no key: rows go as they came (and Native still works).
    let table = server.fresh_table("unkeyed", "(k UInt64, s String) ENGINE = Log");
    #[derive(serde::Serialize)]
    struct Row {
        k: u64,
        s: String,
    }
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let buffer: Buffer<Row> = Buffer::builder().max_inflight(1).build(sink).unwrap();
    for k in (0..1_000u64).rev() {
        buffer
            .track(Row {
                k,
                s: k.to_string(),
            })
            .unwrap();
    }
    buffer.shutdown().await.unwrap();
    let ks: Vec<u64> = lines(server, &format!("SELECT k FROM {table}"))
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ks, (0..1_000u64).rev().collect::<Vec<_>>());
}
