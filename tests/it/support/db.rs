//! A fresh database of either backend for one test: PostgreSQL (a database
//! of its own on the shared throwaway cluster, see `pg`) or the embedded
//! SQLite (a file in a temp dir). Tests of behaviour both backends share
//! take a `Backend` and run once per backend (see `both_backends!`).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use hostscan::store::Store;

use super::pg;
use super::temp_dir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub enum TestDb {
    Postgres(pg::TestDb),
    Sqlite {
        url: String,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl TestDb {
    /// A migrated, empty database.
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::Postgres(pg::TestDb::new().await),
            Backend::Sqlite => {
                let dir = temp_dir("hostscan-sqlite-");
                let path = dir.path().join("hostscan.db");
                let url = format!("sqlite://{}", path.display());
                Store::open(&url, 2, "test")
                    .expect("open sqlite")
                    .migrate()
                    .await
                    .expect("migrate sqlite");
                Self::Sqlite {
                    url,
                    path,
                    _dir: dir,
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => &db.url,
            Self::Sqlite { url, .. } => url,
        }
    }

    /// A store whose workers call themselves `owner`.
    pub fn store_as(&self, owner: &str) -> Store {
        Store::open(self.url(), 8, owner).expect("store")
    }

    pub fn store(&self) -> Store {
        self.store_as("test-instance")
    }

    /// Makes scan `id`'s lease expire now, as if its worker died.
    pub async fn expire_lease(&self, id: i64) {
        let sql = match self {
            Self::Postgres(_) => format!(
                "UPDATE scans SET lease_expires_at = now() - interval '1 second' WHERE id = {id}"
            ),
            Self::Sqlite { .. } => format!(
                "UPDATE scans SET lease_expires_at = \
                 CAST(unixepoch('subsec') * 1000000 AS INTEGER) - 1000000 WHERE id = {id}"
            ),
        };
        self.execute(&sql).await;
    }

    /// Runs SQL directly (for arranging and inspecting state).
    pub async fn execute(&self, sql: &str) {
        match self {
            Self::Postgres(db) => db.execute(sql).await,
            Self::Sqlite { path, .. } => {
                let (path, sql) = (path.display().to_string(), sql.to_string());
                tokio::task::spawn_blocking(move || {
                    let mut c = diesel::SqliteConnection::establish(&path).expect("sqlite");
                    c.batch_execute("PRAGMA busy_timeout = 5000")
                        .expect("pragma");
                    c.batch_execute(&sql).expect("sql");
                })
                .await
                .expect("join");
            }
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` as two tests,
/// `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::db::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::db::Backend::Sqlite).await
                }
            )*
        }
    };
}
