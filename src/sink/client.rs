//! Talking to ClickHouse over HTTP, below any sink: the tuned client,
//! the one way metadata is read, and the crate's errors as [`SinkError`]s.
//!
//! Owns: [`nodelay_client`], [`fetch_text`], [`map_error`] (certificate
//! refusals named, `Code: N` parsed) and [`log_label`] (a URL as logs may
//! show it). Must not: insert, retry, or hold state.

use super::SinkError;
use clickhouse::Client;

/// A `clickhouse::Client` whose connections set `TCP_NODELAY`; with the
/// `tls` feature it speaks `https://` too, trusting the platform's roots,
/// Mozilla's and `SSL_CERT_FILE`'s (see [`Tls`](super::Tls) for a custom
/// CA or a client certificate).
///
/// The crate's default client leaves Nagle's algorithm on, which delays every
/// small INSERT by up to 40 ms: measured on this project's machine, 500-row
/// INSERTs ran at 35 000 rows/s with the default client and 320 000 rows/s with
/// this one. Use it unless you bring your own tuned transport.
///
/// ```
/// let client = ch_ingest::sink::nodelay_client().with_url("http://127.0.0.1:8123");
/// # let _ = client;
/// ```
pub fn nodelay_client() -> Client {
    #[cfg(feature = "tls")]
    {
        // The default roots cannot fail to load; only a broken
        // `SSL_CERT_FILE` can, and then the bundled and platform roots
        // still serve (the error is logged once per client).
        let tls = super::Tls::new();
        let config = tls.config().or_else(|e| {
            tracing::warn!(error = %e, "SSL_CERT_FILE ignored");
            tls.config_with(false)
        });
        match config {
            Ok(config) => super::transport::client_over(super::tls::connector(config)),
            // Unreachable without a file to read; plain HTTP still works.
            Err(e) => {
                tracing::error!(error = %e, "no TLS configuration; https:// URLs will fail");
                super::transport::client_over(super::transport::tcp_connector())
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    super::transport::client_over(super::transport::tcp_connector())
}

/// Runs a read-only query and returns its `TabSeparatedRaw` text: the one
/// way the engine reads metadata (DESCRIBE, `system.clusters`).
pub(crate) async fn fetch_text(client: &Client, sql: &str) -> Result<String, SinkError> {
    let mut cursor = client
        .clone()
        .with_validation(false)
        .query(sql)
        .fetch_bytes("TabSeparatedRaw")
        .map_err(map_error)?;
    let mut body = Vec::new();
    while let Some(chunk) = cursor.next().await.map_err(map_error)? {
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body)
        .map_err(|e| SinkError::Other(format!("{sql}: the answer is not UTF-8: {e}")))
}

pub(crate) fn map_error(e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error as E;
    match e {
        E::BadResponse(message) => SinkError::Server {
            code: parse_code(&message),
            message,
        },
        E::Network(e) => certificate(&*e).unwrap_or_else(|| SinkError::Network(error_chain(&*e))),
        E::TimedOut => SinkError::Timeout,
        other => SinkError::Other(error_chain(&other)),
    }
}

/// The certificate refusal our TLS connector reported, if that is what
/// failed.
fn certificate(e: &(dyn std::error::Error + 'static)) -> Option<SinkError> {
    #[cfg(feature = "tls")]
    if let Some(c) = super::tls::causes(e).find_map(|e| e.downcast_ref::<super::CertificateError>())
    {
        return Some(SinkError::Certificate {
            host: c.host.clone(),
            reason: c.reason.clone(),
        });
    }
    let _ = e;
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// `Code: 60, e.displayText() = ...` (18.x) or `Code: 60. DB::Exception: ...` (newer).
fn parse_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    digits.parse().ok()
}

/// `url` as it may be logged: no userinfo (everything up to the last `@`
/// goes, which also covers a `/` inside a password) and no query or
/// fragment (ClickHouse takes `?password=`).
pub(crate) fn log_label(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme.is_empty() {
        rest.to_string()
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_secret() {
        for (url, label) in [
            ("http://h:8123", "http://h:8123"),
            ("https://h:8443/", "https://h:8443/"),
            ("http://u:secret@h:8123/", "http://h:8123/"),
            ("http://u:sec/ret@h:8123", "http://h:8123"),
            ("http://h:8123/?user=u&password=secret", "http://h:8123/"),
            ("http://h:8123#secret", "http://h:8123"),
            ("http://h:8123/?password=a@b", "http://h:8123/"),
            ("h:8123", "h:8123"),
        ] {
            assert_eq!(log_label(url), label, "{url}");
        }
    }

    #[test]
    fn parses_codes_of_old_and_new_servers() {
        assert_eq!(
            parse_code("Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist., e.what() = DB::Exception"),
            Some(60)
        );
        assert_eq!(
            parse_code("Code: 252. DB::Exception: Too many parts"),
            Some(252)
        );
        assert_eq!(parse_code("bad gateway"), None);
    }
}
