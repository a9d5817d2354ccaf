//! A job's progress, written to the queue in the background and only when a
//! user could see it.
//!
//! Most documents are indexed in a few milliseconds: writing "10 %, 50 %,
//! 90 %" for them would be three queue writes per job that nobody sees (a
//! page polls once a second), and on SQLite each is a transaction. So the
//! job only sets the latest figure here, and a task writes it
//! [`PROGRESS_DELAY`] after it changed, the latest figure at that moment.
//! A job that ends sooner writes no progress at all; its completion sets
//! 100.

use std::sync::Arc;
use std::time::Duration;

use echo_queue::{JobQueue, Lease, QueueError};
use tokio::sync::watch;

/// How long a progress figure waits before it is written (and so the
/// least time between two writes).
pub const PROGRESS_DELAY: Duration = Duration::from_millis(200);

/// Writes a job's progress while the job runs; stops when dropped.
pub(crate) struct Progress {
    latest: watch::Sender<u8>,
    writer: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(queue: Arc<dyn JobQueue>, lease: Lease) -> Self {
        Self::with_delay(queue, lease, PROGRESS_DELAY)
    }

    fn with_delay(queue: Arc<dyn JobQueue>, lease: Lease, delay: Duration) -> Self {
        let (latest, mut changes) = watch::channel(0);
        let writer = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                tokio::time::sleep(delay).await;
                let percent = *changes.borrow_and_update();
                match queue.set_progress(&lease, percent).await {
                    Ok(()) => {}
                    // Another worker has the job now; its end is refused
                    // too, which is where the job learns it.
                    Err(e @ QueueError::StaleLease(_)) => {
                        tracing::warn!(job = %lease.job(), error = %e, "lease lost");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = %lease.job(), error = %e, "cannot record progress");
                    }
                }
            }
        });
        Self { latest, writer }
    }

    /// Sets the job's progress (percent); written later, if still running.
    pub fn set(&self, percent: u8) {
        self.latest.send_replace(percent.min(100));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use echo_queue::{JobState, QueueConfig, SqliteQueue};

    use super::*;

    async fn queue_with_a_job() -> (tempfile::TempDir, Arc<dyn JobQueue>, echo_queue::Leased) {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqliteQueue::open(&dir.path().join("queue.db"), QueueConfig::default())
                .await
                .unwrap(),
        );
        queue
            .enqueue("index_document", &serde_json::json!({}), None)
            .await
            .unwrap();
        let job = queue
            .take("test", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        (dir, queue, job)
    }

    async fn progress_of(queue: &dyn JobQueue, job: &echo_queue::Leased) -> u8 {
        let status = queue.status(job.id()).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Processing);
        status.progress
    }

    #[tokio::test]
    async fn a_job_that_ends_within_the_delay_writes_nothing() {
        let (_dir, queue, job) = queue_with_a_job().await;
        let progress =
            Progress::with_delay(queue.clone(), job.lease.clone(), Duration::from_millis(300));
        for percent in [10, 50, 90] {
            progress.set(percent);
        }
        drop(progress);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(progress_of(&*queue, &job).await, 0);
    }

    #[tokio::test]
    async fn a_longer_job_gets_its_latest_figure_written() {
        let (_dir, queue, job) = queue_with_a_job().await;
        let progress =
            Progress::with_delay(queue.clone(), job.lease.clone(), Duration::from_millis(50));
        progress.set(10);
        progress.set(50);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while progress_of(&*queue, &job).await != 50 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "progress never written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        progress.set(90);
        while progress_of(&*queue, &job).await != 90 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the next figure never written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
