//! Where sealed batches go.
//!
//! Owns: the [`Sink`] trait, its error type, and the three sinks we ship:
//! [`ClickHouseSink`] (HTTP INSERTs), [`FileSink`] (RowBinary files, no server
//! needed) and [`MemorySink`] (keeps batches, for tests). Must not: buffer,
//! retry or reorder: the coordinator decides what to send and when, a sink only
//! delivers one [`InsertBatch`] and says how it went. The one reordering a
//! sink may do is inside an INSERT, for the server's sake
//! ([`InsertOrder`]), once before its first attempt ([`Sink::prepare`]).

mod clickhouse;
mod client;
mod cluster;
mod codes;
pub(crate) mod deadline;
mod dedup_window;
mod file;
mod memory;
pub(crate) mod shape;
mod sharding;
pub mod sql;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub use self::clickhouse::{ClickHouseSink, NoUrls, TryTimeout};
pub(crate) use self::client::fetch_text;
pub use self::client::nodelay_client;
pub use self::cluster::{
    ClusterError, ClusterShard, ClusterSink, Discovery, DiscoveryError, Topology,
};
pub use self::file::FileSink;
pub use self::memory::MemorySink;
pub use self::shape::{native_block, InsertFormat, InsertOrder, ShapeParseError};
pub(crate) use self::sql::{insert_sql, quote_literal, quote_table};
#[cfg(feature = "tls")]
pub(crate) use self::tls::CertificateError;
#[cfg(feature = "tls")]
pub use self::tls::{Tls, TlsConnector, TlsError, TlsStream};
pub use self::transport::IDLE_CLOSE;
pub use crate::batch::InsertBatch;

use std::future::Future;

/// A destination for RowBinary batches.
///
/// `insert` is called with at most `max_inflight` batches at once. It must
/// either store the whole batch and return `Ok`, or return an error; a batch
/// may be offered again after an error, with the same bytes.
///
/// A sink that wraps another (to time it, count it, watch its health) must
/// forward every method the inner sink overrides, not only `insert`: the
/// defaults are those of a plain destination, so a wrapper that leaves out
/// [`insert_shape`](Sink::insert_shape) and [`prepare`](Sink::prepare)
/// sends its rows unsorted, as RowBinary, whatever the builder asked for.
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

    /// How many independent destinations this sink spreads INSERTs over by
    /// their identity (a cluster's shards); 1 (the default) for a sink with
    /// one destination. The coordinator keeps `max_inflight` slots per
    /// lane, so a destination that is down holds only its own INSERTs.
    fn lanes(&self) -> usize {
        1
    }

    /// The lane (below [`lanes`](Sink::lanes)) that takes the INSERT whose
    /// [`origin`](InsertBatch::origin) and [`id`](InsertBatch::id) these
    /// are. Must be the same on every call for the same pair.
    fn lane(&self, origin: u64, id: u64) -> usize {
        let _ = (origin, id);
        0
    }

    /// Told once, when an engine is built over this sink, how long it may
    /// keep offering one INSERT (the retry policy's `max_elapsed` plus one
    /// `insert_timeout`; a spilled INSERT is replayed later still). A sink
    /// whose exactly-once rests on the server remembering blocks that long
    /// may check it and warn. Default: nothing.
    ///
    /// A sink that wraps another should forward `lanes`, `lane`,
    /// `destination`, `insert_shape`, `prepare` and this.
    fn retry_horizon(&self, horizon: std::time::Duration) {
        let _ = horizon;
    }

    /// The servers that may hold a copy of `batch` after a failed try (a
    /// cluster shard's replicas, credentials removed), recorded in its
    /// spill file: a replay offers it there again
    /// ([`InsertBatch::recorded_destination`]), even if the sink's
    /// topology changed meanwhile. Default: none (one destination).
    fn destination(&self, batch: &InsertBatch) -> Option<Vec<String>> {
        let _ = batch;
        None
    }

    /// Told once, when an engine is built over this sink, the shape its
    /// INSERTs should have ([`Builder::insert_order`](crate::Builder::insert_order),
    /// [`Builder::insert_format`](crate::Builder::insert_format)). Sinks that
    /// cannot use it ignore it (the default).
    fn insert_shape(&self, order: &InsertOrder, format: InsertFormat) {
        let _ = (order, format);
    }

    /// Called once per INSERT, before its first attempt, off the
    /// coordinator's task: may return the same rows in another order (the
    /// table's key, see [`InsertOrder`]). What it returns is what every
    /// attempt, spill and replay of this INSERT carries, so it must be the
    /// same for the same input. Default: the INSERT as it is.
    fn prepare(
        &self,
        batch: std::sync::Arc<InsertBatch>,
    ) -> impl Future<Output = std::sync::Arc<InsertBatch>> + Send {
        std::future::ready(batch)
    }
}

