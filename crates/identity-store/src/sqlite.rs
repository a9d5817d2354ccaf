//! The embedded backend: one SQLite file in WAL mode.
//!
//! Readers share a pool; writers go through a single connection, because
//! SQLite has one writer at a time and concurrent deferred transactions fail
//! with "database is locked" under load instead of queueing. A background
//! task copies the WAL into the database, so no commit waits for that.

use std::path::Path;
use std::str::FromStr;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};

use crate::Result;
use crate::sql::SqlStore;

/// Identity's storage in a SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a `sqlite://` URL.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::from_str(url)?).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self> {
        // FULL: a commit is on disk before it is answered, so a power loss
        // cannot bring back a used code, a rotated refresh token, a
        // revocation, a TOTP step or a lockout counter (BENCHMARKS.md has
        // the cost).
        let options = options
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Room for the batched refresh statements: one prepared
            // statement per batch size (see `sql::REFRESH_BATCH`).
            .statement_cache_capacity(512);
        let pools = echo_sql::sqlite::open_pools_with_wal_checkpointer(
            options,
            &sqlx::migrate!("./migrations/sqlite"),
        )
        .await?;
        Ok(Self::new(pools))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection, the writer's above all, commits with FULL
    /// durability (2): NORMAL (1) may lose the last commits on power loss.
    #[tokio::test]
    async fn commits_are_fully_synchronous() {
        let dir = echo_testkit::data_dir();
        let store = SqliteStore::open(&dir.path().join("echo.db"))
            .await
            .unwrap();
        for pool in [&store.pools.write, &store.pools.read] {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(level, 2);
        }
    }
}
