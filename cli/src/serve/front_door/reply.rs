//! Answers in ClickHouse's own shape, so a ClickHouse client parses them as
//! if the server had sent them: errors as `Code: N. DB::Exception: ...`
//! with `X-ClickHouse-Exception-Code` and the HTTP status ClickHouse gives
//! that code; successes with `X-ClickHouse-Summary`.
//!
//! Owns: the HTTP shape of answers (the codes, names and statuses are the
//! protocol crate's `ChError`). Must not: put a credential or a row's
//! content in an answer.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ch_ingest_protocol::ChError;

/// An error, as ClickHouse words it: `Code: N. DB::Exception: ... (NAME)
/// (version ...)`, `X-ClickHouse-Exception-Code`, ClickHouse's status.
pub fn error(e: ChError) -> Response {
    let name = if e.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.name)
    };
    let body = format!(
        "Code: {}. DB::Exception: {}{name} (version ch-ingest {})\n",
        e.code,
        e.message,
        env!("CARGO_PKG_VERSION")
    );
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body).into_response();
    {
        let h = r.headers_mut();
        h.insert("X-ClickHouse-Exception-Code", HeaderValue::from(e.code));
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // As ClickHouse: a browser or client that waits for the
            // challenge before it sends basic-auth credentials gets one.
            h.insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ClickHouse server HTTP API\""),
            );
        }
    }
    r
}

/// How far an accepted INSERT's rows got before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// In ch-ingest's buffer (`wait_for_async_insert=0`).
    Buffered,
    /// Acknowledged by ClickHouse.
    Stored,
    /// Written to the table's spill directory after ClickHouse stayed
    /// unreachable; replayed from there.
    Spilled,
}

impl Ack {
    /// The word for it in the answer's summary and the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Ack::Buffered => "buffered",
            Ack::Stored => "stored",
            Ack::Spilled => "spilled",
        }
    }
}

/// The answer to an accepted INSERT: 200, an empty body, and the summary
/// ClickHouse sends (its counters are strings, as ClickHouse writes them),
/// plus how far the rows got.
pub fn inserted(rows: u64, bytes: u64, skipped: u64, ack: Ack, query_id: &str) -> Response {
    let ack = ack.label();
    let summary = format!(
        "{{\"read_rows\":\"0\",\"read_bytes\":\"0\",\"written_rows\":\"{rows}\",\
         \"written_bytes\":\"{bytes}\",\"total_rows_to_read\":\"0\",\
         \"result_rows\":\"{rows}\",\"result_bytes\":\"{bytes}\",\
         \"skipped_rows\":\"{skipped}\",\"ch_ingest_ack\":\"{ack}\"}}"
    );
    let mut r = (StatusCode::OK, "").into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&summary) {
        h.insert("X-ClickHouse-Summary", v);
    }
    if let Ok(v) = HeaderValue::from_str(query_id) {
        h.insert("X-ClickHouse-Query-Id", v);
    }
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}
