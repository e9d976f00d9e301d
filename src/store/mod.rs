//! Persistence: every SQL statement of hostscan lives under this module.
//!
//! `Store` is the one interface, in the domain's words (create, claim next,
//! record step, finish, request cancel, get, list, recover expired leases,
//! pin host key). Behind it sit two backends with the same behaviour:
//! - `postgres`: production and several replicas (SKIP LOCKED claims,
//!   LISTEN/NOTIFY across replicas in `listen`);
//! - `sqlite`: the embedded default for one server (bundled SQLite, WAL).
//!
//! Each backend holds only the SQL that must differ; the rules shared by
//! both (row decoding, keyset pages, pin verdicts, how results are encoded)
//! live here once. Backends are synchronous diesel code, reached only
//! through `Store::run`, which moves the work to a blocking thread with the
//! caller's tracing span. Only the worker holding a scan's lease writes its
//! progress: every worker statement checks `lease_owner`.

pub mod copy;
pub mod listen;
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    Host, HostSummary, Scan, ScanError, ScanRef, ScanResults, ScanStatus, ScanType,
};

pub use sqlite::ServerLock;

/// How many times a scan is claimed before an interrupted run fails it.
pub const MAX_ATTEMPTS: i32 = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (pool exhausted, server down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused our login (wrong password, no such role,
    /// pg_hba.conf): retrying will not help.
    #[error("database login refused: {0}")]
    LoginRefused(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &e {
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _) => {
                Self::Unavailable(e.to_string())
            }
            E::DatabaseError(_, info)
                if info.message().contains("terminating connection")
                    || info.message().contains("server closed the connection")
                    || info.message().contains("database is locked") =>
            {
                Self::Unavailable(e.to_string())
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        let text = e.to_string();
        if is_login_refusal(&text) {
            Self::LoginRefused(login_hint(&text))
        } else {
            Self::Unavailable(text)
        }
    }
}

/// libpq's words for "the server answered and said no to this login".
fn is_login_refusal(message: &str) -> bool {
    [
        "password authentication failed",
        "no password supplied",
        "Peer authentication failed",
        "Ident authentication failed",
        "no pg_hba.conf entry",
        "role \"",
        "database \"",
    ]
    .iter()
    .any(|m| message.contains(m))
}

fn login_hint(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    format!(
        "{first} (PostgreSQL answered but refused this login: check the user, password and \
         database in the URL, and pg_hba.conf; README \"PostgreSQL\" shows a working setup)"
    )
}

/// Where the data lives, parsed from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `postgres://…` or `postgresql://…`, passed to libpq as is.
    Postgres(String),
    /// `sqlite:///absolute/path.db` or `sqlite://relative/path.db`.
    Sqlite(PathBuf),
}

impl Database {
    /// Parses a database URL; the error says which forms are accepted.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path.ends_with('/') {
                return Err(format!("{url:?} names no database file"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "{:?} is not a database URL: use postgres://… or sqlite:///path/to/file.db",
            crate::config::redact_url(url)
        ))
    }

    /// The URL of this database with any password replaced, for logs.
    pub fn display(&self) -> String {
        match self {
            Self::Postgres(url) => crate::config::redact_url(url),
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

/// A new scan request, validated by the API.
#[derive(Debug, Clone)]
pub struct NewScan {
    pub hostname: String,
    pub port: u16,
    pub username: String,
    pub scan_type: ScanType,
    pub request_id: Option<String>,
    /// Jump hosts as requested, validated; "" for none.
    pub proxy_jump: String,
}

/// ListScans filters and page position.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub hostname: Option<String>,
    pub status: Option<ScanStatus>,
    pub scan_type: Option<ScanType>,
    pub limit: i64,
    /// Keyset cursor: only scans with a smaller id.
    pub before_id: Option<i64>,
    /// Only finished scans (COMPLETED, FAILED, CANCELLED) that finished at or
    /// after this time.
    pub finished_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub scans: Vec<Scan>,
    /// The cursor for the next page, if there is one.
    pub next_before_id: Option<i64>,
    pub total: i64,
}

/// A snapshot of the connection pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// What the lease heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Held {
        cancel_requested: bool,
    },
    /// Another worker recovered the scan, or it was finished: stop writing.
    Lost,
}

