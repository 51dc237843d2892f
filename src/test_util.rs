//! Helpers for tests, benches and this project's own tools (`ch-ingest
//! load`, `bench sweep`, the sidecar's tests), behind the `test-util`
//! feature: not part of the engine's API and not covered by semver.
//!
//! Owns: re-exporting what those need from inside the engine (SQL quoting,
//! the JSON decoders' reference, readers of the spill and dead-letter formats).
//! Must not: hold logic of its own; the engine's code is the one copy.

/// The serde_json-based JSON decoders the reader replaced: the oracle of
/// the differential tests and fuzz targets.
/// Every JSON string-scan implementation's answer, for differential fuzzing.
pub use crate::json::scan::every_implementation as json_scan_all;
/// Which string scan the JSON reader uses here: `"sse2"` or `"portable"`
/// (forced with `CH_INGEST_JSON_SCAN=portable`).
pub use crate::json::scan::implementation as json_scan;

/// Appends `value` as a LEB128 varint (RowBinary's lengths), with the one
/// codec the encoder uses.
pub fn leb128_put(buf: &mut impl bytes::BufMut, value: u64) {
    crate::rowbinary::leb128::put(buf, value)
}
pub use crate::sink::shape::passes::sort_rows;

/// Spill files: list a directory (oldest first) and read one back.
pub mod spill {
    pub use crate::spill::{list, read, SpillError, Spilled, QUARANTINE};
}

/// Dead letters: list a directory (oldest first) and read one back.
pub mod dead_letter {
    pub use crate::dead_letter::{list, read};
}
