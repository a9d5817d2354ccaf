//! The SQL plumbing Echo's stores share: opening their databases, and what
//! their SQL, written once for SQLite and PostgreSQL, needs to know of the
//! backend it runs on.
//!
//! Each store (identity's, the audit log's, the job queue's, the docs
//! service's, the gateway's sessions) keeps its data in a database of its
//! own: a SQLite file in the data directory by default, or PostgreSQL.
//!
//! - [`Pools`] are what a store runs its SQL through: `read` for queries
//!   that may miss a write committed meanwhile, `write` for everything else.
//!   [`sqlite::open_pools`] opens a file in WAL mode with one writer
//!   connection (SQLite has one writer at a time, and concurrent deferred
//!   transactions fail with "database is locked" under load instead of
//!   queueing) and a pool of read-only connections, after bringing the
//!   schema up to date. [`sqlite::open_pools_with_wal_checkpointer`] also
//!   takes the copying of the WAL into the database off the writer: a
//!   background task that the pools own does it. [`postgres::open_pools`]
//!   opens one pool that serves both, over TLS as the URL's `sslmode`
//!   says, trusting the roots it is given ([`echo_crypto::TrustedRoots`])
//!   and the URL's `sslrootcert` ([`postgres::connect_options`]).
//! - [`Backend`] is a database the SQL runs on: sqlx's `Sqlite` or
//!   `Postgres`. A store's SQL is a type generic over `DB: Backend` (e.g.
//!   the docs service's `SqlDocumentStore<DB>`), so each statement is
//!   written once and go-to-definition lands on it. Where a store's two
//!   backends differ, a trait of the store's own over [`Backend`] says how
//!   (the audit log's full-text search, the queue's row locking), and each
//!   backend's module implements it.
//! - [`placeholders`] numbers the parameters of a statement built at run
//!   time (a batch of rows, an `IN` list) the way [`Backend::parameter`]
//!   says, since sqlx's `QueryBuilder` cannot serve generic code.
//! - Rust hands a trait's supertraits on to generic code, but not its other
//!   bounds (rust-lang/rust#20671). So what sqlx needs besides [`Backend`]
//!   (that a connection executes statements, that a Rust type binds to and
//!   reads from a column: [`Column`]) each generic impl states in its
//!   `where` clause, listing what its statements use.
//! - [`OpenError`] is what opening fails with; each store maps it into its
//!   own error.
//! - [`is_unavailable`] tells a database that does not answer (down,
//!   restarting, unreachable: no connection within
//!   [`postgres::ACQUIRE_TIMEOUT`]) from a statement that failed, so each
//!   store's error mapping answers the first with `503` and a retry hint:
//!   the pools reconnect by themselves once the server is back.

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::database::HasStatementCache;
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgQueryResult;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Postgres, Sqlite, Type};

pub mod postgres;
pub mod sqlite;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
}

/// Whether `error` says the database does not answer now (rather than that
/// a statement failed): no connection within the pool's acquire timeout,
/// a connection lost or refused, or the server shutting down or starting
/// (SQLSTATE class 08, and 57P01–57P03).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// The pools a store runs its SQL through (see the crate docs). Clones
/// share the connections.
#[derive(Debug)]
pub struct Pools<DB: Database> {
    /// Reads that may miss a write committed while they run.
    pub read: Pool<DB>,
    /// Writes, and the reads that must see every write before them.
    pub write: Pool<DB>,
    /// A SQLite file's WAL checkpointer, when the opener started one; it
    /// stops when the last clone of these pools is dropped.
    wal_checkpointer: Option<Arc<sqlite::WalCheckpointer>>,
}

impl<DB: Database> Clone for Pools<DB> {
    fn clone(&self) -> Self {
        Self {
            read: self.read.clone(),
            write: self.write.clone(),
            wal_checkpointer: self.wal_checkpointer.clone(),
        }
    }
}

impl<DB: Backend> Pools<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Whether the database answers: one trivial query (a readiness
    /// check).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.read).await.map(drop)
    }
}

/// A database Echo's SQL runs on: [`Sqlite`] or [`Postgres`]. The
/// supertraits let generic code run a query (prepared and cached, or not)
/// and count the rows it changed.
pub trait Backend:
    Database<QueryResult: RowsAffected> + Database<Arguments: IntoArguments<Self>> + HasStatementCache
{
    /// Parameter `n` (from 1) of a statement built at run time, its
    /// parameters bound in the order they appear: `$n`, or plain `?` on
    /// SQLite, which looks a numbered parameter's name up in a linear list on
    /// every bind, so that binding hundreds of them takes quadratic time.
    fn parameter(n: usize) -> Cow<'static, str>;
}

impl Backend for Sqlite {
    fn parameter(_: usize) -> Cow<'static, str> {
        Cow::Borrowed("?")
    }
}

impl Backend for Postgres {
    fn parameter(n: usize) -> Cow<'static, str> {
        Cow::Owned(format!("${n}"))
    }
}

/// `rows` parenthesised groups of `columns` parameters for a statement
/// built at run time, numbered in the order they are bound, after the
/// statement's first `after` parameters: `($2, $3), ($4, $5)` for 2 × 2
/// after 1 on PostgreSQL, `(?, ?), (?, ?)` on SQLite.
///
/// sqlx's `QueryBuilder` does this too, but generic code cannot run what it
/// builds: the query borrows the builder for as long as the bound values
/// live, which a builder cannot outlive.
pub fn placeholders<DB: Backend>(after: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let first = after + row * columns;
            let row: Vec<_> = (first + 1..=first + columns).map(DB::parameter).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many rows a statement changed: sqlx tells each backend's result,
/// but has no trait for it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

/// A Rust type that sqlx binds to, and reads from, a column of `DB`: one
/// bound instead of three in a generic impl's `where` clause.
pub trait Column<DB: Database>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> {}

impl<DB: Database, T> Column<DB> for T where
    T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_its_parameters_and_sqlite_leaves_them_plain() {
        assert_eq!(placeholders::<Postgres>(0, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders::<Postgres>(1, 1, 3), "($2, $3, $4)");
        assert_eq!(placeholders::<Sqlite>(1, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn a_database_that_does_not_answer_is_unavailable_and_a_failed_statement_is_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(refused)));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::PoolClosed));
    }
}
