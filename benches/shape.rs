//! The client-side cost of shaping one INSERT (see `sink::shape`): sorting
//! a 100 000-row INSERT by the table's key, transposing it to a Native
//! block, and both, for PostEvent rows in arrival order (time advancing,
//! event types and ids random, 200 shard batches of 500 rows, as the
//! coordinator hands them over) and for a wide 40-column row. Reference in
//! the same run: the `clickhouse` crate's `native::BlockBuilder` building
//! the same PostEvent block from Rust values it is given column by column
//! (its best case: the values are already decoded, which ours are not).
//!
//! `cargo bench -p ch-ingest --bench shape`; ns per row = 1e9 / (elements/s).

use bytes::{Bytes, BytesMut};
use ch_ingest::rowbinary::encode_row;
use ch_ingest::sink::native_block;
use ch_ingest::test_util::sort_rows;
use ch_ingest::{PostEvent, Schema};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u64 = 100_000;
const BATCH: u64 = 500;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Arrival order: time advances (10 000 events a second), the rest random.
fn post_events() -> Vec<PostEvent> {
    const TYPES: [&str; 6] = ["impression", "like", "click", "reply", "share", "view"];
    (0..ROWS)
        .map(|i| {
            let r = mix(i);
            PostEvent {
                event_type: TYPES[(r % 6) as usize].into(),
                tweet_id: 1_000_000_000_000_000_000 + (r >> 8) % 10_000_000,
                occurred_at: 1_700_000_000 + (i / 10_000) as u32,
                user_id: (!r.is_multiple_of(4)).then_some(r % 50_000_000),
                session_id: r
                    .is_multiple_of(2)
                    .then(|| format!("s-{:08x}", r % 100_000)),
                client: ["ios", "android", "web"][(r % 3) as usize].into(),
                country: *b"US",
                dwell_ms: r.is_multiple_of(3).then_some((r % 30_000) as u32),
            }
        })
        .collect()
}

fn post_event_chunks(events: &[PostEvent]) -> Vec<Bytes> {
    events
        .chunks(BATCH as usize)
        .map(|batch| {
            let mut buf = BytesMut::new();
            for e in batch {
                encode_row(e, &mut buf, None).unwrap();
            }
            buf.freeze()
        })
        .collect()
}

const WIDE_TYPES: [&str; 10] = [
    "UInt64",
    "String",
    "Int32",
    "Nullable(String)",
    "Float64",
    "DateTime",
    "LowCardinality(String)",
    "Nullable(UInt32)",
    "FixedString(4)",
    "Array(UInt16)",
];

/// 40 columns, `WIDE_TYPES` four times; RowBinary written by hand.
fn wide() -> (Schema, Vec<Bytes>) {
    let cols: Vec<(String, &str)> = (0..40)
        .map(|i| (format!("c{i}"), WIDE_TYPES[i % 10]))
        .collect();
    let schema = Schema::new(cols.iter().map(|(n, t)| (n.as_str(), *t))).unwrap();
    let put_str = |b: &mut Vec<u8>, s: &[u8]| {
        b.push(s.len() as u8);
        b.extend_from_slice(s);
    };
    let chunks = (0..ROWS / BATCH)
        .map(|c| {
            let mut b = Vec::new();
            for i in c * BATCH..(c + 1) * BATCH {
                let r = mix(i);
                for k in 0..40 {
                    let v = mix(r ^ k as u64);
                    match k % 10 {
                        0 => b.extend_from_slice(&(v % 1000).to_le_bytes()),
                        1 => put_str(&mut b, format!("user-{}", v % 5000).as_bytes()),
                        2 => b.extend_from_slice(&(v as i32).to_le_bytes()),
                        3 if v.is_multiple_of(2) => b.push(1),
                        3 => {
                            b.push(0);
                            put_str(&mut b, b"https://example.com/p");
                        }
                        4 => b.extend_from_slice(&((v % 10_000) as f64 / 7.0).to_le_bytes()),
                        5 => b.extend_from_slice(
                            &(1_700_000_000 + (i / 10_000) as u32).to_le_bytes(),
                        ),
                        6 => put_str(&mut b, [&b"ios"[..], b"android", b"web"][(v % 3) as usize]),
                        7 if v.is_multiple_of(3) => b.push(1),
                        7 => {
                            b.push(0);
                            b.extend_from_slice(&(v as u32).to_le_bytes());
                        }
                        8 => b.extend_from_slice(b"abcd"),
                        _ => {
                            b.push(2);
                            b.extend_from_slice(&(v as u16).to_le_bytes());
                            b.extend_from_slice(&((v >> 16) as u16).to_le_bytes());
                        }
                    }
                }
            }
            Bytes::from(b)
        })
        .collect();
    (schema, chunks)
}

