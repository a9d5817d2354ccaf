//! The table-backed queue's SQL, which both backends run: [`SqlQueue`],
//! generic over the backend.
//!
//! A job is one row of `queue_jobs`; `run_at` is when a queued job is due
//! and, while it is processing, when its lease expires, so one index serves
//! both "what is due" and "whose worker died". Every write that belongs to
//! an attempt matches the row on `lease_token` as well as `id`, which is how
//! a stale lease is refused.

use std::time::Duration;

use async_trait::async_trait;
use echo_sql::{Backend, Column, Pools, RowsAffected as _, placeholders};
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Encode, Executor, Pool, Row as _, Type};

use crate::{
    Failed, Failure, JobId, JobQueue, JobState, JobStatus, LAST_LEASE_EXPIRED, Lease, Leased,
    QueueConfig, QueueDepth, QueueError, Result, millis, now_ms,
};

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    kind: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    progress: i64,
}

impl TryFrom<StatusRow> for JobStatus {
    type Error = QueueError;
    fn try_from(r: StatusRow) -> Result<Self> {
        Ok(JobStatus {
            state: JobState::parse(&r.state)?,
            attempts: u32::try_from(r.attempts)
                .map_err(|_| QueueError::Corrupt(format!("job {}: attempts", r.id)))?,
            last_error: r.last_error,
            progress: u8::try_from(r.progress.clamp(0, 100)).unwrap_or(100),
            kind: r.kind,
            id: JobId(r.id),
        })
    }
}

#[derive(sqlx::FromRow)]
struct TakenRow {
    id: String,
    kind: String,
    payload: String,
    attempts: i64,
}

/// An attempt-bound write that matched no row: the lease is not the job's
/// current one.
fn held(rows_affected: u64, job: &JobId) -> Result<()> {
    if rows_affected == 0 {
        Err(QueueError::StaleLease(job.clone()))
    } else {
        Ok(())
    }
}

/// Where the queue's two table backends differ.
pub trait QueueBackend: Backend {
    /// Appended to the take's choice of row: PostgreSQL's `FOR UPDATE SKIP
    /// LOCKED` lets concurrent takers pass each other's rows; SQLite needs
    /// nothing, as its one writer connection serialises takes.
    const SKIP_LOCKED: &'static str;
}

/// The queue in a table of the database `DB` ([`crate::SqliteQueue`],
/// [`crate::PgQueue`]).
#[derive(Debug)]
pub struct SqlQueue<DB: Database> {
    pub(crate) pools: Pools<DB>,
    /// Where takes, progress reports and heartbeats go: the writer again on
    /// SQLite, a pool that does not wait for the WAL flush on PostgreSQL.
    pub(crate) advisory: Pool<DB>,
    pub(crate) config: QueueConfig,
}

