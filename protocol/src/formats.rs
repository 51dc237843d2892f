//! The INSERT formats the front door reads, each decoded by the table's
//! schema into RowBinary rows in the table's column order: `JSONEachRow`,
//! `RowBinary`, `RowBinaryWithNamesAndTypes`, `Native` (read in `native`),
//! `TabSeparated` and `CSV` with their header variants (read in `text`),
//! `Values` (read in `literal`).
//!
//! Owns: decoding a whole body before any of it is tracked (so a request
//! refused for too many bad rows leaves nothing behind), ClickHouse's
//! `input_format_allow_errors_num` / `_ratio` rule, and the column-list
//! reordering. Must not: track anything (the caller does, from `Rows`).

use crate::decoded::left_out;
pub use crate::decoded::{too_large, AllowErrors, Options, Rows};
use crate::text::Text;
use crate::{ChError, Code};
use ch_ingest::{Schema, Transcoder, Type};

/// The formats ClickHouse knows that we do not read (yet): refused as not
/// implemented rather than unknown.
const KNOWN_ELSEWHERE: [&str; 14] = [
    "TabSeparatedRaw",
    "TSVRaw",
    "JSON",
    "JSONCompact",
    "JSONCompactEachRow",
    "JSONStringsEachRow",
    "TSKV",
    "Protobuf",
    "Parquet",
    "ORC",
    "Arrow",
    "Avro",
    "CapnProto",
    "Template",
];

/// Formats ClickHouse only writes: an INSERT in one is refused with code 85,
/// as the server refuses it.
const OUTPUT_ONLY: [&str; 12] = [
    "Pretty",
    "PrettyCompact",
    "PrettyCompactMonoBlock",
    "PrettySpace",
    "PrettyNoEscapes",
    "PrettyCompactNoEscapes",
    "PrettySpaceNoEscapes",
    "Vertical",
    "VerticalRaw",
    "XML",
    "Markdown",
    "Null",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonEachRow,
    RowBinary,
    RowBinaryWithNamesAndTypes,
    Native,
    Text(Text),
    Values,
}

impl Format {
    /// The format named in the query (names are case-sensitive in
    /// ClickHouse).
    pub fn parse(name: &str) -> Result<Format, ChError> {
        match name {
            "JSONEachRow" => Ok(Format::JsonEachRow),
            "RowBinary" => Ok(Format::RowBinary),
            "RowBinaryWithNamesAndTypes" => Ok(Format::RowBinaryWithNamesAndTypes),
            "Native" => Ok(Format::Native),
            "TabSeparated" | "TSV" => Ok(Format::Text(Text::Tsv {
                names: false,
                types: false,
            })),
            "TabSeparatedWithNames" | "TSVWithNames" => Ok(Format::Text(Text::Tsv {
                names: true,
                types: false,
            })),
            "TabSeparatedWithNamesAndTypes" | "TSVWithNamesAndTypes" => {
                Ok(Format::Text(Text::Tsv {
                    names: true,
                    types: true,
                }))
            }
            "CSV" => Ok(Format::Text(Text::Csv { names: false })),
            "CSVWithNames" => Ok(Format::Text(Text::Csv { names: true })),
            "Values" => Ok(Format::Values),
            output if OUTPUT_ONLY.contains(&output) => Err(ChError::new(
                Code::NotSuitableForInput,
                format!("Format {output} is not suitable for input"),
            )),
            known if KNOWN_ELSEWHERE.contains(&known) => Err(ChError::new(
                Code::NotImplemented,
                format!(
                    "format {known} is not supported by the ch-ingest front door \
                     (JSONEachRow, RowBinary, RowBinaryWithNamesAndTypes, Native, \
                     TabSeparated/TSV with names and types, CSV, CSVWithNames, Values)"
                ),
            )),
            other => Err(ChError::new(
                Code::UnknownFormat,
                format!("Unknown format {other}"),
            )),
        }
    }
}

