//! ClickHouse's line-based text formats: `TabSeparated` (`TSV`, with
//! `WithNames` / `WithNamesAndTypes` header lines) and `CSV` (with
//! `CSVWithNames`), each field unescaped and read by its column's type
//! (`Transcoder::write_text`) into RowBinary.
//!
//! Owns: splitting rows and fields, the escapes (TSV's backslash escapes,
//! CSV's doubled quotes, in `"` or `'`), the spaces CSV trims, `\N` as NULL,
//! an empty number field as 0 (as 18.16 reads both formats), and resuming
//! at the next row after a bad one. Must not: accept a row with more or
//! fewer fields than columns.

use crate::decoded::Csv;
use crate::scalar::{unescape, write_scalar};
use ch_ingest::{Schema, Type};

/// Which text format, and how many header lines it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    Tsv { names: bool, types: bool },
    Csv { names: bool },
}

/// How many bad rows keep their reasons (the rest are only counted).
const KEPT_BAD_ROWS: usize = 16;

/// A bad row: its number (from 1, header lines included) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub row: usize,
    pub reason: String,
}

/// Why a text body is refused before its rows are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The header (names, types) does not match the table.
    Bad(BadRow),
    /// The columns sent leave out one with a `DEFAULT` expression, which
    /// only ClickHouse can compute (the reason names it).
    LeftOut(String),
    /// The rows hold more than `Options::max_decoded` bytes.
    TooLarge,
}

impl From<BadRow> for HeaderError {
    fn from(b: BadRow) -> Self {
        HeaderError::Bad(b)
    }
}

