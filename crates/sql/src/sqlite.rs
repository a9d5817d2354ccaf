//! SQLite files as Echo uses them: WAL mode, one writer connection, a pool
//! of read-only connections, and optionally a background WAL checkpointer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::task::JoinHandle;

use crate::{OpenError, Pools};

/// WAL frames the writer may leave before it checkpoints by itself, where a
/// [`WalCheckpointer`] does it: a backstop only, should it fall behind.
const WRITER_CHECKPOINT_PAGES: &str = "10000";
/// How often a [`WalCheckpointer`] copies the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Opens the SQLite file of `options` (creating it if needed) in WAL mode:
/// one writer connection and a pool of read-only connections, opened after
/// `migrator` brought the schema up to date. Callers set durability
/// (`synchronous`) on `options`. The writer checkpoints the WAL itself, in
/// the commit that crosses SQLite's threshold.
pub async fn open_pools(
    options: SqliteConnectOptions,
    migrator: &Migrator,
) -> Result<Pools<Sqlite>, OpenError> {
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
    Ok(Pools {
        read,
        write,
        wal_checkpointer: None,
    })
}

/// [`open_pools`], with a [`WalCheckpointer`] copying the WAL into the
/// database, so that the writer's commits never wait for the copy: for a
/// store whose writes are many and latency matters (identity's).
pub async fn open_pools_with_wal_checkpointer(
    options: SqliteConnectOptions,
    migrator: &Migrator,
) -> Result<Pools<Sqlite>, OpenError> {
    let options = options.pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
    let mut pools = open_pools(options.clone(), migrator).await?;
    pools.wal_checkpointer = Some(Arc::new(WalCheckpointer::start(&options).await?));
    Ok(pools)
}

/// Copies the WAL into the database file from a connection (and so a
/// thread) of its own, with `PRAGMA wal_checkpoint(PASSIVE)`, which waits
/// for no reader or writer. Left to the writer, SQLite checkpoints inside
/// a commit, and every write queued behind it waits for the copy and its
/// `fsync`. A background task that stops when this is dropped.
#[derive(Debug)]
pub(crate) struct WalCheckpointer(JoinHandle<()>);

impl WalCheckpointer {
    async fn start(options: &SqliteConnectOptions) -> Result<Self, OpenError> {
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

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions as _;
    use sqlx::sqlite::SqliteConnectOptions;

    /// SQLite before 3.50.2 has CVE-2025-29087 and CVE-2025-29088 (integer
    /// overflows in `concat_ws` and the session extension) and
    /// CVE-2025-6965 (aggregate terms beyond the column limit). The one
    /// linked in is libsqlite3-sys's bundled copy, shared by sqlx and the
    /// audit log's rusqlite (one `links = "sqlite3"` per build).
    #[tokio::test]
    async fn the_linked_sqlite_has_the_2025_fixes() {
        let mut connection = SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .expect("an in-memory database");
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut connection)
            .await
            .expect("sqlite_version()");
        let numbers: Vec<u32> = version
            .split('.')
            .map(|n| n.parse().expect("a version number"))
            .collect();
        assert!(
            numbers >= vec![3, 50, 2],
            "SQLite {version} is older than 3.50.2"
        );
    }
}
