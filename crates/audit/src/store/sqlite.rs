use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteSynchronous};

use super::Result;

/// The audit chain in a SQLite file: one writer connection, a reader pool.
#[derive(Debug, Clone)]
pub struct SqliteAuditStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteAuditStore {
    pub async fn open(path: &Path) -> Result<Self> {
        // Durable commit: an acknowledged event survives a power cut.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Full);
        let (read, write) =
            echo_store::open_sqlite_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { read, write })
    }
}

// `PRAGMA optimize` with 0x10002: analyse what needs it, on every table.
super::sql::sql_audit_store!(SqliteAuditStore, sqlx::Sqlite, "PRAGMA optimize=0x10002");
