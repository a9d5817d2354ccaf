//! Account security records: the user's lifecycle state, the failure
//! counter behind the login lockout, the TOTP credential and recovery codes,
//! passwords and the links that reset them.
//!
//! As everywhere in this crate, the store keeps data and offers the atomic
//! operations the policy needs; the policy itself (how many failures lock an
//! account, which state may follow which) lives in identity. The operations
//! that guard against guessing are all conditional updates, so concurrent
//! requests cannot slip past them: [`AccountStore::swap_login_counter`]
//! is a compare-and-swap, [`AccountStore::use_totp_step`] and
//! [`AccountStore::use_recovery_code`] succeed once.

use async_trait::async_trait;
use echo_sql::{Backend, Column, RowsAffected as _};
use sqlx::{ColumnIndex, Encode, Executor, Transaction, Type};

use crate::Result;
use crate::sql::{SqlStore, conflict, to_json};

/// A user's consecutive failed sign-in attempts (passwords and second
/// factors alike) and when the last one was counted (0 when none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginCounter {
    pub failures: i64,
    pub last_failed_at: i64,
}

/// A user's RFC 6238 TOTP credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpCredential {
    pub user_id: String,
    /// The shared secret, sealed by identity with a key derived from the
    /// master key.
    pub sealed_secret: Vec<u8>,
    pub created_at: i64,
    /// `None` while enrolment waits for the first code.
    pub confirmed_at: Option<i64>,
    /// The last time step accepted (RFC 6238 §5.2: never accept it again).
    pub last_step: i64,
}

/// A password-reset link, stored under the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordReset {
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// The user's failure counter, read from the writer so that a
    /// compare-and-swap that lost a race sees the winner's value.
    async fn login_counter(&self, user_id: &str) -> Result<Option<LoginCounter>>;
    /// Replaces the counter with `new` only if it still is `expected`: of
    /// concurrent swaps from one value exactly one gets `true`.
    async fn swap_login_counter(
        &self,
        user_id: &str,
        expected: LoginCounter,
        new: LoginCounter,
    ) -> Result<bool>;
    /// Moves the user from state `from` to `to`, only if it is still in
    /// `from` (else `false`). With `end_sessions`, in the same transaction:
    /// revokes every refresh token of the user, records the access tokens
    /// issued with them that are unexpired at `now` as revoked, and deletes
    /// the user's SSO sessions.
    async fn set_user_state(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
        end_sessions: bool,
        now: i64,
    ) -> Result<bool>;
    async fn set_user_password(&self, user_id: &str, password_hash: &str) -> Result<bool>;
    /// Sets the user's password. With `keep_session` (the hash of the
    /// session making the change), in the same transaction: ends every
    /// other SSO session of the user and revokes their refresh tokens (and
    /// the access tokens issued with them, unexpired at `now`).
    async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now: i64,
    ) -> Result<bool>;
    /// Keeps a password-reset link, by the hash of its token.
    async fn insert_password_reset(&self, reset: &PasswordReset) -> Result<()>;
    /// The user a reset link is for, if it is unused and unexpired at `now`.
    async fn password_reset_user(&self, token_hash: &str, now: i64) -> Result<Option<String>>;
    /// Spends a reset link that is unused and unexpired at `now`, sets its
    /// user's password, clears their failure counter and ends all their
    /// sessions and refresh tokens, atomically: of concurrent uses of one
    /// link exactly one gets the user's id, the others `None`.
    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<String>>;
    async fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<bool>;
    async fn totp_credential(&self, user_id: &str) -> Result<Option<TotpCredential>>;
    /// Stores an unconfirmed credential, replacing an unconfirmed one;
    /// `false` (and nothing stored) if the user has a confirmed one.
    async fn put_unconfirmed_totp(&self, credential: &TotpCredential) -> Result<bool>;
    /// Confirms the user's unconfirmed credential, if its secret still is
    /// `sealed_secret`, with `step` as used, and replaces the user's
    /// recovery codes with `recovery_hashes`, atomically.
    async fn confirm_totp(
        &self,
        user_id: &str,
        sealed_secret: &[u8],
        step: i64,
        now: i64,
        recovery_hashes: &[String],
    ) -> Result<bool>;
    /// Records `step` as used if it is later than the last used step of a
    /// confirmed credential; `false` for a replay.
    async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool>;
    /// Spends an unused recovery code; `false` if unknown or spent.
    async fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: i64) -> Result<bool>;
    async fn recovery_codes_left(&self, user_id: &str) -> Result<i64>;
    /// Removes the user's TOTP credential and recovery codes; `true` if
    /// there was a credential.
    async fn delete_mfa(&self, user_id: &str) -> Result<bool>;
}

#[derive(sqlx::FromRow)]
struct TotpRow {
    user_id: String,
    sealed_secret: Vec<u8>,
    created_at: i64,
    confirmed_at: Option<i64>,
    last_step: i64,
}

impl From<TotpRow> for TotpCredential {
    fn from(r: TotpRow) -> Self {
        TotpCredential {
            user_id: r.user_id,
            sealed_secret: r.sealed_secret,
            created_at: r.created_at,
            confirmed_at: r.confirmed_at,
            last_step: r.last_step,
        }
    }
}

