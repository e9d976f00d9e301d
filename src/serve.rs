//! `hostscan serve`: wires store, hub, workers, the cross-replica bridge,
//! health and reflection to the gRPC server, and shuts them down in order.
//!
//! Start-up order: see `run`. The gRPC port opens first (health
//! NOT_SERVING) and the ScanService goes live once the database answers.
//!
//! Shutdown order: health NOT_SERVING → workers stop claiming and finish
//! (or requeue) within the grace period → watch streams end → the server
//! stops → background tasks are awaited.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Defaults, Deferred, MAX_REQUEST_BYTES, ScanApi};
use crate::config::{Config, SharedSsh, SshSetup, SshSource};
use crate::events::Hub;
use crate::metrics::GrpcMetricsLayer;
use crate::model::ScanEvent;
use crate::net::{self, Tls};
use crate::store::listen::{self, Signal};
use crate::store::{Database, ServerLock, Store};
use crate::worker::{Settings, Workers};

/// How long the API waits for the cross-replica LISTEN before it opens.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// Events a watcher may fall behind before it resyncs from the database.
const HUB_CAPACITY: usize = 256;
/// The gRPC service name reported by tonic-health.
const SERVICE_NAME: &str = "hostscan.v1.ScanService";
/// How often the database is pinged for the health status.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Largest header block a client may send (bytes).
const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Open files kept for everything but gRPC connections and the pool's and
/// workers' sockets: listeners, the LISTEN connection, logs, the runtime.
const FD_RESERVE: u64 = 64;
/// How often the PENDING queue and the pool are sampled for metrics.
const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// A unique id for this process, used as lease owner and NOTIFY origin.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect::<String>();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{:08x}",
        if host.is_empty() { "hostscan" } else { &host },
        std::process::id(),
        nanos
    )
}

/// Runs migrations and exits.
pub async fn migrate(database: &Database) -> anyhow::Result<()> {
    let _lock = lock_embedded(database)?;
    let store = Store::open_database(database, 2, &instance_id())?;
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for m in applied {
            println!("applied migration {m}");
        }
    }
    Ok(())
}

/// `hostscan copy-db`: every scan and pin from `from` into `to`.
pub async fn copy_db(from: &str, to: &str) -> anyhow::Result<()> {
    let parse =
        |flag: &str, url: &str| Database::parse(url).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    if from == to {
        anyhow::bail!("--from and --to name the same database");
    }
    let _locks = (lock_embedded(&from)?, lock_embedded(&to)?);
    let instance = instance_id();
    let source = Store::open_database(&from, 2, &instance)?;
    let destination = Store::open_database(&to, 2, &instance)?;
    let report = crate::store::copy::copy(&source, &destination).await?;
    println!("{} → {}: {report}", from.display(), to.display());
    Ok(())
}

/// `hostscan prune`: deletes (or with `dry_run` counts) finished scans older
/// than `older_than`, keeping each host's newest completed scan.
pub async fn prune(database: &Database, older_than: Duration, dry_run: bool) -> anyhow::Result<()> {
    let store = Store::open_database(database, 2, &instance_id())?;
    store.migrate().await?;
    let age = crate::config::format_age(older_than);
    if dry_run {
        let n = store.count_prunable(older_than).await?;
        println!("would delete {n} scans finished more than {age} ago");
    } else {
        let n = store
            .prune(older_than, crate::worker::retention::BATCH)
            .await?;
        println!("deleted {n} scans finished more than {age} ago");
    }
    println!("(each host's newest scan and newest completed scan are kept)");
    Ok(())
}

/// The embedded database serves one process at a time: takes its lock.
fn lock_embedded(database: &Database) -> anyhow::Result<Option<ServerLock>> {
    match database {
        Database::Sqlite(path) => Ok(Some(ServerLock::acquire(path).map_err(anyhow::Error::msg)?)),
        Database::Postgres(_) => Ok(None),
    }
}

