//! Random tokens, client secrets and constant-time comparison.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shortest client secret accepted from an operator. Generated secrets have
/// 256 bits of entropy; a human-chosen one must at least be long.
pub const MIN_CLIENT_SECRET_LEN: usize = 32;

/// `n` random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom only fails if the OS has no randomness, which we cannot
    // recover from: carrying on with zeros would be a silent disaster.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut out)
        .expect("operating system randomness unavailable");
    out
}

/// A random URL-safe token with 256 bits of entropy (43 characters).
pub fn random_token() -> String {
    b64url(&random_bytes::<32>())
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// SHA-256 of `data`, base64url: how opaque high-entropy tokens (codes,
/// session ids, client secrets) are stored, so a database dump reveals none.
pub fn token_hash(data: &str) -> String {
    b64url(&sha256(data.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// A new client secret: 256 random bits.
pub fn generate_client_secret() -> String {
    random_token()
}

/// Stored form of a client secret. Secrets are long and random (see
/// [`MIN_CLIENT_SECRET_LEN`]), so a fast hash suffices and keeps the token
/// endpoint fast; slow password hashing is for human-chosen passwords.
pub fn hash_client_secret(secret: &str) -> String {
    format!("sha256:{}", token_hash(secret))
}

/// Checks a presented secret against its stored hash in constant time.
pub fn verify_client_secret(presented: &str, stored: &str) -> bool {
    let Some(expected) = stored.strip_prefix("sha256:") else {
        return false;
    };
    constant_time_eq(token_hash(presented).as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_long() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
    }

    #[test]
    fn client_secret_roundtrip() {
        let secret = generate_client_secret();
        let stored = hash_client_secret(&secret);
        assert!(!stored.contains(&secret));
        assert!(verify_client_secret(&secret, &stored));
        assert!(!verify_client_secret("wrong", &stored));
        assert!(!verify_client_secret(&secret, "plain"));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
