//! Password hashing with argon2id (OWASP parameters), off the async runtime.
//!
//! Hashing costs ~20 ms of CPU and 19 MiB of memory by design. It runs in
//! `spawn_blocking` behind a semaphore sized to the machine, so a burst of
//! logins queues instead of starving every other request.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::secret::random_bytes;
use crate::{CryptoError, Result};

/// OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

fn argon2() -> Argon2<'static> {
    #[allow(clippy::expect_used)] // constant, valid parameters
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).expect("argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password synchronously (CLI use). Servers use [`PasswordPool`].
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

/// Checks a password against a PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash that matches no password, verified when a user does not exist so
/// that a missing account costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&crate::secret::random_token()).unwrap_or_else(|_| String::new())
    })
}

/// Runs argon2 on the blocking pool, at most `permits` at once.
#[derive(Clone)]
pub struct PasswordPool {
    permits: Arc<Semaphore>,
}

impl PasswordPool {
    pub fn new(permits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// One permit per core: argon2 is pure CPU.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self.permits.acquire().await;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| CryptoError::PasswordHash(e.to_string()))?
    }

    /// Verifies `password` against `stored`, or against a dummy hash when
    /// there is no stored hash, so both cases take the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let _permit = self.permits.acquire().await;
        tokio::task::spawn_blocking(move || match stored {
            Some(phc) => verify_password(&password, &phc),
            None => {
                verify_password(&password, dummy_hash());
                false
            }
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_owasp_parameters() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("battery staple", &phc));
        assert!(!verify_password("correct horse", "not-a-hash"));
    }

    #[tokio::test]
    async fn pool_verifies_and_refuses_missing_users() {
        let pool = PasswordPool::new(2);
        let phc = pool.hash("pw-123456".into()).await.unwrap();
        assert!(pool.verify("pw-123456".into(), Some(phc)).await);
        assert!(!pool.verify("pw-123456".into(), None).await);
    }
}
