//! JSON input: the error type every decoder returns, and NDJSON bodies.
//!
//! Owns: [`DecodeError`] (field, reason, byte offset), turning serde_json's
//! line/column positions into byte offsets, and splitting NDJSON bodies so
//! that good lines are never lost because of bad ones. Must not: know any row
//! type (see `post_event` and `transcode`).

use std::fmt;

/// What kind of problem a [`DecodeError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not valid JSON (or trailing data after the value).
    Syntax,
    /// The row is not a JSON object.
    NotAnObject,
    /// A required field is absent (or null).
    Missing,
    /// A value has the wrong type or is out of range.
    Invalid,
    /// A field the row does not have, when unknown fields are rejected.
    Unknown,
    /// The same field twice in one object.
    Duplicate,
}

/// Why a JSON row was rejected: which field, why, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The field (column) concerned, if the error is about one.
    pub field: Option<String>,
    /// The kind of problem.
    pub kind: DecodeErrorKind,
    /// Human-readable reason.
    pub reason: String,
    /// Byte offset in the input near the problem, when known.
    pub offset: Option<usize>,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some(o) = self.offset {
            write!(f, " (at byte {o})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// Longest field name kept (an unknown key is the client's text).
    const MAX_FIELD: usize = 128;
    /// Longest reason kept; ours quote values through [`Quoted`], this
    /// bounds the ones serde_json words.
    const MAX_REASON: usize = 512;

    pub(crate) fn new(
        field: Option<&str>,
        kind: DecodeErrorKind,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.map(|f| bounded(f.to_string(), Self::MAX_FIELD)),
            kind,
            reason: bounded(reason.into(), Self::MAX_REASON),
            offset: None,
        }
    }
}

/// Client text quoted in an error: in backticks, and only its first bytes
/// when long, so a megabyte of bad value makes an error of a few dozen
/// bytes (errors are listed in answers and logged by embedders).
pub(crate) struct Quoted<'a>(pub &'a str);

impl Quoted<'_> {
    const MAX: usize = 64;
    const PREFIX: usize = 48;
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= Self::MAX {
            write!(f, "`{s}`")
        } else {
            let head = &s[..floor_char_boundary(s, Self::PREFIX)];
            write!(f, "`{head}…` ({} bytes)", s.len())
        }
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with
/// `…` when cut.
fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(floor_char_boundary(&s, max - '…'.len_utf8()));
        s.push('…');
    }
    s
}

/// The largest character boundary of `s` at or before `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut end = at.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// A fault recorded by a visitor before it returns serde's stringly error,
/// so the typed error survives the trip through serde_json.
#[derive(Default)]
pub(crate) struct Fault(pub Option<DecodeError>);

impl Fault {
    pub(crate) fn set<E: serde::de::Error>(
        &mut self,
        field: Option<&str>,
        kind: DecodeErrorKind,
        reason: impl Into<String>,
    ) -> E {
        let e = DecodeError::new(field, kind, reason);
        let msg = e.reason.clone();
        self.0 = Some(e);
        E::custom(msg)
    }

    /// The typed error for a failed parse of `input`.
    pub(crate) fn finish(self, err: serde_json::Error, input: &[u8]) -> DecodeError {
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

/// One rejected line of an NDJSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was rejected (offsets are within the line).
    pub error: DecodeError,
}

/// What an NDJSON body yielded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NdjsonReport {
    /// Lines accepted.
    pub accepted: usize,
    /// Lines rejected, in order, with their errors.
    pub rejected: Vec<RejectedLine>,
}

/// Calls `f` for every non-blank line of an NDJSON body (`\n` or `\r\n`
/// separated); collects the failures. A line that fails never affects the
/// others.
pub fn for_each_line(
    body: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> NdjsonReport {
    let mut report = NdjsonReport::default();
    for (line, json) in ndjson_lines(body) {
        match f(json) {
            Ok(()) => report.accepted += 1,
            Err(error) => report.rejected.push(RejectedLine { line, error }),
        }
    }
    report
}

/// The non-blank lines of an NDJSON body (`\n` or `\r\n` separated) with
/// their 1-based line numbers.
pub fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    // memchr finds the newlines a vector at a time; a byte-by-byte split
    // was 9 % of `serve`'s profile.
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .map(move |end| {
            let line = &body[start..end];
            start = end + 1;
            line
        })
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(|b| b.is_ascii_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_lines_and_columns() {
        let input = b"ab\ncde\nf";
        assert_eq!(byte_offset(input, 1, 1), Some(0));
        assert_eq!(byte_offset(input, 2, 2), Some(4));
        assert_eq!(byte_offset(input, 3, 1), Some(7));
        assert_eq!(byte_offset(input, 9, 1), None);
    }

    #[test]
    fn client_text_in_errors_is_bounded() {
        assert_eq!(Quoted("abc").to_string(), "`abc`");
        let long = "é".repeat(1000);
        let q = Quoted(&long).to_string();
        assert!(q.len() < 70, "{q}");
        assert!(q.ends_with("…` (2000 bytes)"), "{q}");
        let e = DecodeError::new(
            Some(&"k".repeat(10_000)),
            DecodeErrorKind::Unknown,
            "x".repeat(1 << 20),
        );
        assert!(e
            .field
            .as_ref()
            .is_some_and(|f| f.len() <= DecodeError::MAX_FIELD && f.ends_with('…')));
        assert!(e.reason.len() <= DecodeError::MAX_REASON && e.reason.ends_with('…'));
        let e = DecodeError::new(None, DecodeErrorKind::Invalid, "é".repeat(300));
        assert!(e.reason.len() <= DecodeError::MAX_REASON);
    }

    #[test]
    fn ndjson_keeps_good_lines() {
        let body = b"1\n\nbad\r\n3\n";
        let mut seen = Vec::new();
        let r = for_each_line(body, |l| {
            if l == b"bad" {
                Err(DecodeError::new(None, DecodeErrorKind::Syntax, "bad"))
            } else {
                seen.push(l.to_vec());
                Ok(())
            }
        });
        assert_eq!(r.accepted, 2);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].line, 3);
        assert_eq!(seen, vec![b"1".to_vec(), b"3".to_vec()]);
    }
}

/// Options for the typed JSON decoders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Reject objects with fields the row does not have (default: ignore them).
    pub deny_unknown_fields: bool,
}
