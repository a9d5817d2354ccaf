//! Document bytes, stored content-addressed: a blob is named by the
//! SHA-256 of its bytes (lowercase hex), so nothing a user chose (a file
//! name) ever names one, and two uploads of the same bytes share one blob.
//!
//! One trait, [`BlobStore`], with one implementation per place:
//! - [`DirBlobStore`]: a local directory (the default, `<data>/docs/blobs`),
//!   reachable by one docs process only;
//! - [`NatsBlobStore`]: JetStream's object store, bucket [`NATS_BUCKET`]
//!   (`ECHO_DOCS_BLOB_URL=nats://…`);
//! - [`PgBlobStore`]: a table of blobs in a PostgreSQL database
//!   (`ECHO_DOCS_BLOB_URL=postgres://…`).
//!
//! The last two are shared by every docs replica. Whether a blob is still
//! referenced is the service's business (see `service.rs`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use echo_crypto::TrustedRoots;

use crate::{DocsError, Result};

mod dir;
mod nats;
mod postgres;

pub use dir::DirBlobStore;
pub use nats::NatsBlobStore;
pub use postgres::PgBlobStore;

/// The JetStream object store bucket of `nats://` blob URLs.
pub const NATS_BUCKET: &str = "ECHO_DOCS";

/// Where blobs are kept. Every method refuses a name that is not a digest
/// ([`DocsError::Blob`] of kind `InvalidInput`): a corrupt stored value
/// cannot name anything else.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `blob` under its digest (a no-op when that blob exists).
    /// Once it returns, every reader of the store sees the whole blob.
    async fn put(&self, blob: Blob) -> Result<()>;

    /// The bytes of blob `digest`.
    async fn read(&self, digest: &str) -> Result<Vec<u8>>;

    /// Deletes blob `digest`; a blob already gone is not an error.
    async fn remove(&self, digest: &str) -> Result<()>;
}

/// The store `url` names: JetStream's object store for `nats://` or
/// `tls://`, a PostgreSQL table for `postgres://` (TLS trusting `roots`),
/// else the directory `dir`.
pub async fn open_blobs(
    url: Option<&str>,
    roots: &TrustedRoots,
    dir: &Path,
) -> Result<Arc<dyn BlobStore>> {
    Ok(match url {
        None => Arc::new(DirBlobStore::open(dir)?),
        Some(url) if url.starts_with("nats://") || url.starts_with("tls://") => {
            Arc::new(NatsBlobStore::connect(url, roots, NATS_BUCKET).await?)
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Arc::new(PgBlobStore::connect(url, roots).await?)
        }
        Some(_) => {
            return Err(DocsError::Config(
                "ECHO_DOCS_BLOB_URL: expected nats://, tls:// or postgres://".to_owned(),
            ));
        }
    })
}

/// `digest` if it is one (64 lowercase hex digits), else why not.
fn checked(digest: &str) -> Result<&str> {
    let valid = digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(DocsError::Blob(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a blob digest: {digest:?}"),
        )));
    }
    Ok(digest)
}

/// Bytes with their SHA-256 (lowercase hex), computed once: the digest a
/// blob is stored under always matches its bytes.
#[derive(Debug)]
pub struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            digest: hex(&echo_crypto::secret::sha256(&bytes)),
            bytes,
        }
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
