//! `hostscan serve`: wires store, hub, workers, the cross-replica bridge,
//! health and reflection to the gRPC server, and shuts them down in order.
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
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Defaults, ScanApi};
use crate::config::Config;
use crate::events::Hub;
use crate::model::ScanEvent;
use crate::pb::scan_service_server::ScanServiceServer;
use crate::store::listen::{self, Signal};
use crate::store::{Database, ServerLock, Store};
use crate::worker::{Settings, Workers};

/// Events a watcher may fall behind before it resyncs from the database.
const HUB_CAPACITY: usize = 256;
/// The gRPC service name reported by tonic-health.
const SERVICE_NAME: &str = "hostscan.v1.ScanService";
/// How often the database is pinged for the health status.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

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
/// listening address once the socket is bound (tests use port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let instance = instance_id();
    let _lock = lock_embedded(&config.database)?;
    let store = Store::open_database(&config.database, config.db_pool_size, &instance)?;
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
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;

    let hub = Hub::new(HUB_CAPACITY);
    let workers = Workers::start(
        store.clone(),
        hub.clone(),
        Settings {
            workers: config.workers,
            ssh_keys: config.ssh_keys.clone(),
            keyring: config.keyring.clone(),
            ssh_config: config.ssh_config.clone(),
            agent: config.agent.clone(),
            known_hosts: config.known_hosts.clone(),
            host_key_policy: config.host_key_policy,
            connect_timeout: config.connect_timeout,
            max_channels: config.ssh_channels,
            limits: config.limits.clone(),
            lease: config.lease,
            idle_poll: Duration::from_secs(5),
        },
    );

    // Background tasks: owned here, stopped by `background_stop`.
    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    let (signal_tx, signal_rx) = mpsc::unbounded_channel();
    // Other replicas' changes arrive over LISTEN/NOTIFY (PostgreSQL only;
    // the embedded database serves one replica).
    if let Some(url) = store.notify_url() {
        let (url, instance, stop) = (url.to_string(), instance.clone(), background_stop.clone());
        background.spawn_blocking(move || listen::run(url, instance, signal_tx, stop));
    }
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

    let (health, health_service) = tonic_health::server::health_reporter();
    // The migrations just ran: the database answers.
    health
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    let draining = CancellationToken::new();
    background.spawn(health_loop(health.clone(), store.clone(), draining.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let streams_stop = CancellationToken::new();
    let api = ScanApi::new(
        store.clone(),
        hub.clone(),
        workers.clone(),
        Defaults {
            port: config.ssh_port,
            username: config.ssh_user.clone(),
            per_host: config.per_host_defaults(),
        },
        config.watch_heartbeat,
        streams_stop.clone(),
    );
    let keys = config.api_keys.clone();
    let scan_service = ScanServiceServer::with_interceptor(api, move |r| keys.check(r));

    let server_stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scan_service)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            server_stop.clone().cancelled_owned(),
        );
    let server = tokio::spawn(server);

    tracing::info!(%addr, workers = config.workers, auth = !config.api_keys.is_empty(), policy = %config.host_key_policy, "hostscan listening on {addr}");
    tracing::info!("next, in another terminal: {}", next_command(addr));
    if let Some(tx) = bound {
        tx.send(addr).ok();
    }

    shutdown.await;
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs(),
        "shutting down"
    );
    draining.cancel();
    health.set_not_serving::<ScanServiceServer<ScanApi>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
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

/// What to try once the server listens, for someone reading its log.
fn next_command(addr: SocketAddr) -> String {
    let server = match addr.to_string().as_str() {
        "127.0.0.1:50051" => String::new(),
        other => format!(" --server http://{other}"),
    };
    format!("hostscan scan localhost{server}   (or: grpcurl -plaintext {addr} list)")
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
            health
                .set_service_status("hostscan.v1.ScanService", status)
                .await;
            health.set_service_status("", status).await;
            serving = Some(ok);
        }
        tokio::select! {
            _ = draining.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}
