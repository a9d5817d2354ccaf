//! Echo's storage layer.
//!
//! Each aggregate has a small repository trait ([`UserStore`],
//! [`ClientStore`], [`KeyStore`], [`CodeStore`], [`SessionStore`]); [`Store`]
//! is all of them. There is one implementation per backend:
//! [`SqliteStore`] (the embedded default, a file in the data directory) and
//! [`PgStore`] (scale-out). Both run the same SQL (see `sql.rs`), each with
//! its own migrations under `migrations/<backend>/`, and both pass the same
//! test suite (`tests/it/suite.rs`).
//!
//! Records here are plain data. What they mean (which grants exist, how a
//! secret is hashed) is the identity service's business; the store only keeps
//! them and offers the few atomic operations the protocol needs, such as
//! consuming an authorization code exactly once.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::{SqliteStore, open_pools as open_sqlite_pools};

/// Storage failures. `Conflict` is the caller's fault (a duplicate id);
/// everything else is ours.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A person who can log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

/// An OAuth client registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    /// Hash of the client secret; `None` for a public client.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allow_no_pkce: bool,
    pub created_at: i64,
}

/// A signing key; the private half is sealed with the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub sealed_private: Vec<u8>,
    /// The public JWK as JSON.
    pub public_jwk: String,
    pub created_at: i64,
}

/// An issued authorization code, stored under the hash of the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    /// PKCE S256 challenge; `None` only for clients allowed to skip PKCE.
    pub code_challenge: Option<String>,
    /// Audience asked for at `/authorize` (RFC 8707 `resource`).
    pub audience: Option<String>,
    pub auth_time: i64,
    pub expires_at: i64,
}

/// What happened when a code was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// First use: the code is now spent.
    Consumed(AuthCode),
    /// The code was spent before: a replay.
    Replayed(AuthCode),
    NotFound,
}

/// A single-sign-on session at identity, stored under the hash of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSession {
    pub id_hash: String,
    pub user_id: String,
    pub auth_time: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] if the username is taken.
    async fn insert_user(&self, user: &User) -> Result<()>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] if the id is taken.
    async fn insert_client(&self, client: &Client) -> Result<()>;
    async fn client(&self, id: &str) -> Result<Option<Client>>;
    async fn list_clients(&self) -> Result<Vec<Client>>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_key(&self, key: &StoredKey) -> Result<()>;
    /// All keys, oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>>;
}

#[async_trait]
pub trait CodeStore: Send + Sync {
    async fn insert_code(&self, code: &AuthCode) -> Result<()>;
    /// Marks the code spent, atomically: of two concurrent calls exactly one
    /// gets [`CodeUse::Consumed`].
    async fn consume_code(&self, code_hash: &str, now: i64) -> Result<CodeUse>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, session: &SsoSession) -> Result<()>;
    async fn session(&self, id_hash: &str) -> Result<Option<SsoSession>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
}

/// Everything identity keeps.
pub trait Store: UserStore + ClientStore + KeyStore + CodeStore + SessionStore {}
impl<T: UserStore + ClientStore + KeyStore + CodeStore + SessionStore> Store for T {}

/// Opens the configured backend and brings its schema up to date:
/// PostgreSQL when `database_url` is a `postgres://` URL, otherwise the
/// SQLite file `echo.db` in `data_dir`.
pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgStore::connect(url).await?))
        }
        Some(url) => Ok(Arc::new(SqliteStore::connect_url(url).await?)),
        None => Ok(Arc::new(
            SqliteStore::open(&data_dir.join("echo.db")).await?,
        )),
    }
}
