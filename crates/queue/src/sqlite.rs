use std::path::Path;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};

use crate::QueueConfig;
use crate::sql::{QueueBackend, SqlQueue};

/// The queue in a SQLite file (WAL): takes and every other write go through
/// the one writer connection, so they never race; status reads use a pool.
pub type SqliteQueue = SqlQueue<Sqlite>;

impl QueueBackend for Sqlite {
    const SKIP_LOCKED: &'static str = "";
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path`.
    pub async fn open(path: &Path, config: QueueConfig) -> crate::Result<Self> {
        // `NORMAL` in WAL mode: a commit survives a crash of the process,
        // the last few may not survive a power cut.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal);
        let pools =
            echo_sql::sqlite::open_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self {
            // The writer again: `synchronous = NORMAL` already makes every
            // commit as cheap as PostgreSQL's advisory writes.
            advisory: pools.write.clone(),
            pools,
            config,
        })
    }
}
