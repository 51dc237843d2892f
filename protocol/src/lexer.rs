//! ClickHouse's SQL lexer, as current servers' `src/Parsers/Lexer.cpp`
//! reads a query: whitespace (ASCII and the Unicode spaces ClickHouse
//! skips), nested block comments, `--`, `//`, `# ` and `#!` line comments,
//! strings and quoted names with their escapes, heredocs, numbers and
//! every operator token.
//!
//! Owns: turning query text into significant tokens, byte for byte as the
//! server does, so the statement `query` classifies is the one ClickHouse
//! runs. Must not: interpret tokens (that is `query`'s), or accept what
//! the server's lexer refuses (an unknown byte is an error, never skipped).
/// Why the text is not a statement we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Syntax error at position {at}: expected {expected}")]
pub struct SyntaxError {
    pub at: usize,
    pub expected: &'static str,
}

/// What a token is, in the terms of ClickHouse's lexer (`TokenType`): the
/// kinds the parsing here tells apart, every other operator as `Op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `BareWord`: a keyword or an unquoted name (`[A-Za-z0-9_$]`, not
    /// starting with a digit unless it is a number run into a word).
    Word,
    /// `QuotedIdentifier`: backticks or double quotes.
    Quoted,
    /// `StringLiteral`: single quotes, or `x'..'` / `b'..'`.
    Str,
    /// `HereDoc`: `$tag$ ... $tag$` (`$$ ... $$`).
    HereDoc,
    Number,
    Dot,
    Comma,
    Semicolon,
    Open,
    Close,
    CloseSquare,
    Equals,
    Minus,
    Plus,
    Op,
    End,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// One step of the lexer: whitespace and comments are not significant.
pub(crate) enum Raw {
    Space,
    Comment,
    Token(Kind),
}

/// ClickHouse's `isWhitespaceASCII`: space, `\t`, `\n`, `\r`, `\f`, `\v`.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// ClickHouse's `isWordCharASCII`.
pub(crate) fn is_word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The length of the UTF-8 whitespace character at `pos`, 0 if there is
/// none: ClickHouse's `skipWhitespacesUTF8` list (U+0085, U+00A0, U+180E,
/// U+2000..U+200D, U+2028, U+2029, U+202F, U+205F, U+2060, U+3000 and the
/// byte order mark U+FEFF), with its bounds checks.
pub(crate) fn utf8_space(text: &[u8], pos: usize) -> usize {
    let end = text.len();
    let b = &text[pos..];
    if pos + 1 < end && b[0] == 0xC2 && matches!(b[1], 0x85 | 0xA0) {
        return 2;
    }
    if pos + 2 < end {
        let three = match (b[0], b[1], b[2]) {
            (0xE1, 0xA0, 0x8E) => true,
            (0xE2, 0x80, c) => matches!(c, 0x80..=0x8D | 0xA8 | 0xA9 | 0xAF),
            (0xE2, 0x81, c) => matches!(c, 0x9F | 0xA0),
            (0xE3, 0x80, 0x80) | (0xEF, 0xBB, 0xBF) => true,
            _ => false,
        };
        if three {
            return 3;
        }
    }
    0
}

/// ClickHouse's `isNumberSeparator`: a `_` between two digits of a block.
pub(crate) fn number_separator(text: &[u8], pos: usize, start_of_block: bool, hex: bool) -> bool {
    if text[pos] != b'_' || start_of_block {
        return false;
    }
    match text.get(pos + 1) {
        None => false,
        Some(&n) => {
            if hex {
                n.is_ascii_hexdigit()
            } else {
                n.is_ascii_digit()
            }
        }
    }
}

/// How many bytes the heredoc searches of one text may scan in all. Each
/// `$` that starts a token looks for its closing tag in the rest of the
/// text, as ClickHouse does; a text of many `$` that close nothing would
/// make that quadratic. ClickHouse bounds it by `max_query_size`; here a
/// text past this budget is refused, never classified.
const HEREDOC_SCAN_BUDGET: usize = 1 << 28;

