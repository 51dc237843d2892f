//! RowBinary back to values, driven by a [`Schema`].
//!
//! Owns: reading one row (or one value) of RowBinary for a schema and
//! rendering it as JSON in the forms the transcoder accepts, so a decoded row
//! transcodes back to the same bytes. Used by tests, fuzz targets and
//! `ch-ingest inspect`. Must not: trust lengths in the input (a length is
//! checked against the bytes left before anything is allocated) or panic on
//! any input.

use crate::civil;
use crate::schema::{Schema, Type};
use crate::wide;
use serde_json::{Map, Value};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason} at byte {offset}", column.as_ref().map(|c| format!("column `{c}`: ")).unwrap_or_default())]
pub struct RowBinaryError {
    /// The column being decoded.
    pub column: Option<String>,
    /// Offset of the problem from the start of the input.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RowBinaryError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.err(format!(
                    "needs {n} more bytes, {} left",
                    self.data.len() - self.pos
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RowBinaryError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn leb128(&mut self) -> Result<u64, RowBinaryError> {
        let (value, len) =
            super::leb128::read(&self.data[self.pos..]).map_err(|e| self.err(e.reason().into()))?;
        self.pos += len;
        Ok(value)
    }
    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, RowBinaryError> {
        let n = self.leb128()?;
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!("length {n} exceeds the {left} bytes left")));
        }
        Ok(n as usize)
    }
    fn err(&self, reason: String) -> RowBinaryError {
        RowBinaryError {
            column: None,
            offset: self.pos,
            reason,
        }
    }
}

/// Decodes one row from the front of `input`, advancing it past the row.
pub fn decode_row(
    schema: &Schema,
    input: &mut &[u8],
) -> Result<Map<String, Value>, RowBinaryError> {
    let mut r = Reader {
        data: input,
        pos: 0,
    };
    let mut row = Map::new();
    for col in schema.columns() {
        let v = value(&col.ty, &mut r).map_err(|mut e| {
            e.column = Some(col.name.clone());
            e
        })?;
        row.insert(col.name.clone(), v);
    }
    *input = &input[r.pos..];
    Ok(row)
}

/// Walks the rows of `input` (columns of `types`, in order) without
/// decoding them: calls `f` with each row's byte range and the range of
/// column `key`'s value in it (a string's bytes without their length
/// prefix). For routing rows by a sharding key at RowBinary speed.
pub(crate) fn for_each_row(
    types: &[&Type],
    key: usize,
    input: &[u8],
    mut f: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>),
) -> Result<(), RowBinaryError> {
    let mut r = Reader {
        data: input,
        pos: 0,
    };
    while r.pos < input.len() {
        let start = r.pos;
        let mut value = start..start;
        for (i, ty) in types.iter().enumerate() {
            if i == key {
                let string = matches!(ty, Type::LowCardinality(t) if **t == Type::String);
                if string || **ty == Type::String {
                    let n = r.count()?;
                    let at = r.pos;
                    r.take(n)?;
                    value = at..r.pos;
                    continue;
                }
                let at = r.pos;
                skip(ty, &mut r)?;
                value = at..r.pos;
            } else {
                skip(ty, &mut r)?;
            }
        }
        f(start..r.pos, value);
    }
    Ok(())
}

/// The length of the one row of `schema` at the front of `input`, checked
/// as ClickHouse would read it: every length within the input, Nullable
/// markers 0 or 1, Enum values among the type's. Allocates nothing.
pub(crate) fn row_len(schema: &Schema, input: &[u8]) -> Result<usize, RowBinaryError> {
    let mut r = Reader {
        data: input,
        pos: 0,
    };
    for col in schema.columns() {
        skip(&col.ty, &mut r).map_err(|mut e| {
            e.column = Some(col.name.clone());
            e
        })?;
    }
    Ok(r.pos)
}

/// The length of the one value of `ty` at the front of `input`, checked
/// as [`Buffer::track_rowbinary`](crate::Buffer::track_rowbinary) checks a
/// row: for splitting RowBinary that arrives in another column order.
pub fn value_len(ty: &Type, input: &[u8]) -> Result<usize, RowBinaryError> {
    let mut r = Reader {
        data: input,
        pos: 0,
    };
    skip(ty, &mut r)?;
    Ok(r.pos)
}

