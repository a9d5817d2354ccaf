//! Retention: pruning the front of the chain, in small batches while
//! writers keep appending, anchored by a signed checkpoint so that what
//! remains still verifies; on SQLite and PostgreSQL.

use std::sync::Arc;

use echo_audit::checkpoint::NoteSigner;
use echo_audit::service::AuditService;
use echo_audit::store::{AuditStore, EventQuery, search_words};
use echo_audit::verify::verify_chain;
use echo_core::SystemClock;
use echo_testkit::PgTestDb;

use crate::stored_event;

const EVENTS: usize = 3_000;
/// Events 0..2,500 are older than this.
const CUTOFF: i64 = 1_000 + 2_500;

async fn count(store: &Arc<dyn AuditStore>, query: EventQuery) -> usize {
    store
        .query(&EventQuery {
            limit: 1000,
            ..query
        })
        .await
        .unwrap()
        .len()
}

async fn retention_suite(store: Arc<dyn AuditStore>) {
    let service = AuditService::new(
        store.clone(),
        NoteSigner::generate("test/echo-audit").unwrap(),
        Arc::new(SystemClock),
    );
    let events: Vec<_> = (0..EVENTS)
        .map(|n| stored_event(n, 1_000 + n as i64))
        .collect();
    for batch in events.chunks(500) {
        store.append(batch).await.unwrap();
    }
    service.checkpoint().await.unwrap();

    // A writer keeps appending (new events, new times) while pruning runs.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..20 {
                let batch: Vec<_> = (0..50)
                    .map(|i| stored_event(10_000 + b * 50 + i, 1_000_000))
                    .collect();
                store.append(&batch).await.unwrap();
            }
        })
    };
    assert_eq!(service.prune(CUTOFF).await.unwrap(), 2_500);
    writer.await.unwrap();

    let start = store.retained_start().await.unwrap();
    assert_eq!(start.size, 2_500);
    let verified = verify_chain(store.clone(), service.signed_anchors().await.unwrap())
        .await
        .unwrap();
    assert_eq!(verified.start, start);
    // 500 old enough to keep, 1,000 from the writer, and the prune's own record.
    assert_eq!(verified.events(), 500 + 1_000 + 1);

    // Gone from queries and from the text index; the rest still found.
    let text = |t: &str| EventQuery {
        words: search_words(t),
        ..Default::default()
    };
    assert_eq!(count(&store, text("ev-7")).await, 0);
    assert_eq!(count(&store, text("ev-2999")).await, 1);
    // A word ending in `*` is a prefix: ev-2900 … ev-2999 remain.
    assert_eq!(count(&store, text("ev-29*")).await, 100);
    assert_eq!(count(&store, text("ev-29")).await, 0);
    let pruned = EventQuery {
        action: Some("audit.retention.pruned".into()),
        ..Default::default()
    };
    assert_eq!(count(&store, pruned).await, 1);

    // Nothing more is old enough: a second run deletes nothing.
    assert_eq!(service.prune(CUTOFF).await.unwrap(), 0);
    service.checkpoint().await.unwrap();
    let again = verify_chain(store.clone(), service.signed_anchors().await.unwrap())
        .await
        .unwrap();
    assert_eq!(again.events(), verified.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_prunes_old_events_and_the_rest_verifies() {
    let dir = echo_testkit::data_dir();
    retention_suite(
        echo_audit::store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prunes_old_events_and_the_rest_verifies() {
    let db = PgTestDb::create("audit postgres_prunes_old_events").await;
    let dir = echo_testkit::data_dir();
    retention_suite(
        echo_audit::store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap(),
    )
    .await;
    db.drop_db().await;
}
