//! The TLS flags every command that talks to ClickHouse takes
//! (`--ca-cert`, `--client-cert`, `--client-key`), and the client they
//! make. `SSL_CERT_FILE` is honoured as OpenSSL-based tools do.
//!
//! Owns: turning the flags into the library's `sink::Tls`. Must not: skip
//! certificate checks unless the flag whose name says it is dangerous is
//! given (the library logs a warning then).

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// A PEM file of CA certificates to trust for https:// URLs, besides
    /// the platform's, Mozilla's and SSL_CERT_FILE's.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A PEM certificate chain shown to a server that asks (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Accept any certificate a ClickHouse server shows (no CA, name or
    /// date check): anyone on the path can read and change the traffic,
    /// passwords included. For a test server only; prefer --ca-cert.
    #[arg(long)]
    danger_accept_invalid_certs: bool,
}

impl TlsArgs {
    /// The library's TLS settings these flags describe.
    pub fn tls(&self) -> ch_ingest::sink::Tls {
        let mut tls = ch_ingest::sink::Tls::new();
        if let Some(ca) = &self.ca_cert {
            tls = tls.ca_cert(ca);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.client_auth(cert, key);
        }
        tls.danger_accept_invalid_certs(self.danger_accept_invalid_certs)
    }

    /// A client for `http://` and `https://` URLs with these settings.
    pub fn client(&self) -> Result<clickhouse::Client, ch_ingest::sink::TlsError> {
        self.tls().client()
    }
}
