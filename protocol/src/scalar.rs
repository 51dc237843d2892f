//! One scalar value from its text form, as TSV, CSV and quoted literals
//! carry it: escapes undone, written as RowBinary.
//!
//! Owns: [`write_scalar`] (the bytes-or-text rule per type, 18.16's empty
//! number) and [`unescape`] (ClickHouse's backslash escapes). Must not:
//! split fields or rows (`text` and `literal` do, above this).

use ch_ingest::rowbinary::leb128;
use ch_ingest::{Transcoder, Type};

/// A scalar value of `ty` from its text, escapes undone: a String or
/// FixedString takes the bytes as they are (ClickHouse stores any bytes,
/// UTF-8 or not); other types read the text. With `empty_is_zero`, an empty
/// field of a number type is 0, as 18.16 reads TSV and CSV (even in a
/// Nullable column: not NULL).
pub(crate) fn write_scalar(
    ty: &Type,
    text: &[u8],
    empty_is_zero: bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match ty {
        Type::Nullable(t) => {
            let before = out.len();
            out.push(0);
            let r = write_scalar(t, text, empty_is_zero, out);
            if r.is_err() {
                out.truncate(before);
            }
            return r;
        }
        Type::LowCardinality(t) => return write_scalar(t, text, empty_is_zero, out),
        Type::String => {
            leb128::put(out, text.len() as u64);
            out.extend_from_slice(text);
            return Ok(());
        }
        Type::FixedString(n) => {
            if text.len() > *n {
                return Err(format!(
                    "{} bytes are too long for FixedString({n})",
                    text.len()
                ));
            }
            out.extend_from_slice(text);
            out.resize(out.len() + (n - text.len()), 0);
            return Ok(());
        }
        _ => {}
    }
    if text.is_empty() && empty_is_zero && is_number(ty) {
        Transcoder::write_default(ty, out);
        return Ok(());
    }
    let text = std::str::from_utf8(text).map_err(|_| format!("the {ty} value is not UTF-8"))?;
    Transcoder::write_text(ty, text, out).map_err(|e| e.reason)
}

fn is_number(ty: &Type) -> bool {
    use Type::*;
    matches!(
        ty,
        UInt8
            | UInt16
            | UInt32
            | UInt64
            | UInt128
            | UInt256
            | Int8
            | Int16
            | Int32
            | Int64
            | Int128
            | Int256
            | Float32
            | Float64
            | Decimal(..)
    )
}

/// `raw` with ClickHouse's backslash escapes undone (`\n`, `\t`, `\xHH`,
/// ...; any other escaped byte stands for itself), as TSV fields and
/// quoted strings carry them.
pub(crate) fn unescape(raw: &[u8]) -> Result<Vec<u8>, String> {
    if !raw.contains(&b'\\') {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let Some(&e) = raw.get(i + 1) else {
                return Err("a field ends in a lone backslash".into());
            };
            out.push(match e {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'b' => 8,
                b'f' => 12,
                b'0' => 0,
                b'a' => 7,
                b'v' => 11,
                b'x' if raw.len() >= i + 4
                    && raw[i + 2..i + 4].iter().all(u8::is_ascii_hexdigit) =>
                {
                    let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(raw[i + 2]) << 4 | hex(raw[i + 3]));
                    i += 4;
                    continue;
                }
                other => other,
            });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}
