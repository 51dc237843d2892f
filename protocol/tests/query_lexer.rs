//! The query classifier (`query::parse`) against ClickHouse's own parser.
//!
//! Each text of the corpus is a way a client, or an attacker, could make
//! the classifier and the server disagree about the statement: comments
//! (nested, `--`, `//`, `#`) hiding or splitting keywords, strings and
//! heredocs holding `*/` or `;`, several statements, Unicode whitespace, a
//! BOM, reads that write (`INTO OUTFILE`, `PARALLEL WITH`, `WITH ...
//! INSERT`), and the statements that are not reads at all.
//!
//! Each text carries what the classifier must answer (checked always), and
//! ClickHouse's view of it is checked when Python's `chdb` (ClickHouse
//! in-process) is there: one `python3` runs `formatQuerySingleLine` on
//! every text (JSON over stdin and stdout), which parses it with the real
//! parser and prints the one statement it is, or fails. Then:
//! - a text we call a read must be, to ClickHouse, one SELECT (WITH),
//!   SHOW, DESCRIBE, EXISTS or EXPLAIN statement, without `INTO OUTFILE`
//!   or `PARALLEL WITH`;
//! - a text ClickHouse reads as an INSERT must never be a read to us;
//! - an INSERT we extract must be one to ClickHouse, into the same
//!   database and table.
//!
//! Without python3 or chdb the ClickHouse half is skipped with a notice,
//! and fails under `CI=true`.

use ch_ingest_protocol::query::{parse, Statement};
use std::io::Write;
use std::process::{Command, Stdio};

/// What the classifier must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    /// An INSERT of data into `[db.]table`.
    Insert(Option<&'static str>, &'static str),
    Other,
    /// A syntax error.
    Error,
}

use Want::*;

