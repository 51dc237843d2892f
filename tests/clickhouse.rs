//! The engine against a real ClickHouse (a private 18.16 server, or
//! `CLICKHOUSE_URL`): thresholds, tick, barriers, drain, ordering, and
//! byte-exact content for every column type the server has.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink};
use ch_ingest::{Buffer, PostEvent, TrackError};
use serde::Serialize;
use std::time::Duration;
use support::check::rich_event as ev;

fn sink(server: &support::Server, table: &str) -> ClickHouseSink {
    ClickHouseSink::new(nodelay_client().with_url(&server.url), table)
}

fn post_table(server: &support::Server, name: &str) -> String {
    let table = format!("{name}_{}", std::process::id());
    server.query(&format!("DROP TABLE IF EXISTS {table}"));
    server.query(&PostEvent::create_table_sql(&table));
    table
}

async fn wait_count(server: &support::Server, table: &str, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = server.count(table);
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{table}: {n} of {want} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn server_version_is_printed() {
    let server = server_or_skip!();
    println!(
        "ClickHouse server under test: {} at {}",
        server.version, server.url
    );
    assert!(!server.version.is_empty());
}

#[tokio::test]
async fn threshold_flush_inserts_at_the_500th_row() {
    let server = server_or_skip!();
    let table = post_table(server, "threshold");
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .flush_interval(Duration::from_secs(3600))
        .build(sink(server, &table))
        .unwrap();
    for i in 0..499 {
        b.track(ev(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.count(&table), 0, "499 rows must stay buffered");
    b.track(ev(499)).unwrap();
    wait_count(server, &table, 500).await;
    assert_eq!(b.stats().inserts, 1);
}

#[tokio::test]
async fn tick_flush_delivers_a_partial_batch() {
    let server = server_or_skip!();
    let table = post_table(server, "tick");
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .flush_interval(Duration::from_millis(200))
        .build(sink(server, &table))
        .unwrap();
    for i in 0..7 {
        b.track(ev(i)).unwrap();
    }
    wait_count(server, &table, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_after_clickhouse_has_every_row() {
    let server = server_or_skip!();
    let table = post_table(server, "flush");
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .build(sink(server, &table))
        .unwrap();
    for i in 0..10_123 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        server.count(&table),
        10_123,
        "flush returned before the rows were in"
    );
    assert_eq!(b.stats().acked_rows, 10_123);
}

#[tokio::test]
async fn shutdown_drains_everything() {
    let server = server_or_skip!();
    let table = post_table(server, "shutdown");
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(3)
        .build(sink(server, &table))
        .unwrap();
    for i in 0..1_234 {
        b.track(ev(i)).unwrap();
    }
    let report = b.shutdown().await.unwrap();
    assert_eq!(report.rows, 1_234);
    assert_eq!(server.count(&table), 1_234);
    assert!(matches!(b.track(ev(0)), Err(TrackError::Closed(_))));
}

#[tokio::test]
async fn server_errors_keep_the_server_text_and_code() {
    let server = server_or_skip!();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .build(sink(server, "no_such_table_here"))
        .unwrap();
    b.track(ev(1)).unwrap();
    let report = b.flush().await.unwrap();
    assert_eq!(report.failed_rows, 1);
    let err = &report.failures[0].error;
    match err {
        ch_ingest::sink::SinkError::Server { code, message } => {
            assert_eq!(*code, Some(60), "{message}");
            assert!(message.contains("no_such_table_here"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
}

#[derive(Serialize)]
struct Seq {
    thread: u8,
    seq: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_threads_of_250k_rows_arrive_exactly_once_in_order() {
    let server = server_or_skip!();
    // Log keeps insertion order, so order can be read back; with one INSERT in
    // flight, batches commit in the order they were sealed.
    let table = server.fresh_table("order", "(thread UInt8, seq UInt32) ENGINE = Log");
    let b: Buffer<Seq> = Buffer::builder()
        .shards(4)
        .max_inflight(1)
        .queue_batches(256)
        .build(sink(server, &table))
        .unwrap();
    let producers: Vec<_> = (0..4u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut full = 0u64;
                for seq in 0..250_000u32 {
                    let mut row = Seq { thread: t, seq };
                    loop {
                        match b.track(row) {
                            Ok(()) => break,
                            Err(TrackError::Full(r)) => {
                                full += 1;
                                row = r;
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                full
            })
        })
        .collect();
    let full: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    let report = b.shutdown().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(b.stats().rejected_full, full);
    let bytes = server.query_bytes(&format!(
        "SELECT thread, seq FROM {table} SETTINGS max_threads = 1 FORMAT RowBinary"
    ));
    assert_eq!(bytes.len(), 1_000_000 * 5);
    let mut next = [0u32; 4];
    for row in bytes.chunks_exact(5) {
        let t = row[0] as usize;
        let seq = u32::from_le_bytes(row[1..5].try_into().unwrap());
        assert_eq!(seq, next[t], "thread {t}: duplicate, gap or reorder");
        next[t] += 1;
    }
    assert_eq!(next, [250_000; 4]);
}

/// Every column type ClickHouse 18.16 has, as the Rust types users write.
#[derive(Serialize, Clone)]
struct AllTypes {
    k: u32,
    u8_: u8,
    u16_: u16,
    u64_: u64,
    i8_: i8,
    i16_: i16,
    i32_: i32,
    i64_: i64,
    f32_: f32,
    f64_: f64,
    s: String,
    fs: [u8; 4],
    d: u16,
    dt: u32,
    dt_tz: u32,
    dec9: i32,
    dec18: i64,
    dec38: i128,
    #[serde(with = "clickhouse::serde::uuid")]
    id: uuid::Uuid,
    e8: i8,
    e16: i16,
    ns: Option<String>,
    nu: Option<u32>,
    arr: Vec<String>,
    arr_n: Vec<Option<u8>>,
    arr2: Vec<Vec<i64>>,
    tup: (String, u8),
    lc: String,
    #[serde(rename = "nest.a")]
    nest_a: Vec<u16>,
    #[serde(rename = "nest.b")]
    nest_b: Vec<String>,
}

const ALL_TYPES_DDL: &str = "(
    k UInt32, u8_ UInt8, u16_ UInt16, u64_ UInt64, i8_ Int8, i16_ Int16, i32_ Int32, i64_ Int64,
    f32_ Float32, f64_ Float64, s String, fs FixedString(4), d Date, dt DateTime,
    dt_tz DateTime('Asia/Tokyo'), dec9 Decimal(9, 2), dec18 Decimal(18, 4), dec38 Decimal(38, 10),
    id UUID, e8 Enum8('a' = -1, 'b' = 5), e16 Enum16('x' = 1000, 'y' = -1000),
    ns Nullable(String), nu Nullable(UInt32), arr Array(String), arr_n Array(Nullable(UInt8)),
    arr2 Array(Array(Int64)), tup Tuple(String, UInt8), lc LowCardinality(String),
    nest Nested(a UInt16, b String)
) ENGINE = MergeTree ORDER BY k";

fn all_types_row(k: u32) -> AllTypes {
    let n = k as i64;
    AllTypes {
        k,
        u8_: (k % 256) as u8,
        u16_: u16::MAX - k as u16,
        u64_: u64::MAX - k as u64,
        i8_: i8::MIN + (k % 100) as i8,
        i16_: -(k as i16),
        i32_: i32::MIN + k as i32,
        i64_: i64::MIN + n,
        f32_: k as f32 * 0.5,
        f64_: -(k as f64) / 3.0,
        s: format!("row {k} \u{1F600} \"quoted\" \t tab"),
        fs: *b"ab\0\0",
        d: 19_000 + k as u16,
        dt: 1_700_000_000 + k,
        dt_tz: 1_600_000_000 + k,
        dec9: -123_456_789 + k as i32,
        dec18: 999_999_999_999_999_999 - n,
        dec38: -(10i128.pow(37)) + n as i128,
        id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677 + k as u128),
        e8: if k.is_multiple_of(2) { -1 } else { 5 },
        e16: if k.is_multiple_of(2) { 1000 } else { -1000 },
        ns: k.is_multiple_of(2).then(|| format!("n{k}")),
        nu: k.is_multiple_of(3).then_some(k),
        arr: (0..k % 4).map(|i| format!("e{i}")).collect(),
        arr_n: vec![Some(1), None, Some(k as u8)],
        arr2: vec![vec![n, -n], vec![]],
        tup: (format!("t{k}"), 7),
        lc: ["ios", "android", "web"][(k % 3) as usize].into(),
        nest_a: vec![1, 2, k as u16],
        nest_b: vec!["x".into(), "y".into(), format!("{k}")],
    }
}

#[tokio::test]
async fn every_type_reads_back_byte_for_byte() {
    let server = server_or_skip!();
    let table = server.fresh_table("all_types", ALL_TYPES_DDL);
    let b: Buffer<AllTypes> = Buffer::builder()
        .shards(1)
        .max_rows(100)
        .build(sink(server, &table))
        .unwrap();
    let rows: Vec<AllTypes> = (0..1000).map(all_types_row).collect();
    let mut expected = bytes::BytesMut::new();
    let mut cols = None;
    for r in &rows {
        let learned = ch_ingest::rowbinary::encode_row(r, &mut expected, cols.as_deref()).unwrap();
        if learned.is_some() {
            cols = learned;
        }
        b.track(r.clone()).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    let cols = cols
        .unwrap()
        .join(", ")
        .replace("nest.a", "`nest.a`")
        .replace("nest.b", "`nest.b`");
    let got = server.query_bytes(&format!(
        "SELECT {cols} FROM {table} ORDER BY k FORMAT RowBinary"
    ));
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected[..],
        "read-back bytes differ from what was sent"
    );
}

#[tokio::test]
async fn ndjson_rows_through_a_schema_fetched_from_the_server() {
    let server = server_or_skip!();
    let table = post_table(server, "json_rows");
    let client = nodelay_client().with_url(&server.url);
    let schema = ch_ingest::Schema::fetch(&client, &table).await.unwrap();
    assert_eq!(schema.columns().len(), 8);
    let b = Buffer::builder()
        .shards(1)
        .build_json(schema, sink(server, &table))
        .unwrap();
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            r#"{{"event_type":"like","tweet_id":"{}","occurred_at":"2023-11-14T22:13:20Z","country":"BR","dwell_ms":{i}}}"#,
            u64::MAX - i
        ));
        body.push('\n');
    }
    body.push_str("{\"event_type\":\"like\",\"tweet_id\":-5}\n");
    let tracked = b.track_ndjson(body.as_bytes());
    assert_eq!(
        (tracked.report.accepted, tracked.report.rejected.len()),
        (1000, 1)
    );
    b.flush().await.unwrap();
    let got = server.query(&format!(
        "SELECT count(), min(tweet_id), any(country), sum(dwell_ms), any(user_id) FROM {table} FORMAT TSV"
    ));
    assert_eq!(got.trim(), "1000\t18446744073709550616\tBR\t499500\t\\N");
}
