//! Arbitrary values of many types, encoded by the serde encoder, decode (by
//! schema) to themselves and consume exactly their bytes.
#![no_main]

use arbitrary::Arbitrary;
use ch_ingest::rowbinary::{decode_all, encode_row};
use ch_ingest::Schema;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Arbitrary, Serialize, Debug)]
struct Row {
    a: u8,
    b: u16,
    c: u32,
    d: u64,
    e: i8,
    f: i16,
    g: i32,
    h: i64,
    i: u128,
    j: i128,
    k: f64,
    l: f32,
    m: bool,
    n: String,
    o: Option<String>,
    p: Vec<u16>,
    q: (String, i32),
    r: BTreeMap<String, Option<u8>>,
    s: [u8; 4],
    t: Vec<Vec<Option<i64>>>,
}

const SCHEMA: &str = "a UInt8, b UInt16, c UInt32, d UInt64, e Int8, f Int16, g Int32, h Int64, i UInt128, \
    j Int128, k Float64, l Float32, m Bool, n String, o Nullable(String), p Array(UInt16), q Tuple(String, Int32), \
    r Map(String, Nullable(UInt8)), s FixedString(4), t Array(Array(Nullable(Int64)))";

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| {
            Value::String(if f.is_nan() {
                "NaN".into()
            } else if f > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            })
        })
}

fuzz_target!(|rows: Vec<Row>| {
    let schema = Schema::parse(SCHEMA).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut cols = None;
    for row in &rows {
        if let Some(c) = encode_row(row, &mut buf, cols.as_deref()).expect("encodes") {
            cols = Some(c);
        }
    }
    let decoded = decode_all(&schema, &buf).expect("decodes exactly the rows written");
    assert_eq!(decoded.len(), rows.len());
    for (row, got) in rows.iter().zip(&decoded) {
        let fixed_end = row.s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let want = json!({
            "a": row.a, "b": row.b, "c": row.c, "d": row.d, "e": row.e, "f": row.f, "g": row.g, "h": row.h,
            "i": row.i.to_string(), "j": row.j.to_string(), "k": float(row.k), "l": float(row.l as f64),
            "m": row.m, "n": row.n, "o": row.o, "p": row.p, "q": [row.q.0, row.q.1], "r": row.r,
            "s": String::from_utf8_lossy(&row.s[..fixed_end]), "t": row.t,
        });
        let got = Value::Object(got.clone());
        // NaN payloads are not values: compare NaN as its text.
        assert_eq!(got, want);
    }
});
