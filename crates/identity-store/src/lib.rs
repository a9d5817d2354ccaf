//! Identity's storage: everything the OpenID provider keeps.
//!
//! Each aggregate has a small repository trait ([`UserStore`],
//! [`ClientStore`], [`KeyStore`], [`CodeStore`], [`SessionStore`],
//! [`RefreshTokenStore`], [`RevocationStore`], [`PurgeStore`],
//! [`AccountStore`], [`RateLimitStore`], [`SelfServiceStore`]); [`Store`] is all of them. One implementation,
//! [`SqlStore`], holds the SQL (`sql.rs`, `keys.rs`, `accounts.rs`,
//! `self_service.rs`), written
//! once over echo-sql's `Backend` and run on two: [`SqliteStore`] (the
//! embedded default, a file in the data directory, with a background WAL
//! checkpointer) and [`PgStore`] (scale-out), each with its own migrations
//! under `migrations/<backend>/`. Both pass the same test suite
//! (`tests/it/main.rs`).
//!
//! Refresh-token lookups and rotations, the hot path of a busy provider, go
//! through batchers (`batcher.rs`): concurrent requests share one query or
//! one transaction.
//!
//! Records here are plain data. What they mean (which grants exist, how a
//! secret is hashed) is the identity service's business; the store only keeps
//! them and offers the few atomic operations the protocol needs, such as
//! consuming an authorization code exactly once.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use echo_crypto::TrustedRoots;

mod accounts;
mod batcher;
mod keys;
mod postgres;
mod rate_limits;
mod self_service;
mod sql;
mod sqlite;

pub use accounts::{AccountStore, LoginCounter, PasswordReset, TotpCredential};
pub use keys::{KeyStore, StoredKey};
pub use postgres::PgStore;
pub use rate_limits::RateLimitStore;
pub use self_service::{AppGrant, EmailLink, LinkEffect, SelfServiceStore};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

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
    /// A batched write could not be done (see `batcher`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the database does not answer now
    /// ([`echo_sql::is_unavailable`]): identity answers `503`
    /// `temporarily_unavailable` and the client may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(e) if echo_sql::is_unavailable(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<echo_sql::OpenError> for StoreError {
    fn from(e: echo_sql::OpenError) -> Self {
        match e {
            echo_sql::OpenError::Database(e) => StoreError::Database(e),
            echo_sql::OpenError::Migrate(e) => StoreError::Migrate(e),
        }
    }
}

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
    /// Lifecycle state (`invited`, `active`, `suspended`, `deleted`); what
    /// the states mean and which transitions exist is identity's business.
    pub state: String,
    /// Whether the user followed a verification link sent to `email`.
    pub email_verified: bool,
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
    /// Public keys (a JWK Set as JSON) of a client that authenticates with
    /// `private_key_jwt` (RFC 7523 §2.2) instead of a secret.
    pub jwks: Option<String>,
    /// The secret replaced by the last rotation, still accepted until
    /// `previous_secret_expires_at`.
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
}

impl Client {
    /// A client that cannot authenticate (no secret, no keys): RFC 6749
    /// §2.1 "public".
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.jwks.is_none()
    }
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
    /// RFC 8176 authentication methods of the login behind the code.
    pub amr: Vec<String>,
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

/// A refresh token (RFC 6749 §6), stored under the hash of the token. Every
/// use rotates it (RFC 9700 §4.14.2): the row is marked used and a successor
/// of the same family is inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: String,
    /// The grant this token descends from; rotation keeps it, revocation
    /// takes the whole family.
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    /// The scope originally granted (a refresh may narrow the access
    /// token's scope, never this).
    pub scope: String,
    /// Audience authorized at `/authorize` (RFC 8707 `resource`).
    pub audience: Option<String>,
    pub auth_time: i64,
    pub issued_at: i64,
    /// Idle expiry, never after `family_expires_at`.
    pub expires_at: i64,
    /// Absolute expiry of the family.
    pub family_expires_at: i64,
    /// The access token issued together with this refresh token, revoked
    /// with the family.
    pub access_jti: String,
    pub access_expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The answer that replaced this token, sealed by the provider, so a
    /// repeated use within the grace period gets the same successor.
    pub successor: Option<Vec<u8>>,
}

/// Rows removed by one [`PurgeStore::purge_expired`] run, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub codes: u64,
    pub refresh_tokens: u64,
    pub revoked_tokens: u64,
    pub client_assertions: u64,
    pub sessions: u64,
    pub rate_limit_windows: u64,
    pub password_resets: u64,
    pub email_links: u64,
}