/// Serves until `shutdown` resolves, then drains. `bound` receives the
/// listening address once the service is ready (tests use port 0).
///
/// Start-up order: raise the open-file limit → metrics listener → bind the
/// gRPC port and serve health (NOT_SERVING) and reflection, with the
/// ScanService answering UNAVAILABLE → wait for the database
/// (`--database-wait`, or exit with the reason) → migrations, workers,
/// watchers, the cross-replica LISTEN (PostgreSQL; waited for up to
/// `LISTEN_WAIT`) → the ScanService goes live → health SERVING.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let instance = instance_id();
    let _lock = lock_embedded(&config.database)?;
    // Background tasks: owned here, stopped by `background_stop` (or, for
    // the gRPC port's accept loop, `server_stop`).
    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    // As asked, lowered to fit the open-file limit.
    config.net.max_connections = fit_connections(&config);
    let max_connections = config.net.max_connections;
    if let Some(addr) = config.metrics_listen {
        let exporter = crate::metrics::install(addr)
            .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
        let stop = background_stop.clone();
        background.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                result = exporter => if let Err(e) = result {
                    tracing::error!(error = ?e, "the metrics listener stopped");
                },
            }
        });
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
    }
    let store = Store::open_database(&config.database, config.db_pool_size, &instance)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;

    // The port opens before the database answers, so health can say
    // NOT_SERVING while we wait; ScanService calls get UNAVAILABLE.
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, tonic_health::ServingStatus::NotServing).await;
    let scan_service = Deferred::default();
    let server_stop = CancellationToken::new();
    // The SSH setup in force: a SIGHUP loads it again and swaps it.
    let ssh: SharedSsh = Arc::new(arc_swap::ArcSwap::from_pointee(config.ssh.clone()));
    let server = grpc_server(
        &config,
        listener,
        health_service,
        scan_service.clone(),
        Reload {
            tls: None,
            ssh_source: config.ssh_source.clone(),
            ssh: ssh.clone(),
        },
        &background,
        server_stop.clone(),
    )?;
    let server = tokio::spawn(server);
    tracing::info!(%addr, tls = config.tls.is_some(), mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), max_connections, "gRPC port {addr} open; waiting for the database");

    tokio::pin!(shutdown);
    let waited = tokio::select! {
        waited = wait_for_database(&store, config.database_wait) => Some(waited),
        () = &mut shutdown => None,
    };
    if !matches!(waited, Some(Ok(()))) {
        server_stop.cancel();
        background_stop.cancel();
        background.close();
        background.wait().await;
        // A health Watch stream would hold a graceful stop forever.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .ok();
        return match waited {
            Some(Err(e)) => Err(e),
            _ => {
                tracing::info!("stopped while waiting for the database");
                Ok(())
            }
        };
    }
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("cannot prepare the database: {e}"))?;
    match &config.database {
        Database::Sqlite(path) => tracing::info!(
            path = %path.display(),
            "embedded database at {} (SQLite, one server; use --database-url postgres://… \
             for several replicas)",
            path.display()
        ),
        Database::Postgres(_) => {
            tracing::info!(database = %config.database.display(), "PostgreSQL database")
        }
    }

    let hub = Hub::new(HUB_CAPACITY);
    let workers = Workers::start(
        store.clone(),
        hub.clone(),
        Settings {
            workers: config.workers,
            ssh: ssh.clone(),
            known_hosts: config.known_hosts.clone(),
            host_key_policy: config.host_key_policy,
            connect_timeout: config.connect_timeout,
            max_channels: config.ssh_channels,
            limits: config.limits.clone(),
            lease: config.lease,
            idle_poll: Duration::from_secs(5),
        },
    );

    let (signal_tx, signal_rx) = mpsc::unbounded_channel();
    // Other replicas' changes arrive over LISTEN/NOTIFY (PostgreSQL only;
    // the embedded database serves one replica).
    let (listening_tx, listening) = tokio::sync::oneshot::channel();
    let listening = match store.notify_url() {
        Some(url) => {
            let (url, instance, stop) =
                (url.to_string(), instance.clone(), background_stop.clone());
            background
                .spawn_blocking(move || listen::run(url, instance, signal_tx, stop, listening_tx));
            Some(listening)
        }
        None => None,
    };
    background.spawn(bridge(
        signal_rx,
        store.clone(),
        hub.clone(),
        workers.clone(),
        background_stop.clone(),
    ));
    if let Some(keep_for) = config.retention {
        background.spawn(crate::worker::retention::run(
            store.clone(),
            keep_for,
            background_stop.clone(),
        ));
    }
    if config.metrics_listen.is_some() {
        background.spawn(sample_metrics(store.clone(), background_stop.clone()));
    }

    let streams_stop = CancellationToken::new();
    let api = ScanApi::new(
        store.clone(),
        hub.clone(),
        workers.clone(),
        Defaults {
            port: config.ssh_port,
            username: config.ssh_user.clone(),
            per_host: config.per_host_defaults(&ssh),
        },
        config.watch_heartbeat,
        streams_stop.clone(),
    );
    // Watchers here must hear what other replicas do from the first event
    // on: the API opens once LISTEN is in force (or, if it takes longer,
    // the listener resyncs every watcher when it is).
    if let Some(listening) = listening
        && tokio::time::timeout(LISTEN_WAIT, listening).await.is_err()
    {
        tracing::warn!(
            "cross-replica LISTEN not in force after {}s; serving anyway (watchers resync when it is)",
            LISTEN_WAIT.as_secs()
        );
    }
    scan_service.set(api.into_service(config.api_keys.clone()));
    // The migrations just ran: the database answers.
    set_health(&health, tonic_health::ServingStatus::Serving).await;
    let draining = CancellationToken::new();
    background.spawn(health_loop(health.clone(), store.clone(), draining.clone()));

    tracing::info!(%addr, workers = config.workers, auth = !config.api_keys.is_empty(), policy = %config.host_key_policy, "hostscan listening on {addr}");
    tracing::info!(
        "next, in another terminal: {}",
        next_command(addr, config.tls.is_some())
    );
    if let Some(tx) = bound {
        tx.send(addr).ok();
    }

    shutdown.await;
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs(),
        "shutting down"
    );
    draining.cancel();
    set_health(&health, tonic_health::ServingStatus::NotServing).await;
    workers.drain(config.shutdown_grace).await;
    // Open watch streams end (UNAVAILABLE, with where to resume); the server
    // then stops once in-flight calls are done.
    streams_stop.cancel();
    server_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("server did not stop within 5s"),
    }
    background_stop.cancel();
    background.close();
    background.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Sets the ScanService's and the server's ("") health status.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    health.set_service_status(SERVICE_NAME, status).await;
    health.set_service_status("", status).await;
}

