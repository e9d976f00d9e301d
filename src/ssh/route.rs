//! From a requested destination to a route: the target as it will be
//! dialled, the jump hosts on the way, and for each of them what to offer
//! and how to check its host key.
//!
//! Applies the precedence ssh uses: what the caller gave (command line or
//! request) wins, then the OpenSSH client configuration (first value wins,
//! `config`), then the caller's defaults. A jump host is resolved through
//! the configuration like any host; the first one's own `ProxyJump` is
//! followed, as `ssh -J` does. Key files are decrypted once by the
//! `Keyring`, off the async threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::auth::{Agent, Identities, KeyError, Keyring, Loaded};
use super::config::{HostConfig, Local, Query, SshConfig};
use super::hostkey::{HostKeyVerifier, KnownHostsPins, PinStore};
use super::jump::{self, Hop, JumpHost, MAX_HOPS};
use super::{ConnectOptions, SshError, Target};

/// Why a route could not be planned; nothing was dialled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Config(String),
}

impl From<RouteError> for SshError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Key(k) => SshError::Key(k.to_string()),
            RouteError::Config(c) => SshError::Config(c),
        }
    }
}

/// A destination as asked for.
#[derive(Debug, Clone, Default)]
pub struct Destination {
    /// A `Host` alias, a DNS name or an address.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// A ProxyJump value that overrides the configuration's (`none` for a
    /// direct connection); `None` leaves the configuration's.
    pub proxy_jump: Option<String>,
}

/// What `Router::route` plans.
#[derive(Debug, Clone)]
pub struct Route {
    /// The target as dialled (after `HostName`).
    pub target: Target,
    pub options: ConnectOptions,
}

/// Plans routes. Built once (by `probe` or the service) and shared.
#[derive(Debug, Clone)]
pub struct Router {
    pub config: Option<Arc<SshConfig>>,
    pub local: Local,
    pub keyring: Arc<Keyring>,
    /// Key files offered to every host, first (`--identity`, `--ssh-key`).
    pub identities: Vec<PathBuf>,
    /// Offered when neither `identities` nor the configuration names a key.
    pub default_identities: Vec<PathBuf>,
    pub agent: Option<Agent>,
    /// Default policy, known_hosts file and pin store.
    pub verifier: HostKeyVerifier,
    /// The policy was given explicitly and wins over StrictHostKeyChecking.
    pub policy_explicit: bool,
    /// `verifier.known_hosts` was given explicitly and wins over
    /// UserKnownHostsFile.
    pub known_hosts_explicit: bool,
    /// TOFU pins go to a host's UserKnownHostsFile (probe) rather than to
    /// `verifier.pins` (the service's database).
    pub pins_follow_known_hosts: bool,
    pub connect_timeout: Duration,
    /// The timeout was given explicitly and wins over ConnectTimeout.
    pub connect_timeout_explicit: bool,
    pub max_channels: usize,
    pub default_port: u16,
}

impl Router {
    /// What the configuration says about `host` as given.
    pub fn host_config(&self, host: &str, user: Option<&str>, port: Option<u16>) -> HostConfig {
        match &self.config {
            Some(c) => c.resolve(&Query { host, user, port }, &self.local),
            None => HostConfig::default(),
        }
    }

    /// The user and port a scan of `host` uses when the request names
    /// none: the configuration's, else the defaults.
    pub fn defaults_for(&self, host: &str) -> (Option<String>, Option<u16>) {
        let c = self.host_config(host, None, None);
        (c.user, c.port)
    }

