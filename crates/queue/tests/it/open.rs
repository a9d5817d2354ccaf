//! `open_queue` chooses the backend from the URL.

use echo_queue::{QueueConfig, open_queue};
use serde_json::json;

#[tokio::test]
async fn without_a_url_the_queue_is_sqlite_in_the_data_dir() {
    let dir = echo_testkit::data_dir();
    let queue = open_queue(
        None,
        &echo_crypto::TrustedRoots::system(),
        dir.path(),
        QueueConfig::default(),
    )
    .await
    .unwrap();
    let id = queue.enqueue("parse", &json!(1), None).await.unwrap();
    assert!(dir.path().join("queue.db").exists());
    assert!(queue.status(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused() {
    let dir = echo_testkit::data_dir();
    let opened = open_queue(
        Some("redis://127.0.0.1"),
        &echo_crypto::TrustedRoots::system(),
        dir.path(),
        QueueConfig::default(),
    )
    .await;
    assert!(opened.is_err());
}
