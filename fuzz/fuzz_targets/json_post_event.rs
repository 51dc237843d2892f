//! Arbitrary bytes into `PostEvent::from_json`: never panics; it accepts and
//! refuses what the serde_json decoder it replaced did, with equal events
//! (but for the numbers `json_reference::inexact_number` names); every
//! string-scan implementation (SSE2, the portable one) finds the same stops;
//! every accepted event re-encodes (canonical JSON, and RowBinary) and
//! decodes to itself.
#![no_main]

use ch_ingest::json::reference as json_reference;
use ch_ingest::json::JsonOptions;
use ch_ingest::rowbinary::{decode_row, encode_row};
use ch_ingest::test_util::json_scan_all;
use ch_ingest::{PostEvent, Schema};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for from in 0..data.len().min(48) {
        let all = json_scan_all(data, from);
        assert!(all.iter().all(|(_, r)| *r == all[0].1), "{all:?} at {from}");
    }
    let deny = data.first().is_some_and(|b| b & 1 == 1);
    let options = JsonOptions {
        deny_unknown_fields: deny,
    };
    let new = PostEvent::from_json_with(data, options);
    let old = json_reference::post_event_from_json(data, options);
    assert_eq!(new.is_ok(), old.is_ok(), "new: {new:?}\nold: {old:?}");
    if let (Ok(a), Ok(b)) = (&new, &old) {
        assert!(
            a == b || json_reference::inexact_number(data),
            "new: {a:?}\nold: {b:?}"
        );
    }
    let Ok(event) = PostEvent::from_json(data) else {
        return;
    };
    let json = event.to_json();
    let again = PostEvent::from_json(json.as_bytes()).expect("canonical JSON must decode");
    assert_eq!(again, event);

    let mut buf = bytes::BytesMut::new();
    encode_row(&event, &mut buf, None).expect("a decoded event must encode");
    let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    let mut input = &buf[..];
    let row = decode_row(&schema, &mut input).expect("encoded event must decode");
    assert!(input.is_empty(), "decoding must consume the whole row");
    assert_eq!(row["tweet_id"], event.tweet_id);
    assert_eq!(row["event_type"], event.event_type.as_str());
});