#[derive(Clone)]
pub(crate) struct Lexer<'a> {
    pub text: &'a [u8],
    pub pos: usize,
    /// The kind of the last significant token (ClickHouse's
    /// `prev_significant_token_type`): it decides what `.` and a digit
    /// after it start.
    pub prev: Option<Kind>,
    pub heredoc_budget: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a [u8]) -> Self {
        Lexer {
            text,
            pos: 0,
            prev: None,
            heredoc_budget: HEREDOC_SCAN_BUDGET,
        }
    }

    /// The next significant token.
    pub(crate) fn next(&mut self) -> Result<Token, SyntaxError> {
        loop {
            let start = self.pos;
            if let Raw::Token(kind) = self.raw()? {
                if kind != Kind::End {
                    self.prev = Some(kind);
                }
                return Ok(Token {
                    kind,
                    start,
                    end: self.pos,
                });
            }
        }
    }

    /// Where the next significant token starts (or an error token, or the
    /// end), without lexing it: ClickHouse's `pos->begin`.
    pub(crate) fn next_start(&mut self) -> usize {
        loop {
            let start = self.pos;
            match self.raw() {
                Ok(Raw::Space | Raw::Comment) => {}
                Ok(Raw::Token(_)) | Err(_) => {
                    self.pos = start;
                    return start;
                }
            }
        }
    }

    /// One token of ClickHouse's `Lexer::nextTokenImpl`, significant or not.
    pub(crate) fn raw(&mut self) -> Result<Raw, SyntaxError> {
        let text = self.text;
        let end = text.len();
        let start = self.pos;
        let Some(&c) = text.get(start) else {
            return Ok(Raw::Token(Kind::End));
        };
        let at = |pos: usize| text.get(pos).copied();
        let error = |expected| SyntaxError {
            at: start,
            expected,
        };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                let run = text[start..].iter().take_while(|b| is_space(**b)).count();
                self.pos = start + run;
                Ok(Raw::Space)
            }
            b'0'..=b'9' => self.number().map(Raw::Token),
            b'\'' => self.quoted(b'\'', "the closing `'` of the string"),
            b'"' => self.quoted(b'"', "the closing `\"` of the name"),
            b'`' => self.quoted(b'`', "the closing backtick of the name"),
            b'(' => self.tok(start, 1, Kind::Open),
            b')' => self.tok(start, 1, Kind::Close),
            b'[' | b'{' | b'}' => self.tok(start, 1, Kind::Op),
            b']' => self.tok(start, 1, Kind::CloseSquare),
            b',' => self.tok(start, 1, Kind::Comma),
            b';' => self.tok(start, 1, Kind::Semicolon),
            b'.' => {
                // A qualifier or tuple access after a name, a bracket or a
                // number (`x.1.1`); otherwise the start of a number (`.5`).
                let digit_follows = at(start + 1).is_some_and(|b| b.is_ascii_digit());
                if start > 0
                    && (!digit_follows
                        || matches!(
                            self.prev,
                            Some(
                                Kind::Close
                                    | Kind::CloseSquare
                                    | Kind::Word
                                    | Kind::Quoted
                                    | Kind::Number
                            )
                        ))
                {
                    return self.tok(start, 1, Kind::Dot);
                }
                self.pos = start + 1;
                self.digits(true, false);
                self.exponent(false);
                Ok(Raw::Token(Kind::Number))
            }
            b'+' => self.tok(start, 1, Kind::Plus),
            b'-' => match at(start + 1) {
                Some(b'>') => self.tok(start, 2, Kind::Op),
                Some(b'-') => Ok(self.line_comment(start + 2)),
                _ => self.tok(start, 1, Kind::Minus),
            },
            b'*' | b'%' | b'?' => self.tok(start, 1, Kind::Op),
            b'/' => match at(start + 1) {
                Some(b'/') => Ok(self.line_comment(start + 2)),
                Some(b'*') => self.block_comment(),
                _ => self.tok(start, 1, Kind::Op),
            },
            // MySQL's comment, only as `# ` or `#!` (a shebang): `#x` is
            // not a token.
            b'#' => match at(start + 1) {
                Some(b' ' | b'!') => Ok(self.line_comment(start + 1)),
                _ => Err(error("a token (`#` starts a comment only as `# ` or `#!`)")),
            },
            b'=' => self.op(start, b"=", Kind::Equals),
            b'!' => match at(start + 1) {
                Some(b'=') => self.tok(start, 2, Kind::Op),
                _ => Err(error("`!=` (a lone `!` is not a token)")),
            },
            b'<' => self.op(start, b"=>", Kind::Op),
            b'>' => self.op(start, b"=", Kind::Op),
            b':' => self.op(start, b":", Kind::Op),
            b'|' => self.op(start, b"|", Kind::Op),
            b'@' => self.op(start, b"@", Kind::Op),
            b'\\' => match at(start + 1) {
                Some(b'G') => self.tok(start, 2, Kind::Op),
                _ => Err(error("a token (`\\` only as `\\G`)")),
            },
            _ => {
                if c == b'$' {
                    if let Some(close) = self.heredoc(start)? {
                        self.pos = close;
                        return Ok(Raw::Token(Kind::HereDoc));
                    }
                    if at(start + 1).is_none_or(|b| !is_word_char(b)) {
                        return self.tok(start, 1, Kind::Op);
                    }
                }
                if start + 2 < end
                    && text[start + 1] == b'\''
                    && matches!(c, b'x' | b'X' | b'b' | b'B')
                {
                    return self.hex_or_bin_string(c);
                }
                if is_word_char(c) || c == b'$' {
                    let run = text[start..]
                        .iter()
                        .take_while(|b| is_word_char(**b) || **b == b'$')
                        .count();
                    return self.tok(start, run, Kind::Word);
                }
                let mut pos = start;
                loop {
                    let n = if pos < end && is_space(text[pos]) {
                        1
                    } else if pos < end {
                        utf8_space(text, pos)
                    } else {
                        0
                    };
                    if n == 0 {
                        break;
                    }
                    pos += n;
                }
                if pos > start {
                    self.pos = pos;
                    Ok(Raw::Space)
                } else {
                    Err(error("a token (this byte starts none)"))
                }
            }
        }
    }

    pub(crate) fn tok(&mut self, start: usize, len: usize, kind: Kind) -> Result<Raw, SyntaxError> {
        self.pos = start + len;
        Ok(Raw::Token(kind))
    }

    /// An operator of one byte, or of two when one of `second` follows
    /// (`==`, `<=`, `<>`, `>=`, `::`, `||`, `@@`).
    pub(crate) fn op(
        &mut self,
        start: usize,
        second: &[u8],
        kind: Kind,
    ) -> Result<Raw, SyntaxError> {
        let two = self.text.get(start + 1).is_some_and(|b| second.contains(b));
        self.tok(start, if two { 2 } else { 1 }, kind)
    }

    /// `--`, `//`, `# `, `#!`: up to the newline, which is not part of it
    /// (so a newline cannot be escaped).
    pub(crate) fn line_comment(&mut self, from: usize) -> Raw {
        self.pos = memchr::memchr(b'\n', &self.text[from..]).map_or(self.text.len(), |i| from + i);
        Raw::Comment
    }

    /// `/* ... */`, nested as in the SQL standard: `/* a /* b */ c */` is
    /// one comment, and one left open is an error to the end of the text.
    pub(crate) fn block_comment(&mut self) -> Result<Raw, SyntaxError> {
        let text = self.text;
        let start = self.pos;
        let mut pos = start + 2;
        let mut depth = 1usize;
        while pos + 2 <= text.len() {
            match (text[pos], text[pos + 1]) {
                (b'/', b'*') => {
                    pos += 2;
                    depth += 1;
                }
                (b'*', b'/') => {
                    pos += 2;
                    depth -= 1;
                    if depth == 0 {
                        self.pos = pos;
                        return Ok(Raw::Comment);
                    }
                }
                _ => pos += 1,
            }
        }
        Err(SyntaxError {
            at: start,
            expected: "the end of the comment (`*/`, comments nest)",
        })
    }

    /// A quoted string or name: it ends at the first `quote` that is not
    /// doubled and not after a backslash (a backslash takes the next byte,
    /// whatever it is).
    pub(crate) fn quoted(&mut self, quote: u8, expected: &'static str) -> Result<Raw, SyntaxError> {
        let text = self.text;
        let start = self.pos;
        let mut pos = start + 1;
        while let Some(i) = memchr::memchr2(quote, b'\\', &text[pos..]) {
            pos += i;
            if text[pos] == quote {
                pos += 1;
                if text.get(pos) == Some(&quote) {
                    pos += 1;
                    continue;
                }
                self.pos = pos;
                return Ok(Raw::Token(if quote == b'\'' {
                    Kind::Str
                } else {
                    Kind::Quoted
                }));
            }
            // A backslash: it and the byte after it.
            pos += 2;
            if pos > text.len() {
                break;
            }
        }
        Err(SyntaxError {
            at: start,
            expected,
        })
    }

    /// `x'4142'` or `b'0100'`: only hex (binary) digits up to the quote.
    pub(crate) fn hex_or_bin_string(&mut self, c: u8) -> Result<Raw, SyntaxError> {
        let text = self.text;
        let start = self.pos;
        let hex = matches!(c, b'x' | b'X');
        let digits = text[start + 2..]
            .iter()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    matches!(b, b'0' | b'1')
                }
            })
            .count();
        let pos = start + 2 + digits;
        if text.get(pos) != Some(&b'\'') {
            return Err(SyntaxError {
                at: start,
                expected: "the closing `'` of the hex or binary string",
            });
        }
        self.pos = pos + 1;
        Ok(Raw::Token(Kind::Str))
    }

    /// `$tag$ ... $tag$`: the tag is everything up to the next `$`, and the
    /// heredoc runs to the first repeat of the tag. `None` when the tag
    /// does not repeat (or there is no second `$`).
    pub(crate) fn heredoc(&mut self, start: usize) -> Result<Option<usize>, SyntaxError> {
        let text = self.text;
        let Some(i) = memchr::memchr(b'$', &text[start + 1..]) else {
            return Ok(None);
        };
        let size = i + 2;
        let tag = &text[start..start + size];
        let rest = &text[start + size..];
        let found = memchr::memmem::find(rest, tag);
        let scanned = found.map_or(rest.len(), |f| f + size);
        self.heredoc_budget = match self.heredoc_budget.checked_sub(scanned) {
            Some(left) => left,
            None => {
                return Err(SyntaxError {
                    at: start,
                    expected: "fewer `$` (too many heredoc tags to look for)",
                })
            }
        };
        Ok(found.map(|f| start + size + f + size))
    }

    /// Digits (hex digits) and `_` separators from `self.pos`.
    pub(crate) fn digits(&mut self, mut start_of_block: bool, hex: bool) {
        let text = self.text;
        while self.pos < text.len() {
            let b = text[self.pos];
            let digit = if hex {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            };
            if !(digit || number_separator(text, self.pos, start_of_block, hex)) {
                break;
            }
            self.pos += 1;
            start_of_block = false;
        }
    }

    /// `e[+-]digits` (`p` for hex), only when a byte follows the letter
    /// (and the sign).
    pub(crate) fn exponent(&mut self, hex: bool) {
        let text = self.text;
        let letter = if hex { [b'p', b'P'] } else { [b'e', b'E'] };
        if self.pos + 1 < text.len() && letter.contains(&text[self.pos]) {
            self.pos += 1;
            if self.pos + 1 < text.len() && matches!(text[self.pos], b'-' | b'+') {
                self.pos += 1;
            }
            self.digits(true, false);
        }
    }

    /// A token that starts with a digit: a number, or a word when word
    /// characters follow it (`1st`), an error when they follow a number
    /// that is not all word characters (`1.5x`).
    pub(crate) fn number(&mut self) -> Result<Kind, SyntaxError> {
        let text = self.text;
        let start = self.pos;
        let end = text.len();
        if self.prev == Some(Kind::Dot) {
            // `x.1.1`: a tuple index is a plain integer.
            self.pos += 1;
            self.digits(false, false);
        } else {
            let mut start_of_block = false;
            let mut hex = false;
            if start + 2 < end
                && text[start] == b'0'
                && matches!(text[start + 1], b'x' | b'X' | b'b' | b'B')
            {
                let valid = if matches!(text[start + 1], b'x' | b'X') {
                    hex = text[start + 2].is_ascii_hexdigit();
                    hex
                } else {
                    matches!(text[start + 2], b'0' | b'1')
                };
                if valid {
                    self.pos += 2;
                    start_of_block = true;
                } else {
                    self.pos += 1;
                }
            } else {
                self.pos += 1;
            }
            self.digits(start_of_block, hex);
            if self.pos < end && text[self.pos] == b'.' {
                self.pos += 1;
                self.digits(true, hex);
            }
            self.exponent(hex);
        }
        if self.pos < end && is_word_char(text[self.pos]) {
            self.pos += text[self.pos..]
                .iter()
                .take_while(|b| is_word_char(**b))
                .count();
            if text[start..self.pos]
                .iter()
                .any(|b| !is_word_char(*b) && *b != b'$')
            {
                return Err(SyntaxError {
                    at: start,
                    expected: "a number (a word runs into it)",
                });
            }
            return Ok(Kind::Word);
        }
        Ok(Kind::Number)
    }
}
