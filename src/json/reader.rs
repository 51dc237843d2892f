//! A pull reader over one JSON text, for decoders that know their shape.
//!
//! Owns: JSON's grammar (RFC 8259, as `serde_json::from_slice` reads it:
//! the same values accepted and refused, nesting capped at 128), strings
//! borrowed from the input unless they hold escapes, numbers with their
//! text kept (so wide integers and decimals are read exactly, never through
//! `f64`), and byte offsets in every syntax error. Must not: build a tree,
//! allocate for an unescaped string, know any row type, or recurse on the
//! input's nesting (skipping is a loop over a bit stack).

use super::scan;
use super::{DecodeError, DecodeErrorKind};

/// An error of the reader or a decoder on top of it; boxed so the happy
/// path's `Result` stays one word.
pub(crate) type Fail = Box<DecodeError>;

/// A JSON scalar, as a decoder sees it. The serde-based reference decoders
/// build the same values from serde's visits, so both share every rule
/// that comes after the grammar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'s> {
    Null,
    Bool(bool),
    /// A non-negative integer literal that fits 64 bits.
    U64(u64),
    /// A negative integer literal that fits `i64` (never `-0`).
    I64(i64),
    /// A number with a fraction or an exponent, or `-0`; with its text
    /// when the reader has it (the serde reference has only the `f64`).
    F64(f64, Option<&'s str>),
    /// An integer literal beyond 64 bits, as written.
    BigInt(&'s str),
    Str(&'s str),
}

/// What [`Reader::value`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Token<'s> {
    Scalar(Scalar<'s>),
    /// `[` was consumed: read elements with [`Reader::next_element`].
    Array,
    /// `{` was consumed: read members with [`Reader::next_key`].
    Object,
}

/// Containers deeper than this are refused, as serde_json refuses them.
const MAX_DEPTH: u32 = 128;

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    /// The whole text (an NDJSON body); `input` is the part being read.
    body: &'a [u8],
    input: &'a [u8],
    pos: usize,
    depth: u32,
    /// NDJSON: a newline ends the text instead of being whitespace.
    lines: bool,
    /// The unescaped text of the last string that held escapes.
    scratch: Vec<u8>,
}

pub(crate) fn syntax(at: usize, reason: &str) -> Fail {
    let mut e = DecodeError::new(None, DecodeErrorKind::Syntax, reason);
    e.offset = Some(at);
    Box::new(e)
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader {
            body: input,
            input,
            pos: 0,
            depth: 0,
            lines: false,
            scratch: Vec::new(),
        }
    }

    /// A reader of the NDJSON body `body`, where a newline ends each
    /// text; [`restart`](Self::restart) moves it to a line.
    pub(crate) fn lines(body: &'a [u8]) -> Self {
        Reader {
            lines: true,
            ..Reader::new(body)
        }
    }

    /// Where the reader is, as an offset in the text.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Moves to `pos` (a line start) with no container open, reading no
    /// further than `cut`.
    pub(crate) fn restart(&mut self, pos: usize, cut: usize) {
        self.input = &self.body[..cut.min(self.body.len())];
        self.pos = pos.min(self.input.len());
        self.depth = 0;
    }

    #[inline]
    fn skip_space(&mut self) {
        while let Some(&b) = self.input.get(self.pos) {
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' if !self.lines => self.pos += 1,
                _ => break,
            }
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.input.get(self.pos).copied()
    }

    fn unexpected(&self, wanted: &str) -> Fail {
        match self.input.get(self.pos) {
            None => syntax(
                self.pos,
                &format!("unexpected end of input, expected {wanted}"),
            ),
            Some(b'\n') if self.lines => syntax(
                self.pos,
                &format!("unexpected end of line, expected {wanted}"),
            ),
            Some(&b) if b.is_ascii_graphic() => syntax(
                self.pos,
                &format!("expected {wanted}, found `{}`", b as char),
            ),
            Some(&b) => syntax(
                self.pos,
                &format!("expected {wanted}, found byte 0x{b:02x}"),
            ),
        }
    }

    /// Only whitespace is left (up to the line's end in NDJSON).
    pub(crate) fn end(&mut self) -> Result<(), Fail> {
        match self.peek() {
            None => Ok(()),
            Some(b'\n') if self.lines => Ok(()),
            Some(_) => Err(syntax(self.pos, "trailing characters after the value")),
        }
    }

    /// The next value: a scalar whole, or the opening of a container.
    // Inlined into each decoder: a `Token` returned through memory costs
    // a store-forwarding stall per value (measured: a fifth of
    // `from_json`'s time before this).
    #[inline(always)]
    pub(crate) fn value(&mut self) -> Result<Token<'_>, Fail> {
        let Some(b) = self.peek() else {
            return Err(self.unexpected("a value"));
        };
        Ok(match b {
            b'"' => {
                self.pos += 1;
                Token::Scalar(Scalar::Str(self.string()?))
            }
            b'{' => {
                self.enter()?;
                Token::Object
            }
            b'[' => {
                self.enter()?;
                Token::Array
            }
            b'-' | b'0'..=b'9' => Token::Scalar(self.number()?),
            b't' => Token::Scalar(self.literal(b"true", Scalar::Bool(true))?),
            b'f' => Token::Scalar(self.literal(b"false", Scalar::Bool(false))?),
            b'n' => Token::Scalar(self.literal(b"null", Scalar::Null)?),
            _ => return Err(self.unexpected("a value")),
        })
    }

    fn enter(&mut self) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(syntax(
                self.pos,
                "nested deeper than 127 arrays and objects",
            ));
        }
        self.pos += 1;
        Ok(())
    }

    fn literal<'s>(&mut self, word: &[u8], value: Scalar<'s>) -> Result<Scalar<'s>, Fail> {
        let rest = &self.input[self.pos..];
        let same = rest.iter().zip(word).take_while(|(a, b)| a == b).count();
        if same < word.len() {
            self.pos += same;
            let text = std::str::from_utf8(word).unwrap_or("a literal");
            return Err(self.unexpected(&format!("`{text}`")));
        }
        self.pos += word.len();
        Ok(value)
    }

    /// The next member's key, after `{` or the previous member's value;
    /// `None` at `}`.
    #[inline(always)]
    pub(crate) fn next_key(&mut self, first: bool) -> Result<Option<&str>, Fail> {
        if !self.key_start(first)? {
            return Ok(None);
        }
        let start = self.pos;
        let (end, simple) = self.plain_string_end();
        if simple {
            // The common key: no escapes, ASCII, followed by `:`.
            if self.input.get(self.pos) == Some(&b':') {
                self.pos += 1;
                return Ok(Some(ascii(&self.input[start..end])));
            }
            self.pos = end + 1;
            if self.peek() != Some(b':') {
                return Err(self.unexpected("`:`"));
            }
            self.pos += 1;
            return Ok(Some(ascii(&self.input[start..end])));
        }
        self.pos = start;
        let (text_start, text_len, escaped) = self.string_span()?;
        if self.peek() != Some(b':') {
            return Err(self.unexpected("`:`"));
        }
        self.pos += 1;
        Ok(Some(self.span_str(text_start, text_len, escaped)))
    }

    /// Before a member: past its key's opening quote, or past `}` (`false`).
    #[inline(always)]
    fn key_start(&mut self, first: bool) -> Result<bool, Fail> {
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                return Ok(false);
            }
            Some(b',') if !first => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    return Err(self.unexpected("a key (`\"`)"));
                }
            }
            Some(b'"') if first => {}
            _ => return Err(self.unexpected(if first { "a key or `}`" } else { "`,` or `}`" })),
        }
        self.pos += 1;
        Ok(true)
    }

    /// Before the next element of an array: `false` at `]`.
    #[inline]
    pub(crate) fn next_element(&mut self, first: bool) -> Result<bool, Fail> {
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) if first => Ok(true),
            _ => Err(self.unexpected("`,` or `]`")),
        }
    }

    /// For a string at `pos` (after its quote): where it ends and whether
    /// it is plain ASCII with no escape; when it is, `pos` is left just
    /// after the closing quote.
    #[inline]
    fn plain_string_end(&mut self) -> (usize, bool) {
        let (end, wide) = scan::string_run(self.input, self.pos);
        if !wide && self.input.get(end) == Some(&b'"') {
            self.pos = end + 1;
            (end, true)
        } else {
            (end, false)
        }
    }

    /// A string's text, after its opening quote.
    #[inline(always)]
    fn string(&mut self) -> Result<&str, Fail> {
        let (start, len, escaped) = self.string_span()?;
        Ok(self.span_str(start, len, escaped))
    }

    /// Reads a string (after its opening quote) and validates it: its text
    /// is `input[start..start + len]`, or `scratch[..len]` when escaped.
    #[inline(always)]
    fn string_span(&mut self) -> Result<(usize, usize, bool), Fail> {
        let start = self.pos;
        let (end, wide) = scan::string_run(self.input, start);
        match self.input.get(end) {
            Some(b'"') => {
                let text = &self.input[start..end];
                if wide {
                    utf8(text, start)?;
                }
                self.pos = end + 1;
                Ok((start, end - start, false))
            }
            _ => self.escaped_span(start, end, wide),
        }
    }

    /// [`string_span`](Self::string_span)'s rare case, out of line.
    #[cold]
    fn escaped_span(
        &mut self,
        start: usize,
        end: usize,
        wide: bool,
    ) -> Result<(usize, usize, bool), Fail> {
        match self.input.get(end) {
            Some(b'\\') => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.input[start..end]);
                self.pos = end;
                self.unescape(start, wide)?;
                Ok((0, self.scratch.len(), true))
            }
            Some(_) => Err(syntax(end, "control character in a string")),
            None => Err(syntax(end, "unexpected end of input in a string")),
        }
    }

    #[inline(always)]
    fn span_str(&self, start: usize, len: usize, escaped: bool) -> &str {
        let bytes = if escaped {
            &self.scratch[..len]
        } else {
            &self.input[start..start + len]
        };
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `string_span` returned this span only after proving it
        // UTF-8: the scan found no byte above 0x7f, or `from_utf8` passed
        // on it (the unescaped scratch included). Checking it a second
        // time was an eighth of `from_json`'s time.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// From a `\` at `pos` to the closing quote, appending to `scratch`.
    fn unescape(&mut self, start: usize, mut wide: bool) -> Result<(), Fail> {
        loop {
            match self.input.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    if wide {
                        utf8(&self.scratch, start)?;
                    }
                    return Ok(());
                }
                Some(b'\\') => {
                    let at = self.pos;
                    let Some(&e) = self.input.get(at + 1) else {
                        return Err(syntax(at + 1, "unexpected end of input in an escape"));
                    };
                    self.pos += 2;
                    let byte = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let c = self.unicode_escape(at)?;
                            let mut buf = [0u8; 4];
                            self.scratch
                                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => {
                            self.pos = at;
                            return Err(syntax(at + 1, "invalid escape"));
                        }
                    };
                    self.scratch.push(byte);
                }
                Some(_) => {
                    let (end, w) = scan::string_run(self.input, self.pos);
                    wide |= w;
                    match self.input.get(end) {
                        Some(b'"' | b'\\') => {
                            self.scratch.extend_from_slice(&self.input[self.pos..end]);
                            self.pos = end;
                        }
                        Some(_) => return Err(syntax(end, "control character in a string")),
                        None => return Err(syntax(end, "unexpected end of input in a string")),
                    }
                }
                None => return Err(syntax(self.pos, "unexpected end of input in a string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Fail> {
        let mut n = 0u32;
        for _ in 0..4 {
            let digit = self
                .input
                .get(self.pos)
                .and_then(|&b| (b as char).to_digit(16));
            let Some(d) = digit else {
                return Err(syntax(self.pos, "invalid \\u escape (4 hex digits)"));
            };
            n = n * 16 + d;
            self.pos += 1;
        }
        Ok(n)
    }

    /// After `\u` (the `\` at `at`): one character, a surrogate pair
    /// joined; a lone surrogate is an error, as in serde_json.
    fn unicode_escape(&mut self, at: usize) -> Result<char, Fail> {
        let n = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(syntax(at, "lone surrogate in a \\u escape"));
        }
        if !(0xD800..=0xDBFF).contains(&n) {
            return char::from_u32(n).ok_or_else(|| syntax(at, "invalid \\u escape"));
        }
        if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
            return Err(syntax(at, "lone surrogate in a \\u escape"));
        }
        self.pos += 2;
        let low = self.hex4()?;
        if !(0xDC00..=0xDFFF).contains(&low) {
            return Err(syntax(at, "lone surrogate in a \\u escape"));
        }
        let c = 0x1_0000 + ((n - 0xD800) << 10) + (low - 0xDC00);
        char::from_u32(c).ok_or_else(|| syntax(at, "invalid \\u escape"))
    }

    /// A number, by JSON's grammar.
    #[inline(always)]
    fn number(&mut self) -> Result<Scalar<'a>, Fail> {
        let start = self.pos;
        let n = scan_number(self.input, start)?;
        self.pos = n.end;
        let text = ascii(&self.input[start..n.end]);
        if n.float || (n.negative && n.magnitude == 0 && !n.big) {
            return match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Scalar::F64(f, Some(text))),
                _ => Err(syntax(start, "number out of range")),
            };
        }
        if n.big {
            return Ok(Scalar::BigInt(text));
        }
        if !n.negative {
            return Ok(Scalar::U64(n.magnitude));
        }
        match 0i64.checked_sub_unsigned(n.magnitude) {
            Some(v) => Ok(Scalar::I64(v)),
            None => Ok(Scalar::BigInt(text)),
        }
    }

    /// Skips one whole value (after a key, or at an element), without
    /// recursion: a bit per open container says whether it is an object.
    pub(crate) fn skip(&mut self) -> Result<(), Fail> {
        let mut stack: u128 = 0;
        let mut open = 0u32;
        let mut first;
        loop {
            // At a value.
            match self.skip_scalar_or_open()? {
                Some(is_object) => {
                    stack = (stack << 1) | is_object as u128;
                    open += 1;
                    first = true;
                }
                None if open == 0 => return Ok(()),
                None => first = false,
            }
            // After a value (or an opening): the next one, or closings.
            loop {
                let in_object = stack & 1 == 1;
                let more = if in_object {
                    self.skip_key(first)?
                } else {
                    self.next_element(first)?
                };
                if more {
                    break;
                }
                stack >>= 1;
                open -= 1;
                if open == 0 {
                    return Ok(());
                }
                first = false;
            }
        }
    }

    /// A scalar skipped (`None`), or a container opened (`Some(is_object)`).
    fn skip_scalar_or_open(&mut self) -> Result<Option<bool>, Fail> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.skip_string()?;
                Ok(None)
            }
            Some(b'{') => self.enter().map(|()| Some(true)),
            Some(b'[') => self.enter().map(|()| Some(false)),
            // A skipped number is checked by the grammar only: serde_json
            // does not convert what it ignores either (`1e400` passes).
            Some(b'-' | b'0'..=b'9') => {
                self.pos = scan_number(self.input, self.pos)?.end;
                Ok(None)
            }
            _ => self.value().map(|_| None),
        }
    }

    /// Like [`next_key`](Self::next_key), for a member being skipped: `false` at `}`.
    fn skip_key(&mut self, first: bool) -> Result<bool, Fail> {
        if !self.key_start(first)? {
            return Ok(false);
        }
        // Like a skipped value, a skipped key's UTF-8 is not checked.
        self.skip_string()?;
        if self.peek() != Some(b':') {
            return Err(self.unexpected("`:`"));
        }
        self.pos += 1;
        Ok(true)
    }

    /// A skipped string value: escapes and control characters checked, as
    /// serde_json's `IgnoredAny` checks them, but not UTF-8 (serde_json
    /// does not validate what it ignores either).
    fn skip_string(&mut self) -> Result<(), Fail> {
        loop {
            let (end, _) = scan::string_run(self.input, self.pos);
            match self.input.get(end) {
                Some(b'"') => {
                    self.pos = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let at = end;
                    match self.input.get(at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos = at + 2
                        }
                        Some(b'u') => {
                            self.pos = at + 2;
                            self.hex4()?;
                        }
                        Some(_) => return Err(syntax(at + 1, "invalid escape")),
                        None => return Err(syntax(at + 1, "unexpected end of input in an escape")),
                    }
                }
                Some(_) => return Err(syntax(end, "control character in a string")),
                None => return Err(syntax(end, "unexpected end of input in a string")),
            }
        }
    }
}

