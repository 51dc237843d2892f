//! JSON objects straight into RowBinary, driven by a [`Schema`].
//!
//! Owns: [`Transcoder`], which reads one JSON object with the crate's JSON
//! reader and writes each field's RowBinary into a reusable scratch buffer,
//! then appends the row to the output in column order (missing columns get
//! their type's default, NULL for `Nullable`; a row whose keys come in
//! column order is one copy). Must not: build a tree, write a partial row
//! to the output, recurse deeper than the schema's types, or panic on any
//! input.
//!
//! What each type accepts (JSON `null` in a non-Nullable column stores the
//! default, as ClickHouse's `input_format_null_as_default` does):
//!
//! | type | accepts |
//! | --- | --- |
//! | integers, `Float*` | numbers, or numbers in strings (exact for 64..256-bit) |
//! | `Decimal(P, S)` | numbers or strings, exact from strings; extra fraction digits truncated |
//! | `Bool` | `true`/`false`, 0/1, `"true"`/`"false"` |
//! | `String`, `FixedString(N)` | strings (numbers and booleans as their text); FixedString is zero-padded |
//! | `Date`, `Date32` | `"YYYY-MM-DD"` or days since the epoch |
//! | `DateTime`, `DateTime64(P)` | RFC 3339 with any offset, `"YYYY-MM-DD hh:mm:ss[.f]"` (UTC), or Unix seconds (fraction allowed) |
//! | `UUID` | canonical text | `IPv4`/`IPv6` | dotted/colon text (IPv4 also a number; IPv4 text into IPv6 is mapped) |
//! | `Enum8/16` | the name, or the numeric value |
//! | `Array(T)` | arrays | `Tuple(...)` | arrays (named tuples also objects) | `Map(K, V)` | objects, keys parsed as K |

use crate::civil;
use crate::json::reader::{Fail, Reader, Scalar, Token};
use crate::json::{DecodeError, DecodeErrorKind, NdjsonCursor, NdjsonRow, Quoted};
use crate::schema::{Schema, Type};
use crate::wide;
use bytes::BufMut;
use std::fmt;

/// Turns JSON objects into RowBinary rows for one schema. Reuse one per
/// thread: its scratch buffers are kept between rows.
///
/// ```
/// use ch_ingest::{Schema, Transcoder};
/// let schema = Schema::parse("id UInt64, tags Array(String), note Nullable(String)").unwrap();
/// let mut t = Transcoder::new(schema);
/// let mut out = bytes::BytesMut::new();
/// t.transcode(br#"{"tags": ["a"], "id": "18446744073709551615"}"#, &mut out).unwrap();
/// assert_eq!(&out[..], &[255, 255, 255, 255, 255, 255, 255, 255, 1, 1, b'a', 1]);
/// let err = t.transcode(br#"{"id": -1}"#, &mut out).unwrap_err();
/// assert_eq!(err.field.as_deref(), Some("id"));
/// ```
#[derive(Debug, Clone)]
pub struct Transcoder {
    schema: Schema,
    deny_unknown: bool,
    refuse_omitted_expressions: bool,
    scratch: Vec<u8>,
    slots: Vec<Option<(usize, usize)>>,
    /// The last row's columns all came, in column order: `scratch` is the
    /// row as it stands.
    ordered: bool,
}

impl Transcoder {
    /// A transcoder for `schema`; unknown JSON fields are ignored.
    pub fn new(schema: Schema) -> Self {
        let n = schema.columns().len();
        Self {
            schema,
            deny_unknown: false,
            refuse_omitted_expressions: false,
            scratch: Vec::new(),
            slots: vec![None; n],
            ordered: false,
        }
    }

    /// Reject objects with fields the schema does not have (default: ignore them).
    pub fn deny_unknown_fields(mut self, deny: bool) -> Self {
        self.deny_unknown = deny;
        self
    }

    /// Reject objects that omit a column with a `DEFAULT` expression
    /// ([`Schema::default_expression`]), as [`DecodeErrorKind::Missing`]
    /// naming the column and the expression. Default: off, and such a
    /// column gets its type's default, which is what 18.16 stores (it has
    /// no such setting) and newer servers with
    /// `input_format_defaults_for_omitted_fields = 0`.
    /// With the setting on (their default) the server computes
    /// the expression per row, which no transcoder can, so a row written
    /// with the type's default instead would be silently different: turn
    /// this on to refuse it.
    ///
    /// ```
    /// use ch_ingest::{Schema, Transcoder};
    /// use ch_ingest::json::DecodeErrorKind;
    /// let schema = Schema::parse("id UInt64, at DateTime")?.with_default_expression("at", "now()");
    /// let mut t = Transcoder::new(schema).refuse_omitted_default_expressions(true);
    /// let mut out = Vec::new();
    /// t.transcode(br#"{"id": 1, "at": 5}"#, &mut out)?;
    /// let e = t.transcode(br#"{"id": 2}"#, &mut out).unwrap_err();
    /// assert_eq!((e.kind, e.field.as_deref()), (DecodeErrorKind::Missing, Some("at")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refuse_omitted_default_expressions(mut self, refuse: bool) -> Self {
        self.refuse_omitted_expressions = refuse;
        self
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends one row for the JSON object `json` to `out`. On error `out`
    /// is unchanged.
    pub fn transcode(&mut self, json: &[u8], out: &mut impl BufMut) -> Result<(), DecodeError> {
        let mut r = Reader::new(json);
        match self.read_row(&mut r).and_then(|()| r.end()) {
            Ok(()) => {
                self.emit(out);
                Ok(())
            }
            Err(e) => Err(*e),
        }
    }

