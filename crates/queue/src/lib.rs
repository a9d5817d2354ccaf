//! Echo's durable job queue: jobs are leased to workers, retried with
//! exponential backoff after transient failures, and dead-lettered after the
//! last attempt or at once after a permanent failure.
//!
//! ```text
//!  enqueue ──► queued ──take──► processing ──complete──► done
//!                ▲                 │  │
//!                │  fail(Transient)│  │fail(Permanent), or the last attempt failed
//!                └── after backoff─┘  └──────────────────────────► failed (dead letter)
//!                ▲                 │
//!                └─ lease expired ─┘  (the worker died: another worker takes it)
//! ```
//!
//! - [`JobQueue`] is the one interface; [`open_queue`] picks the backend:
//!   [`SqliteQueue`] (the default, `<data>/queue.db`), [`PgQueue`] (a
//!   `postgres://` URL; `FOR UPDATE SKIP LOCKED`) or [`NatsQueue`] (a
//!   `nats://` or `tls://` URL; a JetStream work-queue stream). Both
//!   servers' TLS trusts the [`TrustedRoots`] it is given.
//! - A worker [`take`](JobQueue::take)s a job for a lease. Until the lease
//!   expires no other worker gets the job; the worker renews it with
//!   [`heartbeat`](JobQueue::heartbeat) while it works. If the worker dies,
//!   the job is taken again once the lease has expired, as its next attempt.
//! - Every call that ends or touches a job carries the [`Lease`]. A lease
//!   that is no longer the job's current one (it expired and another worker
//!   took the job) is refused with [`QueueError::StaleLease`], so a job is
//!   never completed twice.
//!
//! **Handlers must be idempotent.** A job runs at least once, not exactly
//! once: a worker that finished the work but died (or lost its lease) before
//! [`complete`](JobQueue::complete) leaves the job to be run again, and NATS
//! JetStream redelivers by design. [`Leased::id`] and [`Leased::attempt`]
//! let a handler key its side effects on the job (e.g. replace a document's
//! index entries rather than add to them) and know whether it is a retry.
//!
//! See `docs/queue.md` for the semantics of each backend.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use serde::{Deserialize, Serialize};

mod nats;
mod postgres;
mod sql;
mod sqlite;

pub use nats::NatsQueue;
pub use postgres::PgQueue;
pub use sql::{QueueBackend, SqlQueue};
pub use sqlite::SqliteQueue;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS error: {0}")]
    Nats(String),
    /// The lease is not the job's current one: it expired and the job was
    /// taken again, or the job already ended.
    #[error("the lease on job {0} is no longer held")]
    StaleLease(JobId),
    #[error("{0}")]
    Unsupported(String),
    #[error("stored queue data is corrupt: {0}")]
    Corrupt(String),
}

