//! ClickHouse's quoted text form of `Array`, `Tuple` and `Map` values
//! (`[1,2]`, `['a\'b',NULL]`, `(1,'x')`, `{'k':1}`), as TabSeparated and
//! CSV fields carry them, read into RowBinary by the column's type; and
//! the `Values` format, whose rows are tuples of such literals
//! (`(1,'a',[2]),(2,'b',[])`).
//!
//! Owns: the brackets, commas, quotes and `NULL`s of that form (nesting is
//! bounded by the type's, which `Type::parse` bounds). Must not: read a scalar itself (each one goes through
//! `Transcoder::write_text`, the JSON path's own value parser, so a value
//! means the same in every format), or leave bytes behind on an error.

use ch_ingest::rowbinary::leb128;
use ch_ingest::Type;

/// Whether `ty` is written in this form (an Array, Tuple or Map, under any
/// LowCardinality; a Nullable one cannot exist).
pub(crate) fn is_composite(ty: &Type) -> bool {
    match ty {
        Type::Array(_) | Type::Tuple(_) | Type::Map(..) => true,
        Type::LowCardinality(t) => is_composite(t),
        _ => false,
    }
}

/// All of `text` as one value of `ty`, appended to `out` as RowBinary. On
/// error `out` is unchanged and the reason gives the byte it stopped at.
pub(crate) fn parse(ty: &Type, text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let before = out.len();
    let mut p = Parser { s: text, at: 0 };
    let result = p.value(ty, out).and_then(|()| {
        p.ws();
        if p.at < p.s.len() {
            return Err(format!("text after the value at byte {}", p.at));
        }
        Ok(())
    });
    if result.is_err() {
        out.truncate(before);
    }
    result
}

/// Why a `Values` body was refused.
pub(crate) enum ValuesError {
    /// Not literals in the table's types: where and why.
    Parse(String),
    /// The rows hold more than `max_decoded` bytes.
    TooLarge,
}

/// A `Values` body: one `(v, v, ...)` tuple of literals per row, the
/// values in `types`' order, rows separated by commas or whitespace, a `;`
/// allowed at the end. Each row is appended to `out` as RowBinary and its
/// end pushed to `ends`. Only literals are read: an expression (`now()`,
/// `1 + 1`), which ClickHouse would evaluate, is refused by name.
pub(crate) fn values(
    types: &[&Type],
    text: &[u8],
    rows: &mut crate::decoded::Rows,
    max_decoded: usize,
) -> Result<(), ValuesError> {
    let mut p = Parser { s: text, at: 0 };
    let (out, ends) = (&mut rows.bytes, &mut rows.ends);
    loop {
        p.ws();
        if p.at >= p.s.len() || (p.s[p.at] == b';' && p.rest_is_blank(p.at + 1)) {
            return Ok(());
        }
        let start = out.len();
        let row = ends.len() + 1;
        let read = p.expect(b'(').and_then(|()| {
            for (i, ty) in types.iter().enumerate() {
                if i > 0 {
                    p.expect(b',')?;
                }
                p.value(ty, out)?;
            }
            p.expect(b')')
        });
        if let Err(e) = read {
            out.truncate(start);
            return Err(ValuesError::Parse(format!("row {row}: {e}")));
        }
        ends.push(out.len());
        if out.len() + ends.len() * std::mem::size_of::<usize>() > max_decoded {
            return Err(ValuesError::TooLarge);
        }
        p.eat(b',');
    }
}

