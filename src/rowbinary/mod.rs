//! RowBinary, ClickHouse's row format: encoding any `serde::Serialize`
//! struct ([`encode_row`]), reading rows back by a [`Schema`](crate::Schema)
//! ([`decode_all`], [`decode_row`], [`value_len`]), and the LEB128 length
//! prefix every string and array carries ([`leb128`]): the one codec the
//! engine, the sidecar's decoders and the tools share.
//!
//! Owns: turning one row value into ClickHouse `RowBinary` bytes appended to a
//! `BytesMut`, and learning the column names from the struct's field names.
//! Must not: allocate per row beyond buffer growth, touch I/O, or leave a
//! partial row behind when encoding fails (see [`encode_row`]).
//!
//! The bytes are the same ones the `clickhouse` crate sends for a type that
//! derives `clickhouse::Row + Serialize`, and the same serde helpers apply
//! (`clickhouse::serde::uuid`, `::ipv4`, `::time::datetime64::millis`, ...).
//! How Rust types map to ClickHouse types:
//!
//! | Rust (serde model)                         | ClickHouse                                     |
//! |--------------------------------------------|------------------------------------------------|
//! | `u8..u128`, `i8..i128`, `f32`, `f64`       | `UInt8..UInt128`, `Int8..Int128`, `Float32/64`  |
//! | `clickhouse::types::{UInt256, Int256}`     | `UInt256`, `Int256`                            |
//! | `bool`                                     | `Bool` (one byte)                              |
//! | `String`, `&str`, `serde_bytes`            | `String`, `LowCardinality(String)`             |
//! | `[u8; N]`                                  | `FixedString(N)`                               |
//! | `u16` / `i32`                              | `Date` / `Date32` (days since the epoch)       |
//! | `u32` / `i64`                              | `DateTime` / `DateTime64(P)` (ticks of 10^-P s) |
//! | `uuid::Uuid` with `clickhouse::serde::uuid`| `UUID`                                         |
//! | `Ipv4Addr` with `clickhouse::serde::ipv4`  | `IPv4`                                         |
//! | `std::net::Ipv6Addr`                       | `IPv6`                                         |
//! | `i32` / `i64` / `i128` (scaled)            | `Decimal32/64/128(S)`                          |
//! | `i8` / `i16` (e.g. `serde_repr` enums)     | `Enum8` / `Enum16`                             |
//! | `Option<T>`                                | `Nullable(T)`                                  |
//! | `Vec<T>`, slices                           | `Array(T)`                                     |
//! | tuples, tuple structs, nested structs      | `Tuple(...)`                                   |
//! | `HashMap`, `BTreeMap`, `Vec<(K, V)>`       | `Map(K, V)`                                    |

pub(crate) mod decode;
pub mod leb128;

pub use decode::{decode_all, decode_row, value_len, RowBinaryError};

use bytes::{BufMut, BytesMut};
use serde::ser::{self, Impossible, Serialize};
use std::fmt::Display;

/// Why a row could not be encoded. The buffer that was being written is left
/// exactly as it was before the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The row value is not a struct with named fields (e.g. a map, which is
    /// what `#[serde(flatten)]` turns a struct into).
    #[error(
        "a row must be a struct with named fields, got {0} (note: #[serde(flatten)] turns a struct into a map)"
    )]
    NotAStruct(&'static str),
    /// A field was skipped (`#[serde(skip_serializing_if = ...)]`), so the row
    /// would no longer line up with its columns.
    #[error(
        "field `{0}` was skipped by serde (skip_serializing_if); RowBinary is positional, every column must be written"
    )]
    SkippedField(&'static str),
    /// This row has different fields from the first row the buffer saw.
    #[error("column {index}: expected field `{expected}`, the row has `{found}`")]
    ColumnMismatch {
        /// Position of the column.
        index: usize,
        /// Name from the first row.
        expected: &'static str,
        /// Name in this row (empty when the row has too few fields).
        found: &'static str,
    },
    /// A value inside a field could not be encoded.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The column (top-level field) name.
        field: &'static str,
        /// What went wrong.
        reason: Box<EncodeError>,
    },
    /// The serde type has no RowBinary representation.
    #[error("{0} cannot be encoded as RowBinary")]
    Unsupported(&'static str),
    /// Sequences and maps need their length up front (RowBinary prefixes it).
    #[error("sequence or map without a known length (RowBinary writes the length first)")]
    UnknownLength,
    /// A `Variant` discriminant above 255.
    #[error("enum variant index {0} does not fit a ClickHouse Variant (max 255)")]
    VariantIndex(u32),
    /// An error raised by the value's own `Serialize` impl.
    #[error("{0}")]
    Custom(String),
}

