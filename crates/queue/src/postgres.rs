use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::QueueConfig;

/// The queue in PostgreSQL: concurrent takers each lock the row they choose
/// and skip the rows others hold (`FOR UPDATE SKIP LOCKED`).
#[derive(Debug, Clone)]
pub struct PgQueue {
    read: PgPool,
    write: PgPool,
    /// Takes, progress reports and heartbeats commit without waiting for
    /// the WAL flush (`synchronous_commit = off`). A server crash may lose
    /// the last few: a job taken again, a stale progress figure, a lease
    /// that ends early; each means a job runs again, which handlers allow.
    /// Enqueues and a job's end (done, retry, dead letter) stay durable.
    /// This leaves two WAL flushes in a job's life instead of six.
    advisory: PgPool,
    config: QueueConfig,
}

impl PgQueue {
    pub async fn connect(url: &str, config: QueueConfig) -> crate::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let advisory = PgPoolOptions::new()
            .max_connections(4)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(connection, "SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            advisory,
            config,
        })
    }
}

crate::sql::sql_job_queue!(PgQueue, sqlx::Postgres, skip_locked: " FOR UPDATE SKIP LOCKED");
