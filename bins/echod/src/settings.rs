//! Where state lives and the secrets that protect it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_crypto::TrustedRoots;
use echo_crypto::seal::MasterKey;
use echo_identity_store::Store;

pub const MASTER_KEY_VAR: &str = "ECHO_MASTER_KEY";
pub const DATABASE_URL_VAR: &str = "ECHO_DATABASE_URL";
pub const LOG_FILTER_VAR: &str = "ECHO_LOG";
pub const LOG_FORMAT_VAR: &str = "ECHO_LOG_FORMAT";

/// Creates the data directory (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    Ok(())
}

/// A secret kept outside the database: the environment variable `env_var`,
/// else the file `<dir>/<file>`, created (mode 0600) with `generate()` on
/// first run and refused if others can read it.
pub fn secret_text(
    dir: &Path,
    env_var: &str,
    file: &str,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    if let Some(text) = existing_secret_text(dir, env_var, file)? {
        return Ok(text);
    }
    let path = dir.join(file);
    let text = generate();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{text}")?;
    tracing::info!(path = %path.display(), "created secret key file");
    Ok(text)
}

/// The secret of [`secret_text`] if it exists already (never creates it).
pub fn existing_secret_text(
    dir: &Path,
    env_var: &str,
    file: &str,
) -> anyhow::Result<Option<String>> {
    if let Ok(text) = std::env::var(env_var) {
        return Ok(Some(text));
    }
    let path = dir.join(file);
    if !path.exists() {
        return Ok(None);
    }
    let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    fs::read_to_string(&path)
        .map(Some)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The master key that seals signing keys: `ECHO_MASTER_KEY` or `master.key`.
pub fn master_key(dir: &Path) -> anyhow::Result<MasterKey> {
    let text = secret_text(dir, MASTER_KEY_VAR, "master.key", || {
        MasterKey::generate().encode()
    })?;
    MasterKey::parse(&text).with_context(|| format!("{MASTER_KEY_VAR} or master.key is invalid"))
}

/// The configured store: PostgreSQL when `ECHO_DATABASE_URL` is set (its
/// TLS trusting `roots`), else SQLite in the data directory.
pub async fn open_store(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<Arc<dyn Store>> {
    ensure_data_dir(dir)?;
    let url = std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty());
    echo_identity_store::open(url.as_deref(), roots, dir)
        .await
        .with_context(|| match &url {
            Some(_) => format!("cannot open the database named by {DATABASE_URL_VAR}"),
            None => format!("cannot open the database in {}", dir.display()),
        })
}
