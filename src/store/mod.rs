//! PostgreSQL persistence: every SQL statement of hostscan lives here.
//!
//! The interface is in the domain's words (create, claim next, record step,
//! finish, request cancel, get, list, recover expired leases, pin host key),
//! so a second backend could replace this one without touching callers.
//! Sync diesel on an r2d2 pool, reached only through `Store::run`, which
//! moves the work to a blocking thread. Only the worker holding a scan's
//! lease writes its progress: every worker statement checks `lease_owner`.

pub mod listen;
mod schema;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::model::{Scan, ScanError, ScanErrorKind, ScanResults, ScanStatus, ScanType};
use schema::{scans, ssh_host_keys};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How many times a scan is claimed before an interrupted run fails it.
pub const MAX_ATTEMPTS: i32 = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (pool exhausted, server down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
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
                    || info.message().contains("server closed the connection") =>
            {
                Self::Unavailable(e.to_string())
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
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
}

#[derive(Debug, Clone)]
pub struct Page {
    pub scans: Vec<Scan>,
    /// The cursor for the next page, if there is one.
    pub next_before_id: Option<i64>,
    pub total: i64,
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

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = scans, check_for_backend(diesel::pg::Pg))]
struct ScanRow {
    id: i64,
    hostname: String,
    port: i32,
    username: String,
    scan_type: String,
    status: String,
    progress: i32,
    current_step: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    results: Option<serde_json::Value>,
    error_kind: Option<String>,
    error_message: Option<String>,
    request_id: Option<String>,
    sequence: i64,
    #[allow(dead_code)]
    attempts: i32,
    #[allow(dead_code)]
    lease_owner: Option<String>,
    #[allow(dead_code)]
    lease_expires_at: Option<DateTime<Utc>>,
    #[allow(dead_code)]
    cancel_requested: bool,
    proxy_jump: String,
}

