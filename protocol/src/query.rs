//! The query text of a ClickHouse HTTP request, read as far as the front
//! door needs it: an `INSERT INTO [db.]table [(columns)] [SETTINGS ...]
//! FORMAT name` and where its data starts, or the kind of any other
//! statement.
//!
//! Owns: reading the statement out of the tokens of `lexer` (which lexes
//! as ClickHouse's own `src/Parsers/Lexer.cpp` does), so the statement
//! seen here is the one ClickHouse would run: the INSERT's names, column
//! list, settings, format and data start, and the read-or-not verdict.
//! Must not: build SQL from what it reads (names leave here as plain
//! strings, to be checked against the allow-list and quoted where they are
//! used), or classify as a read anything it did not recognise: a text is
//! [`Statement::Read`] only when all of it lexes, it is one statement of a
//! read kind, and it carries none of the clauses that make a read write
//! (`INTO OUTFILE`, `PARALLEL WITH`, an `INSERT` after `WITH`).

pub use crate::lexer::SyntaxError;
use crate::lexer::{Kind, Lexer, Raw, Token};

/// The statement a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// An INSERT of data in some format.
    Insert(Insert),
    /// SELECT, WITH ... SELECT, DESCRIBE / DESC, SHOW, EXISTS, EXPLAIN of
    /// one of these: one statement with no side effects.
    Read,
    /// Anything else: DDL, `INSERT ... SELECT`, `INSERT INTO FUNCTION`,
    /// `SELECT ... INTO OUTFILE`, several statements, ...
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
    /// Where the data begins in the text, as ClickHouse reads it: after
    /// `FORMAT name`, past spaces, tabs and form feeds, then one `\r`, then
    /// one `\n`; after `VALUES`, at the next token. The length of the text
    /// when it carries no data.
    pub data_start: usize,
}

/// The first words of the statements that are reads.
const READS: [&str; 7] = [
    "SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXISTS", "EXPLAIN",
];

/// The statements an `EXPLAIN` may explain and stay a read.
const EXPLAINED: [&str; 6] = ["SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXISTS"];

fn is(text: &[u8], token: Token, word: &str) -> bool {
    token.kind == Kind::Word && text[token.start..token.end].eq_ignore_ascii_case(word.as_bytes())
}

fn is_any(text: &[u8], token: Token, words: &[&str]) -> bool {
    words.iter().any(|w| is(text, token, w))
}

/// Reads the statement at the start of `text`.
pub fn parse(text: &[u8]) -> Result<Statement, SyntaxError> {
    let mut lx = Lexer::new(text);
    let first = lx.next()?;
    match first.kind {
        // `(SELECT ...)` and the like: not recognised as a read.
        Kind::End => Err(SyntaxError {
            at: first.start,
            expected: "a query (the body and the `query` parameter are empty)",
        }),
        Kind::Word if is(text, first, "INSERT") => insert(&mut lx),
        Kind::Word if is_any(text, first, &READS) => read(&mut lx, first),
        _ => Ok(Statement::Other),
    }
}

/// The rest of a statement that starts with a read's word: a read only if
/// all of it lexes, it is one statement (only `;` after a `;`, as
/// ClickHouse allows one statement a request), and it has none of the
/// clauses that turn it into something else.
fn read(lx: &mut Lexer<'_>, first: Token) -> Result<Statement, SyntaxError> {
    let text = lx.text;
    let mut last = first;
    if is(text, first, "EXPLAIN") {
        match explained(lx)? {
            Some(t) => last = t,
            None => return Ok(Statement::Other),
        }
    }
    let mut ended = false;
    loop {
        let t = lx.next()?;
        match t.kind {
            Kind::End => return Ok(Statement::Read),
            Kind::Semicolon => ended = true,
            _ if ended => return Ok(Statement::Other),
            _ => {}
        }
        // `WITH ... INSERT INTO` is an INSERT, `EXPLAIN INSERT` is not
        // worth telling apart: no read has the word.
        if is(text, t, "INSERT")
            // The server writes a file (refused over HTTP, never a read).
            || (is(text, last, "INTO") && is(text, t, "OUTFILE"))
            // `SELECT 1 PARALLEL WITH DROP TABLE t` runs both.
            || (is(text, last, "PARALLEL") && is(text, t, "WITH"))
        {
            return Ok(Statement::Other);
        }
        last = t;
    }
}

