//! The INSERT shaping passes on arbitrary bytes: sorting by a key and
//! transposing to Native never panic; on rows that decode by the schema
//! both succeed, and the sorted rows are the same multiset as the input.
#![no_main]

use bytes::Bytes;
use ch_ingest::rowbinary::decode_all;
use ch_ingest::sink::native_block;
use ch_ingest::test_util::sort_rows;
use ch_ingest::Schema;
use libfuzzer_sys::fuzz_target;

const SCHEMAS: [&[(&str, &str)]; 3] = [
    &[
        ("event_type", "String"),
        ("tweet_id", "UInt64"),
        ("occurred_at", "DateTime"),
        ("user_id", "Nullable(UInt64)"),
        ("country", "FixedString(2)"),
    ],
    &[
        ("k", "Int16"),
        ("f", "Float64"),
        ("a", "Array(Nullable(String))"),
        ("t", "Tuple(UInt8, String)"),
        ("m", "Map(String, Int32)"),
    ],
    &[
        ("s", "LowCardinality(String)"),
        ("w", "Int128"),
        ("u", "UUID"),
    ],
];
const KEYS: [&[&str]; 3] = [
    &["event_type", "occurred_at", "tweet_id"],
    &["k", "f"],
    &["s", "w", "u"],
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let which = pick as usize % SCHEMAS.len();
    let schema = Schema::new(SCHEMAS[which].iter().copied()).unwrap();
    let chunks = [Bytes::copy_from_slice(rest)];
    let decoded = decode_all(&schema, rest);
    let rows = decoded.as_ref().map_or(0, |r| r.len() as u64);
    let sorted = sort_rows(&schema, KEYS[which], &chunks, rows);
    let native = native_block(&schema, &chunks, rows);
    if let Ok(input) = decoded {
        let sorted = sorted.expect("rows that decode sort");
        native.expect("rows that decode transpose");
        if let Some(out) = sorted {
            assert_eq!(out.len(), rest.len());
            let mut a: Vec<String> = input
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect();
            let mut b: Vec<String> = decode_all(&schema, &out)
                .expect("sorted rows decode")
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "the sort changed the rows");
        }
    }
});
