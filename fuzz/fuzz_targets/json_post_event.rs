//! Arbitrary bytes into `PostEvent::from_json`: never panics; every accepted
//! event re-encodes (canonical JSON, and RowBinary) and decodes to itself.
#![no_main]

use ch_ingest::{decode_row, encode_row};
use ch_ingest::{PostEvent, Schema};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = PostEvent::from_json(data) else { return };
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