/// The rows of `data`, each as RowBinary in the table's order appended to
/// `rows` (columns the header or column list leaves out get their type's
/// default); bad rows (also those over `max_line` bytes) are skipped,
/// counted in `rows.skipped`, and the first few reported in `bad`. `Err` when the header does not match the table, or leaves out
/// a column with a `DEFAULT` expression.
pub fn decode(
    format: Text,
    schema: &Schema,
    columns: Option<&[usize]>,
    data: &[u8],
    options: &crate::decoded::Options,
    decoded: &mut crate::decoded::Rows,
    bad: &mut Vec<BadRow>,
) -> Result<(), HeaderError> {
    let max_line = options.max_line;
    let mut rows = Rows {
        data,
        pos: 0,
        csv: matches!(format, Text::Csv { .. }),
        dialect: options.csv,
        spans: Vec::new(),
    };
    let all: Vec<usize> = (0..schema.columns().len()).collect();
    let mut order: Vec<usize> = columns.map_or(all, <[usize]>::to_vec);
    let mut n = 0;
    let (names, types) = match format {
        Text::Tsv { names, types } => (names, types),
        Text::Csv { names } => (names, false),
    };
    let mut fields = Vec::new();
    if names {
        n += 1;
        rows.next_row(&mut fields)
            .map_err(|reason| BadRow { row: n, reason })?;
        order = fields
            .iter()
            .map(|name| {
                schema
                    .columns()
                    .iter()
                    .position(|c| c.name.as_bytes() == name.as_slice())
                    .ok_or_else(|| BadRow {
                        row: n,
                        reason: format!(
                            "No such column {} in the table",
                            String::from_utf8_lossy(name)
                        ),
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    if types {
        n += 1;
        rows.next_row(&mut fields)
            .map_err(|reason| BadRow { row: n, reason })?;
        for (field, &c) in fields.iter().zip(&order) {
            let col = &schema.columns()[c];
            let field = String::from_utf8_lossy(field);
            if !Type::parse(&field).is_ok_and(|t| t == col.ty) {
                return Err(HeaderError::Bad(BadRow {
                    row: n,
                    reason: format!(
                        "column {} is {} in the table, the header says {field}",
                        col.name, col.ty
                    ),
                }));
            }
        }
    }
    let mut seen = vec![false; schema.columns().len()];
    for &c in &order {
        if std::mem::replace(&mut seen[c], true) {
            return Err(HeaderError::Bad(BadRow {
                row: n,
                reason: format!("column {} is listed twice", schema.columns()[c].name),
            }));
        }
    }
    let fill = crate::decoded::left_out(schema, &order).map_err(HeaderError::LeftOut)?;
    // A left-out column's bytes are set once; `row` writes only the listed.
    let mut values: Vec<Vec<u8>> = fill.into_iter().map(Option::unwrap_or_default).collect();
    // Every bad row is counted (`decoded.skipped`), the first few kept with
    // their reasons: a body of junk lines must not grow a record per line.
    let mut bad_row = |b: BadRow, decoded: &mut crate::decoded::Rows| {
        decoded.skipped += 1;
        if bad.len() < KEPT_BAD_ROWS {
            bad.push(b);
        }
    };
    while !rows.at_end() {
        n += 1;
        let at = rows.pos;
        let read = rows.next_row(&mut fields);
        if rows.pos - at > max_line {
            let reason = format!(
                "the row is {} bytes, over max_line_bytes ({max_line})",
                rows.pos - at
            );
            bad_row(BadRow { row: n, reason }, decoded);
            continue;
        }
        if let Err(reason) = read {
            bad_row(BadRow { row: n, reason }, decoded);
            continue;
        }
        if fields.len() == 1 && fields[0].is_empty() && order.len() != 1 {
            // A blank line.
            n -= 1;
            continue;
        }
        // CSV fields are unquoted whole; a TSV field's raw text is its span.
        let raw = |i: usize| match rows.csv {
            true => fields[i].as_slice(),
            false => rows.spans.get(i).map_or(&[][..], |r| &data[r.clone()]),
        };
        match row(schema, &order, rows.csv, &fields, raw, &mut values) {
            Ok(()) => {
                for v in &values {
                    decoded.bytes.extend_from_slice(v);
                }
                decoded.ends.push(decoded.bytes.len());
                if decoded.held() > options.max_decoded {
                    return Err(HeaderError::TooLarge);
                }
            }
            Err(reason) => bad_row(BadRow { row: n, reason }, decoded),
        }
    }
    Ok(())
}

/// One row's fields into `values`, indexed by the table's column.
fn row<'r>(
    schema: &Schema,
    order: &[usize],
    csv: bool,
    fields: &[Vec<u8>],
    raw: impl Fn(usize) -> &'r [u8],
    values: &mut [Vec<u8>],
) -> Result<(), String> {
    let cols = schema.columns();
    let needed: usize = order.iter().map(|&c| fields_of(csv, &cols[c].ty)).sum();
    if fields.len() != needed {
        return Err(format!("{} fields, the row needs {needed}", fields.len()));
    }
    let mut next = 0;
    for &c in order {
        let col = &cols[c];
        let out = &mut values[c];
        out.clear();
        field_value(csv, &col.ty, fields, &raw, &mut next, out)
            .map_err(|e| format!("column {}: {e}", col.name))?;
    }
    Ok(())
}

/// How many fields a value of `ty` takes: one, except a Tuple in CSV,
/// which ClickHouse writes as its elements' own fields.
fn fields_of(csv: bool, ty: &Type) -> usize {
    match ty {
        Type::Tuple(items) if csv => items.iter().map(|(_, t)| fields_of(csv, t)).sum(),
        Type::LowCardinality(t) => fields_of(csv, t),
        _ => 1,
    }
}

/// The value of `ty` starting at field `*next` (advanced past it).
fn field_value<'r>(
    csv: bool,
    ty: &Type,
    fields: &[Vec<u8>],
    raw: &impl Fn(usize) -> &'r [u8],
    next: &mut usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match ty {
        Type::LowCardinality(t) => return field_value(csv, t, fields, raw, next, out),
        Type::Tuple(items) if csv => {
            for (_, t) in items {
                field_value(csv, t, fields, raw, next, out)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let k = *next;
    *next += 1;
    if crate::literal::is_composite(ty) {
        return crate::literal::parse(ty, raw(k), out);
    }
    let field = &fields[k];
    if field == b"\\N" && matches!(ty, Type::Nullable(_)) {
        out.push(1);
        return Ok(());
    }
    if !csv && !takes_bytes(ty) && (field.first() == Some(&b' ') || field.last() == Some(&b' ')) {
        // The value readers trim (they are the JSON strings' too), but
        // ClickHouse's TSV reader does not: 18.16 and current servers refuse
        // ` 3` for a UInt64, so storing 3 would keep a row the server drops.
        return Err(format!(
            "`{}`: spaces around a TabSeparated {ty} value (ClickHouse refuses them)",
            String::from_utf8_lossy(field)
        ));
    }
    write_scalar(ty, field, true, out)
}

/// A String or FixedString (also Nullable, LowCardinality): its field is
/// its bytes, spaces and all.
fn takes_bytes(ty: &Type) -> bool {
    match ty {
        Type::Nullable(t) | Type::LowCardinality(t) => takes_bytes(t),
        Type::String | Type::FixedString(_) => true,
        _ => false,
    }
}

struct Rows<'a> {
    data: &'a [u8],
    pos: usize,
    csv: bool,
    dialect: Csv,
    /// Where each field of the last TSV row is in `data`, escapes and all:
    /// an Array or Tuple field is read from its raw text (its quoted
    /// strings use the same escapes, so unescaping first would break them).
    spans: Vec<std::ops::Range<usize>>,
}

impl Rows<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next row's fields, unescaped. On error the rest of the row is
    /// skipped, so the next call starts at the next row.
    fn next_row(&mut self, fields: &mut Vec<Vec<u8>>) -> Result<(), String> {
        fields.clear();
        let result = if self.csv {
            self.csv_row(fields)
        } else {
            self.tsv_row(fields)
        };
        if result.is_err() {
            self.pos = memchr::memchr(b'\n', &self.data[self.pos.min(self.data.len())..])
                .map_or(self.data.len(), |i| self.pos + i + 1);
        }
        result
    }

    fn tsv_row(&mut self, fields: &mut Vec<Vec<u8>>) -> Result<(), String> {
        let rest = &self.data[self.pos..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        self.spans.clear();
        let mut at = self.pos;
        for raw in line.split(|&b| b == b'\t') {
            fields.push(tsv_field(raw)?);
            self.spans.push(at..at + raw.len());
            at += raw.len() + 1;
        }
        self.pos += (end + 1).min(rest.len());
        Ok(())
    }

    /// One CSV row. As 18.16 reads it: spaces and tabs around a field are
    /// not part of it; a field that then starts with `"` or `'` is quoted
    /// by that character (a doubled one inside stands for itself), each as
    /// the dialect allows.
    fn csv_row(&mut self, fields: &mut Vec<Vec<u8>>) -> Result<(), String> {
        let d = self.data;
        let Csv {
            delimiter,
            single_quotes,
            double_quotes,
        } = self.dialect;
        let blank =
            |b: Option<&u8>| matches!(b, Some(&c) if (c == b' ' || c == b'\t') && c != delimiter);
        let quote = |b: Option<&u8>| match b {
            Some(&q @ b'"') if double_quotes => Some(q),
            Some(&q @ b'\'') if single_quotes => Some(q),
            _ => None,
        };
        loop {
            let mut field = Vec::new();
            while blank(d.get(self.pos)) {
                self.pos += 1;
            }
            if let Some(q) = quote(d.get(self.pos)) {
                self.pos += 1;
                loop {
                    match d.get(self.pos) {
                        None => return Err("a quoted CSV field is not closed".into()),
                        Some(&b) if b == q && d.get(self.pos + 1) == Some(&q) => {
                            field.push(q);
                            self.pos += 2;
                        }
                        Some(&b) if b == q => {
                            self.pos += 1;
                            break;
                        }
                        Some(&b) => {
                            field.push(b);
                            self.pos += 1;
                        }
                    }
                }
                while blank(d.get(self.pos)) {
                    self.pos += 1;
                }
            } else {
                while let Some(&b) = d.get(self.pos) {
                    if b == delimiter || b == b'\n' {
                        break;
                    }
                    field.push(b);
                    self.pos += 1;
                }
                while field.last() == Some(&b'\r') || blank(field.last()) {
                    field.pop();
                }
            }
            fields.push(field);
            match d.get(self.pos) {
                Some(&b) if b == delimiter => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\r') if d.get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 2;
                    return Ok(());
                }
                None => return Ok(()),
                Some(_) => {
                    return Err(format!(
                        "text after the closing quote of field {}",
                        fields.len()
                    ))
                }
            }
        }
    }
}

/// A TSV field with its backslash escapes undone (`\N` is left as it is:
/// only a whole field `\N` is NULL).
fn tsv_field(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw == b"\\N" {
        return Ok(raw.to_vec());
    }
    unescape(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composites_in_tsv_from_the_raw_field_and_tuples_in_csv_as_fields() {
        let schema = Schema::parse("id UInt8, t Tuple(UInt8, String), a Array(String)").unwrap();
        let decode_one = |format, data: &[u8]| {
            let (mut decoded, mut bad) = (crate::decoded::Rows::default(), Vec::new());
            decode(
                format,
                &schema,
                None,
                data,
                &crate::decoded::Options::default(),
                &mut decoded,
                &mut bad,
            )
            .unwrap();
            (decoded.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), bad)
        };
        let want = vec![vec![1, 2, 1, b'x', 1, 3, b'a', b'\'', b'b']];
        let tsv = Text::Tsv {
            names: false,
            types: false,
        };
        assert_eq!(decode_one(tsv, b"1\t(2,'x')\t['a\\'b']\n").0, want);
        let csv = Text::Csv { names: false };
        assert_eq!(decode_one(csv, b"1,2,\"x\",\"['a\\'b']\"\n").0, want);
        let (rows, bad) = decode_one(csv, b"1,\"(2,'x')\",\"[]\"\n");
        assert!(rows.is_empty() && bad[0].reason.contains("3 fields, the row needs 4"));
    }

    fn run(format: Text, data: impl AsRef<[u8]>) -> (Vec<Vec<u8>>, Vec<BadRow>) {
        let schema = Schema::parse("id UInt8, s String, n Nullable(Int16)").unwrap();
        let (mut decoded, mut bad) = (crate::decoded::Rows::default(), Vec::new());
        decode(
            format,
            &schema,
            None,
            data.as_ref(),
            &crate::decoded::Options::default(),
            &mut decoded,
            &mut bad,
        )
        .unwrap();
        (decoded.iter().map(<[u8]>::to_vec).collect(), bad)
    }

    #[test]
    fn tsv_escapes_nulls_and_bad_rows() {
        let tsv = Text::Tsv {
            names: false,
            types: false,
        };
        let (rows, bad) = run(tsv, "1\ta\\tb\t\\N\n2\tx\t-2\nbad\ty\t1\n3\t\\\\N\t7\r\n");
        assert_eq!(rows[0], [1, 3, b'a', b'\t', b'b', 1]);
        assert_eq!(rows[1], [2, 1, b'x', 0, 0xfe, 0xff]);
        assert_eq!(rows[2], [3, 2, b'\\', b'N', 0, 7, 0]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].row, 3);
        assert!(bad[0].reason.contains("column id"), "{:?}", bad[0]);
        let named = Text::Tsv {
            names: true,
            types: true,
        };
        let (rows, bad) = run(named, "n\tid\ts\nNullable(Int16)\tUInt8\tString\n5\t9\tq\n");
        assert!(bad.is_empty());
        assert_eq!(rows[0], [9, 1, b'q', 0, 5, 0]);
    }

    #[test]
    fn csv_quotes_and_names() {
        let (rows, bad) = run(
            Text::Csv { names: true },
            "s,id,n\n\"a,\"\"b\"\"\nc\",1,\\N\nz,2,3\n\"open,3,4\n",
        );
        assert_eq!(
            rows[0],
            [1, 7, b'a', b',', b'"', b'b', b'"', b'\n', b'c', 1]
        );
        assert_eq!(rows[1], [2, 1, b'z', 0, 3, 0]);
        assert_eq!(bad.len(), 1, "{bad:?}");
    }

    #[test]
    fn hand_written_csv_and_tsv_read_as_18_16_reads_them() {
        let csv = Text::Csv { names: false };
        // Spaces around fields, single quotes (doubled inside), empty
        // numbers (0, also in a Nullable column), a quoted empty number.
        let (rows, bad) = run(
            csv,
            "1, \"sp\" , 5 \n 2 ,'a,''b',\n3,x y ,\"\"\n,\t z\t,\\N\n",
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows[0], [1, 2, b's', b'p', 0, 5, 0]);
        assert_eq!(rows[1], [2, 4, b'a', b',', b'\'', b'b', 0, 0, 0]);
        assert_eq!(rows[2], [3, 3, b'x', b' ', b'y', 0, 0, 0]);
        assert_eq!(rows[3], [0, 1, b'z', 1]);
        let tsv = Text::Tsv {
            names: false,
            types: false,
        };
        // Bytes that are not UTF-8 are a String's as they are; an empty
        // number is 0; an empty Date is not a date (as in 18.16).
        let (rows, bad) = run(tsv, b"4\t\xff\\xfe\t\n");
        assert_eq!(rows, [vec![4, 2, 0xff, 0xfe, 0, 0, 0]]);
        assert!(bad.is_empty());
        // TSV keeps a String's spaces and refuses them around a number, as
        // the server does (CSV trims them: above).
        let (rows, bad) = run(tsv, "5\t a \t\n 6\tb\t\n7 \tc\t\n");
        assert_eq!(rows, [vec![5, 3, b' ', b'a', b' ', 0, 0, 0]]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].reason.contains("spaces around"), "{:?}", bad[0]);
        let dated = Schema::parse("d Date").unwrap();
        let mut out = Vec::new();
        assert!(write_scalar(&dated.columns()[0].ty, b"", true, &mut out).is_err());
    }

    #[test]
    fn field_counts_and_headers_are_checked() {
        let (rows, bad) = run(
            Text::Tsv {
                names: false,
                types: false,
            },
            "1\ta\n",
        );
        assert!(rows.is_empty() && bad[0].reason.contains("2 fields"));
        let schema = Schema::parse("id UInt8, s String").unwrap();
        let mut sink = (crate::decoded::Rows::default(), Vec::new());
        let e = decode(
            Text::Csv { names: true },
            &schema,
            None,
            b"id,nope\n",
            &crate::decoded::Options::default(),
            &mut sink.0,
            &mut sink.1,
        )
        .unwrap_err();
        assert!(matches!(e, HeaderError::Bad(b) if b.reason.contains("nope")));
        // A header that leaves `s` out: its default (empty) fills it.
        let (mut decoded, mut bad) = (crate::decoded::Rows::default(), Vec::new());
        decode(
            Text::Csv { names: true },
            &schema,
            None,
            b"id\n7\n",
            &crate::decoded::Options::default(),
            &mut decoded,
            &mut bad,
        )
        .unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), [&[7, 0][..]]);
        let defaulted = schema.with_default_expression("s", "'x'");
        let e = decode(
            Text::Csv { names: true },
            &defaulted,
            None,
            b"id\n7\n",
            &crate::decoded::Options::default(),
            &mut decoded,
            &mut bad,
        )
        .unwrap_err();
        assert!(matches!(e, HeaderError::LeftOut(r) if r.contains("column s")));
    }
}
