//! Helpers for tests, benches and this project's own tools (`ch-ingest
//! load`, `bench sweep`, the sidecar's tests), behind the `test-util`
//! feature: not part of the engine's API and not covered by semver.
//!
//! Owns: re-exporting what those need from inside the engine (SQL quoting,
//! the NDJSON line splitter, readers of the spill and dead-letter formats).
//! Must not: hold logic of its own; the engine's code is the one copy.

pub use crate::json::ndjson_lines;

/// Appends `value` as a LEB128 varint (RowBinary's lengths), with the one
/// codec the encoder uses.
pub fn leb128_put(buf: &mut impl bytes::BufMut, value: u64) {
    crate::rowbinary::leb128::put(buf, value)
}
pub use crate::sink::shape::passes::{native_block, sort_rows};
pub use crate::sink::sql::{insert_sql, quote_ident, quote_table};

/// Spill files: list a directory (oldest first) and read one back.
pub mod spill {
    pub use crate::spill::{list, read, SpillError, Spilled, QUARANTINE};
}

/// Dead letters: list a directory (oldest first) and read one back.
pub mod dead_letter {
    pub use crate::dead_letter::{list, read};
}
