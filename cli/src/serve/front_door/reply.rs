//! Answers in ClickHouse's own shape, so a ClickHouse client parses them as
//! if the server had sent them: errors as `Code: N. DB::Exception: ...`
//! with `X-ClickHouse-Exception-Code` and the HTTP status ClickHouse gives
//! that code; successes with `X-ClickHouse-Summary`.
//!
//! Owns: the error codes the front door answers with and their statuses.
//! Must not: put a credential or a row's content in an answer.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The ClickHouse error codes the front door answers with (the numbers and
/// names are ClickHouse's, from `ErrorCodes.cpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    CannotParseInput = 27,
    NotImplemented = 48,
    UnknownTable = 60,
    SyntaxError = 62,
    UnknownFormat = 73,
    IncorrectData = 117,
    ReadOnly = 164,
    UnknownUser = 192,
    TooManySimultaneousQueries = 202,
    CannotDecompress = 271,
    ChecksumDoesntMatch = 40,
    QueryIsTooLarge = 393,
    NoSuchColumnInTable = 16,
    TimeoutExceeded = 159,
    /// An error with no closer code (the INSERT's failure at ClickHouse
    /// carries ClickHouse's own code instead).
    Unknown = 1000,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::CannotParseInput => "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            Code::NotImplemented => "NOT_IMPLEMENTED",
            Code::UnknownTable => "UNKNOWN_TABLE",
            Code::SyntaxError => "SYNTAX_ERROR",
            Code::UnknownFormat => "UNKNOWN_FORMAT",
            Code::IncorrectData => "INCORRECT_DATA",
            Code::ReadOnly => "READONLY",
            Code::UnknownUser => "UNKNOWN_USER",
            Code::TooManySimultaneousQueries => "TOO_MANY_SIMULTANEOUS_QUERIES",
            Code::CannotDecompress => "CANNOT_DECOMPRESS",
            Code::ChecksumDoesntMatch => "CHECKSUM_DOESNT_MATCH",
            Code::QueryIsTooLarge => "QUERY_IS_TOO_LARGE",
            Code::NoSuchColumnInTable => "NO_SUCH_COLUMN_IN_TABLE",
            Code::TimeoutExceeded => "TIMEOUT_EXCEEDED",
            Code::Unknown => "POCO_EXCEPTION",
        }
    }

    /// ClickHouse's HTTP status for the code (`exceptionCodeToHTTPStatus`).
    fn status(self) -> StatusCode {
        match self {
            Code::UnknownUser => StatusCode::UNAUTHORIZED,
            Code::ReadOnly => StatusCode::FORBIDDEN,
            Code::CannotParseInput
            | Code::SyntaxError
            | Code::IncorrectData
            | Code::CannotDecompress
            | Code::ChecksumDoesntMatch => StatusCode::BAD_REQUEST,
            Code::UnknownTable | Code::UnknownFormat | Code::NoSuchColumnInTable => {
                StatusCode::NOT_FOUND
            }
            Code::QueryIsTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Code::TooManySimultaneousQueries => StatusCode::SERVICE_UNAVAILABLE,
            Code::TimeoutExceeded => StatusCode::REQUEST_TIMEOUT,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChError {
    pub code: u32,
    pub name: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl ChError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ChError {
            code: code as u32,
            name: code.name(),
            status: code.status(),
            message: message.into(),
        }
    }

    /// ClickHouse's own error for an INSERT it refused, passed on as it
    /// came (code and text); 500 unless the code says otherwise.
    pub fn from_server(code: Option<u32>, message: &str) -> Self {
        // The server's text already reads `Code: N. DB::Exception: ...`
        // (or 18.16's `Code: N, e.displayText() = ...`): keep what follows
        // the exception marker.
        let text = message
            .split_once("DB::Exception: ")
            .map_or(message, |(_, rest)| rest)
            .trim_end();
        let status = match code {
            Some(60 | 81 | 16 | 73) => StatusCode::NOT_FOUND,
            Some(27 | 62 | 117 | 6 | 26 | 33 | 38 | 41 | 53 | 70 | 72) => StatusCode::BAD_REQUEST,
            Some(192..=194 | 516) => StatusCode::UNAUTHORIZED,
            Some(164 | 497) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ChError {
            code: code.unwrap_or(Code::Unknown as u32),
            name: "",
            status,
            message: text.to_string(),
        }
    }
}

impl IntoResponse for ChError {
    fn into_response(self) -> Response {
        let name = if self.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.name)
        };
        let body = format!(
            "Code: {}. DB::Exception: {}{name} (version ch-ingest {})\n",
            self.code,
            self.message,
            env!("CARGO_PKG_VERSION")
        );
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert("X-ClickHouse-Exception-Code", HeaderValue::from(self.code));
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        r
    }
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

/// The answer to an accepted INSERT: 200, an empty body, and the summary
/// ClickHouse sends (its counters are strings, as ClickHouse writes them),
/// plus how far the rows got.
pub fn inserted(rows: u64, bytes: u64, skipped: u64, ack: Ack, query_id: &str) -> Response {
    let ack = match ack {
        Ack::Buffered => "buffered",
        Ack::Stored => "stored",
        Ack::Spilled => "spilled",
    };
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
