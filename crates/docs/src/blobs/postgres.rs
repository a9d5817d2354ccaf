//! Blobs in PostgreSQL: the table `docs_blobs` (the docs schema's, see
//! `migrations/postgres/`), one row per blob, its bytes a `bytea` (uploads
//! are capped at `ECHO_DOCS_MAX_UPLOAD_BYTES`, 25 MB by default, well within
//! what a row holds).

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use sqlx::{PgPool, Postgres};

use super::{Blob, BlobStore, checked};
use crate::{DocsError, Result};

/// Connections of the blob store: uploads and downloads of large rows, a
/// few at a time.
const MAX_CONNECTIONS: u32 = 4;

/// A PostgreSQL table of content-addressed blobs.
#[derive(Debug)]
pub struct PgBlobStore {
    pool: PgPool,
}

impl PgBlobStore {
    /// Connects to `url`, over TLS as its `sslmode` says, trusting `roots`,
    /// and brings the docs schema up to date.
    pub async fn connect(url: &str, roots: &TrustedRoots) -> Result<Self> {
        let pools: echo_sql::Pools<Postgres> = echo_sql::postgres::open_pools(
            url,
            roots,
            MAX_CONNECTIONS,
            &sqlx::migrate!("./migrations/postgres"),
        )
        .await?;
        Ok(Self { pool: pools.write })
    }
}

#[async_trait]
impl BlobStore for PgBlobStore {
    async fn put(&self, blob: Blob) -> Result<()> {
        let digest = checked(&blob.digest)?;
        sqlx::query(
            "INSERT INTO docs_blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(digest)
        .bind(&blob.bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let digest = checked(digest)?;
        sqlx::query_scalar("SELECT bytes FROM docs_blobs WHERE sha256 = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                DocsError::Blob(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no blob {digest}"),
                ))
            })
    }

    async fn remove(&self, digest: &str) -> Result<()> {
        let digest = checked(digest)?;
        sqlx::query("DELETE FROM docs_blobs WHERE sha256 = $1")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
