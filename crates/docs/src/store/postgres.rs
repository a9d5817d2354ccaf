use sqlx::Postgres;

use super::sql::SqlDocumentStore;

/// Document records in PostgreSQL.
pub type PgDocumentStore = SqlDocumentStore<Postgres>;

impl PgDocumentStore {
    pub async fn connect(url: &str) -> crate::Result<Self> {
        let pools =
            echo_sql::postgres::open_pools(url, 8, &sqlx::migrate!("./migrations/postgres"))
                .await?;
        Ok(Self { pools })
    }
}
