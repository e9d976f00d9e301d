//! Certificates a test makes for itself with rcgen: a CA, a server leaf and
//! a client leaf it signed, written as PEM files into a temp dir, plus
//! tonic channels that use them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::temp_dir;

/// Names every server certificate of the tests carries: the README's
/// example host and the loopback address the tests connect to.
pub const SERVER_NAMES: &[&str] = &["hostscan.example.org", "localhost", "127.0.0.1"];

/// A CA with a server and a client certificate, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// A fresh CA named `name`, and leaves it signed.
    pub fn new(name: &str) -> Self {
        let dir = temp_dir("hostscan-pki-");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let mut server = CertificateParams::new(
            SERVER_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("server params");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server.signed_by(&server_key, &ca).expect("server cert");

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test client"));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client_cert = client.signed_by(&client_key, &ca).expect("client cert");

        let write = |file: &str, text: String| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            dir,
        }
    }

    /// `--tls-cert`, `--tls-key` (and `--tls-client-ca` with `mtls`) for
    /// `hostscan serve`.
    pub fn server_args(&self, mtls: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            path(&self.server_cert),
            "--tls-key".to_string(),
            path(&self.server_key),
        ];
        if mtls {
            args.extend(["--tls-client-ca".to_string(), path(&self.ca)]);
        }
        args
    }

    /// The client's identity (certificate and key).
    pub fn identity(&self) -> Identity {
        Identity::from_pem(read(&self.client_cert), read(&self.client_key))
    }
}

pub fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// An https channel to `addr` that trusts `ca` and, if given, presents
/// `identity`. Errors are what the handshake said.
pub async fn channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}