fn post_event_schema() -> Schema {
    Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap()
}

fn shaping(c: &mut Criterion) {
    let events = post_events();
    let pe_chunks = post_event_chunks(&events);
    let pe = post_event_schema();
    let pe_key = ["event_type", "occurred_at", "tweet_id"];
    let (wide, wide_chunks) = wide();
    let wide_key = ["c6", "c5", "c0"];
    let mut g = c.benchmark_group("shape");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(20);
    for (name, schema, chunks, key) in [
        ("post_event", &pe, &pe_chunks, &pe_key),
        ("wide_40", &wide, &wide_chunks, &wide_key),
    ] {
        let sorted = sort_rows(schema, key, chunks, ROWS).unwrap().unwrap();
        g.bench_function(BenchmarkId::new("sort", name), |b| {
            b.iter(|| black_box(sort_rows(schema, key, black_box(chunks), ROWS).unwrap()))
        });
        g.bench_function(BenchmarkId::new("native", name), |b| {
            b.iter(|| black_box(native_block(schema, black_box(chunks), ROWS).unwrap()))
        });
        g.bench_function(BenchmarkId::new("sort+native", name), |b| {
            b.iter(|| {
                let s = sort_rows(schema, key, black_box(chunks), ROWS)
                    .unwrap()
                    .unwrap();
                black_box(native_block(schema, &[s], ROWS).unwrap())
            })
        });
        // Already in order: the walk and the check, no copy.
        g.bench_function(BenchmarkId::new("sort_sorted_input", name), |b| {
            b.iter(|| {
                black_box(sort_rows(schema, key, std::slice::from_ref(&sorted), ROWS).unwrap())
            })
        });
    }
    // The crate's block builder, from Rust values, column by column.
    g.bench_function(
        BenchmarkId::new("clickhouse_crate_block_builder", "post_event"),
        |b| {
            use clickhouse::native::builder::BlockBuilder;
            b.iter(|| {
                let mut block = BlockBuilder::new();
                block
                    .upsert_column::<&str>("event_type")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.event_type.as_str()))
                    .unwrap();
                block
                    .upsert_column::<u64>("tweet_id")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.tweet_id))
                    .unwrap();
                block
                    .upsert_column::<u32>("occurred_at")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.occurred_at))
                    .unwrap();
                block
                    .upsert_column::<Option<u64>>("user_id")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.user_id))
                    .unwrap();
                block
                    .upsert_column::<Option<&str>>("session_id")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.session_id.as_deref()))
                    .unwrap();
                block
                    .upsert_column::<&str>("client")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.client.as_str()))
                    .unwrap();
                block
                    .upsert_column::<&str>("country")
                    .unwrap()
                    .add_all(events.iter().map(|_| "US"))
                    .unwrap();
                block
                    .upsert_column::<Option<u32>>("dwell_ms")
                    .unwrap()
                    .add_all(events.iter().map(|e| e.dwell_ms))
                    .unwrap();
                black_box(block.build().unwrap())
            })
        },
    );
    g.finish();
}

criterion_group!(benches, shaping);
criterion_main!(benches);