/// After `EXPLAIN`: its kind (`AST`, `SYNTAX`, `QUERY TREE`, `PLAN`,
/// `PIPELINE`, `ESTIMATE`, `ANALYZE`) and settings (`name = literal, ...`),
/// then the first word of the statement explained, when that is a read's.
fn explained(lx: &mut Lexer<'_>) -> Result<Option<Token>, SyntaxError> {
    const KINDS: [&str; 8] = [
        "AST", "SYNTAX", "QUERY", "TREE", "PLAN", "PIPELINE", "ESTIMATE", "ANALYZE",
    ];
    let text = lx.text;
    let mut t = lx.next()?;
    while is_any(text, t, &KINDS) {
        t = lx.next()?;
    }
    while t.kind == Kind::Word && lx.clone().next()?.kind == Kind::Equals {
        lx.next()?;
        if value(lx).is_err() {
            // Not a value read here: not a statement to tell a read.
            return Ok(None);
        }
        t = lx.next()?;
        if t.kind == Kind::Comma {
            t = lx.next()?;
        }
    }
    Ok((t.kind == Kind::Word && is_any(text, t, &EXPLAINED)).then_some(t))
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
    let mut lx = Lexer::new(text);
    let mut next = || lx.next().ok();
    let first = next()?;
    if !is(text, first, "DESCRIBE") && !is(text, first, "DESC") {
        return None;
    }
    let mut t = next()?;
    if is(text, t, "TABLE") {
        t = next()?;
    }
    let mut table = name(text, t, "").ok()?;
    let mut database = None;
    let mut t = next()?;
    if t.kind == Kind::Dot {
        database = Some(std::mem::replace(&mut table, name(text, next()?, "").ok()?));
        t = next()?;
    }
    let mut format = None;
    if is(text, t, "FORMAT") {
        format = Some(name(text, next()?, "").ok()?);
        t = next()?;
    }
    if t.kind == Kind::Semicolon {
        t = next()?;
    }
    (t.kind == Kind::End).then_some(Describe {
        database,
        table,
        format,
    })
}

/// A bare or quoted name, unescaped; never empty.
fn name(text: &[u8], token: Token, expected: &'static str) -> Result<String, SyntaxError> {
    let error = SyntaxError {
        at: token.start,
        expected,
    };
    let bytes = match token.kind {
        Kind::Word => text[token.start..token.end].to_vec(),
        Kind::Quoted => unquote(text, token)?,
        _ => return Err(error),
    };
    match String::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Err(error),
    }
}

