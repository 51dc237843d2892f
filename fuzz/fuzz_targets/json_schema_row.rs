//! An arbitrary schema from a small grammar plus arbitrary JSON: transcoding
//! never panics; it accepts and refuses what the serde_json transcoder it
//! replaced did, with the same bytes (but for the numbers
//! `json_reference::inexact_number` names); every accepted row decodes back
//! as exactly one row that consumes all its bytes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ch_ingest::json::reference as json_reference;
use ch_ingest::rowbinary::decode_row;
use ch_ingest::Transcoder;
use ch_ingest::{Schema, Type};
use libfuzzer_sys::fuzz_target;

fn ty(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Type> {
    let leaves = [
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "UInt128",
        "UInt256",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "Int128",
        "Int256",
        "Float32",
        "Float64",
        "Bool",
        "String",
        "FixedString(3)",
        "Date",
        "Date32",
        "DateTime",
        "DateTime64(3)",
        "DateTime64(9, 'UTC')",
        "UUID",
        "IPv4",
        "IPv6",
        "Decimal(9, 2)",
        "Decimal(18, 4)",
        "Decimal(38, 10)",
        "Decimal(76, 20)",
        "Enum8('a' = 1, 'b' = -2)",
        "Enum16('x' = 1000)",
        "LowCardinality(String)",
    ];
    let pick = if depth >= 3 {
        0
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match pick {
        1 => Type::Nullable(Box::new(Type::parse(u.choose(&leaves)?).unwrap())),
        2 => Type::Array(Box::new(ty(u, depth + 1)?)),
        3 => Type::Map(Box::new(Type::String), Box::new(ty(u, depth + 1)?)),
        4 => {
            let n = u.int_in_range(1..=3)?;
            Type::Tuple(
                (0..n)
                    .map(|_| ty(u, depth + 1).map(|t| (None, t)))
                    .collect::<Result<_, _>>()?,
            )
        }
        5 => Type::Tuple(vec![
            (Some("a".into()), ty(u, depth + 1)?),
            (Some("b".into()), ty(u, depth + 1)?),
        ]),
        _ => Type::parse(u.choose(&leaves)?).unwrap(),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ncols) = u.int_in_range(1..=4u8) else {
        return;
    };
    let mut cols = Vec::new();
    for i in 0..ncols {
        let Ok(t) = ty(&mut u, 0) else { return };
        // The schema must survive its own text form.
        let text = t.to_string();
        assert_eq!(Type::parse(&text).as_ref(), Ok(&t), "{text}");
        cols.push((format!("c{i}"), text));
    }
    let schema = Schema::new(cols).unwrap();
    let json: &[u8] = <&[u8]>::arbitrary_take_rest(u).unwrap_or_default();
    let deny = json.first().is_some_and(|b| b & 1 == 1);
    let mut t = Transcoder::new(schema.clone()).deny_unknown_fields(deny);
    let mut out = vec![0xAAu8];
    let mut old = vec![0xAAu8];
    let result = t.transcode(json, &mut out);
    let before = json_reference::transcode(&schema, deny, json, &mut old);
    assert_eq!(
        result.is_ok(),
        before.is_ok(),
        "new: {result:?}\nold: {before:?}"
    );
    if result.is_ok() {
        assert!(
            out == old || json_reference::inexact_number(json),
            "new: {out:?}\nold: {old:?}"
        );
    }
    match result {
        Ok(()) => {
            let mut input = &out[1..];
            decode_row(&schema, &mut input).expect("an accepted row must decode");
            assert!(input.is_empty(), "the row must consume all its bytes");
        }
        Err(_) => assert_eq!(out, [0xAA], "a failed row must leave no bytes behind"),
    }
});
