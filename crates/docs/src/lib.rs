//! The docs service: a user's documents, stored content-addressed, indexed
//! for full-text search by the worker, and questions answered from the
//! caller's own documents only.
//!
//! The data flow of a document:
//!
//! 1. [`http`]: a user uploads (`POST /v1/documents`, multipart or raw); the
//!    token's `sub` is the owner.
//! 2. [`service`]: the type is sniffed from the content
//!    ([`echo_text::sniff`]); the bytes go to the [`BlobStore`] (a
//!    directory, JetStream's object store or PostgreSQL) under their
//!    SHA-256, the record to the [`store`], and a job `index_document`
//!    `{"document_id"}` to the [`echo_queue`] queue.
//! 3. The worker (another service) fetches the content, has the parser
//!    extract the text, cuts it with [`echo_text::chunk_text`] and `PUT`s the chunks
//!    back; [`Docs::index_document`] writes them to the [`SearchIndex`]
//!    (tantivy, or PostgreSQL full-text search) with the record's owner on
//!    every chunk.
//! 4. A document's status is its job's, read from the queue.
//! 5. `POST /v1/query`: [`SearchIndex::search`] over the caller's own chunks
//!    (the backend's ranking), then [`answer`]: an [`LlmClient`] writes the answer from those
//!    passages only, or [`extractive`] picks the best sentences.
//!
//! Errors are one enum, [`DocsError`], mapped to HTTP in one place
//! ([`http`]). `docs/docs.md` describes the API.

pub mod answer;
pub mod blobs;
pub mod error;
pub mod http;
pub mod index;
pub mod service;
pub mod store;

pub use answer::{Answer, Citation, LlmClient, extractive};
pub use blobs::{
    Blob, BlobStore, DirBlobStore, NATS_BUCKET, NatsBlobStore, PgBlobStore, open_blobs,
};
pub use error::{DocsError, Quota};
pub use http::{DocsApp, DocsConfig, INDEX_SCOPE, build, router, serve};
pub use index::{Passage, PgSearchIndex, SearchBackend, SearchIndex, TantivyIndex, open_index};
pub use service::{Caller, Docs, DocumentView, INDEX_JOB, Limits, UsageView, Worker};
pub use store::{
    Document, DocumentStore, PgDocumentStore, SqlDocumentStore, SqliteDocumentStore, Usage,
    open_store,
};

pub type Result<T, E = DocsError> = std::result::Result<T, E>;

/// Runs blocking work (file I/O, tantivy) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DocsError::Internal(format!("blocking task failed: {e}")))?
}
