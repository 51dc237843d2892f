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

/// Every decoder on arbitrary bytes, for the fuzz target: the first byte
/// picks the decoder. None may panic; what they accept must hold together
/// (a query's data starts inside its text, every decoded row walks by the
/// table's schema, the framing never unpacks past its limit).
#[doc(hidden)]
pub fn fuzz(input: &[u8]) {
    use formats::{AllowErrors, Format, Options};
    const LIMIT: usize = 1 << 20;
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let schema = ch_ingest::Schema::parse(
        "id UInt64, name String, at DateTime, tag Nullable(String), \
         e Enum8('a' = 1, 'b' = 2), xs Array(LowCardinality(String))",
    )
    .expect("the fuzz schema parses");
    let flag = |bit: u8| rest.first().is_some_and(|b| b & bit == bit);
    match pick % 8 {
        0 => {
            if let Ok(out) = blocks::unpack(rest, LIMIT) {
                assert!(out.len() <= LIMIT);
            }
        }
        1 => {
            if let Ok(query::Statement::Insert(i)) = query::parse(rest) {
                assert!(i.data_start <= rest.len());
                assert!(!i.table.is_empty());
            }
        }
        n => {
            let format = match n {
                2 => Format::RowBinary,
                3 => Format::RowBinaryWithNamesAndTypes,
                4 => Format::Native,
                5 => Format::Text(Text::Tsv {
                    names: flag(2),
                    types: flag(4),
                }),
                6 => Format::Text(Text::Csv { names: flag(2) }),
                _ => Format::Values,
            };
            // The second byte picks which columns a column list names
            // (the others get their defaults), in an order of its own.
            let pick_cols = rest.get(1).copied().unwrap_or(0xff);
            let names: Vec<String> = ["xs", "e", "tag", "at", "name", "id"]
                .iter()
                .enumerate()
                .filter(|(i, _)| pick_cols & (1 << i) != 0)
                .map(|(_, n)| n.to_string())
                .collect();
            let columns = (flag(1) && n != 3 && n != 4).then_some(&names[..]);
            let allow = AllowErrors {
                num: u64::from(flag(8)),
                ratio: 0.0,
            };
            let options = Options {
                allow,
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
                        at +=
                            ch_ingest::value_len(&col.ty, &row[at..]).expect("a decoded row walks");
                    }
                    assert_eq!(at, row.len(), "a decoded row is exactly one row");
                }
            }
        }
    }
    let everything = AllowErrors {
        num: u64::MAX,
        ratio: 1.0,
    };
    let options = Options {
        allow: everything,
        ..Options::default()
    };
    let _ = formats::decode(Format::JsonEachRow, &schema, None, rest, &options);
}