    /// Transcodes the cursor's next line (see [`NdjsonCursor`]) and appends
    /// its row to `out` if it is good; `None` at the end of the body. The
    /// body is read once: the row's parse finds the line's end.
    pub fn transcode_line(
        &mut self,
        cursor: &mut NdjsonCursor<'_>,
        out: &mut impl BufMut,
    ) -> Option<NdjsonRow> {
        let (line, bytes, result) = cursor.decode(|r| self.read_row(r).and_then(|()| r.end()))?;
        if result.is_ok() {
            self.emit(out);
        }
        Some(NdjsonRow {
            line,
            bytes,
            result,
        })
    }

    /// Reads one object into the scratch buffer and the slots.
    fn read_row(&mut self, r: &mut Reader<'_>) -> Result<(), Fail> {
        self.scratch.clear();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.ordered = true;
        let got = match r.value()? {
            Token::Object => None,
            Token::Array => Some("an array"),
            Token::Scalar(Scalar::Str(_)) => Some("a string"),
            Token::Scalar(Scalar::Bool(_)) => Some("a boolean"),
            Token::Scalar(Scalar::Null) => Some("null"),
            Token::Scalar(_) => Some("a number"),
        };
        if let Some(got) = got {
            return Err(at(
                DecodeError::new(
                    None,
                    DecodeErrorKind::NotAnObject,
                    format!("a row must be a JSON object, got {got}"),
                ),
                r.position(),
            ));
        }
        let columns = self.schema.columns();
        let mut seen = 0;
        let mut first = true;
        while let Some(key) = r.next_key(first)? {
            first = false;
            // Producers mostly write keys in one order: try the column
            // after the last one first.
            let i = match columns.get(seen) {
                Some(c) if c.name == key => Some(seen),
                _ => self.schema.index_of(key),
            };
            let Some(i) = i else {
                if self.deny_unknown {
                    let key = key.to_owned();
                    let e =
                        DecodeError::new(Some(&key), DecodeErrorKind::Unknown, "no such column");
                    return Err(at(e, r.position()));
                }
                r.skip()?;
                continue;
            };
            let col = &columns[i];
            if self.slots[i].is_some() {
                let e = DecodeError::new(
                    Some(&col.name),
                    DecodeErrorKind::Duplicate,
                    "field appears twice",
                );
                return Err(at(e, r.position()));
            }
            self.ordered &= i == seen;
            seen += 1;
            let start = self.scratch.len();
            if let Err(mut e) = json_value(r, &col.ty, &mut self.scratch) {
                e.field.get_or_insert_with(|| col.name.clone());
                e.offset.get_or_insert(r.position());
                return Err(e);
            }
            self.slots[i] = Some((start, self.scratch.len()));
        }
        self.ordered &= seen == columns.len();
        if self.refuse_omitted_expressions && !self.ordered {
            let omitted = self.slots.iter().enumerate().find_map(|(i, slot)| {
                slot.is_none()
                    .then(|| self.schema.default_expression(i).map(|e| (i, e)))
                    .flatten()
            });
            if let Some((i, expression)) = omitted {
                let e = DecodeError::new(
                    Some(&columns[i].name),
                    DecodeErrorKind::Missing,
                    format!(
                        "omitted, and ClickHouse would compute its DEFAULT {expression} \
                         (input_format_defaults_for_omitted_fields = 1), which ch-ingest cannot: \
                         send the column"
                    ),
                );
                return Err(at(e, r.position()));
            }
        }
        Ok(())
    }

    /// Appends the row read last, in column order.
    fn emit(&self, out: &mut impl BufMut) {
        if self.ordered {
            out.put_slice(&self.scratch);
            return;
        }
        for (col, slot) in self.schema.columns().iter().zip(&self.slots) {
            match slot {
                Some((a, b)) => out.put_slice(&self.scratch[*a..*b]),
                None => write_default(&col.ty, out),
            }
        }
    }
}

fn at(mut e: DecodeError, offset: usize) -> Fail {
    e.offset = Some(offset);
    Box::new(e)
}

