//! Host key verification: policy, the known_hosts file, and trust-on-first-use
//! pins behind the `PinStore` trait (a file for `probe`, the database for the
//! service, which implements the trait outside this layer).
//!
//! Never accepts a key silently: every decision is either a match, a logged
//! pin, a logged insecure acceptance, or an error naming the fingerprint.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Algorithm, Certificate, HashAlg, PublicKey};

use super::known_hosts::{self, Lookup};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How unknown and changed host keys are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// The key must be in the known_hosts file.
    Strict,
    /// Unknown hosts are pinned on first contact; a changed key is refused.
    #[default]
    Tofu,
    /// Accept any key (logged as a warning). Only for throwaway labs.
    InsecureAcceptAny,
}

impl FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "tofu" => Ok(Self::Tofu),
            "insecure-accept-any" => Ok(Self::InsecureAcceptAny),
            other => Err(format!(
                "unknown host key policy {other:?} (expected strict, tofu or insecure-accept-any)"
            )),
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::Tofu => "tofu",
            Self::InsecureAcceptAny => "insecure-accept-any",
        })
    }
}

/// Why a host key was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HostKeyError {
    #[error(
        "host key for {target} is not known ({fingerprint}) and the policy is strict; add it to {file}"
    )]
    Unknown {
        target: String,
        fingerprint: String,
        file: String,
    },
    #[error(
        "HOST KEY CHANGED for {target}: the server offered {fingerprint} but {source_} has {known}; if the change is expected, remove the old entry"
    )]
    Changed {
        target: String,
        fingerprint: String,
        known: String,
        source_: String,
    },
    #[error("host key {fingerprint} for {target} is marked @revoked in {source_}")]
    Revoked {
        target: String,
        fingerprint: String,
        source_: String,
    },
    #[error("could not check the host key for {target}: {detail}")]
    Unavailable { target: String, detail: String },
    #[error("host certificate of {target} rejected: {reason}")]
    Certificate { target: String, reason: String },
}

/// What a pin store did with a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// No pin existed; this key is now pinned.
    Pinned,
    /// The pinned key is this key.
    Matches,
    /// Another key is pinned; its fingerprints and where it is recorded.
    Differs { known: Vec<String>, source: String },
}

/// Where trust-on-first-use pins live.
pub trait PinStore: Send + Sync {
    /// Atomically pins `key` for `host:port` unless a pin exists, and says which.
    fn pin<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        key: &'a PublicKey,
    ) -> BoxFuture<'a, Result<PinOutcome, String>>;

    /// Algorithms of keys pinned for `host:port`, to be preferred in the handshake.
    fn pinned_algorithms<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Vec<Algorithm>>;
}

/// Pins appended to a known_hosts file (the `probe` command's store).
pub struct KnownHostsPins {
    path: PathBuf,
    /// Serialises check-then-append within this process.
    lock: tokio::sync::Mutex<()>,
}

impl KnownHostsPins {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl PinStore for KnownHostsPins {
    fn pin<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        key: &'a PublicKey,
    ) -> BoxFuture<'a, Result<PinOutcome, String>> {
        Box::pin(async move {
            let _guard = self.lock.lock().await;
            let text = known_hosts::read(&self.path)
                .await
                .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
            match known_hosts::lookup(&text, host, port, key) {
                Lookup::Found => Ok(PinOutcome::Matches),
                Lookup::Changed { line, known } => Ok(PinOutcome::Differs {
                    known,
                    source: format!("{} line {line}", self.path.display()),
                }),
                Lookup::Revoked { line } => Ok(PinOutcome::Differs {
                    known: vec!["@revoked".into()],
                    source: format!("{} line {line}", self.path.display()),
                }),
                Lookup::Unknown => {
                    known_hosts::append(&self.path, &known_hosts::entry_line(host, port, key))
                        .await
                        .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
                    Ok(PinOutcome::Pinned)
                }
            }
        })
    }

    fn pinned_algorithms<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Vec<Algorithm>> {
        Box::pin(async move {
            let text = known_hosts::read(&self.path).await.unwrap_or_default();
            known_hosts::known_algorithms(&text, host, port)
        })
    }
}

