//! TLS for the gRPC port: PEM files → a rustls `ServerConfig` (ring
//! provider, TLS 1.2 and 1.3, ALPN `h2`), optionally requiring client
//! certificates from a CA (mTLS), swappable at run time.
//!
//! Every new connection takes the config current at its accept; a reload
//! (SIGHUP) swaps in a new one and leaves established connections and their
//! streams alone. A reload that fails keeps the previous config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The files the TLS config is built from; read again on each reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// issued by one of them.
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that could not be used; the message names the setting and the
/// file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting} {}: {message}", path.display())]
pub struct TlsError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub message: String,
}

const CERT: &str = "--tls-cert/HOSTSCAN_TLS_CERT";
const KEY: &str = "--tls-key/HOSTSCAN_TLS_KEY";
const CLIENT_CA: &str = "--tls-client-ca/HOSTSCAN_TLS_CLIENT_CA";

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        setting,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError {
        setting,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&read(setting, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files and builds the server config.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(CERT, &self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read(KEY, &self.key)?).map_err(|e| TlsError {
            setting: KEY,
            path: self.key.clone(),
            message: format!("no usable private key: {e}"),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                setting: CERT,
                path: self.cert.clone(),
                message: e.to_string(),
            })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(CLIENT_CA, path)? {
                    roots.add(ca).map_err(|e| TlsError {
                        setting: CLIENT_CA,
                        path: path.clone(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError {
                            setting: CLIENT_CA,
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError {
            setting: KEY,
            path: self.key.clone(),
            message: format!("does not match the certificate: {e}"),
        })?;
        // gRPC clients (tonic, grpc-go) insist on HTTP/2 being negotiated.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The current TLS config, shared by the accept loop and the reloader.
#[derive(Debug, Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<ArcSwap<ServerConfig>>,
}

impl Tls {
    /// Loads `files` once; errors name the setting and the file.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let config = files.load()?;
        Ok(Self {
            files,
            current: Arc::new(ArcSwap::from_pointee(config)),
        })
    }

    /// An acceptor with the config current now, for one connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and swaps the new config in; on error the
    /// previous one stays. Logs and counts either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        match self.files.load() {
            Ok(config) => {
                self.current.store(Arc::new(config));
                crate::metrics::tls_reloaded(true);
                tracing::info!(cert = %self.files.cert.display(), client_ca = ?self.files.client_ca, "reloaded the TLS certificate");
                Ok(())
            }
            Err(e) => {
                crate::metrics::tls_reloaded(false);
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate");
                Err(e)
            }
        }
    }
}
