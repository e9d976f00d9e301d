//! SSH transport: one russh connection per scan, commands as channels on it.
//!
//! Owns connecting (DNS, TCP, banner, key exchange and authentication under
//! one connect timeout, through jump hosts when asked: `jump`), logging in
//! (`auth`: key files, encrypted keys, certificates, ssh-agent), host key
//! verification (`hostkey`, `known_hosts`: keys, pins, host certificates),
//! OpenSSH client configuration (`config`) and turning a requested
//! destination into a route (`route`), running a command with a local
//! deadline and an output cap, and clean disconnects. It knows nothing of
//! scans, steps or parsers, and it never builds a command line: callers
//! hand it constant strings.

pub mod auth;
pub mod config;
pub mod hostkey;
pub mod jump;
pub mod known_hosts;
pub mod proxy;
pub mod route;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use russh::client;
use russh::keys::{Algorithm, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, timeout_at};

pub use auth::{Agent, ClientKey, Identities};
pub use hostkey::{HostKeyError, HostKeyPolicy, HostKeyVerifier};
pub use jump::Hop;

use crate::model::ScanErrorKind;

/// Who to connect to, as `user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// Why a connection, a login or a command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("cannot resolve {host}: {detail}")]
    Dns { host: String, detail: String },
    #[error("connection refused by {addr}")]
    Refused { addr: String },
    #[error("{addr} is unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("timed out after {secs}s {phase} {addr}")]
    Timeout {
        addr: String,
        phase: &'static str,
        secs: u64,
    },
    #[error("authentication failed for {target} (tried {tried})")]
    AuthFailed { target: String, tried: String },
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("SSH protocol error with {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("connection to {addr} was lost")]
    ConnectionLost { addr: String },
    #[error("could not open a channel: {0}")]
    Channel(String),
    #[error("{0}")]
    Key(String),
    /// An error on the way through jump hosts: which hop, via which.
    #[error("{source} ({context})")]
    Route {
        context: String,
        source: Box<SshError>,
    },
    /// The route could not be planned (a bad ProxyJump, a loop).
    #[error("{0}")]
    Config(String),
}

impl SshError {
    /// The public error kind a client can act on.
    pub fn kind(&self) -> ScanErrorKind {
        match self {
            Self::Dns { .. } => ScanErrorKind::Dns,
            Self::Refused { .. } => ScanErrorKind::ConnectionRefused,
            Self::Unreachable { .. } => ScanErrorKind::Unreachable,
            Self::Timeout { .. } => ScanErrorKind::Timeout,
            Self::AuthFailed { .. } | Self::Key(_) => ScanErrorKind::AuthFailed,
            Self::HostKey(HostKeyError::Unavailable { .. }) => ScanErrorKind::Internal,
            Self::HostKey(_) => ScanErrorKind::HostKeyMismatch,
            Self::Protocol { .. } | Self::ConnectionLost { .. } | Self::Channel(_) => {
                ScanErrorKind::Protocol
            }
            Self::Route { source, .. } => source.kind(),
            Self::Config(_) => ScanErrorKind::Internal,
        }
    }
}

/// russh wants the handler's error to absorb its own; the address is filled
/// in by `connect`, which knows it.
impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        classify(e, "")
    }
}

fn classify(e: russh::Error, addr: &str) -> SshError {
    let addr = addr.to_string();
    match e {
        russh::Error::IO(io) => io_error(io, addr),
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError => {
            SshError::ConnectionLost { addr }
        }
        russh::Error::KeepaliveTimeout | russh::Error::InactivityTimeout => SshError::Unreachable {
            addr,
            detail: "the server stopped answering".into(),
        },
        russh::Error::ChannelOpenFailure(f) => SshError::Channel(format!("{f:?}")),
        other => SshError::Protocol {
            addr,
            detail: other.to_string(),
        },
    }
}

