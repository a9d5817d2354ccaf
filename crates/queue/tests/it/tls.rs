//! The NATS backend against a `nats-server --tls` started by the test with
//! a certificate from a test CA.

use std::time::Duration;

use echo_crypto::TrustedRoots;
use echo_queue::{JobState, QueueConfig, open_queue};
use echo_testkit::tls::{TestCa, TlsNats};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn config() -> QueueConfig {
    QueueConfig {
        nats_lease: LEASE,
        ..QueueConfig::default()
    }
}

#[tokio::test]
async fn jobs_go_through_a_nats_that_requires_tls() {
    let ca = TestCa::new();
    let nats = TlsNats::start("jobs_go_through_a_nats_that_requires_tls", &ca);
    let roots = TrustedRoots::load(Some(&ca.ca_file)).unwrap();
    let dir = echo_testkit::data_dir();
    // tls:// asks for TLS; a nats:// URL gets it too when the server
    // requires it, with the same trust.
    let plain_url = format!("nats://127.0.0.1:{}", nats.port);
    for url in [nats.url(), plain_url] {
        let queue = open_queue(Some(&url), &roots, dir.path(), config())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let id = queue
            .enqueue("parse", &json!({"document": 7}), None)
            .await
            .unwrap();
        let job = queue.take("w1", LEASE).await.unwrap().expect("a job");
        assert_eq!((job.id(), &job.payload), (&id, &json!({"document": 7})));
        queue.complete(&job.lease).await.unwrap();
        let status = queue.status(&id).await.unwrap().expect("status");
        assert_eq!(status.state, JobState::Done, "{url}");
    }
}

#[tokio::test]
async fn a_nats_whose_certificate_chains_to_an_unknown_ca_is_refused() {
    let ca = TestCa::new();
    let nats = TlsNats::start(
        "a_nats_whose_certificate_chains_to_an_unknown_ca_is_refused",
        &ca,
    );
    let other_ca = TestCa::new();
    let dir = echo_testkit::data_dir();
    for roots in [
        TrustedRoots::load(Some(&other_ca.ca_file)).unwrap(),
        TrustedRoots::system(),
    ] {
        let error = open_queue(Some(&nats.url()), &roots, dir.path(), config())
            .await
            .err()
            .expect("an unknown CA is not trusted")
            .to_string();
        assert!(error.contains("cannot connect"), "{error}");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }
}
