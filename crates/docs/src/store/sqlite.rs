use std::path::Path;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};

use super::sql::SqlDocumentStore;

/// Document records in a SQLite file (WAL): writes go through the one
/// writer connection, reads use a pool.
pub type SqliteDocumentStore = SqlDocumentStore<Sqlite>;

impl SqliteDocumentStore {
    /// Opens (creating if needed) the file at `path`.
    pub async fn open(path: &Path) -> crate::Result<Self> {
        // `NORMAL` in WAL mode: a commit survives a crash of the process.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal);
        let pools =
            echo_sql::sqlite::open_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { pools })
    }
}
