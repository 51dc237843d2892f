//! JSON input: the error every decoder returns ([`DecodeError`]: field,
//! kind, reason, byte offset), the options they take ([`JsonOptions`]),
//! and NDJSON bodies ([`NdjsonCursor`], which walks a body line by line
//! in one pass so that good lines are never lost because of bad ones;
//! [`NdjsonReport`], [`RejectedLine`]).
//!
//! Inside (private): the pull `reader` every decoder is built on and its
//! byte `scan`. Must not: know any row type (see `post_event` and
//! `transcode`).

pub(crate) mod reader;
#[cfg(feature = "test-util")]
pub mod reference;
pub(crate) mod scan;

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
    /// An NDJSON line longer than the reader's limit
    /// ([`NdjsonCursor::max_line`]); the reason gives both lengths.
    TooLong,
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

/// A position in an NDJSON body: one JSON text per line (`\n` or `\r\n`),
/// blank lines skipped. Decoders read each line straight from the body,
/// without splitting it first: the newline that ends a row is found by the
/// row's own parse, and only a bad row costs a search for its line's end.
///
/// ```
/// use ch_ingest::{Schema, Transcoder};
/// use ch_ingest::json::NdjsonCursor;
/// let mut t = Transcoder::new(Schema::parse("id UInt8")?);
/// let mut cursor = NdjsonCursor::new(b"{\"id\":1}\n\n{\"id\":300}\r\n{\"id\":3}");
/// let mut out = Vec::new();
/// let mut lines = Vec::new();
/// while let Some(row) = t.transcode_line(&mut cursor, &mut out) {
///     lines.push((row.line, row.result.is_ok()));
/// }
/// assert_eq!(lines, [(1, true), (3, false), (4, true)]);
/// assert_eq!(out, [1, 3]);
/// # Ok::<(), ch_ingest::SchemaError>(())
/// ```
#[derive(Debug)]
pub struct NdjsonCursor<'a> {
    body: &'a [u8],
    reader: reader::Reader<'a>,
    /// Where the next line starts.
    next: usize,
    /// The 1-based number of the line at `next`.
    line: usize,
    /// The line being decoded: its start and number.
    pending: Option<(usize, usize)>,
    max_line: usize,
}

/// One line of an NDJSON body, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdjsonRow {
    /// 1-based line number in the body.
    pub line: usize,
    /// The line's length in bytes (without its `\r\n` or `\n`).
    pub bytes: usize,
    /// The row's outcome; an error's offset is within the line.
    pub result: Result<(), DecodeError>,
}

impl<'a> NdjsonCursor<'a> {
    /// A cursor at the start of `body`.
    pub fn new(body: &'a [u8]) -> Self {
        NdjsonCursor {
            body,
            reader: reader::Reader::lines(body),
            next: 0,
            line: 1,
            pending: None,
            max_line: usize::MAX,
        }
    }

    /// Refuses lines longer than `bytes` (default: no limit) without reading
    /// past the limit: a huge line costs no more to refuse than `bytes`.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// Moves to the next non-blank line and returns its number; `None` at
    /// the end of the body. Until that line is decoded, calls return the
    /// same line.
    pub fn next_line(&mut self) -> Option<usize> {
        if let Some((_, line)) = self.pending {
            return Some(line);
        }
        loop {
            let start = self.next;
            let rest = self.body.get(start..).filter(|r| !r.is_empty())?;
            let blank = rest
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\t' | b'\r' | 0x0c))
                .is_none_or(|i| rest[i] == b'\n');
            if blank {
                self.next = memchr::memchr(b'\n', rest).map_or(self.body.len(), |i| start + i + 1);
                self.line += 1;
                continue;
            }
            let cut = start.saturating_add(self.max_line).min(self.body.len());
            self.reader.restart(start, cut);
            self.pending = Some((start, self.line));
            return Some(self.line);
        }
    }

    /// Decodes the next line with `decode`, which reads one text from the
    /// reader (and checks that nothing follows it), and moves past the line.
    pub(crate) fn decode<T>(
        &mut self,
        decode: impl FnOnce(&mut reader::Reader<'a>) -> Result<T, reader::Fail>,
    ) -> Option<(usize, usize, Result<T, DecodeError>)> {
        self.next_line()?;
        let (start, line) = self.pending.take()?;
        let result = decode(&mut self.reader);
        // A good row's parse stopped at its line's newline (the reader never
        // passes one), so the search ends at once; a bad row's line is
        // searched from its start, wherever its parse stopped.
        let from = match result {
            Ok(_) => self.reader.position().clamp(start, self.body.len()),
            Err(_) => start,
        };
        let end = memchr::memchr(b'\n', &self.body[from..]).map_or(self.body.len(), |i| from + i);
        self.next = (end + 1).min(self.body.len());
        self.line += 1;
        let text = &self.body[start..end];
        let bytes = text.strip_suffix(b"\r").unwrap_or(text).len();
        let result = if bytes > self.max_line {
            let mut e = DecodeError::new(
                None,
                DecodeErrorKind::TooLong,
                format!(
                    "the line is {bytes} bytes, over the limit of {}",
                    self.max_line
                ),
            );
            e.offset = Some(self.max_line);
            Err(e)
        } else {
            result.map_err(|e| {
                let mut e = *e;
                e.offset = e.offset.map(|o| o.saturating_sub(start).min(bytes));
                e
            })
        };
        Some((line, bytes, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_cursor_numbers_lines_skips_blanks_and_bounds_lines() {
        let body = b"1\n\n \x0c\r\nbad\r\n  3  \n\n";
        let mut c = NdjsonCursor::new(body);
        let mut seen = Vec::new();
        while let Some((line, bytes, r)) = c.decode(|r| match r.value()? {
            reader::Token::Scalar(reader::Scalar::U64(n)) => r.end().map(|()| n),
            _ => Err(reader::syntax(r.position(), "not a number")),
        }) {
            seen.push((line, bytes, r.map_err(|e| e.offset)));
        }
        assert_eq!(seen, [(1, 1, Ok(1)), (4, 3, Err(Some(0))), (5, 5, Ok(3))]);
        let mut c = NdjsonCursor::new(b"[1,2,3]\n[1]").max_line(4);
        let (_, bytes, r) = c.decode(|r| r.skip()).unwrap();
        assert_eq!((bytes, r.unwrap_err().offset), (7, Some(4)));
        assert!(c.decode(|r| r.skip()).unwrap().2.is_ok());
        assert!(c.decode(|r| r.skip()).is_none());
    }
}

/// Options for the typed JSON decoders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Reject objects with fields the row does not have (default: ignore them).
    pub deny_unknown_fields: bool,
}
