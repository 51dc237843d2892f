//! The serde_json-based decoders the crate used before its own reader: the
//! oracle of the differential tests and fuzz targets, kept for as long as
//! they are useful (feature `test-util`; not part of the engine).
//!
//! Owns: walking JSON with serde_json's tokenizer and visitors, for
//! `PostEvent` and for a [`Schema`]'s rows. Must not: hold any value rule of
//! its own: every scalar goes through the same functions the reader-based
//! decoders call, so a difference between the two is a difference in
//! reading JSON, which is what the differential checks.

use super::reader::{Fail, Scalar};
use super::{DecodeError, DecodeErrorKind, JsonOptions};
use crate::post_event::json::{field, Decoded, Kind, Slots, FIELDS};
use crate::schema::{Schema, Type};
use crate::transcode::{count_slot, fill_count, stripped, tuple_arity, write_default, Val};
use crate::PostEvent;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Whether `json` has a number the two decoders may read differently:
/// serde_json's default float parse is not always correctly rounded (the
/// reader's is), and it reads integers beyond 64 bits through `f64` (the
/// reader keeps their text). That is: outside strings, a digit followed by `.`, `e`
/// or `E`, or a run of 16 or more digits.
pub fn inexact_number(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut digits = 0;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= 16 {
                return true;
            }
        } else {
            if digits > 0 && matches!(b, b'.' | b'e' | b'E') {
                return true;
            }
            digits = 0;
        }
    }
    false
}

/// `PostEvent::from_json_with` as it was, through serde_json.
pub fn post_event_from_json(json: &[u8], options: JsonOptions) -> Result<PostEvent, DecodeError> {
    let mut fault = Fault::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    let seed = EventSeed {
        options,
        fault: &mut fault,
    };
    match seed.deserialize(&mut de).and_then(|e| de.end().map(|()| e)) {
        Ok(e) => Ok(e),
        Err(err) => Err(fault.finish(err, json)),
    }
}

/// `Transcoder::transcode` as it was, through serde_json: one row of
/// `schema` appended to `out`, nothing on error.
pub fn transcode(
    schema: &Schema,
    deny_unknown: bool,
    json: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut scratch = Vec::new();
    let mut slots = vec![None; schema.columns().len()];
    let mut fault = Fault::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    let seed = RowSeed {
        schema,
        deny_unknown,
        buf: &mut scratch,
        slots: &mut slots,
        fault: &mut fault,
    };
    if let Err(e) = seed.deserialize(&mut de).and_then(|()| de.end()) {
        return Err(fault.finish(e, json));
    }
    for (col, slot) in schema.columns().iter().zip(&slots) {
        match slot {
            Some((a, b)) => out.extend_from_slice(&scratch[*a..*b]),
            None => write_default(&col.ty, out),
        }
    }
    Ok(())
}

/// A fault recorded by a visitor before it returns serde's stringly error,
/// so the typed error survives the trip through serde_json.
#[derive(Default)]
struct Fault(Option<DecodeError>);

impl Fault {
    fn set<E: de::Error>(
        &mut self,
        field: Option<&str>,
        kind: DecodeErrorKind,
        reason: impl Into<String>,
    ) -> E {
        self.hold(DecodeError::new(field, kind, reason))
    }

    // The shared scalar rules hand back a boxed error; unboxing here keeps
    // every call site a plain `map_err(|e| fault.keep(e))`.
    #[allow(clippy::boxed_local)]
    fn keep<E: de::Error>(&mut self, e: Fail) -> E {
        self.hold(*e)
    }

    fn hold<E: de::Error>(&mut self, e: DecodeError) -> E {
        let msg = e.reason.clone();
        self.0 = Some(e);
        E::custom(msg)
    }

