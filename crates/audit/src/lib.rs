//! Echo's audit log.
//!
//! - [`event`]: the event record and its canonical bytes.
//! - [`chain`]: the hash chain, `hash = SHA-256(prev_hash ‖ canonical event)`,
//!   and the verifier that names the first broken entry.
//! - [`checkpoint`]: signed checkpoints in the C2SP signed-note format.
//! - [`redact`]: secret values removed before storage.
//! - [`store`]: the chain in SQLite or PostgreSQL.
//! - [`verify`]: the stored chain verified against signed checkpoints.
//! - [`service`]: who may write and read; ingest, query, checkpoints and
//!   retention.
//! - [`http`]: the service's endpoints.

pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod http;
pub mod redact;
pub mod service;
pub mod store;
pub mod verify;
