//! TLS for Echo, on rustls with the aws-lc-rs provider (the one crypto
//! provider of the workspace), in one crate below every service so that
//! listeners and callers share one way of reading certificates.
//!
//! - [`CertFiles`] (`files.rs`): a certificate chain and its key in PEM
//!   files, held as a rustls `CertifiedKey` and reloaded when the files
//!   change ([`CertFiles::reload_if_changed`]; a bad replacement keeps the
//!   old pair). It answers as a listener's certificate and as a caller's
//!   client certificate.
//! - [`ServerTls`] (`server.rs`): a listener's rustls configuration: TLS 1.2
//!   and 1.3 only, ALPN `h2` then `http/1.1`, and with a client CA, mutual
//!   TLS (a client certificate signed by that CA is required).
//! - [`ClientTls`] (`client.rs`): whom a service trusts when it calls
//!   another (the system's roots plus `ECHO_CA_FILE`) and the certificate
//!   it presents; [`ClientTls::http_client`] is the one constructor of the
//!   HTTP clients services call each other with.
//! - [`DevCa`] (`dev.rs`): a local certificate authority and certificates
//!   for 127.0.0.1, ::1 and localhost (`echod up --dev-tls`, and tests).

mod client;
mod dev;
mod files;
mod server;

use std::path::PathBuf;
use std::sync::Arc;

pub use client::ClientTls;
pub use dev::{DEV_NAMES, DevCa, Issued};
pub use files::CertFiles;
pub use rustls;
pub use server::ServerTls;

/// What can go wrong reading certificates and keys, or making them.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM {what} in it")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto provider of every TLS configuration: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 and 1.2; never older.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
