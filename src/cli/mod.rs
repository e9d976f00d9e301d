//! Terminal commands: `probe` (the engine in-process, no server) and the
//! gRPC client commands (`scan`, `get`, `list`, `watch`, `cancel`). Output
//! is human text by default and proto3 JSON (as grpcurl prints) with
//! `--json`. Exit status: 0 for a completed scan, 1 for a failed or
//! cancelled one, 2 for a usage or RPC error; `diff` and `probe
//! --diff-against` exit as diff(1) does: 0 without changes, 1 with, 2 when
//! the scans cannot be compared.

pub mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::config::default_identities;
use crate::model::{Scan, ScanStatus, ScanType};
use crate::pb::{self, scan_service_client::ScanServiceClient};
use crate::scan::{self, Limits};
use crate::ssh::auth::{Keyring, Passphrase, Secret};
use crate::ssh::config::{ConfigKind, Local, SshConfig};
use crate::ssh::hostkey::{KnownHostsPins, PinStore};
use crate::ssh::route::{Destination, PolicyRule, Router};
use crate::ssh::{Agent, HostKeyPolicy, HostKeyVerifier};

/// Process exit status of a command.
pub type Exit = i32;

fn scan_exit(status: i32) -> Exit {
    if status == pb::ScanStatus::Completed as i32 {
        0
    } else {
        1
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Host to scan: a DNS name, an IP address or a `Host` alias of the
    /// ssh_config, optionally `user@host`.
    pub host: String,
    /// SSH port (default: the ssh_config's Port, else 22).
    #[arg(long, short)]
    pub port: Option<u16>,
    /// Remote user (default: the ssh_config's User, else the local user).
    #[arg(long, short)]
    pub user: Option<String>,
    /// Private key file (repeatable); `FILE-cert.pub` beside it is offered
    /// as its certificate. Default: the ssh_config's IdentityFile, else
    /// ~/.ssh/id_ed25519, id_ecdsa, id_rsa. Keys in the agent at
    /// $SSH_AUTH_SOCK are offered first.
    #[arg(long, short = 'i')]
    pub identity: Vec<PathBuf>,
    /// Jump hosts, OpenSSH ProxyJump syntax: [user@]host[:port][,...], or
    /// `none`. Overrides the ssh_config's ProxyJump.
    #[arg(long, short = 'J', value_name = "SPEC")]
    pub jump: Option<String>,
    /// OpenSSH client configuration to read, or `none`. Default:
    /// ~/.ssh/config, then /etc/ssh/ssh_config. Flags win over the file.
    #[arg(long, short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// File whose first line is the passphrase of encrypted key files.
    /// Without it probe asks on the terminal, if stdin is one.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// known_hosts file (default: the ssh_config's UserKnownHostsFile, else
    /// ~/.ssh/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// strict, tofu (pin unknown hosts in the known_hosts file) or
    /// insecure-accept-any. Default: the ssh_config's
    /// StrictHostKeyChecking, else tofu.
    #[arg(long)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Seconds for connect, handshake and login, for the whole chain of
    /// jump hosts (default: the ssh_config's ConnectTimeout, else 10).
    #[arg(long)]
    pub connect_timeout: Option<u64>,
    /// Seconds per remote command.
    #[arg(long, default_value_t = 30)]
    pub command_timeout: u64,
    /// Seconds for the whole scan.
    #[arg(long, default_value_t = 300)]
    pub scan_timeout: u64,
    /// Bytes of output kept per command.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_output_bytes: usize,
    /// Full scan: also packages, processes and network interfaces.
    #[arg(long)]
    pub full: bool,
    /// Print the proto3 JSON of the scan (as grpcurl would).
    #[arg(long)]
    pub json: bool,
    /// Compare this scan with a saved one (the output of `hostscan probe
    /// --json` or `hostscan get --json`) and print what changed instead of
    /// the scan (a ScanDiff with --json). Exit 0 without changes, 1 with
    /// changes, 2 when the two cannot be compared.
    #[arg(long, value_name = "FILE")]
    pub diff_against: Option<PathBuf>,
    /// With --diff-against: compare with a saved scan of another host.
    #[arg(long, requires = "diff_against")]
    pub allow_different_hosts: bool,
    /// With --diff-against: percentage points a disk's used percent must
    /// move to be listed (0-100, default 5).
    #[arg(long, value_name = "POINTS", requires = "diff_against", value_parser = percent_points)]
    pub used_percent_threshold: Option<f64>,
}

/// Percentage points, 0-100.
fn percent_points(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not 0-100 percentage points")),
    }
}

