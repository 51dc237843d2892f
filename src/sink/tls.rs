//! HTTPS to ClickHouse (the `tls` feature): which certificates a server
//! may show, and which one we show it.
//!
//! Owns: the rustls client configuration (the platform's roots, Mozilla's
//! bundled roots, `SSL_CERT_FILE` as OpenSSL-based tools read it, a custom
//! CA bundle; a client certificate and key for mutual TLS) and the
//! connector that speaks `http://` and `https://` alike and names the
//! host and the reason when a certificate is refused. Hostnames are
//! checked unless a user turns every check off through the one switch
//! whose name says it is dangerous (and a warning is logged). Must not:
//! put a key's bytes in an error or a log.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why a TLS configuration could not be built. Each names the file and
/// the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or holds no PEM item
    /// of the kind asked for.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// Which file it is (`ca_cert`, `client_cert`, `client_key`,
        /// `SSL_CERT_FILE`).
        what: &'static str,
        /// The file's path, as given.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an unsupported key type).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How ch-ingest checks a ClickHouse server's certificate, and which one
/// it shows. The default trusts the platform's roots, Mozilla's bundled
/// roots and the file `SSL_CERT_FILE` names (if set), and shows none.
///
/// ```
/// use ch_ingest::sink::Tls;
/// // Aiven and self-run servers hand out a CA file of their own:
/// # let dir = std::env::temp_dir();
/// # let ca = dir.join("ch-ingest-doc-ca.pem");
/// # std::fs::write(&ca, "").unwrap();
/// let tls = Tls::new().ca_cert(&ca);
/// let err = tls.client().unwrap_err(); // an empty file holds no certificate
/// assert!(err.to_string().contains("ca_cert"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Tls {
    ca_cert: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    danger_accept_invalid_certs: bool,
}

impl Tls {
    /// The default: the platform's and Mozilla's roots, plus
    /// `SSL_CERT_FILE`'s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts the CA certificates in this PEM file (default: none).
    pub fn ca_cert(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_cert = Some(path.as_ref().to_path_buf());
        self
    }

    /// Shows this certificate chain and key (PEM) to servers that ask for
    /// one: mutual TLS (default: none).
    pub fn client_auth(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.client = Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        self
    }

