//! What ClickHouse clients send over HTTP, read without a server: the
//! INSERT statement at the start of a request ([`query`]), the formats its
//! data comes in, decoded by a table's schema into ch-ingest's RowBinary
//! rows ([`formats`]: JSONEachRow, RowBinary, RowBinaryWithNamesAndTypes,
//! Native, TabSeparated, CSV), ClickHouse's compressed-block framing
//! ([`blocks`]), and the errors in ClickHouse's own codes ([`ChError`]).
//!
//! `ch-ingest serve`'s front door is its one user; it is a crate of its own
//! so the decoders build, test and fuzz without the HTTP server.
//! Must not: do I/O, build SQL, or panic on any input.

pub mod blocks;
mod decoded;
mod error;
pub mod formats;
mod lexer;
mod literal;
mod native;
pub mod query;
mod scalar;
mod text;

pub use decoded::Csv;
pub use error::{ChError, Code};
pub use native::describe_block;
pub use text::Text;

/// The amplification property of the fuzz targets: a global allocator
/// that counts the live heap and its peak, so a target can assert that
/// decoding a body never holds more than a bounded multiple of it
/// ([`fuzz_decoder`] checks it when a target installs [`Counting`]).
#[doc(hidden)]
pub mod fuzz_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    /// `#[global_allocator] static A: Counting = Counting;` in a target.
    pub struct Counting;

    fn grew(by: usize) {
        let now = LIVE.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(now, Relaxed);
    }

    // SAFETY: every call is passed to `System` as it came; the counters
    // only observe the sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            INSTALLED.store(true, Relaxed);
            grew(layout.size());
            System.alloc(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Relaxed);
            System.dealloc(ptr, layout)
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            INSTALLED.store(true, Relaxed);
            grew(layout.size());
            System.alloc_zeroed(layout)
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // Counted as the moment both blocks may exist.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Relaxed);
            System.realloc(ptr, layout, new_size)
        }
    }

    /// Starts a measurement: the heap's live bytes now, `None` when the
    /// binary does not count.
    pub fn start() -> Option<usize> {
        let live = LIVE.load(Relaxed);
        PEAK.store(live, Relaxed);
        INSTALLED.load(Relaxed).then_some(live)
    }

    /// The most the heap held above `base` since [`start`].
    pub fn peak_above(base: usize) -> usize {
        PEAK.load(Relaxed).saturating_sub(base)
    }
}

/// The most one decode may allocate for a body of `len` bytes with
/// `Options::max_decoded` = `max_decoded`: the rows and (for Native) one
/// block's columns, each at most `max_decoded` and up to twice that in
/// vector capacity, plus the parsed header and types, a small multiple of
/// the body.
#[doc(hidden)]
pub fn decode_bound(len: usize, max_decoded: usize) -> usize {
    4 * max_decoded + 16 * len + (64 << 10)
}

/// A decoder of the front door, for the fuzz targets: one target per
/// decoder (`native`, `tsv`, `csv`, `rowbinary_with_names_and_types`,
/// `compressed_blocks`), and `front_door`, which reaches every one of them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuzzDecoder {
    /// ClickHouse's compressed-block framing (`decompress=1`).
    Blocks,
    /// The INSERT statement at the start of a request.
    Query,
    RowBinary,
    RowBinaryWithNamesAndTypes,
    Native,
    Tsv,
    Csv,
    Values,
}

/// Every decoder on arbitrary bytes, for the `front_door` fuzz target: the
/// first byte picks the decoder (see [`fuzz_decoder`]).
#[doc(hidden)]
pub fn fuzz(input: &[u8]) {
    use FuzzDecoder::*;
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let decoder = match pick % 8 {
        0 => Blocks,
        1 => Query,
        2 => RowBinary,
        3 => RowBinaryWithNamesAndTypes,
        4 => Native,
        5 => Tsv,
        6 => Csv,
        _ => Values,
    };
    fuzz_decoder(decoder, rest);
    fuzz_json(rest);
}

