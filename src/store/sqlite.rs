//! The embedded SQLite backend: the default for one server, no database
//! server to run. SQLite is bundled into the binary (no system package).
//!
//! One file, WAL mode (readers never wait for the writer), a busy timeout
//! for the writer lock, and every statement that writes either single or
//! inside `immediate_transaction` (a deferred transaction that reads, then
//! writes, fails at once with SQLITE_BUSY under concurrency). Timestamps are
//! INTEGER microseconds since the Unix epoch; results are JSON text. One
//! server per file: `ServerLock` refuses a second. Only SQL lives here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{
    Backend, Finish, HostCursor, HostListing, HostOrder, HostQuery, HostRecord, ListQuery, NewScan,
    PinRecord, PoolState, ScanRecord, StoreError,
};
use crate::model::{ScanErrorKind, ScanResults, ScanStatus};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The current time in the database's unit, as SQL.
macro_rules! now {
    () => {
        "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"
    };
}

mod schema {
    diesel::table! {
        scans (id) {
            id -> BigInt,
            hostname -> Text,
            port -> Integer,
            username -> Text,
            scan_type -> Text,
            status -> Text,
            progress -> Integer,
            current_step -> Text,
            created_at -> BigInt,
            started_at -> Nullable<BigInt>,
            completed_at -> Nullable<BigInt>,
            results -> Nullable<Text>,
            error_kind -> Nullable<Text>,
            error_message -> Nullable<Text>,
            request_id -> Nullable<Text>,
            sequence -> BigInt,
            attempts -> Integer,
            lease_owner -> Nullable<Text>,
            lease_expires_at -> Nullable<BigInt>,
            cancel_requested -> Bool,
            proxy_jump -> Text,
        }
    }

    diesel::table! {
        hosts (hostname, port) {
            hostname -> Text,
            port -> Integer,
            last_scan_id -> BigInt,
            completed_scan_id -> Nullable<BigInt>,
            completed_at -> Nullable<BigInt>,
            completed_type -> Nullable<Text>,
            os_id -> Nullable<Text>,
            os_pretty_name -> Nullable<Text>,
            kernel -> Nullable<Text>,
            package_count -> Nullable<BigInt>,
            step_error_count -> Nullable<Integer>,
        }
    }

    diesel::joinable!(hosts -> scans (last_scan_id));
    diesel::allow_tables_to_appear_in_same_query!(scans, hosts);

    diesel::table! {
        ssh_host_keys (hostname, port) {
            hostname -> Text,
            port -> Integer,
            algorithm -> Text,
            public_key -> Text,
            fingerprint -> Text,
            first_seen -> BigInt,
        }
    }
}

use schema::{hosts, scans, ssh_host_keys};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = scans, check_for_backend(diesel::sqlite::Sqlite))]
struct Row {
    id: i64,
    hostname: String,
    port: i32,
    username: String,
    scan_type: String,
    status: String,
    progress: i32,
    current_step: String,
    created_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    results: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    request_id: Option<String>,
    sequence: i64,
    attempts: i32,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    cancel_requested: bool,
    proxy_jump: String,
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn now_micros() -> i64 {
    micros(Utc::now())
}

impl TryFrom<Row> for ScanRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let results = match r.results {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                StoreError::Internal(format!("scan {}: results are not JSON: {e}", r.id))
            })?),
            None => None,
        };
        Ok(Self {
            id: r.id,
            hostname: r.hostname,
            port: r.port,
            username: r.username,
            scan_type: r.scan_type,
            status: r.status,
            progress: r.progress,
            current_step: r.current_step,
            created_at: time(r.created_at),
            started_at: r.started_at.map(time),
            completed_at: r.completed_at.map(time),
            results,
            error_kind: r.error_kind,
            error_message: r.error_message,
            request_id: r.request_id,
            sequence: r.sequence,
            attempts: r.attempts,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at.map(time),
            cancel_requested: r.cancel_requested,
            proxy_jump: r.proxy_jump,
        })
    }
}

impl From<&ScanRecord> for Row {
    fn from(r: &ScanRecord) -> Self {
        let r = r.clone();
        Self {
            id: r.id,
            hostname: r.hostname,
            port: r.port,
            username: r.username,
            scan_type: r.scan_type,
            status: r.status,
            progress: r.progress,
            current_step: r.current_step,
            created_at: micros(r.created_at),
            started_at: r.started_at.map(micros),
            completed_at: r.completed_at.map(micros),
            results: r.results.map(|v| v.to_string()),
            error_kind: r.error_kind,
            error_message: r.error_message,
            request_id: r.request_id,
            sequence: r.sequence,
            attempts: r.attempts,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at.map(micros),
            cancel_requested: r.cancel_requested,
            proxy_jump: r.proxy_jump,
        }
    }
}