/// Moves past one value of `ty`.
fn skip(ty: &Type, r: &mut Reader<'_>) -> Result<(), RowBinaryError> {
    // An Enum value the type does not list is refused by the server for
    // the whole INSERT; caught here, it costs only its own row.
    match ty {
        Type::Enum8(items) => {
            let v = r.array::<1>()?[0] as i8;
            if !items.iter().any(|(_, x)| *x == v) {
                return Err(r.err(format!("{v} is not a value of {ty}")));
            }
            return Ok(());
        }
        Type::Enum16(items) => {
            let v = i16::from_le_bytes(r.array()?);
            if !items.iter().any(|(_, x)| *x == v) {
                return Err(r.err(format!("{v} is not a value of {ty}")));
            }
            return Ok(());
        }
        _ => {}
    }
    if let Some(n) = ty.fixed_width() {
        r.take(n)?;
        return Ok(());
    }
    match ty {
        Type::String => {
            let n = r.count()?;
            r.take(n)?;
        }
        Type::Nullable(t) => match r.array::<1>()?[0] {
            0 => skip(t, r)?,
            1 => {}
            b => return Err(r.err(format!("Nullable marker must be 0 or 1, got {b}"))),
        },
        Type::LowCardinality(t) => skip(t, r)?,
        Type::Array(t) => {
            for _ in 0..r.count()? {
                skip(t, r)?;
            }
        }
        Type::Tuple(items) => {
            for (_, t) in items {
                skip(t, r)?;
            }
        }
        Type::Map(k, v) => {
            for _ in 0..r.count()? {
                skip(k, r)?;
                skip(v, r)?;
            }
        }
        other => return Err(r.err(format!("no RowBinary layout for {other}"))),
    }
    Ok(())
}

/// Decodes every row of `input`; fails if the last row is incomplete.
pub fn decode_all(
    schema: &Schema,
    mut input: &[u8],
) -> Result<Vec<Map<String, Value>>, RowBinaryError> {
    let total = input.len();
    let mut rows = Vec::new();
    while !input.is_empty() {
        let at = total - input.len();
        let row = decode_row(schema, &mut input).map_err(|mut e| {
            e.offset += at;
            e
        })?;
        rows.push(row);
    }
    Ok(rows)
}

fn float(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        // JSON has no NaN or infinities; the transcoder parses these back.
        None => Value::String(if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }),
    }
}

