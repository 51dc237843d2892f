//! The front door's decoders (ClickHouse's compressed-block framing, the
//! INSERT query parser, RowBinary, RowBinaryWithNamesAndTypes, Native,
//! TSV, CSV and Values by a schema, JSONEachRow) on arbitrary bytes: no panics, and what they accept
//! holds together (see `ch_ingest_protocol::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Counts the heap, so the decoders' amplification bound is asserted on
// every input (`ch_ingest_protocol::decode_bound`).
#[global_allocator]
static ALLOC: ch_ingest_protocol::fuzz_alloc::Counting = ch_ingest_protocol::fuzz_alloc::Counting;

fuzz_target!(|data: &[u8]| {
    ch_ingest_protocol::fuzz(data);
});
