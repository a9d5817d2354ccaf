//! The scale-out backend: PostgreSQL.

use echo_crypto::TrustedRoots;
use sqlx::Postgres;

use crate::Result;
use crate::sql::SqlStore;

/// Identity's storage in PostgreSQL. One pool serves reads and writes.
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    /// Connects to `url`, over TLS as its `sslmode` says, trusting `roots`.
    pub async fn connect(url: &str, roots: &TrustedRoots) -> Result<Self> {
        let pools = echo_sql::postgres::open_pools(
            url,
            roots,
            16,
            &sqlx::migrate!("./migrations/postgres"),
        )
        .await?;
        Ok(Self::new(pools))
    }
}