/// The serializer's own error: the [`EncodeError`] behind one pointer, so
/// every `Result` on the per-field path is a register-sized value and the
/// `Ok` check is a null test (the enum by value is 48 bytes returned through
/// memory, which the profile showed on every field).
#[derive(Debug)]
struct Fail(Box<EncodeError>);

impl From<EncodeError> for Fail {
    #[cold]
    fn from(e: EncodeError) -> Self {
        Fail(Box::new(e))
    }
}

impl Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Fail {}

impl ser::Error for Fail {
    #[cold]
    fn custom<M: Display>(msg: M) -> Self {
        Fail(Box::new(EncodeError::Custom(msg.to_string())))
    }
}

/// Column names of a row type, learned from the first row.
pub type Columns = [&'static str];

/// Appends one row to `buf`.
///
/// `columns` is `None` for the first row: the field names are then returned.
/// For later rows pass the names learned from the first one; each row is
/// checked against them (a pointer comparison per field in the common case).
/// On error `buf` is truncated back to its length on entry.
pub fn encode_row<T: Serialize + ?Sized>(
    row: &T,
    buf: &mut BytesMut,
    columns: Option<&Columns>,
) -> Result<Option<Vec<&'static str>>, EncodeError> {
    match columns {
        Some(columns) => encode_row_as(row, buf, columns).map(|()| None),
        None => learn_columns(row, buf).map(Some),
    }
}

/// [`encode_row`] for a row whose columns are known: the hot path of `track`.
#[inline]
pub(crate) fn encode_row_as<T: Serialize + ?Sized>(
    row: &T,
    buf: &mut BytesMut,
    columns: &Columns,
) -> Result<(), EncodeError> {
    run(row, buf, columns, None).map(|_| ())
}

#[cold]
fn learn_columns<T: Serialize + ?Sized>(
    row: &T,
    buf: &mut BytesMut,
) -> Result<Vec<&'static str>, EncodeError> {
    run(row, buf, &[], Some(Vec::new())).map(Option::unwrap_or_default)
}

#[inline(always)]
fn run<T: Serialize + ?Sized>(
    row: &T,
    buf: &mut BytesMut,
    all: &Columns,
    learned: Option<Vec<&'static str>>,
) -> Result<Option<Vec<&'static str>>, EncodeError> {
    let start = buf.len();
    let mut ser = RowSerializer {
        buf,
        all,
        rest: all,
        learned,
    };
    match row.serialize(&mut ser) {
        Ok(()) => Ok(ser.learned),
        Err(Fail(e)) => {
            ser.buf.truncate(start);
            Err(*e)
        }
    }
}

