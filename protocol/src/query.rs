//! The query text of a ClickHouse HTTP request, read as far as the front
//! door needs it: an `INSERT INTO [db.]table [(columns)] [SETTINGS ...]
//! FORMAT name` and where its data starts, or the kind of any other
//! statement.
//!
//! Owns: lexing the part of ClickHouse's SQL that such a statement uses
//! (comments, bare and quoted identifiers, string and number literals).
//! Must not: build SQL from what it reads (names leave here as plain
//! strings, to be checked against the allow-list and quoted where they are
//! used), or classify as a read anything it did not recognise.

/// The statement a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// An INSERT of data in some format.
    Insert(Insert),
    /// SELECT, WITH, DESCRIBE / DESC, SHOW, EXISTS, EXPLAIN: no side effects.
    Read,
    /// Anything else: DDL, `INSERT ... SELECT`, `INSERT INTO FUNCTION`, ...
    Other,
}

/// `INSERT INTO [db.]table [(columns)] [SETTINGS ...] FORMAT name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub database: Option<String>,
    pub table: String,
    /// As listed; `None` without a column list (every column).
    pub columns: Option<Vec<String>>,
    /// The INSERT's own `SETTINGS` clause, in order.
    pub settings: Vec<(String, String)>,
    /// The format as written (`VALUES` reads as `Values`).
    pub format: String,
    /// Where the data begins in the text: after the format name and the
    /// whitespace that follows it up to and including the first newline,
    /// as ClickHouse reads it.
    pub data_start: usize,
}

