//! Configuration of `hostscan serve`: flags with `HOSTSCAN_*` environment
//! twins, validated into a typed `Config` before anything listens. Errors
//! name the setting. Secrets (API keys, the database password) never print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiKeys;
use crate::net::TlsFiles;
use crate::scan::Limits;
use crate::ssh::auth::{Keyring, Passphrase, Secret};
use crate::ssh::config::{ConfigKind, Local, Query, SshConfig};
use crate::ssh::{Agent, ClientKey, HostKeyPolicy};
use crate::store::Database;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn err(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// `hostscan serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "HOSTSCAN_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Private key file for SSH (repeatable; comma-separated in the
    /// environment). Default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exist.
    #[arg(long = "ssh-key", env = "HOSTSCAN_SSH_KEY", value_delimiter = ',')]
    pub ssh_keys: Vec<PathBuf>,
    /// Remote user when a request names none. Default: the local user.
    #[arg(long, env = "HOSTSCAN_SSH_USER")]
    pub ssh_user: Option<String>,
    /// SSH port when a request gives 0.
    #[arg(long, env = "HOSTSCAN_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,
    /// OpenSSH known_hosts file consulted first (never written by the server).
    #[arg(long, env = "HOSTSCAN_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// strict (known_hosts only), tofu (pin unknown hosts in the database,
    /// refuse changed keys) or insecure-accept-any.
    #[arg(long, env = "HOSTSCAN_HOST_KEY_POLICY", default_value = "tofu")]
    pub host_key_policy: HostKeyPolicy,
    /// Scans run at once by this replica.
    #[arg(long, env = "HOSTSCAN_WORKERS", default_value_t = 32)]
    pub workers: usize,
    /// Seconds for DNS, TCP connect, SSH handshake and login.
    #[arg(long, env = "HOSTSCAN_CONNECT_TIMEOUT", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds per remote command.
    #[arg(long, env = "HOSTSCAN_COMMAND_TIMEOUT", default_value_t = 30)]
    pub command_timeout: u64,
    /// Seconds for a whole scan.
    #[arg(long, env = "HOSTSCAN_SCAN_TIMEOUT", default_value_t = 300)]
    pub scan_timeout: u64,
    /// Bytes of output kept per command; more is a step error.
    #[arg(long, env = "HOSTSCAN_MAX_OUTPUT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_output_bytes: usize,
    /// SSH channels open at once per scan (OpenSSH allows 10 sessions).
    #[arg(long, env = "HOSTSCAN_SSH_CHANNELS", default_value_t = 8)]
    pub ssh_channels: usize,
    /// API key clients must send as `authorization: Bearer <key>`
    /// (repeatable; comma-separated in the environment).
    #[arg(
        long = "api-key",
        env = "HOSTSCAN_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Allow listening on a non-loopback address without API keys.
    #[arg(long, env = "HOSTSCAN_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Seconds a worker's claim on a scan lasts without a heartbeat.
    #[arg(long, env = "HOSTSCAN_LEASE_TIMEOUT", default_value_t = 30)]
    pub lease_timeout: u64,
    /// Seconds running scans get to finish after SIGTERM before they are requeued.
    #[arg(long, env = "HOSTSCAN_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// Seconds of silence after which a WatchScan stream gets a heartbeat.
    #[arg(long, env = "HOSTSCAN_WATCH_HEARTBEAT", default_value_t = 10)]
    pub watch_heartbeat: u64,
    /// Database connections in the pool.
    #[arg(long, env = "HOSTSCAN_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Delete finished scans older than this (e.g. 90d, 12w, 36h), keeping
    /// each host's newest completed scan. Default: keep everything.
    #[arg(long, env = "HOSTSCAN_RETENTION", value_parser = parse_age)]
    pub retention: Option<Duration>,

    // --- Reaching hosts: OpenSSH client configuration, agent, encrypted keys.
    /// OpenSSH client configuration (the ssh_config(5) subset hostscan
    /// uses): host aliases, users, ports, jump hosts and keys per host
    /// pattern. Not read unless given.
    #[arg(long, env = "HOSTSCAN_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// ssh-agent socket whose keys and certificates are offered. The server
    /// never reads SSH_AUTH_SOCK by itself.
    #[arg(long, env = "HOSTSCAN_SSH_AUTH_SOCK")]
    pub ssh_auth_sock: Option<PathBuf>,
    /// File whose first line is the passphrase of encrypted key files
    /// (--ssh-key and the configuration's IdentityFile).
    #[arg(long, env = "HOSTSCAN_SSH_KEY_PASSPHRASE_FILE")]
    pub ssh_key_passphrase_file: Option<PathBuf>,

    // The gRPC port in production: TLS, connection limits, start-up, metrics.
    /// PEM certificate chain (leaf first) for TLS on the gRPC port; needs
    /// --tls-key. Re-read with the key on SIGHUP.
    #[arg(long, env = "HOSTSCAN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HOSTSCAN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate issued by
    /// one of them (mTLS). API keys still apply.
    #[arg(long, env = "HOSTSCAN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow a non-loopback --listen without TLS (e.g. behind a mesh that
    /// encrypts).
    #[arg(long, env = "HOSTSCAN_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Connections open at once on the gRPC port (lowered to fit the
    /// open-file limit). At the limit, a connection still in its handshake
    /// makes room for a new one; established ones are never dropped.
    #[arg(long, env = "HOSTSCAN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Calls (HTTP/2 streams) open at once per connection.
    #[arg(
        long,
        env = "HOSTSCAN_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 1024
    )]
    pub max_streams_per_connection: u32,
    /// Seconds a new connection has for its TLS handshake and HTTP/2
    /// preface before it is closed.
    #[arg(long, env = "HOSTSCAN_HANDSHAKE_TIMEOUT", default_value_t = 5)]
    pub handshake_timeout: u64,
    /// Seconds of silence from a client before the server sends it an
    /// HTTP/2 PING (gRPC's keepalive time).
    #[arg(long, env = "HOSTSCAN_HTTP2_KEEPALIVE_INTERVAL", default_value_t = 30)]
    pub http2_keepalive_interval: u64,
    /// Seconds the client has to answer that PING before its connection is
    /// closed, with every call on it (gRPC's keepalive timeout).
    #[arg(long, env = "HOSTSCAN_HTTP2_KEEPALIVE_TIMEOUT", default_value_t = 20)]
    pub http2_keepalive_timeout: u64,
    /// Seconds to wait for the database at start-up (health reports
    /// NOT_SERVING meanwhile) before exiting with an error.
    #[arg(long, env = "HOSTSCAN_DATABASE_WAIT", default_value_t = 60)]
    pub database_wait: u64,
    /// Address for Prometheus metrics (`GET /metrics`); off when unset.
    #[arg(long, env = "HOSTSCAN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// An age as `parse_age` reads it: `90d`, `36h`, `90m`.
