//! JSON decoding: `PostEvent::from_json` and the schema transcoder, in MB/s
//! of input, beside general-purpose parsers decoding the same lines into an
//! equivalent derived struct (the references: `serde_json`, `sonic_rs`,
//! `simd_json`), all measured in the same run. Inputs, 1 000 events each:
//! `seed` (numeric ids and times, every field present, as the seed's
//! producers send), `browser` (ids as decimal strings, RFC 3339 times,
//! optional fields missing in half the events, as browsers send), and
//! `browser_10pct_bad` (the same with every tenth line malformed).

use ch_ingest::Transcoder;
use ch_ingest::{PostEvent, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `#[derive(Deserialize)]` gives for the seed's events: no id
/// strings, no RFC 3339, no validation. The floor a hand-rolled decoder
/// would start from.
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

/// The browser's events, derived: ids and times stay strings (a derive
/// does not parse them), so the references do less than our decoders.
#[allow(dead_code)]
#[derive(Deserialize)]
struct BrowserReference {
    event_type: String,
    tweet_id: String,
    occurred_at: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    dwell_ms: Option<u32>,
}

const TYPES: [&str; 3] = ["impression", "like", "click"];

fn seed_lines() -> Vec<Vec<u8>> {
    (0..1000u64)
        .map(|i| {
            format!(
                r#"{{"event_type":"{}","tweet_id":{},"occurred_at":{},"user_id":{},"session_id":"s-{:08x}","client":"android","country":"BR","dwell_ms":{}}}"#,
                TYPES[(i % 3) as usize],
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

fn browser_lines(bad_every: Option<u64>) -> Vec<Vec<u8>> {
    (0..1000u64)
        .map(|i| {
            let id = 1_000_000_000_000_000_000 + i;
            let time = format!("2026-12-02T05:{:02}:{:02}.{:03}Z", i / 60 % 60, i % 60, i % 1000);
            let line = if i % 2 == 0 {
                format!(
                    r#"{{"event_type":"{}","tweet_id":"{id}","occurred_at":"{time}","user_id":"{}","session_id":"s-{i:08x}","client":"web","country":"DE","dwell_ms":{}}}"#,
                    TYPES[(i % 3) as usize],
                    i * 31,
                    i % 30_000
                )
            } else {
                format!(
                    r#"{{"event_type":"{}","tweet_id":"{id}","occurred_at":"{time}"}}"#,
                    TYPES[(i % 3) as usize]
                )
            };
            match bad_every {
                // A line cut short, as a client that died mid-write leaves it.
                Some(n) if i % n == n - 1 => line.as_bytes()[..line.len() / 2].to_vec(),
                _ => line.into_bytes(),
            }
        })
        .collect()
}

/// Every decoder over `input`; a result is checked for being what the
/// input says (all good but the malformed lines), not unwrapped.
fn group<R: for<'de> Deserialize<'de>>(c: &mut Criterion, name: &str, input: &[Vec<u8>]) {
    let total: usize = input.iter().map(|l| l.len()).sum();
    let mut g = c.benchmark_group(format!("decode_{name}_x1000"));
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("serde_json_derive_reference", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| serde_json::from_slice::<R>(black_box(l)).is_ok())
                .count()
        })
    });
    g.bench_function("sonic_rs_derive_reference", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| sonic_rs::from_slice::<R>(black_box(l)).is_ok())
                .count()
        })
    });
    // simd_json parses in place: each line is copied first, as a server
    // holding the body read-only would have to.
    let mut scratch = Vec::with_capacity(4096);
    g.bench_function("simd_json_derive_reference", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| {
                    scratch.clear();
                    scratch.extend_from_slice(black_box(l));
                    simd_json::serde::from_slice::<R>(&mut scratch).is_ok()
                })
                .count()
        })
    });
    g.bench_function("post_event_from_json", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| PostEvent::from_json(black_box(l)).is_ok())
                .count()
        })
    });
    let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    let mut t = Transcoder::new(schema);
    let mut out = Vec::with_capacity(total);
    g.bench_function("schema_transcoder_to_rowbinary", |b| {
        b.iter(|| {
            out.clear();
            let ok = input
                .iter()
                .filter(|l| t.transcode(black_box(l), &mut out).is_ok())
                .count();
            black_box((ok, out.len()))
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let seed = seed_lines();
    let browser = browser_lines(None);
    let bad = browser_lines(Some(10));
    // Every decoder must agree on what decodes, or the MB/s compare
    // different work.
    for (input, good) in [(&seed, 1000), (&browser, 1000), (&bad, 900)] {
        let ours = input
            .iter()
            .filter(|l| PostEvent::from_json(l).is_ok())
            .count();
        assert_eq!(ours, good, "PostEvent::from_json on a bench input");
    }
    group::<Reference>(c, "seed", &seed);
    group::<BrowserReference>(c, "browser", &browser);
    group::<BrowserReference>(c, "browser_10pct_bad", &bad);
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
