use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::QueueConfig;

/// The queue in PostgreSQL: concurrent takers each lock the row they choose
/// and skip the rows others hold (`FOR UPDATE SKIP LOCKED`).
#[derive(Debug, Clone)]
pub struct PgQueue {
    read: PgPool,
    write: PgPool,
    config: QueueConfig,
}

impl PgQueue {
    pub async fn connect(url: &str, config: QueueConfig) -> crate::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            config,
        })
    }
}

crate::sql::sql_job_queue!(PgQueue, sqlx::Postgres, skip_locked: " FOR UPDATE SKIP LOCKED");
