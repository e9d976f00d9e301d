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
use super::hostkey::{HostKeyPolicy, HostKeyVerifier, KnownHostsPins, PinStore};
use super::jump::{self, Hop, JumpHost, MAX_HOPS};
use super::proxy::{self, ProxyCommand};
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

/// Whose host key policy applies to a host the configuration sets
/// StrictHostKeyChecking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRule {
    /// The caller's: it was given explicitly (`probe --host-key-policy`).
    Caller,
    /// The file's, as ssh does (`probe` without the flag).
    Config,
    /// The stricter of the two: a file never weakens the service's
    /// `--host-key-policy`, it can only tighten it for its hosts.
    Stricter,
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
    /// How the configuration's StrictHostKeyChecking combines with
    /// `verifier.policy`.
    pub policy_rule: PolicyRule,
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
        // The first link's own ProxyCommand carries it, as in ssh: the
        // first jump host's, else the target's (unless the request chose
        // its own route).
        let first_proxy = match jump_hosts.first() {
            Some((h, c)) => c.proxy_command.clone().map(|pc| (pc, h.host.clone())),
            None if dest.proxy_jump.is_none() => {
                hc.proxy_command.clone().map(|pc| (pc, dest.host.clone()))
            }
            None => None,
        };
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
        let proxy_command = match first_proxy {
            None => None,
            Some((command, original)) => {
                let link = hops.first().map_or(&target, |h: &Hop| &h.target);
                Some(ProxyCommand {
                    script: proxy::script(&command)
                        .map_err(|e| RouteError::Config(format!("ProxyCommand {e}")))?,
                    host: link.host.clone(),
                    port: link.port,
                    user: link.user.clone(),
                    original,
                })
            }
        };
        Ok(Route {
            options: ConnectOptions {
                identities: Arc::new(self.identities_for(&hc).await?),
                agent: self.agent.clone(),
                verifier: self.verifier_for(&hc),
                connect_timeout,
                max_channels: self.max_channels,
                jump: hops,
                proxy_command,
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
        let policy = match (self.policy_rule, hc.strict_host_key_checking) {
            (_, None) | (PolicyRule::Caller, _) => self.verifier.policy,
            (PolicyRule::Config, Some(p)) => p,
            (PolicyRule::Stricter, Some(p)) => stricter(p, self.verifier.policy),
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
            host_key_alias: hc.host_key_alias.clone(),
        }
    }
}

/// strict > tofu > insecure-accept-any.
fn stricter(a: HostKeyPolicy, b: HostKeyPolicy) -> HostKeyPolicy {
    let rank = |p: HostKeyPolicy| match p {
        HostKeyPolicy::Strict => 2,
        HostKeyPolicy::Tofu => 1,
        HostKeyPolicy::InsecureAcceptAny => 0,
    };
    if rank(a) >= rank(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::auth::Passphrase;
    use crate::ssh::config::ConfigKind;
    use std::path::Path;

    fn router(config: &str, rule: PolicyRule, policy: HostKeyPolicy) -> Router {
        let local = Local {
            home: PathBuf::from("/nonexistent"),
            user: "op".into(),
        };
        Router {
            config: Some(Arc::new(
                SshConfig::parse(config, Path::new("cfg"), ConfigKind::User, &local)
                    .expect("config"),
            )),
            local,
            keyring: Arc::new(Keyring::new(
                Passphrase::none("--passphrase-file"),
                Vec::new(),
            )),
            identities: Vec::new(),
            default_identities: Vec::new(),
            agent: None,
            verifier: HostKeyVerifier {
                policy,
                known_hosts: None,
                pins: None,
                host_key_alias: None,
            },
            policy_rule: rule,
            known_hosts_explicit: false,
            pins_follow_known_hosts: false,
            connect_timeout: Duration::from_secs(10),
            connect_timeout_explicit: false,
            max_channels: 8,
            default_port: 22,
        }
    }

    const TOPOLOGY: &str = "\
Host lab-*
    StrictHostKeyChecking no
Host web
    HostName 10.0.2.2
    ProxyJump inner
    StrictHostKeyChecking yes
Host inner
    HostName 10.0.1.9
    Port 2222
    ProxyJump ops@bastion
Host bastion
    HostName bastion.example.org
    ConnectTimeout 3
Host *
    User scanner
";

    #[tokio::test]
    async fn aliases_chain_through_the_first_hops_own_proxy_jump() {
        let r = router(TOPOLOGY, PolicyRule::Config, HostKeyPolicy::Tofu);
        let route = r
            .route(&Destination {
                host: "web".into(),
                ..Default::default()
            })
            .await
            .expect("route");
        assert_eq!(route.target.to_string(), "scanner@10.0.2.2:22");
        let hops: Vec<String> = route
            .options
            .jump
            .iter()
            .map(|h| h.target.to_string())
            .collect();
        assert_eq!(
            hops,
            ["ops@bastion.example.org:22", "scanner@10.0.1.9:2222"]
        );
        assert_eq!(route.options.verifier.policy, HostKeyPolicy::Strict);
        // ConnectTimeout is the target's, for the whole chain.
        assert_eq!(route.options.connect_timeout, Duration::from_secs(10));
        // A request's chain replaces the file's; "none" goes direct.
        let direct = r
            .route(&Destination {
                host: "web".into(),
                proxy_jump: Some("none".into()),
                ..Default::default()
            })
            .await
            .expect("route");
        assert!(direct.options.jump.is_empty());
        let by_request = r
            .route(&Destination {
                host: "web".into(),
                user: Some("root".into()),
                port: Some(2200),
                proxy_jump: Some("bastion,10.9.9.9:23".into()),
            })
            .await
            .expect("route");
        assert_eq!(by_request.target.to_string(), "root@10.0.2.2:2200");
        let hops: Vec<String> = by_request
            .options
            .jump
            .iter()
            .map(|h| h.target.to_string())
            .collect();
        assert_eq!(
            hops,
            ["scanner@bastion.example.org:22", "scanner@10.9.9.9:23"]
        );
    }

    #[tokio::test]
    async fn loops_and_long_chains_are_refused() {
        let r = router(
            "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\n",
            PolicyRule::Config,
            HostKeyPolicy::Tofu,
        );
        let e = r
            .route(&Destination {
                host: "a".into(),
                ..Default::default()
            })
            .await
            .expect_err("a loop");
        assert!(e.to_string().contains("loop"), "{e}");
    }

    #[test]
    fn policy_rules() {
        for (rule, flag, host, want) in [
            (
                PolicyRule::Config,
                HostKeyPolicy::Tofu,
                "lab-1",
                HostKeyPolicy::InsecureAcceptAny,
            ),
            (
                PolicyRule::Caller,
                HostKeyPolicy::Tofu,
                "lab-1",
                HostKeyPolicy::Tofu,
            ),
            (
                PolicyRule::Stricter,
                HostKeyPolicy::Tofu,
                "lab-1",
                HostKeyPolicy::Tofu,
            ),
            (
                PolicyRule::Stricter,
                HostKeyPolicy::Tofu,
                "web",
                HostKeyPolicy::Strict,
            ),
            (
                PolicyRule::Stricter,
                HostKeyPolicy::Strict,
                "other",
                HostKeyPolicy::Strict,
            ),
        ] {
            let r = router(TOPOLOGY, rule, flag);
            let hc = r.host_config(host, None, None);
            assert_eq!(r.verifier_for(&hc).policy, want, "{rule:?} {flag} {host}");
        }
    }
}
