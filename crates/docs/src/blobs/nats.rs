//! Blobs in JetStream's object store: one object per blob, named by its
//! digest, in one bucket every docs replica opens (created by the first).

use std::io;

use async_nats::jetstream::{self, object_store};
use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use tokio::io::AsyncReadExt as _;

use super::{Blob, BlobStore, checked};
use crate::{DocsError, Result};

/// A JetStream object store bucket of content-addressed blobs.
pub struct NatsBlobStore {
    bucket: object_store::ObjectStore,
    name: String,
}

impl std::fmt::Debug for NatsBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBlobStore")
            .field("bucket", &self.name)
            .finish_non_exhaustive()
    }
}

fn nats(context: &str, error: impl std::fmt::Display) -> DocsError {
    DocsError::Blob(io::Error::other(format!(
        "NATS object store: {context}: {error}"
    )))
}

impl NatsBlobStore {
    /// Connects to `url` (`nats://` or `tls://`, TLS trusting `roots`) and
    /// opens the bucket `bucket`, creating it when missing.
    pub async fn connect(url: &str, roots: &TrustedRoots, bucket: &str) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .tls_client_config(roots.client_config())
            .connect(url)
            .await
            .map_err(|e| nats("cannot connect", e))?;
        let jetstream = jetstream::new(client);
        let store = match jetstream.get_object_store(bucket).await {
            Ok(store) => store,
            // Missing, or another replica creating it at this moment:
            // creating the same bucket again is not an error.
            Err(_) => jetstream
                .create_object_store(object_store::Config {
                    bucket: bucket.to_owned(),
                    description: Some("Echo's document blobs, named by SHA-256".to_owned()),
                    ..Default::default()
                })
                .await
                .map_err(|e| nats(&format!("bucket {bucket}"), e))?,
        };
        Ok(Self {
            bucket: store,
            name: bucket.to_owned(),
        })
    }
}

#[async_trait]
impl BlobStore for NatsBlobStore {
    async fn put(&self, blob: Blob) -> Result<()> {
        let digest = checked(&blob.digest)?;
        match self.bucket.info(digest).await {
            Ok(info) if !info.deleted => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => {}
            Err(e) => return Err(nats(&format!("info {digest}"), e)),
        }
        self.bucket
            .put(digest, &mut blob.bytes.as_slice())
            .await
            .map_err(|e| nats(&format!("put {digest}"), e))?;
        Ok(())
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let digest = checked(digest)?;
        let mut object = match self.bucket.get(digest).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Err(DocsError::Blob(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no blob {digest}"),
                )));
            }
            Err(e) => return Err(nats(&format!("get {digest}"), e)),
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| nats(&format!("read {digest}"), e))?;
        Ok(bytes)
    }

    async fn remove(&self, digest: &str) -> Result<()> {
        let digest = checked(digest)?;
        match self.bucket.delete(digest).await {
            Err(e) if e.kind() != object_store::DeleteErrorKind::NotFound => {
                Err(nats(&format!("delete {digest}"), e))
            }
            _ => Ok(()),
        }
    }
}
