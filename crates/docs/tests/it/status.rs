//! A document's status is its indexing job's, as the queue reports it.

use std::time::Duration;

use echo_queue::{Failure, JobQueue, Leased};
use serde_json::Value;

use crate::Fixture;

const LEASE: Duration = Duration::from_secs(30);

async fn take(queue: &dyn JobQueue) -> Leased {
    for _ in 0..200 {
        if let Some(job) = queue.take("test-worker", LEASE).await.unwrap() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no job became due");
}

async fn status(f: &Fixture, token: &str, id: &str) -> (String, u64, Value) {
    let (code, view) = f.get(token, &format!("/v1/documents/{id}")).await;
    assert_eq!(code, 200, "{view}");
    (
        view["status"].as_str().unwrap().to_owned(),
        view["progress"].as_u64().unwrap(),
        view["error"].clone(),
    )
}

#[tokio::test]
async fn queue_states_show_as_document_status() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let id = f.upload_text(&alice, "a.txt", "alpha").await;
    assert_eq!(
        status(&f, &alice, &id).await,
        ("queued".into(), 0, Value::Null)
    );

    let job = take(&*f.queue).await;
    assert_eq!(job.payload["document_id"], id.as_str());
    f.queue.set_progress(&job.lease, 50).await.unwrap();
    assert_eq!(
        status(&f, &alice, &id).await,
        ("processing".into(), 50, Value::Null)
    );

    // A transient failure is retried: queued again, no error shown yet.
    f.queue
        .fail(&job.lease, "parser unreachable", Failure::Transient)
        .await
        .unwrap();
    assert_eq!(status(&f, &alice, &id).await.0, "queued");
    assert_eq!(status(&f, &alice, &id).await.2, Value::Null);

    // A permanent failure is final, with the reason.
    let job = take(&*f.queue).await;
    f.queue
        .fail(&job.lease, "corrupt PDF: no trailer", Failure::Permanent)
        .await
        .unwrap();
    let (state, _, error) = status(&f, &alice, &id).await;
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", Some("corrupt PDF: no trailer"))
    );

    let done = f.upload_text(&alice, "b.txt", "bravo").await;
    let job = take(&*f.queue).await;
    assert_eq!(job.payload["document_id"], done.as_str());
    f.queue.complete(&job.lease).await.unwrap();
    assert_eq!(
        status(&f, &alice, &done).await,
        ("done".into(), 100, Value::Null)
    );
    let (_, list) = f.get(&alice, "/v1/documents").await;
    let states: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["done", "failed"]);
}
