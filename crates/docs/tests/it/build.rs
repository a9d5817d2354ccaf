//! `echo_docs::build`, as `echod` calls it.

use std::sync::Arc;

use echo_core::audit::MemoryAuditSink;
use echo_docs::{DocsConfig, DocsError, Limits};
use echo_queue::{JobQueue, QueueConfig, SqliteQueue};
use echo_verify::{Verifier, VerifierOptions};

#[tokio::test]
async fn build_lays_out_the_data_directory_and_reopens_it() {
    let dir = echo_testkit::data_dir();
    let queue: Arc<dyn JobQueue> = Arc::new(
        SqliteQueue::open(&dir.path().join("queue.db"), QueueConfig::default())
            .await
            .unwrap(),
    );
    let mut config = DocsConfig {
        audience: "docs".into(),
        data_dir: dir.path().to_path_buf(),
        database_url: None,
        database_roots: echo_crypto::TrustedRoots::load(None).unwrap(),
        limits: Limits::default(),
    };
    let audit = Arc::new(MemoryAuditSink::default());
    let verifier = Arc::new(Verifier::for_issuer(
        "http://127.0.0.1:8081/",
        VerifierOptions::default(),
    ));
    let app = echo_docs::build(
        &config,
        verifier.clone(),
        queue.clone(),
        None,
        audit.clone(),
    )
    .await
    .unwrap();
    for path in ["docs.db", "docs/blobs", "docs/index"] {
        assert!(dir.path().join(path).exists(), "{path}");
    }
    drop(app);
    // A restart opens the same index again.
    let app = echo_docs::build(
        &config,
        verifier.clone(),
        queue.clone(),
        None,
        audit.clone(),
    )
    .await
    .unwrap();
    drop(app);

    config.database_url = Some("mysql://localhost/docs".into());
    let refused = echo_docs::build(&config, verifier.clone(), queue, None, audit).await;
    assert!(matches!(refused, Err(DocsError::Config(_))));
}
