//! The stored chain verified as `echod audit verify` does: the fast pass
//! over two parts in parallel, and the precise pass it falls back to when
//! something is wrong, which names the event.

use std::sync::Arc;

use echo_audit::chain::{Anchor, BreakKind, GENESIS};
use echo_audit::checkpoint::NoteSigner;
use echo_audit::service::{AuditError, AuditService};
use echo_audit::store::{AuditStore, SqliteAuditStore};
use echo_audit::verify::{VerifyError, verify_chain};
use echo_core::SystemClock;
use sqlx::SqlitePool;

use crate::stored_event;

/// Rows enough for the fast pass to split the chain in two parts.
const ROWS: usize = 25_000;

struct Chain {
    store: Arc<dyn AuditStore>,
    /// A second connection, as an attacker with database access has.
    db: SqlitePool,
    head: Anchor,
    _dir: echo_testkit::TempDir,
}

async fn chain(rows: usize) -> Chain {
    let dir = echo_testkit::data_dir();
    let path = dir.path().join("audit.db");
    let store: Arc<dyn AuditStore> = Arc::new(SqliteAuditStore::open(&path).await.unwrap());
    let events: Vec<_> = (0..rows)
        .map(|n| stored_event(n, 1_000 + n as i64))
        .collect();
    for batch in events.chunks(1000) {
        store.append(batch).await.unwrap();
    }
    let db = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    Chain {
        store,
        db,
        head,
        _dir: dir,
    }
}

impl Chain {
    async fn tamper(&self, sql: &'static str) {
        sqlx::query(sql).execute(&self.db).await.unwrap();
    }

    async fn broken(&self, anchors: Vec<Anchor>) -> (BreakKind, String) {
        match verify_chain(self.store.clone(), anchors).await {
            Err(VerifyError::Broken(b)) => (b.kind, b.event_id),
            other => panic!("expected a break, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_chain_verifies_in_parallel_parts_to_its_head() {
    let c = chain(ROWS).await;
    let verified = verify_chain(c.store.clone(), vec![c.head]).await.unwrap();
    assert_eq!(verified.events(), ROWS as i64);
    assert_eq!(verified.summary.count, c.head.size);
    assert_eq!(verified.summary.head, c.head.head);
    assert_eq!(
        verified.start,
        Anchor {
            size: 0,
            head: GENESIS
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_chain_verifies() {
    let c = chain(0).await;
    assert_eq!(
        verify_chain(c.store.clone(), vec![])
            .await
            .unwrap()
            .events(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_in_the_second_part_is_named() {
    let c = chain(ROWS).await;
    c.tamper("UPDATE audit_events SET actor = 'mallory' WHERE seq = 20000")
        .await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Changed, "ev-19999".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_removed_at_the_part_boundary_is_named() {
    let c = chain(ROWS).await;
    // The second part starts from the stored hash of row 12,500.
    c.tamper("DELETE FROM audit_events WHERE seq = 12500").await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Removed, "ev-12500".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_context_is_named() {
    let c = chain(ROWS).await;
    c.tamper(r#"UPDATE audit_events SET context = '{"n":1}' WHERE seq = 3"#)
        .await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Changed, "ev-2".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_named_against_the_checkpoint() {
    let c = chain(ROWS).await;
    c.tamper("DELETE FROM audit_events WHERE seq > 24990").await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Truncated, "ev-24989".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_forged_past_the_head_is_named() {
    let c = chain(10).await;
    c.tamper(
        "INSERT INTO audit_events SELECT seq + 1, 'forged', time, service, level, action, actor, \
         outcome, ip, user_agent, trace_id, message, context, hash FROM audit_events WHERE seq = 10",
    )
    .await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Changed, "forged".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_cut_without_a_signed_anchor_is_refused() {
    let c = chain(100).await;
    let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = 50")
        .fetch_one(&c.db)
        .await
        .unwrap();
    // The attacker moves the retained start as pruning would, but has no
    // key to sign the checkpoint that must anchor it.
    sqlx::query("UPDATE audit_retained SET seq = 50, hash = $1")
        .bind(hash)
        .execute(&c.db)
        .await
        .unwrap();
    c.tamper("DELETE FROM audit_events WHERE seq <= 50").await;
    assert_eq!(
        c.broken(vec![c.head]).await,
        (BreakKind::Removed, String::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_refuses_to_launder_a_tampered_chain() {
    let c = chain(100).await;
    let signer = echo_audit::checkpoint::NoteSigner::generate("test/echo-audit").unwrap();
    let service = echo_audit::service::AuditService::new(
        c.store.clone(),
        signer,
        Arc::new(echo_core::SystemClock),
    );
    c.tamper("UPDATE audit_events SET message = 'nothing happened' WHERE seq = 10")
        .await;
    let refused = service.prune(1_050).await.unwrap_err();
    assert!(refused.to_string().contains("does not verify"), "{refused}");
    assert_eq!(c.store.retained_start().await.unwrap().size, 0);
    assert_eq!(c.store.rows(0, 1000).await.unwrap().len(), 100);
}

/// Issue 14 §12: the service signed whatever head it found, so a chain cut
/// below a checkpoint, its checkpoints deleted, got a fresh signature. It
/// now signs only a head that extends the newest stored checkpoint and the
/// last head it signed itself (which deleting checkpoints cannot remove).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_never_signs_a_head_that_does_not_extend_what_it_signed() {
    let c = chain(10).await;
    let signer = || NoteSigner::from_seed("test/echo-audit", &[7; 32]).unwrap();
    let service = AuditService::new(c.store.clone(), signer(), Arc::new(SystemClock));
    service.checkpoint().await.unwrap();
    c.store.append(&[stored_event(10, 2_000)]).await.unwrap();
    service.checkpoint().await.unwrap();

    c.tamper("DELETE FROM audit_events WHERE seq > 5").await;
    c.tamper("DELETE FROM audit_checkpoints WHERE size > 5")
        .await;
    c.tamper("UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)")
        .await;
    c.store.append(&[stored_event(100, 3_000)]).await.unwrap();
    assert!(matches!(
        service.checkpoint().await,
        Err(AuditError::Unextended { from: 11, to: 6 })
    ));

    // A service started afresh still has the stored checkpoint: one edited
    // under it is refused too.
    let c = chain(10).await;
    AuditService::new(c.store.clone(), signer(), Arc::new(SystemClock))
        .checkpoint()
        .await
        .unwrap();
    c.tamper("UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 10")
        .await;
    c.store.append(&[stored_event(10, 2_000)]).await.unwrap();
    let fresh = AuditService::new(c.store.clone(), signer(), Arc::new(SystemClock));
    assert!(matches!(
        fresh.checkpoint().await,
        Err(AuditError::Unextended { from: 10, to: 11 })
    ));
}