/// Decodes `data` for `schema`. `columns` is the INSERT's column list, if
/// it has one.
pub fn decode(
    format: Format,
    schema: &Schema,
    columns: Option<&[String]>,
    data: &[u8],
    options: &Options,
) -> Result<Rows, ChError> {
    let Options {
        deny_unknown_fields,
        allow,
        max_line,
        defaults_for_omitted,
        max_decoded,
        ..
    } = *options;
    let json = |schema: &Schema, data: &[u8]| {
        let t = Transcoder::new(schema.clone())
            .deny_unknown_fields(deny_unknown_fields)
            .refuse_omitted_default_expressions(defaults_for_omitted);
        json_each_row(t, data, allow, max_line, max_decoded)
    };
    if let Some(list) = columns {
        for name in list {
            if !schema.columns().iter().any(|c| c.name == *name) {
                return Err(ChError::new(
                    Code::NoSuchColumnInTable,
                    format!("No such column {name} in the table"),
                ));
            }
        }
    }
    match format {
        Format::JsonEachRow => match columns {
            None => json(schema, data),
            Some(list) => {
                // As ClickHouse reads it: the listed columns are the only
                // keys (any other, a table column or not, is unknown), and
                // the columns left out get what the server fills in. So
                // the rows are read by the list's own schema, then laid out
                // in the table's order as a RowBinary body with that list
                // would be (which refuses a left-out DEFAULT expression).
                let order = order_of(schema, list)?;
                let cols = schema.columns();
                let listed = order.iter().fold(
                    Schema::from_columns(order.iter().map(|&i| cols[i].clone()).collect()),
                    |s, &i| match schema.default_expression(i) {
                        Some(e) => s.with_default_expression(&cols[i].name, e),
                        None => s,
                    },
                );
                let read = json(&listed, data)?;
                let mut rows = row_binary(schema, &order, &read.bytes, max_decoded)?;
                rows.skipped = read.skipped;
                Ok(rows)
            }
        },
        Format::RowBinary => {
            let order = match columns {
                Some(list) => order_of(schema, list)?,
                None => (0..schema.columns().len()).collect(),
            };
            row_binary(schema, &order, data, max_decoded)
        }
        Format::RowBinaryWithNamesAndTypes => {
            let (order, at) = names_and_types(schema, data)?;
            if let Some(list) = columns {
                let listed = order_of(schema, list)?;
                if listed != order {
                    return Err(ChError::new(
                        Code::IncorrectData,
                        "the body's column names are not the query's column list",
                    ));
                }
            }
            row_binary(schema, &order, &data[at..], max_decoded)
        }
        Format::Native => native(schema, data, max_decoded),
        Format::Values => {
            let cols = schema.columns();
            let order = match columns {
                Some(list) => order_of(schema, list)?,
                None => (0..cols.len()).collect(),
            };
            let types: Vec<&Type> = order.iter().map(|&i| &cols[i].ty).collect();
            let mut read = Rows::default();
            crate::literal::values(&types, data, &mut read, max_decoded).map_err(|e| match e {
                crate::literal::ValuesError::TooLarge => too_large(max_decoded),
                crate::literal::ValuesError::Parse(e) => ChError::new(
                    Code::CannotParseInput,
                    format!("Cannot parse Values input at {e}"),
                ),
            })?;
            let in_order =
                order.len() == cols.len() && order.iter().enumerate().all(|(i, &c)| i == c);
            if in_order {
                Ok(read)
            } else {
                // Laid out as a RowBinary body with that column list.
                row_binary(schema, &order, &read.bytes, max_decoded)
            }
        }
        Format::Text(text) => {
            let order = columns.map(|list| order_of(schema, list)).transpose()?;
            let mut rows = Rows::default();
            let mut bad = Vec::new();
            let header = crate::text::decode(
                text,
                schema,
                order.as_deref(),
                data,
                options,
                &mut rows,
                &mut bad,
            );
            let name = match text {
                Text::Tsv { .. } => "TabSeparated",
                Text::Csv { .. } => "CSV",
            };
            let refuse = |b: &crate::text::BadRow| {
                ChError::new(
                    Code::CannotParseInput,
                    format!("Cannot parse {name} input at row {}: {}", b.row, b.reason),
                )
            };
            header.map_err(|e| match e {
                crate::text::HeaderError::Bad(b) => refuse(&b),
                crate::text::HeaderError::LeftOut(reason) => {
                    ChError::new(Code::NotImplemented, reason)
                }
                crate::text::HeaderError::TooLarge => too_large(max_decoded),
            })?;
            let total = rows.skipped + rows.ends.len() as u64;
            match bad.first() {
                Some(b) if allow.exceeded(rows.skipped, total) => Err(refuse(b)),
                _ => Ok(rows),
            }
        }
    }
}

