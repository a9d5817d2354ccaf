//! The suite every backend passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echo_queue::{Failed, Failure, JobQueue, JobState, Leased, QueueError};
use serde_json::json;

use crate::backend::{Backend, per_backend};

/// The lease of tests that let leases expire.
const SHORT: Duration = Duration::from_millis(200);
/// The lease of tests that never let one expire.
const LONG: Duration = Duration::from_secs(30);

per_backend!(
    enqueue_take_complete,
    expired_lease_is_taken_by_another_worker,
    stale_lease_is_refused,
    transient_failures_back_off_then_dead_letter,
    permanent_failure_dead_letters_at_once,
    worker_dying_on_the_last_attempt_dead_letters,
    idempotency_key_makes_one_job,
    parallel_workers_process_each_job_once,
    statuses_of_many_jobs_in_one_call,
);

/// Polls `take` until it hands out a job, for at most five seconds.
async fn take_soon(queue: &dyn JobQueue, worker: &str, lease: Duration) -> Leased {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(job) = queue.take(worker, lease).await.expect("take") {
            return job;
        }
        assert!(Instant::now() < deadline, "{worker} got no job in 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn state(queue: &dyn JobQueue, leased: &Leased) -> (JobState, u32, Option<String>) {
    let status = queue
        .status(leased.id())
        .await
        .expect("status")
        .expect("job exists");
    (status.state, status.attempts, status.last_error)
}

fn is_stale<T: std::fmt::Debug>(result: Result<T, QueueError>) -> bool {
    matches!(result, Err(QueueError::StaleLease(_)))
}

async fn enqueue_take_complete(backend: Backend) {
    let t = backend.open("enqueue_take_complete", LONG).await;
    let q = &*t.queue;
    let id = q
        .enqueue("parse", &json!({"document": 7}), None)
        .await
        .unwrap();
    let status = q.status(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.state, status.attempts, status.kind.as_str()),
        (JobState::Queued, 0, "parse")
    );

    let job = q.take("w1", LONG).await.unwrap().expect("a job");
    assert_eq!(
        (job.id(), job.attempt(), job.kind.as_str()),
        (&id, 1, "parse")
    );
    assert_eq!(job.payload, json!({"document": 7}));
    assert_eq!(state(q, &job).await.0, JobState::Processing);
    assert!(
        q.take("w2", LONG).await.unwrap().is_none(),
        "a leased job is not handed out twice"
    );

    q.set_progress(&job.lease, 40).await.unwrap();
    q.heartbeat(&job.lease).await.unwrap();
    assert_eq!(q.status(&id).await.unwrap().unwrap().progress, 40);
    q.complete(&job.lease).await.unwrap();
    let status = q.status(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.state, status.attempts, status.progress),
        (JobState::Done, 1, 100)
    );
    assert!(q.take("w1", LONG).await.unwrap().is_none());
    assert!(
        is_stale(q.complete(&job.lease).await),
        "no second completion"
    );
    t.close().await;
}

async fn expired_lease_is_taken_by_another_worker(backend: Backend) {
    let t = backend
        .open("expired_lease_is_taken_by_another_worker", SHORT)
        .await;
    let q = &*t.queue;
    let id = q.enqueue("parse", &json!(1), None).await.unwrap();
    // w1 takes the job and dies: it never completes.
    let first = q.take("w1", SHORT).await.unwrap().expect("a job");
    assert_eq!((first.attempt(), first.lease.duration()), (1, SHORT));
    assert!(
        q.take("w2", SHORT).await.unwrap().is_none(),
        "the lease still holds"
    );
    let again = take_soon(q, "w2", SHORT).await;
    assert_eq!((again.id(), again.attempt()), (&id, 2));
    q.complete(&again.lease).await.unwrap();
    assert_eq!(state(q, &again).await, (JobState::Done, 2, None));
    t.close().await;
}

async fn stale_lease_is_refused(backend: Backend) {
    let t = backend.open("stale_lease_is_refused", SHORT).await;
    let q = &*t.queue;
    q.enqueue("parse", &json!(1), None).await.unwrap();
    let slow = q.take("slow", SHORT).await.unwrap().expect("a job");
    let fast = take_soon(q, "fast", SHORT).await;
    // The slow worker comes back after its lease expired and was taken.
    assert!(is_stale(q.complete(&slow.lease).await));
    assert!(is_stale(
        q.fail(&slow.lease, "late", Failure::Transient).await
    ));
    assert!(is_stale(q.set_progress(&slow.lease, 50).await));
    assert!(is_stale(q.heartbeat(&slow.lease).await));
    q.complete(&fast.lease).await.unwrap();
    assert_eq!(state(q, &fast).await, (JobState::Done, 2, None));
    t.close().await;
}

async fn transient_failures_back_off_then_dead_letter(backend: Backend) {
    let t = backend
        .open("transient_failures_back_off_then_dead_letter", LONG)
        .await;
    let q = &*t.queue;
    q.enqueue("parse", &json!(1), None).await.unwrap();
    let mut job = q.take("w", LONG).await.unwrap().expect("a job");
    for attempt in 1..t.config.max_attempts {
        assert_eq!(job.attempt(), attempt);
        let error = format!("parser unreachable ({attempt})");
        let failed_at = Instant::now();
        let outcome = q
            .fail(&job.lease, &error, Failure::Transient)
            .await
            .unwrap();
        let Failed::Retrying { after } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            state(q, &job).await,
            (JobState::Queued, attempt, Some(error))
        );
        job = take_soon(q, "w", LONG).await;
        // Never before the backoff (ms-rounded in the tables).
        assert!(
            failed_at.elapsed() + Duration::from_millis(2) >= after,
            "{after:?}"
        );
    }
    let last = q
        .fail(&job.lease, "parser unreachable (last)", Failure::Transient)
        .await
        .unwrap();
    assert_eq!(last, Failed::Dead);
    let max = t.config.max_attempts;
    assert_eq!(
        state(q, &job).await,
        (
            JobState::Failed,
            max,
            Some("parser unreachable (last)".into())
        )
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        q.take("w", LONG).await.unwrap().is_none(),
        "a dead job is not retried"
    );
    t.close().await;
}