/// Decides whether a presented host key is trusted.
#[derive(Clone)]
pub struct HostKeyVerifier {
    pub policy: HostKeyPolicy,
    /// Consulted first under every policy but insecure-accept-any.
    pub known_hosts: Option<PathBuf>,
    /// Where `tofu` pins unknown hosts. Without one, tofu behaves as strict.
    pub pins: Option<Arc<dyn PinStore>>,
    /// OpenSSH's `HostKeyAlias`: the name host keys are looked up, pinned
    /// and (for host certificates) matched against principals under,
    /// instead of the host as dialled; the port stays the dialled one.
    pub host_key_alias: Option<String>,
}

impl fmt::Debug for HostKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKeyVerifier")
            .field("policy", &self.policy)
            .field("known_hosts", &self.known_hosts)
            .field("pins", &self.pins.is_some())
            .field("host_key_alias", &self.host_key_alias)
            .finish()
    }
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn target_name(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl HostKeyVerifier {
    /// The name `host`'s keys are filed under: its `HostKeyAlias`, if any.
    fn key_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.host_key_alias.as_deref().unwrap_or(host)
    }

    pub async fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), HostKeyError> {
        let host = self.key_name(host);
        let target = target_name(host, port);
        let fingerprint = fingerprint(key);
        if self.policy == HostKeyPolicy::InsecureAcceptAny {
            tracing::warn!(%target, %fingerprint, "accepting host key without verification (host-key-policy insecure-accept-any)");
            return Ok(());
        }
        if let Some(path) = &self.known_hosts {
            let text = known_hosts::read(path)
                .await
                .map_err(|e| HostKeyError::Unavailable {
                    target: target.clone(),
                    detail: format!("reading {}: {e}", path.display()),
                })?;
            match known_hosts::lookup(&text, host, port, key) {
                Lookup::Found => return Ok(()),
                Lookup::Changed { line, known } => {
                    return Err(HostKeyError::Changed {
                        target,
                        fingerprint,
                        known: known.join(", "),
                        source_: format!("{} line {line}", path.display()),
                    });
                }
                Lookup::Revoked { line } => {
                    return Err(HostKeyError::Revoked {
                        target,
                        fingerprint,
                        source_: format!("{} line {line}", path.display()),
                    });
                }
                Lookup::Unknown => {}
            }
        }
        let pins = match (self.policy, &self.pins) {
            (HostKeyPolicy::Tofu, Some(pins)) => pins,
            _ => {
                return Err(HostKeyError::Unknown {
                    target,
                    fingerprint,
                    file: self
                        .known_hosts
                        .as_ref()
                        .map_or_else(|| "a known_hosts file".into(), |p| p.display().to_string()),
                });
            }
        };
        match pins.pin(host, port, key).await {
            Ok(PinOutcome::Matches) => Ok(()),
            Ok(PinOutcome::Pinned) => {
                tracing::info!(%target, %fingerprint, "pinned new host key (trust on first use)");
                Ok(())
            }
            Ok(PinOutcome::Differs { known, source }) => Err(HostKeyError::Changed {
                target,
                fingerprint,
                known: known.join(", "),
                source_: source,
            }),
            Err(detail) => Err(HostKeyError::Unavailable { target, detail }),
        }
    }

    /// True when the known_hosts file has an `@cert-authority` line for
    /// `host:port`: only then are certificate host keys asked for.
    pub async fn has_cert_authority(&self, host: &str, port: u16) -> bool {
        let host = self.key_name(host);
        if self.policy == HostKeyPolicy::InsecureAcceptAny {
            return false;
        }
        let Some(path) = &self.known_hosts else {
            return false;
        };
        let text = known_hosts::read(path).await.unwrap_or_default();
        !known_hosts::cert_authorities(&text, host, port).is_empty()
    }

    /// Checks a host certificate against the known_hosts file's
    /// `@cert-authority` lines for `host:port`, under every policy but
    /// insecure-accept-any: a listed CA signed it, it is valid now, it is a
    /// host certificate, `host` (the name as dialled) is among its
    /// principals, it has no critical options, and neither it nor its CA is
    /// `@revoked`. Certificates are never pinned.
    pub async fn verify_certificate(
        &self,
        host: &str,
        port: u16,
        cert: &Certificate,
    ) -> Result<(), HostKeyError> {
        let host = self.key_name(host);
        let target = target_name(host, port);
        let ca_fp = cert
            .signature_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if self.policy == HostKeyPolicy::InsecureAcceptAny {
            tracing::warn!(%target, ca = %ca_fp, "accepting host certificate without verification (host-key-policy insecure-accept-any)");
            return Ok(());
        }
        let reject = |reason: String| HostKeyError::Certificate {
            target: target.clone(),
            reason,
        };
        let Some(path) = &self.known_hosts else {
            return Err(reject(
                "no known_hosts file lists a certificate authority".into(),
            ));
        };
        let text = known_hosts::read(path)
            .await
            .map_err(|e| HostKeyError::Unavailable {
                target: target.clone(),
                detail: format!("reading {}: {e}", path.display()),
            })?;
        let at = |line: usize| format!("{} line {line}", path.display());
        if let Some(line) = known_hosts::revoked(&text, host, port, cert.signature_key()) {
            return Err(reject(format!(
                "its CA {ca_fp} is marked @revoked in {}",
                at(line)
            )));
        }
        if let Some(line) = known_hosts::revoked(&text, host, port, cert.public_key()) {
            return Err(HostKeyError::Revoked {
                target,
                fingerprint: cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
                source_: at(line),
            });
        }
        let cas = known_hosts::cert_authorities(&text, host, port);
        let Some((line, ca)) = cas
            .iter()
            .find(|(_, k)| k.key_data() == cert.signature_key())
        else {
            let trusted: Vec<String> = cas.iter().map(|(_, k)| fingerprint(k)).collect();
            return Err(reject(format!(
                "signed by an unknown CA {ca_fp}; {} trusts {} for this host",
                path.display(),
                if trusted.is_empty() {
                    "no CA".to_string()
                } else {
                    trusted.join(", ")
                }
            )));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(problem) = super::auth::validity_problem(cert, now) {
            return Err(reject(problem));
        }
        if cert
            .validate_at(now, [&ca.fingerprint(HashAlg::Sha256)])
            .is_err()
        {
            return Err(reject(format!(
                "its signature does not verify with the CA {ca_fp} of {}",
                at(*line)
            )));
        }
        if cert.cert_type() != CertType::Host {
            return Err(reject(
                "it is a user certificate, not a host certificate".into(),
            ));
        }
        let principals = cert.valid_principals();
        if principals.is_empty() {
            return Err(reject(
                "it lists no principals (hostscan requires the host's name among them)".into(),
            ));
        }
        if !principals.iter().any(|p| p.eq_ignore_ascii_case(host)) {
            return Err(reject(format!(
                "wrong principal: it is for {} but hostscan dialled {host:?}",
                principals
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !cert.critical_options().is_empty() {
            let names: Vec<&str> = cert.critical_options().keys().map(String::as_str).collect();
            return Err(reject(format!(
                "it has critical options hostscan does not understand: {}",
                names.join(", ")
            )));
        }
        tracing::debug!(%target, ca = %ca_fp, key_id = cert.key_id(), "host certificate accepted");
        Ok(())
    }

    /// Key algorithms already trusted for this host, most trusted first.
    pub async fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let host = self.key_name(host);
        let mut out = Vec::new();
        if let Some(path) = &self.known_hosts {
            let text = known_hosts::read(path).await.unwrap_or_default();
            out = known_hosts::known_algorithms(&text, host, port);
        }
        if self.policy == HostKeyPolicy::Tofu
            && let Some(pins) = &self.pins
        {
            for alg in pins.pinned_algorithms(host, port).await {
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
        }
        out
    }
}