/// One JSON value from the reader as RowBinary of `ty`.
fn json_value(r: &mut Reader<'_>, ty: &Type, buf: &mut Vec<u8>) -> Result<(), Fail> {
    match r.value()? {
        Token::Scalar(s) => Val { ty, buf }.scalar(s),
        Token::Array => {
            let v = Val { ty, buf }.value();
            match v.ty {
                Type::Array(inner) => {
                    let start = count_slot(v.buf);
                    let mut n = 0u64;
                    while r.next_element(n == 0)? {
                        json_value(r, inner, v.buf)?;
                        n += 1;
                    }
                    fill_count(v.buf, start, n);
                    Ok(())
                }
                Type::Tuple(items) => {
                    for (i, (_, t)) in items.iter().enumerate() {
                        if !r.next_element(i == 0)? {
                            return Err(tuple_arity(items.len(), &i.to_string()));
                        }
                        json_value(r, t, v.buf)?;
                    }
                    if r.next_element(items.is_empty())? {
                        return Err(tuple_arity(items.len(), "more"));
                    }
                    Ok(())
                }
                _ => Err(v.bad("an array")),
            }
        }
        Token::Object => {
            let v = Val { ty, buf }.value();
            match v.ty {
                Type::Map(k, val) => {
                    let start = count_slot(v.buf);
                    let mut n = 0u64;
                    while let Some(key) = r.next_key(n == 0)? {
                        Val { ty: k, buf: v.buf }.text(key)?;
                        json_value(r, val, v.buf)?;
                        n += 1;
                    }
                    fill_count(v.buf, start, n);
                    Ok(())
                }
                Type::Tuple(items) if items.iter().all(|(n, _)| n.is_some()) => {
                    // Named tuple as an object: fill by name, defaults for the rest.
                    let mut parts: Vec<Option<Vec<u8>>> = vec![None; items.len()];
                    let mut first = true;
                    while let Some(key) = r.next_key(first)? {
                        first = false;
                        let i = items.iter().position(|(n, _)| n.as_deref() == Some(key));
                        let Some(i) = i.filter(|&i| parts[i].is_none()) else {
                            let (kind, reason) = match i {
                                Some(_) => {
                                    (DecodeErrorKind::Duplicate, "tuple element appears twice")
                                }
                                None => (DecodeErrorKind::Unknown, "no such tuple element"),
                            };
                            return Err(Box::new(DecodeError::new(Some(key), kind, reason)));
                        };
                        let mut part = Vec::new();
                        json_value(r, &items[i].1, &mut part)?;
                        parts[i] = Some(part);
                    }
                    v.tuple_parts(items, parts);
                    Ok(())
                }
                _ => Err(v.bad("an object")),
            }
        }
    }
}

pub(crate) fn tuple_arity(len: usize, got: &str) -> Fail {
    Box::new(DecodeError::new(
        None,
        DecodeErrorKind::Invalid,
        format!("tuple has {len} elements, got {got}"),
    ))
}

impl Transcoder {
    /// Appends one value of `ty` given as text, as ClickHouse's text
    /// formats (TSV, CSV) carry a field once it is unescaped, read as the
    /// table above reads a JSON string (`Nullable` gets its not-NULL
    /// marker; a NULL is the caller's to recognise). `Array`, `Tuple` and
    /// `Map` have no text form here. On error `out` is unchanged and the
    /// error has no field: the caller knows the column.
    ///
    /// ```
    /// use ch_ingest::{Transcoder, Type};
    /// let mut out = Vec::new();
    /// Transcoder::write_text(&Type::parse("Nullable(UInt16)").unwrap(), "513", &mut out).unwrap();
    /// assert_eq!(out, [0, 1, 2]);
    /// assert!(Transcoder::write_text(&Type::UInt8, "300", &mut out).is_err());
    /// assert_eq!(out.len(), 3);
    /// ```
    pub fn write_text(ty: &Type, text: &str, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let before = out.len();
        Val { ty, buf: out }.text(text).map_err(|e| {
            out.truncate(before);
            *e
        })
    }

    /// Appends the RowBinary of `ty`'s default value to `out`: what
    /// ClickHouse stores for a column an INSERT leaves out when the column
    /// has no `DEFAULT` expression (zero, empty, NULL, an enum's smallest
    /// value), and what a JSON row that omits the key gets.
    ///
    /// ```
    /// use ch_ingest::{Transcoder, Type};
    /// let mut out = Vec::new();
    /// Transcoder::write_default(&Type::parse("Enum8('b' = 2, 'a' = 1)").unwrap(), &mut out);
    /// Transcoder::write_default(&Type::parse("Nullable(String)").unwrap(), &mut out);
    /// assert_eq!(out, [1, 1]);
    /// ```
    pub fn write_default(ty: &Type, out: &mut Vec<u8>) {
        write_default(ty, out)
    }
}