impl ScanRow {
    fn into_model(self) -> Result<Scan, StoreError> {
        let bad = |what: &str, v: &str| {
            StoreError::Internal(format!("scan {}: bad {what} {v:?}", self.id))
        };
        let results = match self.results {
            Some(v) => Some(
                serde_json::from_value::<ScanResults>(v)
                    .map_err(|e| StoreError::Internal(format!("scan {}: results: {e}", self.id)))?,
            ),
            None => None,
        };
        let error = match self.error_kind.as_deref() {
            Some(kind) => Some(ScanError {
                kind: kind.parse().map_err(|_| bad("error kind", kind))?,
                message: self.error_message.clone().unwrap_or_default(),
            }),
            None => None,
        };
        Ok(Scan {
            id: self.id,
            hostname: self.hostname.clone(),
            port: u16::try_from(self.port).map_err(|_| bad("port", &self.port.to_string()))?,
            username: self.username.clone(),
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

fn model(row: Option<ScanRow>) -> Result<Option<Scan>, StoreError> {
    row.map(ScanRow::into_model).transpose()
}

fn models(rows: Vec<ScanRow>) -> Result<Vec<Scan>, StoreError> {
    rows.into_iter().map(ScanRow::into_model).collect()
}

/// Tags each pooled connection with this process's instance id (read by the
/// NOTIFY trigger) and bounds every statement.
#[derive(Debug)]
struct Session {
    instance: String,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for Session {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "SET hostscan.instance = '{}'; SET statement_timeout = '30s'",
            self.instance
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The scan store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<PgConnection>>,
    url: String,
    instance: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A pool of up to `size` connections to `url`. `instance` names this
    /// process in cross-replica notifications; it must be `[A-Za-z0-9_-]`.
    pub fn open(url: &str, size: u32, instance: &str) -> Result<Self, StoreError> {
        if !instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StoreError::Internal(format!(
                "bad instance id {instance:?}"
            )));
        }
        let pool = Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(3))
            .test_on_check_out(false)
            .connection_customizer(Box::new(Session {
                instance: instance.to_string(),
            }))
            .build_unchecked(ConnectionManager::<PgConnection>::new(url));
        Ok(Self {
            pool,
            url: url.to_string(),
            instance: instance.to_string(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.run(|conn| {
            conn.batch_execute("SELECT pg_advisory_lock(7235821)")?;
            let applied = conn
                .run_pending_migrations(MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect())
                .map_err(|e| StoreError::Internal(format!("migrations: {e}")));
            conn.batch_execute("SELECT pg_advisory_unlock(7235821)")?;
            applied
        })
        .await
    }

    /// Runs `f` on a pooled connection in a blocking thread, inside the
    /// caller's tracing span. The only way this module touches the database.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut PooledConnection<ConnectionManager<PgConnection>>) -> Result<T, StoreError>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| Ok(conn.batch_execute("SELECT 1")?)).await
    }

    /// Stores a PENDING scan. With a `request_id` seen before, returns the
    /// scan that id first created and `false`.
    pub async fn create(&self, new: NewScan) -> Result<(Scan, bool), StoreError> {
        self.run(move |conn| {
            let inserted = diesel::insert_into(scans::table)
                .values((
                    scans::hostname.eq(&new.hostname),
                    scans::port.eq(i32::from(new.port)),
                    scans::username.eq(&new.username),
                    scans::scan_type.eq(new.scan_type.as_str()),
                    scans::request_id.eq(&new.request_id),
                    scans::proxy_jump.eq(&new.proxy_jump),
                ))
                .on_conflict(scans::request_id)
                .do_nothing()
                .returning(ScanRow::as_returning())
                .get_result(conn)
                .optional()?;
            match (inserted, &new.request_id) {
                (Some(row), _) => Ok((row.into_model()?, true)),
                (None, Some(rid)) => {
                    let row = scans::table
                        .filter(scans::request_id.eq(rid))
                        .select(ScanRow::as_select())
                        .first(conn)?;
                    Ok((row.into_model()?, false))
                }
                (None, None) => Err(StoreError::Internal("insert returned no row".into())),
            }
        })
        .await
    }

    pub async fn get(&self, id: i64) -> Result<Option<Scan>, StoreError> {
        self.run(move |conn| {
            scans::table
                .find(id)
                .select(ScanRow::as_select())
                .first(conn)
                .optional()?
                .map(ScanRow::into_model)
                .transpose()
        })
        .await
    }

    /// Newest first, filters combined with AND, keyset by id.
    pub async fn list(&self, q: ListQuery) -> Result<Page, StoreError> {
        self.run(move |conn| {
            let filtered = || {
                let mut query = scans::table.into_boxed();
                if let Some(h) = &q.hostname {
                    query = query.filter(scans::hostname.eq(h.clone()));
                }
                if let Some(s) = q.status {
                    query = query.filter(scans::status.eq(s.as_str()));
                }
                if let Some(t) = q.scan_type {
                    query = query.filter(scans::scan_type.eq(t.as_str()));
                }
                query
            };
            let total: i64 = filtered().count().get_result(conn)?;
            let mut page = filtered();
            if let Some(before) = q.before_id {
                page = page.filter(scans::id.lt(before));
            }
            let mut rows: Vec<ScanRow> = page
                .order(scans::id.desc())
                .limit(q.limit + 1)
                .select(ScanRow::as_select())
                .load(conn)?;
            let more = rows.len() as i64 > q.limit;
            rows.truncate(usize::try_from(q.limit).unwrap_or(0));
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
        })
        .await
    }

    /// Takes the oldest PENDING scan for `owner`: RUNNING with a lease.
    pub async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Scan>, StoreError> {
        let owner = owner.to_string();
        let secs = lease_secs(lease);
        self.run(move |conn| {
            diesel::sql_query(
                "UPDATE scans SET status = 'running', lease_owner = $1, \
                   lease_expires_at = now() + $2 * interval '1 second', \
                   started_at = coalesce(started_at, now()), attempts = attempts + 1, \
                   current_step = 'connect', sequence = sequence + 1 \
                 WHERE id = (SELECT id FROM scans WHERE status = 'pending' \
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind::<Text, _>(owner)
            .bind::<Integer, _>(secs)
            .get_result::<ScanRow>(conn)
            .optional()
            .map_err(StoreError::from)
            .and_then(model)
        })
        .await
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
        let secs = lease_secs(lease);
        self.run(move |conn| {
            diesel::sql_query(
                "UPDATE scans SET progress = GREATEST(progress, $3), current_step = $4, \
                   lease_expires_at = now() + $5 * interval '1 second', sequence = sequence + 1 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING *",
            )
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(owner)
            .bind::<Integer, _>(progress.clamp(0, 100))
            .bind::<Text, _>(step)
            .bind::<Integer, _>(secs)
            .get_result::<ScanRow>(conn)
            .optional()
            .map_err(StoreError::from)
            .and_then(model)
        })
        .await
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
        self.run(move |conn| {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                cancel_requested: bool,
            }
            let row: Option<Row> = diesel::sql_query(
                "UPDATE scans SET lease_expires_at = now() + $3 * interval '1 second' \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
                 RETURNING cancel_requested",
            )
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(owner)
            .bind::<Integer, _>(secs)
            .get_result(conn)
            .optional()?;
            Ok(match row {
                Some(r) => Lease::Held {
                    cancel_requested: r.cancel_requested,
                },
                None => Lease::Lost,
            })
        })
        .await
    }

    /// Ends a scan the caller holds: terminal status, results, error.
    pub async fn finish(
        &self,
        id: i64,
        owner: &str,
        status: ScanStatus,
        results: &ScanResults,
        error: Option<&ScanError>,
    ) -> Result<Option<Scan>, StoreError> {
        let owner = owner.to_string();
        let results =
            serde_json::to_value(results).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (kind, message) = error.map_or((None, None), |e| {
            (Some(e.kind.as_str().to_string()), Some(e.message.clone()))
        });
        self.run(move |conn| {
            diesel::sql_query(
                "UPDATE scans SET status = $3, \
                   progress = CASE WHEN $3 = 'completed' THEN 100 ELSE progress END, \
                   current_step = '', completed_at = now(), results = $4, \
                   error_kind = $5, error_message = $6, lease_owner = NULL, \
                   lease_expires_at = NULL, sequence = sequence + 1 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING *",
            )
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(owner)
            .bind::<Text, _>(status.as_str())
            .bind::<diesel::sql_types::Jsonb, _>(results)
            .bind::<diesel::sql_types::Nullable<Text>, _>(kind)
            .bind::<diesel::sql_types::Nullable<Text>, _>(message)
            .get_result::<ScanRow>(conn)
            .optional()
            .map_err(StoreError::from)
            .and_then(model)
        })
        .await
    }

    /// PENDING → CANCELLED at once (returned with `true`: an event to
    /// publish); RUNNING → cancel requested for its worker; terminal scans
    /// are returned unchanged. `None` for an unknown id.
    pub async fn request_cancel(&self, id: i64) -> Result<Option<(Scan, bool)>, StoreError> {
        self.run(move |conn| {
            let cancelled = diesel::update(
                scans::table
                    .find(id)
                    .filter(scans::status.eq(ScanStatus::Pending.as_str())),
            )
            .set((
                scans::status.eq(ScanStatus::Cancelled.as_str()),
                scans::completed_at.eq(diesel::dsl::now),
                scans::current_step.eq(""),
                scans::error_kind.eq(ScanErrorKind::Cancelled.as_str()),
                scans::error_message.eq("cancelled before it started"),
                scans::results.eq(serde_json::to_value(ScanResults::default()).ok()),
                scans::sequence.eq(scans::sequence + 1),
            ))
            .returning(ScanRow::as_returning())
            .get_result(conn)
            .optional()?;
            if let Some(row) = cancelled {
                return Ok(Some((row.into_model()?, true)));
            }
            let row = diesel::update(
                scans::table
                    .find(id)
                    .filter(scans::status.eq(ScanStatus::Running.as_str())),
            )
            .set(scans::cancel_requested.eq(true))
            .returning(ScanRow::as_returning())
            .get_result(conn)
            .optional()?;
            let row = match row {
                Some(row) => Some(row),
                None => scans::table
                    .find(id)
                    .select(ScanRow::as_select())
                    .first(conn)
                    .optional()?,
            };
            row.map(|r| r.into_model().map(|s| (s, false))).transpose()
        })
        .await
    }

    /// RUNNING scans whose lease expired (their worker died): requeued if
    /// they have attempts left, else FAILED as INTERRUPTED (CANCELLED if a
    /// cancel was asked). Returns the changed scans, to publish.
    pub async fn recover_expired(&self) -> Result<Vec<Scan>, StoreError> {
        self.run(|conn| {
            conn.transaction(|conn| {
                let mut rows: Vec<ScanRow> = diesel::sql_query(
                    "UPDATE scans SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
                       current_step = 'requeued after an interrupted run', sequence = sequence + 1 \
                     WHERE id IN (SELECT id FROM scans WHERE status = 'running' \
                                  AND lease_expires_at < now() AND attempts < $1 \
                                  AND NOT cancel_requested FOR UPDATE SKIP LOCKED) \
                     RETURNING *",
                )
                .bind::<Integer, _>(MAX_ATTEMPTS)
                .load(conn)?;
                let failed: Vec<ScanRow> = diesel::sql_query(
                    "UPDATE scans SET \
                       status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, \
                       error_kind = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'interrupted' END, \
                       error_message = CASE WHEN cancel_requested THEN 'cancelled' \
                         ELSE 'the worker running this scan stopped ' || attempts || ' times' END, \
                       results = coalesce(results, '{}'::jsonb), \
                       lease_owner = NULL, lease_expires_at = NULL, current_step = '', \
                       completed_at = now(), sequence = sequence + 1 \
                     WHERE id IN (SELECT id FROM scans WHERE status = 'running' \
                                  AND lease_expires_at < now() FOR UPDATE SKIP LOCKED) \
                     RETURNING *",
                )
                .load(conn)?;
                rows.extend(failed);
                models(rows)
            })
        })
        .await
    }

    /// On shutdown: RUNNING scans of `owner` go back to PENDING without
    /// spending an attempt.
    pub async fn requeue_owned(&self, owner: &str) -> Result<Vec<Scan>, StoreError> {
        let owner = owner.to_string();
        self.run(move |conn| {
            let rows: Vec<ScanRow> = diesel::sql_query(
                "UPDATE scans SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
                   attempts = GREATEST(attempts - 1, 0), current_step = 'requeued at shutdown', \
                   sequence = sequence + 1 \
                 WHERE lease_owner = $1 AND status = 'running' RETURNING *",
            )
            .bind::<Text, _>(owner)
            .load(conn)?;
            models(rows)
        })
        .await
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
        let (h, a, k, f) = (
            hostname.to_string(),
            algorithm.to_string(),
            public_key.to_string(),
            fingerprint.to_string(),
        );
        self.run(move |conn| {
            let inserted = diesel::insert_into(ssh_host_keys::table)
                .values((
                    ssh_host_keys::hostname.eq(&h),
                    ssh_host_keys::port.eq(i32::from(port)),
                    ssh_host_keys::algorithm.eq(&a),
                    ssh_host_keys::public_key.eq(&k),
                    ssh_host_keys::fingerprint.eq(&f),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            if inserted == 1 {
                return Ok(Pin::Pinned);
            }
            let (known_key, known_fp): (String, String) = ssh_host_keys::table
                .find((&h, i32::from(port)))
                .select((ssh_host_keys::public_key, ssh_host_keys::fingerprint))
                .first(conn)?;
            Ok(if known_key == k {
                Pin::Matches
            } else {
                Pin::Differs {
                    fingerprint: known_fp,
                }
            })
        })
        .await
    }

    /// The algorithm of the key pinned for `hostname:port`, if any.
    pub async fn pinned_algorithm(
        &self,
        hostname: &str,
        port: u16,
    ) -> Result<Option<String>, StoreError> {
        let h = hostname.to_string();
        self.run(move |conn| {
            Ok(ssh_host_keys::table
                .find((h, i32::from(port)))
                .select(ssh_host_keys::algorithm)
                .first(conn)
                .optional()?)
        })
        .await
    }
}

fn lease_secs(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs().max(1)).unwrap_or(i32::MAX)
}
