//! The query classifier (`ch_ingest_protocol::query::parse`) on arbitrary
//! bytes: it never panics; what it calls a read still starts with a read's
//! word once its own lexer strips every comment; an INSERT's data starts
//! inside the text; and comments around the text (nested or not) change
//! nothing: the same statement after a comment before it (the INSERT's
//! data moved by its length), the same read or not with one after it.
#![no_main]

use ch_ingest_protocol::query::{first_word, parse, strip_comments, Statement, SyntaxError};
use libfuzzer_sys::fuzz_target;

const READS: [&str; 7] = [
    "SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXISTS", "EXPLAIN",
];

/// The same answer, an INSERT's data `shift` bytes later.
fn same(
    a: &Result<Statement, SyntaxError>,
    b: &Result<Statement, SyntaxError>,
    shift: usize,
) -> bool {
    match (a, b) {
        (Ok(Statement::Insert(a)), Ok(Statement::Insert(b))) => {
            let mut a = a.clone();
            a.data_start += shift;
            a == *b
        }
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let got = parse(data);
    match &got {
        Ok(Statement::Read) => {
            let stripped = strip_comments(data).expect("a read lexes");
            let word = first_word(&stripped).expect("a read starts with a word");
            assert!(
                READS.iter().any(|r| r.eq_ignore_ascii_case(&word)),
                "a read that starts with {word:?}"
            );
        }
        Ok(Statement::Insert(i)) => {
            assert!(i.data_start <= data.len());
            assert!(!i.table.is_empty());
        }
        _ => {}
    }
    for prefix in [
        &b"/* x */ "[..],
        b"/* a /* b */ c */\n",
        b"-- c\n",
        b"# c\n",
        b"\xEF\xBB\xBF",
    ] {
        let text = [prefix, data].concat();
        let after = parse(&text);
        assert!(
            same(&got, &after, prefix.len()),
            "{got:?} becomes {after:?} after {:?}",
            String::from_utf8_lossy(prefix)
        );
    }
    // An INSERT's data would take a comment after it in. Compared with the
    // text ended by the same newline: as in ClickHouse's lexer, the end of
    // the text itself changes a token (`5.e` is a wrong number at the very
    // end, `5.e` and an empty exponent before a newline).
    if !matches!(got, Ok(Statement::Insert(_))) {
        let ended = parse(&[data, b"\n"].concat());
        let text = [data, b"\n/* z /* y */ */"].concat();
        let after = parse(&text);
        assert_eq!(
            matches!(ended, Ok(Statement::Read)),
            matches!(after, Ok(Statement::Read)),
            "{ended:?} becomes {after:?} with a comment after it"
        );
    }
});
