//! Prometheus metrics: one named function per thing worth counting, so the
//! layers that observe something call a one-liner and never spell a metric
//! name. `install` starts the exporter (`--metrics-listen`); without it every
//! function here is a no-op costing an atomic load.
//!
//! Names follow Prometheus conventions: `hostscan_` prefix, `_total` for
//! counters, base units in the name (`_seconds`). Label values come from
//! closed sets (scan types, statuses, error kinds, step names, gRPC methods
//! known at start-up, gRPC codes), so cardinality is bounded. README.md
//! lists every metric; keep it in step with `describe`.
//!
//! Must not: know tonic services, the store or SSH. It depends on `model`
//! only; `grpc.rs` sees nothing but HTTP requests and responses.

pub mod grpc;

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, ExporterFuture, Matcher, PrometheusBuilder};

use crate::model::{Scan, ScanType};

pub use grpc::GrpcMetricsLayer;

const SCANS_CREATED: &str = "hostscan_scans_created_total";
const SCANS_STARTED: &str = "hostscan_scans_started_total";
const SCANS_FINISHED: &str = "hostscan_scans_finished_total";
const SCAN_DURATION: &str = "hostscan_scan_duration_seconds";
const STEP_DURATION: &str = "hostscan_scan_step_duration_seconds";
const STEP_ERRORS: &str = "hostscan_scan_step_errors_total";
const SCANS_PENDING: &str = "hostscan_scans_pending";
const OLDEST_PENDING: &str = "hostscan_oldest_pending_scan_age_seconds";
const SCANS_RUNNING: &str = "hostscan_scans_running";
const WATCH_STREAMS: &str = "hostscan_watch_streams";
const EVENTS_PUBLISHED: &str = "hostscan_events_published_total";
const WATCH_RESYNCS: &str = "hostscan_watch_resyncs_total";
const DB_POOL_CONNECTIONS: &str = "hostscan_db_pool_connections";
const DB_POOL_MAX: &str = "hostscan_db_pool_max_connections";
const DB_POOL_WAIT: &str = "hostscan_db_pool_wait_seconds";
const DATABASE_UP: &str = "hostscan_database_up";
pub(crate) const GRPC_REQUESTS: &str = "hostscan_grpc_requests_total";
pub(crate) const GRPC_DURATION: &str = "hostscan_grpc_request_duration_seconds";
const CONNECTIONS_OPEN: &str = "hostscan_grpc_connections";
const CONNECTIONS_ACCEPTED: &str = "hostscan_grpc_connections_accepted_total";
const CONNECTIONS_REJECTED: &str = "hostscan_grpc_connections_rejected_total";
const TLS_RELOADS: &str = "hostscan_tls_reloads_total";
const SSH_RELOADS: &str = "hostscan_ssh_reloads_total";
const BUILD_INFO: &str = "hostscan_build_info";