pub fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// An age such as `90d`, `12w`, `36h` or `1h 30m` (at least one minute).
pub fn parse_age(value: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not an age like 90d, 12w or 36h: {e}"))?;
    if age < Duration::from_secs(60) {
        return Err(format!("{value:?} is shorter than a minute"));
    }
    Ok(age)
}

/// Where the data lives: flags shared by `serve`, `migrate` and friends.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// Database URL: postgres://user@host/db (production, several replicas)
    /// or sqlite:///path/to/file.db. Default: the embedded SQLite database
    /// in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded database (hostscan.db) when no
    /// --database-url is given. Default: $XDG_DATA_HOME/hostscan, else
    /// ~/.local/share/hostscan.
    #[arg(long, env = "HOSTSCAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The database these flags name; the error names the setting.
    pub fn database(&self) -> Result<Database, ConfigError> {
        match self.database_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                Database::parse(url).map_err(|m| err("--database-url/DATABASE_URL", m))
            }
            _ => {
                let dir = match &self.data_dir {
                    Some(dir) => dir.clone(),
                    None => crate::store::default_data_dir().ok_or_else(|| {
                        err(
                            "--data-dir/HOSTSCAN_DATA_DIR",
                            "neither XDG_DATA_HOME nor HOME is set; give a directory for the embedded database",
                        )
                    })?,
                };
                Ok(Database::Sqlite(dir.join(crate::store::SQLITE_FILE)))
            }
        }
    }
}

