use sqlx::postgres::{PgPool, PgPoolOptions};

use super::Result;

/// The audit chain in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgAuditStore {
    read: PgPool,
    write: PgPool,
}

impl PgAuditStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

super::sql::sql_audit_store!(PgAuditStore, sqlx::Postgres, "ANALYZE audit_events");
