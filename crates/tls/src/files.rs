//! A certificate and its key in PEM files, reloaded when the files change.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use echo_core::sync::{lock, read, write};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsError;

/// A certificate chain (`cert`, leaf first) and its private key (`key`),
/// as rustls holds them. Read once at start (a bad file stops the start);
/// afterwards [`reload_if_changed`](Self::reload_if_changed) replaces them
/// when either file changed, and keeps the pair in use when the new one
/// does not load (a half-written file, a key of another certificate), so
/// a bad renewal never takes a listener down. New handshakes see the new
/// pair; open connections keep theirs.
#[derive(Debug)]
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' versions last looked at, loaded or not: a bad
    /// replacement is reported once, not at every check.
    seen: Mutex<[Option<Stamp>; 2]>,
}

/// A version of a file: its modification time, length and inode (a
/// replacement by rename changes the inode even within one mtime tick).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

impl CertFiles {
    /// The pair in `cert` and `key`, which must load.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, TlsError> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let seen = [stamp(&cert_path), stamp(&key_path)];
        let current = read_pair(&cert_path, &key_path)?;
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            current: RwLock::new(current),
            seen: Mutex::new(seen),
        }))
    }

    /// Loads the files again if either changed since the last look:
    /// `Ok(true)` when the new pair is in use, `Ok(false)` when nothing
    /// changed, the error when the new files do not load (the old pair
    /// stays in use).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = [stamp(&self.cert_path), stamp(&self.key_path)];
        {
            let mut seen = lock(&self.seen);
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let pair = read_pair(&self.cert_path, &self.key_path)?;
        *write(&self.current) = pair;
        Ok(true)
    }

    /// The pair in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        read(&self.current).clone()
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The same pair as a caller's client certificate (mutual TLS).
impl ResolvesClientCert for CertFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The chain and key, checked to belong together.
fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(cert)?;
    let bytes = read_file(key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(key, "private key", e))?;
    let pair = CertifiedKey::from_der(chain, key_der, &crate::provider()).map_err(|e| {
        TlsError::Invalid {
            path: key.to_owned(),
            detail: format!("not the key of {}: {e}", cert.display()),
        }
    })?;
    Ok(Arc::new(pair))
}

/// Every certificate in the PEM file at `path` (at least one).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, error: pem::Error) -> TlsError {
    match error {
        pem::Error::NoItemsFound => TlsError::Missing {
            path: path.to_owned(),
            what,
        },
        other => TlsError::Invalid {
            path: path.to_owned(),
            detail: format!("bad PEM {what}: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DevCa;

    #[test]
    fn a_replaced_pair_is_loaded_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::open_or_create(dir.path()).unwrap();
        let first = ca.issue("svc").unwrap();
        let files = CertFiles::load(&first.cert, &first.key).unwrap();
        let original = files.current().cert[0].clone();
        assert!(!files.reload_if_changed().unwrap(), "nothing changed");

        let (cert, key) = ca.generate("svc").unwrap();
        fs::write(&first.cert, cert).unwrap();
        fs::write(&first.key, key).unwrap();
        assert!(files.reload_if_changed().unwrap());
        let renewed = files.current().cert[0].clone();
        assert_ne!(renewed, original);

        fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        assert!(files.reload_if_changed().is_err());
        assert_eq!(files.current().cert[0], renewed, "the old pair stays");
        assert!(!files.reload_if_changed().unwrap(), "reported once");

        let (other_cert, _) = ca.generate("svc").unwrap();
        fs::write(&first.cert, other_cert).unwrap();
        let error = files.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("not the key of"), "{error}");
        assert_eq!(files.current().cert[0], renewed);
    }

    #[test]
    fn missing_and_empty_files_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let error = CertFiles::load(&empty, &empty).unwrap_err().to_string();
        assert!(error.contains("empty.pem: no PEM certificate"), "{error}");
        let error = CertFiles::load(dir.path().join("none.pem"), &empty)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cannot read"), "{error}");
    }
}