fn record(row: Option<Row>) -> Result<Option<ScanRecord>, StoreError> {
    row.map(ScanRecord::try_from).transpose()
}

fn records(rows: Vec<Row>) -> Result<Vec<ScanRecord>, StoreError> {
    rows.into_iter().map(ScanRecord::try_from).collect()
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ssh_host_keys, check_for_backend(diesel::sqlite::Sqlite))]
struct PinRow {
    hostname: String,
    port: i32,
    algorithm: String,
    public_key: String,
    fingerprint: String,
    first_seen: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = hosts, check_for_backend(diesel::sqlite::Sqlite))]
struct HostRow {
    hostname: String,
    port: i32,
    last_scan_id: i64,
    completed_scan_id: Option<i64>,
    completed_at: Option<i64>,
    completed_type: Option<String>,
    os_id: Option<String>,
    os_pretty_name: Option<String>,
    kernel: Option<String>,
    package_count: Option<i64>,
    step_error_count: Option<i32>,
}

impl From<HostRow> for HostRecord {
    fn from(h: HostRow) -> Self {
        Self {
            hostname: h.hostname,
            port: h.port,
            last_scan_id: h.last_scan_id,
            completed_scan_id: h.completed_scan_id,
            completed_at: h.completed_at.map(time),
            completed_type: h.completed_type,
            os_id: h.os_id,
            os_pretty_name: h.os_pretty_name,
            kernel: h.kernel,
            package_count: h.package_count,
            step_error_count: h.step_error_count,
        }
    }
}

