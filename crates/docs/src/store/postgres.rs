use sqlx::postgres::{PgPool, PgPoolOptions};

/// Document records in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgDocumentStore {
    read: PgPool,
    write: PgPool,
}

impl PgDocumentStore {
    pub async fn connect(url: &str) -> crate::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

super::sql::sql_document_store!(PgDocumentStore);
