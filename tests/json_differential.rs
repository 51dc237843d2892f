//! The crate's JSON reader against the serde_json-based decoders it
//! replaced (`json::reference`): on generated and mutated JSON,
//! both accept and refuse the same rows, and accepted rows are equal. The
//! only differences allowed are the ones the reader makes on purpose:
//! numbers with a fraction or exponent (serde_json's default float parse is
//! not always correctly rounded; ours is) and integers beyond 64 bits (read
//! exactly, where serde_json goes through `f64`). The fuzz targets
//! `json_post_event` and `json_schema_row` run the same comparison.

use ch_ingest::json::reference;
use ch_ingest::json::{JsonOptions, NdjsonCursor};
use ch_ingest::{PostEvent, Schema, Transcoder};
use proptest::prelude::*;

use reference::inexact_number;

const KEYS: &[&str] = &[
    "event_type",
    "tweet_id",
    "occurred_at",
    "user_id",
    "session_id",
    "client",
    "country",
    "dwell_ms",
    "a",
    "b",
    "c",
    "m",
    "t",
    "zz",
    "event\\u005ftype",
    "",
];

const VALUES: &[&str] = &[
    "0",
    "-0",
    "01",
    "1",
    "-1",
    "1.5",
    "1.9",
    "-1.5",
    "1e3",
    "1E-2",
    "2.5e+1",
    "1.",
    ".5",
    "1e",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "1700000000",
    "1700000000123",
    "1e400",
    "true",
    "false",
    "null",
    "nul",
    "\"\"",
    "\"like\"",
    "\"9007199254740993\"",
    "\"2023-11-15T00:13:20+02:00\"",
    "\"2023-11-14 22:13:20.5\"",
    "\"br\"",
    "\"USA\"",
    "\"a\\\"b\"",
    "\"\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud800\"",
    "\"\\udc00x\"",
    "\"\\x\"",
    "\"tab\\there\"",
    "\"é\"",
    "\"1.5\"",
    "\"-3\"",
    "[]",
    "[1,2]",
    "[1,]",
    "[\"x\",2]",
    "{}",
    "{\"k\":5}",
    "{\"a\":\"x\",\"b\":2}",
    "{\"b\":1}",
    "[[1],[2,3]]",
    "{\"k\":[1,{\"j\":null}]}",
    "\"\\/\"",
    "[1 2]",
];

/// A JSON object of keys and values from the pools above, possibly cut or
/// with one byte changed.
fn object() -> impl Strategy<Value = Vec<u8>> {
    let member = (prop::sample::select(KEYS), prop::sample::select(VALUES));
    (
        prop::collection::vec(member, 0..9),
        prop::sample::select(&[" ", "", "\n", "\t", "\r\n"][..]),
        any::<u16>(),
        prop_oneof![Just(None), any::<(u8, u8)>().prop_map(Some)],
    )
        .prop_map(|(members, space, cut, change)| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{space}{v}"))
                .collect();
            let mut json = format!("{space}{{{}}}{space}", body.join(",")).into_bytes();
            if let Some((at, byte)) = change {
                let at = at as usize % json.len();
                json[at] = byte;
            }
            if cut % 8 == 0 {
                json.truncate(cut as usize / 8 % (json.len() + 1));
            }
            json
        })
}

fn compare_post_event(json: &[u8], options: JsonOptions) {
    let new = PostEvent::from_json_with(json, options);
    let old = reference::post_event_from_json(json, options);
    let text = String::from_utf8_lossy(json);
    assert_eq!(
        new.is_ok(),
        old.is_ok(),
        "{text}\nnew: {new:?}\nold: {old:?}"
    );
    if let (Ok(a), Ok(b)) = (&new, &old) {
        assert!(
            a == b || inexact_number(json),
            "{text}\nnew: {a:?}\nold: {b:?}"
        );
    }
    if let (Err(a), Err(b)) = (&new, &old) {
        // Both name the same field when the row is valid JSON.
        if a.kind != ch_ingest::json::DecodeErrorKind::Syntax
            && b.kind != ch_ingest::json::DecodeErrorKind::Syntax
        {
            assert_eq!(a.field, b.field, "{text}\nnew: {a}\nold: {b}");
        }
    }
}

