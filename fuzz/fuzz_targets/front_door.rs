//! The front door's decoders (ClickHouse's compressed-block framing, the
//! INSERT query parser, RowBinary, RowBinaryWithNamesAndTypes, Native,
//! TSV, CSV and Values by a schema, JSONEachRow) on arbitrary bytes: no panics, and what they accept
//! holds together (see `ch_ingest_protocol::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ch_ingest_protocol::fuzz(data);
});
