//! What the gateway keeps per browser, and the storage interface for it.
//!
//! [`SessionStore`] has two backends: SQLite
//! ([`SqliteSessionStore`](crate::SqliteSessionStore), the default) and
//! Redis ([`RedisSessionStore`](crate::RedisSessionStore)).
//! Stores hold only hashes of the browser-side secrets (session id, login
//! `state`, browser binding) and tokens sealed under a key the store never
//! sees, so a copy of the store signs nobody in.

use std::sync::Arc;

use async_trait::async_trait;
use echo_crypto::seal::MasterKey;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::refresh_lock::SharedLock;

/// A login between `/login` and `/callback`, found by the hash of its
/// `state`. Single use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAttempt {
    pub state_hash: String,
    /// Hash of the binding cookie of the browser that started the login,
    /// so a `state` (and code) carried to another browser is refused
    /// (login CSRF).
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A same-origin path to land on after login.
    pub return_to: String,
    pub expires_at: i64,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: String,
    pub subject: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Absolute end.
    pub expires_at: i64,
    pub access_expires_at: i64,
    /// [`Tokens`], sealed with [`Tokens::seal`].
    pub tokens: Vec<u8>,
    /// The browser's `User-Agent` at sign-in (at most
    /// [`USER_AGENT_CHARS`] characters), so its owner can tell their
    /// sessions apart; empty when it sent none.
    pub user_agent: String,
    /// The client address at sign-in; empty when unknown.
    pub address: String,
}

/// The longest `User-Agent` a session keeps, in characters.
pub const USER_AGENT_CHARS: usize = 256;

/// Sessions of one user listed at most ([`SessionStore::user_sessions`]).
pub const LISTED_SESSIONS: usize = 100;

/// Storage of login attempts and sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_attempt(&self, attempt: &LoginAttempt) -> Result<()>;
    /// Removes and returns the attempt in one step, so a `state` works once.
    async fn take_attempt(&self, state_hash: &str) -> Result<Option<LoginAttempt>>;
    async fn insert_session(&self, session: &Session) -> Result<()>;
    async fn session(&self, id_hash: &str) -> Result<Option<Session>>;
    /// Records use (moves the idle timeout).
    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()>;
    /// Stores refreshed tokens.
    async fn update_tokens(
        &self,
        id_hash: &str,
        tokens: &[u8],
        access_expires_at: i64,
        roles: &[String],
    ) -> Result<()>;
    /// The sessions of `subject` alive at `now` (used since
    /// `idle_before`), most recently used first, at most
    /// [`LISTED_SESSIONS`]: what the user's sessions page lists.
    async fn user_sessions(
        &self,
        subject: &str,
        now: i64,
        idle_before: i64,
    ) -> Result<Vec<Session>>;
    /// Whether a session was deleted.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes ended sessions (past `now` or unused since `idle_before`)
    /// and expired login attempts; how many rows went.
    async fn purge(&self, now: i64, idle_before: i64) -> Result<u64>;
    /// Sessions alive at `now` (used since `idle_before`): the live
    /// sessions gauge, and the store's readiness check.
    async fn live_sessions(&self, now: i64, idle_before: i64) -> Result<u64>;
    /// The lock that keeps gateways sharing this store from refreshing one
    /// session at once (`refresh_lock.rs`); none for a store only one
    /// process opens, whose own locks suffice.
    fn shared_lock(&self) -> Option<Arc<dyn SharedLock>> {
        None
    }
}

/// What identity handed out at login, kept sealed in the session.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    /// AES-256-GCM under `key`, bound to the session (`id_hash`), so a
    /// sealed blob moved to another session's row does not open.
    pub fn seal(&self, key: &MasterKey, id_hash: &str) -> Result<Vec<u8>> {
        let json =
            serde_json::to_vec(self).map_err(|e| crate::GatewayError::Storage(Box::new(e)))?;
        Ok(key.seal(id_hash.as_bytes(), &json)?)
    }

    pub fn open(key: &MasterKey, id_hash: &str, sealed: &[u8]) -> Result<Self> {
        let json = key.open(id_hash.as_bytes(), sealed)?;
        serde_json::from_slice(&json).map_err(|e| crate::GatewayError::Storage(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_sealed_to_their_session() {
        let key = MasterKey::generate();
        let tokens = Tokens {
            access_token: "at-secret".into(),
            refresh_token: Some("rt-secret".into()),
            id_token: "id-secret".into(),
        };
        let sealed = tokens.seal(&key, "session-a").unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("secret"), "tokens are not readable at rest");
        let opened = Tokens::open(&key, "session-a", &sealed).unwrap();
        assert_eq!(opened.refresh_token.as_deref(), Some("rt-secret"));
        assert!(Tokens::open(&key, "session-b", &sealed).is_err());
        assert!(Tokens::open(&MasterKey::generate(), "session-a", &sealed).is_err());
        assert_eq!(format!("{tokens:?}"), "Tokens(..)");
    }
}