fn compare_row(schema: &Schema, json: &[u8], deny: bool) {
    let mut t = Transcoder::new(schema.clone()).deny_unknown_fields(deny);
    let mut new = vec![7u8];
    let mut old = vec![7u8];
    let a = t.transcode(json, &mut new);
    let b = reference::transcode(schema, deny, json, &mut old);
    let text = String::from_utf8_lossy(json);
    assert_eq!(a.is_ok(), b.is_ok(), "{text}\nnew: {a:?}\nold: {b:?}");
    if a.is_ok() {
        assert!(
            new == old || inexact_number(json),
            "{text}\nnew: {new:?}\nold: {old:?}"
        );
    } else {
        assert_eq!(new, [7], "a refused row leaves nothing behind");
    }
}

fn schema() -> Schema {
    Schema::parse(
        "event_type String, tweet_id UInt64, occurred_at DateTime, a Nullable(Int16), \
         b Decimal(18, 4), c Array(Nullable(String)), m Map(String, Float64), \
         t Tuple(a String, b UInt8), dwell_ms UInt128",
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn post_event_decodes_as_the_serde_decoder_did(json in object(), deny in any::<bool>()) {
        compare_post_event(&json, JsonOptions { deny_unknown_fields: deny });
    }

    #[test]
    fn rows_transcode_as_the_serde_transcoder_did(json in object(), deny in any::<bool>()) {
        compare_row(&schema(), &json, deny);
    }

    #[test]
    fn ndjson_bodies_decode_line_by_line_as_before(lines in prop::collection::vec(object(), 0..6)) {
        // The one-pass cursor against splitting first and decoding each line.
        let body = lines.join(&b'\n');
        let (events, report) = PostEvent::from_ndjson(&body, JsonOptions::default());
        let mut want = Vec::new();
        let mut rejected = Vec::new();
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match reference::post_event_from_json(line, JsonOptions::default()) {
                Ok(e) => want.push(e),
                Err(_) => rejected.push(i + 1),
            }
        }
        let got: Vec<usize> = report.rejected.iter().map(|r| r.line).collect();
        prop_assert_eq!(&got, &rejected, "{}", String::from_utf8_lossy(&body));
        if !inexact_number(&body) {
            prop_assert_eq!(events, want);
        }
        // And the transcoder's cursor agrees with its one-row path.
        let schema = schema();
        let mut t = Transcoder::new(schema.clone());
        let mut cursor = NdjsonCursor::new(&body);
        let mut by_line = Vec::new();
        let mut out = Vec::new();
        while let Some(row) = t.transcode_line(&mut cursor, &mut out) {
            by_line.push((row.line, row.result.is_ok()));
        }
        let mut want = Vec::new();
        let mut each = Vec::new();
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                want.push((i + 1, t.transcode(line, &mut each).is_ok()));
            }
        }
        prop_assert_eq!(by_line, want);
        prop_assert_eq!(out, each);
    }
}

#[test]
fn the_forced_portable_scan_is_the_one_in_use_when_asked() {
    let forced = std::env::var_os("CH_INGEST_JSON_SCAN").is_some_and(|v| v == "portable");
    if forced {
        assert_eq!(ch_ingest::test_util::json_scan(), "portable");
    }
    // Long strings cross every vector width and the tails.
    let long = format!(
        r#"{{"event_type":"{}","tweet_id":"1","occurred_at":0,"client":"{}é{}\"\\"}}"#,
        "x".repeat(63),
        "y".repeat(37),
        "z".repeat(100)
    );
    compare_post_event(long.as_bytes(), JsonOptions::default());
    let e = PostEvent::from_json(long.as_bytes()).unwrap();
    assert_eq!(e.client.len(), 37 + 2 + 100 + 2);
}