#[async_trait]
impl<DB: QueueBackend> JobQueue for SqlQueue<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
{
    async fn enqueue(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobId> {
        let id = idempotency_key.map_or_else(JobId::random, JobId::for_key);
        let now = now_ms();
        sqlx::query(
            "INSERT INTO queue_jobs (id, kind, payload, state, run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'queued', $4, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(kind)
        .bind(payload.to_string())
        .bind(now)
        .execute(&self.pools.write)
        .await?;
        Ok(id)
    }

    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Leased>> {
        let now = now_ms();
        // A job whose worker died during its last attempt has no attempt
        // left to hand out: dead-letter it (the take below skips such a job
        // even if another taker reaped first).
        sqlx::query(
            "UPDATE queue_jobs SET state = 'failed', lease_token = NULL, last_error = $1, updated_at = $2 \
             WHERE state = 'processing' AND run_at <= $2 AND attempts >= $3",
        )
        .bind(LAST_LEASE_EXPIRED)
        .bind(now)
        .bind(i64::from(self.config.max_attempts))
        .execute(&self.pools.write)
        .await?;
        let token = JobId::random().0;
        let taken: Option<TakenRow> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE queue_jobs SET state = 'processing', attempts = attempts + 1, progress = 0, \
             run_at = $1, lease_token = $2, worker = $3, updated_at = $4 \
             WHERE id = (SELECT id FROM queue_jobs \
             WHERE state IN ('queued', 'processing') AND run_at <= $4 AND attempts < $5 \
             ORDER BY run_at LIMIT 1{}) RETURNING id, kind, payload, attempts",
            DB::SKIP_LOCKED
        )))
        .bind(now.saturating_add(millis(lease)))
        .bind(&token)
        .bind(worker)
        .bind(now)
        .bind(i64::from(self.config.max_attempts))
        .fetch_optional(&self.advisory)
        .await?;
        let Some(row) = taken else { return Ok(None) };
        let corrupt = |what: &str| QueueError::Corrupt(format!("job {}: {what}", row.id));
        Ok(Some(Leased {
            payload: serde_json::from_str(&row.payload).map_err(|_| corrupt("payload"))?,
            lease: Lease {
                attempt: u32::try_from(row.attempts).map_err(|_| corrupt("attempts"))?,
                job: JobId(row.id),
                token,
                duration: lease,
            },
            kind: row.kind,
        }))
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE queue_jobs SET run_at = $1, updated_at = $2 \
             WHERE id = $3 AND lease_token = $4 AND state = 'processing'",
        )
        .bind(now.saturating_add(millis(lease.duration)))
        .bind(now)
        .bind(lease.job.as_str())
        .bind(&lease.token)
        .execute(&self.advisory)
        .await?;
        held(done.rows_affected(), &lease.job)
    }

    async fn complete(&self, lease: &Lease) -> Result<()> {
        let done = sqlx::query(
            "UPDATE queue_jobs SET state = 'done', progress = 100, lease_token = NULL, updated_at = $1 \
             WHERE id = $2 AND lease_token = $3 AND state = 'processing'",
        )
        .bind(now_ms())
        .bind(lease.job.as_str())
        .bind(&lease.token)
        .execute(&self.pools.write)
        .await?;
        held(done.rows_affected(), &lease.job)
    }

    async fn fail(&self, lease: &Lease, error: &str, failure: Failure) -> Result<Failed> {
        let outcome = self.config.after_failure(lease.attempt, failure);
        let now = now_ms();
        let (state, run_at) = match outcome {
            Failed::Retrying { after } => ("queued", now.saturating_add(millis(after))),
            Failed::Dead => ("failed", now),
        };
        let done = sqlx::query(
            "UPDATE queue_jobs SET state = $1, run_at = $2, last_error = $3, lease_token = NULL, updated_at = $4 \
             WHERE id = $5 AND lease_token = $6 AND state = 'processing'",
        )
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(now)
        .bind(lease.job.as_str())
        .bind(&lease.token)
        .execute(&self.pools.write)
        .await?;
        held(done.rows_affected(), &lease.job)?;
        Ok(outcome)
    }

    async fn set_progress(&self, lease: &Lease, percent: u8) -> Result<()> {
        let done = sqlx::query(
            "UPDATE queue_jobs SET progress = $1, updated_at = $2 \
             WHERE id = $3 AND lease_token = $4 AND state = 'processing'",
        )
        .bind(i64::from(percent.min(100)))
        .bind(now_ms())
        .bind(lease.job.as_str())
        .bind(&lease.token)
        .execute(&self.advisory)
        .await?;
        held(done.rows_affected(), &lease.job)
    }

    async fn status(&self, id: &JobId) -> Result<Option<JobStatus>> {
        let row: Option<StatusRow> = sqlx::query_as(
            "SELECT id, kind, state, attempts, last_error, progress FROM queue_jobs WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pools.read)
        .await?;
        row.map(JobStatus::try_from).transpose()
    }

    async fn statuses(&self, ids: &[JobId]) -> Result<Vec<JobStatus>> {
        let mut found = Vec::with_capacity(ids.len());
        // Well under SQLite's and PostgreSQL's bound-parameter limits.
        for part in ids.chunks(500) {
            let lookup = format!(
                "SELECT id, kind, state, attempts, last_error, progress FROM queue_jobs WHERE id IN {}",
                placeholders::<DB>(0, 1, part.len())
            );
            let mut query = sqlx::query_as::<_, StatusRow>(AssertSqlSafe(lookup));
            for id in part {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(&self.pools.read).await? {
                found.push(JobStatus::try_from(row)?);
            }
        }
        Ok(found)
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let row = sqlx::query(
            "SELECT \
             COUNT(CASE WHEN state IN ('queued', 'processing') THEN 1 END) AS pending, \
             COUNT(CASE WHEN state = 'failed' THEN 1 END) AS dead \
             FROM queue_jobs",
        )
        .fetch_one(&self.pools.read)
        .await?;
        let count = |column: &str| -> Result<u64> {
            let n: i64 = row.try_get(column)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(QueueDepth {
            pending: count("pending")?,
            dead: count("dead")?,
        })
    }
}
