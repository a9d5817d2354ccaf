use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteSynchronous};

/// Document records in a SQLite file (WAL): writes go through the one
/// writer connection, reads use a pool.
#[derive(Debug, Clone)]
pub struct SqliteDocumentStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteDocumentStore {
    /// Opens (creating if needed) the file at `path`.
    pub async fn open(path: &Path) -> crate::Result<Self> {
        // `NORMAL` in WAL mode: a commit survives a crash of the process.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal);
        let (read, write) =
            echo_store::open_sqlite_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { read, write })
    }
}

super::sql::sql_document_store!(SqliteDocumentStore);