/// Raises the open-file limit to the hard limit and fits
/// `--max-connections` under it, keeping descriptors for the database pool,
/// the workers' SSH sessions and the rest. Logs both.
fn fit_connections(config: &Config) -> usize {
    let wanted = config.net.max_connections;
    let reserve = u64::from(config.db_pool_size) + 2 * config.workers as u64 + FD_RESERVE;
    match net::raise_fd_limit() {
        Ok((before, limit)) => {
            if limit > before {
                tracing::info!(
                    before,
                    limit,
                    "raised the open-file limit to its hard limit"
                );
            } else {
                tracing::info!(limit, "open-file limit");
            }
            let cap = net::connection_cap(wanted, limit, reserve);
            if cap < wanted {
                tracing::warn!(
                    wanted,
                    cap,
                    limit,
                    "--max-connections lowered to fit the open-file limit"
                );
            }
            cap
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            wanted
        }
    }
}

/// The gRPC server on `listener`, as a future to spawn: health, reflection
/// and the (deferred) ScanService behind per-call metrics, fed by the
/// accept loop of `net` (TLS if configured; a SIGHUP reloads it and the SSH
/// setup in `reload`). The accept
/// loop and the SIGHUP handler run on `tasks` until `stop`, which also
/// stops the server.
fn grpc_server(
    config: &Config,
    listener: TcpListener,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    scan_service: Deferred<crate::api::ScanServiceServer>,
    mut reload: Reload,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<ServerFuture> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout))
        .max_concurrent_streams(config.max_streams_per_connection)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .layer(GrpcMetricsLayer::new(&[
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]))
        .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scan_service);
    let settings = config.net;
    let tls = config.tls.clone().map(Tls::new).transpose()?;
    // Registered now, so a SIGHUP that comes right after start-up is
    // handled rather than killing the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    reload.tls = tls.clone();
    tasks.spawn(reload_on_sighup(hangup, reload, stop.clone()));
    let serving = stop.clone().cancelled_owned();
    Ok(match tls {
        None => {
            let incoming = net::plaintext(listener, settings, tasks, stop);
            Box::pin(router.serve_with_incoming_shutdown(incoming, serving))
        }
        Some(tls) => {
            let incoming = net::tls(listener, settings, tls, tasks, stop);
            Box::pin(router.serve_with_incoming_shutdown(incoming, serving))
        }
    })
}