/// A saved scan, read for `probe --diff-against`: a completed scan in
/// proto3 JSON.
fn saved_scan(path: &std::path::Path) -> anyhow::Result<pb::Scan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--diff-against {}: {e}", path.display()))?;
    let scan: pb::Scan = pb::from_json(&text, "hostscan.v1.Scan").map_err(|e| {
        anyhow::anyhow!(
            "--diff-against {}: not a scan in JSON (hostscan probe --json): {e}",
            path.display()
        )
    })?;
    if scan.status != pb::ScanStatus::Completed as i32 || scan.results.is_none() {
        anyhow::bail!(
            "--diff-against {}: the saved scan is {}; only COMPLETED scans can be compared",
            path.display(),
            render::status_name(scan.status)
        );
    }
    Ok(scan)
}

/// Prints a diff (proto3 JSON, or text coloured where the terminal takes
/// it) and returns diff(1)'s exit status.
fn print_diff(json: bool, d: &pb::ScanDiff) -> Exit {
    if json {
        println!("{}", pb::to_json(d, "hostscan.v1.ScanDiff"));
    } else {
        use std::io::Write as _;
        let mut out = anstream::stdout();
        let _ = write!(out, "{}", render::diff(d));
    }
    if d.change_count == 0 { 0 } else { 1 }
}

