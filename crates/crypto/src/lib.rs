//! Echo's cryptography, on one provider (aws-lc-rs).
//!
//! - [`jws`]: signing keys ([`SigningKey`]) and verifying keys
//!   ([`VerifyingKey`]) for compact JWS. The algorithm belongs to the key,
//!   never to a token header: a verifier asks the key, not the token.
//! - [`jwk`]: the public JSON Web Key form of a verifying key (RFC 7517).
//! - [`password`]: argon2id hashing on a bounded blocking pool.
//! - [`secret`]: random tokens, client secrets and their hashes,
//!   constant-time comparison.
//! - [`seal`]: the master key that encrypts private keys at rest.
//! - [`trust`]: the certificate authorities trusted when connecting out
//!   over TLS ([`TrustedRoots`]).

pub mod jwk;
pub mod jws;
pub mod password;
pub mod seal;
pub mod secret;
pub mod trust;

pub use jwk::{Jwk, JwkSet};
pub use jws::{Algorithm, SigningKey, VerifyingKey};
pub use trust::TrustedRoots;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key generation failed")]
    KeyGeneration,
    #[error("key rejected: {0}")]
    KeyRejected(String),
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("malformed token")]
    MalformedToken,
    #[error("bad signature")]
    BadSignature,
    #[error("signing failed")]
    Signing,
    #[error("sealed data could not be opened (wrong master key or corrupted)")]
    Unseal,
    #[error("master key must be 32 bytes, base64url or hex encoded")]
    MasterKeyFormat,
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        reason: String,
    },
}

pub type Result<T, E = CryptoError> = std::result::Result<T, E>;