fn value(ty: &Type, r: &mut Reader<'_>) -> Result<Value, RowBinaryError> {
    Ok(match ty {
        Type::UInt8 => r.array::<1>()?[0].into(),
        Type::UInt16 => u16::from_le_bytes(r.array()?).into(),
        Type::UInt32 => u32::from_le_bytes(r.array()?).into(),
        Type::UInt64 => u64::from_le_bytes(r.array()?).into(),
        Type::Int8 => (r.array::<1>()?[0] as i8).into(),
        Type::Int16 => i16::from_le_bytes(r.array()?).into(),
        Type::Int32 => i32::from_le_bytes(r.array()?).into(),
        Type::Int64 => i64::from_le_bytes(r.array()?).into(),
        Type::UInt128 => wide::format(r.take(16)?, false, 0).into(),
        Type::UInt256 => wide::format(r.take(32)?, false, 0).into(),
        Type::Int128 => wide::format(r.take(16)?, true, 0).into(),
        Type::Int256 => wide::format(r.take(32)?, true, 0).into(),
        Type::Float32 => float(f32::from_le_bytes(r.array()?) as f64),
        Type::Float64 => float(f64::from_le_bytes(r.array()?)),
        Type::Bool => Value::Bool(r.array::<1>()?[0] != 0),
        Type::String => {
            let n = r.count()?;
            String::from_utf8_lossy(r.take(n)?).into_owned().into()
        }
        Type::FixedString(n) => {
            let bytes = r.take(*n)?;
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            String::from_utf8_lossy(&bytes[..end]).into_owned().into()
        }
        Type::Date => civil::format_date(u16::from_le_bytes(r.array()?) as i64).into(),
        Type::Date32 => civil::format_date(i32::from_le_bytes(r.array()?) as i64).into(),
        Type::DateTime(_) => {
            civil::format_datetime(u32::from_le_bytes(r.array()?) as i64, 0, 0).into()
        }
        Type::DateTime64(p, _) => {
            let ticks = i64::from_le_bytes(r.array()?);
            let scale = 10i64
                .checked_pow(*p)
                .filter(|_| *p <= 9)
                .ok_or_else(|| r.err(format!("DateTime64 precision {p} is above 9")))?;
            civil::format_datetime(ticks.div_euclid(scale), ticks.rem_euclid(scale) as u64, *p)
                .into()
        }
        Type::Uuid => {
            let hi = u64::from_le_bytes(r.array()?);
            let lo = u64::from_le_bytes(r.array()?);
            let u = uuid::Uuid::from_u64_pair(hi, lo);
            u.hyphenated().to_string().into()
        }
        Type::Ipv4 => std::net::Ipv4Addr::from(u32::from_le_bytes(r.array()?))
            .to_string()
            .into(),
        Type::Ipv6 => std::net::Ipv6Addr::from(r.array::<16>()?)
            .to_string()
            .into(),
        Type::Decimal(p, s) => wide::format(r.take(Type::decimal_width(*p))?, true, *s).into(),
        Type::Enum8(items) => {
            let v = r.array::<1>()?[0] as i8;
            items
                .iter()
                .find(|(_, x)| *x == v)
                .map_or_else(|| v.into(), |(n, _)| n.clone().into())
        }
        Type::Enum16(items) => {
            let v = i16::from_le_bytes(r.array()?);
            items
                .iter()
                .find(|(_, x)| *x == v)
                .map_or_else(|| v.into(), |(n, _)| n.clone().into())
        }
        Type::Nullable(t) => match r.array::<1>()?[0] {
            0 => value(t, r)?,
            1 => Value::Null,
            b => return Err(r.err(format!("Nullable marker must be 0 or 1, got {b}"))),
        },
        Type::LowCardinality(t) => value(t, r)?,
        Type::Array(t) => {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(value(t, r)?);
            }
            Value::Array(items)
        }
        Type::Tuple(items) => Value::Array(
            items
                .iter()
                .map(|(_, t)| value(t, r))
                .collect::<Result<_, _>>()?,
        ),
        Type::Map(k, v) => {
            let n = r.count()?;
            let mut m = Map::new();
            for _ in 0..n {
                let key = match value(k, r)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, value(v, r)?);
            }
            Value::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::Transcoder;

    #[test]
    fn decodes_what_the_transcoder_wrote_and_back() {
        let schema = Schema::parse(
            "a UInt64, b Nullable(String), c Array(Tuple(String, UInt8)), d DateTime64(3), e Decimal(18, 4), \
             f UUID, g IPv6, h Map(String, Int32), i Enum8('x' = 1, 'y' = 2), j Int256, k FixedString(4), l Date32, m Float32",
        )
        .unwrap();
        let json = br#"{"a":"18446744073709551615","b":null,"c":[["p",1],["q",2]],"d":"2023-11-14 22:13:20.123",
            "e":"-12.5","f":"01234567-89ab-cdef-0011-223344556677","g":"::ffff:1.2.3.4","h":{"k":-5},"i":"y",
            "j":"-57896044618658097711785492504343953926634992332820282019728792003956564819968","k":"ab","l":"1900-01-01","m":0.1}"#;
        let mut t = Transcoder::new(schema.clone());
        let mut bytes = Vec::new();
        t.transcode(json, &mut bytes).unwrap();
        let mut input = &bytes[..];
        let row = decode_row(&schema, &mut input).unwrap();
        assert!(input.is_empty());
        assert_eq!(row["d"], "2023-11-14 22:13:20.123");
        assert_eq!(row["e"], "-12.5000");
        assert_eq!(row["g"], "::ffff:1.2.3.4");
        let again = serde_json::to_vec(&row).unwrap();
        let mut bytes2 = Vec::new();
        t.transcode(&again, &mut bytes2).unwrap();
        assert_eq!(bytes, bytes2);
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let schema = Schema::parse("s Array(UInt8)").unwrap();
        let e = decode_all(&schema, &[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("s"));
        assert!(decode_all(&Schema::parse("n Nullable(UInt8)").unwrap(), &[7]).is_err());
        assert!(decode_all(&Schema::parse("x UInt64").unwrap(), &[1, 2]).is_err());
    }
}
