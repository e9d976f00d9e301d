//! Real PostgreSQL for tests: `DATABASE_URL` when set (an admin URL), else a
//! throwaway cluster started from the machine's PostgreSQL binaries in a
//! temp dir. Each test gets its own database cloned from a migrated template.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use tokio::sync::OnceCell;

use super::{Tied, eventually, find, free_port, is_root, run};

/// A running PostgreSQL server we can reach as a superuser.
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT` (no database).
    pub base_url: String,
    pub port: u16,
    /// `None` when the server is external (`DATABASE_URL`).
    process: Option<Tied>,
    data_dir: Option<PathBuf>,
    /// Extra `postgres` command-line settings, kept for `restart`.
    settings: String,
}

/// How a throwaway cluster differs from the default.
#[derive(Default)]
pub struct ServerOptions {
    /// Extra `postgres` arguments, e.g. `-c ssl=on`.
    pub settings: String,
    /// pg_hba.conf to use instead of initdb's trust-everything one.
    pub hba: Option<String>,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HOSTSCAN_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    find(&versions.into_iter().rev().filter(|p| p.join("initdb").exists()).collect::<Vec<_>>())
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install `postgresql` (see .ci/run) or set DATABASE_URL")
}

impl Cluster {
    /// Starts a new throwaway cluster (its own data directory and port).
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "hostscan-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let as_postgres = if is_root() {
            run(
                "chown",
                &["postgres:postgres", dir.to_str().expect("utf-8 path")],
            );
            "setpriv --reuid=postgres --regid=postgres --clear-groups "
        } else {
            ""
        };
        let data = dir.join("data");
        // From inside the cluster dir: as the postgres user, the caller's
        // working directory may not be readable (a checkout under /root).
        let initdb = format!(
            "cd {} && {as_postgres}{} -D {} -U postgres --auth=trust -E UTF8 --no-sync --no-instructions >/dev/null",
            dir.display(),
            bin.join("initdb").display(),
            data.display()
        );
        run("sh", &["-c", &initdb]);
        if let Some(hba) = &options.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        }
        let port = free_port();
        let process = spawn_server(&dir, port, &options.settings);
        let cluster = Self {
            base_url: format!("postgres://postgres@127.0.0.1:{port}"),
            port,
            process: Some(process),
            data_dir: Some(dir),
            settings: options.settings,
        };
        cluster.wait_ready().await;
        cluster
    }

    async fn wait_ready(&self) {
        let admin = self.url("postgres");
        eventually(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                let admin = admin.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        PgConnection::establish(&admin).ok().map(|_| ())
                    })
                    .await
                    .ok()
                    .flatten()
                }
            },
        )
        .await;
    }

    fn external(url: &str) -> Self {
        // Strip the database name and query: we create our own databases.
        let base = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split(['/', '?']).next().unwrap_or(rest);
                format!("{scheme}://{authority}")
            }
            None => url.to_string(),
        };
        Self {
            base_url: base.to_string(),
            port: 0,
            process: None,
            data_dir: None,
            settings: String::new(),
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base_url)
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping
    /// its data for `restart`.
    pub fn stop(&mut self) {
        if let Some(dir) = &self.data_dir {
            std::fs::write(dir.join(KEEP), "").ok();
        }
        if let Some(p) = self.process.as_mut() {
            p.stop();
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub async fn restart(&mut self) {
        let dir = self
            .data_dir
            .clone()
            .expect("only a throwaway cluster restarts");
        std::fs::remove_file(dir.join(KEEP)).ok();
        self.process = Some(spawn_server(&dir, self.port, &self.settings));
        self.wait_ready().await;
    }

    /// Creates a migrated database and returns its URL.
    pub async fn migrated_database(&self, name: &str) -> String {
        let admin = self.url("postgres");
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let create = format!("CREATE DATABASE {name}");
        tokio::task::spawn_blocking(move || {
            let mut c = PgConnection::establish(&admin).expect("admin connection");
            c.batch_execute(&drop).expect("drop database");
            c.batch_execute(&create).expect("create database")
        })
        .await
        .expect("join");
        let url = self.url(name);
        let store = hostscan::store::Store::open(&url, 2, "test").expect("store");
        store.migrate().await.expect("migrate");
        url
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);
/// A file in the cluster dir that says "stopped on purpose, keep the data".
const KEEP: &str = "keep";

/// Runs `postgres` on `dir/data` (as the postgres user when we are root),
/// removing `dir` once it exits unless `dir/keep` exists.
fn spawn_server(dir: &std::path::Path, port: u16, settings: &str) -> Tied {
    let as_postgres = if is_root() {
        "setpriv --reuid=postgres --regid=postgres --clear-groups "
    } else {
        ""
    };
    let command = format!(
        "cd {dir} && exec {as_postgres}{} -D {dir}/data -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c max_connections=600 -c shared_buffers=64MB -c log_min_messages=panic {settings}",
        bin_dir().join("postgres").display(),
        dir = dir.display(),
    );
    let cleanup = format!("[ -e {dir}/{KEEP} ] || rm -rf {dir}", dir = dir.display());
    Tied::spawn("postgres", &command, "INT", &cleanup)
}
static SHARED: OnceCell<Cluster> = OnceCell::const_new();
const TEMPLATE: &str = "hostscan_template";

/// The cluster shared by this test run, with a migrated template database.
pub async fn shared() -> &'static Cluster {
    SHARED
        .get_or_init(|| async {
            let cluster = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => Cluster::external(&url),
                _ => Cluster::start().await,
            };
            let template = format!("{TEMPLATE}_{}", std::process::id());
            cluster.migrated_database(&template).await;
            // Nothing may stay connected to a template that is cloned.
            let admin = cluster.url("postgres");
            let sql = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{template}' AND pid <> pg_backend_pid()"
            );
            tokio::task::spawn_blocking(move || {
                let mut c = PgConnection::establish(&admin).expect("admin connection");
                c.batch_execute(&sql)
                    .expect("terminate template connections");
            })
            .await
            .expect("join");
            cluster
        })
        .await
}

/// A fresh, migrated database of its own for one test.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let cluster = shared().await;
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let template = format!("{TEMPLATE}_{}", std::process::id());
        let admin = cluster.url("postgres");
        let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
        let a = admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = PgConnection::establish(&a).expect("admin connection");
            c.batch_execute(&sql).expect("create test database");
        })
        .await
        .expect("join");
        Self {
            url: cluster.url(&name),
            name,
            admin,
        }
    }

    /// The rows of a query whose one column is text named `line`, one per
    /// line of the answer.
    pub async fn query_text(&self, sql: &str) -> String {
        #[derive(diesel::QueryableByName)]
        struct Line {
            #[diesel(sql_type = diesel::sql_types::Text)]
            line: String,
        }
        let (url, sql) = (self.url.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || {
            let mut c = PgConnection::establish(&url).expect("connection");
            let lines: Vec<Line> = diesel::sql_query(&sql).load(&mut c).expect("query");
            lines
                .into_iter()
                .map(|l| l.line)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .await
        .expect("join")
    }

    /// PostgreSQL's plan for `sql`, as EXPLAIN prints it.
    pub async fn explain(&self, sql: &str) -> String {
        #[derive(diesel::QueryableByName)]
        struct Plan {
            #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let (url, sql) = (self.url.clone(), format!("EXPLAIN {sql}"));
        tokio::task::spawn_blocking(move || {
            let mut c = PgConnection::establish(&url).expect("connection");
            let lines: Vec<Plan> = diesel::sql_query(&sql).load(&mut c).expect("explain");
            lines
                .into_iter()
                .map(|l| l.line)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .await
        .expect("join")
    }

    /// Runs SQL directly (for arranging and inspecting state).
    pub async fn execute(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || {
            let mut c = PgConnection::establish(&url).expect("connection");
            c.batch_execute(&sql).expect("sql");
        })
        .await
        .expect("join");
    }

    pub fn store(&self) -> hostscan::store::Store {
        hostscan::store::Store::open(&self.url, 8, "test-instance").expect("store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Ok(mut c) = PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&sql);
        }
    }
}
