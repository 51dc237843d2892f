//! The SQL the sinks send: identifier quoting and the INSERT statement,
//! public for tools that write SQL beside a sink (the CLI's load and bench
//! commands, the front door's checks).
//!
//! ```
//! use ch_ingest::sink::sql::{insert_sql, quote_table};
//! assert_eq!(quote_table("db.odd`name"), "`db`.`odd\\`name`");
//! assert_eq!(insert_sql("t", &["a", "b"]), "INSERT INTO `t` (`a`, `b`) FORMAT RowBinary");
//! ```
//!
//! Owns: quoting names so none can close its quote and splice SQL, and the
//! `INSERT INTO t (cols) FORMAT RowBinary` every sink and dead letter uses.
//! Must not: build any other statement (the metadata queries quote their
//! values with [`quote_literal`]).

/// Quotes a ClickHouse identifier with backticks, escaping what needs it, so a
/// name can never close the quote and splice SQL.
pub fn quote_ident(name: &str) -> String {
    quote_with('`', name)
}

/// A ClickHouse string literal: `'...'` with quotes and backslashes escaped.
pub fn quote_literal(value: &str) -> String {
    quote_with('\'', value)
}

fn quote_with(quote: char, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        if c == quote || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
    out
}

/// Quotes `db.table` or `table`: a dot separates the database from the table.
pub fn quote_table(table: &str) -> String {
    match table.split_once('.') {
        Some((db, t)) => format!("{}.{}", quote_ident(db), quote_ident(t)),
        None => quote_ident(table),
    }
}

/// `database = ... AND name = ...` picking `table` (`db.table`, or
/// `table` in the current database) out of `system.tables`.
pub(crate) fn system_tables_filter(table: &str) -> String {
    let (db, name) = match table.split_once('.') {
        Some((db, name)) => (quote_literal(db), quote_literal(name)),
        None => ("currentDatabase()".to_string(), quote_literal(table)),
    };
    format!("database = {db} AND name = {name}")
}

/// `INSERT INTO table (c1, c2) FORMAT RowBinary`, every name quoted.
pub fn insert_sql(table: &str, columns: &[impl AsRef<str>]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c.as_ref())).collect();
    format!(
        "INSERT INTO {} ({}) FORMAT RowBinary",
        quote_table(table),
        cols.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_cannot_escape_quotes() {
        assert_eq!(quote_ident("a`b"), "`a\\`b`");
        assert_eq!(quote_ident("x\\"), "`x\\\\`");
        assert_eq!(quote_table("db.t"), "`db`.`t`");
        assert_eq!(quote_literal("it's \\"), "'it\\'s \\\\'");
        assert_eq!(
            insert_sql("t", &["a", "b"]),
            "INSERT INTO `t` (`a`, `b`) FORMAT RowBinary"
        );
    }
}