    /// The typed error for a failed parse of `input`.
    fn finish(self, err: serde_json::Error, input: &[u8]) -> DecodeError {
        let offset = byte_offset(input, err.line(), err.column());
        let mut e = self.0.unwrap_or_else(|| {
            let kind = if err.is_syntax() || err.is_eof() {
                DecodeErrorKind::Syntax
            } else {
                DecodeErrorKind::Invalid
            };
            let text = err.to_string();
            // serde_json appends " at line L column C"; we report a byte offset.
            let reason = text.split(" at line ").next().unwrap_or(&text).to_string();
            DecodeError::new(None, kind, reason)
        });
        e.offset = offset;
        e
    }
}

/// serde_json's 1-based line and column (in bytes) as a 0-based offset.
fn byte_offset(input: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0;
    for _ in 1..line {
        start += input.get(start..)?.iter().position(|&b| b == b'\n')? + 1;
    }
    Some((start + column.saturating_sub(1)).min(input.len()))
}

/// A visitor's answer for every scalar a JSON value can be.
macro_rules! scalars {
    ($self:ident => $body:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            let $self = (self, Scalar::Bool(v));
            $body
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            let $self = (self, Scalar::U64(v));
            $body
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            let $self = (self, Scalar::I64(v));
            $body
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            let $self = (self, Scalar::F64(v, None));
            $body
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let $self = (self, Scalar::Str(v));
            $body
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            let $self = (self, Scalar::Null);
            $body
        }
    };
}

struct EventSeed<'a> {
    options: JsonOptions,
    fault: &'a mut Fault,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = PostEvent;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<PostEvent, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = PostEvent;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    scalars!(s => Err(s.0.fault.set(None, DecodeErrorKind::NotAnObject, "an event must be a JSON object")));
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<PostEvent, A::Error> {
        Err(self.fault.set(
            None,
            DecodeErrorKind::NotAnObject,
            "an event must be a JSON object",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PostEvent, A::Error> {
        let mut slots = Slots::default();
        let fault = self.fault;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = FIELDS.iter().position(|(n, _)| *n == key) else {
                if self.options.deny_unknown_fields {
                    return Err(fault.set(Some(&key), DecodeErrorKind::Unknown, "unknown field"));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let (name, kind) = FIELDS[i];
            if slots.seen & (1 << i) != 0 {
                return Err(fault.set(
                    Some(name),
                    DecodeErrorKind::Duplicate,
                    "field appears twice",
                ));
            }
            slots.seen |= 1 << i;
            let value = map.next_value_seed(FieldSeed {
                name,
                kind,
                fault: &mut *fault,
            })?;
            slots.put(i, value);
        }
        slots.event(0).map_err(|e| fault.keep(e))
    }
}

struct FieldSeed<'a> {
    name: &'static str,
    kind: Kind,
    fault: &'a mut Fault,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Decoded;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Decoded, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Decoded;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for `{}`", self.name)
    }
    scalars!(s => field(s.0.name, s.0.kind, s.1).map_err(|e| s.0.fault.keep(e)));
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Decoded, A::Error> {
        Err(self.fault.set(
            Some(self.name),
            DecodeErrorKind::Invalid,
            "expected a scalar, got an array",
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Decoded, A::Error> {
        Err(self.fault.set(
            Some(self.name),
            DecodeErrorKind::Invalid,
            "expected a scalar, got an object",
        ))
    }
}

struct RowSeed<'a> {
    schema: &'a Schema,
    deny_unknown: bool,
    buf: &'a mut Vec<u8>,
    slots: &'a mut [Option<(usize, usize)>],
    fault: &'a mut Fault,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    scalars!(s => {
        let got = match s.1 {
            Scalar::Str(_) => "a string",
            Scalar::Bool(_) => "a boolean",
            Scalar::Null => "null",
            _ => "a number",
        };
        Err(s.0.fault.set(
            None,
            DecodeErrorKind::NotAnObject,
            format!("a row must be a JSON object, got {got}"),
        ))
    });
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.fault.set(
            None,
            DecodeErrorKind::NotAnObject,
            "a row must be a JSON object, got an array",
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = self.schema.index_of(&key) else {
                if self.deny_unknown {
                    return Err(self.fault.set(
                        Some(&key),
                        DecodeErrorKind::Unknown,
                        "no such column",
                    ));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let col = &self.schema.columns()[i];
            if self.slots[i].is_some() {
                return Err(self.fault.set(
                    Some(&col.name),
                    DecodeErrorKind::Duplicate,
                    "field appears twice",
                ));
            }
            let start = self.buf.len();
            let val = ValSeed {
                ty: &col.ty,
                buf: self.buf,
                fault: self.fault,
            };
            if let Err(e) = map.next_value_seed(val) {
                if let Some(f) = &mut self.fault.0 {
                    f.field.get_or_insert_with(|| col.name.clone());
                }
                return Err(e);
            }
            self.slots[i] = Some((start, self.buf.len()));
        }
        Ok(())
    }
}

/// One JSON value as RowBinary of `ty`, through serde.
struct ValSeed<'a> {
    ty: &'a Type,
    buf: &'a mut Vec<u8>,
    fault: &'a mut Fault,
}

impl<'de> DeserializeSeed<'de> for ValSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> ValSeed<'a> {
    fn at<'b>(&'b mut self, ty: &'b Type) -> ValSeed<'b> {
        ValSeed {
            ty,
            buf: self.buf,
            fault: self.fault,
        }
    }
}