/// The router `probe` uses: flags first, then the ssh_config, then ssh's
/// defaults. Fails (before any connection) on a bad config file, an
/// unreadable key, or an encrypted key without a passphrase.
fn probe_router(args: &ProbeArgs, local: &Local) -> anyhow::Result<Router> {
    let config = match &args.ssh_config {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(
            SshConfig::load(p, ConfigKind::User, local)
                .map_err(|e| anyhow::anyhow!("-F/--ssh-config: {e}"))?,
        ),
        None => {
            Some(SshConfig::load_default(local).map_err(|e| anyhow::anyhow!("ssh_config: {e}"))?)
        }
    };
    // As ssh: the agent at $SSH_AUTH_SOCK, if it answers.
    let agent = std::env::var_os("SSH_AUTH_SOCK")
        .filter(|s| !s.is_empty())
        .map(Agent::new);
    let agent_keys = match &agent {
        Some(a) => match a.identities_blocking(Duration::from_secs(2)) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("SSH_AUTH_SOCK: {e}; not using the agent");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let secret = match &args.passphrase_file {
        Some(p) => {
            Some(Secret::from_file(p).map_err(|e| anyhow::anyhow!("--passphrase-file: {e}"))?)
        }
        None => None,
    };
    let keyring = std::sync::Arc::new(Keyring::new(
        Passphrase {
            prompt: secret.is_none() && std::io::stdin().is_terminal(),
            secret,
            setting: "--passphrase-file",
        },
        agent_keys,
    ));
    for path in &args.identity {
        keyring
            .get(path)
            .map_err(|e| anyhow::anyhow!("--identity: {e}"))?;
    }
    let known_hosts = args
        .known_hosts
        .clone()
        .unwrap_or_else(|| local.home.join(".ssh").join("known_hosts"));
    Ok(Router {
        config: config.map(std::sync::Arc::new),
        local: local.clone(),
        keyring,
        identities: args.identity.clone(),
        default_identities: default_identities(),
        agent,
        verifier: HostKeyVerifier {
            policy: args.host_key_policy.unwrap_or_default(),
            pins: Some(
                std::sync::Arc::new(KnownHostsPins::new(known_hosts.clone()))
                    as std::sync::Arc<dyn PinStore>,
            ),
            known_hosts: Some(known_hosts),
            host_key_alias: None,
        },
        policy_rule: match args.host_key_policy {
            Some(_) => PolicyRule::Caller,
            None => PolicyRule::Config,
        },
        known_hosts_explicit: args.known_hosts.is_some(),
        pins_follow_known_hosts: true,
        connect_timeout: Duration::from_secs(args.connect_timeout.unwrap_or(10).max(1)),
        connect_timeout_explicit: args.connect_timeout.is_some(),
        max_channels: 8,
        default_port: 22,
    })
}

/// Runs one scan in-process and prints it.
pub async fn probe(args: ProbeArgs) -> anyhow::Result<Exit> {
    let (user, host) = match args.host.split_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, args.host.clone()),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let saved = match &args.diff_against {
        Some(path) => Some(saved_scan(path)?),
        None => None,
    };
    let local = Local::from_env();
    let router = probe_router(&args, &local)?;
    let destination = Destination {
        host: host.clone(),
        port: args.port,
        user: args.user.clone().or(user),
        proxy_jump: args.jump.clone(),
    };
    let route = router
        .route(&destination)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy_jump = args.jump.clone().unwrap_or_default();
    let limits = Limits {
        command_timeout: Duration::from_secs(args.command_timeout.max(1)),
        scan_timeout: Duration::from_secs(args.scan_timeout.max(1)),
        max_output_bytes: args.max_output_bytes.max(4096),
    };
    let (target, opts) = (route.target, route.options);
    if let Some(saved) = &saved
        && !args.allow_different_hosts
        && !(saved.hostname.eq_ignore_ascii_case(&host) && saved.port == u32::from(target.port))
    {
        anyhow::bail!(
            "--diff-against: the saved scan is of {}:{}, this one of {host}:{}; \
             add --allow-different-hosts to compare them",
            saved.hostname,
            saved.port,
            target.port
        );
    }
    let scan_type = if args.full {
        ScanType::Full
    } else {
        ScanType::Quick
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    let watcher = tokio::spawn(async move {
        tokio::signal::ctrl_c().await.ok();
        ctrl_c.cancel();
    });
    let verbose = !args.json && std::io::stderr().is_terminal();
    let started_at = chrono::Utc::now();
    let engine = scan::run(&target, scan_type, &opts, &limits, &tx, &cancel);
    tokio::pin!(engine);
    let outcome = loop {
        tokio::select! {
            o = &mut engine => break o,
            Some(p) = rx.recv() => if verbose {
                eprint!("\r\x1b[2K[{:>3}%] {}", p.percent, p.step);
            }
        }
    };
    watcher.abort();
    if verbose {
        eprint!("\r\x1b[2K");
    }
    let status = match &outcome.error {
        None => ScanStatus::Completed,
        Some(e) if e.kind == crate::model::ScanErrorKind::Cancelled => ScanStatus::Cancelled,
        Some(_) => ScanStatus::Failed,
    };
    let scan = Scan {
        id: 0,
        hostname: host,
        port: target.port,
        username: target.user.clone(),
        proxy_jump,
        scan_type,
        status,
        progress: if status == ScanStatus::Completed {
            100
        } else {
            0
        },
        current_step: String::new(),
        created_at: started_at,
        started_at: Some(started_at),
        completed_at: Some(chrono::Utc::now()),
        results: Some(outcome.results),
        error: outcome.error,
        request_id: None,
        sequence: 0,
    };
    let model_scan = scan;
    let scan = pb::Scan::from(&model_scan);
    if let Some(saved) = saved
        && status == ScanStatus::Completed
    {
        let base_results = saved
            .results
            .as_ref()
            .map(crate::model::ScanResults::from)
            .unwrap_or_default();
        let options = crate::diff::DiffOptions {
            used_percent_threshold: args
                .used_percent_threshold
                .unwrap_or(crate::diff::DEFAULT_USED_PERCENT_THRESHOLD),
            base_type: pb::ScanType::try_from(saved.scan_type)
                .ok()
                .and_then(pb::ScanType::to_model),
            new_type: Some(model_scan.scan_type),
            base_completed_at: saved.completed_at.as_ref().and_then(pb::from_timestamp),
            new_completed_at: model_scan.completed_at,
        };
        let d = crate::diff::diff(
            &base_results,
            model_scan.results.as_ref().unwrap_or(&Default::default()),
            &options,
        );
        let d = pb::ScanDiff::new(
            &d,
            pb::DiffedScan::from(&saved),
            pb::DiffedScan::from(&scan),
        );
        return Ok(print_diff(args.json, &d));
    }
    if args.json {
        println!("{}", pb::to_json(&scan, "hostscan.v1.Scan"));
    } else {
        print!("{}", render::scan(&scan));
    }
    if args.diff_against.is_some() {
        eprintln!(
            "error: cannot compare: the scan is {}",
            render::status_name(scan.status)
        );
        return Ok(2);
    }
    Ok(scan_exit(scan.status))
}

/// Flags shared by the client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// hostscan server URL.
    #[arg(
        long,
        env = "HOSTSCAN_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "HOSTSCAN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print proto3 JSON (as grpcurl would).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// TLS settings of the client commands, for `https://` server URLs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTls {
    /// PEM CA certificate(s) to verify the server with (https:// only).
    /// Default: the system's trusted roots.
    #[arg(long = "ca", env = "HOSTSCAN_SERVER_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS); needs --key.
    #[arg(long = "cert", env = "HOSTSCAN_CLIENT_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long = "key", env = "HOSTSCAN_CLIENT_KEY")]
    pub key: Option<PathBuf>,
    /// Name to expect in the server's certificate, when the URL's host is
    /// not in it (e.g. an IP address).
    #[arg(long = "tls-server-name", env = "HOSTSCAN_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The TLS config for `server`: `None` for http://, an error naming
    /// the flag when a file cannot be read or the flags do not fit.
    pub fn config(
        &self,
        server: &str,
    ) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
        };
        if !server.starts_with("https://") {
            if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
                anyhow::bail!("--ca, --cert and --key need an https:// --server, got {server:?}");
            }
            return Ok(None);
        }
        let mut tls = match &self.ca {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("--cert", cert)?,
                    read("--key", key)?,
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "--cert and --key go together (HOSTSCAN_CLIENT_CERT, HOSTSCAN_CLIENT_KEY)"
            ),
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Start a scan, follow its progress and print the result.
    Scan {
        #[command(flatten)]
        client: ClientArgs,
        /// Host to scan (DNS name or IP address).
        host: String,
        /// Full scan: also packages, processes and network interfaces.
        #[arg(long)]
        full: bool,
        /// SSH port (default: the server's).
        #[arg(long, short, default_value_t = 0)]
        port: u32,
        /// Remote user (default: the server's).
        #[arg(long, short, default_value = "")]
        user: String,
        /// Idempotency key: repeating it returns the same scan.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Jump hosts, OpenSSH ProxyJump syntax (default: the server's
        /// ssh_config).
        #[arg(long, short = 'J', value_name = "SPEC", default_value = "")]
        jump: String,
        /// Print the queued scan and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a scan.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
    },
    /// List scans, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only scans of this host.
        #[arg(long)]
        host: Option<String>,
        /// pending, running, completed, failed or cancelled.
        #[arg(long)]
        status: Option<ScanStatus>,
        /// quick or full.
        #[arg(long = "type")]
        scan_type: Option<ScanType>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Token from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Follow a scan's progress until it ends.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        /// Resume after this event sequence.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Cancel a pending or running scan.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
    },
    /// List every host ever scanned, newest activity first, with its newest
    /// completed scan's summary.
    Hosts {
        #[command(flatten)]
        client: ClientArgs,
        /// Only hosts whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only hosts running this OS (os-release ID: debian, rhel, alpine...).
        #[arg(long, default_value = "")]
        os: String,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Token from a previous page (of the same --order-by).
        #[arg(long, default_value = "")]
        page_token: String,
        /// "" (newest activity first) or "hostname" (by name, then port:
        /// pages never shift while hosts are scanned).
        #[arg(long, default_value = "")]
        order_by: String,
    },
    /// What changed on a host between two completed scans. With one id,
    /// against the newest earlier completed scan of its host of the same or
    /// a richer type. Exit 0 without changes, 1 with changes, 2 on an error.
    #[command(override_usage = "hostscan diff [OPTIONS] [BASE] SCAN")]
    Diff {
        #[command(flatten)]
        client: ClientArgs,
        /// [BASE] SCAN: scan ids.
        #[arg(value_name = "ID", num_args = 1..=2, required = true)]
        ids: Vec<i64>,
        /// Compare scans of different hosts.
        #[arg(long)]
        allow_different_hosts: bool,
        /// Percentage points a disk's used percent must move to be listed
        /// (0-100, default 5).
        #[arg(long, value_name = "POINTS", value_parser = percent_points)]
        used_percent_threshold: Option<f64>,
    },
    /// Check the server's health (exit 0 when SERVING), e.g. for container health checks.
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
}

