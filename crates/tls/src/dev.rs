//! A local certificate authority for development and tests: `ca.pem` and
//! `ca.key` (0600) in a directory, made on first use and reused after, and
//! certificates it issues for 127.0.0.1, ::1 and localhost.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::TlsError;

/// The names every development certificate is valid for.
pub const DEV_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];
/// The name of `echod up --dev-tls`'s CA.
const DEV_CA_NAME: &str = "Echo development CA";
/// How long an issued certificate is valid: browsers refuse longer ones.
const LEAF_DAYS: i64 = 397;
/// An issued certificate older than this is issued anew when asked for.
const LEAF_RENEW_AFTER: Duration = Duration::from_secs(300 * 24 * 3600);
const CA_DAYS: i64 = 3650;

/// A local certificate authority.
pub struct DevCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevCa {
    /// The CA in `dir` (created 0700 if needed): `ca.pem` and `ca.key`,
    /// made now if either is missing.
    pub fn open_or_create(dir: &Path) -> Result<Self, TlsError> {
        Self::open_or_create_named(dir, DEV_CA_NAME)
    }

    /// [`DevCa::open_or_create`] for a CA named `common_name`, which must
    /// be the same on every open (the key alone rebuilds the issuer). Tests
    /// give each CA a name of its own: a certificate from another CA is
    /// then of an unknown issuer, not a namesake's whose signature fails.
    pub fn open_or_create_named(dir: &Path, common_name: &str) -> Result<Self, TlsError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Write {
                path: dir.to_owned(),
                source,
            })?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let key = if cert_path.exists() && key_path.exists() {
            let text = fs::read_to_string(&key_path).map_err(|source| TlsError::Read {
                path: key_path.clone(),
                source,
            })?;
            KeyPair::from_pem(&text).map_err(|e| TlsError::Invalid {
                path: key_path.clone(),
                detail: e.to_string(),
            })?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params(common_name)?.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            write_public(&cert_path, &cert.pem())?;
            tracing::info!(ca = %cert_path.display(), "created a development certificate authority");
            key
        };
        // The issuer is the CA's name and key; its certificate is not needed
        // to sign.
        Ok(Self {
            dir: dir.to_owned(),
            issuer: Issuer::new(ca_params(common_name)?, key),
        })
    }

    /// The CA's certificate: what callers trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `<dir>/<name>.pem` and `<name>.key` (0600), issued now unless a
    /// pair younger than 300 days is there.
    pub fn issue(&self, name: &str) -> Result<Issued, TlsError> {
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let fresh = |path: &Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < LEAF_RENEW_AFTER)
        };
        if !(fresh(&issued.cert) && issued.key.exists()) {
            let (cert, key) = self.generate(name)?;
            write_private(&issued.key, &key)?;
            write_public(&issued.cert, &cert)?;
        }
        Ok(issued)
    }

    /// A new certificate (PEM) for [`DEV_NAMES`], named `name`, for servers
    /// and clients alike, and its key (PEM).
    pub fn generate(&self, name: &str) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(DEV_NAMES.map(str::to_owned).to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Echo development: {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(LEAF_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CA's parameters: the same on every run for one name, so the key
/// alone rebuilds the issuer.
fn ca_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(CA_DAYS);
    Ok(params)
}

/// From an hour ago (clock skew) to `days` from now.
fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

/// Writes `text` to `path` with mode 0600, replacing it whole (written
/// beside, then renamed), so no reader sees half a file.
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    write_atomically(path, text, 0o600)
}

fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    write_atomically(path, text, 0o644)
}

fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let partial = path.with_extension("partial");
    let _ = fs::remove_file(&partial);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&partial, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_made_once_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::open_or_create(&dir.path().join("tls")).unwrap();
        let pem = fs::read_to_string(ca.ca_path()).unwrap();
        let mode = fs::metadata(dir.path().join("tls/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let issued = ca.issue("gateway").unwrap();
        let first = fs::read_to_string(&issued.cert).unwrap();

        let again = DevCa::open_or_create(&dir.path().join("tls")).unwrap();
        assert_eq!(fs::read_to_string(again.ca_path()).unwrap(), pem);
        let reissued = again.issue("gateway").unwrap();
        assert_eq!(fs::read_to_string(&reissued.cert).unwrap(), first);
    }
}
