//! The embedded backend: one SQLite file in WAL mode.
//!
//! Readers share a pool; writers go through a single connection, because
//! SQLite has one writer at a time and concurrent deferred transactions fail
//! with "database is locked" under load instead of queueing.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;

use crate::Result;

/// WAL frames the writer may leave before it checkpoints by itself: a
/// backstop only, should the background checkpointer fall behind.
const WRITER_CHECKPOINT_PAGES: &str = "10000";
/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Identity's storage in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    _checkpointer: Arc<Checkpointer>,
    refresh_grants: Batcher<String, Option<(RefreshToken, User)>>,
    rotations: Batcher<Rotation, bool>,
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
            .foreign_keys(true)
            // Room for the batched refresh statements: one prepared
            // statement per batch size (see `sql::REFRESH_BATCH`).
            .statement_cache_capacity(512)
            .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
        let (read, write) =
            open_pools(options.clone(), &sqlx::migrate!("./migrations/sqlite")).await?;
        let checkpointer = Arc::new(Checkpointer::start(&options).await?);
        let (refresh_grants, rotations) = Self::refresh_batchers(&read, &write);
        Ok(Self {
            read,
            write,
            refresh_grants,
            rotations,
            _checkpointer: checkpointer,
        })
    }
}

/// Copies the WAL into the database file from a connection (and so a
/// thread) of its own, with `PRAGMA wal_checkpoint(PASSIVE)`, which waits
/// for no reader or writer. Left to the writer, SQLite checkpoints inside
/// a commit, and every write queued behind it waits for the copy and its
/// `fsync`. Stops when the store is dropped.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    async fn start(options: &SqliteConnectOptions) -> Result<Self> {
        let mut connection = options.connect().await?;
        Ok(Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut connection)
                    .await
                {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoints take over");
                }
            }
        })))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
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