/// Validated configuration of the service.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: Database,
    /// The SSH identities and ssh_config as loaded at start-up.
    pub ssh: SshSetup,
    /// Where they came from, to load them again on SIGHUP.
    pub ssh_source: SshSource,
    pub ssh_user: String,
    pub ssh_port: u16,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub workers: usize,
    pub connect_timeout: Duration,
    pub limits: Limits,
    pub ssh_channels: usize,
    pub api_keys: ApiKeys,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    pub watch_heartbeat: Duration,
    pub db_pool_size: u32,
    /// Finished scans older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// TLS on the gRPC port, if configured.
    pub tls: Option<TlsFiles>,
    /// Limits of the gRPC port's accept loop (`max_connections` as asked;
    /// `serve` lowers it to fit the open-file limit).
    pub net: crate::net::Settings,
    pub max_streams_per_connection: u32,
    /// HTTP/2 keepalive: PING a client silent this long, and close its
    /// connection when the PING is not answered within `http2_keepalive_timeout`.
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub database_wait: Duration,
    pub metrics_listen: Option<SocketAddr>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &self.database.display())
            .field("ssh_keys", &self.ssh.ssh_keys)
            .field("keyring", &self.ssh.keyring)
            .field(
                "ssh_config",
                &self.ssh.ssh_config.as_ref().map(|c| &c.sources),
            )
            .field("agent", &self.ssh.agent)
            .field("ssh_user", &self.ssh_user)
            .field("ssh_port", &self.ssh_port)
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("workers", &self.workers)
            .field("connect_timeout", &self.connect_timeout)
            .field("limits", &self.limits)
            .field("api_keys", &self.api_keys)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_string(),
    }
}

/// The local user name, for defaults.
pub fn local_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "root".into())
}

/// `~/.ssh/<name>` for the default key files that exist.
pub fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| Path::new(&home).join(".ssh").join(n))
        .filter(|p| p.is_file())
        .collect()
}

/// Loads key files, naming `setting` in errors.
pub fn load_keys(
    paths: &[PathBuf],
    setting: &'static str,
) -> Result<Arc<[ClientKey]>, ConfigError> {
    let paths = if paths.is_empty() {
        default_identities()
    } else {
        paths.to_vec()
    };
    if paths.is_empty() {
        return Err(err(
            setting,
            "no SSH key given and none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa exists",
        ));
    }
    paths
        .iter()
        .map(|p| ClientKey::load(p).map_err(|e| err(setting, e.to_string())))
        .collect()
}

const SSH_KEY: &str = "--ssh-key/HOSTSCAN_SSH_KEY";
const SSH_CONFIG: &str = "--ssh-config/HOSTSCAN_SSH_CONFIG";
const SSH_AUTH_SOCK: &str = "--ssh-auth-sock/HOSTSCAN_SSH_AUTH_SOCK";
const SSH_KEY_PASSPHRASE_FILE: &str = "--ssh-key-passphrase-file/HOSTSCAN_SSH_KEY_PASSPHRASE_FILE";

/// The settings the service's SSH identities come from (`--ssh-key`,
/// `--ssh-config`, `--ssh-auth-sock`, `--ssh-key-passphrase-file`), kept
/// to load them again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct SshSource {
    /// As given; empty means `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`
    /// (those that exist when loaded).
    pub ssh_keys: Vec<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    pub ssh_auth_sock: Option<PathBuf>,
    pub ssh_key_passphrase_file: Option<PathBuf>,
}