/// A length-prefixed string. Analytics strings are short: one capacity check
/// covers the prefix and the bytes, and the copy avoids a `memcpy` call.
#[inline(always)]
fn put_string(buf: &mut BytesMut, v: &[u8]) {
    if v.len() < 0x80 {
        buf.reserve(v.len() + 1);
        // SAFETY: `reserve` made room for `len + 1` bytes past `buf.len()`;
        // both writes stay inside it and `set_len` covers only what was written.
        unsafe {
            let dst = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            dst.write(v.len() as u8);
            copy_short(v, dst.add(1));
            buf.set_len(buf.len() + v.len() + 1);
        }
    } else {
        leb128::put(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

/// A fixed-width value: one capacity check, one store.
#[inline(always)]
fn put_fixed<const N: usize>(buf: &mut BytesMut, bytes: [u8; N]) {
    buf.reserve(N);
    // SAFETY: `reserve(N)` guarantees N writable bytes past `buf.len()`.
    unsafe {
        buf.spare_capacity_mut()
            .as_mut_ptr()
            .cast::<[u8; N]>()
            .write_unaligned(bytes);
        buf.set_len(buf.len() + N);
    }
}

/// Copies `src` (under 128 bytes) to `dst` with at most two overlapping
/// loads and stores per size class instead of a libc `memcpy` call, which
/// the profile showed costing more than the copy for 3-10 byte strings.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let s = src.as_ptr();
    // Each arm reads and writes only inside `[0, n)`: the second access of a
    // pair ends exactly at `n` and may overlap the first.
    if n >= 16 {
        std::ptr::copy_nonoverlapping(s, dst, n);
    } else if n >= 8 {
        let a = s.cast::<u64>().read_unaligned();
        let b = s.add(n - 8).cast::<u64>().read_unaligned();
        dst.cast::<u64>().write_unaligned(a);
        dst.add(n - 8).cast::<u64>().write_unaligned(b);
    } else if n >= 4 {
        let a = s.cast::<u32>().read_unaligned();
        let b = s.add(n - 4).cast::<u32>().read_unaligned();
        dst.cast::<u32>().write_unaligned(a);
        dst.add(n - 4).cast::<u32>().write_unaligned(b);
    } else if n > 0 {
        // 1..=3 bytes: first, middle, last (they coincide for short strings).
        dst.write(*s);
        dst.add(n / 2).write(*s.add(n / 2));
        dst.add(n - 1).write(*s.add(n - 1));
    }
}

// ---------------------------------------------------------------------------
// Top level: the row struct. Field names become columns.
// ---------------------------------------------------------------------------

struct RowSerializer<'a> {
    buf: &'a mut BytesMut,
    /// Every column name (empty while learning them from the first row).
    all: &'a Columns,
    /// The names still to come in this row.
    rest: &'a Columns,
    learned: Option<Vec<&'static str>>,
}

impl RowSerializer<'_> {
    #[inline(always)]
    fn check_name(&mut self, name: &'static str) -> Result<(), Fail> {
        if let [e, tail @ ..] = self.rest {
            // Same type => same `&'static str`: one pointer comparison.
            if std::ptr::eq(*e, name) {
                self.rest = tail;
                return Ok(());
            }
        }
        self.check_name_slow(name)
    }

    /// The first row (learning the names), and names that are equal but not
    /// the same pointer (the same row shape from another type), or wrong.
    #[cold]
    #[inline(never)]
    fn check_name_slow(&mut self, name: &'static str) -> Result<(), Fail> {
        if let Some(learned) = &mut self.learned {
            learned.push(name);
            return Ok(());
        }
        let index = self.all.len() - self.rest.len();
        match self.rest {
            [e, tail @ ..] if *e == name => {
                self.rest = tail;
                Ok(())
            }
            [e, ..] => Err(Fail::from(EncodeError::ColumnMismatch {
                index,
                expected: e,
                found: name,
            })),
            [] => Err(Fail::from(EncodeError::ColumnMismatch {
                index,
                expected: "",
                found: name,
            })),
        }
    }
}

#[cold]
#[inline(never)]
fn field_error(field: &'static str, e: Fail) -> Fail {
    Fail(Box::new(EncodeError::Field { field, reason: e.0 }))
}

macro_rules! not_a_struct {
    ($($method:ident($($arg:ty),*) => $what:literal;)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<(), Fail> {
                Err(Fail::from(EncodeError::NotAStruct($what)))
            }
        )*
    };
}

impl<'a, 'b> ser::Serializer for &'a mut RowSerializer<'b> {
    type Ok = ();
    type Error = Fail;
    type SerializeSeq = Impossible<(), Fail>;
    type SerializeTuple = Impossible<(), Fail>;
    type SerializeTupleStruct = Impossible<(), Fail>;
    type SerializeTupleVariant = Impossible<(), Fail>;
    type SerializeMap = Impossible<(), Fail>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Fail>;

    fn is_human_readable(&self) -> bool {
        false
    }

    not_a_struct! {
        serialize_bool(bool) => "a bool";
        serialize_i8(i8) => "an integer";
        serialize_i16(i16) => "an integer";
        serialize_i32(i32) => "an integer";
        serialize_i64(i64) => "an integer";
        serialize_i128(i128) => "an integer";
        serialize_u8(u8) => "an integer";
        serialize_u16(u16) => "an integer";
        serialize_u32(u32) => "an integer";
        serialize_u64(u64) => "an integer";
        serialize_u128(u128) => "an integer";
        serialize_f32(f32) => "a float";
        serialize_f64(f64) => "a float";
        serialize_char(char) => "a char";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "bytes";
        serialize_none() => "an Option";
        serialize_unit() => "()";
        serialize_unit_struct(&'static str) => "a unit struct";
        serialize_unit_variant(&'static str, u32, &'static str) => "an enum";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::NotAStruct("an Option")))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        // A transparent wrapper around the row struct.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::NotAStruct("an enum")))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("a sequence")))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("a tuple")))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("a tuple struct")))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("an enum")))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("a map")))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Fail> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Fail> {
        Err(Fail::from(EncodeError::NotAStruct("an enum")))
    }
}

