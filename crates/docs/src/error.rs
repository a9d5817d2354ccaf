//! The docs service's one error enum. `http.rs` maps it to HTTP, in one
//! place: the caller's mistakes become 4xx with their message, everything
//! else an opaque 500 whose cause is logged.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("search index error: {0}")]
    Index(String),
    #[error("the language model failed: {0}")]
    Llm(String),

    // The caller's mistakes (4xx).
    /// Refused at the edge (401, 403, or 503 without keys), already
    /// audited.
    #[error("{0}")]
    Refused(#[from] echo_edge::Refusal),
    /// Unknown, or someone else's: the same answer either way, so ids of
    /// other users' documents cannot be probed.
    #[error("document not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("the document is larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("at most {max} files may be uploaded in one request")]
    TooManyFiles { max: usize },
    #[error("{name}: not a supported type (expected pdf, docx, html, md, txt, csv or json)")]
    Unsupported { name: String },
    /// The upload would take the caller past one of their quotas (413).
    #[error("this upload would exceed your quota of {max} {} ({}); you store {used}", .quota.unit(), .quota.setting())]
    QuotaExceeded { quota: Quota, max: u64, used: u64 },
    /// The caller uploads faster than their rate (429).
    #[error("too many uploads; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },

    // Ours (500, logged).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document data is corrupt: {0}")]
    Corrupt(String),
    #[error("blob store error: {0}")]
    Blob(#[from] io::Error),
    #[error("job queue error: {0}")]
    Queue(#[from] echo_queue::QueueError),
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DocsError {
    /// Whether an engine docs keeps its state in does not answer now (its
    /// database, see [`echo_sql::is_unavailable`], or the job queue's):
    /// `503`, worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DocsError::Database(e) => echo_sql::is_unavailable(e),
            DocsError::Queue(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// A per-user limit on what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Bytes,
    Files,
}

impl Quota {
    /// The setting that raises it, which the refusal names.
    pub fn setting(self) -> &'static str {
        match self {
            Quota::Bytes => "ECHO_DOCS_QUOTA_BYTES",
            Quota::Files => "ECHO_DOCS_QUOTA_FILES",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Quota::Bytes => "bytes",
            Quota::Files => "documents",
        }
    }
}

impl From<echo_sql::OpenError> for DocsError {
    fn from(e: echo_sql::OpenError) -> Self {
        match e {
            echo_sql::OpenError::Database(e) => DocsError::Database(e),
            echo_sql::OpenError::Migrate(e) => DocsError::Migrate(e),
        }
    }
}
