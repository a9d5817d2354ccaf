//! Test helpers shared by every crate's black-box tests: a throwaway
//! PostgreSQL database per test, a throwaway data directory, and the
//! documents ([`files`]) tests build byte by byte, and the bad tokens every
//! service must refuse alike ([`refusals`]), and the import graph of a
//! crate's modules ([`modules`]) the architecture tests check, and a test
//! certificate authority with the PostgreSQL, Redis and NATS servers tests
//! start with TLS on ([`tls`]).
//!
//! PostgreSQL tests read `ECHO_TEST_POSTGRES_URL` (an admin connection,
//! `.ci/run` sets `postgres://postgres@127.0.0.1:5432/test`). Each test gets
//! a database of its own, created for it and dropped after, so tests run in
//! parallel and leave nothing behind. Without the variable the test says it
//! was skipped, except under `CI=true`, where a missing database fails.

pub mod files;
pub mod modules;
pub mod refusals;
pub mod tls;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

pub use tempfile::TempDir;

pub const POSTGRES_URL_VAR: &str = "ECHO_TEST_POSTGRES_URL";

/// A PostgreSQL database that exists for one test.
#[derive(Debug)]
pub struct PgTestDb {
    admin_url: String,
    name: String,
    /// Connection URL of the new database.
    pub url: String,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
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
    /// Creates a fresh database, or returns `None` (after saying so) when no
    /// PostgreSQL is configured outside CI.
    ///
    /// # Panics
    /// Under `CI=true` without a reachable PostgreSQL: a CI run must never
    /// skip the PostgreSQL half of the suite silently.
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
            assert!(
                !in_ci(),
                "{POSTGRES_URL_VAR} is not set under CI=true: PostgreSQL tests cannot be skipped in CI"
            );
            eprintln!("SKIPPED {test}: PostgreSQL half skipped, set {POSTGRES_URL_VAR} to run it");
            return None;
        };
        let name = format!("echo_test_{}", unique_suffix());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}={admin_url} is not reachable: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{POSTGRES_URL_VAR} must end with /<database>"),
        };
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database (closing any connection still open to it).
    pub async fn drop_db(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
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
