//! The scale-out backend: PostgreSQL.

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::Result;

/// Identity's storage in PostgreSQL. One pool serves reads and writes.
#[derive(Debug, Clone)]
pub struct PgStore {
    read: PgPool,
    write: PgPool,
    refresh_grants: Batcher<String, Option<(RefreshToken, User)>>,
    rotations: Batcher<Rotation, bool>,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let (refresh_grants, rotations) = Self::refresh_batchers(&pool, &pool);
        Ok(Self {
            read: pool.clone(),
            write: pool,
            refresh_grants,
            rotations,
        })
    }
}

crate::sql::sql_repositories!(PgStore, sqlx::Postgres);
crate::accounts::account_repositories!(PgStore);
crate::keys::key_repositories!(PgStore);