impl<S: Sink> Sink for std::sync::Arc<S> {
    fn insert(&self, batch: &InsertBatch) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).insert(batch)
    }

    fn table(&self) -> Option<&str> {
        (**self).table()
    }

    fn lanes(&self) -> usize {
        (**self).lanes()
    }

    fn lane(&self, origin: u64, id: u64) -> usize {
        (**self).lane(origin, id)
    }

    fn retry_horizon(&self, horizon: std::time::Duration) {
        (**self).retry_horizon(horizon)
    }

    fn destination(&self, batch: &InsertBatch) -> Option<Vec<String>> {
        (**self).destination(batch)
    }

    fn insert_shape(&self, order: &InsertOrder, format: InsertFormat) {
        (**self).insert_shape(order, format)
    }

    fn prepare(
        &self,
        batch: std::sync::Arc<InsertBatch>,
    ) -> impl Future<Output = std::sync::Arc<InsertBatch>> + Send {
        (**self).prepare(batch)
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
    /// The TLS handshake failed over a certificate: the server's, refused
    /// by our checks (an unknown CA, a name it is not valid for, expired),
    /// or ours, refused by the server. Retried like a network error (a
    /// server mid-rotation heals), and counted apart in
    /// [`Stats::certificate_errors`](crate::Stats::certificate_errors), so
    /// that a wrong CA shows at once.
    #[error("TLS certificate refused with {host}: {reason}")]
    Certificate {
        /// The host we were connecting to.
        host: String,
        /// Why, in rustls's words (`UnknownIssuer`, `NotValidForName`,
        /// `Expired`, or the server's alert).
        reason: String,
    },
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
    /// Whether sending the same batch again may succeed: network errors,
    /// time-outs, and the server codes the sink's code table calls
    /// transient (overload, a replica without ZooKeeper, a server shutting
    /// down, an unknown insert status; the table gives each code's name and
    /// reason). Unknown tables, type mismatches, syntax, authentication,
    /// `READONLY` and codes the table does not know are permanent.
    ///
    /// An error without a code did not come from ClickHouse (whose errors
    /// always carry one) but from a proxy or load balancer: its HTTP status,
    /// when the text gives one, decides (502, 503, 504, 408 and 429 are
    /// worth another try, any other 4xx, e.g. a proxy's 413 for a body over
    /// its limit, is not); without a status it is retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Network(_) | SinkError::Certificate { .. } | SinkError::Timeout => true,
            SinkError::Server {
                code: Some(code), ..
            } => codes::lookup(*code).is_some_and(|c| c.class == codes::Class::Transient),
            SinkError::Server {
                code: None,
                message,
            } => match http_status(message) {
                Some(status) => status >= 500 || status == 408 || status == 429,
                None => true,
            },
            SinkError::Io { .. } => true,
            SinkError::Other(_) => false,
        }
    }

    /// ClickHouse's name for the error code (`TOO_MANY_PARTS`), when the
    /// sink's code table knows it.
    pub fn code_name(&self) -> Option<&'static str> {
        match self {
            SinkError::Server {
                code: Some(code), ..
            } => codes::lookup(*code).map(|c| c.name),
            _ => None,
        }
    }

    /// Why the sink's code table puts this error's code in its class, for logs.
    pub(crate) fn code_reason(&self) -> Option<&'static str> {
        match self {
            SinkError::Server {
                code: Some(code), ..
            } => codes::lookup(*code).map(|c| c.why),
            _ => None,
        }
    }

    /// Whether the server says the table is not what the writer thinks
    /// (a column or the table is gone, a type changed): the schema should
    /// be read again. Always permanent.
    pub fn is_schema_error(&self) -> bool {
        matches!(self, SinkError::Server { code: Some(code), .. }
            if codes::lookup(*code).is_some_and(|c| c.class == codes::Class::Schema))
    }

    pub(crate) fn from_io(e: std::io::Error) -> Self {
        SinkError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// The HTTP status a code-less error names: the crate reports an empty
/// error body as `"413 Payload Too Large"`, and proxies put it in their
/// page (`<title>413 Request Entity Too Large</title>`, `<h1>503 ...`). The
/// first three-digit number from 400 to 599 standing alone in the first
/// 512 bytes.
fn http_status(message: &str) -> Option<u16> {
    let head = &message.as_bytes()[..message.len().min(512)];
    head.windows(5)
        .enumerate()
        .find_map(|(i, w)| {
            let alone_before = i == 0 || !head[i - 1].is_ascii_alphanumeric();
            let digits = w[..3].iter().all(u8::is_ascii_digit);
            let alone_after = !w[3].is_ascii_alphanumeric();
            if !(alone_before && digits && alone_after) {
                return None;
            }
            let n = (w[0] - b'0') as u16 * 100 + (w[1] - b'0') as u16 * 10 + (w[2] - b'0') as u16;
            (400..600).contains(&n).then_some(n)
        })
        .or_else(|| {
            // A message that is exactly "NNN" or ends right after the digits.
            let tail = head.len().checked_sub(3)?;
            let w = &head[tail..];
            let alone = tail == 0 || !head[tail - 1].is_ascii_alphanumeric();
            (alone && w.iter().all(u8::is_ascii_digit))
                .then(|| {
                    (w[0] - b'0') as u16 * 100 + (w[1] - b'0') as u16 * 10 + (w[2] - b'0') as u16
                })
                .filter(|n| (400..600).contains(n))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for (code, retry) in [
            (394, true),
            (319, true),
            (225, true),
            (285, true),
            (439, true),
            (164, false),
            (60, false),
            (99_999, false),
        ] {
            assert_eq!(s(code).is_retryable(), retry, "code {code}");
        }
        assert!(s(60).is_schema_error() && !s(252).is_schema_error());
    }

    #[test]
    fn code_less_errors_go_by_the_http_status_in_their_text() {
        let m = |text: &str| SinkError::Server {
            code: None,
            message: text.into(),
        };
        assert!(!m("413 Payload Too Large").is_retryable());
        assert!(
            !m("<html><head><title>413 Request Entity Too Large</title></head></html>")
                .is_retryable()
        );
        assert!(!m("400 Bad Request").is_retryable());
        assert!(!m("403").is_retryable());
        assert!(m("502 Bad Gateway").is_retryable());
        assert!(m("<html><body><h1>503 Service Unavailable</h1></body></html>").is_retryable());
        assert!(m("429 Too Many Requests").is_retryable());
        assert!(m("408 Request Timeout").is_retryable());
        assert!(m("upstream connect error or disconnect/reset before headers").is_retryable());
        // Numbers that are not a status do not count.
        assert!(m("error 4130 in x4131").is_retryable());
    }
}
