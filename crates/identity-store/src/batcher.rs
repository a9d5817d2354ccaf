//! Batching: concurrent operations of one kind run as one.
//!
//! Under load a statement's cost is dominated by what every round trip pays
//! once (the hand-off to the database connection's thread and back, and for
//! a write `BEGIN`, `COMMIT` and its WAL write or flush), not by its own
//! rows. A [`Batcher`] queues the items callers submit; one task takes
//! everything queued so far (up to a limit) and runs it as one batch, then
//! answers each caller: a group commit for writes, one `IN (…)` query for
//! lookups. A lone item is a batch of one and waits for nobody.
//!
//! The task owns the batch, so a caller that goes away (a client that hung
//! up) cancels nothing half-done: its write commits with the others and only
//! the answer is dropped.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

type Pending<T, R> = (T, oneshot::Sender<Result<R>>);

/// Runs submitted items in batches of at most `max_batch`, in order.
pub(crate) struct Batcher<T, R> {
    queue: mpsc::UnboundedSender<Pending<T, R>>,
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batching task on the current Tokio runtime. `run` gets a
    /// batch and answers one result per item, in order, or fails the whole
    /// batch (a transaction that did not commit wrote none of it). The task
    /// ends when the last handle is dropped.
    pub(crate) fn start<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>>> + Send,
    {
        let (queue, mut intake) = mpsc::unbounded_channel::<Pending<T, R>>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while intake.recv_many(&mut batch, max_batch).await > 0 {
                let (items, waiters): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let count = items.len();
                match run(items).await {
                    Ok(results) if results.len() == count => {
                        for (waiter, result) in waiters.into_iter().zip(results) {
                            let _ = waiter.send(Ok(result));
                        }
                    }
                    Ok(results) => fail_all(
                        waiters,
                        &format!("batch of {count} answered {} results", results.len()),
                    ),
                    Err(e) => fail_all(waiters, &e.to_string()),
                }
            }
        });
        Self { queue }
    }

    /// Queues `item` and waits for its batch to finish.
    pub(crate) async fn submit(&self, item: T) -> Result<R> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((item, answer))
            .map_err(|_| StoreError::Unavailable("the batching task has stopped".into()))?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the batching task stopped before answering".into())
        })?
    }
}

fn fail_all<R>(waiters: Vec<oneshot::Sender<Result<R>>>, why: &str) {
    for waiter in waiters {
        let _ = waiter.send(Err(StoreError::Unavailable(format!(
            "batched operation failed: {why}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_submissions_share_batches_and_get_their_own_answers() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Batcher::start(16, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // Let more submissions queue up behind this batch.
                tokio::task::yield_now().await;
                Ok(items.into_iter().map(|n| n * 2).collect())
            }
        });
        let submissions: Vec<_> = (0..100)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { doubler.submit(n).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for submission in submissions {
            answers.push(submission.await.unwrap());
        }
        assert_eq!(answers, (0..100).map(|n| n * 2).collect::<Vec<_>>());
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            (7..100).contains(&batches),
            "100 items in batches of at most 16 took {batches} batches"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_items() {
        let failing = Batcher::start(8, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::Corrupt("disk on fire".into()))
        });
        let err = failing.submit(1).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(m) if m.contains("disk on fire")));
    }

    #[tokio::test]
    async fn a_batch_answering_the_wrong_count_is_an_error_not_a_mixup() {
        let short = Batcher::start(8, |_: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        assert!(matches!(
            short.submit(1).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