    /// Accepts any certificate a server shows: no chain, no hostname, no
    /// expiry check (default: off). Anyone on the path can then read and
    /// change what is sent, passwords included, so a warning is logged
    /// each time a configuration is built with it. For a test server with
    /// a certificate made on the spot; give its CA with
    /// [`ca_cert`](Self::ca_cert) instead wherever you can.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.danger_accept_invalid_certs = yes;
        self
    }

    /// The crypto provider every TLS configuration of ours uses (ring;
    /// ARCHITECTURE.md says why), for a server-side configuration beside
    /// this client one.
    pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        provider()
    }

    /// Every certificate in a PEM file, for a server-side configuration
    /// too; `what` names the setting in the error (none is an error).
    pub fn certificates(
        what: &'static str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates(what, path)
    }

    /// The rustls configuration this describes.
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        self.config_with(true)
    }

    /// With `env`, `SSL_CERT_FILE`'s certificates too.
    pub(crate) fn config_with(&self, env: bool) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The platform's store: a file it cannot read is skipped, as
        // OpenSSL does (rustls-native-certs reports them one by one).
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|_| env) {
            for cert in certificates("SSL_CERT_FILE", Path::new(&path))? {
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = &self.ca_cert {
            for cert in certificates("ca_cert", path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "ca_cert",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if self.danger_accept_invalid_certs {
            tracing::warn!(
                "danger_accept_invalid_certs: ClickHouse servers' certificates are NOT checked; \
                 anyone on the path can read and change what is sent, passwords included"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            builder.with_root_certificates(roots)
        };
        Ok(match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates("client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                    what: "client_key",
                    path: key.clone(),
                    reason: format!("no private key read: {e}"),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
        })
    }

    /// A connector for `http://` and `https://` URLs alike, with
    /// `TCP_NODELAY` and a bounded connect, as `nodelay_client` uses.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(connector(self.config()?))
    }

    /// A `clickhouse::Client` (no URL yet) that speaks both schemes with
    /// this configuration: `nodelay_client`, with these certificates.
    pub fn client(&self) -> Result<clickhouse::Client, TlsError> {
        Ok(crate::sink::transport::client_over(self.connector()?))
    }
}

/// The crypto provider: ring, for its build (no C toolchain beyond `cc`,
/// a third of aws-lc-rs's build time; ARCHITECTURE.md has the figures).
/// rustls marks it deprecated because it offers no post-quantum key
/// exchange, which no ClickHouse server negotiates today.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for `http://` and `https://` URLs over the plain one.
pub(crate) fn connector(config: rustls::ClientConfig) -> TlsConnector {
    let mut http = crate::sink::transport::tcp_connector();
    // The TLS connector must see `https://` URLs.
    http.enforce_http(false);
    TlsConnector(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    )
}

/// A connector for `http://` and `https://` URLs ([`Tls::connector`]):
/// hyper-rustls's, except that a refused certificate comes back as a
/// certificate error naming the host, which the sink reports as
/// [`SinkError::Certificate`](super::SinkError::Certificate) instead of
/// a generic network error.
#[derive(Clone)]
pub struct TlsConnector(HttpsConnector<HttpConnector>);

type Inner = HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Stream = <Inner as tower_service::Service<http::Uri>>::Response;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let host: Arc<str> = uri.host().unwrap_or("?").into();
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match connecting.await {
                Ok(inner) => Ok(TlsStream { inner, host }),
                Err(e) => Err(match refusal(&*e) {
                    Some(reason) => Box::new(CertificateError {
                        host: host.to_string(),
                        reason,
                    }) as BoxError,
                    None => e,
                }),
            }
        })
    }
}

/// A connection [`TlsConnector`] made. With TLS 1.3 a server checks our
/// certificate after the handshake: its refusal arrives on the first read,
/// and is named with the host here as a refusal during the handshake is.
pub struct TlsStream {
    inner: Stream,
    host: Arc<str>,
}

impl TlsStream {
    fn named(&self, e: std::io::Error) -> std::io::Error {
        match refusal(&e) {
            Some(reason) => std::io::Error::new(
                e.kind(),
                CertificateError {
                    host: self.host.to_string(),
                    reason,
                },
            ),
            None => e,
        }
    }
}

impl hyper::rt::Read for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.named(e))),
            other => other,
        }
    }
}

impl hyper::rt::Write for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.named(e))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.named(e))),
            other => other,
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for TlsStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

/// A TLS handshake that failed over a certificate: the server's, refused
/// by our checks, or ours, refused by the server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("TLS certificate refused with {host}: {reason}")]
pub(crate) struct CertificateError {
    /// The host we were connecting to.
    pub(crate) host: String,
    /// Why (rustls's words: `UnknownIssuer`, `NotValidForName`, `Expired`,
    /// or the server's alert when it refused our certificate).
    pub(crate) reason: String,
}

/// The certificate problem somewhere in `e`'s chain, if that is what it is.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = causes(e).find_map(|e| e.downcast_ref::<rustls::Error>())?;
    about_certificates(tls).then(|| tls.to_string())
}

/// `e` and its causes, looking inside every `io::Error` on the way:
/// tokio-rustls hands rustls's error over inside one, hyper-rustls wraps
/// that in another, and an `io::Error`'s `source` skips what it wraps.
pub(crate) fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let e = next?;
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
        Some(e)
    })
}

fn about_certificates(e: &rustls::Error) -> bool {
    use AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
        ),
        _ => false,
    }
}

/// `danger_accept_invalid_certs`: every certificate passes; the handshake's
/// signatures are still checked (with the wrong key they would not be a
/// handshake at all).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Every certificate in a PEM file; none is an error.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}