/// The RowBinary of a type's default value, as ClickHouse stores it for
/// a column a row leaves out (without a `DEFAULT` expression): zero, empty,
/// NULL, and an enum's smallest value (not its first: 18.16 and current
/// servers both sort an enum's values).
pub(crate) fn write_default(ty: &Type, out: &mut impl BufMut) {
    match ty {
        Type::UInt8 | Type::Int8 | Type::Bool => out.put_u8(0),
        Type::Enum8(items) => out.put_i8(items.iter().map(|i| i.1).min().unwrap_or(0)),
        Type::Enum16(items) => out.put_i16_le(items.iter().map(|i| i.1).min().unwrap_or(0)),
        Type::String | Type::Array(_) | Type::Map(..) => out.put_u8(0),
        Type::Nullable(_) => out.put_u8(1),
        Type::LowCardinality(t) => write_default(t, out),
        Type::Tuple(items) => items.iter().for_each(|(_, t)| write_default(t, out)),
        other => out.put_bytes(0, other.fixed_width().unwrap_or(0)),
    }
}

/// Reserves the byte an element count under 128 takes, ahead of the
/// elements: where [`fill_count`] writes the count once it is known.
pub(crate) fn count_slot(buf: &mut Vec<u8>) -> usize {
    buf.push(0);
    buf.len() - 1
}

/// Writes `count` (LEB128) into the slot [`count_slot`] reserved at `at`,
/// moving the elements only for a count of 128 or more.
pub(crate) fn fill_count(buf: &mut Vec<u8>, at: usize, count: u64) {
    if count < 0x80 {
        buf[at] = count as u8;
        return;
    }
    let mut pre = Vec::with_capacity(10);
    crate::rowbinary::leb128::put(&mut pre, count);
    buf.splice(at..at + 1, pre);
}

/// Writes one JSON value as RowBinary of `ty`.
/// `ty` without LowCardinality and Nullable, the not-NULL markers of the
/// Nullable ones written to `buf`.
pub(crate) fn stripped<'t>(ty: &'t Type, buf: &mut Vec<u8>) -> &'t Type {
    match ty {
        Type::LowCardinality(t) => stripped(t, buf),
        Type::Nullable(t) => {
            buf.push(0);
            stripped(t, buf)
        }
        _ => ty,
    }
}

pub(crate) struct Val<'a> {
    pub(crate) ty: &'a Type,
    pub(crate) buf: &'a mut Vec<u8>,
}

impl<'a> Val<'a> {
    pub(crate) fn bad(self, got: &str) -> Fail {
        let reason = format!("expected {}, got {got}", self.ty);
        Box::new(DecodeError::new(None, DecodeErrorKind::Invalid, reason))
    }

    fn invalid(self, reason: impl fmt::Display) -> Fail {
        let reason = format!("{reason} (for {})", self.ty);
        Box::new(DecodeError::new(None, DecodeErrorKind::Invalid, reason))
    }