impl<'de> Visitor<'de> for ValSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value of type {}", self.ty)
    }
    scalars!(s => {
        let (seed, scalar) = s;
        Val { ty: seed.ty, buf: seed.buf }.scalar(scalar).map_err(|e| seed.fault.keep(e))
    });
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let ty = stripped(self.ty, self.buf);
        match ty {
            Type::Array(inner) => {
                let start = count_slot(self.buf);
                let mut n = 0u64;
                while seq.next_element_seed(self.at(inner))?.is_some() {
                    n += 1;
                }
                fill_count(self.buf, start, n);
                Ok(())
            }
            Type::Tuple(items) => {
                for (i, (_, t)) in items.iter().enumerate() {
                    if seq.next_element_seed(self.at(t))?.is_none() {
                        return Err(self.fault.keep(tuple_arity(items.len(), &i.to_string())));
                    }
                }
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(self.fault.keep(tuple_arity(items.len(), "more")));
                }
                Ok(())
            }
            _ => {
                let e = Val { ty, buf: self.buf }.bad("an array");
                Err(self.fault.keep(e))
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let ty = stripped(self.ty, self.buf);
        match ty {
            Type::Map(k, val) => {
                let start = count_slot(self.buf);
                let mut n = 0u64;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if let Err(e) = (Val {
                        ty: k,
                        buf: self.buf,
                    })
                    .text(&key)
                    {
                        return Err(self.fault.keep(e));
                    }
                    map.next_value_seed(self.at(val))?;
                    n += 1;
                }
                fill_count(self.buf, start, n);
                Ok(())
            }
            Type::Tuple(items) if items.iter().all(|(n, _)| n.is_some()) => {
                let mut parts: Vec<Option<Vec<u8>>> = vec![None; items.len()];
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match items.iter().position(|(n, _)| n.as_deref() == Some(&*key)) {
                        Some(i) if parts[i].is_none() => {
                            let mut part = Vec::new();
                            map.next_value_seed(ValSeed {
                                ty: &items[i].1,
                                buf: &mut part,
                                fault: self.fault,
                            })?;
                            parts[i] = Some(part);
                        }
                        Some(_) => {
                            return Err(self.fault.set(
                                Some(&key),
                                DecodeErrorKind::Duplicate,
                                "tuple element appears twice",
                            ))
                        }
                        None => {
                            return Err(self.fault.set(
                                Some(&key),
                                DecodeErrorKind::Unknown,
                                "no such tuple element",
                            ))
                        }
                    }
                }
                Val { ty, buf: self.buf }.tuple_parts(items, parts);
                Ok(())
            }
            _ => {
                let e = Val { ty, buf: self.buf }.bad("an object");
                Err(self.fault.keep(e))
            }
        }
    }
}
