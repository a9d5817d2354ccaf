//! The queue's black-box suite: every test runs on SQLite, on PostgreSQL
//! (`ECHO_TEST_POSTGRES_URL`) and on NATS JetStream (`ECHO_TEST_NATS_URL`).
//! Outside CI a backend without its variable is skipped; under `CI=true`
//! that is a failure.

mod backend;
mod open;
mod suite;
mod tls;