/// Every block, its columns matched to the table's by name (each must be
/// there, of the table's type; LowCardinality on either side is only an
/// encoding), joined per row in the table's order.
fn native(schema: &Schema, data: &[u8], max_decoded: usize) -> Result<Rows, ChError> {
    // The block's columns and the joined rows each have `max_decoded`.
    let mut r = crate::native::Reader::with_budget(data, max_decoded);
    let mut rows = Rows::default();
    let bad = |e: crate::native::NativeError| {
        if e.too_large {
            return too_large(max_decoded);
        }
        ChError::new(
            Code::CannotParseInput,
            format!("Cannot read Native input at byte {}: {}", e.at, e.reason),
        )
    };
    while !r.at_end() {
        // The reader refuses a block of rows without columns, and every
        // column reads at least a byte per row: the defaults of left-out
        // columns are bounded by the body, and the rows by `max_decoded`.
        let block = r.block().map_err(bad)?;
        let names: Vec<String> = block.columns.iter().map(|(n, _, _)| n.clone()).collect();
        let order = order_of(schema, &names)?;
        let fill = left_out_or_refuse(schema, &order)?;
        let mut by_table: Vec<Option<&crate::native::Column>> = vec![None; schema.columns().len()];
        for (&c, (name, ty, col)) in order.iter().zip(&block.columns) {
            let want = &schema.columns()[c].ty;
            if !same_type(want, ty) {
                return Err(ChError::new(
                    Code::IncorrectData,
                    format!("column {name} is {want} in the table, the block says {ty}"),
                ));
            }
            by_table[c] = Some(col);
        }
        for i in 0..block.rows {
            for (col, fill) in by_table.iter().zip(&fill) {
                // A column the block lacks has its default in `fill`.
                let value = col.map_or(fill.as_deref().unwrap_or_default(), |c| c.row(i));
                rows.bytes.extend_from_slice(value);
            }
            rows.end_row(max_decoded)?;
        }
    }
    Ok(rows)
}

/// Equal types, LowCardinality aside (its RowBinary is its inner type's).
fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::LowCardinality(x), y) | (y, Type::LowCardinality(x)) => same_type(x, y),
        (Type::Nullable(x), Type::Nullable(y)) | (Type::Array(x), Type::Array(y)) => {
            same_type(x, y)
        }
        (Type::Tuple(xs), Type::Tuple(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|((_, x), (_, y))| same_type(x, y))
        }
        (Type::Map(k1, v1), Type::Map(k2, v2)) => same_type(k1, k2) && same_type(v1, v2),
        _ => a == b,
    }
}

fn json_each_row(
    mut t: Transcoder,
    data: &[u8],
    allow: AllowErrors,
    max_line: usize,
    max_decoded: usize,
) -> Result<Rows, ChError> {
    // As 18.16: a byte-order mark before the first row is not part of it.
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let mut read = json_lines(&mut t, data, max_line, max_decoded)?;
    if read.1.is_some() {
        // Only a body with a bad line pays for the scan: objects that span
        // lines or share one (pretty-printed, `{..}{..}`, `{..},{..}`),
        // which ClickHouse reads too, are put one to a line and read again.
        if let Some(split) = one_object_per_line(data) {
            read = json_lines(&mut t, &split, max_line, max_decoded)?;
        }
    }
    let (rows, first_error, total) = read;
    match first_error {
        Some((line, e)) if allow.exceeded(rows.skipped, total) => Err(ChError::new(
            Code::CannotParseInput,
            format!("Cannot parse JSONEachRow input at row {line}: {e}"),
        )),
        _ => Ok(rows),
    }
}

type JsonRead = (Rows, Option<(u64, String)>, u64);

/// Every line of `data` as a row: the rows, the first bad one, how many.
fn json_lines(
    t: &mut Transcoder,
    data: &[u8],
    max_line: usize,
    max_decoded: usize,
) -> Result<JsonRead, ChError> {
    let mut rows = Rows::default();
    let mut first_error = None;
    let mut total = 0u64;
    // One pass: each row's parse finds its line's end, and a line over
    // the limit is refused after reading at most that much of it.
    let mut cursor = ch_ingest::json::NdjsonCursor::new(data).max_line(max_line);
    while let Some(row) = t.transcode_line(&mut cursor, &mut rows.bytes) {
        total += 1;
        match row.result {
            Ok(()) => rows.end_row(max_decoded)?,
            // Not a bad row: ClickHouse would store it, with a value only
            // it can compute. Skipping it under allow-errors would lose it.
            Err(e) if e.kind == ch_ingest::json::DecodeErrorKind::Missing => {
                return Err(ChError::new(
                    Code::NotImplemented,
                    format!("row {}: {e}", row.line),
                ));
            }
            Err(e) => {
                rows.skipped += 1;
                let e = if e.kind == ch_ingest::json::DecodeErrorKind::TooLong {
                    format!(
                        "the line is {} bytes, over max_line_bytes ({max_line})",
                        row.bytes
                    )
                } else {
                    e.to_string()
                };
                first_error.get_or_insert((row.line as u64, e));
            }
        }
    }
    Ok((rows, first_error, total))
}

