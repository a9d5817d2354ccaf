//! The certificate authorities Echo trusts when it connects out over TLS to
//! PostgreSQL, Redis and NATS: the system's roots and, beside them, the
//! operator's CA file (`ECHO_CA_FILE`, e.g. a private CA's).
//!
//! Each client library takes trust in its own form, and most replace the
//! system's roots with what they are given instead of adding to them. So
//! [`TrustedRoots`] holds the union once and hands it over whole: as PEM
//! (sqlx, redis) or as a rustls client configuration (async-nats).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::{CryptoError, Result};

/// The system's roots plus the operator's CA file, each a certificate
/// rustls accepts as a trust anchor. Clones share the certificates.
#[derive(Clone)]
pub struct TrustedRoots {
    certificates: Arc<[CertificateDer<'static>]>,
    /// How many of `certificates` came from the CA file (they come last).
    from_ca_file: usize,
}

impl std::fmt::Debug for TrustedRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRoots")
            .field("certificates", &self.certificates.len())
            .field("from_ca_file", &self.from_ca_file)
            .finish()
    }
}

impl TrustedRoots {
    /// The system's roots and the certificates of the PEM file `ca_file`.
    /// A system without a root store (a minimal container) contributes
    /// none; a CA file that cannot be read, holds no certificate or holds
    /// one that is no trust anchor is an error naming it.
    pub fn load(ca_file: Option<&Path>) -> Result<Self> {
        let Some(path) = ca_file else {
            return Ok(Self::system());
        };
        let mut certificates = system_roots();
        let theirs = ca_file_certificates(path)?;
        let from_ca_file = theirs.len();
        certificates.extend(theirs);
        Ok(Self {
            certificates: certificates.into(),
            from_ca_file,
        })
    }

    /// These roots and the certificates of the PEM file `ca_file` (`up
    /// --dev-tls` adds its local CA so).
    pub fn and_ca_file(&self, ca_file: &Path) -> Result<Self> {
        let theirs = ca_file_certificates(ca_file)?;
        let from_ca_file = self.from_ca_file + theirs.len();
        let mut certificates = self.certificates.to_vec();
        certificates.extend(theirs);
        Ok(Self {
            certificates: certificates.into(),
            from_ca_file,
        })
    }

    /// The system's roots alone.
    pub fn system() -> Self {
        Self {
            certificates: system_roots().into(),
            from_ca_file: 0,
        }
    }

    /// How many certificates came from the CA file.
    pub fn from_ca_file(&self) -> usize {
        self.from_ca_file
    }

    /// Every certificate as PEM, one after the other.
    pub fn pem(&self) -> Vec<u8> {
        let mut pem = String::new();
        for certificate in self.certificates.iter() {
            let body = base64::engine::general_purpose::STANDARD.encode(certificate);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            // RFC 7468 §2: lines of 64 characters.
            for line in body.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }

    /// The roots as rustls holds them.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(self.certificates.iter().cloned());
        roots
    }

    /// A rustls client configuration (aws-lc-rs, TLS 1.2 and 1.3) that
    /// trusts these roots and presents no client certificate.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let roots = self.root_store();
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

/// The platform's roots (`rustls-native-certs`: the OpenSSL locations,
/// `SSL_CERT_FILE`, `SSL_CERT_DIR`), those rustls cannot use left out.
fn system_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(is_trust_anchor)
        .collect()
}

fn is_trust_anchor(certificate: &CertificateDer<'_>) -> bool {
    RootCertStore::empty().add(certificate.clone()).is_ok()
}

/// The certificates of the PEM file `path`, each checked to be a trust anchor.
fn ca_file_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let refused = |reason: String| CryptoError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refused(format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(refused("no certificate in it".into()));
    }
    if let Some(n) = certificates.iter().position(|c| !is_trust_anchor(c)) {
        return Err(refused(format!("certificate {} is no trust anchor", n + 1)));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_ca_file_joins_the_system_roots_and_survives_the_trip_through_pem() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "ca.pem", &(ca_pem() + &ca_pem()));
        let system = TrustedRoots::load(None).unwrap();
        let roots = TrustedRoots::load(Some(&file)).unwrap();
        assert_eq!(system.from_ca_file(), 0);
        assert_eq!(roots.from_ca_file(), 2);
        assert_eq!(roots.certificates.len(), system.certificates.len() + 2);
        let parsed = CertificateDer::pem_slice_iter(&roots.pem())
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(parsed, roots.certificates.to_vec());
    }

    #[test]
    fn a_ca_file_that_is_missing_empty_or_broken_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = write(&dir, "empty.pem", "no certificate here\n");
        let broken = write(
            &dir,
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, reason) in [
            (&missing, "No such file"),
            (&empty, "no certificate in it"),
            (&broken, "certificate 1 is no trust anchor"),
        ] {
            let error = TrustedRoots::load(Some(path)).unwrap_err().to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains(reason), "{error}");
        }
    }
}