/// Whether an unquoted literal means the same to ClickHouse as to us: a
/// number for a numeric column, or digits for a date or time (a day or
/// second number, which is also what the server makes of them).
fn bare_ok(ty: &Type, text: &[u8]) -> bool {
    match ty {
        Type::Date | Type::DateTime(_) | Type::DateTime64(..) => {
            !text.is_empty() && text.iter().all(u8::is_ascii_digit)
        }
        Type::String | Type::FixedString(_) | Type::Enum8(_) | Type::Enum16(_) | Type::Uuid => {
            false
        }
        _ => true,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn rest_is_blank(&self, from: usize) -> bool {
        self.s
            .get(from..)
            .is_none_or(|r| r.iter().all(u8::is_ascii_whitespace))
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let here = self.s.get(self.at) == Some(&c);
        self.at += here as usize;
        here
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        Err(format!("expected `{}` at byte {}", c as char, self.at))
    }

    /// One value; each call goes one level into `ty`, so the recursion
    /// is as deep as the type, never as deep as the text.
    fn value(&mut self, ty: &Type, out: &mut Vec<u8>) -> Result<(), String> {
        match ty {
            Type::LowCardinality(t) => self.value(t, out),
            Type::Nullable(t) => {
                self.ws();
                let rest = &self.s[self.at.min(self.s.len())..];
                let word_ends = |b: &u8| !(b.is_ascii_alphanumeric() || *b == b'_');
                // Any case, as ClickHouse reads the keyword.
                let null = rest
                    .get(..4)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"NULL"));
                if null && rest.get(4).is_none_or(word_ends) {
                    self.at += 4;
                    out.push(1);
                    return Ok(());
                }
                out.push(0);
                self.value(t, out)
            }
            Type::Array(t) => self.counted(b'[', b']', out, |p, buf| p.value(t, buf)),
            Type::Tuple(items) => {
                self.expect(b'(')?;
                for (i, (_, t)) in items.iter().enumerate() {
                    if i > 0 {
                        self.expect(b',')?;
                    }
                    self.value(t, out)?;
                }
                self.expect(b')')
            }
            Type::Map(k, v) => self.counted(b'{', b'}', out, |p, buf| {
                p.value(k, buf)?;
                p.expect(b':')?;
                p.value(v, buf)
            }),
            scalar => {
                self.ws();
                let at = self.at;
                let quoted = self.s.get(at) == Some(&b'\'');
                let text = self.scalar()?;
                if !quoted && !bare_ok(scalar, &text) {
                    // ClickHouse reads such a value quoted, or evaluates
                    // the bare text as an expression (`2019-01-01` is 2017).
                    return Err(format!(
                        "the {scalar} value at byte {at} must be quoted ('...')"
                    ));
                }
                crate::scalar::write_scalar(scalar, &text, false, out)
                    .map_err(|e| format!("{e} at byte {at}"))
            }
        }
    }

    /// `open item, item, ... close` as RowBinary: the LEB128 count, then
    /// the items (an Array's elements, a Map's pairs).
    fn counted(
        &mut self,
        open: u8,
        close: u8,
        out: &mut Vec<u8>,
        mut item: impl FnMut(&mut Self, &mut Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(open)?;
        let mut items = Vec::new();
        let mut n = 0u64;
        if !self.eat(close) {
            loop {
                item(self, &mut items)?;
                n += 1;
                if self.eat(close) {
                    break;
                }
                self.expect(b',')?;
            }
        }
        leb128::put(out, n);
        out.extend_from_slice(&items);
        Ok(())
    }

    /// A quoted string (its backslash escapes undone) or a bare token up
    /// to the next delimiter (numbers are written bare).
    fn scalar(&mut self) -> Result<Vec<u8>, String> {
        self.ws();
        let start = self.at;
        if self.s.get(self.at) == Some(&b'\'') {
            self.at += 1;
            // The escapes as written, but a doubled quote (`'a''b'`, which
            // ClickHouse reads as `a'b`) as the escape `\'`.
            let mut lit = Vec::new();
            loop {
                match self.s.get(self.at) {
                    None => return Err(format!("the string at byte {start} is not closed")),
                    Some(b'\\') => {
                        let end = (self.at + 2).min(self.s.len());
                        lit.extend_from_slice(&self.s[self.at..end]);
                        self.at += 2;
                    }
                    Some(b'\'') if self.s.get(self.at + 1) == Some(&b'\'') => {
                        lit.extend_from_slice(b"\\'");
                        self.at += 2;
                    }
                    Some(b'\'') => break,
                    Some(&c) => {
                        lit.push(c);
                        self.at += 1;
                    }
                }
            }
            self.at += 1;
            return crate::scalar::unescape(&lit);
        }
        while let Some(&b) = self.s.get(self.at) {
            if matches!(b, b',' | b']' | b')' | b'}' | b':') || b.is_ascii_whitespace() {
                break;
            }
            self.at += 1;
        }
        if self.at == start {
            return Err(format!("expected a value at byte {start}"));
        }
        if self.s.get(self.at) == Some(&b'(') || self.s[start..self.at].contains(&b'(') {
            return Err(format!(
                "the value at byte {start} is an expression; only literals are read \
                 (ClickHouse would evaluate it)"
            ));
        }
        Ok(self.s[start..self.at].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(ty: &str, text: &str) -> Result<Vec<u8>, String> {
        let mut out = vec![9];
        let r = parse(&Type::parse(ty).unwrap(), text.as_bytes(), &mut out);
        match r {
            Ok(()) => Ok(out[1..].to_vec()),
            Err(e) => {
                assert_eq!(out, [9], "nothing left behind");
                Err(e)
            }
        }
    }

    #[test]
    fn arrays_tuples_maps_and_nulls() {
        assert_eq!(rb("Array(UInt8)", "[1, 2,3]").unwrap(), [3, 1, 2, 3]);
        assert_eq!(rb("Array(UInt8)", "[]").unwrap(), [0]);
        assert_eq!(
            rb("Array(String)", r"['a\'b','c,d\\']").unwrap(),
            [2, 3, b'a', b'\'', b'b', 4, b'c', b',', b'd', b'\\']
        );
        assert_eq!(
            rb("Array(Nullable(Int8))", "[NULL,-1]").unwrap(),
            [2, 1, 0, 0xff]
        );
        assert_eq!(rb("Array(Array(UInt8))", "[[1],[]]").unwrap(), [2, 1, 1, 0]);
        assert_eq!(rb("Tuple(UInt8, String)", "(7,'x')").unwrap(), [7, 1, b'x']);
        // A doubled quote is a quote (18.16 stores `x'y` from `['x''y']`),
        // beside the backslash escapes.
        assert_eq!(
            rb("Array(String)", r"['x''y', '\\''', '''\'']").unwrap(),
            [3, 3, b'x', b'\'', b'y', 2, b'\\', b'\'', 2, b'\'', b'\'']
        );
        assert_eq!(
            rb("Map(String, UInt8)", "{'k':1,'l':2}").unwrap(),
            [2, 1, b'k', 1, 1, b'l', 2]
        );
        assert_eq!(
            rb("Array(Enum8('a' = 1, 'b' = 2))", "['b','a']").unwrap(),
            [2, 2, 1]
        );
        assert_eq!(
            rb("Array(String)", r"['\x41\t']").unwrap(),
            [1, 2, b'A', b'\t']
        );
    }

    #[test]
    fn bad_text_is_refused_with_its_position() {
        for (ty, text) in [
            ("Array(UInt8)", "[1,2"),
            ("Array(UInt8)", "[1,,2]"),
            ("Array(UInt8)", "[300]"),
            ("Array(UInt8)", "[1] x"),
            ("Array(String)", "['open"),
            ("Tuple(UInt8, UInt8)", "(1)"),
            ("Tuple(UInt8, UInt8)", "(1,2,3)"),
            ("Map(String, UInt8)", "{'k' 1}"),
            ("Array(UInt8)", ""),
            ("Array(Nullable(UInt8))", "[NULLx]"),
        ] {
            assert!(rb(ty, text).is_err(), "{ty} {text:?}");
        }
        // Text nested deeper than the type stops at the first extra `[`.
        assert!(rb("Array(UInt8)", &"[".repeat(100_000)).is_err());
    }
}