/// Result of pinning a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Pinned,
    Matches,
    Differs { fingerprint: String },
}

/// A `scans` row as both backends read and write it, decoded into plain
/// Rust types. Also the unit `copy` moves between databases.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRecord {
    pub id: i64,
    pub hostname: String,
    pub port: i32,
    pub username: String,
    pub scan_type: String,
    pub status: String,
    pub progress: i32,
    pub current_step: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `ScanResults` as JSON (JSONB in PostgreSQL, TEXT in SQLite).
    pub results: Option<serde_json::Value>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub sequence: i64,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    /// Jump hosts as requested (OpenSSH ProxyJump syntax); "" for none.
    pub proxy_jump: String,
}

impl ScanRecord {
    fn into_model(self) -> Result<Scan, StoreError> {
        let id = self.id;
        let bad =
            |what: &str, v: &str| StoreError::Internal(format!("scan {id}: bad {what} {v:?}"));
        let results = match self.results {
            Some(v) => Some(
                serde_json::from_value::<ScanResults>(v)
                    .map_err(|e| StoreError::Internal(format!("scan {id}: results: {e}")))?,
            ),
            None => None,
        };
        let error = match self.error_kind.as_deref() {
            Some(kind) => Some(ScanError {
                kind: kind.parse().map_err(|_| bad("error kind", kind))?,
                message: self.error_message.unwrap_or_default(),
            }),
            None => None,
        };
        Ok(Scan {
            id,
            hostname: self.hostname,
            port: u16::try_from(self.port).map_err(|_| bad("port", &self.port.to_string()))?,
            username: self.username,
            scan_type: self
                .scan_type
                .parse()
                .map_err(|_| bad("scan type", &self.scan_type))?,
            status: self
                .status
                .parse()
                .map_err(|_| bad("status", &self.status))?,
            progress: self.progress,
            current_step: self.current_step,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            results,
            error,
            request_id: self.request_id,
            sequence: self.sequence,
            proxy_jump: self.proxy_jump,
        })
    }
}

fn model(row: Option<ScanRecord>) -> Result<Option<Scan>, StoreError> {
    row.map(ScanRecord::into_model).transpose()
}

fn models(rows: Vec<ScanRecord>) -> Result<Vec<Scan>, StoreError> {
    rows.into_iter().map(ScanRecord::into_model).collect()
}

/// A pinned host key row, as `copy` moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    pub hostname: String,
    pub port: i32,
    pub algorithm: String,
    /// OpenSSH public key form: "<type> <base64>".
    pub public_key: String,
    pub fingerprint: String,
    pub first_seen: DateTime<Utc>,
}

/// What a finished scan's row gets, and for a COMPLETED scan the summary
/// its host's row gets.
#[derive(Debug, Clone)]
struct Finish {
    status: &'static str,
    results: serde_json::Value,
    error_kind: Option<&'static str>,
    error_message: Option<String>,
    summary: Option<HostSummary>,
}

/// A `hosts` row: one per (hostname, port) ever scanned. Written by the
/// statements that create (`last_scan_id`) and complete (`completed_*`) its
/// scans, and by `copy`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    pub hostname: String,
    pub port: i32,
    pub last_scan_id: i64,
    pub completed_scan_id: Option<i64>,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed_type: Option<String>,
    pub os_id: Option<String>,
    pub os_pretty_name: Option<String>,
    pub kernel: Option<String>,
    pub package_count: Option<i64>,
    pub step_error_count: Option<i32>,
}