impl QueueError {
    /// Whether the queue's engine does not answer now (PostgreSQL away, see
    /// [`echo_sql::is_unavailable`], or NATS, whose client errors all mean
    /// the server could not be reached or did not answer in time): worth
    /// a retry, not a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Database(e) => echo_sql::is_unavailable(e),
            QueueError::Nats(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

impl From<echo_sql::OpenError> for QueueError {
    fn from(e: echo_sql::OpenError) -> Self {
        match e {
            echo_sql::OpenError::Database(e) => QueueError::Database(e),
            echo_sql::OpenError::Migrate(e) => QueueError::Migrate(e),
        }
    }
}

/// A job's id: 32 lowercase hex digits, random, or derived from the
/// idempotency key the job was enqueued with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(String);

impl JobId {
    fn random() -> Self {
        Self::from_bytes(&echo_crypto::secret::random_bytes::<16>())
    }

    /// The same key always names the same job, which is what makes a
    /// re-enqueue with that key a no-op on every backend.
    fn for_key(idempotency_key: &str) -> Self {
        let digest = echo_crypto::secret::sha256(idempotency_key.as_bytes());
        Self::from_bytes(&digest[..16])
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        use std::fmt::Write;
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        JobId(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for JobId {
    fn from(id: String) -> Self {
        JobId(id)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker's hold on one attempt of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    job: JobId,
    attempt: u32,
    /// What names this attempt in the backend: a random token in the
    /// tables, the delivery's ack subject on NATS.
    token: String,
    duration: Duration,
}

impl Lease {
    pub fn job(&self) -> &JobId {
        &self.job
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long the lease lasts from a take or a heartbeat.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Leased {
    pub kind: String,
    pub payload: serde_json::Value,
    pub lease: Lease,
}

impl Leased {
    pub fn id(&self) -> &JobId {
        &self.lease.job
    }

    /// 1 on the first run, 2 on the first retry, and so on (a run whose
    /// worker died counts too).
    pub fn attempt(&self) -> u32 {
        self.lease.attempt
    }
}

/// How a worker failed a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again (a timeout, a 5xx, an unreachable service): the
    /// job is retried after a backoff until its attempts run out.
    Transient,
    /// Will fail the same way every time (a 422 for a corrupt file): the job
    /// is dead-lettered at once.
    Permanent,
}

/// What [`JobQueue::fail`] did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again; due after this delay.
    Retrying { after: Duration },
    /// Dead-lettered: state `failed`, with the error kept.
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be taken (first run, or a retry waiting out its backoff).
    Queued,
    /// Leased to a worker.
    Processing,
    Done,
    /// Dead-lettered: permanent failure or no attempts left.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => JobState::Queued,
            "processing" => JobState::Processing,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            other => return Err(QueueError::Corrupt(format!("unknown job state {other:?}"))),
        })
    }
}

/// What [`JobQueue::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub id: JobId,
    pub kind: String,
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
    /// 0–100, as the worker last reported it (100 once done).
    pub progress: u8,
}

/// How many jobs a queue holds, for its metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Jobs not finished: waiting to be taken, or leased to a worker.
    pub pending: u64,
    /// Dead-lettered jobs kept.
    pub dead: u64,
}

/// Retry policy and backend settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Attempts before a transiently failing job is dead-lettered (≥ 1).
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay; it doubles per attempt.
    pub backoff_base: Duration,
    /// The largest ceiling of a retry's delay.
    pub backoff_cap: Duration,
    /// NATS only: the consumer's `ack_wait`, which is the lease of every
    /// take (JetStream has one per consumer, not per message).
    pub nats_lease: Duration,
    /// NATS only: the stream is named this, its subjects start with it, the
    /// dead letters go to `<name>_DEAD`, the status to bucket `<name>_STATUS`.
    pub nats_name: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            nats_lease: Duration::from_secs(30),
            nats_name: "ECHO_JOBS".into(),
        }
    }
}

impl QueueConfig {
    /// The delay before retrying after failed attempt `attempt` (≥ 1):
    /// exponential backoff with "equal" jitter, a uniform point in
    /// `[c/2, c]` where `c = min(cap, base × 2^(attempt-1))`: spread out, so
    /// jobs that failed together do not return together, but never much
    /// sooner than the backoff asks.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.backoff_cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let random = u64::from_le_bytes(echo_crypto::secret::random_bytes());
        Duration::from_nanos(half + random % (nanos - half + 1))
    }

    /// What a failure of `attempt` leads to.
    fn after_failure(&self, attempt: u32, failure: Failure) -> Failed {
        if failure == Failure::Permanent || attempt >= self.max_attempts {
            Failed::Dead
        } else {
            Failed::Retrying {
                after: self.retry_delay(attempt),
            }
        }
    }
}

/// The error kept on a job whose worker died during its last attempt.
const LAST_LEASE_EXPIRED: &str = "the lease of the last attempt expired: the worker stopped";

