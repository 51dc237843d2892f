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
mod error;
pub mod formats;
mod literal;
mod native;
pub mod query;
mod text;

pub use error::{ChError, Code};
pub use native::describe_block;
pub use text::{Csv, Text};

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
            if let Ok(out) = blocks::unpack(rest, LIMIT) {
                assert!(out.len() <= LIMIT);
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
        csv: text::Csv {
            delimiter: if flag(32) { b';' } else { b',' },
            single_quotes: !flag(64),
            double_quotes: !flag(128),
        },
        ..Options::default()
    };
    if let Ok(rows) = formats::decode(format, &schema, columns, rest, &options) {
        for row in rows.iter() {
            let mut at = 0;
            for col in schema.columns() {
                at += ch_ingest::value_len(&col.ty, &row[at..]).expect("a decoded row walks");
            }
            assert_eq!(at, row.len(), "a decoded row is exactly one row");
        }
    }
}

/// JSONEachRow, every bad row allowed (so a body is read to its end).
fn fuzz_json(rest: &[u8]) {
    use formats::{AllowErrors, Format, Options};
    let options = Options {
        allow: AllowErrors {
            num: u64::MAX,
            ratio: 1.0,
        },
        ..Options::default()
    };
    let _ = formats::decode(Format::JsonEachRow, &fuzz_schema(), None, rest, &options);
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
