//! JSON decoding: `PostEvent::from_json` and the schema transcoder, in MB/s
//! of input, beside general-purpose parsers decoding the same lines into an
//! equivalent derived struct (the references: `serde_json`, `sonic_rs`,
//! `simd_json`), all measured in the same run. Inputs, 1 000 events each:
//! `seed` (numeric ids and times, every field present, as the seed's
//! producers send), `browser` (ids as decimal strings, RFC 3339 times,
//! optional fields missing in half the events, as browsers send), and
//! `browser_10pct_bad` (the same with every tenth line malformed); `wide40`
//! (40 columns of eight types, through the schema transcoder only); and
//! whole NDJSON bodies of the browser lines (`ndjson_browser`), where ours
//! read each line straight from the body. `previous_serde_decoder` is the
//! serde_json-based decoder the crate's reader replaced (kept as the
//! differential tests' oracle), in the same run.

use ch_ingest::json::reference;
use ch_ingest::json::{JsonOptions, NdjsonCursor};
use ch_ingest::{PostEvent, Schema, Transcoder};
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
    references::<R>(&mut g, input);
    g.bench_function("post_event_from_json", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| PostEvent::from_json(black_box(l)).is_ok())
                .count()
        })
    });
    g.bench_function("post_event_previous_serde_decoder", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|l| {
                    reference::post_event_from_json(black_box(l), JsonOptions::default()).is_ok()
                })
                .count()
        })
    });
    let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    transcoders(&mut g, &schema, input, total);
    g.finish();
}

/// The schema transcoder and the decoder it replaced, row by row.
fn transcoders(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    schema: &Schema,
    input: &[Vec<u8>],
    total: usize,
) {
    let mut out = Vec::with_capacity(total);
    g.bench_function("transcoder_previous_serde_decoder", |b| {
        b.iter(|| {
            out.clear();
            let ok = input
                .iter()
                .filter(|l| reference::transcode(schema, false, black_box(l), &mut out).is_ok())
                .count();
            black_box((ok, out.len()))
        })
    });
    let mut t = Transcoder::new(schema.clone());
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
}

/// serde_json, sonic_rs and simd_json into the derived struct `R`.
fn references<R: for<'de> Deserialize<'de>>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    input: &[Vec<u8>],
) {
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
}

/// The references over 40 columns, and the transcoder.
fn wide(c: &mut Criterion) {
    let input = wide_lines();
    let schema = Schema::parse(&wide_schema()).unwrap();
    let mut t = Transcoder::new(schema.clone());
    let mut out = Vec::new();
    for l in &input {
        t.transcode(l, &mut out).expect("a wide line transcodes");
        serde_json::from_slice::<Wide>(l).expect("a wide line derives");
    }
    let total: usize = input.iter().map(|l| l.len()).sum();
    let mut g = c.benchmark_group("decode_wide40_x1000");
    g.throughput(Throughput::Bytes(total as u64));
    references::<Wide>(&mut g, &input);
    transcoders(&mut g, &schema, &input, total);
    g.finish();
}

/// Whole bodies: the references split lines and decode each; ours read the
/// body once.
fn ndjson(c: &mut Criterion) {
    let body = browser_lines(None).join(&b'\n');
    let mut g = c.benchmark_group("decode_ndjson_browser_x1000");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("serde_json_derive_reference", |b| {
        b.iter(|| {
            black_box(&body)
                .split(|&b| b == b'\n')
                .filter(|l| serde_json::from_slice::<BrowserReference>(l).is_ok())
                .count()
        })
    });
    g.bench_function("sonic_rs_derive_reference", |b| {
        b.iter(|| {
            black_box(&body)
                .split(|&b| b == b'\n')
                .filter(|l| sonic_rs::from_slice::<BrowserReference>(l).is_ok())
                .count()
        })
    });
    g.bench_function("post_event_from_ndjson", |b| {
        b.iter(|| {
            PostEvent::from_ndjson(black_box(&body), JsonOptions::default())
                .0
                .len()
        })
    });
    let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    let mut t = Transcoder::new(schema);
    let mut out = Vec::with_capacity(body.len());
    g.bench_function("schema_transcoder_ndjson_cursor", |b| {
        b.iter(|| {
            out.clear();
            let mut cursor = NdjsonCursor::new(black_box(&body));
            let mut ok = 0;
            while let Some(row) = t.transcode_line(&mut cursor, &mut out) {
                ok += row.result.is_ok() as usize;
            }
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
    wide(c);
    ndjson(c);
    println!("JSON string scan: {}", ch_ingest::test_util::json_scan());
}

/// Eight column types, five times: the schema's text.
fn wide_schema() -> String {
    const TYPES: [&str; 8] = [
        "UInt64",
        "Int32",
        "Float64",
        "String",
        "DateTime",
        "Nullable(String)",
        "Array(UInt32)",
        "Bool",
    ];
    (0..40)
        .map(|i| format!("c{i:02} {}", TYPES[i % 8]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn wide_lines() -> Vec<Vec<u8>> {
    (0..1000u64)
        .map(|i| {
            let fields: Vec<String> = (0..40)
                .map(|c| {
                    let v = match c % 8 {
                        0 => format!("{}", 1_000_000_000_000 + i * 7 + c),
                        1 => format!("-{}", i * 13 + c),
                        2 => format!("{}.{:03}", i, (i * 7 + c) % 1000),
                        3 => format!("\"value-{i}-{c}\""),
                        4 => format!("\"2026-12-02T05:{:02}:{:02}Z\"", i / 60 % 60, i % 60),
                        5 if i % 3 == 0 => "null".to_string(),
                        5 => format!("\"n{i}\""),
                        6 => format!("[{},{},{}]", i, i + 1, c),
                        _ => (if (i + c) % 2 == 0 { "true" } else { "false" }).to_string(),
                    };
                    format!("\"c{c:02}\":{v}")
                })
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
        .collect()
}

/// What a derive gives for the wide rows (times stay strings).
#[allow(dead_code)]
#[derive(Deserialize)]
struct Wide {
    c00: u64,
    c01: i32,
    c02: f64,
    c03: String,
    c04: String,
    c05: Option<String>,
    c06: Vec<u32>,
    c07: bool,
    c08: u64,
    c09: i32,
    c10: f64,
    c11: String,
    c12: String,
    c13: Option<String>,
    c14: Vec<u32>,
    c15: bool,
    c16: u64,
    c17: i32,
    c18: f64,
    c19: String,
    c20: String,
    c21: Option<String>,
    c22: Vec<u32>,
    c23: bool,
    c24: u64,
    c25: i32,
    c26: f64,
    c27: String,
    c28: String,
    c29: Option<String>,
    c30: Vec<u32>,
    c31: bool,
    c32: u64,
    c33: i32,
    c34: f64,
    c35: String,
    c36: String,
    c37: Option<String>,
    c38: Vec<u32>,
    c39: bool,
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
