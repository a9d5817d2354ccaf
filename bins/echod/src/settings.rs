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
/// The Redis replicas count their rate limits in (identity, the gateway).
pub const RATE_LIMIT_URL_VAR: &str = "ECHO_RATE_LIMIT_URL";
/// The initial access token of identity's dynamic client registration.
pub const CLIENT_REGISTRATION_TOKEN_VAR: &str = "ECHO_CLIENT_REGISTRATION_TOKEN";
pub const LOG_FILTER_VAR: &str = "ECHO_LOG";
pub const LOG_FORMAT_VAR: &str = "ECHO_LOG_FORMAT";

/// Every secret's variable `X`; each can instead name a file holding it,
/// by `X_FILE` ([`secret_var`]). Database, queue and Redis URLs are here
/// since they may carry a password.
pub const SECRET_VARS: [&str; 17] = [
    MASTER_KEY_VAR,
    "ECHO_AUDIT_SIGNING_KEY",
    "ECHO_GATEWAY_CLIENT_SECRET",
    "ECHO_DOCS_CLIENT_SECRET",
    "ECHO_PARSER_CLIENT_SECRET",
    "ECHO_WORKER_CLIENT_SECRET",
    "ECHO_LLM_API_KEY",
    DATABASE_URL_VAR,
    "ECHO_AUDIT_DATABASE_URL",
    "ECHO_DOCS_DATABASE_URL",
    "ECHO_DOCS_BLOB_URL",
    "ECHO_QUEUE_URL",
    "ECHO_NATS_URL",
    "ECHO_REDIS_URL",
    RATE_LIMIT_URL_VAR,
    "ECHO_SMTP_PASSWORD",
    CLIENT_REGISTRATION_TOKEN_VAR,
];

/// The secret in the variable `var`, or in the file named by `<var>_FILE`
/// (its whitespace trimmed); none when neither is set (an empty variable
/// is unset). Both set, or a file that cannot be read or is empty, is an
/// error that names the variable and the file.
pub fn secret_var(var: &str) -> anyhow::Result<Option<String>> {
    secret_from(var, |name| std::env::var(name).ok())
}

fn secret_from(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<String>> {
    let file_var = format!("{var}_FILE");
    let set = |name: &str| lookup(name).filter(|value| !value.is_empty());
    match (set(var), set(&file_var)) {
        (Some(_), Some(_)) => anyhow::bail!("{var} and {file_var} are both set: keep one"),
        (Some(text), None) => Ok(Some(text)),
        (None, Some(path)) => {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("{file_var}: cannot read {path}"))?;
            let text = text.trim();
            if text.is_empty() {
                anyhow::bail!("{file_var}: {path} is empty");
            }
            Ok(Some(text.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// A URL given by a flag or its variable (`given`), else read from the
/// file named by `<var>_FILE`.
pub fn url_setting(given: Option<&str>, var: &str) -> anyhow::Result<Option<String>> {
    let from_var = secret_var(var)?;
    Ok(given
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .or(from_var))
}

/// Where the master key comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum MasterKeyPlace {
    /// `ECHO_MASTER_KEY` itself.
    Variable,
    /// A file: `ECHO_MASTER_KEY_FILE`'s, or `<data>/master.key`.
    File(std::path::PathBuf),
}

/// Where [`master_key`] reads the key from.
pub fn master_key_place(dir: &Path) -> MasterKeyPlace {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (set(MASTER_KEY_VAR), set(&format!("{MASTER_KEY_VAR}_FILE"))) {
        (Some(_), _) => MasterKeyPlace::Variable,
        (None, Some(path)) => MasterKeyPlace::File(path.into()),
        (None, None) => MasterKeyPlace::File(dir.join("master.key")),
    }
}

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

/// A secret kept outside the database: the environment variable `env_var`
/// (or the file its `_FILE` variant names), else the file `<dir>/<file>`, created (mode 0600) with `generate()` on
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
    write_private(&path, &text)?;
    tracing::info!(path = %path.display(), "created secret key file");
    Ok(text)
}

/// Creates the file `path` (mode 0600, never over an existing one) holding
/// the line `text`, on disk when this returns.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{text}")?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The secret of [`secret_text`] if it exists already (never creates it).
pub fn existing_secret_text(
    dir: &Path,
    env_var: &str,
    file: &str,
) -> anyhow::Result<Option<String>> {
    if let Some(text) = secret_var(env_var)? {
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

/// The master key that seals signing keys: `ECHO_MASTER_KEY`,
/// `ECHO_MASTER_KEY_FILE` or `<data>/master.key`.
pub fn master_key(dir: &Path) -> anyhow::Result<MasterKey> {
    let text = secret_text(dir, MASTER_KEY_VAR, "master.key", || {
        MasterKey::generate().encode()
    })?;
    MasterKey::parse(&text).with_context(|| format!("{MASTER_KEY_VAR} or master.key is invalid"))
}

/// The configured store: PostgreSQL when `ECHO_DATABASE_URL` (or
/// `ECHO_DATABASE_URL_FILE`) is set (its TLS trusting `roots`), else SQLite
/// in the data directory.
pub async fn open_store(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<Arc<dyn Store>> {
    ensure_data_dir(dir)?;
    let url = secret_var(DATABASE_URL_VAR)?;
    echo_identity_store::open(url.as_deref(), roots, dir)
        .await
        .with_context(|| match &url {
            Some(_) => format!("cannot open the database named by {DATABASE_URL_VAR}(_FILE)"),
            None => format!("cannot open the database in {}", dir.display()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_the_file_named_by_its_file_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let read = |vars: &[(&str, &str)]| secret_from("ECHO_X", lookup(vars));
        assert_eq!(read(&[("ECHO_X", "direct")]).unwrap().unwrap(), "direct");
        assert_eq!(read(&[("ECHO_X_FILE", path)]).unwrap().unwrap(), "s3cret");
        assert_eq!(read(&[("ECHO_X", "")]).unwrap(), None);
        let both = read(&[("ECHO_X", "direct"), ("ECHO_X_FILE", path)]).unwrap_err();
        assert!(both.to_string().contains("both set"), "{both}");
        let missing = dir.path().join("missing");
        let error = read(&[("ECHO_X_FILE", missing.to_str().unwrap())]).unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("ECHO_X_FILE") && error.contains("missing"),
            "{error}"
        );
        let unreadable = read(&[("ECHO_X_FILE", dir.path().to_str().unwrap())]).unwrap_err();
        assert!(
            format!("{unreadable:#}").contains("cannot read"),
            "{unreadable:#}"
        );
        fs::write(&file, "\n").unwrap();
        let empty = read(&[("ECHO_X_FILE", path)]).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
    }
}
