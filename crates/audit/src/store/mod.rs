//! The audit chain's storage: one trait, [`AuditStore`], and one
//! implementation, [`SqlAuditStore`], whose SQL both backends run:
//! [`SqliteAuditStore`] and [`PgAuditStore`], which differ only where
//! [`AuditBackend`] says.
//!
//! Appends are serialised by the single `audit_head` row, which every append
//! updates inside its transaction: on PostgreSQL that row lock queues
//! concurrent writers, on SQLite the single writer connection does.

use async_trait::async_trait;

use crate::chain::{Anchor, ChainedEvent, Hash};
use crate::checkpoint::Checkpoint;
use crate::event::{Event, StoredFields};

mod page;
mod postgres;
mod sql;
mod sqlite;

pub use sql::{AuditBackend, SqlAuditStore, search_words};

pub use page::RowPage;
pub use postgres::PgAuditStore;
pub use sqlite::SqliteAuditStore;

#[derive(Debug, thiserror::Error)]
pub enum AuditStoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored audit data is corrupt: {0}")]
    Corrupt(String),
}

impl AuditStoreError {
    /// Whether the database does not answer now
    /// ([`echo_sql::is_unavailable`]): ingest answers `503` and writers
    /// keep their events spooled until it is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuditStoreError::Database(e) if echo_sql::is_unavailable(e))
    }
}

pub type Result<T, E = AuditStoreError> = std::result::Result<T, E>;

impl From<echo_sql::OpenError> for AuditStoreError {
    fn from(e: echo_sql::OpenError) -> Self {
        match e {
            echo_sql::OpenError::Database(e) => AuditStoreError::Database(e),
            echo_sql::OpenError::Migrate(e) => AuditStoreError::Migrate(e),
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Events stored now.
    pub stored: usize,
    /// Events already stored before (same service and id): a retried batch.
    pub duplicates: usize,
    pub head: Anchor,
}

/// Filters of `GET /v1/events`. Results come newest first by event time
/// (ties by `seq`), or with free text by arrival (`seq`); `before` is the
/// keyset cursor: the last row of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub service: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub level: Option<String>,
    pub outcome: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    /// Free text: every word must be a word of the message, action or actor
    /// (a prefix of one if it ends in `*`; see [`search_words`]); empty for
    /// no text filter.
    pub words: Vec<String>,
    pub before: Option<Cursor>,
    pub limit: i64,
}

/// A position in query order, written `<time>.<seq>` in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time: i64,
    pub seq: i64,
}

impl Cursor {
    pub fn of(row: &ChainedEvent) -> Self {
        Cursor {
            time: row.event.time,
            seq: row.seq,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.time, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (time, seq) = s.split_once('.').ok_or(())?;
        Ok(Cursor {
            time: time.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// One stored row as a [`RowPage`] lends it.
#[derive(Debug, Clone, Copy)]
pub struct ScannedRow<'a> {
    pub seq: i64,
    pub fields: StoredFields<'a>,
    pub hash: &'a [u8],
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends the events not stored before, in order, to the chain.
    async fn append(&self, events: &[Event]) -> Result<Appended>;
    async fn head(&self) -> Result<Anchor>;
    /// Rows with `seq > after`, ascending, at most `limit`.
    async fn rows(&self, after: i64, limit: i64) -> Result<Vec<ChainedEvent>>;
    async fn query(&self, query: &EventQuery) -> Result<Vec<ChainedEvent>>;
    /// Stores a signed checkpoint; with `unless_since`, only if the newest
    /// stored one is older than that (Unix seconds), checked and inserted
    /// under the head row's lock so that of replicas racing in one interval
    /// one stores. Whether it was stored (a checkpoint of the same size
    /// stored before counts as not).
    async fn insert_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        note: &str,
        unless_since: Option<i64>,
    ) -> Result<bool>;
    /// Every checkpoint handed out, as signed notes, oldest first.
    async fn checkpoint_notes(&self) -> Result<Vec<String>>;
    /// The newest checkpoint handed out: its size and signed note.
    async fn latest_checkpoint(&self) -> Result<Option<(i64, String)>>;
    /// Refreshes the planner's statistics, so filtered queries pick the
    /// right index as the log grows (run periodically).
    async fn optimize(&self) -> Result<()>;

    /// Rows with `after < seq <= through`, ascending, at most `limit`, in
    /// one text arena: the verifier's lean read path.
    async fn scan(&self, after: i64, through: i64, limit: i64) -> Result<RowPage>;
    /// The stored hash of row `seq`, if the row exists.
    async fn row_hash(&self, seq: i64) -> Result<Option<Hash>>;

    /// Where the retained chain starts: the seq and hash of the last row
    /// pruned away, `(0, GENESIS)` if nothing was.
    async fn retained_start(&self) -> Result<Anchor>;
    /// Moves the retained start forward (never back).
    async fn set_retained_start(&self, start: &Anchor) -> Result<()>;
    /// The lowest seq above `after` of an event with `time >= time`, if any.
    async fn first_seq_since(&self, time: i64, after: i64) -> Result<Option<i64>>;
    /// Deletes at most `max_rows` of the oldest rows with `seq <= through`,
    /// in one short transaction; returns how many it deleted.
    async fn delete_oldest(&self, through: i64, max_rows: i64) -> Result<u64>;
}

/// PostgreSQL when `url` is a `postgres://` URL (its TLS trusting
/// `roots`), else `audit.db` in `data_dir`.
pub async fn open(
    url: Option<&str>,
    roots: &echo_crypto::TrustedRoots,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn AuditStore>> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
            std::sync::Arc::new(PgAuditStore::connect(url, roots).await?),
        ),
        _ => Ok(std::sync::Arc::new(
            SqliteAuditStore::open(&data_dir.join("audit.db")).await?,
        )),
    }
}
