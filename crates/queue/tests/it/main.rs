//! The queue's black-box suite: every test runs on SQLite, on PostgreSQL
//! and on NATS JetStream (the machine's, or `ECHO_TEST_POSTGRES_URL` and
//! `ECHO_TEST_NATS_URL`).

mod backend;
mod open;
mod restart;
mod suite;
mod tls;