/// A single-sign-on session at identity, stored under the hash of its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsoSession {
    pub id_hash: String,
    pub user_id: String,
    pub auth_time: i64,
    pub expires_at: i64,
    /// RFC 8176 authentication methods of the login that opened it.
    pub amr: Vec<String>,
    pub created_at: i64,
    /// When it was last used (at most a minute behind).
    pub last_seen_at: i64,
    /// The browser's `User-Agent`, as it said (bounded).
    pub user_agent: String,
    /// The client's IP address.
    pub address: String,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] if the username is taken.
    async fn insert_user(&self, user: &User) -> Result<()>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    /// The oldest user whose address is `email`, compared without case.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Up to `limit` users whose username comes after `after` (`""` for the
    /// first page), in username order; with `search`, only those whose
    /// username or email contains it, compared without case.
    async fn users_page(&self, search: Option<&str>, after: &str, limit: u32) -> Result<Vec<User>>;
    /// Up to `limit` pending invitations after `after`, in username order:
    /// users an administrator invited (state `invited`, no password yet).
    /// A sign-up waiting for its address to be verified has a password and
    /// is not one.
    async fn invitations_page(&self, after: &str, limit: u32) -> Result<Vec<User>>;
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] if the id is taken.
    async fn insert_client(&self, client: &Client) -> Result<()>;
    async fn client(&self, id: &str) -> Result<Option<Client>>;
    async fn list_clients(&self) -> Result<Vec<Client>>;
    /// Up to `limit` clients whose id comes after `after` (`""` for the
    /// first page), in id order.
    async fn clients_page(&self, after: &str, limit: u32) -> Result<Vec<Client>>;
    /// Replaces the client's registration (redirect and post-logout URIs,
    /// grant types, audiences, scopes, `allow_no_pkce`) with `client`'s;
    /// its secrets, keys and creation time stay. `false` when the client
    /// does not exist.
    async fn update_client(&self, client: &Client) -> Result<bool>;
    /// Deletes the client and, in the same transaction, revokes its refresh
    /// tokens and records the access tokens issued with them or with its
    /// codes (those unexpired at `now`) as revoked. `false` when the client
    /// does not exist.
    async fn delete_client(&self, id: &str, now: i64) -> Result<bool>;
    /// Makes `new_secret_hash` the client's secret and keeps the current one
    /// as the previous secret until `previous_expires_at`. `false` when the
    /// client does not exist or has no secret.
    async fn rotate_client_secret(
        &self,
        id: &str,
        new_secret_hash: &str,
        previous_expires_at: i64,
    ) -> Result<bool>;
    /// Replaces what a client may ask for: its grant types, audiences and
    /// scopes. `false` when the client does not exist.
    async fn update_client_access(
        &self,
        id: &str,
        grant_types: &[String],
        audiences: &[String],
        scopes: &[String],
    ) -> Result<bool>;
}

#[async_trait]
pub trait CodeStore: Send + Sync {
    async fn insert_code(&self, code: &AuthCode) -> Result<()>;
    /// Marks the code spent, atomically: of two concurrent calls exactly one
    /// gets [`CodeUse::Consumed`].
    async fn consume_code(&self, code_hash: &str, now: i64) -> Result<CodeUse>;
    /// Remembers the access token a consumed code produced, so that a replay
    /// of the code can revoke it.
    async fn record_code_access_token(
        &self,
        code_hash: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<()>;
    /// RFC 6749 §4.1.2: revokes what the code produced (its access token and
    /// the refresh-token family whose id is the code hash). Returns the
    /// number of refresh tokens revoked.
    async fn revoke_code_grant(&self, code_hash: &str, now: i64) -> Result<u64>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, session: &SsoSession) -> Result<()>;
    async fn session(&self, id_hash: &str) -> Result<Option<SsoSession>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<()>;
    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshToken>>;
    /// The token with the user it was issued to, read together: what a
    /// refresh needs before it can mint. Concurrent calls share one query.
    async fn refresh_grant(&self, token_hash: &str) -> Result<Option<(RefreshToken, User)>>;
    /// Marks `old_hash` used at `now` (keeping `sealed_successor` on it) and
    /// inserts `successor`, atomically and only if `old_hash` was neither
    /// used nor revoked: of two concurrent rotations exactly one gets `true`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        now: i64,
        sealed_successor: &[u8],
        successor: &RefreshToken,
    ) -> Result<bool>;
    /// Revokes every refresh token of the family and records the access
    /// tokens issued with them (those not yet expired at `now`) as revoked.
    /// Returns the number of refresh tokens revoked.
    async fn revoke_refresh_family(&self, family_id: &str, now: i64) -> Result<u64>;
}

#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Records an access token's `jti` as revoked until it expires anyway.
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()>;
    async fn access_token_revoked(&self, jti: &str) -> Result<bool>;
    /// Records a client assertion's `jti` until `expires_at`; `false` if the
    /// client used it before (a replay, RFC 7523 §3).
    async fn record_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool>;
}

#[async_trait]
pub trait PurgeStore: Send + Sync {
    /// Deletes codes, refresh tokens, revocation entries, client-assertion
    /// ids, SSO sessions and password-reset links whose time ended at or before `now`, at most
    /// `batch` rows per statement, so no statement holds the database long.
    async fn purge_expired(&self, now: i64, batch: u32) -> Result<Purged>;
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Whether the database answers (identity's readiness).
    async fn ping(&self) -> Result<()>;
}

/// Everything identity keeps.
pub trait Store:
    HealthStore
    + UserStore
    + ClientStore
    + KeyStore
    + CodeStore
    + SessionStore
    + RefreshTokenStore
    + RevocationStore
    + PurgeStore
    + AccountStore
    + RateLimitStore
    + SelfServiceStore
{
}
impl<T> Store for T where
    T: HealthStore
        + UserStore
        + ClientStore
        + KeyStore
        + CodeStore
        + SessionStore
        + RefreshTokenStore
        + RevocationStore
        + PurgeStore
        + AccountStore
        + RateLimitStore
        + SelfServiceStore
{
}

/// Opens the configured backend and brings its schema up to date:
/// PostgreSQL when `database_url` is a `postgres://` URL, otherwise the
/// SQLite file `echo.db` in `data_dir`. PostgreSQL's TLS trusts `roots`.
pub async fn open(
    database_url: Option<&str>,
    roots: &TrustedRoots,
    data_dir: &Path,
) -> Result<Arc<dyn Store>> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgStore::connect(url, roots).await?))
        }
        Some(url) => Ok(Arc::new(SqliteStore::connect_url(url).await?)),
        None => Ok(Arc::new(
            SqliteStore::open(&data_dir.join("echo.db")).await?,
        )),
    }
}