#[async_trait]
impl<DB: Backend> AccountStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    Option<i64>: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
{
    async fn login_counter(&self, user_id: &str) -> Result<Option<LoginCounter>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT failed_logins, last_failed_at FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pools.write)
                .await?;
        Ok(row.map(|(failures, last_failed_at)| LoginCounter {
            failures,
            last_failed_at,
        }))
    }

    async fn swap_login_counter(
        &self,
        user_id: &str,
        expected: LoginCounter,
        new: LoginCounter,
    ) -> Result<bool> {
        let swapped = sqlx::query(
            "UPDATE users SET failed_logins = $4, last_failed_at = $5 \
             WHERE id = $1 AND failed_logins = $2 AND last_failed_at = $3",
        )
        .bind(user_id)
        .bind(expected.failures)
        .bind(expected.last_failed_at)
        .bind(new.failures)
        .bind(new.last_failed_at)
        .execute(&self.pools.write)
        .await?;
        Ok(swapped.rows_affected() == 1)
    }

    async fn set_user_state(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
        end_sessions: bool,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        let moved = sqlx::query("UPDATE users SET state = $3 WHERE id = $1 AND state = $2")
            .bind(user_id)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        if end_sessions {
            end_sessions_of(&mut tx, user_id, now, "").await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn set_user_password(&self, user_id: &str, password_hash: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(password_hash)
            .execute(&self.pools.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        let changed = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(keep) = keep_session {
            end_sessions_of(&mut tx, user_id, now, keep).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_password_reset(&self, reset: &PasswordReset) -> Result<()> {
        sqlx::query(
            "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&reset.token_hash)
        .bind(&reset.user_id)
        .bind(reset.created_at)
        .bind(reset.expires_at)
        .execute(&self.pools.write)
        .await
        .map_err(conflict("password reset"))?;
        Ok(())
    }

    async fn password_reset_user(&self, token_hash: &str, now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM password_resets \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pools.write)
        .await?)
    }

    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.pools.write.begin().await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE password_resets SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET password_hash = $2, failed_logins = 0, last_failed_at = 0 \
             WHERE id = $1",
        )
        .bind(&user_id)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        end_sessions_of(&mut tx, &user_id, now, "").await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    async fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET roles = $2 WHERE id = $1")
            .bind(user_id)
            .bind(to_json(roles))
            .execute(&self.pools.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn totp_credential(&self, user_id: &str) -> Result<Option<TotpCredential>> {
        // From the writer: a code must be checked against the
        // newest secret and last step.
        Ok(sqlx::query_as::<_, TotpRow>(
            "SELECT user_id, sealed_secret, created_at, confirmed_at, last_step \
             FROM totp_credentials WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pools.write)
        .await?
        .map(TotpCredential::from))
    }

    async fn put_unconfirmed_totp(&self, c: &TotpCredential) -> Result<bool> {
        let stored = sqlx::query(
            "INSERT INTO totp_credentials (user_id, sealed_secret, created_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
             created_at = excluded.created_at WHERE totp_credentials.confirmed_at IS NULL",
        )
        .bind(&c.user_id)
        .bind(&c.sealed_secret)
        .bind(c.created_at)
        .execute(&self.pools.write)
        .await?;
        Ok(stored.rows_affected() == 1)
    }

    async fn confirm_totp(
        &self,
        user_id: &str,
        sealed_secret: &[u8],
        step: i64,
        now: i64,
        recovery_hashes: &[String],
    ) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        let confirmed = sqlx::query(
            "UPDATE totp_credentials SET confirmed_at = $3, last_step = $4 \
             WHERE user_id = $1 AND sealed_secret = $2 AND confirmed_at IS NULL",
        )
        .bind(user_id)
        .bind(sealed_secret)
        .bind(now)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        if confirmed.rows_affected() != 1 {
            return Ok(false);
        }
        replace_recovery_codes_of(&mut tx, user_id, recovery_hashes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool> {
        let used = sqlx::query(
            "UPDATE totp_credentials SET last_step = $2 \
             WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
        )
        .bind(user_id)
        .bind(step)
        .execute(&self.pools.write)
        .await?;
        Ok(used.rows_affected() == 1)
    }

    async fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: i64) -> Result<bool> {
        let used = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 \
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(code_hash)
        .bind(now)
        .execute(&self.pools.write)
        .await?;
        Ok(used.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pools.read)
        .await?)
    }

    async fn delete_mfa(&self, user_id: &str) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }
}

/// Replaces every recovery code of `user_id` with the ones hashed
/// `hashes`, inside `tx` (enrolment and regeneration alike).
pub(crate) async fn replace_recovery_codes_of<DB: Backend>(
    tx: &mut Transaction<'_, DB>,
    user_id: &str,
    hashes: &[String],
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
{
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for hash in hashes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(hash.as_str())
            .execute(&mut **tx)
            .await
            .map_err(conflict("recovery code"))?;
    }
    Ok(())
}

/// Ends what `user_id` holds, in `tx`: revokes every refresh token (and
/// records the access tokens issued with them, unexpired at `now`, as
/// revoked) and deletes every SSO session but the one hashed `keep` (`""`
/// keeps none).
pub(crate) async fn end_sessions_of<DB: Backend>(
    tx: &mut Transaction<'_, DB>,
    user_id: &str,
    now: i64,
    keep: &str,
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
{
    for statement in [
        "INSERT INTO revoked_tokens (jti, expires_at) \
         SELECT access_jti, access_expires_at FROM refresh_tokens \
         WHERE user_id = $1 AND revoked_at IS NULL AND access_expires_at > $2 \
         ON CONFLICT DO NOTHING",
        "UPDATE refresh_tokens SET revoked_at = $2, expires_at = $2 \
         WHERE user_id = $1 AND revoked_at IS NULL",
    ] {
        sqlx::query(statement)
            .bind(user_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM sso_sessions WHERE user_id = $1 AND id_hash <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
