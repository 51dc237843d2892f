//! `PostEvent` from JSON, as browsers and apps send it.
//!
//! Owns: the typed, strict-where-it-matters decoding of one event object and
//! the canonical JSON it re-encodes to, read with the crate's JSON reader
//! (one pass, no tree, strings borrowed). Must not: build a
//! `serde_json::Value` or panic on any input.
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
use crate::json::reader::{Fail, Reader, Scalar, Token};
use crate::json::RejectedLine;
use crate::json::{DecodeError, DecodeErrorKind, JsonOptions, NdjsonCursor, NdjsonReport, Quoted};

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
        let mut r = Reader::new(json);
        read(&mut r, options)
            .and_then(|e| r.end().map(|()| e))
            .map_err(|e| *e)
    }

    /// Decodes an NDJSON body: one event per line, blank lines skipped, in
    /// one pass over the body. Good lines are kept whatever happens to bad
    /// ones.
    pub fn from_ndjson(body: &[u8], options: JsonOptions) -> (Vec<PostEvent>, NdjsonReport) {
        let mut events = Vec::new();
        let mut report = NdjsonReport::default();
        let mut cursor = NdjsonCursor::new(body);
        while let Some((line, _, result)) =
            cursor.decode(|r| read(r, options).and_then(|e| r.end().map(|()| e)))
        {
            match result {
                Ok(e) => {
                    events.push(e);
                    report.accepted += 1;
                }
                Err(error) => report.rejected.push(RejectedLine { line, error }),
            }
        }
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

/// The fields, in the order `PostEvent` declares them.
pub(crate) const FIELDS: [(&str, Kind); 8] = [
    ("event_type", Kind::EventType),
    ("tweet_id", Kind::Id),
    ("occurred_at", Kind::Time),
    ("user_id", Kind::Id),
    ("session_id", Kind::Text),
    ("client", Kind::Text),
    ("country", Kind::Country),
    ("dwell_ms", Kind::U32),
];

fn field_index(key: &str) -> Option<usize> {
    Some(match key {
        "event_type" => 0,
        "tweet_id" => 1,
        "occurred_at" => 2,
        "user_id" => 3,
        "session_id" => 4,
        "client" => 5,
        "country" => 6,
        "dwell_ms" => 7,
        _ => return None,
    })
}

fn fail(field: Option<&str>, kind: DecodeErrorKind, reason: impl Into<String>, at: usize) -> Fail {
    let mut e = DecodeError::new(field, kind, reason);
    e.offset = Some(at);
    Box::new(e)
}

/// One event object from the reader (what follows it is the caller's).
fn read(r: &mut Reader<'_>, options: JsonOptions) -> Result<PostEvent, Fail> {
    match r.value()? {
        Token::Object => {}
        _ => {
            return Err(fail(
                None,
                DecodeErrorKind::NotAnObject,
                "an event must be a JSON object",
                r.position(),
            ))
        }
    }
    let mut slots = Slots::default();
    let mut first = true;
    while let Some(key) = r.next_key(first)? {
        first = false;
        let Some(i) = field_index(key) else {
            if options.deny_unknown_fields {
                let key = key.to_owned();
                return Err(fail(
                    Some(&key),
                    DecodeErrorKind::Unknown,
                    "unknown field",
                    r.position(),
                ));
            }
            r.skip()?;
            continue;
        };
        let (name, kind) = FIELDS[i];
        if slots.seen & (1 << i) != 0 {
            return Err(fail(
                Some(name),
                DecodeErrorKind::Duplicate,
                "field appears twice",
                r.position(),
            ));
        }
        slots.seen |= 1 << i;
        let value = match r.value()? {
            Token::Scalar(v) => field(name, kind, v),
            Token::Array => Err(invalid(name, "expected a scalar, got an array")),
            Token::Object => Err(invalid(name, "expected a scalar, got an object")),
        };
        let value = value.map_err(|mut e| {
            e.offset.get_or_insert(r.position());
            e
        })?;
        slots.put(i, value);
    }
    slots.event(r.position())
}

/// The decoded fields of one event, before it is assembled.
#[derive(Default)]
pub(crate) struct Slots {
    /// A bit per field of [`FIELDS`] seen (null or not).
    pub(crate) seen: u8,
    event_type: Option<String>,
    tweet_id: Option<u64>,
    occurred_at: Option<u32>,
    user_id: Option<u64>,
    session_id: Option<String>,
    client: Option<String>,
    country: Option<[u8; 2]>,
    dwell_ms: Option<u32>,
}

impl Slots {
    pub(crate) fn put(&mut self, i: usize, v: Decoded) {
        match (i, v) {
            (0, Decoded::Text(s)) => self.event_type = Some(s),
            (1, Decoded::U64(n)) => self.tweet_id = Some(n),
            (2, Decoded::U64(n)) => self.occurred_at = u32::try_from(n).ok(),
            (3, Decoded::U64(n)) => self.user_id = Some(n),
            (4, Decoded::Text(s)) => self.session_id = Some(s),
            (5, Decoded::Text(s)) => self.client = Some(s),
            (6, Decoded::Country(c)) => self.country = Some(c),
            (7, Decoded::U64(n)) => self.dwell_ms = u32::try_from(n).ok(),
            _ => {}
        }
    }

    pub(crate) fn event(self, at: usize) -> Result<PostEvent, Fail> {
        let missing = |name| {
            fail(
                Some(name),
                DecodeErrorKind::Missing,
                "required field is missing",
                at,
            )
        };
        Ok(PostEvent {
            event_type: self.event_type.ok_or_else(|| missing("event_type"))?,
            tweet_id: self.tweet_id.ok_or_else(|| missing("tweet_id"))?,
            occurred_at: self.occurred_at.ok_or_else(|| missing("occurred_at"))?,
            user_id: self.user_id,
            session_id: self.session_id,
            client: self.client.unwrap_or_default(),
            country: self.country.unwrap_or([0, 0]),
            dwell_ms: self.dwell_ms,
        })
    }
}

/// What a field holds, which decides what it accepts.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    EventType,
    Id,
    Time,
    Text,
    Country,
    U32,
}