/// One decoder on arbitrary bytes. None may panic; what it accepts must
/// hold together (a query's data starts inside its text, every decoded row
/// walks by the table's schema, the framing never unpacks past its limit).
/// The body's own first bytes double as the options a request could set
/// (a column list, its header flags, allowed errors, a line limit, the CSV
/// dialect), so a seed that is a real body still reaches them all.
#[doc(hidden)]
pub fn fuzz_decoder(decoder: FuzzDecoder, rest: &[u8]) {
    use formats::{AllowErrors, Format, Options};
    const LIMIT: usize = 1 << 20;
    let schema = fuzz_schema();
    let flag = |bit: u8| rest.first().is_some_and(|b| b & bit == bit);
    let format = match decoder {
        FuzzDecoder::Blocks => {
            let base = fuzz_alloc::start();
            if let Ok(out) = blocks::unpack(rest, LIMIT) {
                assert!(out.len() <= LIMIT);
            }
            if let Some(base) = base {
                let peak = fuzz_alloc::peak_above(base);
                assert!(
                    peak <= decode_bound(rest.len(), LIMIT),
                    "blocks: {peak} bytes"
                );
            }
            return;
        }
        FuzzDecoder::Query => {
            if let Ok(query::Statement::Insert(i)) = query::parse(rest) {
                assert!(i.data_start <= rest.len());
                assert!(!i.table.is_empty());
            }
            return;
        }
        FuzzDecoder::RowBinary => Format::RowBinary,
        FuzzDecoder::RowBinaryWithNamesAndTypes => Format::RowBinaryWithNamesAndTypes,
        FuzzDecoder::Native => Format::Native,
        FuzzDecoder::Tsv => Format::Text(Text::Tsv {
            names: flag(2),
            types: flag(4),
        }),
        FuzzDecoder::Csv => Format::Text(Text::Csv { names: flag(2) }),
        FuzzDecoder::Values => Format::Values,
    };
    // The second byte picks which columns a column list names (the others
    // get their defaults), in an order of its own.
    let pick_cols = rest.get(1).copied().unwrap_or(0xff);
    let names: Vec<String> = ["xs", "e", "tag", "at", "name", "id"]
        .iter()
        .enumerate()
        .filter(|(i, _)| pick_cols & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let listed = !matches!(
        decoder,
        FuzzDecoder::RowBinaryWithNamesAndTypes | FuzzDecoder::Native
    );
    let columns = (flag(1) && listed).then_some(&names[..]);
    let options = Options {
        allow: AllowErrors {
            num: u64::from(flag(8)),
            ratio: 0.0,
        },
        max_line: if flag(16) { 64 } else { usize::MAX },
        csv: Csv {
            delimiter: if flag(32) { b';' } else { b',' },
            single_quotes: !flag(64),
            double_quotes: !flag(128),
        },
        // Small enough that a body which amplifies (LowCardinality keys,
        // defaults of left-out columns) reaches the refusal.
        max_decoded: FUZZ_AMPLIFICATION * rest.len() + 4096,
        ..Options::default()
    };
    let base = fuzz_alloc::start();
    let decoded = formats::decode(format, &schema, columns, rest, &options);
    if let Some(base) = base {
        let peak = fuzz_alloc::peak_above(base);
        let bound = decode_bound(rest.len(), options.max_decoded);
        assert!(
            peak <= bound,
            "decoding {} bytes allocated {peak} bytes, over {bound}",
            rest.len()
        );
    }
    if let Ok(rows) = decoded {
        assert!(rows.held() <= options.max_decoded, "rows over max_decoded");
        for row in rows.iter() {
            let mut at = 0;
            for col in schema.columns() {
                at += ch_ingest::rowbinary::value_len(&col.ty, &row[at..])
                    .expect("a decoded row walks");
            }
            assert_eq!(at, row.len(), "a decoded row is exactly one row");
        }
    }
}

/// The `max_decoded` the fuzz targets give a body: this many times its size.
const FUZZ_AMPLIFICATION: usize = 16;

/// JSONEachRow, every bad row allowed (so a body is read to its end).
fn fuzz_json(rest: &[u8]) {
    use formats::{AllowErrors, Format, Options};
    let options = Options {
        allow: AllowErrors {
            num: u64::MAX,
            ratio: 1.0,
        },
        max_decoded: FUZZ_AMPLIFICATION * rest.len() + 4096,
        ..Options::default()
    };
    let schema = fuzz_schema();
    let base = fuzz_alloc::start();
    let decoded = formats::decode(Format::JsonEachRow, &schema, None, rest, &options);
    if let Some(base) = base {
        let peak = fuzz_alloc::peak_above(base);
        let bound = decode_bound(rest.len(), options.max_decoded);
        assert!(peak <= bound, "JSON: {peak} bytes for {}", rest.len());
    }
    if let Ok(rows) = decoded {
        assert!(rows.held() <= options.max_decoded, "rows over max_decoded");
    }
}

/// The table every fuzz target decodes into: a column of each kind the
/// decoders treat apart (fixed width, String, DateTime text, Nullable, Enum,
/// Array of LowCardinality).
fn fuzz_schema() -> ch_ingest::Schema {
    ch_ingest::Schema::parse(
        "id UInt64, name String, at DateTime, tag Nullable(String), \
         e Enum8('a' = 1, 'b' = 2), xs Array(LowCardinality(String))",
    )
    .expect("the fuzz schema parses")
}
