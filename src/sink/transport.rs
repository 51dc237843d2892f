//! The connections every client of ours to ClickHouse goes through:
//! `TCP_NODELAY`, keep-alive, a bounded connect, and kept-alive
//! connections closed before a server would close them.
//!
//! Owns: the plain TCP connector and the pooled HTTP client over any
//! connector. Must not: know TLS (the `tls` module wraps this connector),
//! SQL, or the crate's errors.

use clickhouse::Client;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The TCP connector every client of ours starts from: `TCP_NODELAY`,
/// keep-alive, a bounded connect.
pub(crate) fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    // A server behind a dropped route never answers the SYN; without a bound
    // the connect waits for the kernel's retries (minutes).
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector
}

/// A `clickhouse::Client` over `connector`, its kept-alive connections
/// closed after [`IDLE_CLOSE`] by a timer (without one, hyper only drops
/// a stale connection when it next picks it, which leaves it open on the
/// server for as long as we send nothing).
pub(crate) fn client_over<C>(connector: C) -> Client
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let http = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_CLOSE)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector);
    Client::with_http_client(http)
}

/// How long a kept-alive connection may sit idle before we close it:
/// below the 3 s keep-alive of older servers, so we never reuse a socket
/// the server is closing, and well below the 10 s after which ClickHouse
/// Cloud closes idle connections. hyper's reaper looks every
/// `IDLE_CLOSE`, so a connection is closed 2.5-5 s after its last answer
/// (measured with the test proxy in tests/tls.rs: 4.9 s).
pub const IDLE_CLOSE: Duration = Duration::from_millis(2_500);

/// `nodelay_client`'s bound on opening a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