impl HostRecord {
    /// The row for `scan`, as its host's newest scan and, if `scan` is
    /// COMPLETED, its newest completed one.
    fn of(scan: &ScanRecord) -> Result<Self, StoreError> {
        let mut host = Self {
            hostname: scan.hostname.clone(),
            port: scan.port,
            last_scan_id: scan.id,
            completed_scan_id: None,
            completed_at: None,
            completed_type: None,
            os_id: None,
            os_pretty_name: None,
            kernel: None,
            package_count: None,
            step_error_count: None,
        };
        if scan.status == ScanStatus::Completed.as_str() {
            let results: ScanResults = match &scan.results {
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| StoreError::Internal(format!("scan {}: results: {e}", scan.id)))?,
                None => ScanResults::default(),
            };
            host.complete(
                scan.id,
                scan.completed_at,
                &scan.scan_type,
                &HostSummary::of(&results),
            );
        }
        Ok(host)
    }

    fn complete(&mut self, id: i64, at: Option<DateTime<Utc>>, scan_type: &str, s: &HostSummary) {
        self.completed_scan_id = Some(id);
        self.completed_at = at;
        self.completed_type = Some(scan_type.to_string());
        self.os_id = Some(s.os_id.clone());
        self.os_pretty_name = Some(s.os_pretty_name.clone());
        self.kernel = Some(s.kernel.clone());
        self.package_count = s.package_count;
        self.step_error_count = Some(s.step_error_count);
    }

    /// Folds `other` (the same host) in: the newer scan wins each part.
    fn merge(&mut self, other: &Self) {
        self.last_scan_id = self.last_scan_id.max(other.last_scan_id);
        if other.completed_scan_id > self.completed_scan_id {
            let last = self.last_scan_id;
            *self = Self {
                last_scan_id: last,
                ..other.clone()
            };
        }
    }

    fn into_model(self, status: &str, created_at: DateTime<Utc>) -> Result<Host, StoreError> {
        let name = format!("{}:{}", self.hostname, self.port);
        let bad =
            |what: &str, v: &str| StoreError::Internal(format!("host {name}: bad {what} {v:?}"));
        let completed = match self.completed_scan_id {
            Some(scan_id) => Some(HostSummary {
                scan_id,
                completed_at: self.completed_at,
                scan_type: self.completed_type.as_deref().and_then(|t| t.parse().ok()),
                os_id: self.os_id.unwrap_or_default(),
                os_pretty_name: self.os_pretty_name.unwrap_or_default(),
                kernel: self.kernel.unwrap_or_default(),
                package_count: self.package_count,
                step_error_count: self.step_error_count.unwrap_or(0),
            }),
            None => None,
        };
        Ok(Host {
            port: u16::try_from(self.port).map_err(|_| bad("port", &self.port.to_string()))?,
            hostname: self.hostname,
            latest_scan: ScanRef {
                id: self.last_scan_id,
                status: status.parse().map_err(|_| bad("status", status))?,
                created_at,
            },
            completed,
        })
    }
}

/// The order of a ListHosts answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostOrder {
    /// Newest activity (newest scan of any status) first: a host scanned
    /// again while a client pages moves to the first page.
    #[default]
    NewestActivity,
    /// By host name, then port, ascending: pages never shift, for clients
    /// that walk the whole inventory.
    Hostname,
}

/// Where a ListHosts page starts: a keyset position in one `HostOrder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCursor {
    /// `NewestActivity`: hosts whose newest scan id is smaller.
    BeforeScan(i64),
    /// `Hostname`: hosts after this (hostname, port).
    AfterHost(String, u16),
}

/// ListHosts filters and page position.
#[derive(Debug, Clone, Default)]
pub struct HostQuery {
    /// Only hosts whose name starts with this (lowercase host-name characters).
    pub hostname_prefix: Option<String>,
    /// Only hosts whose newest completed scan found this OS id.
    pub os_id: Option<String>,
    pub limit: i64,
    pub order: HostOrder,
    /// Keyset cursor of `order` (the API refuses a token of another order).
    pub after: Option<HostCursor>,
}

/// A page of hosts in the order asked for.
#[derive(Debug, Clone)]
pub struct HostPage {
    pub hosts: Vec<Host>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<HostCursor>,
    pub total: i64,
}

/// A host row with its newest scan's status and creation time.
type HostListing = (HostRecord, String, DateTime<Utc>);

