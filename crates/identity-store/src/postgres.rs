//! The scale-out backend: PostgreSQL.

use sqlx::Postgres;

use crate::Result;
use crate::sql::SqlStore;

/// Identity's storage in PostgreSQL. One pool serves reads and writes.
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pools =
            echo_sql::postgres::open_pools(url, 16, &sqlx::migrate!("./migrations/postgres"))
                .await?;
        Ok(Self::new(pools))
    }
}