const CORPUS: &[(&[u8], Want)] = &[
    // Reads, however dressed.
    (b"SELECT 1", Read),
    (b"select version(), timezone()", Read),
    (b"/* a /* b */ c */ SELECT 1", Read),
    (b"SELECT 1 /* a /* b */ INSERT INTO t VALUES (1) */", Read),
    (b"SELECT 1 /* a /* b */ ; DROP TABLE t */", Read),
    (b"SELECT 1 -- ; DROP TABLE t", Read),
    (b"SELECT 1 # ; DROP TABLE t", Read),
    (b"#!/usr/bin/clickhouse-local\nSELECT 1", Read),
    (b"SELECT 1 // ; DROP TABLE t", Read),
    (b"SELECT '*/ ; DROP TABLE t /*'", Read),
    (b"SELECT $$ */ ; DROP TABLE t $$", Read),
    (b"SELECT $tag$ ' ; DROP TABLE t $tag$, 2", Read),
    (b"\xEF\xBB\xBFSELECT 1", Read),
    (b"\xC2\xA0SELECT\xE2\x80\x8B1\xE3\x80\x80", Read),
    (b"\x0bSELECT\x0c1\r\n", Read),
    (b"WITH 1 AS x SELECT x", Read),
    (b"WITH x AS (SELECT 1) SELECT * FROM x", Read),
    (b"SHOW CREATE TABLE t", Read),
    (b"SHOW TABLES", Read),
    (b"DESCRIBE TABLE db.t FORMAT Native", Read),
    (b"DESC t", Read),
    (b"EXISTS TABLE t", Read),
    (b"EXPLAIN SELECT 1", Read),
    (b"EXPLAIN PIPELINE graph = 1 SELECT 1", Read),
    (b"SELECT 1 SETTINGS max_threads = 1 FORMAT JSON", Read),
    (b"SELECT 1;", Read),
    (b"SELECT 1;; -- end", Read),
    (b"SELECT \"a\"\"b\", `c\\`d` FROM t", Read),
    (b"SELECT 'a\\'b', 'c''d'", Read),
    (b"SELECT 1 AS into, 2 AS outfile", Read),
    (b"SELECT x'41', b'01', 0x1F, 1_000, .5e-3", Read),
    (b"SELECT t.1.2 FROM t", Read),
    (b"SELECT '\xff'", Read),
    // What the old lexer (a comment ends at the first `*/`, any `#`
    // starts one) read differently from ClickHouse.
    (b"/* /* */ SELECT 1 */ DROP TABLE t", Other),
    (b"/* /* */ SELECT 1 */ INSERT INTO t SELECT 1", Other),
    (
        b"/* /* */ SELECT 1 */ INSERT INTO t FORMAT CSV",
        Insert(None, "t"),
    ),
    (b"SELECT 1 /* a /* b */ ; DROP TABLE t", Error),
    (b"SELECT 1 /* a */ */ ; DROP TABLE t", Other),
    (b"SELECT 1 #; DROP TABLE t", Error),
    (b"SELECT 1 #\t; DROP TABLE t", Error),
    // Several statements.
    (b"SELECT 1; DROP TABLE t", Other),
    (b"SELECT 1; INSERT INTO t VALUES (1)", Other),
    // Reads that write, or run a write beside them.
    (b"SELECT 1 INTO OUTFILE '/tmp/x'", Other),
    (b"SELECT 1 INTO /* c */ OUTFILE '/tmp/x' FORMAT CSV", Other),
    (b"WITH 1 AS x SELECT x INTO OUTFILE 'x' APPEND", Other),
    (b"SHOW TABLES INTO OUTFILE 'x'", Other),
    (b"SELECT 1 PARALLEL WITH DROP TABLE t", Other),
    (b"WITH 1 AS x INSERT INTO t SELECT x", Other),
    (b"WITH 1 AS x INSERT INTO t FORMAT CSV 1", Other),
    (b"EXPLAIN INSERT INTO t VALUES (1)", Other),
    (b"EXPLAIN AST DROP TABLE t", Other),
    // Not reads.
    (b"/* SELECT */ DROP TABLE t", Other),
    (b"SET max_threads = 1", Other),
    (b"SYSTEM FLUSH LOGS", Other),
    (b"KILL QUERY WHERE 1", Other),
    (b"OPTIMIZE TABLE t FINAL", Other),
    (b"ALTER TABLE t DELETE WHERE 1", Other),
    (b"DELETE FROM t WHERE 1", Other),
    (b"CREATE TABLE t (a UInt8) ENGINE = Memory", Other),
    (b"INSERT INTO t SELECT 1", Other),
    (b"INSERT INTO t (a) SELECT 1", Other),
    (b"INSERT INTO t (SELECT 1)", Other),
    (b"INSERT INTO FUNCTION remote('h', db.t) VALUES (1)", Other),
    (b"INSERT INTO t FROM INFILE 'x' FORMAT CSV", Other),
    (b"(SELECT 1)", Other),
    (b"FROM t SELECT 1", Other),
    // Texts that do not lex.
    (b"SELECT 'open", Error),
    (b"SELECT `open", Error),
    (b"SELECT /* open", Error),
    (b"SELECT \xff", Error),
    (b"INSERT INTO /* a /* b */ t FORMAT CSV", Error),
    (b"INSERT INTO t FORMAT CSV;1", Error),
    // INSERTs of data.
    (b"INSERT INTO t FORMAT CSV\n1,2", Insert(None, "t")),
    (
        b"insert into db.t (a, b) settings async_insert = 1 format JSONEachRow {\"a\":1}",
        Insert(Some("db"), "t"),
    ),
    (
        b"INSERT /* x /* y */ z */ INTO `we``ird`.\"t\"\"x\" VALUES (1)",
        Insert(Some("we`ird"), "t\"x"),
    ),
    (b"INSERT INTO TABLE t FORMAT TSV", Insert(None, "t")),
    (b"INSERT INTO 1t FORMAT CSV", Insert(None, "1t")),
    (b"INSERT INTO `a\\x62\\q` FORMAT CSV", Insert(None, "ab\\q")),
    (b"INSERT INTO t (a,) FORMAT CSV", Insert(None, "t")),
    (
        b"-- c\nINSERT\x0bINTO\xC2\xA0t FORMAT CSV",
        Insert(None, "t"),
    ),
    (
        b"INSERT INTO t FORMAT CSV /* not a comment */ 1",
        Insert(None, "t"),
    ),
    (
        b"INSERT INTO db./* c */t VALUES (1)",
        Insert(Some("db"), "t"),
    ),
    (
        b"INSERT INTO t /* a /* b */ c */ FORMAT CSV",
        Insert(None, "t"),
    ),
    (
        b"INSERT INTO t SETTINGS a = $$x$$ FORMAT CSV",
        Insert(None, "t"),
    ),
    (b"INSERT INTO $t FORMAT CSV", Insert(None, "$t")),
    (b"INSERT INTO select FORMAT CSV", Insert(None, "select")),
];