/// The service's SSH identities: agent, passphrase, configuration, and
/// every key file it names, loaded and decrypted at once, so that start-up
/// (or a SIGHUP reload) fails naming the setting rather than a scan later.
#[derive(Debug, Clone)]
pub struct SshSetup {
    /// Key files offered to every host: `--ssh-key`, else the default
    /// `~/.ssh/id_*` that existed when loaded.
    pub ssh_keys: Vec<PathBuf>,
    /// Decrypted keys, by file.
    pub keyring: Arc<Keyring>,
    pub ssh_config: Option<Arc<SshConfig>>,
    pub agent: Option<Agent>,
}

impl SshSetup {
    /// Reads and decrypts everything `args` names. Blocking (files, the
    /// agent): call it off the async threads.
    pub fn load(args: &SshSource) -> Result<Self, ConfigError> {
        let agent = args.ssh_auth_sock.as_ref().map(Agent::new);
        let agent_keys = match &agent {
            Some(a) => a
                .identities_blocking(std::time::Duration::from_secs(5))
                .map_err(|e| err(SSH_AUTH_SOCK, e))?,
            None => Vec::new(),
        };
        let secret = match &args.ssh_key_passphrase_file {
            Some(p) => Some(Secret::from_file(p).map_err(|e| err(SSH_KEY_PASSPHRASE_FILE, e))?),
            None => None,
        };
        let keyring = Arc::new(Keyring::new(
            Passphrase {
                secret,
                prompt: false,
                setting: "--ssh-key-passphrase-file (HOSTSCAN_SSH_KEY_PASSPHRASE_FILE)",
            },
            agent_keys,
        ));
        let local = Local::from_env();
        let ssh_config = match &args.ssh_config {
            Some(p) => Some(Arc::new(
                SshConfig::load(p, ConfigKind::User, &local)
                    .map_err(|e| err(SSH_CONFIG, e.to_string()))?,
            )),
            None => None,
        };
        let ssh_keys = if args.ssh_keys.is_empty() {
            default_identities()
        } else {
            args.ssh_keys.clone()
        };
        if ssh_keys.is_empty() && agent.is_none() && ssh_config.is_none() {
            // Serve anyway: the API, the database and the watchers work, and
            // every scan fails AUTH_FAILED saying no key is configured.
            tracing::warn!(
                "no SSH key: no --ssh-key (HOSTSCAN_SSH_KEY) given and none of ~/.ssh/id_ed25519, \
                 id_ecdsa, id_rsa exists, and no --ssh-auth-sock or --ssh-config; scans will fail \
                 with AUTH_FAILED until one exists and the server gets a SIGHUP (or restarts)"
            );
        }
        for path in &ssh_keys {
            keyring.get(path).map_err(|e| err(SSH_KEY, e.to_string()))?;
        }
        if let Some(config) = &ssh_config {
            for path in config.static_key_files(&local) {
                if path.exists() {
                    keyring
                        .get(&path)
                        .map_err(|e| err(SSH_CONFIG, format!("IdentityFile {e}")))?;
                } else {
                    tracing::warn!(key = %path.display(), "IdentityFile in --ssh-config does not exist; hosts that name it will not be offered it");
                }
            }
        }
        Ok(Self {
            ssh_keys,
            keyring,
            ssh_config,
            agent,
        })
    }
}

/// The SSH setup in force, swapped whole by a SIGHUP reload; a scan takes
/// the one current when it starts and keeps it to its end.
pub type SharedSsh = Arc<arc_swap::ArcSwap<SshSetup>>;

impl Config {
    /// Users and ports the `--ssh-config` file in force gives per host, for
    /// StartScan requests that name none; `None` without `--ssh-config`.
    pub fn per_host_defaults(&self, ssh: &SharedSsh) -> Option<Arc<crate::api::PerHost>> {
        self.ssh_source.ssh_config.as_ref()?;
        let ssh = Arc::clone(ssh);
        let local = Local::from_env();
        Some(Arc::new(move |host: &str| {
            let Some(config) = ssh.load().ssh_config.clone() else {
                return (None, None);
            };
            let c = config.resolve(
                &Query {
                    host,
                    ..Default::default()
                },
                &local,
            );
            (c.user, c.port)
        }))
    }
}