/// A durable job queue. See the crate documentation for the life of a job.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Queues a job. With an idempotency key, enqueueing the same key again
    /// is a no-op that returns the first job's id (whatever its state).
    async fn enqueue(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobId>;

    /// Leases the job that has been due longest (a queued job, or one whose
    /// lease expired) to `worker` for `lease`, or `None` if none is due.
    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Leased>>;

    /// Renews the lease for its full duration from now.
    async fn heartbeat(&self, lease: &Lease) -> Result<()>;

    async fn complete(&self, lease: &Lease) -> Result<()>;

    /// Records a failed attempt: a transient one is retried after a backoff
    /// while attempts remain, anything else is dead-lettered with `error`.
    async fn fail(&self, lease: &Lease, error: &str, failure: Failure) -> Result<Failed>;

    /// Reports progress (0–100; larger values count as 100).
    async fn set_progress(&self, lease: &Lease, percent: u8) -> Result<()>;

    async fn status(&self, id: &JobId) -> Result<Option<JobStatus>>;

    /// How many jobs are pending and dead-lettered (one cheap query: also
    /// the queue's readiness check).
    async fn depth(&self) -> Result<QueueDepth>;

    /// The status of each of `ids` that exists, in no particular order: a
    /// listing of many documents asks once, not once per document.
    async fn statuses(&self, ids: &[JobId]) -> Result<Vec<JobStatus>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.status(id).await?);
        }
        Ok(found)
    }
}

/// Reads `queue`'s depth into its gauges (`echo_queue_pending_jobs`,
/// `echo_queue_dead_letters`; docs/operations.md).
pub async fn observe(queue: &dyn JobQueue) -> Result<QueueDepth> {
    let depth = queue.depth().await?;
    metrics::gauge!("echo_queue_pending_jobs").set(depth.pending as f64);
    metrics::gauge!("echo_queue_dead_letters").set(depth.dead as f64);
    Ok(depth)
}

/// The queue `url` names: PostgreSQL for `postgres://` (or
/// `postgresql://`), NATS JetStream for `nats://` (or `tls://`), else
/// SQLite in `<data_dir>/queue.db`. TLS connections trust `roots`.
pub async fn open_queue(
    url: Option<&str>,
    roots: &TrustedRoots,
    data_dir: &Path,
    config: QueueConfig,
) -> Result<Arc<dyn JobQueue>> {
    Ok(match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Arc::new(PgQueue::connect(url, roots, config).await?)
        }
        Some(url) if url.starts_with("nats://") || url.starts_with("tls://") => {
            Arc::new(NatsQueue::connect(url, roots, config).await?)
        }
        Some(other) => {
            return Err(QueueError::Unsupported(format!(
                "queue URL {other:?}: expected postgres://, nats:// or tls://"
            )));
        }
        None => Arc::new(SqliteQueue::open(&data_dir.join("queue.db"), config).await?),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_within_jitter_up_to_the_cap() {
        let config = QueueConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
            ..QueueConfig::default()
        };
        for (attempt, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let delay = config.retry_delay(attempt);
                let ceiling = Duration::from_millis(ceiling);
                assert!(delay <= ceiling && delay >= ceiling / 2, "{delay:?}");
            }
        }
    }

    #[test]
    fn permanent_or_last_failures_are_dead() {
        let config = QueueConfig {
            max_attempts: 3,
            ..QueueConfig::default()
        };
        assert_eq!(config.after_failure(1, Failure::Permanent), Failed::Dead);
        assert_eq!(config.after_failure(3, Failure::Transient), Failed::Dead);
        assert!(matches!(
            config.after_failure(2, Failure::Transient),
            Failed::Retrying { .. }
        ));
    }

    #[test]
    fn an_idempotency_key_names_one_job() {
        assert_eq!(JobId::for_key("doc-1"), JobId::for_key("doc-1"));
        assert_ne!(JobId::for_key("doc-1"), JobId::for_key("doc-2"));
        assert_eq!(JobId::random().as_str().len(), 32);
    }
}