/// `data` with each top-level JSON object on a line of its own, as
/// ClickHouse's JSONEachRow separates rows: by the objects themselves, any
/// whitespace (newlines too) and at most one comma between them. `None`
/// when it already is one object per line. Anything else between objects
/// stays, on its own line, to be refused as a bad row.
fn one_object_per_line(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    // An object closed on this line at the top level (and a comma taken
    // after it).
    let (mut closed, mut comma) = (false, false);
    let mut changed = false;
    for &b in data {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                if depth == 0 && closed {
                    out.push(b'\n');
                    (closed, comma, changed) = (false, false, true);
                }
                depth += 1;
                out.push(b);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                out.push(b);
                closed |= depth == 0;
            }
            b'\n' | b'\r' if depth > 0 => {
                out.push(b' ');
                changed = true;
            }
            b'\n' => {
                out.push(b);
                (closed, comma) = (false, false);
            }
            b',' if depth == 0 && closed && !comma => {
                comma = true;
                changed = true;
            }
            _ => out.push(b),
        }
    }
    changed.then_some(out)
}

/// For each of the body's columns, in the body's order, its index in the
/// table. Every column of the table must be there once.
fn order_of(schema: &Schema, list: &[String]) -> Result<Vec<usize>, ChError> {
    let cols = schema.columns();
    let mut order = Vec::with_capacity(list.len());
    for name in list {
        let i = cols.iter().position(|c| c.name == *name).ok_or_else(|| {
            ChError::new(
                Code::NoSuchColumnInTable,
                format!("No such column {name} in the table"),
            )
        })?;
        if order.contains(&i) {
            return Err(ChError::new(
                Code::IncorrectData,
                format!("column {name} is listed twice"),
            ));
        }
        order.push(i);
    }
    Ok(order)
}

fn left_out_or_refuse(schema: &Schema, listed: &[usize]) -> Result<Vec<Option<Vec<u8>>>, ChError> {
    left_out(schema, listed).map_err(|reason| ChError::new(Code::NotImplemented, reason))
}

/// Rows whose values come in `order` (table indices), rewritten in the
/// table's order. One bad row refuses the body: RowBinary cannot resume
/// after it.
fn row_binary(
    schema: &Schema,
    order: &[usize],
    data: &[u8],
    max_decoded: usize,
) -> Result<Rows, ChError> {
    let cols = schema.columns();
    let fill = left_out_or_refuse(schema, order)?;
    let in_order = order.len() == cols.len() && order.iter().enumerate().all(|(i, &c)| i == c);
    let mut rows = Rows {
        bytes: Vec::with_capacity(data.len()),
        ..Rows::default()
    };
    let mut at = 0;
    let mut spans = vec![0..0; cols.len()];
    while at < data.len() {
        let row_start = at;
        for &c in order {
            let n = ch_ingest::rowbinary::value_len(&cols[c].ty, &data[at..]).map_err(|e| {
                ChError::new(
                    Code::CannotParseInput,
                    format!(
                        "Cannot read RowBinary row {} (column {}): {} at byte {}",
                        rows.ends.len() + 1,
                        cols[c].name,
                        e.reason,
                        at + e.offset
                    ),
                )
            })?;
            spans[c] = at..at + n;
            at += n;
        }
        if at == row_start {
            // Nothing read (no columns listed, or only zero-width ones):
            // the rows would never end.
            return Err(ChError::new(
                Code::CannotParseInput,
                "Cannot read RowBinary: the columns listed take no bytes per row",
            ));
        }
        if in_order {
            rows.bytes.extend_from_slice(&data[row_start..at]);
        } else {
            for (span, fill) in spans.iter().zip(&fill) {
                match fill {
                    Some(default) => rows.bytes.extend_from_slice(default),
                    None => rows.bytes.extend_from_slice(&data[span.clone()]),
                }
            }
        }
        rows.end_row(max_decoded)?;
    }
    Ok(rows)
}

