//! `PostEvent` from JSON, as browsers and apps send it.
//!
//! Owns: the typed, strict-where-it-matters decoding of one event object and
//! the canonical JSON it re-encodes to. Must not: build a `serde_json::Value`
//! or panic on any input.
//!
//! Rules: `event_type` is a non-empty string of at most 64 bytes; `tweet_id`
//! and `user_id` are JSON numbers or decimal strings (JavaScript loses
//! precision above 2^53, so clients send strings); `occurred_at` is an
//! RFC 3339 string with any offset (stored as UTC), or a Unix time as a number
//! or numeric string: values below 100 000 000 000 are seconds (that is the
//! year 5138), larger ones milliseconds; it must fall within `DateTime`'s
//! range (1970 to 2106). `country` is two ASCII letters, upper-cased (`""`
//! or null mean absent); `client`, `session_id` are strings; `dwell_ms` is a
//! non-negative integer (or its string). `null` means absent for optional
//! fields and is an error for required ones. Unknown fields are ignored
//! unless [`JsonOptions::deny_unknown_fields`] is set.

use super::PostEvent;
use crate::civil;
use crate::json::{
    for_each_line, DecodeError, DecodeErrorKind, Fault, JsonOptions, NdjsonReport, Quoted,
};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

const MAX_EVENT_TYPE_LEN: usize = PostEvent::MAX_EVENT_TYPE_LEN;
const MILLIS_THRESHOLD: u64 = PostEvent::MILLIS_THRESHOLD;

impl PostEvent {
    /// Longest accepted `event_type`, in bytes.
    pub const MAX_EVENT_TYPE_LEN: usize = 64;

    /// Unix times below this are seconds, at or above it milliseconds.
    pub const MILLIS_THRESHOLD: u64 = 100_000_000_000;

    /// Decodes one event from a JSON object (unknown fields ignored).
    ///
    /// ```
    /// use ch_ingest::PostEvent;
    /// let e = PostEvent::from_json(br#"{"event_type":"like","tweet_id":"9007199254740993",
    ///     "occurred_at":"2023-11-15T00:13:20+02:00","country":"br"}"#).unwrap();
    /// assert_eq!((e.tweet_id, e.occurred_at, e.country), (9007199254740993, 1_700_000_000, *b"BR"));
    /// let err = PostEvent::from_json(br#"{"event_type":"","tweet_id":1,"occurred_at":0}"#).unwrap_err();
    /// assert_eq!(err.field.as_deref(), Some("event_type"));
    /// ```
    pub fn from_json(json: &[u8]) -> Result<PostEvent, DecodeError> {
        Self::from_json_with(json, JsonOptions::default())
    }

