//! The front door's TabSeparated decoder (also WithNames and
//! WithNamesAndTypes: the first byte's bits 2 and 4 pick the header) on
//! arbitrary bytes, by the fuzz table's schema.
//! No panics, and every row a decoder accepts walks as one row (see
//! `ch_ingest_protocol::fuzz_decoder`).
#![no_main]

use ch_ingest_protocol::FuzzDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ch_ingest_protocol::fuzz_decoder(FuzzDecoder::Tsv, data);
});