/// The gRPC server's future, whichever transport it serves.
type ServerFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// What a SIGHUP reloads.
struct Reload {
    /// The TLS files, when TLS is on.
    tls: Option<Tls>,
    /// Key files, `--ssh-config`, the agent and the passphrase file, loaded
    /// again into `ssh`.
    ssh_source: SshSource,
    ssh: SharedSsh,
}

/// On each SIGHUP until `stop`: re-reads the TLS files (when TLS is on)
/// and the SSH setup (key files, `--ssh-config`, the agent's keys). What
/// fails to load is logged and counted, and the previous one stays in
/// force; a SIGHUP never stops the server. Scans already running keep the
/// setup they started with.
async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    reload: Reload,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                if let Some(tls) = &reload.tls {
                    // Logs and counts the outcome itself.
                    tls.reload().ok();
                }
                let source = reload.ssh_source.clone();
                let loaded = tokio::task::spawn_blocking(move || SshSetup::load(&source)).await;
                match loaded {
                    Ok(Ok(setup)) => {
                        crate::metrics::ssh_reloaded(true);
                        tracing::info!(
                            keys = setup.ssh_keys.len(),
                            ssh_config = ?reload.ssh_source.ssh_config,
                            agent = setup.agent.is_some(),
                            "reloaded the SSH keys and configuration"
                        );
                        reload.ssh.store(Arc::new(setup));
                    }
                    Ok(Err(e)) => {
                        crate::metrics::ssh_reloaded(false);
                        tracing::error!(error = %e, "SSH reload failed; keeping the previous keys and configuration");
                    }
                    Err(e) => {
                        crate::metrics::ssh_reloaded(false);
                        tracing::error!(error = %e, "SSH reload failed; keeping the previous keys and configuration");
                    }
                }
            }
        }
    }
}

/// Pings the database until it answers or `wait` has passed, pausing 0.1 s
/// and doubling up to 5 s between attempts (each attempt itself waits up
/// to the pool's connect timeout). The error says why it gave up.
async fn wait_for_database(store: &Store, wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match store.ping().await {
            Ok(()) => {
                crate::metrics::database_up(true);
                if attempts > 1 {
                    tracing::info!(attempts, "the database answers");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        crate::metrics::database_up(false);
        let now = tokio::time::Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "the database did not answer within --database-wait {}s ({attempts} {}): {error}",
                wait.as_secs(),
                if attempts == 1 { "attempt" } else { "attempts" }
            );
        }
        if attempts == 1 {
            tracing::warn!(error = %error, wait_secs = wait.as_secs(), "the database does not answer; waiting for it (health NOT_SERVING)");
        } else {
            tracing::debug!(error = %error, attempts, "the database still does not answer");
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Samples what is not counted as it happens: the PENDING queue and the
/// database pool, every `METRICS_INTERVAL` until `stop`.
async fn sample_metrics(store: Store, stop: CancellationToken) {
    loop {
        let pool = store.pool_state();
        crate::metrics::db_pool(pool.in_use, pool.idle, pool.max);
        match store.pending_summary().await {
            Ok((count, oldest)) => {
                let age = oldest
                    .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                    .unwrap_or_default();
                crate::metrics::pending(count, age);
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample the PENDING queue"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(METRICS_INTERVAL) => {}
        }
    }
}

/// What to try once the server listens, for someone reading its log.
fn next_command(addr: SocketAddr, tls: bool) -> String {
    let me = program_name();
    if tls {
        return format!(
            "{me} scan localhost --server https://{addr} --ca CA.pem   (or: grpcurl -cacert CA.pem {addr} list)"
        );
    }
    let server = match addr.to_string().as_str() {
        "127.0.0.1:50051" => String::new(),
        other => format!(" --server http://{other}"),
    };
    format!("{me} scan localhost{server}   (or: grpcurl -plaintext {addr} list)")
}

/// How to run this binary from where the server was started: `hostscan`
/// when that is what PATH finds, else its path (relative to the working
/// directory when under it, as after `cargo run`: `./target/release/hostscan`).
fn program_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "hostscan".into();
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("hostscan") == exe));
    if on_path {
        return "hostscan".into();
    }
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.to_path_buf()))
    {
        Some(relative) => format!("./{}", relative.display()),
        None => exe.display().to_string(),
    }
}

