//! The embedded backend: one SQLite file in WAL mode.
//!
//! Readers share a pool; writers go through a single connection, because
//! SQLite has one writer at a time and concurrent deferred transactions fail
//! with "database is locked" under load instead of queueing.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use sqlx::migrate::Migrator;

use crate::Result;

/// Identity's storage in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

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
        let options = options
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        let (read, write) = open_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { read, write })
    }
}

/// A SQLite file in WAL mode as Echo uses it: one writer connection (SQLite
/// has one writer at a time, and concurrent deferred transactions fail with
/// "database is locked" under load instead of queueing) and a pool of
/// read-only connections, opened after `migrator` brought the schema up to
/// date. Callers set durability (`synchronous`) on `options`.
pub async fn open_pools(
    options: SqliteConnectOptions,
    migrator: &Migrator,
) -> Result<(SqlitePool, SqlitePool)> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    migrator.run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.read_only(true))
        .await?;
    Ok((read, write))
}

crate::sql::sql_repositories!(SqliteStore, sqlx::Sqlite);
crate::accounts::account_repositories!(SqliteStore);
crate::keys::key_repositories!(SqliteStore);
