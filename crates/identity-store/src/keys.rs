//! Signing keys: the private half sealed by identity, the public JWK, and
//! the times that make up a key's life.
//!
//! A key's state is never stored: identity derives it from these times
//! (`crates/identity/src/keys/state.rs`), so every server sharing the
//! database sees a key activate or retire at the same instant without any
//! server having to flip a flag. The store only records the times and
//! offers conditional updates that never move a key backwards in its life:
//! activation only earlier, retirement only earlier, revocation once.

use async_trait::async_trait;
use echo_sql::{Backend, Column, RowsAffected as _};
use sqlx::{AssertSqlSafe, ColumnIndex, Encode, Executor, Type};

use crate::Result;
use crate::sql::{SqlStore, conflict};

/// A signing key; the private half is sealed with the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub sealed_private: Vec<u8>,
    /// The public JWK as JSON.
    pub public_jwk: String,
    pub created_at: i64,
    /// The one audience whose tokens this key signs; `None` for a general
    /// key.
    pub audience: Option<String>,
    /// When it starts signing (it is published from `created_at`).
    pub activates_at: i64,
    /// When an operator retired it: it signs no more from then on.
    pub retired_at: Option<i64>,
    /// When it was revoked: unpublished and unused from then on.
    pub revoked_at: Option<i64>,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Fails with [`crate::StoreError::Conflict`] if the `kid` is taken.
    async fn insert_key(&self, key: &StoredKey) -> Result<()>;
    /// All keys, in order of activation (then creation, then `kid`).
    async fn keys(&self) -> Result<Vec<StoredKey>>;
    /// Moves the key's activation to `at` if that is earlier and the key is
    /// not revoked; `false` otherwise (or when there is no such key).
    async fn activate_key(&self, kid: &str, at: i64) -> Result<bool>;
    /// Retires the key at `at` unless it is revoked or already retired by
    /// then; `false` otherwise (or when there is no such key).
    async fn retire_key(&self, kid: &str, at: i64) -> Result<bool>;
    /// Revokes the key at `at`, once; `false` if it was revoked before (or
    /// there is no such key).
    async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool>;
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    alg: String,
    sealed_private: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    audience: Option<String>,
    activates_at: i64,
    retired_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        StoredKey {
            kid: r.kid,
            alg: r.alg,
            sealed_private: r.sealed_private,
            public_jwk: r.public_jwk,
            created_at: r.created_at,
            audience: r.audience,
            activates_at: r.activates_at,
            retired_at: r.retired_at,
            revoked_at: r.revoked_at,
        }
    }
}

const KEY_COLUMNS: &str = "kid, alg, sealed_private, public_jwk, created_at, audience, \
     activates_at, retired_at, revoked_at";

/// `$1` = kid, `$2` = time; each changes at most one row.
const ACTIVATE_KEY: &str = "UPDATE signing_keys SET activates_at = $2 \
     WHERE kid = $1 AND activates_at > $2 AND revoked_at IS NULL";
const RETIRE_KEY: &str = "UPDATE signing_keys SET retired_at = $2 \
     WHERE kid = $1 AND revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $2)";
const REVOKE_KEY: &str =
    "UPDATE signing_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL";

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
{
    /// Runs one of the conditional key updates; whether it changed the key.
    async fn update_key(&self, statement: &str, kid: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(AssertSqlSafe(statement))
            .bind(kid)
            .bind(at)
            .execute(&self.pools.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl<DB: Backend> KeyStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    Option<i64>: Column<DB>,
    Vec<u8>: Column<DB>,
{
    async fn insert_key(&self, k: &StoredKey) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.sealed_private)
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .bind(&k.audience)
        .bind(k.activates_at)
        .bind(k.retired_at)
        .bind(k.revoked_at)
        .execute(&self.pools.write)
        .await
        .map_err(conflict(&format!("key {}", k.kid)))?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>> {
        Ok(sqlx::query_as::<_, KeyRow>(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY activates_at, created_at, kid"
        )))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(StoredKey::from)
        .collect())
    }

    async fn activate_key(&self, kid: &str, at: i64) -> Result<bool> {
        self.update_key(ACTIVATE_KEY, kid, at).await
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<bool> {
        self.update_key(RETIRE_KEY, kid, at).await
    }

    async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool> {
        self.update_key(REVOKE_KEY, kid, at).await
    }
}
