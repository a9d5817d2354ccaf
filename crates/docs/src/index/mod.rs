//! The search index over every document's chunks: one trait,
//! [`SearchIndex`], with one implementation per backend, chosen by
//! [`SearchBackend`]:
//! - [`TantivyIndex`] (the default): a tantivy index in `<data>/docs/index`,
//!   BM25, owned by one docs process;
//! - [`PgSearchIndex`] (`ECHO_DOCS_SEARCH=postgres`): PostgreSQL full-text
//!   search in the docs database, shared by every docs replica.
//!
//! One document = many index entries (one per [`Chunk`]), each carrying the
//! document's id (to replace or remove them all at once), its owner (the
//! filter of every search, inside the search itself, so another user's
//! chunks can never come back) and its name (for citations).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use echo_text::Chunk;
use serde::{Deserialize, Serialize};

use crate::{DocsError, Result, blocking};

mod postgres;
mod tantivy;

pub use postgres::PgSearchIndex;
pub(crate) use tantivy::analyzed_terms;
pub use tantivy::{COMMIT_WINDOW, TantivyIndex};

/// One chunk found by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub document_id: String,
    /// The document's name (its upload file name).
    pub name: String,
    /// The chunk's 0-based index in its document.
    pub position: u32,
    /// Char offset of the chunk in the document's text.
    pub start: usize,
    pub text: String,
    /// The backend's relevance score: higher is better; only comparable
    /// within one search.
    pub score: f32,
}

/// Where chunks are indexed and searched.
#[async_trait]
pub trait SearchIndex: Send + Sync + std::fmt::Debug {
    /// Replaces the document's chunks: deletes every chunk indexed for
    /// `document_id`, then adds `chunks` with the given owner and name.
    /// Searchable on return; running it twice indexes once. PostgreSQL
    /// refuses the chunks of a document without a record
    /// ([`DocsError::NotFound`]).
    async fn replace(
        &self,
        document_id: &str,
        owner: &str,
        name: &str,
        chunks: Vec<Chunk>,
    ) -> Result<()>;

    /// Removes every chunk of the document; removing an unknown document
    /// is not an error.
    async fn remove(&self, document_id: &str) -> Result<()>;

    /// The `limit` best passages of `owner`'s documents for `question`,
    /// best first. The question is user text: any syntax in it is taken
    /// as words, never an error; a question without a searchable word
    /// (empty, punctuation, stop words only) finds nothing.
    async fn search(&self, owner: &str, question: &str, limit: usize) -> Result<Vec<Passage>>;

    /// How many chunks are indexed for the document.
    async fn chunk_count(&self, document_id: &str) -> Result<u64>;
}

/// Which [`SearchIndex`] a docs service uses (`ECHO_DOCS_SEARCH`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchBackend {
    #[default]
    Tantivy,
    Postgres,
}

impl FromStr for SearchBackend {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "tantivy" => Ok(Self::Tantivy),
            "postgres" => Ok(Self::Postgres),
            other => Err(format!(
                "unknown search backend {other:?}: expected tantivy or postgres"
            )),
        }
    }
}

/// The index `backend` names: tantivy in `dir`, or PostgreSQL in the docs
/// database `database_url` (TLS trusting `roots`), which it requires.
pub async fn open_index(
    backend: SearchBackend,
    dir: &Path,
    database_url: Option<&str>,
    roots: &TrustedRoots,
) -> Result<Arc<dyn SearchIndex>> {
    Ok(match backend {
        SearchBackend::Tantivy => {
            let dir = dir.to_owned();
            Arc::new(blocking(move || TantivyIndex::open(&dir)).await?)
        }
        SearchBackend::Postgres => match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Arc::new(PgSearchIndex::connect(url, roots).await?)
            }
            _ => {
                return Err(DocsError::Config(
                    "ECHO_DOCS_SEARCH=postgres indexes in the docs database: set \
                     ECHO_DOCS_DATABASE_URL to a postgres:// URL (or search with tantivy)"
                        .to_owned(),
                ));
            }
        },
    })
}
