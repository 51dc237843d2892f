//! ClickHouse's compressed-block framing (`decompress=1`: LZ4, ZSTD or none
//! per block, CityHash128 checksums verified) on arbitrary bytes: it never
//! panics nor unpacks past its limit.
#![no_main]

use ch_ingest_protocol::FuzzDecoder;
use libfuzzer_sys::fuzz_target;

// Counts the heap, so the decoders' amplification bound is asserted on
// every input (`ch_ingest_protocol::decode_bound`).
#[global_allocator]
static ALLOC: ch_ingest_protocol::fuzz_alloc::Counting = ch_ingest_protocol::fuzz_alloc::Counting;

fuzz_target!(|data: &[u8]| {
    ch_ingest_protocol::fuzz_decoder(FuzzDecoder::Blocks, data);
});
