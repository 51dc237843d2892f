//! Where sealed batches go.
//!
//! Owns: the [`Sink`] trait, its error type, and the three sinks we ship:
//! [`ClickHouseSink`] (HTTP INSERTs), [`FileSink`] (RowBinary files, no server
//! needed) and [`MemorySink`] (keeps batches, for tests). Must not: buffer,
//! retry or reorder: the coordinator decides what to send and when, a sink only
//! delivers one [`InsertBatch`] and says how it went.

mod clickhouse;
mod file;
mod memory;

pub(crate) use self::clickhouse::map_error as clickhouse_error;
pub use self::clickhouse::{nodelay_client, ClickHouseSink};
pub use self::file::FileSink;
pub use self::memory::MemorySink;
pub use crate::batch::InsertBatch;

use std::future::Future;

/// A destination for RowBinary batches.
///
/// `insert` is called with at most `max_inflight` batches at once. It must
/// either store the whole batch and return `Ok`, or return an error; a batch
/// may be offered again after an error, with the same bytes.
///
/// ```
/// use ch_ingest::sink::{InsertBatch, Sink, SinkError};
///
/// /// Counts rows and throws the bytes away.
/// struct Discard;
///
/// impl Sink for Discard {
///     async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
///         let _ = batch.rows();
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Delivers one batch.
    fn insert(&self, batch: &InsertBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The table this sink writes to, if it has one (recorded with dead letters).
    fn table(&self) -> Option<&str> {
        None
    }
}

impl<S: Sink> Sink for std::sync::Arc<S> {
    fn insert(&self, batch: &InsertBatch) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).insert(batch)
    }

    fn table(&self) -> Option<&str> {
        (**self).table()
    }
}

/// Why a sink could not store a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The server answered with an error. `code` is ClickHouse's error code when
    /// the message carries one; `message` is the server's text.
    #[error("ClickHouse error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Server {
        /// ClickHouse error code (`Code: N` in the message), if any.
        code: Option<u32>,
        /// The server's error text.
        message: String,
    },
    /// The connection failed (refused, reset, closed mid-request).
    #[error("network error: {0}")]
    Network(String),
    /// The request did not complete in time.
    #[error("timed out")]
    Timeout,
    /// A local I/O error (file sinks).
    #[error("I/O error ({kind:?}): {message}")]
    Io {
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The error text.
        message: String,
    },
    /// The sink refused the batch for a reason of its own.
    #[error("{0}")]
    Other(String),
}

impl SinkError {
    /// Whether sending the same batch again may succeed (design.md section 6):
    /// network errors, time-outs, and server codes meaning overload or a
    /// transient state. Unknown tables, type mismatches, syntax and auth errors
    /// are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Network(_) | SinkError::Timeout => true,
            SinkError::Server {
                code: Some(code), ..
            } => matches!(
                code,
                // TIMEOUT_EXCEEDED, SOCKET_TIMEOUT, NETWORK_ERROR, MEMORY_LIMIT_EXCEEDED,
                // TOO_MANY_PARTS, TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION,
                // ALL_CONNECTION_TRIES_FAILED, TABLE_IS_READ_ONLY, KEEPER_EXCEPTION,
                // ABORTED, TOO_MANY_PARTS(old), READONLY... (see ClickHouse ErrorCodes.cpp)
                159 | 209 | 210 | 241 | 252 | 202 | 203 | 279 | 242 | 999 | 236 | 425 | 164
            ),
            // A 5xx without a code (proxy, overloaded server) is worth another try.
            SinkError::Server { code: None, .. } => true,
            SinkError::Io { .. } => true,
            SinkError::Other(_) => false,
        }
    }

    pub(crate) fn from_io(e: std::io::Error) -> Self {
        SinkError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Quotes a ClickHouse identifier with backticks, escaping what needs it, so a
/// name can never close the quote and splice SQL.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        match c {
            '`' => out.push_str("\\`"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('`');
    out
}

/// Quotes `db.table` or `table`: a dot separates the database from the table.
pub fn quote_table(table: &str) -> String {
    match table.split_once('.') {
        Some((db, t)) => format!("{}.{}", quote_ident(db), quote_ident(t)),
        None => quote_ident(table),
    }
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
        assert_eq!(
            insert_sql("t", &["a", "b"]),
            "INSERT INTO `t` (`a`, `b`) FORMAT RowBinary"
        );
    }

    #[test]
    fn classification() {
        let s = |code| SinkError::Server {
            code: Some(code),
            message: String::new(),
        };
        assert!(s(252).is_retryable());
        assert!(s(241).is_retryable());
        assert!(!s(60).is_retryable()); // UNKNOWN_TABLE
        assert!(!s(16).is_retryable()); // NO_SUCH_COLUMN_IN_TABLE
        assert!(!s(516).is_retryable()); // AUTHENTICATION_FAILED
        assert!(SinkError::Network("reset".into()).is_retryable());
    }
}
