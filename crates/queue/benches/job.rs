//! The queue's overhead per job: one job's whole life as the worker lives
//! it (enqueue, take, three progress reports, complete), one job at a time
//! on one core, on SQLite, PostgreSQL and NATS JetStream (the machine's, or
//! `ECHO_TEST_POSTGRES_URL` and `ECHO_TEST_NATS_URL`).
//!
//! cargo bench -p echo-queue --bench job

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use echo_queue::{JobQueue, NatsQueue, PgQueue, QueueConfig, SqliteQueue};
use echo_testkit::PgTestDb;
use serde_json::json;
use tokio::runtime::Runtime;

const LEASE: Duration = Duration::from_secs(30);

static EMPTY_TAKES: AtomicU64 = AtomicU64::new(0);

/// One job from enqueue to done.
async fn one_job(queue: &dyn JobQueue) {
    let payload = json!({"document_id": "0123456789abcdef0123456789abcdef"});
    queue
        .enqueue("index_document", &payload, None)
        .await
        .expect("enqueue");
    // A worker polls; on NATS a fetch right after a publish can come back
    // empty, and the poll again is part of the cost.
    let job = loop {
        if let Some(job) = queue.take("bench", LEASE).await.expect("take") {
            break job;
        }
        EMPTY_TAKES.fetch_add(1, Ordering::Relaxed);
    };
    for percent in [10, 50, 90] {
        queue
            .set_progress(&job.lease, percent)
            .await
            .expect("progress");
    }
    queue.complete(&job.lease).await.expect("complete");
}

fn bench_queue(c: &mut Criterion, runtime: &Runtime, name: &str, queue: &dyn JobQueue) {
    let mut group = c.benchmark_group("job_lifecycle");
    group.sample_size(20);
    EMPTY_TAKES.store(0, Ordering::Relaxed);
    group.bench_function(name, |b| b.iter(|| runtime.block_on(one_job(queue))));
    group.finish();
    println!(
        "{name}: {} empty takes",
        EMPTY_TAKES.load(Ordering::Relaxed)
    );
}

fn config() -> QueueConfig {
    QueueConfig {
        nats_lease: LEASE,
        nats_name: format!("echo_bench_{}", std::process::id()),
        ..QueueConfig::default()
    }
}

fn jobs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let dir = echo_testkit::data_dir();
    let sqlite: Arc<dyn JobQueue> = Arc::new(
        runtime
            .block_on(SqliteQueue::open(&dir.path().join("queue.db"), config()))
            .expect("SQLite queue"),
    );
    bench_queue(c, &runtime, "sqlite", &*sqlite);

    let db = runtime.block_on(PgTestDb::create("queue_bench"));
    let pg = runtime
        .block_on(PgQueue::connect(
            &db.url,
            &echo_crypto::TrustedRoots::system(),
            config(),
        ))
        .expect("PostgreSQL queue");
    bench_queue(c, &runtime, "postgres", &pg);
    drop(pg);
    runtime.block_on(db.drop_db());

    let nats = runtime
        .block_on(NatsQueue::connect(
            &echo_testkit::nats_url(),
            &echo_crypto::TrustedRoots::system(),
            config(),
        ))
        .expect("NATS queue");
    bench_queue(c, &runtime, "nats", &nats);
    runtime
        .block_on(nats.delete())
        .expect("delete the bench streams");
}

criterion_group!(benches, jobs);
criterion_main!(benches);