fn ours(text: &[u8]) -> Want {
    match parse(text) {
        Ok(Statement::Read) => Read,
        Ok(Statement::Other) => Other,
        Err(_) => Error,
        Ok(Statement::Insert(i)) => {
            assert!(i.data_start <= text.len());
            // Leaked: a handful of strings, once per test run.
            Insert(
                i.database.map(|d| &*Box::leak(d.into_boxed_str())),
                Box::leak(i.table.into_boxed_str()),
            )
        }
    }
}

const ORACLE: &str = r#"
import json, sys
try:
    import chdb
except ImportError:
    print(json.dumps("no chdb"))
    sys.exit(0)
texts = json.load(sys.stdin)
out = ["version:" + chdb.query("SELECT version()", "TabSeparatedRaw").bytes().decode().strip()]
for h in texts:
    try:
        r = chdb.query("SELECT hex(formatQuerySingleLine(unhex('%s')))" % h, "TabSeparatedRaw")
        out.append("ok:" + r.bytes().decode().strip())
    except Exception as e:
        out.append("err:" + str(e).encode().hex())
print(json.dumps(out))
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// ClickHouse's answer for one text: the statement as it formats it, or
/// the parse error.
type Answer = Result<Vec<u8>, String>;

/// ClickHouse's version and answer for each text; `None` when python3 or
/// chdb is not there.
fn clickhouse(texts: &[&[u8]]) -> Option<(String, Vec<Answer>)> {
    let input = format!(
        "[{}]",
        texts
            .iter()
            .map(|t| format!("\"{}\"", hex(t)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(ORACLE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("python3 cannot run: {e}");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the chdb oracle failed");
    let out = String::from_utf8(out.stdout).unwrap();
    let out = out.trim();
    if out == "\"no chdb\"" {
        eprintln!("python3 has no chdb (pip install chdb-core)");
        return None;
    }
    // A JSON array of strings without quotes or backslashes inside.
    let items: Vec<&str> = out
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .collect();
    let version = items[0].strip_prefix("version:").unwrap().to_string();
    let answers = items[1..]
        .iter()
        .map(|s| match s.split_once(':') {
            Some(("ok", h)) => Ok(unhex(h)),
            Some(("err", h)) => Err(String::from_utf8_lossy(&unhex(h))
                .lines()
                .next()
                .unwrap_or("")
                .to_string()),
            _ => panic!("the oracle said {s}"),
        })
        .collect::<Vec<_>>();
    assert_eq!(answers.len(), texts.len());
    Some((version, answers))
}

/// A token of ClickHouse's formatted (normalised) statement.
#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    /// Backquoted name or quoted string, unescaped.
    Quoted(u8, Vec<u8>),
    Punct(u8),
}

/// The formatter's output is plain: words, quoted names and strings with
/// backslash escapes, punctuation.
fn tokens(formatted: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < formatted.len() {
        let b = formatted[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
            let n = formatted[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'$')
                .count();
            out.push(Tok::Word(
                String::from_utf8_lossy(&formatted[i..i + n]).into_owned(),
            ));
            i += n;
        } else if matches!(b, b'\'' | b'`' | b'"') {
            let mut s = Vec::new();
            i += 1;
            while i < formatted.len() && formatted[i] != b {
                if formatted[i] == b'\\' && i + 1 < formatted.len() {
                    let e = formatted[i + 1];
                    i += 2;
                    s.push(match e {
                        b'x' => {
                            let h = std::str::from_utf8(&formatted[i..i + 2]).unwrap();
                            i += 2;
                            u8::from_str_radix(h, 16).unwrap()
                        }
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'0' => 0,
                        b'a' => 7,
                        b'v' => 11,
                        b'e' => 27,
                        other => other,
                    });
                } else {
                    s.push(formatted[i]);
                    i += 1;
                }
            }
            i += 1;
            out.push(Tok::Quoted(b, s));
        } else {
            out.push(Tok::Punct(b));
            i += 1;
        }
    }
    out
}

fn word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word(x) if x.eq_ignore_ascii_case(w))
}

/// What ClickHouse's parse of a text is, in the terms of the checks.
#[derive(Debug)]
enum Server {
    /// Not one statement it can parse.
    Invalid,
    /// One statement of a read's kind, without a clause that writes.
    Read,
    /// An INSERT into `[db.]table` (`None`: into a table function).
    Insert(Option<(Option<String>, String)>),
    /// Any other statement.
    Other,
}

fn server(answer: &Answer) -> Server {
    let Ok(formatted) = answer else {
        return Server::Invalid;
    };
    let toks = tokens(formatted);
    let first = match toks.first() {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        Some(t) => format!("{t:?}"),
        None => return Server::Invalid,
    };
    if first == "INSERT" {
        let name = |t: &Tok| match t {
            Tok::Word(w) => Some(w.clone()),
            Tok::Quoted(b'`', n) => Some(String::from_utf8_lossy(n).into_owned()),
            _ => None,
        };
        let mut rest = toks[2..].iter().skip_while(|t| word(t, "TABLE"));
        let Some(first) = rest.next().filter(|t| !word(t, "FUNCTION")) else {
            return Server::Insert(None);
        };
        let first = name(first).expect("a table name");
        let rest: Vec<&Tok> = rest.collect();
        return Server::Insert(Some(match rest.as_slice() {
            [Tok::Punct(b'.'), table, ..] => (Some(first), name(table).expect("a table name")),
            _ => (None, first),
        }));
    }
    let pair = |a: &str, b: &str| toks.windows(2).any(|w| word(&w[0], a) && word(&w[1], b));
    let read_kind = [
        "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN",
    ]
    .contains(&first.as_str());
    if read_kind && !pair("INTO", "OUTFILE") && !pair("PARALLEL", "WITH") {
        Server::Read
    } else {
        Server::Other
    }
}

#[test]
fn the_classifier_agrees_with_clickhouse() {
    let mut wrong = Vec::new();
    for (text, want) in CORPUS {
        let got = ours(text);
        if got != *want {
            wrong.push(format!(
                "{:?}: we answer {got:?}, the corpus wants {want:?}",
                String::from_utf8_lossy(text)
            ));
        }
    }

    let texts: Vec<&[u8]> = CORPUS.iter().map(|(t, _)| *t).collect();
    let Some((version, answers)) = clickhouse(&texts) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no python3 with chdb: the ClickHouse half of this test cannot run"
        );
        eprintln!(
            "NOTICE: python3 with chdb is missing: only the corpus's own answers were checked"
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        return;
    };
    let (mut reads, mut inserts) = (0, 0);
    for (text, answer) in texts.iter().zip(&answers) {
        let got = ours(text);
        let theirs = server(answer);
        let shown = String::from_utf8_lossy(text);
        println!(
            "{shown:?}\n    ours: {got:?}; ClickHouse: {theirs:?}: {}",
            match answer {
                Ok(f) => String::from_utf8_lossy(f).into_owned(),
                Err(e) => e.clone(),
            }
        );
        match (&got, &theirs) {
            (Read, Server::Read) => reads += 1,
            (Read, _) => wrong.push(format!(
                "{shown:?}: a read to us, to ClickHouse {theirs:?} ({answer:?})"
            )),
            (Insert(db, table), Server::Insert(Some((their_db, their_table)))) => {
                inserts += 1;
                if db.map(str::to_string) != *their_db || table != their_table {
                    wrong.push(format!(
                        "{shown:?}: an INSERT into {db:?}.{table:?} to us, \
                         into {their_db:?}.{their_table:?} to ClickHouse"
                    ));
                }
            }
            (Insert(..), _) => wrong.push(format!(
                "{shown:?}: an INSERT to us, to ClickHouse {theirs:?} ({answer:?})"
            )),
            _ => {}
        }
    }
    println!(
        "{} texts against ClickHouse {version} (chdb): {reads} reads and {inserts} INSERTs \
         agreed on, the others are not reads to us",
        texts.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The fuzz target's properties (`fuzz/fuzz_targets/query_classifier.rs`)
/// on the corpus and on mutations of it, so they hold without a fuzz run:
/// comments before a text change nothing (an INSERT's data moves by their
/// length), a comment after it does not change whether it is a read, and a
/// read still starts with a read's word once its comments are stripped.
#[test]
fn comments_around_a_text_change_nothing() {
    use ch_ingest_protocol::query::{first_word, strip_comments};
    const PIECES: [&[u8]; 24] = [
        b"/*",
        b"*/",
        b"--",
        b"#",
        b"# ",
        b"#!",
        b"//",
        b"'",
        b"\"",
        b"`",
        b"\\",
        b"$",
        b"$$",
        b"$a$",
        b";",
        b"\n",
        b" ",
        b"\xC2\xA0",
        b"\xEF\xBB\xBF",
        b"x'",
        b"1e",
        b".",
        b"INSERT",
        b"SELECT",
    ];
    let check = |text: &[u8]| {
        let got = parse(text);
        if let Ok(Statement::Read) = got {
            let stripped = strip_comments(text).expect("a read lexes");
            let word = first_word(&stripped).expect("a read starts with a word");
            assert!(
                ["SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXISTS", "EXPLAIN"]
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&word)),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        for prefix in [
            &b"/* x */ "[..],
            b"/* a /* b */ c */\n",
            b"-- c\n",
            b"\xEF\xBB\xBF",
        ] {
            let after = parse(&[prefix, text].concat());
            let same = match (&got, &after) {
                (Ok(Statement::Insert(a)), Ok(Statement::Insert(b))) => {
                    let mut a = a.clone();
                    a.data_start += prefix.len();
                    a == *b
                }
                (Ok(a), Ok(b)) => a == b,
                (Err(_), Err(_)) => true,
                _ => false,
            };
            assert!(
                same,
                "{:?}: {got:?}, after {:?}: {after:?}",
                String::from_utf8_lossy(text),
                String::from_utf8_lossy(prefix)
            );
        }
        if !matches!(got, Ok(Statement::Insert(_))) {
            let after = parse(&[text, b"\n/* z /* y */ */"].concat());
            assert_eq!(
                matches!(got, Ok(Statement::Read)),
                matches!(after, Ok(Statement::Read)),
                "{:?}: {got:?}, with a comment after it: {after:?}",
                String::from_utf8_lossy(text)
            );
        }
    };
    // A fixed xorshift: the same mutations every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for (text, _) in CORPUS {
        check(text);
        for _ in 0..200 {
            let mut t = text.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(t.len() + 1);
                match next(3) {
                    0 => {
                        let piece = PIECES[next(PIECES.len())];
                        t.splice(at..at, piece.iter().copied());
                    }
                    1 if at < t.len() => {
                        t.remove(at);
                    }
                    _ => t.truncate(at),
                }
            }
            check(&t);
        }
    }
}
