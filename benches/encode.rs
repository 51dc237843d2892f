//! RowBinary encoding: the serde encoder against a hand-written encoder for
//! the same row, measured in the same run (ns/row and MB/s).

use bytes::{BufMut, BytesMut};
use ch_ingest::rowbinary::encode_row;
use ch_ingest::PostEvent;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn events() -> Vec<PostEvent> {
    (0..1000u64)
        .map(|i| PostEvent {
            event_type: ["impression", "like", "click"][(i % 3) as usize].into(),
            tweet_id: 1_000_000_000_000_000_000 + i,
            occurred_at: 1_700_000_000 + i as u32,
            user_id: (i % 4 != 0).then_some(i * 31),
            session_id: (i % 2 == 0).then(|| format!("s-{i:08x}")),
            client: "android".into(),
            country: *b"BR",
            dwell_ms: (i % 3 == 0).then_some(i as u32),
        })
        .collect()
}

/// What a careful person writes by hand for this one row type.
fn hand_encode(e: &PostEvent, buf: &mut BytesMut) {
    fn put_str(buf: &mut BytesMut, s: &str) {
        // Analytics strings are short: one length byte (LEB128 below 128).
        assert!(s.len() < 0x80);
        buf.put_u8(s.len() as u8);
        buf.put_slice(s.as_bytes());
    }
    put_str(buf, &e.event_type);
    buf.put_u64_le(e.tweet_id);
    buf.put_u32_le(e.occurred_at);
    match e.user_id {
        Some(v) => {
            buf.put_u8(0);
            buf.put_u64_le(v)
        }
        None => buf.put_u8(1),
    }
    match &e.session_id {
        Some(v) => {
            buf.put_u8(0);
            put_str(buf, v)
        }
        None => buf.put_u8(1),
    }
    put_str(buf, &e.client);
    buf.put_slice(&e.country);
    match e.dwell_ms {
        Some(v) => {
            buf.put_u8(0);
            buf.put_u32_le(v)
        }
        None => buf.put_u8(1),
    }
}

fn bench_encode(c: &mut Criterion) {
    let rows = events();
    let mut check = BytesMut::new();
    let cols = encode_row(&rows[0], &mut check, None).unwrap().unwrap();
    let mut sized = BytesMut::new();
    for r in &rows {
        encode_row(r, &mut sized, Some(&cols)).unwrap();
    }
    let mut hand = BytesMut::new();
    for r in &rows {
        hand_encode(r, &mut hand);
    }
    assert_eq!(sized, hand, "the reference must produce the same bytes");

    let mut g = c.benchmark_group("encode_post_event_x1000");
    g.throughput(Throughput::Bytes(sized.len() as u64));
    let mut buf = BytesMut::with_capacity(sized.len() * 2);
    g.bench_function("ch_ingest_serde", |b| {
        b.iter(|| {
            buf.clear();
            for r in &rows {
                encode_row(black_box(r), &mut buf, Some(&cols)).unwrap();
            }
            black_box(buf.len())
        })
    });
    g.bench_function("hand_written_reference", |b| {
        b.iter(|| {
            buf.clear();
            for r in &rows {
                hand_encode(black_box(r), &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