impl ser::SerializeStruct for &mut RowSerializer<'_> {
    type Ok = ();
    type Error = Fail;

    // Forced inline: this is the per-field loop of every row, and the
    // callgrind profile (ARCHITECTURE.md) showed it as an out-of-line call.
    #[inline(always)]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        self.check_name(name)?;
        match value.serialize(ValueSerializer {
            buf: self.buf,
            raw_bytes: false,
        }) {
            Ok(()) => Ok(()),
            Err(e) => Err(field_error(name, e)),
        }
    }

    fn skip_field(&mut self, name: &'static str) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::SkippedField(name)))
    }

    fn end(self) -> Result<(), Fail> {
        match self.rest {
            [e, ..] if self.learned.is_none() => Err(Fail::from(EncodeError::ColumnMismatch {
                index: self.all.len() - self.rest.len(),
                expected: e,
                found: "",
            })),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Values inside a row.
// ---------------------------------------------------------------------------

struct ValueSerializer<'a> {
    buf: &'a mut BytesMut,
    /// Set inside the `clickhouse::types` newtypes (Int256, UInt256, BFloat16):
    /// their bytes are fixed-width and carry no length prefix.
    raw_bytes: bool,
}

impl<'a> ValueSerializer<'a> {
    #[inline]
    fn reborrow(&mut self) -> ValueSerializer<'_> {
        ValueSerializer {
            buf: self.buf,
            raw_bytes: false,
        }
    }
}

macro_rules! put_num {
    ($($method:ident($ty:ty);)*) => {
        $(
            #[inline(always)]
            fn $method(self, v: $ty) -> Result<(), Fail> {
                put_fixed(self.buf, v.to_le_bytes());
                Ok(())
            }
        )*
    };
}