/// Why the text is not a statement we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Syntax error at position {at}: expected {expected}")]
pub struct SyntaxError {
    pub at: usize,
    pub expected: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word: keyword or identifier.
    Word(String),
    /// A backtick- or double-quoted identifier, unescaped.
    Quoted(String),
    /// A string literal, unescaped.
    Str(String),
    Number(String),
    Punct(u8),
    End,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_space_and_comments(&mut self) -> Result<(), SyntaxError> {
        loop {
            while self.pos < self.text.len() && self.text[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            let rest = &self.text[self.pos..];
            if rest.starts_with(b"--") || rest.starts_with(b"#") {
                self.pos += memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                match memchr::memmem::find(&rest[2..], b"*/") {
                    Some(i) => self.pos += i + 4,
                    None => {
                        return Err(SyntaxError {
                            at: self.pos,
                            expected: "the end of the comment (`*/`)",
                        })
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    /// The next token and the offset it starts at.
    fn next(&mut self) -> Result<(Token, usize), SyntaxError> {
        self.skip_space_and_comments()?;
        let at = self.pos;
        let Some(&c) = self.text.get(self.pos) else {
            return Ok((Token::End, at));
        };
        let token = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = self.text[at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
                    .map_or(self.text.len(), |n| at + n);
                self.pos = end;
                Token::Word(String::from_utf8_lossy(&self.text[at..end]).into_owned())
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let end = self.text[at + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_')))
                    .map_or(self.text.len(), |n| at + 1 + n);
                self.pos = end;
                Token::Number(String::from_utf8_lossy(&self.text[at..end]).into_owned())
            }
            b'`' | b'"' => Token::Quoted(self.quoted(c)?),
            b'\'' => Token::Str(self.quoted(c)?),
            b'.' | b'(' | b')' | b',' | b'=' | b';' => {
                self.pos += 1;
                Token::Punct(c)
            }
            _ => {
                return Err(SyntaxError {
                    at,
                    expected: "a word, a name or a literal",
                })
            }
        };
        Ok((token, at))
    }

    /// A quoted name or string: backslash escapes, or the quote doubled.
    fn quoted(&mut self, quote: u8) -> Result<String, SyntaxError> {
        let start = self.pos;
        let mut out = Vec::new();
        let mut i = self.pos + 1;
        while let Some(&b) = self.text.get(i) {
            match b {
                b'\\' => {
                    let Some(&e) = self.text.get(i + 1) else {
                        break;
                    };
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'0' => 0,
                        b'b' => 8,
                        b'f' => 12,
                        other => other,
                    });
                    i += 2;
                }
                q if q == quote => {
                    if self.text.get(i + 1) == Some(&quote) {
                        out.push(quote);
                        i += 2;
                    } else {
                        self.pos = i + 1;
                        return String::from_utf8(out).map_err(|_| SyntaxError {
                            at: start,
                            expected: "UTF-8 in the quoted name or string",
                        });
                    }
                }
                other => {
                    out.push(other);
                    i += 1;
                }
            }
        }
        Err(SyntaxError {
            at: start,
            expected: "the closing quote",
        })
    }
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(word))
}

/// Reads the statement at the start of `text`.
pub fn parse(text: &[u8]) -> Result<Statement, SyntaxError> {
    let mut lx = Lexer { text, pos: 0 };
    let (first, at) = lx.next()?;
    let Token::Word(first) = first else {
        return match first {
            // `(SELECT ...)` and the like: not recognised as a read.
            Token::End => Err(SyntaxError {
                at,
                expected: "a query (the body and the `query` parameter are empty)",
            }),
            _ => Ok(Statement::Other),
        };
    };
    const READS: [&str; 7] = [
        "SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXISTS", "EXPLAIN",
    ];
    if READS.iter().any(|r| first.eq_ignore_ascii_case(r)) {
        return Ok(Statement::Read);
    }
    if !first.eq_ignore_ascii_case("INSERT") {
        return Ok(Statement::Other);
    }
    insert(&mut lx)
}

/// `DESCRIBE [TABLE] [db.]table [FORMAT name]` and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Describe {
    pub database: Option<String>,
    pub table: String,
    pub format: Option<String>,
}

/// The table and format of `text` when it is exactly a `DESCRIBE` (or
/// `DESC`) of one table, optionally with `FORMAT`; `None` for anything
/// else (which stays a read to forward).
pub fn describe(text: &[u8]) -> Option<Describe> {
    let mut lx = Lexer { text, pos: 0 };
    let mut next = || lx.next().ok().map(|(t, _)| t);
    let first = next()?;
    if !is_word(&first, "DESCRIBE") && !is_word(&first, "DESC") {
        return None;
    }
    let mut t = next()?;
    if is_word(&t, "TABLE") {
        t = next()?;
    }
    let mut table = name(t, 0, "").ok()?;
    let mut database = None;
    let mut t = next()?;
    if t == Token::Punct(b'.') {
        database = Some(std::mem::replace(&mut table, name(next()?, 0, "").ok()?));
        t = next()?;
    }
    let mut format = None;
    if is_word(&t, "FORMAT") {
        format = Some(name(next()?, 0, "").ok()?);
        t = next()?;
    }
    if t == Token::Punct(b';') {
        t = next()?;
    }
    (t == Token::End).then_some(Describe {
        database,
        table,
        format,
    })
}

fn name(token: Token, at: usize, expected: &'static str) -> Result<String, SyntaxError> {
    match token {
        Token::Word(w) | Token::Quoted(w) if !w.is_empty() => Ok(w),
        _ => Err(SyntaxError { at, expected }),
    }
}

fn insert(lx: &mut Lexer<'_>) -> Result<Statement, SyntaxError> {
    let (t, at) = lx.next()?;
    if !is_word(&t, "INTO") {
        return Err(SyntaxError {
            at,
            expected: "INTO after INSERT",
        });
    }
    let (mut t, mut at) = lx.next()?;
    if is_word(&t, "FUNCTION") {
        return Ok(Statement::Other);
    }
    if is_word(&t, "TABLE") {
        (t, at) = lx.next()?;
    }
    let mut table = name(t, at, "a table name")?;
    let mut database = None;
    let (mut t, mut at) = lx.next()?;
    if t == Token::Punct(b'.') {
        let (n, nat) = lx.next()?;
        database = Some(std::mem::replace(
            &mut table,
            name(n, nat, "a table name after `.`")?,
        ));
        (t, at) = lx.next()?;
    }
    let mut columns = None;
    if t == Token::Punct(b'(') {
        let mut list = Vec::new();
        loop {
            let (c, cat) = lx.next()?;
            list.push(name(c, cat, "a column name")?);
            let (sep, sat) = lx.next()?;
            match sep {
                Token::Punct(b',') => {}
                Token::Punct(b')') => break,
                _ => {
                    return Err(SyntaxError {
                        at: sat,
                        expected: "`,` or `)` in the column list",
                    })
                }
            }
        }
        columns = Some(list);
        (t, at) = lx.next()?;
    }
    let mut settings = Vec::new();
    if is_word(&t, "SETTINGS") {
        loop {
            let (k, kat) = lx.next()?;
            let key = name(k, kat, "a setting name")?;
            let (eq, eat) = lx.next()?;
            if eq != Token::Punct(b'=') {
                return Err(SyntaxError {
                    at: eat,
                    expected: "`=` after the setting's name",
                });
            }
            let (v, vat) = lx.next()?;
            let value = match v {
                Token::Word(s) | Token::Str(s) | Token::Number(s) => s,
                _ => {
                    return Err(SyntaxError {
                        at: vat,
                        expected: "the setting's value",
                    })
                }
            };
            settings.push((key, value));
            (t, at) = lx.next()?;
            if t != Token::Punct(b',') {
                break;
            }
        }
    }
    let format = if is_word(&t, "FORMAT") {
        let (f, fat) = lx.next()?;
        name(f, fat, "a format name after FORMAT")?
    } else if is_word(&t, "VALUES") {
        "Values".to_string()
    } else if is_word(&t, "SELECT") || is_word(&t, "WITH") || t == Token::Punct(b'(') {
        return Ok(Statement::Other);
    } else {
        return Err(SyntaxError {
            at,
            expected: "FORMAT, VALUES or SELECT",
        });
    };
    Ok(Statement::Insert(Insert {
        database,
        table,
        columns,
        settings,
        format,
        data_start: data_start(lx.text, lx.pos),
    }))
}

/// ClickHouse's rule: the data starts after the first newline in the
/// whitespace after the format name, or after all of it if it has none.
fn data_start(text: &[u8], mut pos: usize) -> usize {
    while let Some(&b) = text.get(pos) {
        if !b.is_ascii_whitespace() {
            break;
        }
        pos += 1;
        if b == b'\n' {
            break;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_of_one_table_and_nothing_else() {
        let d = describe(b"DESCRIBE TABLE db.`t`\n FORMAT Native").unwrap();
        assert_eq!(
            (d.database.as_deref(), d.table.as_str(), d.format.as_deref()),
            (Some("db"), "t", Some("Native"))
        );
        assert_eq!(describe(b"desc t").unwrap().format, None);
        for other in [
            &b"DESCRIBE TABLE t; DROP TABLE t"[..],
            b"DESCRIBE (SELECT 1)",
            b"DESCRIBE TABLE t FORMAT",
            b"SELECT 1",
            b"DESCRIBE TABLE t SETTINGS x = 1",
        ] {
            assert!(
                describe(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    fn insert(text: &str) -> Insert {
        match parse(text.as_bytes()) {
            Ok(Statement::Insert(i)) => i,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn reads_what_clients_send() {
        let i = insert("INSERT INTO cc_t (`a`, `s`, `n`) FORMAT Native\n\x01\x02");
        assert_eq!(i.table, "cc_t");
        assert_eq!(i.database, None);
        assert_eq!(
            i.columns.as_deref(),
            Some(&["a".into(), "s".into(), "n".into()][..])
        );
        assert_eq!(i.format, "Native");
        let text = "INSERT INTO cc_t (`a`, `s`, `n`) FORMAT Native\n\x01\x02";
        assert_eq!(&text[i.data_start..], "\x01\x02");

        let i = insert("insert into db.`we``ird`(x,y) settings async_insert=1, wait_for_async_insert = '0' format JSONEachRow {\"x\":1}");
        assert_eq!(i.database.as_deref(), Some("db"));
        assert_eq!(i.table, "we`ird");
        assert_eq!(
            i.settings,
            vec![
                ("async_insert".into(), "1".into()),
                ("wait_for_async_insert".into(), "0".into())
            ]
        );
        assert_eq!(i.format, "JSONEachRow");

        let text = "/* c */ INSERT -- x\n INTO TABLE \"t\" FORMAT RowBinary   \n  \n\t";
        let i = insert(text);
        assert_eq!(i.table, "t");
        // Only the first newline belongs to the query.
        assert_eq!(&text[i.data_start..], "  \n\t");
        let i = insert("INSERT INTO t VALUES (1)");
        assert_eq!(i.format, "Values");
    }

    #[test]
    fn classifies_everything_else() {
        for read in [
            "SELECT version(), timezone()",
            "  with 1 as x select x",
            "DESCRIBE TABLE t",
            "desc t",
            "SHOW TABLES",
            "EXISTS TABLE t",
        ] {
            assert_eq!(parse(read.as_bytes()), Ok(Statement::Read), "{read}");
        }
        for other in [
            "CREATE TABLE t (a UInt8) ENGINE = Memory",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t (a) SELECT 1",
            "INSERT INTO FUNCTION remote('h', db.t) VALUES (1)",
            "DROP TABLE t",
            "(SELECT 1)",
        ] {
            assert_eq!(parse(other.as_bytes()), Ok(Statement::Other), "{other}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "INSERT t FORMAT X",
            "INSERT INTO t (a b) FORMAT X",
            "INSERT INTO `t FORMAT X",
            "INSERT INTO t SETTINGS a 1 FORMAT X",
            "INSERT INTO t",
            "INSERT INTO /* open",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