/// The SQL that differs between databases. Every method is synchronous
/// diesel code and runs on a blocking thread (see `Store::run`).
trait Backend: Send + Sync + 'static {
    /// Applies pending migrations; returns the versions applied.
    fn migrate(&self) -> Result<Vec<String>, StoreError>;
    fn ping(&self) -> Result<(), StoreError>;
    /// Inserts a PENDING scan, or returns the row an equal `request_id`
    /// created before, with `false`.
    fn create(&self, new: &NewScan) -> Result<(ScanRecord, bool), StoreError>;
    fn get(&self, id: i64) -> Result<Option<ScanRecord>, StoreError>;
    /// Up to `q.limit + 1` rows of the page (newest first) and the count
    /// of all rows matching the filters.
    fn list(&self, q: &ListQuery) -> Result<(Vec<ScanRecord>, i64), StoreError>;
    fn claim_next(&self, owner: &str, lease_secs: i32) -> Result<Option<ScanRecord>, StoreError>;
    fn record_step(
        &self,
        id: i64,
        owner: &str,
        progress: i32,
        step: &str,
        lease_secs: i32,
    ) -> Result<Option<ScanRecord>, StoreError>;
    /// `Some(cancel_requested)` while the lease is held.
    fn heartbeat(&self, id: i64, owner: &str, lease_secs: i32) -> Result<Option<bool>, StoreError>;
    fn finish(&self, id: i64, owner: &str, end: &Finish) -> Result<Option<ScanRecord>, StoreError>;
    /// PENDING → CANCELLED (`true`), RUNNING → cancel requested, else the
    /// row unchanged.
    fn request_cancel(&self, id: i64) -> Result<Option<(ScanRecord, bool)>, StoreError>;
    fn recover_expired(&self, max_attempts: i32) -> Result<Vec<ScanRecord>, StoreError>;
    fn requeue_owned(&self, owner: &str) -> Result<Vec<ScanRecord>, StoreError>;
    /// Inserts `pin` unless `(hostname, port)` has one; returns the key and
    /// fingerprint that were pinned before, if any.
    fn pin_host_key(&self, pin: &PinRecord) -> Result<Option<(String, String)>, StoreError>;
    fn pinned_algorithm(&self, hostname: &str, port: u16) -> Result<Option<String>, StoreError>;
    /// Scans with `id > after_id`, oldest first, up to `limit`.
    fn export_scans(&self, after_id: i64, limit: i64) -> Result<Vec<ScanRecord>, StoreError>;
    /// The rows with these ids that exist.
    fn get_many(&self, ids: &[i64]) -> Result<Vec<ScanRecord>, StoreError>;
    /// Writes rows with their ids in one transaction, replacing rows with
    /// the same id; new scans keep getting ids above every written one.
    fn put_scans(&self, rows: &[ScanRecord]) -> Result<(), StoreError>;
    fn export_pins(&self) -> Result<Vec<PinRecord>, StoreError>;
    /// Up to `q.limit + 1` hosts of the page (newest scan first) with their
    /// newest scan's status and time, and the count of all that match.
    fn list_hosts(&self, q: &HostQuery) -> Result<(Vec<HostListing>, i64), StoreError>;
    /// Upserts host rows: for each part, the newer scan wins.
    fn put_hosts(&self, rows: &[HostRecord]) -> Result<(), StoreError>;
    /// Deletes up to `batch` terminal scans that ended more than
    /// `older_than_secs` ago, except each host's newest scan and newest
    /// completed scan, oldest first. `None` when another replica is pruning.
    fn prune(&self, older_than_secs: i64, batch: i64) -> Result<Option<usize>, StoreError>;
    /// How many scans `prune` would delete now, in all.
    fn count_prunable(&self, older_than_secs: i64) -> Result<i64, StoreError>;
    /// Inserts pins, skipping hosts that have one.
    fn import_pins(&self, rows: &[PinRecord]) -> Result<usize, StoreError>;
    /// The connection pool now (no I/O), for metrics.
    fn pool_state(&self) -> PoolState;
    /// PENDING scans: how many, and when the oldest was created.
    fn pending_summary(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;
    /// The id of the newest COMPLETED scan of `hostname:port` with an id
    /// below `before_id` and this `scan_type` (an index range read:
    /// `scans_host_completed_idx`).
    fn previous_completed(
        &self,
        hostname: &str,
        port: i32,
        scan_type: &str,
        before_id: i64,
    ) -> Result<Option<i64>, StoreError>;
}