type Client = ScanServiceClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <key>` to every request when a key is set.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Auth {
    /// `None` if there is no key or it is not printable ASCII.
    pub fn new(key: Option<&str>) -> Self {
        Self(key.and_then(|k| format!("Bearer {k}").parse().ok()))
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

async fn health(args: &ClientArgs) -> anyhow::Result<Exit> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(args).await?);
    let answer = health
        .check(HealthCheckRequest {
            service: "hostscan.v1.ScanService".into(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let status = answer.status();
    println!("{}", status.as_str_name());
    Ok(
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
            0
        } else {
            1
        },
    )
}

async fn channel(args: &ClientArgs) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .with_context(|| format!("--server {:?} is not a URL", args.server))?;
    if let Some(tls) = args.tls.config(&args.server)? {
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("TLS settings for {}", args.server))?;
    }
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the hostscan server at {}", args.server))
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let channel = channel(args).await?;
    let auth = Auth::new(args.api_key.as_deref());
    if args.api_key.is_some() && auth.0.is_none() {
        anyhow::bail!("--api-key must be printable ASCII");
    }
    Ok(ScanServiceClient::with_interceptor(channel, auth))
}

fn rpc_error(status: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn print_scan(args: &ClientArgs, scan: &pb::Scan) {
    if args.json {
        println!("{}", pb::to_json(scan, "hostscan.v1.Scan"));
    } else {
        print!("{}", render::scan(scan));
    }
}

impl ClientCommand {
    fn args(&self) -> &ClientArgs {
        match self {
            Self::Scan { client, .. }
            | Self::Get { client, .. }
            | Self::List { client, .. }
            | Self::Watch { client, .. }
            | Self::Cancel { client, .. }
            | Self::Hosts { client, .. }
            | Self::Diff { client, .. }
            | Self::Health { client } => client,
        }
    }
}

pub async fn client(command: ClientCommand) -> anyhow::Result<Exit> {
    let args = command.args().clone();
    if let ClientCommand::Health { .. } = command {
        return health(&args).await;
    }
    let mut client = connect(&args).await?;
    match command {
        ClientCommand::Scan {
            host,
            full,
            port,
            user,
            request_id,
            no_wait,
            jump,
            ..
        } => {
            let scan = client
                .start_scan(pb::StartScanRequest {
                    hostname: host,
                    port,
                    username: user,
                    scan_type: if full {
                        pb::ScanType::Full
                    } else {
                        pb::ScanType::Quick
                    } as i32,
                    request_id,
                    proxy_jump: jump,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if no_wait {
                print_scan(&args, &scan);
                return Ok(0);
            }
            if !args.json {
                eprintln!("scan {} queued: {}", scan.id, render::target(&scan));
            }
            watch(&args, &mut client, scan.id, 0).await
        }
        ClientCommand::Get { id, .. } => {
            let scan = client
                .get_scan(pb::GetScanRequest { scan_id: id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_scan(&args, &scan);
            Ok(0)
        }
        ClientCommand::List {
            host,
            status,
            scan_type,
            page_size,
            page_token,
            ..
        } => {
            let page = client
                .list_scans(pb::ListScansRequest {
                    hostname: host.unwrap_or_default(),
                    status: status.map_or(0, |s| pb::ScanStatus::from(s) as i32),
                    scan_type: scan_type.map_or(0, |t| pb::ScanType::from(t) as i32),
                    page_size,
                    page_token,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if args.json {
                println!("{}", pb::to_json(&page, "hostscan.v1.ListScansResponse"));
                return Ok(0);
            }
            println!(
                "{:>8}  {:<9}  {:<5}  {:>4}  {:<20}  TARGET",
                "ID", "STATUS", "TYPE", "PCT", "CREATED"
            );
            for s in &page.scans {
                let created = s
                    .created_at
                    .as_ref()
                    .and_then(pb::from_timestamp)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                println!(
                    "{:>8}  {:<9}  {:<5}  {:>3}%  {:<20}  {}",
                    s.id,
                    render::status_name(s.status),
                    render::type_name(s.scan_type),
                    s.progress,
                    created,
                    render::target(s)
                );
            }
            println!("{} of {} scans", page.scans.len(), page.total_size);
            if !page.next_page_token.is_empty() {
                println!("next page: --page-token {}", page.next_page_token);
            }
            Ok(0)
        }
        ClientCommand::Watch { id, after, .. } => watch(&args, &mut client, id, after).await,
        ClientCommand::Hosts {
            prefix,
            os,
            page_size,
            page_token,
            order_by,
            ..
        } => {
            let page = client
                .list_hosts(pb::ListHostsRequest {
                    hostname_prefix: prefix,
                    os_id: os,
                    page_size,
                    page_token,
                    order_by: order_by.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if args.json {
                println!("{}", pb::to_json(&page, "hostscan.v1.ListHostsResponse"));
            } else {
                print!("{}", render::hosts(&page, &order_by));
            }
            Ok(0)
        }
        ClientCommand::Health { .. } => health(&args).await,
        ClientCommand::Diff {
            ids,
            allow_different_hosts,
            used_percent_threshold,
            ..
        } => {
            let (base_scan_id, scan_id) = match ids.as_slice() {
                [scan] => (0, *scan),
                [base, scan] => (*base, *scan),
                _ => anyhow::bail!("give one or two scan ids: [BASE] SCAN"),
            };
            let d = client
                .diff_scans(pb::DiffScansRequest {
                    base_scan_id,
                    scan_id,
                    allow_different_hosts,
                    used_percent_threshold,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(print_diff(args.json, &d))
        }
        ClientCommand::Cancel { id, .. } => {
            let scan = client
                .cancel_scan(pb::CancelScanRequest { scan_id: id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_scan(&args, &scan);
            Ok(0)
        }
    }
}

/// Follows a scan to its end: a progress bar on a terminal, one line per
/// event otherwise (JSON lines with --json), then the final scan.
async fn watch(
    args: &ClientArgs,
    client: &mut Client,
    id: i64,
    after: i64,
) -> anyhow::Result<Exit> {
    let mut stream = client
        .watch_scan(pb::WatchScanRequest {
            scan_id: id,
            after_sequence: after,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last: Option<pb::Scan> = None;
    while let Some(event) = stream.message().await.map_err(rpc_error)? {
        if let Some(s) = &event.scan {
            last = Some(s.clone());
        }
        if args.json {
            println!(
                "{}",
                serde_json_line(&pb::to_json(&event, "hostscan.v1.ScanEvent"))
            );
            continue;
        }
        match &bar {
            Some(bar) => {
                bar.set_position(u64::try_from(event.progress).unwrap_or(0));
                bar.set_message(format!(
                    "{} {}",
                    render::status_name(event.status),
                    event.current_step
                ));
            }
            None if !event.heartbeat => eprintln!(
                "[{:>3}%] {} {}",
                event.progress,
                render::status_name(event.status),
                event.current_step
            ),
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let Some(scan) = last else {
        anyhow::bail!("the stream ended without the scan's state");
    };
    if !args.json {
        print!("{}", render::scan(&scan));
    }
    Ok(scan_exit(scan.status))
}

/// One JSON document per line (pretty JSON collapsed), for piping events.
fn serde_json_line(pretty: &str) -> String {
    serde_json::from_str::<serde_json::Value>(pretty)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| pretty.replace('\n', " "))
}
