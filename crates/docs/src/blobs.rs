//! Document bytes, stored content-addressed on disk.
//!
//! A blob lives at `<dir>/<first 2 hex digits>/<SHA-256 in hex>`: the path
//! is made of the digest alone, so nothing a user chose (a file name) ever
//! becomes part of a path, and two uploads of the same bytes share one file.
//! A blob is written to a temporary file in its final directory, flushed to
//! disk and renamed into place, so a reader never sees half a blob and a
//! crash leaves at most a stray temporary file.
//!
//! The methods block (file I/O); the service calls them in
//! `spawn_blocking`. Whether a blob is still referenced is the service's
//! business (see `service.rs`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Prefix of temporary files; never a valid digest, so never read as a blob.
const TEMP_PREFIX: &str = ".tmp-";

/// A directory of content-addressed blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// The store under `dir`, created if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Stores `blob` under its digest (a no-op when that blob exists).
    pub fn put(&self, blob: &Blob) -> io::Result<()> {
        let path = self.path(&blob.digest)?;
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

    /// The bytes of blob `digest`.
    pub fn read(&self, digest: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(digest)?)
    }

    /// Deletes blob `digest`; a blob already gone is not an error.
    pub fn remove(&self, digest: &str) -> io::Result<()> {
        match fs::remove_file(self.path(digest)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Where blob `digest` lives. Only a 64-digit lowercase hex digest makes
    /// a path: a corrupt stored value cannot point anywhere else.
    fn path(&self, digest: &str) -> io::Result<PathBuf> {
        let valid = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a blob digest: {digest:?}"),
            ));
        }
        Ok(self.dir.join(&digest[..2]).join(digest))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_under_their_digest_once() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let blob = Blob::new(b"hello".to_vec());
        let digest = blob.digest().to_owned();
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        blobs.put(&blob).unwrap();
        blobs.put(&Blob::new(b"hello".to_vec())).unwrap();
        let path = dir.path().join("2c").join(&digest);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("2c")).unwrap().count(), 1);
        assert_eq!(blobs.read(&digest).unwrap(), b"hello");
        blobs.remove(&digest).unwrap();
        assert!(!path.exists());
        blobs.remove(&digest).unwrap();
    }

    #[test]
    fn only_digests_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "", &"A".repeat(64), &"a/".repeat(32)] {
            assert_eq!(
                blobs.read(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }
}