/// The content of a quoted string or name, as ClickHouse's
/// `readAnyQuotedStringInto` with SQL-style quoting reads it: a doubled
/// quote is one; `\xHH` is a byte, `\N` nothing, `\a \b \e \f \n \r \t \v
/// \0` control bytes, `\\ \' \" \` \/ \=` the character; after any other
/// escaped byte the backslash stays (`\%` is `\%`). A `\x` without two
/// hex digits is refused (ClickHouse would read whatever two bytes follow).
fn unquote(text: &[u8], token: Token) -> Result<Vec<u8>, SyntaxError> {
    let quote = text[token.start];
    let body = &text[token.start + 1..token.end - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => {
                let e = body[i + 1];
                i += 2;
                match e {
                    b'x' => {
                        let hex = body
                            .get(i..i + 2)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .filter(|_| body[i..i + 2].iter().all(u8::is_ascii_hexdigit));
                        let Some(byte) = hex else {
                            return Err(SyntaxError {
                                at: token.start,
                                expected: "two hex digits after `\\x`",
                            });
                        };
                        out.push(byte);
                        i += 2;
                    }
                    b'N' => {}
                    _ => {
                        let decoded = match e {
                            b'a' => 0x07,
                            b'b' => 0x08,
                            b'e' => 0x1b,
                            b'f' => 0x0c,
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'v' => 0x0b,
                            b'0' => 0,
                            other => other,
                        };
                        if !(matches!(decoded, b'\\' | b'\'' | b'"' | b'`' | b'/' | b'=')
                            || decoded <= 31)
                        {
                            out.push(b'\\');
                        }
                        out.push(decoded);
                    }
                }
            }
            // The lexer let a quote inside only doubled.
            b if b == quote => {
                out.push(quote);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A setting's value: a number (with its sign), a string or heredoc,
/// `true` or `false`.
fn value(lx: &mut Lexer<'_>) -> Result<String, SyntaxError> {
    let text = lx.text;
    let v = lx.next()?;
    let error = SyntaxError {
        at: v.start,
        expected: "the setting's value (a number, a string, true or false)",
    };
    let bytes = match v.kind {
        Kind::Number => text[v.start..v.end].to_vec(),
        Kind::Minus | Kind::Plus => {
            let n = lx.next()?;
            if n.kind != Kind::Number {
                return Err(error);
            }
            let mut s = text[v.start..v.end].to_vec();
            s.extend_from_slice(&text[n.start..n.end]);
            s
        }
        Kind::Str if text[v.start] == b'\'' => unquote(text, v)?,
        Kind::HereDoc => {
            let tag = memchr::memchr(b'$', &text[v.start + 1..v.end]).map_or(0, |i| i + 2);
            text[v.start + tag..v.end - tag].to_vec()
        }
        Kind::Word if is_any(text, v, &["true", "false"]) => text[v.start..v.end].to_vec(),
        _ => return Err(error),
    };
    String::from_utf8(bytes).map_err(|_| error)
}

fn insert(lx: &mut Lexer<'_>) -> Result<Statement, SyntaxError> {
    let text = lx.text;
    let t = lx.next()?;
    if !is(text, t, "INTO") {
        return Err(SyntaxError {
            at: t.start,
            expected: "INTO after INSERT",
        });
    }
    let mut t = lx.next()?;
    if is(text, t, "TABLE") {
        t = lx.next()?;
    }
    if is(text, t, "FUNCTION") {
        return Ok(Statement::Other);
    }
    let mut table = name(text, t, "a table name")?;
    let mut database = None;
    let mut t = lx.next()?;
    if t.kind == Kind::Dot {
        let n = lx.next()?;
        database = Some(std::mem::replace(
            &mut table,
            name(text, n, "a table name after `.`")?,
        ));
        t = lx.next()?;
    }
    let mut columns = None;
    if t.kind == Kind::Open {
        let mut c = lx.next()?;
        if is_any(text, c, &["SELECT", "WITH"]) || c.kind == Kind::Open {
            // `INSERT INTO t (SELECT ...)`.
            return Ok(Statement::Other);
        }
        let mut list = Vec::new();
        loop {
            list.push(name(text, c, "a column name")?);
            let sep = lx.next()?;
            match sep.kind {
                Kind::Comma => {
                    c = lx.next()?;
                    // ClickHouse takes a trailing comma.
                    if c.kind == Kind::Close {
                        break;
                    }
                }
                Kind::Close => break,
                _ => {
                    return Err(SyntaxError {
                        at: sep.start,
                        expected: "`,` or `)` in the column list",
                    })
                }
            }
        }
        columns = Some(list);
        t = lx.next()?;
    }
    if is(text, t, "FROM") {
        // `FROM INFILE`: a file of the client's.
        return Ok(Statement::Other);
    }
    let mut settings = Vec::new();
    if is(text, t, "SETTINGS") {
        loop {
            let key = name(text, lx.next()?, "a setting name")?;
            let eq = lx.next()?;
            if eq.kind != Kind::Equals {
                return Err(SyntaxError {
                    at: eq.start,
                    expected: "`=` after the setting's name",
                });
            }
            settings.push((key, value(lx)?));
            t = lx.next()?;
            if t.kind != Kind::Comma {
                break;
            }
        }
    }
    let (format, data_start) = if is(text, t, "FORMAT") {
        let f = lx.next()?;
        let format = name(text, f, "a format name after FORMAT")?;
        (format, format_data_start(text, f.end)?)
    } else if is(text, t, "VALUES") {
        // The data is the rest from the next token on; none before `;`.
        let at = lx.next_start();
        let data_start = if text.get(at) == Some(&b';') {
            text.len()
        } else {
            at
        };
        ("Values".to_string(), data_start)
    } else if is_any(text, t, &["SELECT", "WITH"]) || t.kind == Kind::Open {
        return Ok(Statement::Other);
    } else {
        return Err(SyntaxError {
            at: t.start,
            expected: "FORMAT, VALUES or SELECT",
        });
    };
    Ok(Statement::Insert(Insert {
        database,
        table,
        columns,
        settings,
        format,
        data_start,
    }))
}

/// ClickHouse's rule after `FORMAT name`: a `;` right after the name is an
/// error; then spaces, tabs and form feeds, one `\r` and one `\n` belong to
/// the query, and the data starts after them.
fn format_data_start(text: &[u8], mut pos: usize) -> Result<usize, SyntaxError> {
    if text.get(pos) == Some(&b';') {
        return Err(SyntaxError {
            at: pos,
            expected: "whitespace before the data (not `;` right after the format name)",
        });
    }
    pos += text[pos..]
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | 0x0c))
        .count();
    if text.get(pos) == Some(&b'\r') {
        pos += 1;
    }
    if text.get(pos) == Some(&b'\n') {
        pos += 1;
    }
    Ok(pos)
}

/// The text with each comment, as this lexer reads them, replaced by one
/// space; an error where the text does not lex. For the fuzz targets.
#[doc(hidden)]
pub fn strip_comments(text: &[u8]) -> Result<Vec<u8>, SyntaxError> {
    let mut lx = Lexer::new(text);
    let mut out = Vec::with_capacity(text.len());
    loop {
        let start = lx.pos;
        match lx.raw()? {
            Raw::Comment => out.push(b' '),
            Raw::Space => out.extend_from_slice(&text[start..lx.pos]),
            Raw::Token(Kind::End) => return Ok(out),
            Raw::Token(kind) => {
                lx.prev = Some(kind);
                out.extend_from_slice(&text[start..lx.pos]);
            }
        }
    }
}

/// The first token of the text when it is a bare word. For the fuzz
/// targets.
#[doc(hidden)]
pub fn first_word(text: &[u8]) -> Option<String> {
    let t = Lexer::new(text).next().ok()?;
    (t.kind == Kind::Word).then(|| String::from_utf8_lossy(&text[t.start..t.end]).into_owned())
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
        assert_eq!(describe(b"/* a /* b */ */ DESC t;").unwrap().table, "t");
        for other in [
            &b"DESCRIBE TABLE t; DROP TABLE t"[..],
            b"DESCRIBE (SELECT 1)",
            b"DESCRIBE TABLE t FORMAT",
            b"SELECT 1",
            b"DESCRIBE TABLE t SETTINGS x = 1",
            b"DESCRIBE t /* a /* b */ FORMAT Native",
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
    fn data_starts_where_clickhouse_starts_it() {
        for (text, data) in [
            ("INSERT INTO t FORMAT CSV 1,2", "1,2"),
            ("INSERT INTO t FORMAT CSV \t\x0c\r\n1", "1"),
            ("INSERT INTO t FORMAT CSV\r\r\n1", "\r\n1"),
            ("INSERT INTO t FORMAT CSV \x0b1", "\x0b1"),
            ("INSERT INTO t FORMAT CSV\n\n1", "\n1"),
            ("INSERT INTO t FORMAT CSV", ""),
            (
                "INSERT INTO t FORMAT CSV/* not a comment */",
                "/* not a comment */",
            ),
            ("INSERT INTO t VALUES /* c */ -- d\n (1)", "(1)"),
            ("INSERT INTO t VALUES(1)", "(1)"),
            ("INSERT INTO t VALUES", ""),
            ("INSERT INTO t VALUES ;", ""),
            ("INSERT INTO t VALUES 'open", "'open"),
        ] {
            let i = insert(text);
            assert_eq!(&text[i.data_start..], data, "{text:?}");
        }
        assert!(parse(b"INSERT INTO t FORMAT CSV;1").is_err());
    }

    #[test]
    fn names_and_values_unescape_as_clickhouse_does() {
        let i = insert(r"INSERT INTO `a\x62\q\N\%\/\t`.`c` FORMAT CSV");
        assert_eq!(i.database.as_deref(), Some("ab\\q\\%/\t"));
        assert!(parse(br"INSERT INTO `a\xZZ` FORMAT CSV").is_err());
        let i = insert("INSERT INTO t SETTINGS a = -1, b = +2, c = $$x$$, d = $q$y$q$, e = TRUE, f = 1e3 FORMAT CSV");
        let values: Vec<&str> = i.settings.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["-1", "+2", "x", "y", "TRUE", "1e3"]);
        assert!(parse(b"INSERT INTO t SETTINGS a = abc FORMAT CSV").is_err());
        let i = insert("INSERT INTO 1t (a,) FORMAT CSV");
        assert_eq!(
            (i.table.as_str(), i.columns),
            ("1t", Some(vec!["a".into()]))
        );
        assert_eq!(insert("INSERT INTO $t FORMAT CSV").table, "$t");
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
            "SELECT 1;",
            "SELECT 1;; -- done",
            "SELECT 1 /* a /* b */ c */",
            "SELECT 1 # c\n",
            "SELECT 1 #!c",
            "SELECT 1 // c",
            "\u{feff}SELECT 1",
            "\u{a0}\u{3000}SELECT\u{200b}1",
            "\x0bSELECT 1",
            "SELECT $$ */ INSERT $$",
            "SELECT $a$ ; DROP TABLE t $a$",
            "SELECT '*/ ; DROP TABLE t'",
            "SELECT `a``b`, \"c\\\"d\" FROM t",
            "SELECT 1 SETTINGS max_threads = 1 FORMAT JSON",
            "SELECT t.1.2, .5e-3, 0x1F, 1_000, x'41', b'01' FROM t",
            "EXPLAIN SELECT 1",
            "EXPLAIN AST SELECT 1",
            "EXPLAIN QUERY TREE SELECT 1",
            "EXPLAIN PIPELINE graph = 1, compact = 0 SELECT 1",
            "EXPLAIN indexes = 1 WITH 1 AS x SELECT x",
            "SELECT 1 AS into, 2 AS outfile",
        ] {
            assert_eq!(parse(read.as_bytes()), Ok(Statement::Read), "{read}");
        }
        for other in [
            "CREATE TABLE t (a UInt8) ENGINE = Memory",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t (a) SELECT 1",
            "INSERT INTO t (SELECT 1)",
            "INSERT INTO FUNCTION remote('h', db.t) VALUES (1)",
            "INSERT INTO t FROM INFILE 'f' FORMAT CSV",
            "DROP TABLE t",
            "(SELECT 1)",
            "SELECT 1; DROP TABLE t",
            "SELECT 1 /* a /* b */ */; DROP TABLE t",
            "SELECT 1 INTO OUTFILE 'x'",
            "SELECT 1 into /* c */ outfile 'x'",
            "SELECT 1 PARALLEL WITH DROP TABLE t",
            "SHOW TABLES PARALLEL WITH DROP TABLE t",
            "WITH 1 AS x INSERT INTO t SELECT x",
            "WITH 1 AS x INSERT INTO t FORMAT CSV",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "EXPLAIN AST DROP TABLE t",
            "EXPLAIN CURRENT TRANSACTION",
            "EXPLAIN ; DROP TABLE t",
            "SELECT 1 AS insert",
            "SYSTEM FLUSH LOGS",
            "EXECUTE AS u SELECT 1",
        ] {
            assert_eq!(parse(other.as_bytes()), Ok(Statement::Other), "{other}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            " /* only */ -- comments\n",
            "INSERT t FORMAT X",
            "INSERT INTO t (a b) FORMAT X",
            "INSERT INTO `t FORMAT X",
            "INSERT INTO t SETTINGS a 1 FORMAT X",
            "INSERT INTO t",
            "INSERT INTO /* open",
            "INSERT INTO /* a /* b */ t FORMAT CSV",
            // The old lexer ended the comment at the first `*/`.
            "SELECT 1 /* a /* b */ ; DROP TABLE t",
            "SELECT 1 #c",
            "SELECT 1 #\tc",
            "SELECT 'open",
            "SELECT \"open",
            "SELECT `open",
            "SELECT 'a\\'",
            "SELECT x'4G'",
            "SELECT 1.5x",
            "SELECT !1",
            "SELECT 1 \\ 2",
            "SELECT \u{80}",
            "SELECT 1 \u{2030}",
        ] {
            assert!(
                parse(bad.as_bytes()).is_err(),
                "{bad:?}: {:?}",
                parse(bad.as_bytes())
            );
        }
    }

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        let mut lx = Lexer::new(text.as_bytes());
        let mut out = Vec::new();
        loop {
            let t = lx.next().unwrap();
            if t.kind == Kind::End {
                return out;
            }
            out.push((t.kind, &text[t.start..t.end]));
        }
    }

    #[test]
    fn lexes_as_clickhouse_does() {
        use Kind::*;
        assert_eq!(
            kinds("x.1.2 .5 1.5e-3 0x1Fp2 0b102 1_000 1__0 12_ 1e 1e- 1abc"),
            [
                (Word, "x"),
                (Dot, "."),
                (Number, "1"),
                (Dot, "."),
                (Number, "2"),
                // After a number, `.` is a dot.
                (Dot, "."),
                (Number, "5"),
                (Number, "1.5e-3"),
                (Number, "0x1Fp2"),
                (Number, "0b102"),
                (Number, "1_000"),
                (Word, "1__0"),
                (Word, "12_"),
                (Number, "1e"),
                (Number, "1e-"),
                (Word, "1abc"),
            ]
        );
        assert_eq!(kinds("(.5)")[1], (Number, ".5"));
        assert_eq!(kinds(".x")[0], (Number, "."));
        assert_eq!(
            kinds("$$a$$ $t$b$t$ $x $a$b $"),
            [
                (HereDoc, "$$a$$"),
                (HereDoc, "$t$b$t$"),
                // Tags `$x $` and `$a$` never close: words.
                (Word, "$x"),
                (Word, "$a$b"),
                (Op, "$"),
            ]
        );
        // The tag is whatever lies between the first two `$`.
        assert_eq!(kinds("$ $ x $ $"), [(HereDoc, "$ $ x $ $")]);
        assert_eq!(
            kinds("a->b != c <> d <= e || f :: g @@h ?\\G"),
            [
                (Word, "a"),
                (Op, "->"),
                (Word, "b"),
                (Op, "!="),
                (Word, "c"),
                (Op, "<>"),
                (Word, "d"),
                (Op, "<="),
                (Word, "e"),
                (Op, "||"),
                (Word, "f"),
                (Op, "::"),
                (Word, "g"),
                (Op, "@@"),
                (Word, "h"),
                (Op, "?"),
                (Op, "\\G"),
            ]
        );
        assert_eq!(
            kinds("'a''b\\'c' \"d\"\"e\" `f\\`g` x'4142' B'01'"),
            [
                (Str, "'a''b\\'c'"),
                (Quoted, "\"d\"\"e\""),
                (Quoted, "`f\\`g`"),
                (Str, "x'4142'"),
                (Str, "B'01'"),
            ]
        );
        assert_eq!(kinds("/*/ a */ /* a /* b */ c */ b"), [(Word, "b")]);
    }

    #[test]
    fn heredoc_search_is_bounded() {
        // `$1 $2 ...`: each tag (`$1 $`) is looked for to the end of the text.
        let tags = |n: usize| (0..n).map(|i| format!("${i} ")).collect::<String>();
        let text = format!("SELECT {}", tags(2_000));
        assert_eq!(parse(text.as_bytes()), Ok(Statement::Read));
        let mut lx = Lexer::new(text.as_bytes());
        lx.heredoc_budget = 1 << 20;
        let err = loop {
            match lx.next() {
                Ok(t) => assert_ne!(t.kind, Kind::End, "the budget ran out first"),
                Err(e) => break e,
            }
        };
        assert!(err.expected.contains("heredoc"), "{err}");
    }

    #[test]
    fn strips_comments_only() {
        assert_eq!(
            strip_comments(b"/* a /* b */ */SELECT '/* x */' -- y\n#!z").unwrap(),
            b" SELECT '/* x */'  \n "
        );
        assert!(strip_comments(b"SELECT /*").is_err());
        assert_eq!(first_word(b"-- x\n select").as_deref(), Some("select"));
        assert_eq!(first_word(b"'select'"), None);
    }
}
