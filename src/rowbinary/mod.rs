//! RowBinary encoding of any `serde::Serialize` struct (and, in [`decode`],
//! decoding driven by a [`Schema`](crate::Schema)).
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

pub mod decode;

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

impl ser::Error for EncodeError {
    fn custom<M: Display>(msg: M) -> Self {
        EncodeError::Custom(msg.to_string())
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
    let start = buf.len();
    let mut ser = RowSerializer {
        buf,
        expected: columns,
        learned: if columns.is_none() {
            Some(Vec::new())
        } else {
            None
        },
        index: 0,
    };
    match row.serialize(&mut ser) {
        Ok(()) => Ok(ser.learned),
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Writes the unsigned LEB128 length prefix ClickHouse uses for strings,
/// arrays and maps.
#[inline]
pub fn put_leb128(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

// ---------------------------------------------------------------------------
// Top level: the row struct. Field names become columns.
// ---------------------------------------------------------------------------

struct RowSerializer<'a> {
    buf: &'a mut BytesMut,
    expected: Option<&'a Columns>,
    learned: Option<Vec<&'static str>>,
    index: usize,
}

impl RowSerializer<'_> {
    #[inline]
    fn check_name(&mut self, name: &'static str) -> Result<(), EncodeError> {
        let index = self.index;
        self.index += 1;
        if let Some(learned) = &mut self.learned {
            learned.push(name);
            return Ok(());
        }
        let expected = self.expected.unwrap_or_default();
        match expected.get(index) {
            // Same type => same `&'static str`; compare contents only when the
            // pointers differ (e.g. the same row shape from another type).
            Some(&e) if std::ptr::eq(e, name) || e == name => Ok(()),
            Some(&e) => Err(EncodeError::ColumnMismatch {
                index,
                expected: e,
                found: name,
            }),
            None => Err(EncodeError::ColumnMismatch {
                index,
                expected: "",
                found: name,
            }),
        }
    }
}

macro_rules! not_a_struct {
    ($($method:ident($($arg:ty),*) => $what:literal;)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<(), EncodeError> {
                Err(EncodeError::NotAStruct($what))
            }
        )*
    };
}

impl<'a, 'b> ser::Serializer for &'a mut RowSerializer<'b> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Impossible<(), EncodeError>;
    type SerializeTuple = Impossible<(), EncodeError>;
    type SerializeTupleStruct = Impossible<(), EncodeError>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), EncodeError>;

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

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
        Err(EncodeError::NotAStruct("an Option"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        // A transparent wrapper around the row struct.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        Err(EncodeError::NotAStruct("an enum"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        Err(EncodeError::NotAStruct("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        Err(EncodeError::NotAStruct("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(EncodeError::NotAStruct("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(EncodeError::NotAStruct("an enum"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Err(EncodeError::NotAStruct("a map"))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(EncodeError::NotAStruct("an enum"))
    }
}

impl ser::SerializeStruct for &mut RowSerializer<'_> {
    type Ok = ();
    type Error = EncodeError;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.check_name(name)?;
        value
            .serialize(ValueSerializer {
                buf: self.buf,
                raw_bytes: false,
            })
            .map_err(|e| EncodeError::Field {
                field: name,
                reason: Box::new(e),
            })
    }

    fn skip_field(&mut self, name: &'static str) -> Result<(), EncodeError> {
        Err(EncodeError::SkippedField(name))
    }

    fn end(self) -> Result<(), EncodeError> {
        match self.expected {
            Some(expected) if self.learned.is_none() && self.index < expected.len() => {
                Err(EncodeError::ColumnMismatch {
                    index: self.index,
                    expected: expected[self.index],
                    found: "",
                })
            }
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
    ($($method:ident($ty:ty) => $put:ident;)*) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result<(), EncodeError> {
                self.buf.$put(v);
                Ok(())
            }
        )*
    };
}

impl<'a> ser::Serializer for ValueSerializer<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    fn is_human_readable(&self) -> bool {
        false
    }

    put_num! {
        serialize_i8(i8) => put_i8;
        serialize_i16(i16) => put_i16_le;
        serialize_i32(i32) => put_i32_le;
        serialize_i64(i64) => put_i64_le;
        serialize_i128(i128) => put_i128_le;
        serialize_u8(u8) => put_u8;
        serialize_u16(u16) => put_u16_le;
        serialize_u32(u32) => put_u32_le;
        serialize_u64(u64) => put_u64_le;
        serialize_u128(u128) => put_u128_le;
        serialize_f32(f32) => put_f32_le;
        serialize_f64(f64) => put_f64_le;
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.buf.put_u8(v as u8);
        Ok(())
    }

    fn serialize_char(self, _: char) -> Result<(), EncodeError> {
        Err(EncodeError::Unsupported("char (use String or u32)"))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        put_leb128(self.buf, v.len() as u64);
        self.buf.put_slice(v.as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        if !self.raw_bytes {
            put_leb128(self.buf, v.len() as u64);
        }
        self.buf.put_slice(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.buf.put_u8(1);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.buf.put_u8(0);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), EncodeError> {
        Err(EncodeError::Unsupported("() (unit)"))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EncodeError> {
        Err(EncodeError::Unsupported("a unit struct"))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), EncodeError> {
        Err(EncodeError::Unsupported(
            "a unit enum variant (derive serde_repr::Serialize_repr with #[repr(i8)] or #[repr(i16)] for Enum8/Enum16)",
        ))
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
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
    ) -> Result<(), EncodeError> {
        // ClickHouse `Variant`: one discriminant byte, then the value.
        let idx =
            u8::try_from(variant_index).map_err(|_| EncodeError::VariantIndex(variant_index))?;
        self.buf.put_u8(idx);
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or(EncodeError::UnknownLength)?;
        put_leb128(self.buf, len as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(EncodeError::Unsupported("a tuple enum variant"))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or(EncodeError::UnknownLength)?;
        put_leb128(self.buf, len as u64);
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(EncodeError::Unsupported("a struct enum variant"))
    }
}

/// Sequences, tuples and tuple structs are their elements back to back (the
/// length prefix, if any, was written when the compound started).
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for ValueSerializer<'_> {
            type Ok = ();
            type Error = EncodeError;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                value.serialize(self.reborrow())
            }
            #[inline]
            fn end(self) -> Result<(), EncodeError> {
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
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        key.serialize(self.reborrow())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(self.reborrow())
    }
    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl ser::SerializeStruct for ValueSerializer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self.reborrow())
    }
    fn skip_field(&mut self, name: &'static str) -> Result<(), EncodeError> {
        Err(EncodeError::SkippedField(name))
    }
    fn end(self) -> Result<(), EncodeError> {
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
    fn leb128_matches_reference_values() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut b = BytesMut::new();
            put_leb128(&mut b, v);
            assert_eq!(&b[..], &want[..], "{v}");
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
