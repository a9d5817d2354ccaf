//! Opening a throwaway queue on each backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use echo_queue::{JobQueue, NatsQueue, PgQueue, QueueConfig, SqliteQueue};
use echo_testkit::{PgTestDb, TempDir};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
    Nats,
}

/// A queue and what to remove after the test.
pub struct TestQueue {
    pub queue: Arc<dyn JobQueue>,
    pub config: QueueConfig,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(TempDir),
    Pg(PgTestDb),
    Nats(Box<NatsQueue>),
}

/// The retry policy of the suite: three attempts, short backoffs.
pub fn config(lease: Duration) -> QueueConfig {
    QueueConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(200),
        nats_lease: lease,
        nats_name: nats_name(),
    }
}

/// A stream name of this test's own.
fn nats_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "echo_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl Backend {
    /// A fresh, empty queue whose NATS lease is `lease`, or `None` when the
    /// backend is not configured outside CI.
    pub async fn open(self, test: &str, lease: Duration) -> TestQueue {
        let config = config(lease);
        let (queue, cleanup): (Arc<dyn JobQueue>, _) = match self {
            Backend::Sqlite => {
                let dir = echo_testkit::data_dir();
                let queue = SqliteQueue::open(&dir.path().join("queue.db"), config.clone())
                    .await
                    .expect("open SQLite queue");
                (Arc::new(queue), Cleanup::Dir(dir))
            }
            Backend::Postgres => {
                let db = PgTestDb::create(test).await;
                let queue = PgQueue::connect(
                    &db.url,
                    &echo_crypto::TrustedRoots::system(),
                    config.clone(),
                )
                .await
                .expect("open PostgreSQL queue");
                (Arc::new(queue), Cleanup::Pg(db))
            }
            Backend::Nats => {
                let url = echo_testkit::nats_url();
                let queue =
                    NatsQueue::connect(&url, &echo_crypto::TrustedRoots::system(), config.clone())
                        .await
                        .unwrap_or_else(|e| {
                            panic!(
                                "{test}: NATS at {url} is not usable ({e}); start it or set {}",
                                echo_testkit::NATS_URL_VAR
                            )
                        });
                (Arc::new(queue.clone()), Cleanup::Nats(Box::new(queue)))
            }
        };
        TestQueue {
            queue,
            config,
            cleanup,
        }
    }
}

impl TestQueue {
    /// Removes the database, directory or streams.
    pub async fn close(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Pg(db) => db.drop_db().await,
            Cleanup::Nats(queue) => queue.delete().await.expect("delete NATS streams"),
        }
    }
}

/// Declares each named test of `suite` once per backend, in modules
/// `sqlite`, `postgres` and `nats`.
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        per_backend!(@module sqlite, Sqlite, $($test),*);
        per_backend!(@module postgres, Postgres, $($test),*);
        per_backend!(@module nats, Nats, $($test),*);
    };
    (@module $module:ident, $backend:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test($crate::backend::Backend::$backend).await;
                }
            )*
        }
    };
}

pub(crate) use per_backend;
