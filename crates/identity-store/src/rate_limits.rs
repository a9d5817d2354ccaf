//! Rate-limit windows in the database: how identity replicas on one
//! PostgreSQL count their per-address and per-client limits together when
//! no Redis is configured (`ECHO_RATE_LIMIT_URL`).
//!
//! One row per key holds its current fixed window; a hit is one UPSERT,
//! which the database applies atomically however many replicas hit the
//! same key at once. A hit of a later window replaces the row's window; a
//! late hit of an earlier one changes nothing. The purge deletes rows whose
//! window ended.

use async_trait::async_trait;
use echo_sql::{Backend, Column};
use sqlx::{ColumnIndex, Encode, Executor, Type};

use crate::Result;
use crate::sql::SqlStore;

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Counts one hit of `key` in the window that starts at `window_start`
    /// (milliseconds since the epoch) and answers the window's hits, this
    /// one included; the row may go after `expires_at` (seconds).
    async fn hit_window(&self, key: &str, window_start: i64, expires_at: i64) -> Result<u64>;
    /// The hits of `key` in the window that starts at `window_start`.
    async fn window_hits(&self, key: &str, window_start: i64) -> Result<u64>;
}

#[async_trait]
impl<DB: Backend> RateLimitStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    async fn hit_window(&self, key: &str, window_start: i64, expires_at: i64) -> Result<u64> {
        let (hits,): (i64,) = sqlx::query_as(
            "INSERT INTO rate_limit_windows (limit_key, window_start, hits, expires_at) \
             VALUES ($1, $2, 1, $3) \
             ON CONFLICT (limit_key) DO UPDATE SET \
               hits = CASE \
                 WHEN rate_limit_windows.window_start = excluded.window_start \
                   THEN rate_limit_windows.hits + 1 \
                 WHEN rate_limit_windows.window_start > excluded.window_start \
                   THEN rate_limit_windows.hits \
                 ELSE 1 END, \
               expires_at = CASE \
                 WHEN rate_limit_windows.window_start > excluded.window_start \
                   THEN rate_limit_windows.expires_at \
                 ELSE excluded.expires_at END, \
               window_start = CASE \
                 WHEN rate_limit_windows.window_start > excluded.window_start \
                   THEN rate_limit_windows.window_start \
                 ELSE excluded.window_start END \
             RETURNING hits",
        )
        .bind(key)
        .bind(window_start)
        .bind(expires_at)
        .fetch_one(&self.pools.write)
        .await?;
        Ok(u64::try_from(hits).unwrap_or(0))
    }

    async fn window_hits(&self, key: &str, window_start: i64) -> Result<u64> {
        let hits: Option<(i64,)> = sqlx::query_as(
            "SELECT hits FROM rate_limit_windows WHERE limit_key = $1 AND window_start = $2",
        )
        .bind(key)
        .bind(window_start)
        .fetch_optional(&self.pools.write)
        .await?;
        Ok(hits.map_or(0, |(hits,)| u64::try_from(hits).unwrap_or(0)))
    }
}
