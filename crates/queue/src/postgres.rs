use echo_crypto::TrustedRoots;
use sqlx::Postgres;

use crate::QueueConfig;
use crate::sql::{QueueBackend, SqlQueue};

/// The queue in PostgreSQL: concurrent takers each lock the row they choose
/// and skip the rows others hold (`FOR UPDATE SKIP LOCKED`).
pub type PgQueue = SqlQueue<Postgres>;

impl QueueBackend for Postgres {
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
}

impl PgQueue {
    /// Connects to `url`, over TLS as its `sslmode` says, trusting `roots`.
    pub async fn connect(
        url: &str,
        roots: &TrustedRoots,
        config: QueueConfig,
    ) -> crate::Result<Self> {
        let pools =
            echo_sql::postgres::open_pools(url, roots, 8, &sqlx::migrate!("./migrations/postgres"))
                .await?;
        // Takes, progress reports and heartbeats commit without waiting for
        // the WAL flush (`synchronous_commit = off`). A server crash may lose
        // the last few: a job taken again, a stale progress figure, a lease
        // that ends early; each means a job runs again, which handlers allow.
        // Enqueues and a job's end (done, retry, dead letter) stay durable.
        // This leaves two WAL flushes in a job's life instead of six.
        let advisory = echo_sql::postgres::pool_options(4)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(connection, "SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect_with(echo_sql::postgres::connect_options(url, roots)?)
            .await?;
        Ok(Self {
            pools,
            advisory,
            config,
        })
    }
}