    /// Decodes one event with options.
    pub fn from_json_with(json: &[u8], options: JsonOptions) -> Result<PostEvent, DecodeError> {
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

    /// Decodes an NDJSON body: one event per line, blank lines skipped. Good
    /// lines are kept whatever happens to bad ones.
    pub fn from_ndjson(body: &[u8], options: JsonOptions) -> (Vec<PostEvent>, NdjsonReport) {
        let mut events = Vec::new();
        let report = for_each_line(body, |line| {
            events.push(Self::from_json_with(line, options)?);
            Ok(())
        });
        (events, report)
    }

    /// The canonical JSON of this event; [`PostEvent::from_json`] reads it
    /// back to an equal event.
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("event_type".into(), self.event_type.clone().into());
        m.insert("tweet_id".into(), self.tweet_id.to_string().into());
        m.insert("occurred_at".into(), self.occurred_at.into());
        if let Some(u) = self.user_id {
            m.insert("user_id".into(), u.to_string().into());
        }
        if let Some(s) = &self.session_id {
            m.insert("session_id".into(), s.clone().into());
        }
        if !self.client.is_empty() {
            m.insert("client".into(), self.client.clone().into());
        }
        if self.country != [0, 0] {
            m.insert(
                "country".into(),
                String::from_utf8_lossy(&self.country).into_owned().into(),
            );
        }
        if let Some(d) = self.dwell_ms {
            m.insert("dwell_ms".into(), d.into());
        }
        serde_json::Value::Object(m).to_string()
    }
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

macro_rules! not_an_object {
    ($($m:ident($($t:ty)?)),*) => {$(
        fn $m<E: de::Error>(self, $(_: $t)?) -> Result<PostEvent, E> {
            Err(self.fault.set(None, DecodeErrorKind::NotAnObject, "an event must be a JSON object"))
        }
    )*};
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = PostEvent;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    not_an_object!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str),
        visit_unit()
    );
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<PostEvent, A::Error> {
        Err(self.fault.set(
            None,
            DecodeErrorKind::NotAnObject,
            "an event must be a JSON object",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PostEvent, A::Error> {
        let mut event_type: Option<String> = None;
        let mut tweet_id: Option<u64> = None;
        let mut occurred_at: Option<u32> = None;
        let mut user_id: Option<Option<u64>> = None;
        let mut session_id: Option<Option<String>> = None;
        let mut client: Option<Option<String>> = None;
        let mut country: Option<Option<[u8; 2]>> = None;
        let mut dwell_ms: Option<Option<u32>> = None;
        let fault = self.fault;
        macro_rules! once {
            ($slot:ident, $name:literal, $kind:expr) => {{
                if $slot.is_some() {
                    return Err(fault.set(
                        Some($name),
                        DecodeErrorKind::Duplicate,
                        "field appears twice",
                    ));
                }
                $slot = Some(
                    map.next_value_seed(Field {
                        name: $name,
                        kind: $kind,
                        fault: &mut *fault,
                    })?
                    .into_value()?,
                );
            }};
        }
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "event_type" => once!(event_type, "event_type", Kind::EventType),
                "tweet_id" => once!(tweet_id, "tweet_id", Kind::Id),
                "occurred_at" => once!(occurred_at, "occurred_at", Kind::Time),
                "user_id" => once!(user_id, "user_id", Kind::Id),
                "session_id" => once!(session_id, "session_id", Kind::Text),
                "client" => once!(client, "client", Kind::Text),
                "country" => once!(country, "country", Kind::Country),
                "dwell_ms" => once!(dwell_ms, "dwell_ms", Kind::U32),
                other => {
                    if self.options.deny_unknown_fields {
                        return Err(fault.set(
                            Some(other),
                            DecodeErrorKind::Unknown,
                            "unknown field",
                        ));
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = |f: &mut Fault, name| {
            f.set::<A::Error>(
                Some(name),
                DecodeErrorKind::Missing,
                "required field is missing",
            )
        };
        Ok(PostEvent {
            event_type: event_type.ok_or_else(|| missing(fault, "event_type"))?,
            tweet_id: tweet_id.ok_or_else(|| missing(fault, "tweet_id"))?,
            occurred_at: occurred_at.ok_or_else(|| missing(fault, "occurred_at"))?,
            user_id: user_id.flatten(),
            session_id: session_id.flatten(),
            client: client.flatten().unwrap_or_default(),
            country: country.flatten().unwrap_or([0, 0]),
            dwell_ms: dwell_ms.flatten(),
        })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    EventType,
    Id,
    Time,
    Text,
    Country,
    U32,
}

/// One decoded field value, before it is put in its slot.
enum Decoded {
    Null,
    Text(String),
    U64(u64),
    Country([u8; 2]),
}

/// Converts a decoded value to what a slot holds; `Field` guarantees the
/// variant matches the kind, so the mismatch arm only answers impossible input.
trait IntoSlot<T> {
    fn into_value<E: de::Error>(self) -> Result<T, E>;
}

struct Out(Decoded, &'static str);

impl IntoSlot<String> for Out {
    fn into_value<E: de::Error>(self) -> Result<String, E> {
        match self.0 {
            Decoded::Text(s) => Ok(s),
            _ => Err(E::custom(format!(
                "field `{}`: required field is null",
                self.1
            ))),
        }
    }
}
impl IntoSlot<u64> for Out {
    fn into_value<E: de::Error>(self) -> Result<u64, E> {
        match self.0 {
            Decoded::U64(v) => Ok(v),
            _ => Err(E::custom(format!(
                "field `{}`: required field is null",
                self.1
            ))),
        }
    }
}
impl IntoSlot<u32> for Out {
    fn into_value<E: de::Error>(self) -> Result<u32, E> {
        match self.0 {
            Decoded::U64(v) => u32::try_from(v).map_err(|_| E::custom("out of range")),
            _ => Err(E::custom(format!(
                "field `{}`: required field is null",
                self.1
            ))),
        }
    }
}
impl IntoSlot<Option<u64>> for Out {
    fn into_value<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(match self.0 {
            Decoded::U64(v) => Some(v),
            _ => None,
        })
    }
}
impl IntoSlot<Option<u32>> for Out {
    fn into_value<E: de::Error>(self) -> Result<Option<u32>, E> {
        Ok(match self.0 {
            Decoded::U64(v) => u32::try_from(v).ok(),
            _ => None,
        })
    }
}
impl IntoSlot<Option<String>> for Out {
    fn into_value<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(match self.0 {
            Decoded::Text(s) => Some(s),
            _ => None,
        })
    }
}
impl IntoSlot<Option<[u8; 2]>> for Out {
    fn into_value<E: de::Error>(self) -> Result<Option<[u8; 2]>, E> {
        Ok(match self.0 {
            Decoded::Country(c) => Some(c),
            _ => None,
        })
    }
}

struct Field<'a> {
    name: &'static str,
    kind: Kind,
    fault: &'a mut Fault,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Out;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Out, D::Error> {
        d.deserialize_any(self)
    }
}

impl Field<'_> {
    fn fail<E: de::Error>(self, reason: impl Into<String>) -> E {
        self.fault
            .set(Some(self.name), DecodeErrorKind::Invalid, reason)
    }
    fn required(&self) -> bool {
        matches!(self.kind, Kind::EventType | Kind::Time)
            || (matches!(self.kind, Kind::Id) && self.name == "tweet_id")
    }
    fn done(self, d: Decoded) -> Out {
        Out(d, self.name)
    }

    fn number<E: de::Error>(self, v: u64) -> Result<Out, E> {
        match self.kind {
            Kind::Id => Ok(self.done(Decoded::U64(v))),
            Kind::U32 => match u32::try_from(v) {
                Ok(_) => Ok(self.done(Decoded::U64(v))),
                Err(_) => Err(self.fail(format!("{v} does not fit UInt32"))),
            },
            Kind::Time => {
                let secs = if v < MILLIS_THRESHOLD { v } else { v / 1000 };
                match u32::try_from(secs) {
                    Ok(_) => Ok(self.done(Decoded::U64(secs))),
                    Err(_) => {
                        Err(self.fail(format!("{v} is outside DateTime's range (1970 to 2106)")))
                    }
                }
            }
            Kind::EventType | Kind::Text | Kind::Country => {
                Err(self.fail("expected a string, got a number"))
            }
        }
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Out;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for `{}`", self.name)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Out, E> {
        self.number(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Out, E> {
        match u64::try_from(v) {
            Ok(v) => self.number(v),
            Err(_) => Err(self.fail(format!("{v} is negative"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Out, E> {
        match self.kind {
            // Fractional Unix seconds are common; the fraction is dropped.
            Kind::Time if (0.0..1.0e15).contains(&v) => self.number(v as u64),
            Kind::Time => Err(self.fail(format!("{v} is not a valid Unix time"))),
            _ => Err(self.fail(format!("{v} is not a whole non-negative number"))),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Out, E> {
        Err(self.fail("expected a string or a number, got a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Out, E> {
        if self.required() {
            let name = self.name;
            return Err(self.fault.set(
                Some(name),
                DecodeErrorKind::Missing,
                "required field is null",
            ));
        }
        Ok(self.done(Decoded::Null))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Out, E> {
        match self.kind {
            Kind::EventType => {
                if s.is_empty() {
                    Err(self.fail("must not be empty"))
                } else if s.len() > MAX_EVENT_TYPE_LEN {
                    Err(self.fail(format!(
                        "{} bytes, at most {MAX_EVENT_TYPE_LEN} allowed",
                        s.len()
                    )))
                } else {
                    Ok(self.done(Decoded::Text(s.to_string())))
                }
            }
            Kind::Text => Ok(self.done(Decoded::Text(s.to_string()))),
            Kind::Country => match s.as_bytes() {
                [] => Ok(self.done(Decoded::Null)),
                [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                    Ok(self.done(Decoded::Country([
                        a.to_ascii_uppercase(),
                        b.to_ascii_uppercase(),
                    ])))
                }
                _ => Err(self.fail(format!(
                    "{} is not two ASCII letters (ISO-3166 alpha-2)",
                    Quoted(s)
                ))),
            },
            Kind::Id | Kind::U32 => {
                if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(self.fail(format!(
                        "{} is not a non-negative decimal integer",
                        Quoted(s)
                    )));
                }
                match s.parse::<u64>() {
                    Ok(v) => self.number(v),
                    Err(_) => Err(self.fail(format!("{} does not fit UInt64", Quoted(s)))),
                }
            }
            Kind::Time => {
                if let Some(at) = civil::parse_datetime(s) {
                    return match u32::try_from(at.secs) {
                        Ok(secs) => Ok(self.done(Decoded::U64(secs as u64))),
                        Err(_) => Err(self.fail(format!(
                            "{} is outside DateTime's range (1970 to 2106)",
                            Quoted(s)
                        ))),
                    };
                }
                if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(v) = s.parse::<u64>() {
                        return self.number(v);
                    }
                }
                Err(self.fail(format!("{} is not RFC 3339 or a Unix time", Quoted(s))))
            }
        }
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Out, A::Error> {
        Err(self.fail("expected a scalar, got an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Out, A::Error> {
        Err(self.fail("expected a scalar, got an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> DecodeError {
        PostEvent::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_what_real_clients_send() {
        let e = PostEvent::from_json(
            br#"{"event_type":"impression","tweet_id":123,"occurred_at":1700000000123,"user_id":"18446744073709551615",
                "session_id":null,"client":"ios","country":"us","dwell_ms":"250","extra":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!(e.occurred_at, 1_700_000_000);
        assert_eq!(e.user_id, Some(u64::MAX));
        assert_eq!(e.country, *b"US");
        assert_eq!(e.dwell_ms, Some(250));
        assert_eq!(e.session_id, None);
        assert_eq!(PostEvent::from_json(e.to_json().as_bytes()).unwrap(), e);
        let e = PostEvent::from_json(
            br#"{"event_type":"x","tweet_id":"1","occurred_at":"1970-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.occurred_at, 0);
        assert_eq!(
            PostEvent::from_json(br#"{"event_type":"x","tweet_id":1,"occurred_at":1.9}"#)
                .unwrap()
                .occurred_at,
            1
        );
    }

    #[test]
    fn errors_name_field_reason_and_offset() {
        let e = err(r#"{"event_type":"like","tweet_id":-1,"occurred_at":0}"#);
        assert_eq!(
            (e.field.as_deref(), e.kind),
            (Some("tweet_id"), DecodeErrorKind::Invalid)
        );
        assert!(e.offset.unwrap() > 20 && e.offset.unwrap() <= 35, "{e}");
        let e = err(r#"{"tweet_id":1,"occurred_at":0}"#);
        assert_eq!(
            (e.field.as_deref(), e.kind),
            (Some("event_type"), DecodeErrorKind::Missing)
        );
        let e = err(r#"{"event_type":"x","tweet_id":1.5,"occurred_at":0}"#);
        assert_eq!(e.field.as_deref(), Some("tweet_id"));
        let e = err(r#"{"event_type":"x","tweet_id":1,"occurred_at":"2200-01-01T00:00:00Z"}"#);
        assert_eq!(e.field.as_deref(), Some("occurred_at"));
        let e = err(r#"{"event_type":"x","tweet_id":1,"occurred_at":0,"country":"USA"}"#);
        assert_eq!(e.field.as_deref(), Some("country"));
        let e = err(&format!(
            r#"{{"event_type":"{}","tweet_id":1,"occurred_at":0}}"#,
            "a".repeat(65)
        ));
        assert_eq!(e.field.as_deref(), Some("event_type"));
        let e = err(r#"{"event_type":"x","tweet_id":1,"tweet_id":2,"occurred_at":0}"#);
        assert_eq!(e.kind, DecodeErrorKind::Duplicate);
        let e = err(r#"{"event_type":"x","tweet_id":null,"occurred_at":0}"#);
        assert_eq!(e.kind, DecodeErrorKind::Missing);
        assert_eq!(err("[]").kind, DecodeErrorKind::NotAnObject);
        assert_eq!(err("{").kind, DecodeErrorKind::Syntax);
        assert_eq!(
            err(r#"{"event_type":"x","tweet_id":1,"occurred_at":0} x"#).kind,
            DecodeErrorKind::Syntax
        );
        let strict = JsonOptions {
            deny_unknown_fields: true,
        };
        let e = PostEvent::from_json_with(
            br#"{"event_type":"x","tweet_id":1,"occurred_at":0,"zz":1}"#,
            strict,
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_deref(), e.kind),
            (Some("zz"), DecodeErrorKind::Unknown)
        );
    }

    #[test]
    fn ndjson_keeps_good_lines() {
        let body = b"{\"event_type\":\"a\",\"tweet_id\":1,\"occurred_at\":0}\nnot json\n\n{\"event_type\":\"b\",\"tweet_id\":2,\"occurred_at\":0}\n";
        let (events, report) = PostEvent::from_ndjson(body, JsonOptions::default());
        assert_eq!(events.len(), 2);
        assert_eq!(report.accepted, 2);
        assert_eq!(report.rejected[0].line, 2);
    }
}