fn io_error(e: std::io::Error, addr: String) -> SshError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => SshError::Refused { addr },
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown | K::AddrNotAvailable => {
            SshError::Unreachable {
                addr,
                detail: e.to_string(),
            }
        }
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            SshError::Protocol {
                addr,
                detail: format!("the server closed the connection ({e})"),
            }
        }
        _ => SshError::Unreachable {
            addr,
            detail: e.to_string(),
        },
    }
}

/// How to open a session.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// What to offer the target to log in.
    pub identities: Arc<Identities>,
    /// An ssh-agent whose identities are offered first, to every hop.
    pub agent: Option<Agent>,
    pub verifier: HostKeyVerifier,
    /// DNS + TCP + banner + key exchange + authentication, for the whole
    /// chain of jump hosts and the target together.
    pub connect_timeout: Duration,
    /// Channels open at once on the connection (OpenSSH allows 10 sessions).
    pub max_channels: usize,
    /// Jump hosts, nearest first (ProxyJump order); empty to connect
    /// directly.
    pub jump: Vec<Hop>,
    /// The first link (the first jump host, else the target) is reached
    /// through this local command's stdin and stdout instead of TCP.
    pub proxy_command: Option<proxy::ProxyCommand>,
}

impl ConnectOptions {
    /// Direct connections offering `keys`, no agent.
    pub fn with_keys(
        keys: impl IntoIterator<Item = ClientKey>,
        verifier: HostKeyVerifier,
        connect_timeout: Duration,
        max_channels: usize,
    ) -> Self {
        Self {
            identities: Arc::new(Identities::from_keys(keys)),
            agent: None,
            verifier,
            connect_timeout,
            max_channels,
            jump: Vec::new(),
            proxy_command: None,
        }
    }
}

/// What a running command sends.
#[derive(Debug)]
pub enum Chunk {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    Exit(u32),
    Signal(String),
    /// The channel is closed: nothing more will come.
    Closed,
}

/// A command running on a channel. Dropping it without `close` leaves the
/// channel to the server; always `close` (sshd does not kill the command).
pub struct Exec<'a> {
    channel: russh::Channel<client::Msg>,
    session: &'a Session,
    closed: bool,
    /// Held for the channel's life: bounds channels per connection.
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Exec<'_> {
    /// The next thing the command sent. `Closed` once the channel is done,
    /// `Err(ConnectionLost)` if the whole connection went away.
    pub async fn next(&mut self) -> Result<Chunk, SshError> {
        loop {
            let msg = self.channel.wait().await;
            return Ok(match msg {
                None | Some(ChannelMsg::Close) => {
                    self.closed = true;
                    if self.session.handle.is_closed() {
                        return Err(SshError::ConnectionLost {
                            addr: self.session.addr.clone(),
                        });
                    }
                    Chunk::Closed
                }
                Some(ChannelMsg::Data { data }) => Chunk::Stdout(data),
                Some(ChannelMsg::ExtendedData { data, .. }) => Chunk::Stderr(data),
                Some(ChannelMsg::ExitStatus { exit_status }) => Chunk::Exit(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    Chunk::Signal(format!("{signal_name:?}"))
                }
                Some(ChannelMsg::Failure) => {
                    return Err(SshError::Channel(
                        "the server refused to run the command".into(),
                    ));
                }
                Some(_) => continue,
            });
        }
    }

    /// Asks the server to close the channel (the command sees its pipes
    /// close). Idempotent.
    pub async fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.channel.close().await.ok();
        }
    }
}

struct Handler {
    host: String,
    port: u16,
    verifier: HostKeyVerifier,
    /// The server's reason text for each refused channel open; read by
    /// `jump` when this connection fails to forward to the next hop.
    refused: mpsc::UnboundedSender<String>,
}

impl client::Handler for Handler {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verifier.verify(&self.host, self.port, key).await?;
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                self.verifier
                    .verify_certificate(&self.host, self.port, cert)
                    .await?;
            }
        }
        Ok(true)
    }

    async fn channel_open_failure(
        &mut self,
        _channel: russh::ChannelId,
        _reason: russh::ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        self.refused.send(description.to_string()).ok();
        Ok(())
    }
}

