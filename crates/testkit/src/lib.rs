//! Test helpers shared by every crate's black-box tests: a throwaway
//! PostgreSQL database per test, a throwaway data directory, and the
//! documents ([`files`]) tests build byte by byte, and the bad tokens every
//! service must refuse alike ([`refusals`]), the import graph of a
//! crate's modules ([`modules`]) the architecture tests check, a strict
//! reader of `/metrics` ([`prometheus`]), and a test certificate authority
//! with the PostgreSQL, Redis and NATS servers tests start with TLS on
//! ([`tls`]), the PostgreSQL cluster and NATS server a test starts of its
//! own to take away and bring back ([`engines`]), network namespaces on a
//! bridge of the test's own for processes that should talk over real
//! interfaces ([`netns`]), a real SMTP server that keeps what it receives
//! ([`smtp`]), and an authenticator app's TOTP codes ([`totp`]).
//!
//! Tests that need PostgreSQL, Redis or NATS use the machine's services at
//! their standard local addresses, or the ones `ECHO_TEST_POSTGRES_URL`,
//! `ECHO_TEST_REDIS_URL` and `ECHO_TEST_NATS_URL` name. They never skip:
//! a service that does not answer fails the test, so a test reports `ok`
//! only after it ran. Each PostgreSQL test gets a database of its own,
//! created for it and dropped after, so tests run in parallel and leave
//! nothing behind.

pub mod engines;
pub mod files;
pub mod modules;
pub mod netns;
pub mod prometheus;
mod redis;
pub mod refusals;
pub mod smtp;
pub mod tls;
pub mod totp;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

pub use redis::RedisKeys;
pub use tempfile::TempDir;

/// The text between `start` and the next `end` in `html` (a page a test
/// reads a value from); panics, showing the page, when either is missing.
pub fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {html}"))
        + start.len();
    let len = html[from..].find(end).expect("end marker");
    &html[from..from + len]
}

/// An admin connection to PostgreSQL (`CREATE DATABASE` allowed).
pub const POSTGRES_URL_VAR: &str = "ECHO_TEST_POSTGRES_URL";
/// Redis, used under a key prefix of each test's own.
pub const REDIS_URL_VAR: &str = "ECHO_TEST_REDIS_URL";
/// NATS with JetStream, used with streams of each test's own.
pub const NATS_URL_VAR: &str = "ECHO_TEST_NATS_URL";

/// The admin connection PostgreSQL tests use: [`POSTGRES_URL_VAR`], else
/// the machine's own server.
pub fn postgres_admin_url() -> String {
    service_url(POSTGRES_URL_VAR, "postgres://postgres@127.0.0.1:5432/test")
}

/// The Redis Redis tests use: [`REDIS_URL_VAR`], else the machine's own.
pub fn redis_url() -> String {
    service_url(REDIS_URL_VAR, "redis://127.0.0.1:6379")
}

/// The NATS NATS tests use: [`NATS_URL_VAR`], else the machine's own.
pub fn nats_url() -> String {
    service_url(NATS_URL_VAR, "nats://127.0.0.1:4222")
}

fn service_url(var: &str, standard: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| standard.to_owned())
}

/// A PostgreSQL database that exists for one test: dropped by
/// [`drop_db`](Self::drop_db), or when the value is dropped (a test that
/// failed before it got there leaves no `echo_test_*` database behind).
#[derive(Debug)]
pub struct PgTestDb {
    admin_url: String,
    name: String,
    /// Connection URL of the new database.
    pub url: String,
    dropped: bool,
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl PgTestDb {
    /// Creates a fresh database for `test`.
    ///
    /// # Panics
    /// When PostgreSQL does not answer at [`postgres_admin_url`]: the test
    /// fails rather than pass without having run.
    pub async fn create(test: &str) -> Self {
        let admin_url = postgres_admin_url();
        let name = format!("echo_test_{}", unique_suffix());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("{test}: PostgreSQL at {admin_url} is not reachable ({e}); start it or set {POSTGRES_URL_VAR}")
            });
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{POSTGRES_URL_VAR} must end with /<database>"),
        };
        Self {
            admin_url,
            name,
            url,
            dropped: false,
        }
    }

    /// Makes the database refuse connections (and closes those open to it),
    /// or accept them again: a database that stopped answering, for
    /// readiness tests.
    pub async fn set_reachable(&self, reachable: bool) {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable: {e}", self.admin_url));
        admin
            .execute(AssertSqlSafe(format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {reachable}",
                self.name
            )))
            .await
            .unwrap_or_else(|e| panic!("cannot change database {}: {e}", self.name));
        if !reachable {
            admin
                .execute(AssertSqlSafe(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                )))
                .await
                .unwrap_or_else(|e| panic!("cannot close connections to {}: {e}", self.name));
        }
    }

    /// Drops the database (closing any connection still open to it).
    pub async fn drop_db(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for PgTestDb {
    /// A test that did not get to [`drop_db`](Self::drop_db) (it failed, or
    /// forgot): the database is dropped from a thread of its own, as this
    /// may run inside an async test's runtime, which must not be blocked on.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = dropping.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
    }
}

/// A temporary data directory, removed when dropped.
pub fn data_dir() -> TempDir {
    #[allow(clippy::expect_used)]
    tempfile::Builder::new()
        .prefix("echo-test-")
        .tempdir()
        .expect("temporary directory")
}

/// A deterministic pseudo-random generator (xorshift64), so generated test
/// and benchmark inputs are the same on every run and failures reproduce.
/// The seed must not be 0.
#[derive(Debug, Clone)]
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}