/// Every metric with its help text, in the order README.md lists them.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        SCANS_CREATED,
        "Scans queued by StartScan on this replica (idempotent repeats not counted), by scan_type.",
    ),
    (
        SCANS_STARTED,
        "Scans a worker of this replica began to run, by scan_type.",
    ),
    (
        SCANS_FINISHED,
        "Scans a worker of this replica finished, by scan_type, status and error_kind (\"none\" when it completed).",
    ),
    (
        SCAN_DURATION,
        "Time from a worker's claim to the scan's end, by scan_type and status.",
    ),
    (
        STEP_DURATION,
        "Time each step took on the host, by scan_type and step (connect included).",
    ),
    (
        STEP_ERRORS,
        "Steps that failed while their scan went on (results.step_errors), by step.",
    ),
    (
        SCANS_PENDING,
        "PENDING scans in the database (every replica reports the same value).",
    ),
    (
        OLDEST_PENDING,
        "Age of the oldest PENDING scan, 0 when none (every replica reports the same value).",
    ),
    (SCANS_RUNNING, "Scans running on this replica's workers."),
    (
        WATCH_STREAMS,
        "Open WatchScan and WatchScans streams on this replica.",
    ),
    (
        EVENTS_PUBLISHED,
        "Scan events published to this replica's watchers (local writes and other replicas' notifications).",
    ),
    (
        WATCH_RESYNCS,
        "Times a WatchScan or WatchScans stream fell behind and resynced from the database.",
    ),
    (
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (in_use, idle).",
    ),
    (DB_POOL_MAX, "Size limit of the database pool."),
    (
        DB_POOL_WAIT,
        "Time spent waiting for a pooled database connection.",
    ),
    (
        DATABASE_UP,
        "1 while the database answers the health check, else 0.",
    ),
    (
        GRPC_REQUESTS,
        "gRPC calls finished, by service, method and code (the grpc-status sent, CANCELLED if the client left first).",
    ),
    (
        GRPC_DURATION,
        "gRPC call duration until its status was sent, by service and method (for streams: the stream's life).",
    ),
    (
        CONNECTIONS_OPEN,
        "Open connections on the gRPC port, in handshake or established.",
    ),
    (
        CONNECTIONS_ACCEPTED,
        "Connections on the gRPC port that completed their handshake.",
    ),
    (
        CONNECTIONS_REJECTED,
        "Connections on the gRPC port closed before serving, by reason (limit, displaced, handshake_timeout, handshake, accept_error).",
    ),
    (
        TLS_RELOADS,
        "TLS certificate reloads on SIGHUP, by result (success, failure).",
    ),
    (
        SSH_RELOADS,
        "SSH key and ssh_config reloads on SIGHUP, by result (success, failure).",
    ),
    (BUILD_INFO, "Always 1, labelled with the hostscan version."),
];

const SECONDS_FAST: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
const SECONDS_SLOW: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Builds the Prometheus recorder, installs it for the whole process and
/// binds `addr`. The returned future serves `GET /metrics` (text format)
/// until dropped; the caller owns it.
///
/// Errors: the address cannot be bound, or a recorder is already installed.
pub fn install(addr: SocketAddr) -> Result<ExporterFuture, BuildError> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(GRPC_DURATION.into()), SECONDS_FAST)?
        .set_buckets_for_metric(Matcher::Full(DB_POOL_WAIT.into()), SECONDS_FAST)?
        .set_buckets_for_metric(Matcher::Full(STEP_DURATION.into()), SECONDS_SLOW)?
        .set_buckets_for_metric(Matcher::Full(SCAN_DURATION.into()), SECONDS_SLOW)?
        .build()?;
    metrics::set_global_recorder(recorder)?;
    for (name, help) in DESCRIPTIONS {
        metrics::describe_counter!(*name, *help);
    }
    // Series without labels exist from the start, so a scrape shows them at 0.
    for name in [
        SCANS_PENDING,
        OLDEST_PENDING,
        SCANS_RUNNING,
        WATCH_STREAMS,
        DB_POOL_MAX,
        DATABASE_UP,
        CONNECTIONS_OPEN,
    ] {
        gauge!(name).set(0.0);
    }
    for name in [EVENTS_PUBLISHED, WATCH_RESYNCS, CONNECTIONS_ACCEPTED] {
        counter!(name).absolute(0);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(exporter)
}