impl<'a> ser::Serializer for ValueSerializer<'a> {
    type Ok = ();
    type Error = Fail;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), Fail>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Fail>;

    fn is_human_readable(&self) -> bool {
        false
    }

    put_num! {
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Fail> {
        put_fixed(self.buf, [v as u8]);
        Ok(())
    }

    fn serialize_char(self, _: char) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::Unsupported(
            "char (use String or u32)",
        )))
    }

    #[inline(always)]
    fn serialize_str(self, v: &str) -> Result<(), Fail> {
        put_string(self.buf, v.as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Fail> {
        if self.raw_bytes {
            self.buf.put_slice(v);
        } else {
            put_string(self.buf, v);
        }
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), Fail> {
        put_fixed(self.buf, [1]);
        Ok(())
    }

    #[inline(always)]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Fail> {
        put_fixed(self.buf, [0]);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::Unsupported("() (unit)")))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::Unsupported("a unit struct")))
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::Unsupported(
            "a unit enum variant (derive serde_repr::Serialize_repr with #[repr(i8)] or #[repr(i16)] for Enum8/Enum16)",
        )))
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        // The clickhouse crate's fixed-width wide types announce themselves by
        // their serde name and hand over their little-endian bytes.
        let raw_bytes = name.starts_with("clickhouse::types::");
        value.serialize(ValueSerializer {
            buf: self.buf,
            raw_bytes,
        })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        variant_index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        // ClickHouse `Variant`: one discriminant byte, then the value.
        let idx = u8::try_from(variant_index)
            .map_err(|_| Fail::from(EncodeError::VariantIndex(variant_index)))?;
        self.buf.put_u8(idx);
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Fail> {
        let len = len.ok_or_else(|| Fail::from(EncodeError::UnknownLength))?;
        leb128::put(self.buf, len as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self, Fail> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Fail> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Fail> {
        Err(Fail::from(EncodeError::Unsupported("a tuple enum variant")))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, Fail> {
        let len = len.ok_or_else(|| Fail::from(EncodeError::UnknownLength))?;
        leb128::put(self.buf, len as u64);
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Fail> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Fail> {
        Err(Fail::from(EncodeError::Unsupported(
            "a struct enum variant",
        )))
    }
}

/// Sequences, tuples and tuple structs are their elements back to back (the
/// length prefix, if any, was written when the compound started).
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for ValueSerializer<'_> {
            type Ok = ();
            type Error = Fail;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fail> {
                value.serialize(self.reborrow())
            }
            #[inline]
            fn end(self) -> Result<(), Fail> {
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl ser::SerializeMap for ValueSerializer<'_> {
    type Ok = ();
    type Error = Fail;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Fail> {
        key.serialize(self.reborrow())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fail> {
        value.serialize(self.reborrow())
    }
    fn end(self) -> Result<(), Fail> {
        Ok(())
    }
}

impl ser::SerializeStruct for ValueSerializer<'_> {
    type Ok = ();
    type Error = Fail;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        value.serialize(self.reborrow())
    }
    fn skip_field(&mut self, name: &'static str) -> Result<(), Fail> {
        Err(Fail::from(EncodeError::SkippedField(name)))
    }
    fn end(self) -> Result<(), Fail> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn enc<T: Serialize>(row: &T) -> Result<(Vec<u8>, Vec<&'static str>), EncodeError> {
        let mut buf = BytesMut::new();
        let cols = encode_row(row, &mut buf, None)?.unwrap_or_default();
        Ok((buf.to_vec(), cols))
    }

    #[derive(Serialize)]
    struct Simple {
        a: u8,
        b: String,
        c: Option<u32>,
        d: [u8; 2],
    }

    #[test]
    fn encodes_scalars_strings_nullable_fixed() {
        let (bytes, cols) = enc(&Simple {
            a: 7,
            b: "hi".into(),
            c: None,
            d: *b"US",
        })
        .unwrap();
        assert_eq!(cols, ["a", "b", "c", "d"]);
        assert_eq!(bytes, [7, 2, b'h', b'i', 1, b'U', b'S']);
    }

    #[test]
    fn strings_of_every_short_length_copy_exactly() {
        // Covers each size class of `copy_short` and the LEB128 switch at 128.
        for len in 0..300usize {
            let s: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let mut buf = BytesMut::from(&b"xy"[..]);
            put_string(&mut buf, s.as_bytes());
            let mut want = b"xy".to_vec();
            let mut prefix = BytesMut::new();
            leb128::put(&mut prefix, len as u64);
            want.extend_from_slice(&prefix);
            want.extend_from_slice(s.as_bytes());
            assert_eq!(&buf[..], &want[..], "len {len}");
        }
    }

    #[test]
    fn arrays_maps_tuples() {
        #[derive(Serialize)]
        struct R {
            arr: Vec<u16>,
            map: BTreeMap<String, u8>,
            tup: (u8, String),
        }
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), 9u8);
        let (bytes, _) = enc(&R {
            arr: vec![1, 2],
            map,
            tup: (3, "x".into()),
        })
        .unwrap();
        assert_eq!(bytes, [2, 1, 0, 2, 0, 1, 1, b'k', 9, 3, 1, b'x']);
    }

    #[test]
    fn skipped_field_is_an_error_and_leaves_buffer_untouched() {
        #[derive(Serialize)]
        struct R {
            a: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<u8>,
        }
        let mut buf = BytesMut::from(&b"prefix"[..]);
        let err = encode_row(&R { a: 1, b: None }, &mut buf, None).unwrap_err();
        assert_eq!(err, EncodeError::SkippedField("b"));
        assert_eq!(&buf[..], b"prefix");
        assert!(err.to_string().contains("`b`"));
    }

    #[test]
    fn flatten_is_rejected_as_map() {
        #[derive(Serialize)]
        struct Inner {
            x: u8,
        }
        #[derive(Serialize)]
        struct R {
            a: u8,
            #[serde(flatten)]
            inner: Inner,
        }
        let err = enc(&R {
            a: 1,
            inner: Inner { x: 2 },
        })
        .unwrap_err();
        assert_eq!(err, EncodeError::NotAStruct("a map"));
    }

    #[test]
    fn unsupported_value_names_the_field() {
        #[derive(Serialize)]
        struct R {
            a: u8,
            letter: char,
        }
        let mut buf = BytesMut::new();
        let err = encode_row(&R { a: 1, letter: 'x' }, &mut buf, None).unwrap_err();
        assert!(
            matches!(
                err,
                EncodeError::Field {
                    field: "letter",
                    ..
                }
            ),
            "{err}"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn later_rows_are_checked_against_first_columns() {
        #[derive(Serialize)]
        struct A {
            x: u8,
            y: u8,
        }
        #[derive(Serialize)]
        struct B {
            x: u8,
            z: u8,
        }
        let mut buf = BytesMut::new();
        let cols = encode_row(&A { x: 1, y: 2 }, &mut buf, None)
            .unwrap()
            .unwrap();
        encode_row(&A { x: 1, y: 2 }, &mut buf, Some(&cols)).unwrap();
        let err = encode_row(&B { x: 1, z: 2 }, &mut buf, Some(&cols)).unwrap_err();
        assert!(matches!(err, EncodeError::ColumnMismatch { index: 1, .. }));
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn not_a_struct() {
        assert_eq!(
            enc(&5u8).unwrap_err(),
            EncodeError::NotAStruct("an integer")
        );
    }
}