    /// Plans the route to `dest`. Loads (and decrypts) key files the first
    /// time they are needed.
    pub async fn route(&self, dest: &Destination) -> Result<Route, RouteError> {
        let hc = self.host_config(&dest.host, dest.user.as_deref(), dest.port);
        let target = Target {
            host: hc.hostname.clone().unwrap_or_else(|| dest.host.clone()),
            port: dest.port.or(hc.port).unwrap_or(self.default_port),
            user: dest
                .user
                .clone()
                .or_else(|| hc.user.clone())
                .unwrap_or_else(|| self.local.user.clone()),
        };
        let spec = dest.proxy_jump.clone().or_else(|| hc.proxy_jump.clone());
        let mut jump_hosts = Vec::new();
        if let Some(spec) = spec {
            let list = jump::parse_proxy_jump(&spec)
                .map_err(|e| RouteError::Config(format!("ProxyJump {spec:?} {e}")))?;
            if let Some(list) = list {
                self.expand(list, &mut jump_hosts, 0)?;
            }
        }
        let mut hops = Vec::with_capacity(jump_hosts.len());
        for (h, hop_config) in jump_hosts {
            let target = Target {
                host: hop_config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| h.host.clone()),
                port: h.port.or(hop_config.port).unwrap_or(22),
                user: h
                    .user
                    .clone()
                    .or_else(|| hop_config.user.clone())
                    .unwrap_or_else(|| self.local.user.clone()),
            };
            hops.push(Hop {
                target,
                identities: Arc::new(self.identities_for(&hop_config).await?),
                verifier: self.verifier_for(&hop_config),
            });
        }
        let connect_timeout = match (self.connect_timeout_explicit, hc.connect_timeout) {
            (false, Some(t)) => t,
            _ => self.connect_timeout,
        };
        Ok(Route {
            options: ConnectOptions {
                identities: Arc::new(self.identities_for(&hc).await?),
                agent: self.agent.clone(),
                verifier: self.verifier_for(&hc),
                connect_timeout,
                max_channels: self.max_channels,
                jump: hops,
            },
            target,
        })
    }

    /// Appends `list` to `out`, preceded by the first hop's own ProxyJump
    /// (followed recursively, as `ssh -J` does), within `MAX_HOPS`.
    fn expand(
        &self,
        list: Vec<JumpHost>,
        out: &mut Vec<(JumpHost, HostConfig)>,
        depth: usize,
    ) -> Result<(), RouteError> {
        if depth > MAX_HOPS {
            return Err(RouteError::Config(format!(
                "ProxyJump chains through the configuration more than {MAX_HOPS} deep (a loop?)"
            )));
        }
        for (i, h) in list.into_iter().enumerate() {
            let hc = self.host_config(&h.host, h.user.as_deref(), h.port);
            if i == 0
                && let Some(spec) = &hc.proxy_jump
            {
                let inner = jump::parse_proxy_jump(spec).map_err(|e| {
                    RouteError::Config(format!("ProxyJump {spec:?} (for {}) {e}", h.host))
                })?;
                if let Some(inner) = inner {
                    self.expand(inner, out, depth + 1)?;
                }
            }
            out.push((h, hc));
            if out.len() > MAX_HOPS {
                return Err(RouteError::Config(format!(
                    "the route has more than {MAX_HOPS} jump hosts"
                )));
            }
        }
        Ok(())
    }

    /// Key files for one host: the caller's, then the configuration's,
    /// else the defaults; certificates attached; IdentitiesOnly applied.
    async fn identities_for(&self, hc: &HostConfig) -> Result<Identities, RouteError> {
        let mut files: Vec<PathBuf> = self.identities.clone();
        for f in &hc.identity_files {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
        if files.is_empty() {
            files = self.default_identities.clone();
        }
        let mut loaded: Vec<Loaded> = Vec::with_capacity(files.len());
        for path in files {
            // ssh skips identity files that do not exist.
            if !self.keyring.has(&path) && !path.exists() {
                tracing::debug!(key = %path.display(), "identity file does not exist; skipped");
                continue;
            }
            let keyring = Arc::clone(&self.keyring);
            let got = if keyring.has(&path) {
                keyring.get(&path)
            } else {
                tokio::task::spawn_blocking(move || keyring.get(&path))
                    .await
                    .map_err(|e| RouteError::Config(format!("loading a key failed: {e}")))?
            };
            loaded.push(got?);
        }
        let certificates: Vec<PathBuf> = hc
            .certificate_files
            .iter()
            .filter(|p| {
                let exists = p.exists();
                if !exists {
                    tracing::warn!(certificate = %p.display(), "CertificateFile does not exist; skipped");
                }
                exists
            })
            .cloned()
            .collect();
        Ok(Identities::assemble(
            loaded,
            &certificates,
            hc.identities_only.unwrap_or(false),
        )?)
    }

    fn verifier_for(&self, hc: &HostConfig) -> HostKeyVerifier {
        let policy = match (self.policy_explicit, hc.strict_host_key_checking) {
            (false, Some(p)) => p,
            _ => self.verifier.policy,
        };
        let file = hc
            .user_known_hosts_file
            .as_ref()
            .filter(|_| !self.known_hosts_explicit);
        let (known_hosts, pins) = match file {
            Some(file) if self.pins_follow_known_hosts => (
                Some(file.clone()),
                Some(Arc::new(KnownHostsPins::new(file.clone())) as Arc<dyn PinStore>),
            ),
            Some(file) => (Some(file.clone()), self.verifier.pins.clone()),
            None => (
                self.verifier.known_hosts.clone(),
                self.verifier.pins.clone(),
            ),
        };
        HostKeyVerifier {
            policy,
            known_hosts,
            pins,
        }
    }
}
