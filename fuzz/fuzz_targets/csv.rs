//! The front door's CSV decoder (also CSVWithNames, in every dialect: the
//! first byte's bits pick the header, the delimiter and the quote kinds)
//! on arbitrary bytes, by the fuzz table's schema.
//! No panics, decoding stays within its memory bound, and every row a decoder accepts walks as one row (see
//! `ch_ingest_protocol::fuzz_decoder`).
#![no_main]

use ch_ingest_protocol::FuzzDecoder;
use libfuzzer_sys::fuzz_target;

// Counts the heap, so the decoders' amplification bound is asserted on
// every input (`ch_ingest_protocol::decode_bound`).
#[global_allocator]
static ALLOC: ch_ingest_protocol::fuzz_alloc::Counting = ch_ingest_protocol::fuzz_alloc::Counting;

fuzz_target!(|data: &[u8]| {
    ch_ingest_protocol::fuzz_decoder(FuzzDecoder::Csv, data);
});
