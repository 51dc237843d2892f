//! The accept loop: TCP connections in, HTTP/1.1 to the router.
//!
//! Owns what a connection may cost before a handler sees a request: at most
//! `max_connections` open at once (more wait in the kernel's backlog), and
//! `header_timeout` to send a request's headers (also how long a keep-alive
//! connection may sit idle), so a client trickling headers or holding idle
//! sockets cannot use up file descriptors. On stop it closes the listener
//! and lets open connections finish their request.
//! Must not: look at requests (that is `http`), or decide when to drain.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The address a connection came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// What one connection may hold.
pub struct ConnLimits {
    /// Connections open at once; the next accept waits for one to close.
    pub max_connections: usize,
    /// Time to send a request's headers, counted from the end of the
    /// previous response on a keep-alive connection.
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then waits for
/// the connections still open to finish the request they are on.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    tls: Option<Arc<super::listener_tls::Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed; no connection could run anyway
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory, or the peer gave up
                    // before we got to it: none of it is the listener's
                    // end, and retrying at once would spin.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = stream;
        // Small answers go out at once, not after a delayed ACK.
        let _ = stream.set_nodelay(true);
        // The peer's address, for the front door's allow-list.
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer.ip()))));
        let http = http.clone();
        let watcher = graceful.watcher();
        // The handshake of the configuration of this moment (a reload
        // changes the next ones), bounded like the headers are.
        let handshake = tls.as_ref().map(|t| t.acceptor());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let ended = match handshake {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(tls), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = ended {
                // A client that hung up or was too slow with its headers;
                // nothing the operator has to act on.
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
