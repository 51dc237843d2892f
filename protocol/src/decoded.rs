//! What decoding a body produces and is bounded by, for every format:
//! [`Rows`] (RowBinary rows in the table's order), the [`Options`] a body
//! is read with ([`AllowErrors`], [`Csv`], the `max_decoded` bound), and
//! the bytes a left-out column gets.
//!
//! Owns: the decoded-size check ([`too_large`], code 393) and the
//! left-out-column rule. Must not: read any format (`formats`, `text`,
//! `native`, `literal` do, and all of them sit above this).

use crate::{ChError, Code};
use ch_ingest::{Schema, Transcoder};

/// ClickHouse's tolerance for bad rows: a request fails when it has more
/// than `num` bad rows and more than `ratio` of its rows are bad.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AllowErrors {
    pub num: u64,
    pub ratio: f64,
}

impl AllowErrors {
    pub(crate) fn exceeded(self, bad: u64, total: u64) -> bool {
        bad > self.num && (bad as f64) > self.ratio * total as f64
    }
}

/// A decoded body: RowBinary rows back to back, in the table's order.
#[derive(Debug, Default)]
pub struct Rows {
    pub bytes: Vec<u8>,
    /// Where each row ends in `bytes`.
    pub ends: Vec<usize>,
    /// Rows skipped under `AllowErrors`.
    pub skipped: u64,
}

impl Rows {
    /// What the rows hold in memory: their bytes and their row ends. This
    /// is what `Options::max_decoded` bounds.
    pub fn held(&self) -> usize {
        self.bytes.len() + self.ends.len() * std::mem::size_of::<usize>()
    }

    /// Ends the row written last; refuses the request once the rows hold
    /// more than `limit`.
    pub(crate) fn end_row(&mut self, limit: usize) -> Result<(), ChError> {
        self.ends.push(self.bytes.len());
        check_held(self, limit)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let row = &self.bytes[start..end];
            start = end;
            row
        })
    }
}

/// The request decodes to more than `limit` bytes: ClickHouse's code for
/// too large a query, and nothing of it is kept.
pub fn too_large(limit: usize) -> ChError {
    ChError::new(
        Code::QueryIsTooLarge,
        format!(
            "the body decodes to more than max_decoded_bytes ({limit} bytes); \
             send it in smaller INSERTs"
        ),
    )
}

pub(crate) fn check_held(rows: &Rows, limit: usize) -> Result<(), ChError> {
    if rows.held() > limit {
        return Err(too_large(limit));
    }
    Ok(())
}

/// How a body is read.
///
/// Whatever the body, decoding holds at most `max_decoded` bytes of rows
/// (values plus 8 bytes per row end), checked row by row, plus, for
/// Native, at most `max_decoded` bytes of the block's columns (checked
/// before a LowCardinality key is expanded): at most `2 x max_decoded`
/// beyond the body, and twice that in vector capacity. Past it the
/// request is refused with code 393 (`QUERY_IS_TOO_LARGE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// JSONEachRow keys that are not columns refuse the row (default: ignored).
    pub deny_unknown_fields: bool,
    pub allow: AllowErrors,
    /// The longest JSONEachRow line, TSV or CSV row, in bytes (default: no
    /// limit); a longer one is a bad row.
    pub max_line: usize,
    /// ClickHouse's `input_format_defaults_for_omitted_fields`: the server
    /// computes a `DEFAULT` expression for a JSONEachRow key a row omits.
    /// We cannot, so with this on such a row refuses the request (code 48)
    /// instead of storing the type's default (default: off; 18.16 has no
    /// such setting and stores the type's default).
    pub defaults_for_omitted: bool,
    /// The CSV dialect (default: ClickHouse's).
    pub csv: Csv,
    /// The most the decoded rows may hold, in bytes (default: no limit).
    pub max_decoded: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            defaults_for_omitted: false,
            deny_unknown_fields: false,
            allow: AllowErrors::default(),
            max_line: usize::MAX,
            csv: Default::default(),
            max_decoded: usize::MAX,
        }
    }
}

/// How CSV is written: ClickHouse's `format_csv_delimiter`,
/// `format_csv_allow_single_quotes` and `format_csv_allow_double_quotes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csv {
    /// Between fields (default `,`).
    pub delimiter: u8,
    /// A field may be quoted with `'` (default: yes, as in 18.16).
    pub single_quotes: bool,
    /// A field may be quoted with `"` (default: yes).
    pub double_quotes: bool,
}

impl Default for Csv {
    fn default() -> Self {
        Csv {
            delimiter: b',',
            single_quotes: true,
            double_quotes: true,
        }
    }
}

/// For each table column, `None` if `listed` carries it, else the bytes a
/// row gets for it: its type's default, which is what ClickHouse stores
/// for a column an INSERT leaves out when the column has no `DEFAULT`
/// expression. A left-out column with one is refused (the reason names
/// it): ClickHouse would compute it per row, and ch-ingest cannot.
pub(crate) fn left_out(schema: &Schema, listed: &[usize]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut fill = Vec::with_capacity(schema.columns().len());
    for (c, col) in schema.columns().iter().enumerate() {
        if listed.contains(&c) {
            fill.push(None);
            continue;
        }
        if let Some(e) = schema.default_expression(c) {
            return Err(format!(
                "column {} is left out and has DEFAULT {e}, which ClickHouse computes and \
                 ch-ingest cannot: send the column",
                col.name
            ));
        }
        let mut bytes = Vec::new();
        Transcoder::write_default(&col.ty, &mut bytes);
        fill.push(Some(bytes));
    }
    Ok(fill)
}
