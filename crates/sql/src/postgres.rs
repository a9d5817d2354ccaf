//! PostgreSQL as Echo uses it: one pool per store serves reads and writes,
//! since the server queues concurrent writers itself.

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::{OpenError, Pools};

/// Connects a pool of at most `max_connections` to `url` and has `migrator`
/// bring the schema up to date; the pool serves as both of the [`Pools`].
pub async fn open_pools(
    url: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<Pools<Postgres>, OpenError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await?;
    migrator.run(&pool).await?;
    Ok(Pools {
        read: pool.clone(),
        write: pool,
        wal_checkpointer: None,
    })
}
