//! PostgreSQL as Echo uses it: one pool per store serves reads and writes,
//! since the server queues concurrent writers itself; connections use TLS
//! as the URL's `sslmode` says.

use std::str::FromStr as _;
use std::time::Duration;

use echo_crypto::TrustedRoots;
use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::{OpenError, Pools};

/// The connection options of `url`. Its `sslmode` decides TLS, as in libpq:
/// `disable`, `prefer` (sqlx's default: TLS when the server offers it),
/// `require` (TLS, any certificate), `verify-ca` (a certificate that chains
/// to a trusted root) and `verify-full` (that, for the URL's host too).
/// The trusted roots are `roots` (the system's and `ECHO_CA_FILE`'s) and
/// the URL's own `sslrootcert`, if it names one.
pub fn connect_options(url: &str, roots: &TrustedRoots) -> Result<PgConnectOptions, OpenError> {
    let options = PgConnectOptions::from_str(url)?;
    if !matches!(
        options.get_ssl_mode(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull
    ) {
        return Ok(options);
    }
    // sqlx trusts one PEM of roots (beside the webpki roots it carries),
    // so ours and the URL's go in together.
    let mut pem = roots.pem();
    if let Some(path) = ssl_root_cert(url) {
        let theirs = std::fs::read(&path).map_err(|e| {
            sqlx::Error::Configuration(format!("cannot read sslrootcert {path}: {e}").into())
        })?;
        pem.extend(theirs);
    }
    Ok(options.ssl_root_cert_from_pem(pem))
}

/// The file the URL's `sslrootcert` (or sqlx's aliases for it) names.
fn ssl_root_cert(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(key, _)| matches!(&**key, "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
        .map(|(_, path)| path.into_owned())
}

/// How long a statement waits for a connection: while the server is away,
/// each request fails after this (a `503`, see [`crate::is_unavailable`])
/// instead of sqlx's default 30 s, long enough for a busy pool to hand a
/// connection on.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The options every PostgreSQL pool of Echo starts from: at most
/// `max_connections`, waiting at most [`ACQUIRE_TIMEOUT`] for one, each
/// checked before use (the default) so that connections the server closed
/// while it was away are replaced rather than failing a request.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// Connects a pool of at most `max_connections` to `url` (TLS as
/// [`connect_options`] says) and has `migrator` bring the schema up to
/// date; the pool serves as both of the [`Pools`].
pub async fn open_pools(
    url: &str,
    roots: &TrustedRoots,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<Pools<Postgres>, OpenError> {
    let pool = pool_options(max_connections)
        .connect_with(connect_options(url, roots)?)
        .await?;
    migrator.run(&pool).await?;
    Ok(Pools {
        read: pool.clone(),
        write: pool,
        wal_checkpointer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_urls_own_root_certificate_is_found_under_each_of_its_names() {
        for key in ["sslrootcert", "ssl-root-cert", "ssl-ca"] {
            let url = format!("postgres://u@db/echo?sslmode=verify-full&{key}=/etc/ca%20x.pem");
            assert_eq!(ssl_root_cert(&url).as_deref(), Some("/etc/ca x.pem"));
        }
        assert_eq!(ssl_root_cert("postgres://u@db/echo?sslmode=require"), None);
    }

    #[test]
    fn an_unreadable_sslrootcert_is_refused_by_name_when_verifying() {
        let roots = TrustedRoots::load(None).unwrap();
        let url = "postgres://u@db/echo?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let error = connect_options(url, &roots).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        // Without verification the root certificate is never read.
        let url = "postgres://u@db/echo?sslmode=require&sslrootcert=/nonexistent/ca.pem";
        assert!(connect_options(url, &roots).is_ok());
    }
}