/// One decoded field value, before it is put in its slot; `U64` holds
/// values already checked to fit the field.
pub(crate) enum Decoded {
    Null,
    Text(String),
    U64(u64),
    Country([u8; 2]),
}

fn invalid(name: &str, reason: impl Into<String>) -> Fail {
    Box::new(DecodeError::new(
        Some(name),
        DecodeErrorKind::Invalid,
        reason,
    ))
}

fn required(name: &str, kind: Kind) -> bool {
    matches!(kind, Kind::EventType | Kind::Time) || (matches!(kind, Kind::Id) && name == "tweet_id")
}

/// A field's value by its rules (the module's doc); shared with the
/// serde-based reference decoder, so the two differ only in how they read
/// JSON.
pub(crate) fn field(name: &'static str, kind: Kind, v: Scalar<'_>) -> Result<Decoded, Fail> {
    match v {
        Scalar::Null if required(name, kind) => Err(Box::new(DecodeError::new(
            Some(name),
            DecodeErrorKind::Missing,
            "required field is null",
        ))),
        Scalar::Null => Ok(Decoded::Null),
        Scalar::Bool(_) => Err(invalid(
            name,
            "expected a string or a number, got a boolean",
        )),
        Scalar::U64(n) => number(name, kind, n),
        Scalar::I64(n) => Err(invalid(name, format!("{n} is negative"))),
        // Fractional Unix seconds are common; the fraction is dropped.
        Scalar::F64(f, _) => match kind {
            Kind::Time if (0.0..1.0e15).contains(&f) => number(name, kind, f as u64),
            Kind::Time => Err(invalid(name, format!("{f} is not a valid Unix time"))),
            _ => Err(invalid(
                name,
                format!("{f} is not a whole non-negative number"),
            )),
        },
        Scalar::BigInt(text) => match kind {
            Kind::Time => Err(invalid(
                name,
                format!("{} is not a valid Unix time", Quoted(text)),
            )),
            Kind::Id | Kind::U32 => Err(invalid(
                name,
                format!("{} does not fit UInt64", Quoted(text)),
            )),
            _ => Err(invalid(name, "expected a string, got a number")),
        },
        Scalar::Str(s) => text(name, kind, s),
    }
}

fn number(name: &str, kind: Kind, v: u64) -> Result<Decoded, Fail> {
    match kind {
        Kind::Id => Ok(Decoded::U64(v)),
        Kind::U32 => match u32::try_from(v) {
            Ok(_) => Ok(Decoded::U64(v)),
            Err(_) => Err(invalid(name, format!("{v} does not fit UInt32"))),
        },
        Kind::Time => {
            let secs = if v < MILLIS_THRESHOLD { v } else { v / 1000 };
            match u32::try_from(secs) {
                Ok(_) => Ok(Decoded::U64(secs)),
                Err(_) => Err(invalid(
                    name,
                    format!("{v} is outside DateTime's range (1970 to 2106)"),
                )),
            }
        }
        Kind::EventType | Kind::Text | Kind::Country => {
            Err(invalid(name, "expected a string, got a number"))
        }
    }
}

fn text(name: &str, kind: Kind, s: &str) -> Result<Decoded, Fail> {
    match kind {
        Kind::EventType => {
            if s.is_empty() {
                Err(invalid(name, "must not be empty"))
            } else if s.len() > MAX_EVENT_TYPE_LEN {
                Err(invalid(
                    name,
                    format!("{} bytes, at most {MAX_EVENT_TYPE_LEN} allowed", s.len()),
                ))
            } else {
                Ok(Decoded::Text(s.to_string()))
            }
        }
        Kind::Text => Ok(Decoded::Text(s.to_string())),
        Kind::Country => match s.as_bytes() {
            [] => Ok(Decoded::Null),
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(Decoded::Country([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => Err(invalid(
                name,
                format!("{} is not two ASCII letters (ISO-3166 alpha-2)", Quoted(s)),
            )),
        },
        Kind::Id | Kind::U32 => match decimal(s) {
            Some(Ok(v)) => number(name, kind, v),
            Some(Err(())) => Err(invalid(name, format!("{} does not fit UInt64", Quoted(s)))),
            None => Err(invalid(
                name,
                format!("{} is not a non-negative decimal integer", Quoted(s)),
            )),
        },
        Kind::Time => {
            if let Some(at) = civil::parse_datetime(s) {
                return match u32::try_from(at.secs) {
                    Ok(secs) => Ok(Decoded::U64(secs as u64)),
                    Err(_) => Err(invalid(
                        name,
                        format!("{} is outside DateTime's range (1970 to 2106)", Quoted(s)),
                    )),
                };
            }
            if let Some(Ok(v)) = decimal(s) {
                return number(name, kind, v);
            }
            Err(invalid(
                name,
                format!("{} is not RFC 3339 or a Unix time", Quoted(s)),
            ))
        }
    }
}

/// 1 to 20 ASCII digits as a `u64`: `None` if not digits, `Err` if too big.
fn decimal(s: &str) -> Option<Result<u64, ()>> {
    if let Some(v) = crate::json::reader::decimal_u64(s.as_bytes()) {
        return Some(Ok(v));
    }
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().map_err(|_| ()))
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
