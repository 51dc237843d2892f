//! HTTPS on serve's own listener: `tls_cert_file` and `tls_key_file` make
//! it speak TLS, `tls_client_ca` makes it require a client certificate
//! signed by that CA.
//!
//! Owns: the server's rustls configuration, and reloading it when a file
//! changes or on SIGHUP without touching open connections (each handshake
//! takes the configuration of its moment). Must not: stop serving on a
//! bad reload (the last good configuration stays, and the error is
//! logged), or log a key.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The listener's certificate, key and optional client CA, as configured.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The acceptor of the moment, swapped whole on reload.
pub struct Tls {
    files: Files,
    current: RwLock<TlsAcceptor>,
    /// The files' modification times at the last load.
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Reads the files; an error names the file and the reason.
    pub fn load(files: Files) -> Result<Arc<Tls>, String> {
        let acceptor = acceptor(&files)?;
        let stamps = stamps(&files);
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(acceptor),
            stamps: RwLock::new(stamps),
        }))
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the files again; keeps the old configuration if they do not
    /// make a valid one.
    pub fn reload(&self, why: &str) {
        match acceptor(&self.files) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                *self.stamps.write().unwrap_or_else(|p| p.into_inner()) = stamps(&self.files);
                eprintln!("ch-ingest serve: TLS certificate reloaded ({why})");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload ({why}) failed; the previous certificate stays");
                eprintln!("ch-ingest serve: TLS reload ({why}) failed, keeping the previous certificate: {e}");
            }
        }
    }

    /// Reloads whenever a file's modification time changes, until the
    /// process ends.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tick.tick().await;
            let now = stamps(&self.files);
            let changed = *self.stamps.read().unwrap_or_else(|p| p.into_inner()) != now;
            if changed {
                self.reload("a file changed");
            }
        }
    }
}

fn stamps(files: &Files) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

fn acceptor(files: &Files) -> Result<TlsAcceptor, String> {
    let provider = ch_ingest::sink::Tls::provider();
    let chain = certificates("tls_cert_file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "tls_key_file {}: no private key read: {e}",
            files.key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("tls_client_ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_client_ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("tls_client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_cert_file / tls_key_file: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    ch_ingest::sink::Tls::certificates(what, path).map_err(|e| e.to_string())
}
