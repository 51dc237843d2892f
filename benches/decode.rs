//! JSON decoding: `PostEvent::from_json` and the schema transcoder, in MB/s
//! of input, beside `serde_json::from_slice` into an equivalent derived
//! struct (the reference), measured in the same run.

use ch_ingest::Transcoder;
use ch_ingest::{PostEvent, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `#[derive(Deserialize)]` gives for the same event: no id strings, no
/// RFC 3339, no validation. The floor a hand-rolled decoder would start from.
#[allow(dead_code)]
#[derive(Deserialize)]
struct Reference {
    event_type: String,
    tweet_id: u64,
    occurred_at: u64,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    client: String,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    dwell_ms: Option<u32>,
}

fn lines() -> Vec<Vec<u8>> {
    (0..1000u64)
        .map(|i| {
            format!(
                r#"{{"event_type":"{}","tweet_id":{},"occurred_at":{},"user_id":{},"session_id":"s-{:08x}","client":"android","country":"BR","dwell_ms":{}}}"#,
                ["impression", "like", "click"][(i % 3) as usize],
                1_000_000_000_000_000_000 + i,
                1_700_000_000 + i,
                i * 31,
                i,
                i % 30_000
            )
            .into_bytes()
        })
        .collect()
}

fn bench_decode(c: &mut Criterion) {
    let input = lines();
    let total: usize = input.iter().map(|l| l.len()).sum();
    let mut g = c.benchmark_group("decode_post_event_json_x1000");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("serde_json_derive_reference", |b| {
        b.iter(|| {
            for l in &input {
                black_box(serde_json::from_slice::<Reference>(black_box(l)).unwrap());
            }
        })
    });
    g.bench_function("post_event_from_json", |b| {
        b.iter(|| {
            for l in &input {
                black_box(PostEvent::from_json(black_box(l)).unwrap());
            }
        })
    });
    let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    let mut t = Transcoder::new(schema);
    let mut out = Vec::with_capacity(total);
    g.bench_function("schema_transcoder_to_rowbinary", |b| {
        b.iter(|| {
            out.clear();
            for l in &input {
                t.transcode(black_box(l), &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
