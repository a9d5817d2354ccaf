//! Audit throughput on one core: chain hashing, chain verification, and
//! durable ingest into SQLite and PostgreSQL (the machine's, or `ECHO_TEST_POSTGRES_URL`)
//! with batches of 1, 100 and 1,000 events.
//!
//! cargo bench -p echo-audit --bench audit

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use echo_audit::chain::{Anchor, ChainVerifier, ChainedEvent, GENESIS, link};
use echo_audit::event::{Event, Level};
use serde_json::json;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn event() -> Event {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Event {
        id: format!("ev-{n}"),
        time: 1_800_000_000_000 + n as i64,
        service: "identity".into(),
        level: Level::Info,
        action: "token.issued".into(),
        actor: Some("svc-a".into()),
        outcome: Some("success".into()),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("bench/1.0".into()),
        trace_id: None,
        message: "token.issued".into(),
        context: json!({"client_id": "svc-a", "grant": "client_credentials", "audience": ["audit"], "kid": "eddsa-abc"}),
    }
}

fn chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(1));
    let e = event();
    group.bench_function("link", |b| b.iter(|| link(&GENESIS, &e)));
    let mut rows = Vec::with_capacity(10_000);
    let mut prev = GENESIS;
    for seq in 1..=10_000 {
        let event = event();
        prev = link(&prev, &event);
        rows.push(ChainedEvent {
            seq,
            event,
            hash: prev,
        });
    }
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("verify_10k_rows", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| {
                let mut verifier = ChainVerifier::new(
                    Anchor {
                        size: 0,
                        head: GENESIS,
                    },
                    Vec::new(),
                );
                for row in rows {
                    verifier.push(row).expect("intact");
                }
                verifier.finish().expect("intact")
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let mut stores = vec![(
        "sqlite",
        rt.block_on(echo_audit::store::open(
            None,
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        ))
        .expect("sqlite"),
    )];
    {
        let admin = echo_testkit::postgres_admin_url();
        let url = rt.block_on(async {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("postgres");
            let _ = conn
                .execute("DROP DATABASE IF EXISTS echo_bench_audit WITH (FORCE)")
                .await;
            conn.execute("CREATE DATABASE echo_bench_audit")
                .await
                .expect("create");
            format!(
                "{}/echo_bench_audit",
                admin.rsplit_once('/').expect("url").0
            )
        });
        stores.push((
            "postgres",
            rt.block_on(echo_audit::store::open(
                Some(&url),
                &echo_crypto::TrustedRoots::system(),
                dir.path(),
            ))
            .expect("pg"),
        ));
    }
    let mut group = c.benchmark_group("ingest");
    for (backend, store) in &stores {
        for batch in [1usize, 100, 1000] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("{backend}/batch_{batch}"), |b| {
                b.iter_batched(
                    || (0..batch).map(|_| event()).collect::<Vec<_>>(),
                    |events| rt.block_on(store.append(&events)).expect("append"),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, chain, ingest);
criterion_main!(benches);
