//! A type that derives `clickhouse::Row + Serialize` encodes to exactly the
//! bytes `clickhouse::Client::insert::<T>` sends: both requests are captured
//! by a tiny HTTP server in this test and compared byte for byte.

use ch_ingest::rowbinary::encode_row;
use ch_ingest::sink::InsertBatch;
use ch_ingest::sink::{ClickHouseSink, InsertFormat, InsertOrder, Sink};
use clickhouse::types::{Int256, UInt256};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::sync::mpsc;
use time::macros::{date, datetime};

#[derive(Debug, Clone, Serialize, clickhouse::Row)]
struct Rich {
    u8_: u8,
    u16_: u16,
    u32_: u32,
    u64_: u64,
    u128_: u128,
    u256: UInt256,
    i8_: i8,
    i16_: i16,
    i32_: i32,
    i64_: i64,
    i128_: i128,
    i256: Int256,
    f32_: f32,
    f64_: f64,
    flag: bool,
    s: String,
    fixed: [u8; 3],
    #[serde(with = "clickhouse::serde::time::date")]
    day: time::Date,
    #[serde(with = "clickhouse::serde::time::date32")]
    day32: time::Date,
    #[serde(with = "clickhouse::serde::time::datetime")]
    at: time::OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    at_ms: time::OffsetDateTime,
    #[serde(with = "clickhouse::serde::uuid")]
    id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::ipv4")]
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    dec32: i32,
    dec64: i64,
    dec128: i128,
    enum8: i8,
    enum16: i16,
    maybe: Option<String>,
    maybe_not: Option<u64>,
    list: Vec<u32>,
    nested_list: Vec<Vec<String>>,
    pair: (String, u8),
    map: BTreeMap<String, u64>,
    lc: String,
}

fn rich(i: u64) -> Rich {
    Rich {
        u8_: i as u8,
        u16_: 65_000,
        u32_: 4_000_000_000,
        u64_: u64::MAX - i,
        u128_: u128::MAX - i as u128,
        u256: UInt256::from(i),
        i8_: -5,
        i16_: -30_000,
        i32_: -2_000_000_000,
        i64_: i64::MIN + i as i64,
        i128_: i128::MIN + 1,
        i256: Int256::from(-(i as i64)),
        f32_: 1.5,
        f64_: -2.25e100,
        flag: i.is_multiple_of(2),
        s: format!("hello {i} \u{e9}"),
        fixed: *b"abc",
        day: date!(2024 - 02 - 29),
        day32: date!(1900 - 01 - 01),
        at: datetime!(2023-11-14 22:13:20 UTC),
        at_ms: datetime!(2023-11-14 22:13:20.123 UTC),
        id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_0fed_cba9_8765_4321 ^ i as u128),
        v4: Ipv4Addr::new(192, 168, 1, i as u8),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16),
        dec32: 12_345,
        dec64: -987_654_321,
        dec128: 10i128.pow(30),
        enum8: 1,
        enum16: -300,
        maybe: Some("x".into()),
        maybe_not: None,
        list: vec![1, 2, 3],
        nested_list: vec![vec!["a".into()], vec![]],
        pair: ("p".into(), 9),
        map: [("a".to_string(), 1), ("b".to_string(), i)]
            .into_iter()
            .collect(),
        lc: "web".into(),
    }
}

/// Accepts one HTTP request, answers 200, and returns (request line, body).
fn capture_one(listener: TcpListener) -> mpsc::Receiver<(String, Vec<u8>)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut chunked = false;
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let lower = h.to_ascii_lowercase();
                if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                    chunked = true;
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if h == "\r\n" {
                    break;
                }
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    let mut size = String::new();
                    r.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    r.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            } else {
                body.resize(length, 0);
                r.read_exact(&mut body).unwrap();
            }
            let mut w = stream;
            // The body answers a `SELECT version()` (a RowBinary String);
            // an INSERT ignores it.
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n\x0718.16.1",
            )
            .unwrap();
            if tx.send((line, body)).is_err() {
                return;
            }
        }
    });
    rx
}

// Multi-thread: the test blocks on std channels while the sink's task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rowbinary_matches_the_clickhouse_crate_byte_for_byte() {
    let rows: Vec<Rich> = (0..50).map(rich).collect();

    // What the official crate sends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let captured = capture_one(listener);
    let client = clickhouse::Client::default()
        .with_url(&url)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false);
    let mut insert = client.insert::<Rich>("rich").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    let (_, theirs) = captured.recv().unwrap();

    // What we encode, and what our sink sends through the same crate.
    let mut ours = bytes::BytesMut::new();
    let mut cols = None;
    for r in &rows {
        if let Some(c) = encode_row(r, &mut ours, cols.as_deref()).unwrap() {
            cols = Some(c);
        }
    }
    assert_eq!(
        cols.as_deref().unwrap(),
        <Rich as clickhouse::Row>::COLUMN_NAMES
    );
    assert_eq!(ours.len(), theirs.len());
    assert!(
        ours[..] == theirs[..],
        "encoded bytes differ from the clickhouse crate's"
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let captured = capture_one(listener);
    let sink = ClickHouseSink::new(
        ch_ingest::sink::nodelay_client()
            .with_url(&url)
            .with_compression(clickhouse::Compression::None),
        "rich",
    );
    // RowBinary as it was encoded: what the crate's `insert` sends.
    sink.insert_shape(&InsertOrder::Arrival, InsertFormat::RowBinary);
    // The sink asks the server's version first; answer that, then the INSERT.
    let batch = InsertBatch::new(0, &cols.unwrap(), vec![ours.freeze()], rows.len() as u64);
    let send = tokio::spawn(async move { sink.insert(&batch).await });
    let (version_req, _) = captured.recv().unwrap();
    assert!(version_req.starts_with("POST") || version_req.starts_with("GET"));
    let (insert_req, sent) = captured.recv().unwrap();
    send.await.unwrap().unwrap();
    assert!(
        !insert_req.contains("async_insert"),
        "18.16 must not get async_insert"
    );
    assert!(insert_req.contains("INSERT"), "{insert_req}");
    assert!(sent[..] == theirs[..], "the sink sent different bytes");
}
