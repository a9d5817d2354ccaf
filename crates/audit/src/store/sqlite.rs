use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::Result;

/// The audit chain in a SQLite file: one writer connection, a reader pool.
#[derive(Debug, Clone)]
pub struct SqliteAuditStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteAuditStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Durable commit: an acknowledged event survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { read, write })
    }
}

// `PRAGMA optimize` with 0x10002: analyse what needs it, on every table.
super::sql::sql_audit_store!(SqliteAuditStore, sqlx::Sqlite, "PRAGMA optimize=0x10002");
