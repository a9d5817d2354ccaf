use echo_crypto::TrustedRoots;
use sqlx::Postgres;

use super::sql::SqlDocumentStore;

/// Document records in PostgreSQL.
pub type PgDocumentStore = SqlDocumentStore<Postgres>;

impl PgDocumentStore {
    /// Connects to `url`, over TLS as its `sslmode` says, trusting `roots`.
    pub async fn connect(url: &str, roots: &TrustedRoots) -> crate::Result<Self> {
        let pools =
            echo_sql::postgres::open_pools(url, roots, 8, &sqlx::migrate!("./migrations/postgres"))
                .await?;
        Ok(Self { pools })
    }
}