/// An authenticated SSH connection, possibly through jump hosts.
pub struct Session {
    handle: client::Handle<Handler>,
    addr: String,
    /// One permit per open channel; held by `exec` for the channel's life.
    channels: Semaphore,
    /// The jump hosts' connections, nearest first. They carry `handle`'s
    /// transport: kept as long as the session, closed after it.
    hops: Vec<client::Handle<Handler>>,
    /// The ProxyCommand carrying the first link, killed when the session
    /// is dropped.
    _proxy: Option<proxy::Proxy>,
}

/// Where a connection attempt is, for a timeout message that says where it
/// stuck: which link of the chain (`hop`, the target last) and which phase.
#[derive(Default)]
struct Progress {
    hop: AtomicUsize,
    phase: AtomicU8,
}

/// `host:port`, with IPv6 in brackets.
fn addr_name(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connection phases, for a timeout message that says where it stuck.
const PHASES: [&str; 5] = [
    "resolving",
    "connecting to",
    "waiting for the SSH handshake from",
    "authenticating to",
    "connected to",
];

impl Session {
    /// Resolves, connects, verifies host keys and logs in with the first
    /// identity each server accepts — every jump host in turn, then the
    /// target — all within `opts.connect_timeout`.
    pub async fn connect(target: &Target, opts: &ConnectOptions) -> Result<Self, SshError> {
        let progress = Progress::default();
        let deadline = Instant::now() + opts.connect_timeout;
        let attempt = jump::connect_chain(target, opts, &progress);
        let (handle, hops, proxy) = match timeout_at(deadline, attempt).await {
            Ok(result) => result?,
            Err(_) => {
                let index = progress.hop.load(Ordering::Relaxed);
                let stuck = opts.jump.get(index).map_or(target, |h| &h.target);
                let phase = usize::from(progress.phase.load(Ordering::Relaxed));
                let e = SshError::Timeout {
                    addr: addr_name(&stuck.host, stuck.port),
                    phase: PHASES[phase.min(PHASES.len() - 1)],
                    secs: opts.connect_timeout.as_secs().max(1),
                };
                return Err(jump::in_chain(e, index, target, &opts.jump));
            }
        };
        Ok(Self {
            handle,
            addr: addr_name(&target.host, target.port),
            channels: Semaphore::new(opts.max_channels.clamp(1, 9)),
            hops,
            _proxy: proxy,
        })
    }

    /// Starts `command` on a new channel and sends `stdin` (then EOF). The
    /// channel holds one of the session's channel permits until dropped.
    pub async fn start(&self, command: &str, stdin: Vec<u8>) -> Result<Exec<'_>, SshError> {
        let permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::ConnectionLost {
                addr: self.addr.clone(),
            })?;
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error(e))?;
        let started = async {
            channel.exec(true, command).await?;
            channel.data_bytes(stdin).await?;
            channel.eof().await
        };
        if let Err(e) = started.await {
            channel.close().await.ok();
            return Err(self.channel_error(e));
        }
        Ok(Exec {
            channel,
            session: self,
            closed: false,
            _permit: permit,
        })
    }

    fn channel_error(&self, e: russh::Error) -> SshError {
        if self.handle.is_closed() {
            SshError::ConnectionLost {
                addr: self.addr.clone(),
            }
        } else {
            classify(e, &self.addr)
        }
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Says goodbye to the server, then to each jump host, farthest first;
    /// bounded so a dead peer cannot hold us.
    pub async fn close(self) {
        let bye = self.handle.disconnect(Disconnect::ByApplication, "", "en");
        tokio::time::timeout(Duration::from_secs(2), bye).await.ok();
        for hop in self.hops.into_iter().rev() {
            let bye = hop.disconnect(Disconnect::ByApplication, "", "en");
            tokio::time::timeout(Duration::from_secs(2), bye).await.ok();
        }
    }
}