    /// Strips LowCardinality, and Nullable (writing its not-null marker).
    pub(crate) fn value(self) -> Val<'a> {
        Val {
            ty: stripped(self.ty, self.buf),
            buf: self.buf,
        }
    }

    fn int(self, v: i128) -> Result<(), Fail> {
        let w = self.value();
        match w.ty {
            Type::Float32 => w.buf.put_f32_le(v_f64(v) as f32),
            Type::Float64 => w.buf.put_f64_le(v_f64(v)),
            Type::Bool if v == 0 || v == 1 => w.buf.push(v as u8),
            Type::Date => match u16::try_from(v) {
                Ok(d) => w.buf.put_u16_le(d),
                Err(_) => return Err(w.invalid(format_args!("{v} days is out of range"))),
            },
            Type::Date32 => match i32::try_from(v) {
                Ok(d) => w.buf.put_i32_le(d),
                Err(_) => return Err(w.invalid(format_args!("{v} days is out of range"))),
            },
            Type::DateTime(_) => match u32::try_from(v) {
                Ok(s) => w.buf.put_u32_le(s),
                Err(_) => return Err(w.invalid(format_args!("{v} seconds is out of range"))),
            },
            Type::DateTime64(p, _) => match i64::try_from(v)
                .ok()
                .and_then(|s| s.checked_mul(10i64.checked_pow(*p)?))
            {
                Some(t) => w.buf.put_i64_le(t),
                None => return Err(w.invalid(format_args!("{v} seconds is out of range"))),
            },
            Type::Ipv4 => match u32::try_from(v) {
                Ok(a) => w.buf.put_u32_le(a),
                Err(_) => return Err(w.invalid(format_args!("{v} is not an IPv4 address"))),
            },
            Type::Enum8(items) => match items.iter().find(|(_, x)| *x as i128 == v) {
                Some((_, x)) => w.buf.put_i8(*x),
                None => return Err(w.invalid(format_args!("{v} is not a value of the enum"))),
            },
            Type::Enum16(items) => match items.iter().find(|(_, x)| *x as i128 == v) {
                Some((_, x)) => w.buf.put_i16_le(*x),
                None => return Err(w.invalid(format_args!("{v} is not a value of the enum"))),
            },
            Type::String | Type::FixedString(_) => return w.text(&v_string(v)),
            ty if Type::int_layout(ty).is_some() || matches!(ty, Type::Decimal(..)) => {
                // An integer that fits its column is written as is; the
                // text path is for decimals and for the range error.
                match Type::int_layout(ty).and_then(|(bytes, signed)| int_le(v, bytes, signed)) {
                    Some((le, bytes)) => w.buf.extend_from_slice(&le[..bytes]),
                    None => return w.text(&v_string(v)),
                }
            }
            _ => return Err(w.bad("a number")),
        }
        Ok(())
    }

    /// A value given as text (a JSON string, a map key, or a number's text).
    pub(crate) fn text(self, s: &str) -> Result<(), Fail> {
        let v = self.value();
        match v.ty {
            Type::String => {
                crate::rowbinary::leb128::put(v.buf, s.len() as u64);
                v.buf.extend_from_slice(s.as_bytes());
            }
            Type::FixedString(n) => {
                if s.len() > *n {
                    return Err(v.invalid(format_args!("{} bytes do not fit", s.len())));
                }
                v.buf.extend_from_slice(s.as_bytes());
                v.buf.put_bytes(0, n - s.len());
            }
            Type::Float32 => match s.trim().parse::<f32>() {
                Ok(f) => v.buf.put_f32_le(f),
                Err(_) => return Err(v.invalid(format_args!("{} is not a number", Quoted(s)))),
            },
            Type::Float64 => match s.trim().parse::<f64>() {
                Ok(f) => v.buf.put_f64_le(f),
                Err(_) => return Err(v.invalid(format_args!("{} is not a number", Quoted(s)))),
            },
            Type::Bool => match s {
                "true" | "1" => v.buf.push(1),
                "false" | "0" => v.buf.push(0),
                _ => return Err(v.invalid(format_args!("{} is not a boolean", Quoted(s)))),
            },
            Type::Decimal(p, scale) => {
                let bytes = Type::decimal_width(*p);
                let target = wide::Target {
                    bytes,
                    signed: true,
                    scale: *scale,
                    precision: Some(*p),
                };
                let mut out = [0u8; 32];
                match wide::parse(s.trim(), target, &mut out) {
                    Ok(()) => v.buf.extend_from_slice(&out[..bytes]),
                    Err(why) => return Err(v.invalid(format_args!("{}: {why}", Quoted(s)))),
                }
            }
            Type::Date | Type::Date32 => {
                let days = civil::parse_date(s).or_else(|| s.parse::<i64>().ok());
                match days {
                    Some(d) => return v.int(d as i128),
                    None => {
                        return Err(
                            v.invalid(format_args!("{} is not a date (YYYY-MM-DD)", Quoted(s)))
                        )
                    }
                }
            }
            Type::DateTime(_) | Type::DateTime64(..) => {
                let at = civil::parse_datetime(s).or_else(|| seconds_text(s));
                let Some(at) = at else {
                    return Err(v.invalid(format_args!(
                        "{} is not a date-time (RFC 3339, `YYYY-MM-DD hh:mm:ss` or Unix seconds)",
                        Quoted(s)
                    )));
                };
                return v.instant(at);
            }
            Type::Uuid => match parse_uuid(s) {
                Some(u) => {
                    v.buf.put_u64_le((u >> 64) as u64);
                    v.buf.put_u64_le(u as u64);
                }
                None => return Err(v.invalid(format_args!("{} is not a UUID", Quoted(s)))),
            },
            Type::Ipv4 => match s.parse::<std::net::Ipv4Addr>() {
                Ok(a) => v.buf.put_u32_le(u32::from(a)),
                Err(_) => match s.parse::<u32>() {
                    Ok(n) => v.buf.put_u32_le(n),
                    Err(_) => {
                        return Err(v.invalid(format_args!("{} is not an IPv4 address", Quoted(s))))
                    }
                },
            },
            Type::Ipv6 => match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(a)) => v.buf.extend_from_slice(&a.octets()),
                Ok(std::net::IpAddr::V4(a)) => {
                    v.buf.extend_from_slice(&a.to_ipv6_mapped().octets())
                }
                Err(_) => return Err(v.invalid(format_args!("{} is not an IP address", Quoted(s)))),
            },
            Type::Enum8(items) => match items.iter().find(|(n, _)| n == s) {
                Some((_, x)) => v.buf.put_i8(*x),
                None => match s.parse::<i128>() {
                    Ok(n) => return v.int(n),
                    Err(_) => {
                        return Err(
                            v.invalid(format_args!("{} is not a name of the enum", Quoted(s)))
                        )
                    }
                },
            },
            Type::Enum16(items) => match items.iter().find(|(n, _)| n == s) {
                Some((_, x)) => v.buf.put_i16_le(*x),
                None => match s.parse::<i128>() {
                    Ok(n) => return v.int(n),
                    Err(_) => {
                        return Err(
                            v.invalid(format_args!("{} is not a name of the enum", Quoted(s)))
                        )
                    }
                },
            },
            ty => match Type::int_layout(ty) {
                Some((bytes, signed)) => {
                    // Ids sent as decimal strings: digits that fit the
                    // column go straight in; the rest (signs, exponents,
                    // wide values, errors) take the exact parser.
                    let t = s.trim();
                    let (neg, digits) = match t.strip_prefix('-') {
                        Some(d) => (true, d),
                        None => (false, t),
                    };
                    if let Some(m) = crate::json::reader::decimal_u64(digits.as_bytes()) {
                        let m = m as i128;
                        if let Some((le, n)) = int_le(if neg { -m } else { m }, bytes, signed) {
                            v.buf.extend_from_slice(&le[..n]);
                            return Ok(());
                        }
                    }
                    let mut out = [0u8; 32];
                    let target = wide::Target {
                        bytes,
                        signed,
                        scale: 0,
                        precision: None,
                    };
                    match wide::parse(s.trim(), target, &mut out) {
                        Ok(()) => v.buf.extend_from_slice(&out[..bytes]),
                        Err(why) => return Err(v.invalid(format_args!("{}: {why}", Quoted(s)))),
                    }
                }
                None => return Err(v.bad("a string")),
            },
        }
        Ok(())
    }

    fn instant(self, at: civil::Instant) -> Result<(), Fail> {
        match self.ty {
            Type::DateTime(_) => match u32::try_from(at.secs) {
                Ok(s) => self.buf.put_u32_le(s),
                Err(_) => {
                    return Err(self.invalid(format_args!("{} seconds is out of range", at.secs)))
                }
            },
            Type::DateTime64(p, _) => {
                // Precision is at most 9 for parsed types; a hand-built Type
                // with more is an error here, not an overflow.
                let ticks = (|| {
                    let frac = at.nanos as i64 / 10i64.checked_pow(9u32.checked_sub(*p)?)?;
                    at.secs
                        .checked_mul(10i64.checked_pow(*p)?)?
                        .checked_add(frac)
                })();
                match ticks {
                    Some(t) => self.buf.put_i64_le(t),
                    None => return Err(self.invalid("time out of range")),
                }
            }
            _ => return Err(self.bad("a date-time")),
        }
        Ok(())
    }
}

