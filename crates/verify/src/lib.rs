//! The token verifier every Echo service uses.
//!
//! A [`Verifier`] checks JWTs issued by one issuer, against that issuer's
//! JWKS, locally: no call to identity per request. The data flow:
//!
//! 1. Hash the token and look it up in a bounded cache of tokens already
//!    verified. A hit still has its expiry, audience and type checked, and
//!    its key must still be published, so a revoked key ends its tokens.
//! 2. On a miss, split the compact JWS, find the key by `kid`, and verify
//!    with the *key's* algorithm (the header may only agree with it).
//! 3. Check `iss`, `aud`, `exp`/`nbf` (with a small leeway) and `typ`.
//!
//! Keys come from a [`JwksSource`]: [`HttpJwks`] for services, the issuer's
//! own key ring inside identity. They are fetched once, refetched when they
//! grow old (a slow issuer delays a caller by at most `stale_wait`, then
//! the cached keys verify while the fetch goes on), and refreshed early (at most once per
//! `refresh_interval`) when a token names an unknown `kid`, so a new key is
//! picked up at once while a flood of made-up `kid`s cannot turn into a
//! flood of JWKS fetches. Failed fetches back off (`keys.rs`).

mod claims;
mod keys;
mod source;
mod verifier;

pub use claims::{Audience, Claims};
pub use keys::MAX_BACKOFF;
pub use source::{HttpJwks, JwksSource, StaticJwks};
pub use verifier::{Expectations, Verifier, VerifierOptions};

/// Why a token was refused. All but [`VerifyError::KeysUnavailable`] are
/// the presenter's fault (401); that one is ours (503): the key may well be
/// valid, we just cannot fetch it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("bad signature or algorithm")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// Not the kind of token asked for (an ID token as an access token).
    #[error("wrong kind of token")]
    WrongType,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

impl VerifyError {
    /// A short stable code for logs, audit events and `/verify` answers.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::KeysUnavailable(_) => "keys_unavailable",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::WrongType => "wrong_kind",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
        }
    }
}