fn secs(setting: &'static str, value: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(Duration::from_secs(value))
    } else {
        Err(err(
            setting,
            format!("must be {min}-{max} seconds, got {value}"),
        ))
    }
}

impl ServeArgs {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let database = self.database.database()?;
        let api_keys: Vec<String> = self
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if api_keys.iter().any(|k| k.len() < 16) {
            return Err(err(
                "--api-key/HOSTSCAN_API_KEYS",
                "each key must be at least 16 characters",
            ));
        }
        if !self.listen.ip().is_loopback() && api_keys.is_empty() && !self.insecure_no_auth {
            return Err(err(
                "--listen/HOSTSCAN_LISTEN",
                format!(
                    "{} is not a loopback address and no API key is configured; set --api-key (HOSTSCAN_API_KEYS) or pass --insecure-no-auth",
                    self.listen
                ),
            ));
        }
        let tls = self.tls()?;
        if !self.listen.ip().is_loopback() && tls.is_none() && !self.insecure_plaintext {
            return Err(err(
                "--listen/HOSTSCAN_LISTEN",
                format!(
                    "{} is not a loopback address and TLS is off; set --tls-cert and --tls-key (HOSTSCAN_TLS_CERT, HOSTSCAN_TLS_KEY) or pass --insecure-plaintext",
                    self.listen
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(err(
                "--max-connections/HOSTSCAN_MAX_CONNECTIONS",
                "must be 1-1000000",
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Err(err(
                "--max-streams-per-connection/HOSTSCAN_MAX_STREAMS_PER_CONNECTION",
                "must be at least 1",
            ));
        }
        let net = crate::net::Settings {
            max_connections: self.max_connections,
            handshake_timeout: secs(
                "--handshake-timeout/HOSTSCAN_HANDSHAKE_TIMEOUT",
                self.handshake_timeout,
                1,
                60,
            )?,
        };
        let http2_keepalive_interval = secs(
            "--http2-keepalive-interval/HOSTSCAN_HTTP2_KEEPALIVE_INTERVAL",
            self.http2_keepalive_interval,
            1,
            7200,
        )?;
        let http2_keepalive_timeout = secs(
            "--http2-keepalive-timeout/HOSTSCAN_HTTP2_KEEPALIVE_TIMEOUT",
            self.http2_keepalive_timeout,
            1,
            600,
        )?;
        let database_wait = secs(
            "--database-wait/HOSTSCAN_DATABASE_WAIT",
            self.database_wait,
            0,
            86400,
        )?;
        if !(1..=4096).contains(&self.workers) {
            return Err(err("--workers/HOSTSCAN_WORKERS", "must be 1-4096"));
        }
        if !(1..=9).contains(&self.ssh_channels) {
            return Err(err(
                "--ssh-channels/HOSTSCAN_SSH_CHANNELS",
                "must be 1-9 (OpenSSH allows 10 sessions per connection)",
            ));
        }
        if self.max_output_bytes < 4096 {
            return Err(err(
                "--max-output-bytes/HOSTSCAN_MAX_OUTPUT_BYTES",
                "must be at least 4096",
            ));
        }
        if !(2..=1000).contains(&self.db_pool_size) {
            return Err(err(
                "--db-pool-size/HOSTSCAN_DB_POOL_SIZE",
                "must be 2-1000",
            ));
        }
        let ssh_source = SshSource {
            ssh_keys: self.ssh_keys.clone(),
            ssh_config: self.ssh_config.clone(),
            ssh_auth_sock: self.ssh_auth_sock.clone(),
            ssh_key_passphrase_file: self.ssh_key_passphrase_file.clone(),
        };
        let ssh = SshSetup::load(&ssh_source)?;
        let ssh_user = self.ssh_user.unwrap_or_else(local_user);
        if crate::api::validate_username(&ssh_user).is_err() {
            return Err(err(
                "--ssh-user/HOSTSCAN_SSH_USER",
                format!("{ssh_user:?} is not a valid user name"),
            ));
        }
        if self.ssh_port == 0 {
            return Err(err("--ssh-port/HOSTSCAN_SSH_PORT", "must be 1-65535"));
        }
        if let Some(kh) = &self.known_hosts
            && !kh.is_file()
        {
            return Err(err(
                "--known-hosts/HOSTSCAN_KNOWN_HOSTS",
                format!("{} does not exist", kh.display()),
            ));
        }
        if self.host_key_policy == HostKeyPolicy::Strict && self.known_hosts.is_none() {
            return Err(err(
                "--host-key-policy/HOSTSCAN_HOST_KEY_POLICY",
                "strict needs --known-hosts",
            ));
        }
        let command_timeout = secs(
            "--command-timeout/HOSTSCAN_COMMAND_TIMEOUT",
            self.command_timeout,
            1,
            3600,
        )?;
        let scan_timeout = secs(
            "--scan-timeout/HOSTSCAN_SCAN_TIMEOUT",
            self.scan_timeout,
            1,
            86400,
        )?;
        let lease = secs(
            "--lease-timeout/HOSTSCAN_LEASE_TIMEOUT",
            self.lease_timeout,
            2,
            3600,
        )?;
        Ok(Config {
            listen: self.listen,
            database,
            ssh,
            ssh_source,
            ssh_user,
            ssh_port: self.ssh_port,
            known_hosts: self.known_hosts,
            host_key_policy: self.host_key_policy,
            workers: self.workers,
            connect_timeout: secs(
                "--connect-timeout/HOSTSCAN_CONNECT_TIMEOUT",
                self.connect_timeout,
                1,
                600,
            )?,
            limits: Limits {
                command_timeout,
                scan_timeout,
                max_output_bytes: self.max_output_bytes,
            },
            ssh_channels: self.ssh_channels,
            api_keys: ApiKeys::new(&api_keys),
            lease,
            shutdown_grace: secs(
                "--shutdown-grace/HOSTSCAN_SHUTDOWN_GRACE",
                self.shutdown_grace,
                0,
                3600,
            )?,
            watch_heartbeat: secs(
                "--watch-heartbeat/HOSTSCAN_WATCH_HEARTBEAT",
                self.watch_heartbeat,
                1,
                15,
            )?,
            db_pool_size: self.db_pool_size,
            retention: self.retention,
            tls,
            net,
            max_streams_per_connection: self.max_streams_per_connection,
            http2_keepalive_interval,
            http2_keepalive_timeout,
            database_wait,
            metrics_listen: self.metrics_listen,
        })
    }

    /// The TLS files, checked by loading them once: errors name the setting
    /// and the file.
    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let files = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    return Err(err(
                        "--tls-client-ca/HOSTSCAN_TLS_CLIENT_CA",
                        "needs --tls-cert and --tls-key",
                    ));
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            },
            (Some(_), None) => {
                return Err(err(
                    "--tls-key/HOSTSCAN_TLS_KEY",
                    "is required with --tls-cert",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "--tls-cert/HOSTSCAN_TLS_CERT",
                    "is required with --tls-key",
                ));
            }
        };
        files.load().map_err(|e| ConfigError {
            setting: e.setting,
            message: format!("{}: {}", e.path.display(), e.message),
        })?;
        Ok(Some(files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_age("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_age("30s").is_err());
        assert!(parse_age("ninety days").is_err());
        assert_eq!(format_age(Duration::from_secs(90 * 86400)), "90d");
        assert_eq!(format_age(Duration::from_secs(5400)), "90m");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:s3cret@db:5432/x"),
            "postgres://u:<redacted>@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("host=db"), "host=db");
    }
}
