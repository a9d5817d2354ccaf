//! Blobs in a local directory: `<dir>/<first 2 hex digits>/<SHA-256 in hex>`.
//! A blob is written to a temporary file in its final directory, flushed to
//! disk and renamed into place, so a reader never sees half a blob and a
//! crash leaves at most a stray temporary file. File I/O blocks: each call
//! runs in `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Blob, BlobStore, checked, hex};
use crate::{Result, blocking};

/// Prefix of temporary files; never a valid digest, so never read as a blob.
const TEMP_PREFIX: &str = ".tmp-";

/// A directory of content-addressed blobs, written by one process only.
#[derive(Debug, Clone)]
pub struct DirBlobStore {
    dir: PathBuf,
}

impl DirBlobStore {
    /// The store under `dir`, created if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn put_blocking(&self, blob: &Blob) -> io::Result<()> {
        let path = self.path(&blob.digest);
        if path.exists() {
            return Ok(());
        }
        let parent = path
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(parent)?;
        let temp = parent.join(format!(
            "{TEMP_PREFIX}{}",
            hex(&echo_crypto::secret::random_bytes::<8>())
        ));
        let written = (|| {
            let mut file = File::create_new(&temp)?;
            file.write_all(&blob.bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            // The rename is durable only once the directory entry is.
            File::open(parent)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Where blob `digest` (already [`checked`]) lives.
    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(digest)
    }
}

#[async_trait]
impl BlobStore for DirBlobStore {
    async fn put(&self, blob: Blob) -> Result<()> {
        checked(&blob.digest)?;
        let store = self.clone();
        blocking(move || Ok(store.put_blocking(&blob)?)).await
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(checked(digest)?);
        blocking(move || Ok(fs::read(path)?)).await
    }

    async fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(checked(digest)?);
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => Ok(other?),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_files_named_by_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobStore::open(dir.path()).unwrap();
        let blob = Blob::new(b"hello".to_vec());
        let digest = blob.digest().to_owned();
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        blobs.put(blob).await.unwrap();
        blobs.put(Blob::new(b"hello".to_vec())).await.unwrap();
        let path = dir.path().join("2c").join(&digest);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("2c")).unwrap().count(), 1);
        blobs.remove(&digest).await.unwrap();
        assert!(!path.exists());
    }
}
