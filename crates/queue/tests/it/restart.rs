//! NATS taken away under running queues (SIGKILL, then started again on
//! the same store): what was accepted before is not lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use echo_crypto::TrustedRoots;
use echo_queue::{JobQueue, JobState, NatsQueue};
use echo_testkit::engines::NatsServer;
use serde_json::json;

use crate::backend;

/// Three jobs accepted before NATS is killed, one of them held by a worker
/// at the time, are each done once after NATS is back, through the same
/// queue handles (their connections come back by themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_before_nats_is_killed_are_done_after_it_is_back() {
    let test = "jobs_accepted_before_nats_is_killed_are_done_after_it_is_back";
    let mut nats = NatsServer::start(test);
    let lease = Duration::from_secs(2);
    let config = backend::config(lease);
    let roots = TrustedRoots::system();
    let docs = NatsQueue::connect(&nats.url(), &roots, config.clone())
        .await
        .unwrap();
    let worker = NatsQueue::connect(&nats.url(), &roots, config)
        .await
        .unwrap();
    let mut accepted = BTreeSet::new();
    for n in 0..3 {
        let key = format!("document-{n}");
        let id = docs
            .enqueue("index_document", &json!({ "n": n }), Some(&key))
            .await
            .unwrap();
        accepted.insert(id);
    }
    let held = worker.take("w", lease).await.unwrap().expect("a job");

    nats.kill();
    nats.start_again();

    let mut done = BTreeSet::new();
    // The held job's lease may have outlived the server: if its completion
    // is refused, the job comes back once its lease ends.
    if worker.complete(&held.lease).await.is_ok() {
        done.insert(held.id().clone());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while done != accepted {
        let mut statuses = Vec::new();
        for id in &accepted {
            statuses.push(docs.status(id).await);
        }
        assert!(
            Instant::now() < deadline,
            "done {done:?} of {accepted:?} 30 s after NATS came back: {statuses:?}"
        );
        match worker.take("w", lease).await {
            Ok(Some(leased)) => {
                worker.complete(&leased.lease).await.unwrap();
                assert!(
                    done.insert(leased.id().clone()),
                    "{} done twice",
                    leased.id()
                );
            }
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for id in &accepted {
        let status = docs.status(id).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
    }
}

/// While NATS is away, an enqueue (an upload's) and a job's status (a
/// document view's) are refused as unavailable within about 2 s: a
/// request waiting on them is answered `503` at once, not after
/// async-nats' 5 s for each JetStream answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_while_nats_is_away_are_refused_within_2_s() {
    let test = "calls_while_nats_is_away_are_refused_within_2_s";
    let mut nats = NatsServer::start(test);
    let config = backend::config(Duration::from_secs(2));
    let queue = NatsQueue::connect(&nats.url(), &TrustedRoots::system(), config)
        .await
        .unwrap();
    let id = queue
        .enqueue("index_document", &json!({ "n": 0 }), Some("before"))
        .await
        .unwrap();

    nats.kill();
    // Long enough for the client to see the connection gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let refused = queue
        .enqueue("index_document", &json!({ "n": 1 }), Some("during"))
        .await
        .expect_err("an enqueue while NATS is away");
    let waited = started.elapsed();
    assert!(refused.is_unavailable(), "{refused}");
    assert!(waited < Duration::from_secs(3), "refused after {waited:?}");
    let started = Instant::now();
    let refused = queue
        .status(&id)
        .await
        .expect_err("a status while NATS is away");
    let waited = started.elapsed();
    assert!(refused.is_unavailable(), "{refused}");
    assert!(waited < Duration::from_secs(3), "refused after {waited:?}");
}