impl Val<'_> {
    /// One JSON scalar (the table in the module's doc); shared with the
    /// serde-based reference decoder.
    pub(crate) fn scalar(self, s: Scalar<'_>) -> Result<(), Fail> {
        match s {
            Scalar::Null => {
                match self.ty {
                    Type::Nullable(_) => self.buf.push(1),
                    Type::LowCardinality(t) if t.is_nullable() => self.buf.push(1),
                    ty => write_default(ty, self.buf),
                }
                Ok(())
            }
            Scalar::Bool(b) => {
                let v = self.value();
                match v.ty {
                    Type::String | Type::FixedString(_) => v.text(if b { "true" } else { "false" }),
                    _ => v.int(b as i128),
                }
            }
            Scalar::U64(n) => self.int(n as i128),
            Scalar::I64(n) => self.int(n as i128),
            Scalar::F64(f, text) => self.float(f, text),
            Scalar::BigInt(text) => {
                let v = self.value();
                match v.ty {
                    // Beyond 64 bits the text is the exact value: integers
                    // and decimals parse it, strings keep it.
                    Type::Float32 | Type::Float64 | Type::DateTime(_) | Type::DateTime64(..) => {
                        let f = text.parse::<f64>().unwrap_or(f64::INFINITY);
                        v.float(f, None)
                    }
                    _ => v.text(text),
                }
            }
            Scalar::Str(s) => self.text(s),
        }
    }

    /// A number with a fraction or exponent; `text` is how it was written,
    /// when known.
    fn float(self, f: f64, text: Option<&str>) -> Result<(), Fail> {
        let v = self.value();
        match v.ty {
            Type::Float32 => match text.and_then(|t| t.parse::<f32>().ok()) {
                Some(x) => v.buf.put_f32_le(x),
                None => v.buf.put_f32_le(f as f32),
            },
            Type::Float64 => v.buf.put_f64_le(f),
            Type::DateTime(_) | Type::DateTime64(..) => {
                if !f.is_finite() || f.abs() > 1e15 {
                    return Err(v.invalid("time out of range"));
                }
                let secs = f.floor();
                let nanos = ((f - secs) * 1e9).round().min(999_999_999.0) as u32;
                return v.instant(civil::Instant {
                    secs: secs as i64,
                    nanos,
                });
            }
            // A decimal written without an exponent is read exactly.
            Type::Decimal(..) if text.is_some_and(|t| !t.contains(['e', 'E'])) => {
                return v.text(text.unwrap_or_default())
            }
            // Shortest text that round-trips, then exact decimal parsing.
            _ => return v.text(&format!("{f}")),
        }
        Ok(())
    }

    /// A named tuple's elements given by name, in order, defaults for the
    /// ones not given.
    pub(crate) fn tuple_parts(self, items: &[(Option<String>, Type)], parts: Vec<Option<Vec<u8>>>) {
        for ((_, t), part) in items.iter().zip(parts) {
            match part {
                Some(p) => self.buf.extend_from_slice(&p),
                None => write_default(t, self.buf),
            }
        }
    }
}