/// Applies other replicas' signals: wake workers, cancel local scans,
/// forward remote scans' events to local watchers.
async fn bridge(
    mut signals: mpsc::UnboundedReceiver<Signal>,
    store: Store,
    hub: Arc<Hub>,
    workers: Workers,
    stop: CancellationToken,
) {
    loop {
        let signal = tokio::select! {
            _ = stop.cancelled() => return,
            s = signals.recv() => match s { Some(s) => s, None => return },
        };
        match signal {
            Signal::Pending { scan_id, created } => {
                workers.wake();
                // A scan another replica created: its first event, for
                // WatchScans subscribers here (requeues come as events).
                if let Some((scan_type, hostname)) = created {
                    hub.publish(ScanEvent {
                        scan_id,
                        sequence: 1,
                        status: crate::model::ScanStatus::Pending,
                        progress: 0,
                        current_step: String::new(),
                        time: chrono::Utc::now(),
                        hostname,
                        scan_type,
                        scan: None,
                        wire: Default::default(),
                    });
                }
            }
            Signal::Cancel { scan_id } => {
                workers.cancel_local(scan_id);
            }
            Signal::Event {
                scan_id,
                sequence,
                status,
                progress,
                scan_type,
                hostname,
                current_step,
            } => {
                if !hub.is_watched(scan_id) && !hub.has_subscribers_to_all() {
                    continue;
                }
                // Terminal events carry the whole scan: read it once here.
                let scan = match status.is_terminal() {
                    true => store.get(scan_id).await.ok().flatten(),
                    false => None,
                };
                hub.publish(ScanEvent {
                    scan_id,
                    sequence,
                    status,
                    progress,
                    current_step,
                    time: chrono::Utc::now(),
                    hostname,
                    scan_type,
                    scan: scan.filter(|s| s.sequence == sequence),
                    wire: Default::default(),
                });
            }
            Signal::Resync => {
                workers.wake();
                hub.resync_all();
                for scan_id in hub.watched() {
                    if let Ok(Some(scan)) = store.get(scan_id).await {
                        let mut event = ScanEvent::snapshot(&scan);
                        if !scan.status.is_terminal() {
                            event.scan = None;
                        }
                        hub.publish(event);
                    }
                }
            }
        }
    }
}

/// SERVING while the database answers and the server is not draining.
async fn health_loop(
    health: tonic_health::server::HealthReporter,
    store: Store,
    draining: CancellationToken,
) {
    let mut serving = Some(true);
    loop {
        let ok = matches!(
            tokio::time::timeout(HEALTH_INTERVAL, store.ping()).await,
            Ok(Ok(()))
        );
        if draining.is_cancelled() {
            return;
        }
        if serving != Some(ok) {
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            if ok {
                tracing::info!("database reachable: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            crate::metrics::database_up(ok);
            set_health(&health, status).await;
            serving = Some(ok);
        }
        tokio::select! {
            _ = draining.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}
