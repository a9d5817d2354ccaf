//! Where document records live: one small trait, [`DocumentStore`], and
//! one implementation, [`SqlDocumentStore`], whose SQL both backends run:
//! [`SqliteDocumentStore`] (the default, `<data>/docs.db`) and
//! [`PgDocumentStore`] (a `postgres://` URL), each with its own migrations
//! under `migrations/<backend>/`.
//!
//! A record is plain data: who owns the document, what it is called and
//! which blob holds its bytes. Who may see it is the service's business.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use echo_text::Kind;
use serde::Serialize;

use crate::{DocsError, Result};

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgDocumentStore;
pub use sql::SqlDocumentStore;
pub(crate) use sql::kind_name;
pub use sqlite::SqliteDocumentStore;

/// One uploaded document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// 32 random hex digits.
    pub id: String,
    /// The `sub` of the user who uploaded it.
    pub owner: String,
    /// The name the user gave it, for display only (never a path).
    pub name: String,
    /// What sniffing the content found.
    pub kind: Kind,
    pub size: u64,
    /// The blob holding the bytes (SHA-256, hex).
    pub sha256: String,
    /// The indexing job; `None` only between the insert and the enqueue.
    pub job_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What one owner stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The sum of their documents' sizes.
    pub bytes: u64,
    /// How many documents they have.
    pub files: u64,
}

/// A blob store operation run inside a store's critical section.
pub type BlobOp<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

#[async_trait]
pub trait DocumentStore: Send + Sync {
    async fn insert(&self, document: &Document) -> Result<()>;

    /// Runs `put` (storing the document's blob), then inserts the record,
    /// holding the blob against [`remove_unreferenced_blob`] of the same
    /// blob through any replica sharing the store: a delete of one record
    /// cannot remove the blob between the put and another's insert.
    ///
    /// [`remove_unreferenced_blob`]: Self::remove_unreferenced_blob
    async fn insert_with_blob(&self, document: &Document, put: BlobOp<'_>) -> Result<()>;

    /// Runs `remove` (removing the blob `sha256`) unless a record still
    /// references it, held as [`insert_with_blob`](Self::insert_with_blob)
    /// says; whether it ran.
    async fn remove_unreferenced_blob(&self, sha256: &str, remove: BlobOp<'_>) -> Result<bool>;

    /// Records the document's indexing job.
    async fn set_job(&self, id: &str, job_id: &str) -> Result<()>;

    async fn get(&self, id: &str) -> Result<Option<Document>>;

    /// Newest first: `owner`'s documents, or everyone's for `None`.
    async fn list(&self, owner: Option<&str>) -> Result<Vec<Document>>;

    /// Deletes the record; whether there was one.
    async fn delete(&self, id: &str) -> Result<bool>;

    /// Whether any record's bytes are the blob `sha256`.
    async fn references(&self, sha256: &str) -> Result<bool>;

    /// What `owner` stores.
    async fn usage(&self, owner: &str) -> Result<Usage>;

    /// Whether the database answers (docs' readiness).
    async fn ping(&self) -> Result<()>;
}

/// The store `url` names: PostgreSQL for `postgres://` (or
/// `postgresql://`; its TLS trusting `roots`), else SQLite at `sqlite_path`.
pub async fn open_store(
    url: Option<&str>,
    roots: &TrustedRoots,
    sqlite_path: &Path,
) -> Result<Arc<dyn DocumentStore>> {
    Ok(match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Arc::new(PgDocumentStore::connect(url, roots).await?)
        }
        Some(other) => {
            return Err(DocsError::Config(format!(
                "docs database URL {other:?}: expected postgres://"
            )));
        }
        None => Arc::new(SqliteDocumentStore::open(sqlite_path).await?),
    })
}