fn v_f64(v: i128) -> f64 {
    v as f64
}

/// `v` as a `bytes`-wide little-endian integer, if it fits.
#[inline]
fn int_le(v: i128, bytes: usize, signed: bool) -> Option<([u8; 32], usize)> {
    let fits = match (bytes, signed) {
        (16 | 32, true) => true,
        (16 | 32, false) => v >= 0,
        (n, true) => {
            let half = 1i128 << (8 * n - 1);
            (-half..half).contains(&v)
        }
        (n, false) => (0..1i128 << (8 * n)).contains(&v),
    };
    if !fits {
        return None;
    }
    let mut out = [if v < 0 { 0xff } else { 0 }; 32];
    out[..16].copy_from_slice(&v.to_le_bytes());
    Some((out, bytes))
}

fn v_string(v: i128) -> String {
    v.to_string()
}

/// `1700000000` or `1700000000.123` as an instant.
fn seconds_text(s: &str) -> Option<civil::Instant> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (secs < 0 && !frac.is_empty()) {
        return None;
    }
    let mut nanos = 0u32;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    Some(civil::Instant { secs, nanos })
}

/// The two spellings ClickHouse reads: 36 characters with dashes or 32 hex
/// digits (`uuid` also takes braces and `urn:uuid:`, which ClickHouse does not).
fn parse_uuid(s: &str) -> Option<u128> {
    if s.len() != 32 && s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(|u| u.as_u128())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(schema: &str, json: &str) -> Result<Vec<u8>, DecodeError> {
        let mut t = Transcoder::new(Schema::parse(schema).unwrap());
        let mut out = Vec::new();
        t.transcode(json.as_bytes(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn counts_of_128_and_more_take_two_bytes_ahead_of_the_elements() {
        for n in [0usize, 1, 127, 128, 200, 16_384] {
            let items = vec!["7"; n].join(",");
            let got = row(
                "a Array(UInt8), b UInt8",
                &format!(r#"{{"a":[{items}],"b":9}}"#),
            );
            let mut want = Vec::new();
            crate::rowbinary::leb128::put(&mut want, n as u64);
            want.extend(std::iter::repeat_n(7u8, n));
            want.push(9);
            assert_eq!(got.unwrap(), want, "{n} elements");
        }
        let entries: Vec<String> = (0..130).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let got = row(
            "m Map(String, UInt8)",
            &format!("{{\"m\":{{{}}}}}", entries.join(",")),
        );
        let got = got.unwrap();
        assert_eq!(&got[..2], [130, 1]);
        assert_eq!(&got[2..5], [2, b'k', b'0']);
    }

    #[test]
    fn integers_in_strings_match_the_exact_parser_on_every_width() {
        let texts = [
            "0",
            "-0",
            "007",
            "+5",
            " 12 ",
            "127",
            "128",
            "-128",
            "-129",
            "255",
            "256",
            "65535",
            "-32768",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "1234567890123456789",
            "9999999999999999999",
            "99999999999999999999",
            "1e3",
            "1.0",
            "1.5",
            "-",
            "",
            "12a",
            "--1",
            "0x10",
        ];
        for ty in [
            "UInt8", "UInt16", "UInt32", "UInt64", "UInt128", "UInt256", "Int8", "Int16", "Int32",
            "Int64", "Int128", "Int256",
        ] {
            let schema = Schema::parse(&format!("a {ty}")).unwrap();
            let (bytes, signed) = Type::int_layout(&schema.columns()[0].ty).unwrap();
            let target = wide::Target {
                bytes,
                signed,
                scale: 0,
                precision: None,
            };
            for text in texts {
                let got = row(&format!("a {ty}"), &format!(r#"{{"a":"{text}"}}"#));
                let mut out = [0u8; 32];
                match wide::parse(text.trim(), target, &mut out) {
                    Ok(()) => assert_eq!(got.unwrap(), &out[..bytes], "{ty} {text:?}"),
                    Err(_) => assert!(got.is_err(), "{ty} {text:?}"),
                }
            }
        }
    }

    #[test]
    fn key_order_does_not_matter_and_missing_columns_get_defaults() {
        let s = "a UInt8, b String, c Nullable(UInt16), d Array(UInt8)";
        assert_eq!(row(s, r#"{"b":"x","a":1}"#).unwrap(), [1, 1, b'x', 1, 0]);
        assert_eq!(
            row(s, r#"{"d":[1,2],"c":7,"a":null}"#).unwrap(),
            [0, 0, 0, 7, 0, 2, 1, 2]
        );
    }

    #[test]
    fn errors_name_the_column_and_leave_nothing_behind() {
        let s = "a UInt8, b String";
        let mut t = Transcoder::new(Schema::parse(s).unwrap());
        let mut out = vec![9u8];
        let e = t.transcode(br#"{"b":"ok","a":300}"#, &mut out).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("a"));
        assert_eq!(e.kind, DecodeErrorKind::Invalid);
        assert!(e.offset.is_some());
        assert_eq!(out, [9]);
        let e = t.transcode(br#"{"a":1,"a":2}"#, &mut out).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Duplicate);
        let e = t.transcode(br#"[1]"#, &mut out).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::NotAnObject);
        let e = t.transcode(br#"{"a":1"#, &mut out).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Syntax);
        let mut strict = t.clone().deny_unknown_fields(true);
        let e = strict.transcode(br#"{"zz":1}"#, &mut out).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (DecodeErrorKind::Unknown, Some("zz"))
        );
        assert_eq!(out, [9]);
    }

    #[test]
    fn integers_are_written_directly_at_every_width_and_refused_past_it() {
        let cases: [(&str, i128, Option<&[u8]>); 10] = [
            ("Int8", -128, Some(&[0x80])),
            ("Int8", 128, None),
            ("UInt8", 255, Some(&[0xff])),
            ("UInt8", -1, None),
            ("UInt16", 65_535, Some(&[0xff, 0xff])),
            ("Int64", i64::MIN as i128, Some(&i64::MIN.to_le_bytes())),
            ("UInt64", u64::MAX as i128, Some(&u64::MAX.to_le_bytes())),
            ("UInt128", -1, None),
            ("Int128", -2, Some(&(-2i128).to_le_bytes())),
            ("Int256", -1, Some(&[0xff; 32])),
        ];
        for (ty, v, want) in cases {
            let got = row(&format!("a {ty}"), &format!(r#"{{"a":{v}}}"#));
            match want {
                Some(bytes) => assert_eq!(got.unwrap(), bytes, "{ty} {v}"),
                None => assert_eq!(got.unwrap_err().field.as_deref(), Some("a"), "{ty} {v}"),
            }
        }
        assert_eq!(row("a UInt256", r#"{"a":5}"#).unwrap()[..2], [5, 0]);
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            row("d Decimal(9, 2)", r#"{"d":"-1.239"}"#).unwrap(),
            (-123i32).to_le_bytes()
        );
        assert_eq!(
            row("d Decimal(9, 2)", r#"{"d":1.1}"#).unwrap(),
            110i32.to_le_bytes()
        );
        assert_eq!(
            row("t DateTime", r#"{"t":"2023-11-15T00:13:20+02:00"}"#).unwrap(),
            1_700_000_000u32.to_le_bytes()
        );
        assert_eq!(
            row("t DateTime64(3)", r#"{"t":"2023-11-14 22:13:20.5"}"#).unwrap(),
            1_700_000_000_500i64.to_le_bytes()
        );
        assert_eq!(row("d Date", r#"{"d":"1970-01-02"}"#).unwrap(), [1, 0]);
        assert_eq!(
            row("e Enum8('a' = 1, 'b' = -2)", r#"{"e":"b"}"#).unwrap(),
            [0xfe]
        );
        assert_eq!(
            row("f FixedString(3)", r#"{"f":"ab"}"#).unwrap(),
            [b'a', b'b', 0]
        );
        assert_eq!(
            row("i IPv4", r#"{"i":"1.2.3.4"}"#).unwrap(),
            0x0102_0304u32.to_le_bytes()
        );
        assert_eq!(
            row("m Map(String, UInt8)", r#"{"m":{"k":5}}"#).unwrap(),
            [1, 1, b'k', 5]
        );
        assert_eq!(
            row("t Tuple(a String, b UInt8)", r#"{"t":{"b":2}}"#).unwrap(),
            [0, 2]
        );
        assert_eq!(
            row("t Tuple(String, UInt8)", r#"{"t":["x",2]}"#).unwrap(),
            [1, b'x', 2]
        );
        assert_eq!(row("u UInt256", r#"{"u":"1"}"#).unwrap()[..2], [1, 0]);
        let u = row("u UUID", r#"{"u":"01234567-89ab-cdef-0011-223344556677"}"#).unwrap();
        assert_eq!(u[..8], 0x0123_4567_89ab_cdefu64.to_le_bytes());
        assert!(row("u UInt8", r#"{"u":1.5}"#).is_err());
        assert!(row("a Array(UInt8)", r#"{"a":"x"}"#).is_err());
        assert!(row("f FixedString(1)", r#"{"f":"ab"}"#).is_err());
    }

    #[test]
    fn hand_built_types_out_of_range_are_errors_not_panics() {
        let schema = Schema::from_columns(vec![crate::schema::Column {
            name: "t".into(),
            ty: Type::DateTime64(30, None),
        }]);
        let mut t = Transcoder::new(schema.clone());
        let mut out = Vec::new();
        assert!(t
            .transcode(br#"{"t":"2023-11-14 22:13:20"}"#, &mut out)
            .is_err());
        assert!(t.transcode(br#"{"t":5}"#, &mut out).is_err());
        let mut input = &[0u8; 8][..];
        assert!(crate::rowbinary::decode::decode_row(&schema, &mut input).is_err());
    }
}