/// Holds a gauge one higher while it lives (a running scan, an open
/// stream, an open connection).
#[derive(Debug)]
pub struct GaugeGuard(&'static str);

impl GaugeGuard {
    fn up(name: &'static str) -> Self {
        gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}

// ------------------------------------------------------------------ scans

/// StartScan stored a new scan.
pub fn scan_created(scan_type: ScanType) {
    counter!(SCANS_CREATED, "scan_type" => scan_type.as_str()).increment(1);
}

/// A worker claimed a scan and begins to run it.
pub fn scan_started(scan_type: ScanType) {
    counter!(SCANS_STARTED, "scan_type" => scan_type.as_str()).increment(1);
}

/// A worker wrote `scan`'s terminal state after running it for `run_time`.
/// Also counts its step errors.
pub fn scan_finished(scan: &Scan, run_time: Duration) {
    let kind = scan.error.as_ref().map_or("none", |e| e.kind.as_str());
    counter!(
        SCANS_FINISHED,
        "scan_type" => scan.scan_type.as_str(),
        "status" => scan.status.as_str(),
        "error_kind" => kind
    )
    .increment(1);
    histogram!(
        SCAN_DURATION,
        "scan_type" => scan.scan_type.as_str(),
        "status" => scan.status.as_str()
    )
    .record(run_time.as_secs_f64());
    for e in scan.results.iter().flat_map(|r| &r.step_errors) {
        counter!(STEP_ERRORS, "step" => e.step.clone()).increment(1);
    }
}

/// One step of a scan ended (finished or failed) after `took`.
pub fn step_finished(scan_type: ScanType, step: &'static str, took: Duration) {
    histogram!(STEP_DURATION, "scan_type" => scan_type.as_str(), "step" => step)
        .record(took.as_secs_f64());
}

/// The queue as the database sees it: PENDING scans and the oldest one's age.
pub fn pending(count: i64, oldest_age: Duration) {
    gauge!(SCANS_PENDING).set(count as f64);
    gauge!(OLDEST_PENDING).set(oldest_age.as_secs_f64());
}

/// A scan runs on this replica until the guard drops.
pub fn scan_running() -> GaugeGuard {
    GaugeGuard::up(SCANS_RUNNING)
}

// ----------------------------------------------------------------- events

/// An event was handed to the hub.
pub fn event_published() {
    counter!(EVENTS_PUBLISHED).increment(1);
}

/// A watcher fell behind and is resynced from the database.
pub fn watch_resynced() {
    counter!(WATCH_RESYNCS).increment(1);
}

/// A WatchScan stream opened; it counts as open until the guard drops.
pub fn watch_stream_opened() -> GaugeGuard {
    GaugeGuard::up(WATCH_STREAMS)
}

// --------------------------------------------------------------- database

/// Time a caller waited for a pooled connection (successful or not).
pub fn db_pool_wait(waited: Duration) {
    histogram!(DB_POOL_WAIT).record(waited.as_secs_f64());
}

/// The pool's state now: connections lent out, idle, and the size limit.
pub fn db_pool(in_use: u32, idle: u32, max: u32) {
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    gauge!(DB_POOL_MAX).set(f64::from(max));
}

/// Whether the database answered the last health check.
pub fn database_up(up: bool) {
    gauge!(DATABASE_UP).set(if up { 1.0 } else { 0.0 });
}

// ------------------------------------------------------------ connections

/// Why a connection on the gRPC port was closed before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `--max-connections` established connections: closed at once.
    Limit,
    /// Closed to make room for a newer one while still in its handshake.
    Displaced,
    /// No TLS handshake / HTTP/2 preface within the handshake deadline.
    HandshakeTimeout,
    /// The TLS handshake failed (wrong CA, no client certificate, …) or
    /// the client did not speak HTTP/2.
    Handshake,
    /// `accept` itself failed (e.g. out of file descriptors).
    AcceptError,
}

impl Rejected {
    fn as_str(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Displaced => "displaced",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Handshake => "handshake",
            Self::AcceptError => "accept_error",
        }
    }
}

pub fn connection_rejected(reason: Rejected) {
    counter!(CONNECTIONS_REJECTED, "reason" => reason.as_str()).increment(1);
}

/// A connection completed its handshake and goes to the gRPC server.
pub fn connection_accepted() {
    counter!(CONNECTIONS_ACCEPTED).increment(1);
}

/// A TCP connection was accepted on the gRPC port; it counts as open until
/// the guard drops.
pub fn connection_opened() -> GaugeGuard {
    GaugeGuard::up(CONNECTIONS_OPEN)
}

/// A SIGHUP reload of the TLS files succeeded or failed.
pub fn tls_reloaded(ok: bool) {
    counter!(TLS_RELOADS, "result" => if ok { "success" } else { "failure" }).increment(1);
}

/// A SIGHUP reload of the SSH keys and ssh_config succeeded or failed.
pub fn ssh_reloaded(ok: bool) {
    counter!(SSH_RELOADS, "result" => if ok { "success" } else { "failure" }).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        for (name, help) in DESCRIPTIONS {
            assert!(name.starts_with("hostscan_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} is missing from README.md's metrics table"
            );
        }
    }
}