/// Records `host`'s newest scan and, if it has one, newest completed scan,
/// where they are newer than what the row has. Inside the caller's
/// immediate transaction.
fn upsert_host(conn: &mut SqliteConnection, host: &HostRecord) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO hosts (hostname, port, last_scan_id) VALUES (?1, ?2, ?3) \
         ON CONFLICT (hostname, port) DO UPDATE \
         SET last_scan_id = max(hosts.last_scan_id, excluded.last_scan_id)",
    )
    .bind::<Text, _>(&host.hostname)
    .bind::<Integer, _>(host.port)
    .bind::<BigInt, _>(host.last_scan_id)
    .execute(conn)?;
    if let Some(id) = host.completed_scan_id {
        diesel::update(
            hosts::table.find((&host.hostname, host.port)).filter(
                hosts::completed_scan_id
                    .is_null()
                    .or(hosts::completed_scan_id.lt(id)),
            ),
        )
        .set((
            hosts::completed_scan_id.eq(id),
            hosts::completed_at.eq(host.completed_at.map(micros)),
            hosts::completed_type.eq(&host.completed_type),
            hosts::os_id.eq(&host.os_id),
            hosts::os_pretty_name.eq(&host.os_pretty_name),
            hosts::kernel.eq(&host.kernel),
            hosts::package_count.eq(host.package_count),
            hosts::step_error_count.eq(host.step_error_count),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// Terminal scans that ended before the cutoff and are neither a host's
/// newest scan nor its newest completed one: what retention may delete.
const PRUNABLE: &str = concat!(
    "FROM scans s \
     WHERE s.status IN ('completed', 'failed', 'cancelled') \
       AND s.completed_at < ",
    now!(),
    " - ?1 * 1000000 \
       AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.completed_scan_id = s.id) \
       AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.last_scan_id = s.id)"
);

/// Pragmas every pooled connection gets.
#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

pub(super) struct Sqlite {
    pool: Pool<ConnectionManager<SqliteConnection>>,
}

type Conn = PooledConnection<ConnectionManager<SqliteConnection>>;

impl Sqlite {
    /// Opens (creating if needed) the database file at `path` and its
    /// directory (mode 0700: it holds host inventories).
    pub(super) fn open(path: &Path, size: u32) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| {
                StoreError::Internal(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let url = path
            .to_str()
            .ok_or_else(|| StoreError::Internal(format!("{} is not UTF-8", path.display())))?;
        let pool = Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(Duration::from_secs(5))
            .connection_customizer(Box::new(Pragmas))
            .build(ConnectionManager::<SqliteConnection>::new(url))
            .map_err(|e| StoreError::Internal(format!("cannot open SQLite database {url}: {e}")))?;
        Ok(Self { pool })
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        super::timed_get(&self.pool)
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Backend for Sqlite {
    fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.conn()?
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.iter().map(|m| m.to_string()).collect())
            .map_err(|e| StoreError::Internal(format!("migrations: {e}")))
    }

    fn ping(&self) -> Result<(), StoreError> {
        Ok(self.conn()?.batch_execute("SELECT 1")?)
    }

    fn create(&self, new: &NewScan) -> Result<(ScanRecord, bool), StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let inserted = diesel::insert_into(scans::table)
                .values((
                    scans::hostname.eq(&new.hostname),
                    scans::port.eq(i32::from(new.port)),
                    scans::username.eq(&new.username),
                    scans::scan_type.eq(new.scan_type.as_str()),
                    scans::request_id.eq(&new.request_id),
                    scans::proxy_jump.eq(&new.proxy_jump),
                    scans::created_at.eq(now_micros()),
                ))
                .on_conflict(scans::request_id)
                .do_nothing()
                .returning(Row::as_returning())
                .get_result(conn)
                .optional()?;
            match (inserted, &new.request_id) {
                (Some(row), _) => {
                    let record = ScanRecord::try_from(row)?;
                    upsert_host(conn, &HostRecord::of(&record)?)?;
                    Ok((record, true))
                }
                (None, Some(rid)) => {
                    let row = scans::table
                        .filter(scans::request_id.eq(rid))
                        .select(Row::as_select())
                        .first(conn)?;
                    Ok((row.try_into()?, false))
                }
                (None, None) => Err(StoreError::Internal("insert returned no row".into())),
            }
        })
    }

    fn get(&self, id: i64) -> Result<Option<ScanRecord>, StoreError> {
        record(
            scans::table
                .find(id)
                .select(Row::as_select())
                .first(&mut self.conn()?)
                .optional()?,
        )
    }

    fn list(&self, q: &ListQuery) -> Result<(Vec<ScanRecord>, i64), StoreError> {
        let conn = &mut self.conn()?;
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
            if let Some(t) = q.finished_since {
                query = query
                    .filter(scans::status.eq_any(["completed", "failed", "cancelled"]))
                    .filter(scans::completed_at.ge(micros(t)));
            }
            query
        };
        // One read transaction: the count and the page see the same rows.
        conn.transaction(|conn| {
            let total: i64 = filtered().count().get_result(conn)?;
            let mut page = filtered();
            if let Some(before) = q.before_id {
                page = page.filter(scans::id.lt(before));
            }
            let rows: Vec<Row> = page
                .order(scans::id.desc())
                .limit(q.limit.max(0) + 1)
                .select(Row::as_select())
                .load(conn)?;
            Ok((records(rows)?, total))
        })
    }

    fn claim_next(&self, owner: &str, lease_secs: i32) -> Result<Option<ScanRecord>, StoreError> {
        // One statement: SQLite runs it under the writer lock, so two
        // claimers can never take the same row.
        record(
            diesel::sql_query(concat!(
                "UPDATE scans SET status = 'running', lease_owner = ?1, \
                   lease_expires_at = ",
                now!(),
                " + ?2 * 1000000, started_at = coalesce(started_at, ",
                now!(),
                "), attempts = attempts + 1, current_step = 'connect', sequence = sequence + 1 \
                 WHERE id = (SELECT id FROM scans WHERE status = 'pending' ORDER BY id LIMIT 1) \
                 RETURNING *"
            ))
            .bind::<Text, _>(owner)
            .bind::<Integer, _>(lease_secs)
            .get_result::<Row>(&mut self.conn()?)
            .optional()?,
        )
    }

    fn record_step(
        &self,
        id: i64,
        owner: &str,
        progress: i32,
        step: &str,
        lease_secs: i32,
    ) -> Result<Option<ScanRecord>, StoreError> {
        record(
            diesel::sql_query(concat!(
                "UPDATE scans SET progress = max(progress, ?3), current_step = ?4, \
                   lease_expires_at = ",
                now!(),
                " + ?5 * 1000000, sequence = sequence + 1 \
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running' RETURNING *"
            ))
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(owner)
            .bind::<Integer, _>(progress)
            .bind::<Text, _>(step)
            .bind::<Integer, _>(lease_secs)
            .get_result::<Row>(&mut self.conn()?)
            .optional()?,
        )
    }

    fn heartbeat(&self, id: i64, owner: &str, lease_secs: i32) -> Result<Option<bool>, StoreError> {
        #[derive(QueryableByName)]
        struct Held {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            cancel_requested: bool,
        }
        let row: Option<Held> = diesel::sql_query(concat!(
            "UPDATE scans SET lease_expires_at = ",
            now!(),
            " + ?3 * 1000000 \
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'running' \
             RETURNING cancel_requested"
        ))
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(owner)
        .bind::<Integer, _>(lease_secs)
        .get_result(&mut self.conn()?)
        .optional()?;
        Ok(row.map(|r| r.cancel_requested))
    }

    fn finish(&self, id: i64, owner: &str, end: &Finish) -> Result<Option<ScanRecord>, StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let row = record(
                diesel::sql_query(concat!(
                    "UPDATE scans SET status = ?3, \
                       progress = CASE WHEN ?3 = 'completed' THEN 100 ELSE progress END, \
                       current_step = '', completed_at = ",
                    now!(),
                    ", results = ?4, error_kind = ?5, error_message = ?6, lease_owner = NULL, \
                       lease_expires_at = NULL, sequence = sequence + 1 \
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'running' RETURNING *"
                ))
                .bind::<BigInt, _>(id)
                .bind::<Text, _>(owner)
                .bind::<Text, _>(end.status)
                .bind::<Text, _>(end.results.to_string())
                .bind::<Nullable<Text>, _>(end.error_kind)
                .bind::<Nullable<Text>, _>(&end.error_message)
                .get_result::<Row>(conn)
                .optional()?,
            )?;
            if let (Some(record), Some(summary)) = (&row, &end.summary) {
                let mut host = HostRecord::of(record)?;
                host.complete(record.id, record.completed_at, &record.scan_type, summary);
                upsert_host(conn, &host)?;
            }
            Ok(row)
        })
    }

    fn request_cancel(&self, id: i64) -> Result<Option<(ScanRecord, bool)>, StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let cancelled = diesel::update(
                scans::table
                    .find(id)
                    .filter(scans::status.eq(ScanStatus::Pending.as_str())),
            )
            .set((
                scans::status.eq(ScanStatus::Cancelled.as_str()),
                scans::completed_at.eq(now_micros()),
                scans::current_step.eq(""),
                scans::error_kind.eq(ScanErrorKind::Cancelled.as_str()),
                scans::error_message.eq("cancelled before it started"),
                scans::results.eq(serde_json::to_string(&ScanResults::default()).ok()),
                scans::sequence.eq(scans::sequence + 1),
            ))
            .returning(Row::as_returning())
            .get_result(conn)
            .optional()?;
            if let Some(row) = cancelled {
                return Ok(Some((row.try_into()?, true)));
            }
            let requested = diesel::update(
                scans::table
                    .find(id)
                    .filter(scans::status.eq(ScanStatus::Running.as_str())),
            )
            .set(scans::cancel_requested.eq(true))
            .returning(Row::as_returning())
            .get_result(conn)
            .optional()?;
            let row = match requested {
                Some(row) => Some(row),
                None => scans::table
                    .find(id)
                    .select(Row::as_select())
                    .first(conn)
                    .optional()?,
            };
            Ok(record(row)?.map(|r| (r, false)))
        })
    }

    fn recover_expired(&self, max_attempts: i32) -> Result<Vec<ScanRecord>, StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let mut rows: Vec<Row> = diesel::sql_query(concat!(
                "UPDATE scans SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
                   current_step = 'requeued after an interrupted run', sequence = sequence + 1 \
                 WHERE status = 'running' AND lease_expires_at < ",
                now!(),
                " AND attempts < ?1 AND NOT cancel_requested RETURNING *"
            ))
            .bind::<Integer, _>(max_attempts)
            .load(conn)?;
            let failed: Vec<Row> = diesel::sql_query(concat!(
                "UPDATE scans SET \
                   status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, \
                   error_kind = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'interrupted' END, \
                   error_message = CASE WHEN cancel_requested THEN 'cancelled' \
                     ELSE 'the worker running this scan stopped ' || attempts || ' times' END, \
                   results = coalesce(results, '{}'), \
                   lease_owner = NULL, lease_expires_at = NULL, current_step = '', \
                   completed_at = ",
                now!(),
                ", sequence = sequence + 1 \
                 WHERE status = 'running' AND lease_expires_at < ",
                now!(),
                " RETURNING *"
            ))
            .load(conn)?;
            rows.extend(failed);
            records(rows)
        })
    }

    fn requeue_owned(&self, owner: &str) -> Result<Vec<ScanRecord>, StoreError> {
        let rows: Vec<Row> = diesel::sql_query(
            "UPDATE scans SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
               attempts = max(attempts - 1, 0), current_step = 'requeued at shutdown', \
               sequence = sequence + 1 \
             WHERE lease_owner = ?1 AND status = 'running' RETURNING *",
        )
        .bind::<Text, _>(owner)
        .load(&mut self.conn()?)?;
        records(rows)
    }

    fn pin_host_key(&self, pin: &PinRecord) -> Result<Option<(String, String)>, StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let inserted = diesel::insert_into(ssh_host_keys::table)
                .values((
                    ssh_host_keys::hostname.eq(&pin.hostname),
                    ssh_host_keys::port.eq(pin.port),
                    ssh_host_keys::algorithm.eq(&pin.algorithm),
                    ssh_host_keys::public_key.eq(&pin.public_key),
                    ssh_host_keys::fingerprint.eq(&pin.fingerprint),
                    ssh_host_keys::first_seen.eq(micros(pin.first_seen)),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            if inserted == 1 {
                return Ok(None);
            }
            Ok(Some(
                ssh_host_keys::table
                    .find((&pin.hostname, pin.port))
                    .select((ssh_host_keys::public_key, ssh_host_keys::fingerprint))
                    .first(conn)?,
            ))
        })
    }

    fn pinned_algorithm(&self, hostname: &str, port: u16) -> Result<Option<String>, StoreError> {
        Ok(ssh_host_keys::table
            .find((hostname, i32::from(port)))
            .select(ssh_host_keys::algorithm)
            .first(&mut self.conn()?)
            .optional()?)
    }

    fn export_scans(&self, after_id: i64, limit: i64) -> Result<Vec<ScanRecord>, StoreError> {
        records(
            scans::table
                .filter(scans::id.gt(after_id))
                .order(scans::id.asc())
                .limit(limit)
                .select(Row::as_select())
                .load(&mut self.conn()?)?,
        )
    }

    fn get_many(&self, ids: &[i64]) -> Result<Vec<ScanRecord>, StoreError> {
        records(
            scans::table
                .filter(scans::id.eq_any(ids))
                .select(Row::as_select())
                .load(&mut self.conn()?)?,
        )
    }

    fn put_scans(&self, rows: &[ScanRecord]) -> Result<(), StoreError> {
        let rows: Vec<Row> = rows.iter().map(Row::from).collect();
        // AUTOINCREMENT remembers the highest id written, so new scans
        // get ids above every copied one.
        self.conn()?.immediate_transaction(|conn| {
            for row in &rows {
                diesel::replace_into(scans::table)
                    .values(row)
                    .execute(conn)?;
            }
            Ok(())
        })
    }

    fn export_pins(&self) -> Result<Vec<PinRecord>, StoreError> {
        let rows: Vec<PinRow> = ssh_host_keys::table
            .order((ssh_host_keys::hostname, ssh_host_keys::port))
            .select(PinRow::as_select())
            .load(&mut self.conn()?)?;
        Ok(rows
            .into_iter()
            .map(|p| PinRecord {
                hostname: p.hostname,
                port: p.port,
                algorithm: p.algorithm,
                public_key: p.public_key,
                fingerprint: p.fingerprint,
                first_seen: time(p.first_seen),
            })
            .collect())
    }

    fn import_pins(&self, rows: &[PinRecord]) -> Result<usize, StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            let mut inserted = 0;
            for p in rows {
                inserted += diesel::insert_into(ssh_host_keys::table)
                    .values(PinRow {
                        hostname: p.hostname.clone(),
                        port: p.port,
                        algorithm: p.algorithm.clone(),
                        public_key: p.public_key.clone(),
                        fingerprint: p.fingerprint.clone(),
                        first_seen: micros(p.first_seen),
                    })
                    .on_conflict_do_nothing()
                    .execute(conn)?;
            }
            Ok(inserted)
        })
    }

    fn list_hosts(&self, q: &HostQuery) -> Result<(Vec<HostListing>, i64), StoreError> {
        let conn = &mut self.conn()?;
        let filtered = || {
            let mut query = hosts::table.inner_join(scans::table).into_boxed();
            if let Some(prefix) = &q.hostname_prefix {
                // Validated host-name characters: no LIKE wildcards.
                query = query.filter(hosts::hostname.like(format!("{prefix}%")));
            }
            if let Some(os) = &q.os_id {
                query = query.filter(hosts::os_id.eq(os.clone()));
            }
            query
        };
        let total: i64 = filtered().count().get_result(conn)?;
        let mut page = filtered();
        page = match &q.after {
            Some(HostCursor::BeforeScan(id)) => page.filter(hosts::last_scan_id.lt(*id)),
            Some(HostCursor::AfterHost(name, port)) => page.filter(
                hosts::hostname.gt(name.clone()).or(hosts::hostname
                    .eq(name.clone())
                    .and(hosts::port.gt(i32::from(*port)))),
            ),
            None => page,
        };
        page = match q.order {
            HostOrder::NewestActivity => page.order(hosts::last_scan_id.desc()),
            HostOrder::Hostname => page.order((hosts::hostname.asc(), hosts::port.asc())),
        };
        let rows: Vec<(HostRow, String, i64)> = page
            .limit(q.limit.max(0) + 1)
            .select((HostRow::as_select(), scans::status, scans::created_at))
            .load(conn)?;
        Ok((
            rows.into_iter()
                .map(|(h, status, at)| (h.into(), status, time(at)))
                .collect(),
            total,
        ))
    }

    fn put_hosts(&self, rows: &[HostRecord]) -> Result<(), StoreError> {
        self.conn()?.immediate_transaction(|conn| {
            for host in rows {
                upsert_host(conn, host)?;
            }
            Ok(())
        })
    }

    fn prune(&self, older_than_secs: i64, batch: i64) -> Result<Option<usize>, StoreError> {
        // One server per file: no other replica to take turns with.
        let deleted = self.conn()?.immediate_transaction(|conn| {
            diesel::sql_query(format!(
                "DELETE FROM scans WHERE id IN \
                   (SELECT s.id {PRUNABLE} ORDER BY s.completed_at LIMIT ?2)"
            ))
            .bind::<BigInt, _>(older_than_secs)
            .bind::<BigInt, _>(batch)
            .execute(conn)
        })?;
        Ok(Some(deleted))
    }

    fn previous_completed(
        &self,
        hostname: &str,
        port: i32,
        scan_type: &str,
        before_id: i64,
    ) -> Result<Option<i64>, StoreError> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        // 'completed' is a literal: it matches the partial index's predicate.
        let row: Option<Id> = diesel::sql_query(
            "SELECT id FROM scans WHERE hostname = ?1 AND port = ?2 AND scan_type = ?3 \
               AND status = 'completed' AND id < ?4 ORDER BY id DESC LIMIT 1",
        )
        .bind::<Text, _>(hostname)
        .bind::<Integer, _>(port)
        .bind::<Text, _>(scan_type)
        .bind::<BigInt, _>(before_id)
        .get_result(&mut self.conn()?)
        .optional()?;
        Ok(row.map(|r| r.id))
    }

    fn count_prunable(&self, older_than_secs: i64) -> Result<i64, StoreError> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let count: Count = diesel::sql_query(format!("SELECT count(*) AS n {PRUNABLE}"))
            .bind::<BigInt, _>(older_than_secs)
            .get_result(&mut self.conn()?)?;
        Ok(count.n)
    }

    fn pool_state(&self) -> PoolState {
        super::pool_state(&self.pool)
    }

    fn pending_summary(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let (count, oldest) = scans::table
            .filter(scans::status.eq(ScanStatus::Pending.as_str()))
            .select((
                diesel::dsl::count_star(),
                diesel::dsl::min(scans::created_at),
            ))
            .first::<(i64, Option<i64>)>(&mut self.conn()?)?;
        Ok((count, oldest.map(time)))
    }
}

/// Holds the embedded database for one server process: a second server (or
/// `copy-db`) on the same file is refused while this lives. An advisory
/// `flock` on `<file>.lock`, released by the OS when the process exits, so a
/// crashed server never leaves a stale lock.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
    path: PathBuf,
}

impl ServerLock {
    /// Takes the lock for the database at `db`; the error says who holds it.
    pub fn acquire(db: &Path) -> Result<Self, String> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(format!(
                    "{} is in use by another hostscan process{}: the embedded database serves \
                     one server at a time; stop it first, or move to PostgreSQL \
                     (hostscan copy-db) to run several replicas",
                    db.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        file.set_len(0).ok();
        write!(file, "{}", std::process::id()).ok();
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
