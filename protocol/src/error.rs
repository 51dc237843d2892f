//! The errors a ClickHouse client understands: ClickHouse's own codes, and
//! the HTTP status ClickHouse answers each with.
//!
//! Owns: the codes the front door answers with, their names and statuses,
//! and reading a code out of ClickHouse's own error text. Must not: put a
//! credential or a row's content in a message.

/// The ClickHouse error codes we answer with (numbers and names are
/// ClickHouse's, from `ErrorCodes.cpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    NoSuchColumnInTable = 16,
    CannotParseInput = 27,
    BadArguments = 36,
    ChecksumDoesntMatch = 40,
    NotImplemented = 48,
    UnknownTable = 60,
    SyntaxError = 62,
    UnknownFormat = 73,
    NotSuitableForInput = 85,
    IncorrectData = 117,
    TimeoutExceeded = 159,
    ReadOnly = 164,
    UnknownUser = 192,
    IpAddressNotAllowed = 195,
    WrongPassword = 193,
    AccessDenied = 497,
    TooManySimultaneousQueries = 202,
    CannotDecompress = 271,
    QueryIsTooLarge = 393,
    /// An error with no closer code (an INSERT's failure at ClickHouse
    /// carries ClickHouse's own code instead).
    Unknown = 1000,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::NoSuchColumnInTable => "NO_SUCH_COLUMN_IN_TABLE",
            Code::CannotParseInput => "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            Code::BadArguments => "BAD_ARGUMENTS",
            Code::ChecksumDoesntMatch => "CHECKSUM_DOESNT_MATCH",
            Code::NotImplemented => "NOT_IMPLEMENTED",
            Code::UnknownTable => "UNKNOWN_TABLE",
            Code::SyntaxError => "SYNTAX_ERROR",
            Code::UnknownFormat => "UNKNOWN_FORMAT",
            Code::NotSuitableForInput => "FORMAT_IS_NOT_SUITABLE_FOR_INPUT",
            Code::IncorrectData => "INCORRECT_DATA",
            Code::TimeoutExceeded => "TIMEOUT_EXCEEDED",
            Code::ReadOnly => "READONLY",
            Code::UnknownUser => "UNKNOWN_USER",
            Code::IpAddressNotAllowed => "IP_ADDRESS_NOT_ALLOWED",
            Code::WrongPassword => "WRONG_PASSWORD",
            Code::AccessDenied => "ACCESS_DENIED",
            Code::TooManySimultaneousQueries => "TOO_MANY_SIMULTANEOUS_QUERIES",
            Code::CannotDecompress => "CANNOT_DECOMPRESS",
            Code::QueryIsTooLarge => "QUERY_IS_TOO_LARGE",
            Code::Unknown => "POCO_EXCEPTION",
        }
    }

    /// ClickHouse's HTTP status for the code (`exceptionCodeToHTTPStatus`).
    pub fn status(self) -> u16 {
        match self {
            Code::UnknownUser | Code::WrongPassword => 401,
            Code::ReadOnly | Code::AccessDenied | Code::IpAddressNotAllowed => 403,
            Code::CannotParseInput
            | Code::BadArguments
            | Code::SyntaxError
            | Code::IncorrectData
            | Code::CannotDecompress
            | Code::ChecksumDoesntMatch => 400,
            Code::UnknownTable | Code::UnknownFormat | Code::NoSuchColumnInTable => 404,
            Code::QueryIsTooLarge => 413,
            Code::NotImplemented => 501,
            Code::TooManySimultaneousQueries => 503,
            Code::TimeoutExceeded => 408,
            Code::Unknown | Code::NotSuitableForInput => 500,
        }
    }
}

/// An error answer: ClickHouse's code, its name when we know it, the HTTP
/// status and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Code: {code}. DB::Exception: {message}")]
pub struct ChError {
    pub code: u32,
    pub name: &'static str,
    pub status: u16,
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

    /// ClickHouse's own error, passed on as it came (code and text); the
    /// status is ClickHouse's for the code, 500 when it is not one of ours.
    pub fn from_server(code: Option<u32>, message: &str) -> Self {
        // The server's text already reads `Code: N. DB::Exception: ...`
        // (or 18.16's `Code: N, e.displayText() = DB::Exception: ...`).
        let text = message
            .split_once("DB::Exception: ")
            .map_or(message, |(_, rest)| rest)
            .trim_end();
        let status = match code {
            Some(60 | 81 | 16 | 73) => 404,
            Some(27 | 36 | 62 | 117 | 6 | 26 | 33 | 38 | 41 | 53 | 70 | 72) => 400,
            Some(192..=194 | 516) => 401,
            Some(164 | 497) => 403,
            _ => 500,
        };
        ChError {
            code: code.unwrap_or(Code::Unknown as u32),
            name: "",
            status,
            message: text.to_string(),
        }
    }

    /// The code at the start of ClickHouse's error text (`Code: 193, ...`
    /// or `Code: 193. ...`).
    pub fn code_in(text: &str) -> Option<u32> {
        text.strip_prefix("Code: ")?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}