/// A pool's state as r2d2 reports it, for metrics.
fn pool_state<M: diesel::r2d2::ManageConnection>(pool: &diesel::r2d2::Pool<M>) -> PoolState {
    let state = pool.state();
    PoolState {
        in_use: state.connections.saturating_sub(state.idle_connections),
        idle: state.idle_connections,
        max: pool.max_size(),
    }
}

/// `pool.get()`, timed for the pool wait histogram.
fn timed_get<M: diesel::r2d2::ManageConnection>(
    pool: &diesel::r2d2::Pool<M>,
) -> Result<diesel::r2d2::PooledConnection<M>, StoreError> {
    let waiting = std::time::Instant::now();
    let conn = pool.get();
    crate::metrics::db_pool_wait(waiting.elapsed());
    Ok(conn?)
}

/// The scan store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    database: Arc<Database>,
    instance: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database.display())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A pool of up to `size` connections to the database at `url`
    /// (see `Database::parse`). `instance` names this process as lease
    /// owner and in cross-replica notifications; it must be `[A-Za-z0-9_-]`.
    /// Connections are made lazily: an unreachable server shows on first use.
    pub fn open(url: &str, size: u32, instance: &str) -> Result<Self, StoreError> {
        let database = Database::parse(url).map_err(StoreError::Internal)?;
        Self::open_database(&database, size, instance)
    }

    pub fn open_database(
        database: &Database,
        size: u32,
        instance: &str,
    ) -> Result<Self, StoreError> {
        if !instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StoreError::Internal(format!(
                "bad instance id {instance:?}"
            )));
        }
        let backend: Arc<dyn Backend> = match database {
            Database::Postgres(url) => Arc::new(postgres::Postgres::open(url, size, instance)),
            Database::Sqlite(path) => Arc::new(sqlite::Sqlite::open(path, size)?),
        };
        Ok(Self {
            backend,
            database: Arc::new(database.clone()),
            instance: instance.to_string(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The PostgreSQL URL to LISTEN on for other replicas' changes; `None`
    /// for SQLite, which serves one replica.
    pub(crate) fn notify_url(&self) -> Option<&str> {
        match self.database.as_ref() {
            Database::Postgres(url) => Some(url),
            Database::Sqlite(_) => None,
        }
    }

    /// Runs `f` on the backend in a blocking thread, inside the caller's
    /// tracing span. The only way the store touches the database.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            f(backend.as_ref())
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.run(|b| b.migrate()).await
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|b| b.ping()).await
    }

    /// The pool now: connections lent out, idle, and its size limit.
    pub fn pool_state(&self) -> PoolState {
        self.backend.pool_state()
    }

    /// PENDING scans: how many, and when the oldest was created.
    pub async fn pending_summary(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        self.run(|b| b.pending_summary()).await
    }

    /// Stores a PENDING scan. With a `request_id` seen before, returns the
    /// scan that id first created and `false`.
    pub async fn create(&self, new: NewScan) -> Result<(Scan, bool), StoreError> {
        let (row, created) = self.run(move |b| b.create(&new)).await?;
        Ok((row.into_model()?, created))
    }

    pub async fn get(&self, id: i64) -> Result<Option<Scan>, StoreError> {
        model(self.run(move |b| b.get(id)).await?)
    }

    /// Newest first, filters combined with AND, keyset by id.
    pub async fn list(&self, q: ListQuery) -> Result<Page, StoreError> {
        let limit = q.limit.max(0);
        let (mut rows, total) = self.run(move |b| b.list(&q)).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_before_id = if more {
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page {
            scans: models(rows)?,
            next_before_id,
            total,
        })
    }

    /// Takes the oldest PENDING scan for `owner`: RUNNING with a lease.
    pub async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Scan>, StoreError> {
        let owner = owner.to_string();
        let secs = lease_secs(lease);
        model(self.run(move |b| b.claim_next(&owner, secs)).await?)
    }

    /// Writes a step's progress (never lower than before) and renews the
    /// lease, bumping the sequence. `None` when the lease is no longer ours.
    pub async fn record_step(
        &self,
        id: i64,
        owner: &str,
        progress: i32,
        step: &str,
        lease: Duration,
    ) -> Result<Option<Scan>, StoreError> {
        let (owner, step) = (owner.to_string(), step.to_string());
        let (progress, secs) = (progress.clamp(0, 100), lease_secs(lease));
        model(
            self.run(move |b| b.record_step(id, &owner, progress, &step, secs))
                .await?,
        )
    }

    /// Renews the lease without an event; says whether a cancel was asked.
    pub async fn heartbeat(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Lease, StoreError> {
        let owner = owner.to_string();
        let secs = lease_secs(lease);
        Ok(
            match self.run(move |b| b.heartbeat(id, &owner, secs)).await? {
                Some(cancel_requested) => Lease::Held { cancel_requested },
                None => Lease::Lost,
            },
        )
    }

    /// Ends a scan the caller holds: terminal status, results, error. A
    /// COMPLETED scan's progress becomes 100.
    pub async fn finish(
        &self,
        id: i64,
        owner: &str,
        status: ScanStatus,
        results: &ScanResults,
        error: Option<&ScanError>,
    ) -> Result<Option<Scan>, StoreError> {
        let owner = owner.to_string();
        let end = Finish {
            status: status.as_str(),
            results: serde_json::to_value(results)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
            error_kind: error.map(|e| e.kind.as_str()),
            error_message: error.map(|e| e.message.clone()),
            summary: (status == ScanStatus::Completed).then(|| HostSummary::of(results)),
        };
        model(self.run(move |b| b.finish(id, &owner, &end)).await?)
    }

    /// PENDING → CANCELLED at once (returned with `true`: an event to
    /// publish); RUNNING → cancel requested for its worker; terminal scans
    /// are returned unchanged. `None` for an unknown id.
    pub async fn request_cancel(&self, id: i64) -> Result<Option<(Scan, bool)>, StoreError> {
        match self.run(move |b| b.request_cancel(id)).await? {
            Some((row, changed)) => Ok(Some((row.into_model()?, changed))),
            None => Ok(None),
        }
    }

    /// RUNNING scans whose lease expired (their worker died): requeued if
    /// they have attempts left, else FAILED as INTERRUPTED (CANCELLED if a
    /// cancel was asked). Returns the changed scans, to publish.
    pub async fn recover_expired(&self) -> Result<Vec<Scan>, StoreError> {
        models(self.run(|b| b.recover_expired(MAX_ATTEMPTS)).await?)
    }

    /// On shutdown: RUNNING scans of `owner` go back to PENDING without
    /// spending an attempt.
    pub async fn requeue_owned(&self, owner: &str) -> Result<Vec<Scan>, StoreError> {
        let owner = owner.to_string();
        models(self.run(move |b| b.requeue_owned(&owner)).await?)
    }

    /// Pins a host key unless one is pinned for `hostname:port`, and
    /// compares. `public_key` is the OpenSSH form "type base64".
    pub async fn pin_host_key(
        &self,
        hostname: &str,
        port: u16,
        algorithm: &str,
        public_key: &str,
        fingerprint: &str,
    ) -> Result<Pin, StoreError> {
        let pin = PinRecord {
            hostname: hostname.to_string(),
            port: i32::from(port),
            algorithm: algorithm.to_string(),
            public_key: public_key.to_string(),
            fingerprint: fingerprint.to_string(),
            first_seen: Utc::now(),
        };
        let key = pin.public_key.clone();
        Ok(match self.run(move |b| b.pin_host_key(&pin)).await? {
            None => Pin::Pinned,
            Some((known, _)) if known == key => Pin::Matches,
            Some((_, fingerprint)) => Pin::Differs { fingerprint },
        })
    }

    /// The algorithm of the key pinned for `hostname:port`, if any.
    pub async fn pinned_algorithm(
        &self,
        hostname: &str,
        port: u16,
    ) -> Result<Option<String>, StoreError> {
        let h = hostname.to_string();
        self.run(move |b| b.pinned_algorithm(&h, port)).await
    }
}

impl Store {
    /// Hosts ever scanned, in `q.order`, with their newest completed
    /// scan's summary. Filters combine with AND.
    pub async fn list_hosts(&self, q: HostQuery) -> Result<HostPage, StoreError> {
        let limit = q.limit.max(0);
        let order = q.order;
        let (mut rows, total) = self.run(move |b| b.list_hosts(&q)).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next = match rows.last() {
            Some((h, _, _)) if more => Some(match order {
                HostOrder::NewestActivity => HostCursor::BeforeScan(h.last_scan_id),
                HostOrder::Hostname => HostCursor::AfterHost(
                    h.hostname.clone(),
                    u16::try_from(h.port).unwrap_or(u16::MAX),
                ),
            }),
            _ => None,
        };
        Ok(HostPage {
            hosts: rows
                .into_iter()
                .map(|(h, status, at)| h.into_model(&status, at))
                .collect::<Result<_, _>>()?,
            next,
            total,
        })
    }

    /// Deletes terminal scans that ended more than `older_than` ago, in
    /// batches of `batch` (each its own short transaction, so workers and
    /// watchers never wait long), keeping each host's newest scan and newest
    /// completed scan. Returns how many were deleted; 0 when another replica
    /// holds the pruning lock.
    pub async fn prune(&self, older_than: Duration, batch: i64) -> Result<usize, StoreError> {
        let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
        let mut deleted = 0;
        loop {
            match self.run(move |b| b.prune(secs, batch.max(1))).await? {
                Some(0) | None => return Ok(deleted),
                Some(n) => deleted += n,
            }
            // Let the workers' writes through between batches.
            tokio::task::yield_now().await;
        }
    }

    /// How many scans `prune(older_than, …)` would delete now.
    pub async fn count_prunable(&self, older_than: Duration) -> Result<i64, StoreError> {
        let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
        self.run(move |b| b.count_prunable(secs)).await
    }
}

impl Store {
    /// The newest COMPLETED scan of `hostname:port` created before scan
    /// `before_id` whose type is one of `types` (DiffScans' default base).
    /// One index lookup per type.
    pub async fn previous_completed(
        &self,
        hostname: &str,
        port: u16,
        before_id: i64,
        types: &[ScanType],
    ) -> Result<Option<Scan>, StoreError> {
        let hostname = hostname.to_string();
        let types: Vec<&'static str> = types.iter().map(|t| t.as_str()).collect();
        let row = self
            .run(move |b| {
                let mut newest = None;
                for t in types {
                    newest = newest.max(b.previous_completed(
                        &hostname,
                        i32::from(port),
                        t,
                        before_id,
                    )?);
                }
                match newest {
                    Some(id) => b.get(id),
                    None => Ok(None),
                }
            })
            .await?;
        model(row)
    }
}

fn lease_secs(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The embedded database's default place: `$XDG_DATA_HOME/hostscan`, else
/// `~/.local/share/hostscan`. `None` when neither variable is set.
pub fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(dir) if Path::new(&dir).is_absolute() => Some(PathBuf::from(dir).join("hostscan")),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local/share/hostscan")),
    }
}

/// The file name of the embedded database inside a data directory.
pub const SQLITE_FILE: &str = "hostscan.db";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            Database::parse("postgres://u:p@h/db"),
            Ok(Database::Postgres("postgres://u:p@h/db".into()))
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/hostscan/x.db"),
            Ok(Database::Sqlite("/var/lib/hostscan/x.db".into()))
        );
        assert_eq!(
            Database::parse("sqlite://rel/x.db"),
            Ok(Database::Sqlite("rel/x.db".into()))
        );
        assert!(Database::parse("sqlite://").is_err());
        let e = Database::parse("mysql://u:secret@h/db").expect_err("mysql");
        assert!(!e.contains("secret") && e.contains("postgres://"), "{e}");
        assert_eq!(
            Database::Postgres("postgres://u:pw@h/d".into()).display(),
            "postgres://u:<redacted>@h/d"
        );
    }

    #[test]
    fn login_refusals_say_so() {
        let text = "timed out waiting for connection: connection to server at \"127.0.0.1\", \
                    port 5432 failed: fe_sendauth: no password supplied";
        assert!(is_login_refusal(text));
        assert!(login_hint(text).contains("refused this login"));
        assert!(!is_login_refusal(
            "timed out waiting for connection: Connection refused"
        ));
    }
}