/// The header of `RowBinaryWithNamesAndTypes`: the column count, the names,
/// the types. Every type must be the table's for that name.
fn names_and_types(schema: &Schema, data: &[u8]) -> Result<(Vec<usize>, usize), ChError> {
    let bad = |e: crate::native::NativeError| {
        ChError::new(
            Code::CannotParseInput,
            format!(
                "RowBinaryWithNamesAndTypes header at byte {}: {}",
                e.at, e.reason
            ),
        )
    };
    // The header is Native's own encoding: a LEB128 count, then strings.
    let mut r = crate::native::Reader::new(data);
    let count = r.leb128().map_err(bad)?;
    if count > schema.columns().len() as u64 {
        return Err(ChError::new(
            Code::CannotParseInput,
            format!(
                "RowBinaryWithNamesAndTypes header: {count} columns, the table has {}",
                schema.columns().len()
            ),
        ));
    }
    let names = (0..count)
        .map(|_| r.text("a column name").map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let order = order_of(schema, &names)?;
    for &c in &order {
        let ty = r.text("a column type").map_err(bad)?;
        let col = &schema.columns()[c];
        if !Type::parse(ty).is_ok_and(|t| t == col.ty) {
            return Err(ChError::new(
                Code::IncorrectData,
                format!(
                    "column {} is {} in the table, the body says {ty}",
                    col.name, col.ty
                ),
            ));
        }
    }
    Ok((order, r.position()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch_ingest::rowbinary::leb128;

    fn put(out: &mut Vec<u8>, text: &str) {
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }

    /// The two bodies that took serve to gigabytes: blocks of rows with
    /// no columns, and one LowCardinality entry behind many one-byte keys.
    #[test]
    fn amplifying_native_bodies_are_refused_within_max_decoded() {
        let schema = Schema::parse("id UInt64, s String").unwrap();
        let options = Options {
            max_decoded: 1 << 20,
            ..Options::default()
        };
        // 64 KiB of blocks of 0 columns and 16 383 rows each.
        let mut body = Vec::new();
        while body.len() < 64 << 10 {
            body.extend_from_slice(&[0, 0xff, 0x7f]);
        }
        let e = decode(Format::Native, &schema, None, &body, &options).unwrap_err();
        assert_eq!(e.code, Code::CannotParseInput as u32, "{e:?}");
        assert!(e.message.contains("no columns"), "{e:?}");
        // One 100 KB entry referenced by 200 000 keys: 20 GB decoded.
        let rows = 200_000u64;
        let mut body = vec![1];
        leb128::put(&mut body, rows);
        put(&mut body, "s");
        put(&mut body, "LowCardinality(String)");
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&(1u64 << 9).to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body.push(0);
        leb128::put(&mut body, 100_000);
        body.extend(std::iter::repeat_n(b'x', 100_000));
        body.extend_from_slice(&rows.to_le_bytes());
        body.extend(std::iter::repeat_n(1u8, rows as usize));
        let started = std::time::Instant::now();
        let e = decode(Format::Native, &schema, None, &body, &options).unwrap_err();
        assert_eq!(e.code, Code::QueryIsTooLarge as u32, "{e:?}");
        assert!(e.message.contains("max_decoded_bytes"), "{e:?}");
        // Refused after about max_decoded of copying, not 20 GB of it.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Within the budget, the same shape decodes.
        let small = Options {
            max_decoded: 64 << 20,
            ..Options::default()
        };
        let mut ok = vec![2, 3];
        put(&mut ok, "id");
        put(&mut ok, "UInt64");
        for i in 0..3u64 {
            ok.extend_from_slice(&i.to_le_bytes());
        }
        put(&mut ok, "s");
        put(&mut ok, "LowCardinality(String)");
        ok.extend_from_slice(&1u64.to_le_bytes());
        ok.extend_from_slice(&(1u64 << 9).to_le_bytes());
        ok.extend_from_slice(&2u64.to_le_bytes());
        ok.extend_from_slice(&[0, 2, b'a', b'b']);
        ok.extend_from_slice(&3u64.to_le_bytes());
        ok.extend_from_slice(&[1, 1, 1]);
        let rows = decode(Format::Native, &schema, None, &ok, &small).unwrap();
        assert_eq!(rows.ends.len(), 3);
    }

    /// A body of junk lines is counted, not recorded line by line: a
    /// 64 MiB body of them once meant a record (and its reason) per line.
    #[test]
    fn bad_text_rows_are_counted_and_only_the_first_kept() {
        let schema = Schema::parse("id UInt64").unwrap();
        let body = "x\n".repeat(100_000);
        let all = Options {
            allow: AllowErrors {
                num: u64::MAX,
                ratio: 1.0,
            },
            ..Options::default()
        };
        let tsv = Format::Text(Text::Tsv {
            names: false,
            types: false,
        });
        for format in [tsv, Format::Text(Text::Csv { names: false })] {
            let rows = decode(format, &schema, None, body.as_bytes(), &all).unwrap();
            assert_eq!((rows.ends.len(), rows.skipped), (0, 100_000));
            let e =
                decode(format, &schema, None, body.as_bytes(), &Options::default()).unwrap_err();
            assert!(e.message.contains("at row 1"), "{e:?}");
        }
    }

    /// Every format stops at `max_decoded`, with ClickHouse's code for too
    /// large a query, however its rows came to be that large.
    #[test]
    fn every_format_refuses_rows_over_max_decoded() {
        let schema = Schema::parse("id UInt64, pad FixedString(1000)").unwrap();
        let options = Options {
            max_decoded: 100_000,
            ..Options::default()
        };
        let lines = |f: &dyn Fn(u64) -> String| (0..500).map(f).collect::<String>();
        let bodies: Vec<(Format, Option<Vec<String>>, String)> = vec![
            (
                Format::JsonEachRow,
                None,
                lines(&|i| format!("{{\"id\":{i}}}\n")),
            ),
            (
                Format::JsonEachRow,
                Some(vec!["id".into()]),
                lines(&|i| format!("{{\"id\":{i}}}\n")),
            ),
            (
                Format::Text(Text::Tsv {
                    names: false,
                    types: false,
                }),
                Some(vec!["id".into()]),
                lines(&|i| format!("{i}\n")),
            ),
            (
                Format::Text(Text::Csv { names: false }),
                Some(vec!["id".into()]),
                lines(&|i| format!("{i}\n")),
            ),
            (
                Format::Values,
                Some(vec!["id".into()]),
                lines(&|i| format!("({i})")),
            ),
            (
                Format::RowBinary,
                Some(vec!["id".into()]),
                (0..500u64).map(|_| "12345678").collect(),
            ),
        ];
        for (format, columns, body) in bodies {
            let e = decode(
                format,
                &schema,
                columns.as_deref(),
                body.as_bytes(),
                &options,
            )
            .unwrap_err();
            assert_eq!(e.code, Code::QueryIsTooLarge as u32, "{format:?}: {e:?}");
            let fits = decode(
                format,
                &schema,
                columns.as_deref(),
                body.as_bytes(),
                &Options::default(),
            )
            .unwrap();
            assert_eq!(fits.ends.len(), 500, "{format:?}");
        }
    }

    #[test]
    fn bodies_clickhouse_26_9_wrote_decode_to_the_same_rows_in_every_format() {
        // The fuzz seeds of the per-format targets are one SELECT's output
        // (chdb, ClickHouse 26.9) in each format: reading them back must give
        // the same RowBinary rows whatever the format.
        let schema = Schema::parse(
            "id UInt64, name String, at DateTime, tag Nullable(String), \
             e Enum8('a' = 1, 'b' = 2), xs Array(LowCardinality(String))",
        )
        .unwrap();
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/");
        let tsv = |names, types| Format::Text(Text::Tsv { names, types });
        let rows = |file: &str, format| {
            let data = std::fs::read(format!("{corpus}{file}")).unwrap();
            let rows = decode(format, &schema, None, &data, &Options::default())
                .unwrap_or_else(|e| panic!("{file}: {e:?}"));
            rows.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        let native = rows("native/seed-block", Format::Native);
        assert_eq!(native.len(), 3);
        // Row 2: 2, 'q"u\'o', 0, 't', 'b', [].
        assert_eq!(
            native[1],
            [
                &2u64.to_le_bytes()[..],
                b"\x05q\"u'o",
                &[0; 4],
                b"\x00\x01t",
                &[2, 0]
            ]
            .concat()
        );
        for (file, format) in [
            ("tsv/seed-tsv", tsv(false, false)),
            ("tsv/seed-with-names", tsv(true, false)),
            ("tsv/seed-with-names-and-types", tsv(true, true)),
            ("csv/seed-csv", Format::Text(Text::Csv { names: false })),
            (
                "csv/seed-with-names",
                Format::Text(Text::Csv { names: true }),
            ),
            (
                "rowbinary_with_names_and_types/seed-three-rows",
                Format::RowBinaryWithNamesAndTypes,
            ),
        ] {
            assert_eq!(rows(file, format), native, "{file}");
        }
        let twice = rows("native/seed-two-blocks", Format::Native);
        assert_eq!(twice, [native.clone(), native].concat());
    }

    fn schema() -> Schema {
        Schema::parse("id UInt8, name String, tag Enum8('a' = 1, 'b' = 2)").unwrap()
    }

    #[test]
    fn with_a_column_list_json_keys_outside_it_are_unknown_as_clickhouse_reads_them() {
        // 18.16: `INSERT INTO t (id, tag) FORMAT JSONEachRow` with a `name`
        // key is code 117 "Unknown field" (a column of the table, but not
        // listed); with input_format_skip_unknown_fields=1 it is ignored
        // and `name` gets its default.
        let list = ["tag".to_string(), "id".to_string()];
        let body = b"{\"id\":7,\"name\":\"x\",\"tag\":\"b\"}\n";
        let deny = Options {
            deny_unknown_fields: true,
            ..Options::default()
        };
        let e = decode(Format::JsonEachRow, &schema(), Some(&list), body, &deny).unwrap_err();
        assert!(e.message.contains("name"), "{e:?}");
        let rows = decode(
            Format::JsonEachRow,
            &schema(),
            Some(&list),
            body,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[7, 0, 2][..]]);
        // Listed keys may be missing (their defaults), in any order.
        let rows = decode(
            Format::JsonEachRow,
            &schema(),
            Some(&list),
            b"{\"tag\":\"a\"}\n",
            &deny,
        )
        .unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[0, 0, 1][..]]);
    }

    #[test]
    fn values_rows_are_tuples_of_literals_in_the_lists_order() {
        let opts = Options::default();
        let rows = decode(
            Format::Values,
            &schema(),
            None,
            b"(1,'x\\'y','a'), (2, '', 'b') ,(3,'\\t','a');\n",
            &opts,
        )
        .unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [
                &[1, 3, b'x', b'\'', b'y', 1][..],
                &[2, 0, 2],
                &[3, 1, b'\t', 1]
            ]
        );
        let list = ["tag".to_string(), "id".to_string()];
        let rows = decode(Format::Values, &schema(), Some(&list), b"('b',9)", &opts).unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[9, 0, 2][..]]);
        for (bad, says) in [
            (&b"(1,'x')"[..], "row 1: expected `,`"),
            (b"(1,'x','a')(2,'y','c')", "row 2"),
            (b"(now(),'x','a')", "expression"),
            (b"(1,'x','a'),,", "row 2: expected `(`"),
            (b"(1,'x", "not closed"),
            // Bare text ClickHouse would not read as this string or enum.
            (b"(1,abc,'a')", "must be quoted"),
            (b"(1,'x',a)", "must be quoted"),
        ] {
            let e = decode(Format::Values, &schema(), None, bad, &opts).unwrap_err();
            assert_eq!(e.code, Code::CannotParseInput as u32);
            assert!(e.message.contains(says), "{says}: {e:?}");
        }
    }

    #[test]
    fn json_objects_may_span_lines_or_share_one_as_clickhouse_reads_them() {
        let opts = Options::default();
        let one = |body: &[u8]| {
            decode(Format::JsonEachRow, &schema(), None, body, &opts)
                .map(|rows| rows.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
        };
        let want = one(b"{\"id\":1,\"name\":\"}{\\\"\"}\n{\"id\":2}\n").unwrap();
        for body in [
            &b"{\"id\":1,\"name\":\"}{\\\"\"}{\"id\":2}"[..],
            b"{\"id\":1,\"name\":\"}{\\\"\"} , {\"id\":2},\n",
            b"\xef\xbb\xbf{\n  \"id\": 1,\n  \"name\": \"}{\\\"\"\n}\n{\n\"id\":2\r\n}\n",
        ] {
            assert_eq!(
                one(body).unwrap(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Two commas, or other text between objects, is a bad row; an
        // array of objects is not JSONEachRow (18.16 refuses both).
        for body in [
            &b"{\"id\":1},,{\"id\":2}"[..],
            b"{\"id\":1} x {\"id\":2}",
            b"[{\"id\":1}]",
        ] {
            let e = one(body).unwrap_err();
            assert_eq!(e.code, Code::CannotParseInput as u32, "{e:?}");
        }
    }

    #[test]
    fn an_omitted_key_with_a_default_expression_follows_defaults_for_omitted_fields() {
        let schema = Schema::parse("id UInt8, at DateTime")
            .unwrap()
            .with_default_expression("at", "now()");
        let body = b"{\"id\":1,\"at\":2}\n{\"id\":3}\n";
        // Off (18.16): the type's default, as the server stores it.
        let rows = decode(
            Format::JsonEachRow,
            &schema,
            None,
            body,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [&[1, 2, 0, 0, 0][..], &[3, 0, 0, 0, 0]]
        );
        // On: the server would compute now(); refused, even where bad rows
        // may be skipped, and with a column list too.
        let on = Options {
            defaults_for_omitted: true,
            allow: AllowErrors { num: 9, ratio: 1.0 },
            ..Options::default()
        };
        let list = ["at".to_string(), "id".to_string()];
        for columns in [None, Some(&list[..])] {
            let e = decode(Format::JsonEachRow, &schema, columns, body, &on).unwrap_err();
            assert_eq!(e.code, Code::NotImplemented as u32);
            assert!(
                e.message.contains("row 2")
                    && e.message.contains("now()")
                    && e.message.contains("`at`"),
                "{e:?}"
            );
        }
        let rows = decode(Format::JsonEachRow, &schema, None, &body[..15], &on).unwrap();
        assert_eq!(rows.ends.len(), 1);
    }

    #[test]
    fn json_rows_follow_clickhouse_allow_errors() {
        let body = b"{\"id\":1,\"name\":\"x\",\"tag\":\"a\"}\n{\"id\":\"no\"}\n{\"id\":2,\"name\":\"y\",\"tag\":\"b\"}\n";
        let none = AllowErrors::default();
        let e = decode(
            Format::JsonEachRow,
            &schema(),
            None,
            body,
            &Options {
                allow: none,
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(
            e.message.contains("row 2") && e.message.contains("`id`"),
            "{e:?}"
        );
        let one = AllowErrors { num: 1, ratio: 0.0 };
        let rows = decode(
            Format::JsonEachRow,
            &schema(),
            None,
            body,
            &Options {
                allow: one,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [&[1, 1, b'x', 1][..], &[2, 1, b'y', 2]]
        );
        assert_eq!(rows.skipped, 1);
        let half = AllowErrors { num: 0, ratio: 0.5 };
        assert!(decode(
            Format::JsonEachRow,
            &schema(),
            None,
            body,
            &Options {
                allow: half,
                ..Options::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn binary_rows_are_reordered_and_checked() {
        let cols: Vec<String> = ["tag", "id", "name"].map(String::from).into();
        let body = [2, 7, 1, b'z', 1, 8, 0];
        let rows = decode(
            Format::RowBinary,
            &schema(),
            Some(&cols),
            &body,
            &Options {
                allow: AllowErrors::default(),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [&[7, 1, b'z', 2][..], &[8, 0, 1]]
        );
        // An Enum value the type lacks, a cut row, a missing column.
        for bad in [&[3, 7, 0][..], &[2, 7, 5, b'z']] {
            let e = decode(
                Format::RowBinary,
                &schema(),
                Some(&cols),
                bad,
                &Options {
                    allow: AllowErrors::default(),
                    ..Options::default()
                },
            );
            assert_eq!(e.unwrap_err().code, Code::CannotParseInput as u32);
        }
        // A column list that leaves `tag` out: its type's default (the
        // enum's smallest value), as ClickHouse stores it; unless it has a
        // DEFAULT expression, which only the server can compute.
        let two: Vec<String> = ["name", "id"].map(String::from).into();
        let rows = decode(
            Format::RowBinary,
            &schema(),
            Some(&two),
            &[1, b'q', 5],
            &Options::default(),
        )
        .unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[5, 1, b'q', 1][..]]);
        let defaulted = schema().with_default_expression("tag", "'b'");
        let e = decode(
            Format::RowBinary,
            &defaulted,
            Some(&two),
            &[1, b'q', 5],
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::NotImplemented as u32);
        assert!(
            e.message.contains("column tag") && e.message.contains("DEFAULT 'b'"),
            "{}",
            e.message
        );
        let e = decode(
            Format::JsonEachRow,
            &defaulted,
            Some(&two),
            br#"{"id":5,"name":"q"}"#,
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::NotImplemented as u32, "{}", e.message);
        let listed: Vec<String> = ["name", "id", "tag"].map(String::from).into();
        let rows = decode(
            Format::JsonEachRow,
            &defaulted,
            Some(&listed),
            br#"{"id":5,"name":"q","tag":"b"}"#,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[5, 1, b'q', 2][..]]);
        // No columns listed: rows of nothing would never end.
        for format in [Format::RowBinary, Format::RowBinaryWithNamesAndTypes] {
            let body: &[u8] = if format == Format::RowBinary {
                &[1]
            } else {
                &[0, 1]
            };
            let e = decode(format, &schema(), Some(&[]), body, &Options::default());
            assert!(e.is_err(), "{format:?}");
        }
        let bogus: Vec<String> = ["id", "nope"].map(String::from).into();
        let e = decode(
            Format::RowBinary,
            &schema(),
            Some(&bogus),
            &[],
            &Options {
                allow: AllowErrors::default(),
                ..Options::default()
            },
        );
        assert_eq!(e.unwrap_err().code, Code::NoSuchColumnInTable as u32);
    }

    #[test]
    fn names_and_types_header_is_checked() {
        let mut body = vec![3];
        for s in [
            "name",
            "id",
            "tag",
            "String",
            "UInt8",
            "Enum8('a' = 1, 'b' = 2)",
        ] {
            body.push(s.len() as u8);
            body.extend_from_slice(s.as_bytes());
        }
        body.extend_from_slice(&[1, b'q', 9, 1]);
        let f = Format::RowBinaryWithNamesAndTypes;
        let rows = decode(
            f,
            &schema(),
            None,
            &body,
            &Options {
                allow: AllowErrors::default(),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[9, 1, b'q', 1][..]]);
        let wrong = String::from_utf8_lossy(&body).replace("UInt8", "Int8 ");
        let e = decode(
            f,
            &schema(),
            None,
            wrong.as_bytes(),
            &Options {
                allow: AllowErrors::default(),
                ..Options::default()
            },
        );
        assert_eq!(e.unwrap_err().code, Code::IncorrectData as u32);
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::parse("JSONEachRow").unwrap(), Format::JsonEachRow);
        assert_eq!(Format::parse("Native").unwrap(), Format::Native);
        assert_eq!(
            Format::parse("CSV").unwrap(),
            Format::Text(Text::Csv { names: false })
        );
        let e = Format::parse("Parquet").unwrap_err();
        assert_eq!(e.code, Code::NotImplemented as u32);
        let e = Format::parse("Bogus'); DROP").unwrap_err();
        assert_eq!(e.code, Code::UnknownFormat as u32);
        assert!(e.message.contains("Bogus"));
        let e = Format::parse("Pretty").unwrap_err();
        assert_eq!((e.code, e.status), (85, 500), "as 18.16 answers it");
    }
}
