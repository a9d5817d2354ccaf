//! `echo_docs::build`, as `echod` calls it.

use std::sync::Arc;

use echo_core::audit::MemoryAuditSink;
use echo_docs::{DocsConfig, DocsError, Limits, SearchBackend};
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
        blob_url: None,
        search: SearchBackend::Tantivy,
        database_roots: echo_crypto::TrustedRoots::load(None).unwrap(),
        limits: Limits::default(),
        shared_limits: None,
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

    // Refused, each saying which setting is wrong: PostgreSQL search
    // without docs on PostgreSQL, an unknown blob store, a database that
    // is not PostgreSQL.
    let refusals = [
        (
            None,
            None,
            SearchBackend::Postgres,
            "ECHO_DOCS_DATABASE_URL",
        ),
        (
            None,
            Some("s3://bucket"),
            SearchBackend::Tantivy,
            "ECHO_DOCS_BLOB_URL",
        ),
        (
            Some("mysql://localhost/docs"),
            None,
            SearchBackend::Tantivy,
            "postgres://",
        ),
    ];
    for (database_url, blob_url, search, named) in refusals {
        config.database_url = database_url.map(str::to_owned);
        config.blob_url = blob_url.map(str::to_owned);
        config.search = search;
        let refused = echo_docs::build(
            &config,
            verifier.clone(),
            queue.clone(),
            None,
            audit.clone(),
        )
        .await
        .map(drop);
        match refused {
            Err(DocsError::Config(message)) => assert!(message.contains(named), "{message}"),
            other => panic!("{named}: {other:?}"),
        }
    }
}