async fn permanent_failure_dead_letters_at_once(backend: Backend) {
    let t = backend
        .open("permanent_failure_dead_letters_at_once", LONG)
        .await;
    let q = &*t.queue;
    q.enqueue("parse", &json!(1), None).await.unwrap();
    let job = q.take("w", LONG).await.unwrap().expect("a job");
    let outcome = q
        .fail(&job.lease, "422: truncated PDF", Failure::Permanent)
        .await
        .unwrap();
    assert_eq!(outcome, Failed::Dead);
    assert_eq!(
        state(q, &job).await,
        (JobState::Failed, 1, Some("422: truncated PDF".into()))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.take("w", LONG).await.unwrap().is_none());
    t.close().await;
}

async fn worker_dying_on_the_last_attempt_dead_letters(backend: Backend) {
    let t = backend
        .open("worker_dying_on_the_last_attempt_dead_letters", SHORT)
        .await;
    let q = &*t.queue;
    let id = q.enqueue("parse", &json!(1), None).await.unwrap();
    for attempt in 1..=t.config.max_attempts {
        // Each worker dies holding the job.
        assert_eq!(take_soon(q, "doomed", SHORT).await.attempt(), attempt);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            q.take("w", SHORT).await.unwrap().is_none(),
            "no attempt is left"
        );
        let status = q.status(&id).await.unwrap().unwrap();
        if status.state == JobState::Failed {
            assert_eq!(status.attempts, t.config.max_attempts);
            assert!(status.last_error.unwrap().contains("lease"));
            break;
        }
        assert!(Instant::now() < deadline, "not dead-lettered: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.close().await;
}

async fn idempotency_key_makes_one_job(backend: Backend) {
    let t = backend.open("idempotency_key_makes_one_job", LONG).await;
    let q = &*t.queue;
    let first = q
        .enqueue("parse", &json!(1), Some("document-42"))
        .await
        .unwrap();
    let again = q
        .enqueue("parse", &json!(1), Some("document-42"))
        .await
        .unwrap();
    let other = q
        .enqueue("parse", &json!(2), Some("document-43"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    let mut taken = vec![];
    while let Some(job) = q.take("w", LONG).await.unwrap() {
        q.complete(&job.lease).await.unwrap();
        taken.push(job.id().clone());
    }
    taken.sort();
    let mut expected = vec![first.clone(), other];
    expected.sort();
    assert_eq!(taken, expected);
    // Still a no-op once the job is done.
    assert_eq!(
        q.enqueue("parse", &json!(1), Some("document-42"))
            .await
            .unwrap(),
        first
    );
    assert!(q.take("w", LONG).await.unwrap().is_none());
    assert_eq!(
        q.status(&first).await.unwrap().unwrap().state,
        JobState::Done
    );
    t.close().await;
}

async fn parallel_workers_process_each_job_once(backend: Backend) {
    const WORKERS: usize = 4;
    const JOBS: usize = 50 * WORKERS;
    let t = backend
        .open("parallel_workers_process_each_job_once", LONG)
        .await;
    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        ids.push(t.queue.enqueue("parse", &json!(n), None).await.unwrap());
    }
    let processed: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (queue, processed) = (Arc::clone(&t.queue), Arc::clone(&processed));
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while processed.lock().unwrap().len() < JOBS {
                assert!(Instant::now() < deadline, "workers stalled");
                let Some(job) = queue.take(&format!("w{w}"), LONG).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                queue.complete(&job.lease).await.unwrap();
                processed.lock().unwrap().push((job.id().to_string(), w));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let processed = processed.lock().unwrap().clone();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &processed {
        *times.entry(id).or_default() += 1;
    }
    assert_eq!(processed.len(), JOBS, "each job processed once");
    for id in &ids {
        assert_eq!(times.get(id.as_str()), Some(&1), "job {id}");
        assert_eq!(
            t.queue.status(id).await.unwrap().unwrap().state,
            JobState::Done
        );
    }
    t.close().await;
}

async fn statuses_of_many_jobs_in_one_call(backend: Backend) {
    let t = backend
        .open("statuses_of_many_jobs_in_one_call", LONG)
        .await;
    let q = &*t.queue;
    // More than one chunk of the SQL backends' IN list.
    let mut ids = Vec::new();
    for n in 0..601 {
        ids.push(q.enqueue("parse", &json!(n), None).await.unwrap());
    }
    let job = take_soon(q, "w", LONG).await;
    q.complete(&job.lease).await.unwrap();
    let unknown = echo_queue::JobId::from("f".repeat(32));
    let mut asked = ids.clone();
    asked.push(unknown);
    let statuses = q.statuses(&asked).await.unwrap();
    assert_eq!(statuses.len(), ids.len(), "the unknown id is left out");
    let done: Vec<_> = statuses
        .iter()
        .filter(|s| s.state == JobState::Done)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(done, vec![job.id().clone()]);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| s.state == JobState::Queued)
            .count(),
        600
    );
    t.close().await;
}
