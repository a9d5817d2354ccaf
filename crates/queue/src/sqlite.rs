use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteSynchronous};

use crate::QueueConfig;

/// The queue in a SQLite file (WAL): takes and every other write go through
/// the one writer connection, so they never race; status reads use a pool.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    read: SqlitePool,
    write: SqlitePool,
    /// The writer again: `synchronous = NORMAL` already makes every commit
    /// as cheap as PostgreSQL's advisory writes.
    advisory: SqlitePool,
    config: QueueConfig,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path`.
    pub async fn open(path: &Path, config: QueueConfig) -> crate::Result<Self> {
        // `NORMAL` in WAL mode: a commit survives a crash of the process,
        // the last few may not survive a power cut.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal);
        let (read, write) =
            echo_store::open_sqlite_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self {
            read,
            advisory: write.clone(),
            write,
            config,
        })
    }
}

crate::sql::sql_job_queue!(SqliteQueue, sqlx::Sqlite, skip_locked: "");
