//! SSH transport: one russh connection per scan, commands as channels on it.
//!
//! Owns connecting (DNS, TCP, banner, key exchange and authentication under
//! one connect timeout), host key verification (`hostkey`), running a
//! command with a local deadline and an output cap, and clean disconnects.
//! It knows nothing of scans, steps or parsers, and it never builds a command
//! line: callers hand it constant strings.

pub mod hostkey;
pub mod known_hosts;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{self, Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

pub use hostkey::{HostKeyError, HostKeyPolicy, HostKeyVerifier};

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

/// A private key loaded from a file. Debug shows the path, never the key.
#[derive(Clone)]
pub struct ClientKey {
    pub path: PathBuf,
    pub key: Arc<PrivateKey>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({}, <redacted>)", self.path.display())
    }
}

impl ClientKey {
    pub fn load(path: &Path) -> Result<Self, SshError> {
        let key = keys::load_secret_key(path, None).map_err(|e| match e {
            keys::Error::KeyIsEncrypted => SshError::Key(format!(
                "{} is encrypted with a passphrase; hostscan needs an unencrypted key file",
                path.display()
            )),
            other => SshError::Key(format!("cannot load key {}: {other}", path.display())),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            key: Arc::new(key),
        })
    }
}

/// How to open a session.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub keys: Arc<[ClientKey]>,
    pub verifier: HostKeyVerifier,
    /// DNS + TCP + banner + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Channels open at once on the connection (OpenSSH allows 10 sessions).
    pub max_channels: usize,
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
}

impl client::Handler for Handler {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verifier.verify(&self.host, self.port, key).await?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }
}

/// An authenticated SSH connection.
pub struct Session {
    handle: client::Handle<Handler>,
    addr: String,
    /// One permit per open channel; held by `exec` for the channel's life.
    channels: Semaphore,
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
    /// Resolves, connects, verifies the host key and logs in with the first
    /// key the server accepts, all within `opts.connect_timeout`.
    pub async fn connect(target: &Target, opts: &ConnectOptions) -> Result<Self, SshError> {
        let addr_name = match target.host.contains(':') {
            true => format!("[{}]:{}", target.host, target.port),
            false => format!("{}:{}", target.host, target.port),
        };
        let phase = AtomicU8::new(0);
        let deadline = Instant::now() + opts.connect_timeout;
        let attempt = Self::connect_inner(target, opts, &addr_name, &phase);
        match timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                addr: addr_name,
                phase: PHASES[usize::from(phase.load(Ordering::Relaxed)).min(PHASES.len() - 1)],
                secs: opts.connect_timeout.as_secs().max(1),
            }),
        }
    }

    async fn connect_inner(
        target: &Target,
        opts: &ConnectOptions,
        addr_name: &str,
        phase: &AtomicU8,
    ) -> Result<Self, SshError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| SshError::Dns {
                host: target.host.clone(),
                detail: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(SshError::Dns {
                host: target.host.clone(),
                detail: "no addresses".into(),
            });
        }
        phase.store(1, Ordering::Relaxed);
        let mut last_err = None;
        let mut stream = None;
        for addr in &addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(io_error(e, addr_name.to_string())),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                return Err(last_err.unwrap_or(SshError::Unreachable {
                    addr: addr_name.to_string(),
                    detail: "no address could be reached".into(),
                }));
            }
        };
        stream.set_nodelay(true).ok();
        phase.store(2, Ordering::Relaxed);

        let mut preferred = russh::Preferred::default();
        let known = opts
            .verifier
            .known_algorithms(&target.host, target.port)
            .await;
        if !known.is_empty() {
            preferred.key = prefer_known(&preferred.key, &known).into();
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
        let config = Arc::new(client::Config {
            preferred,
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..Default::default()
        });
        let handler = Handler {
            host: target.host.clone(),
            port: target.port,
            verifier: opts.verifier.clone(),
        };
        let mut handle = client::connect_stream(config, stream, handler)
            .await
            .map_err(|e| match e {
                SshError::ConnectionLost { .. } => SshError::Protocol {
                    addr: addr_name.to_string(),
                    detail: "the server closed the connection during the handshake".into(),
                },
                SshError::Protocol { detail, .. } => SshError::Protocol {
                    addr: addr_name.to_string(),
                    detail,
                },
                SshError::Refused { .. } => SshError::Refused {
                    addr: addr_name.to_string(),
                },
                other => other,
            })?;
        phase.store(3, Ordering::Relaxed);
        authenticate(&mut handle, target, &opts.keys).await?;
        phase.store(4, Ordering::Relaxed);
        Ok(Self {
            handle,
            addr: addr_name.to_string(),
            channels: Semaphore::new(opts.max_channels.clamp(1, 9)),
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

    /// Says goodbye to the server; bounded so a dead peer cannot hold us.
    pub async fn close(self) {
        let bye = self.handle.disconnect(Disconnect::ByApplication, "", "en");
        tokio::time::timeout(Duration::from_secs(2), bye).await.ok();
    }
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

async fn authenticate(
    handle: &mut client::Handle<Handler>,
    target: &Target,
    keys: &[ClientKey],
) -> Result<(), SshError> {
    let mut rsa_hash = None;
    for key in keys {
        let hash = if key.key.algorithm().is_rsa() {
            if rsa_hash.is_none() {
                rsa_hash = Some(handle.best_supported_rsa_hash().await?.flatten());
            }
            rsa_hash.flatten()
        } else {
            None
        };
        let with_hash = PrivateKeyWithHashAlg::new(key.key.clone(), hash);
        match handle
            .authenticate_publickey(target.user.clone(), with_hash)
            .await?
        {
            AuthResult::Success => {
                tracing::debug!(target = %target, key = %key.path.display(), "authenticated");
                return Ok(());
            }
            AuthResult::Failure { .. } => {
                tracing::debug!(target = %target, key = %key.path.display(), "key rejected");
            }
        }
    }
    Err(SshError::AuthFailed {
        target: target.to_string(),
        tried: match keys.len() {
            0 => "no keys: none configured".into(),
            1 => "1 key".into(),
            n => format!("{n} keys"),
        },
    })
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