/// A number's extent and shape, by JSON's grammar.
struct NumberScan {
    end: usize,
    negative: bool,
    /// The integer part, when it fits 64 bits (`big` otherwise).
    magnitude: u64,
    big: bool,
    /// It has a fraction or an exponent.
    float: bool,
}

#[inline(always)]
fn scan_number(input: &[u8], start: usize) -> Result<NumberScan, Fail> {
    let mut at = start;
    let negative = input.get(at) == Some(&b'-');
    at += negative as usize;
    let mut magnitude: u64 = 0;
    let mut big = false;
    match input.get(at) {
        Some(b'0') => {
            at += 1;
            if input.get(at).is_some_and(u8::is_ascii_digit) {
                return Err(syntax(at, "invalid number (leading zero)"));
            }
        }
        Some(b'1'..=b'9') => {
            (at, magnitude) = leading_digits(input, at);
            if input.get(at).is_some_and(u8::is_ascii_digit) {
                (at, magnitude, big) = more_digits(input, at, magnitude);
            }
        }
        _ => return Err(syntax(at, "invalid number")),
    }
    let mut float = false;
    if input.get(at) == Some(&b'.') {
        at = digits(input, at + 1)?;
        float = true;
    }
    if matches!(input.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(input.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = digits(input, at)?;
        float = true;
    }
    Ok(NumberScan {
        end: at,
        negative,
        magnitude,
        big,
        float,
    })
}

/// Up to nineteen digits from `at` (nineteen always fit 64 bits, so
/// there are no overflow checks), eight at a time where it can: where
/// they end, and their value. Out of line, so the loop's state stays in
/// registers rather than in a large decoder's stack frame.
#[inline(never)]
fn leading_digits(input: &[u8], mut at: usize) -> (usize, u64) {
    let limit = at + 19;
    let mut value = 0u64;
    while at + 8 <= limit {
        let Some(chunk) = input.get(at..at + 8) else {
            break;
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let Some(eight) = eight_digits(u64::from_le_bytes(word)) else {
            break;
        };
        value = value * 100_000_000 + eight;
        at += 8;
    }
    while at < limit {
        match input.get(at) {
            Some(&b) if b.is_ascii_digit() => {
                value = value * 10 + (b - b'0') as u64;
                at += 1;
            }
            _ => break,
        }
    }
    (at, value)
}

/// `text` as a `u64` when it is 1 to 19 ASCII digits and nothing else (ids
/// sent as decimal strings), eight digits at a time; `None` otherwise,
/// for the caller's general (and error-reporting) path.
#[inline]
pub(crate) fn decimal_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    let (end, value) = leading_digits(text, 0);
    (end == text.len()).then_some(value)
}

/// The value of eight ASCII digits read little-endian (the first digit in
/// the lowest byte), or `None` if any byte is not a digit.
#[inline(always)]
fn eight_digits(x: u64) -> Option<u64> {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // A digit's high nibble is 3, and adding 6 keeps it 3 only for 0-9.
    let nibbles =
        (x & HIGH_NIBBLES) | ((x.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) >> 4);
    if nibbles != 0x3333_3333_3333_3333 {
        return None;
    }
    // Pairs, then quads, then the eight: each step joins neighbours as
    // `high * 10^k + low` with one multiply.
    let x = (x & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let x = (x & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some((x & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32)
}

/// Digits past the nineteenth: the value while it still fits 64 bits, and
/// whether it stopped fitting.
#[cold]
fn more_digits(input: &[u8], mut at: usize, mut value: u64) -> (usize, u64, bool) {
    let mut big = false;
    while let Some(&b) = input.get(at).filter(|b| b.is_ascii_digit()) {
        match value
            .checked_mul(10)
            .and_then(|m| m.checked_add((b - b'0') as u64))
        {
            Some(m) if !big => value = m,
            _ => big = true,
        }
        at += 1;
    }
    (at, value, big)
}

fn digits(input: &[u8], mut at: usize) -> Result<usize, Fail> {
    let start = at;
    while input.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    if at == start {
        return Err(syntax(at, "invalid number (a digit must follow)"));
    }
    Ok(at)
}

fn utf8(bytes: &[u8], start: usize) -> Result<(), Fail> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(e) => Err(syntax(start + e.valid_up_to(), "invalid UTF-8 in a string")),
    }
}

/// Bytes the scan proved ASCII (a key with no byte above 0x7f, or a
/// number's digits and signs) as text.
#[inline(always)]
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: every caller passes bytes it has just seen to be below 0x80
    // (`string_run`'s flag, or `scan_number`'s grammar), and ASCII is UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(json: &str) -> Result<String, Fail> {
        let mut r = Reader::new(json.as_bytes());
        let s = match r.value()? {
            Token::Scalar(s) => format!("{s:?}"),
            t => format!("{t:?}"),
        };
        r.end()?;
        Ok(s)
    }

    #[test]
    fn numbers_keep_their_text_and_their_exactness() {
        assert_eq!(scalar("0").unwrap(), "U64(0)");
        assert_eq!(
            scalar(" 18446744073709551615 ").unwrap(),
            "U64(18446744073709551615)"
        );
        assert_eq!(
            scalar("18446744073709551616").unwrap(),
            "BigInt(\"18446744073709551616\")"
        );
        assert_eq!(
            scalar("-9223372036854775808").unwrap(),
            "I64(-9223372036854775808)"
        );
        assert_eq!(
            scalar("-9223372036854775809").unwrap(),
            "BigInt(\"-9223372036854775809\")"
        );
        assert_eq!(scalar("-0").unwrap(), "F64(-0.0, Some(\"-0\"))");
        assert_eq!(scalar("1.5e3").unwrap(), "F64(1500.0, Some(\"1.5e3\"))");
        for bad in [
            "01", "1.", ".5", "-", "1e", "1e+", "+1", "1e400", "--1", "0x1",
        ] {
            assert!(scalar(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_of_every_length_read_exactly() {
        for n in [
            0u64,
            7,
            12_345_678,
            123_456_789,
            1_000_000_000_000_000_000,
            9_999_999_999_999_999_999,
            u64::MAX,
        ] {
            assert_eq!(scalar(&n.to_string()).unwrap(), format!("U64({n})"));
            assert!(scalar(&format!("{n}.5")).unwrap().starts_with("F64("));
        }
        for d in 1..=9u64 {
            let text = "9".repeat(d as usize * 3);
            let parsed = text.parse::<u64>();
            let want = match parsed {
                Ok(n) => format!("U64({n})"),
                Err(_) => format!("BigInt({text:?})"),
            };
            assert_eq!(scalar(&text).unwrap(), want);
        }
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"12345678")),
            Some(12_345_678)
        );
        for bad in [*b"1234567/", *b"1234567:", *b"a2345678", *b"1234 678"] {
            assert_eq!(eight_digits(u64::from_le_bytes(bad)), None);
        }
    }

    #[test]
    fn strings_are_validated_and_unescaped() {
        assert_eq!(
            scalar(r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#).unwrap(),
            "Str(\"a\\\"b\\\\c/\\né😀\")"
        );
        assert_eq!(scalar("\"é\"").unwrap(), "Str(\"é\")");
        for bad in [
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\nb\"",
            "\"\u{1}\"",
        ] {
            assert!(scalar(bad).is_err(), "{bad:?}");
        }
        let mut r = Reader::new(b"\"\xff\"");
        let e = r.value().unwrap_err();
        assert_eq!((e.kind, e.offset), (DecodeErrorKind::Syntax, Some(1)));
    }

    #[test]
    fn skipping_handles_any_nesting_up_to_the_cap() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let skip = |json: &str| {
            let mut r = Reader::new(json.as_bytes());
            r.skip().and_then(|()| r.end())
        };
        assert!(skip(&nested(127)).is_ok());
        assert!(skip(&nested(128)).is_err());
        assert!(skip(r#"{"a":[1,{"b":"\u0041","c":[]},{}],"d":{"e":null}}"#).is_ok());
        for bad in [
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "[1 2]",
            "{1:2}",
            "[",
            "{\"a\":}",
        ] {
            assert!(skip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ndjson_mode_stops_at_a_newline() {
        let mut r = Reader::lines(b"{\"a\":\n1}");
        assert_eq!(r.value().unwrap(), Token::Object);
        let e = r.next_key(true).unwrap().map(str::to_owned);
        assert_eq!(e.as_deref(), Some("a"));
        let e = r.value().unwrap_err();
        assert_eq!(e.offset, Some(5));
        assert!(e.reason.contains("end of line"), "{e}");
    }
}