/// Resolves `link` and opens TCP to the first address that answers.
async fn tcp(
    link: &Target,
    addr_name: &str,
    progress: &Progress,
) -> Result<tokio::net::TcpStream, SshError> {
    progress.phase.store(0, Ordering::Relaxed);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((link.host.as_str(), link.port))
        .await
        .map_err(|e| SshError::Dns {
            host: link.host.clone(),
            detail: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(SshError::Dns {
            host: link.host.clone(),
            detail: "no addresses".into(),
        });
    }
    progress.phase.store(1, Ordering::Relaxed);
    let mut last_err = None;
    for addr in &addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) => last_err = Some(io_error(e, addr_name.to_string())),
        }
    }
    Err(last_err.unwrap_or(SshError::Unreachable {
        addr: addr_name.to_string(),
        detail: "no address could be reached".into(),
    }))
}

/// The russh client configuration for one server: host key algorithms it
/// is already trusted for first, certificate algorithms only when
/// known_hosts has a matching `@cert-authority` line, legacy key exchanges
/// last.
async fn client_config(verifier: &HostKeyVerifier, host: &str, port: u16) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    let known = verifier.known_algorithms(host, port).await;
    if !known.is_empty() {
        preferred.key = prefer_known(&preferred.key, &known).into();
    }
    if verifier.has_cert_authority(host, port).await {
        preferred.host_key_certificates = CERTIFICATE_ALGORITHMS.into();
    }
    // Old servers: offer the legacy key exchanges last, never first.
    let mut kex = preferred.kex.to_vec();
    kex.extend([
        russh::kex::ECDH_SHA2_NISTP256,
        russh::kex::ECDH_SHA2_NISTP384,
        russh::kex::ECDH_SHA2_NISTP521,
        russh::kex::DH_G14_SHA1,
    ]);
    preferred.kex = kex.into();
    Arc::new(client::Config {
        preferred,
        nodelay: true,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    })
}

/// Host certificate algorithms asked for when a CA is trusted.
const CERTIFICATE_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(russh::keys::HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(russh::keys::HashAlg::Sha256),
    },
];

/// The SSH handshake over `stream`, with errors naming `addr`.
async fn handshake<S>(
    config: Arc<client::Config>,
    stream: S,
    handler: Handler,
    addr: &str,
) -> Result<client::Handle<Handler>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    client::connect_stream(config, stream, handler)
        .await
        .map_err(|e| match e {
            SshError::ConnectionLost { .. } => SshError::Protocol {
                addr: addr.to_string(),
                detail: "the server closed the connection during the handshake".into(),
            },
            SshError::Protocol { detail, .. } => SshError::Protocol {
                addr: addr.to_string(),
                detail,
            },
            SshError::Refused { .. } => SshError::Refused {
                addr: addr.to_string(),
            },
            other => other,
        })
}

/// Moves algorithms the host is already trusted for to the front. A known
/// RSA key brings every RSA signature variant forward.
fn prefer_known(default: &[Algorithm], known: &[Algorithm]) -> Vec<Algorithm> {
    let is_known = |a: &Algorithm| {
        known.iter().any(|k| {
            k == a || (matches!(k, Algorithm::Rsa { .. }) && matches!(a, Algorithm::Rsa { .. }))
        })
    };
    let mut out: Vec<Algorithm> = default.iter().filter(|a| is_known(a)).cloned().collect();
    out.extend(default.iter().filter(|a| !is_known(a)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_display_brackets_ipv6() {
        let t = Target {
            host: "::1".into(),
            port: 22,
            user: "root".into(),
        };
        assert_eq!(t.to_string(), "root@[::1]:22");
    }

    #[test]
    fn known_algorithms_come_first() {
        let default = russh::Preferred::default().key.to_vec();
        let out = prefer_known(&default, &[Algorithm::Rsa { hash: None }]);
        assert!(
            out.iter()
                .take(3)
                .all(|a| matches!(a, Algorithm::Rsa { .. }))
        );
        assert_eq!(out.len(), default.len());
    }
}
