//! What users manage themselves: the links sent by mail that verify an
//! address, complete a sign-up or accept an invitation; their SSO sessions
//! and the applications holding their refresh tokens; their recovery codes.
//!
//! As in `accounts.rs`, spending a link is one conditional update inside a
//! transaction, so of concurrent uses of one link exactly one succeeds.

use async_trait::async_trait;
use echo_sql::{Backend, Column, RowsAffected as _};
use sqlx::{AssertSqlSafe, ColumnIndex, Encode, Executor, Type};

use crate::accounts::{end_sessions_of, replace_recovery_codes_of};
use crate::sql::{SESSION_COLUMNS, SessionRow, SqlStore, conflict};
use crate::{Result, SsoSession};

/// A link sent by mail, stored under the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailLink {
    pub token_hash: String,
    /// What following it does: `verify_email`, `registration` or
    /// `invitation` (identity's vocabulary).
    pub purpose: String,
    pub user_id: String,
    /// The address it was sent to: it verifies that address only.
    pub email: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An application holding live refresh tokens of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGrant {
    pub client_id: String,
    /// Live refresh tokens (one per sign-in that asked for offline access).
    pub tokens: i64,
    /// When the newest of them was issued.
    pub last_used_at: i64,
}

/// What spending a link changes besides verifying its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEffect<'a> {
    /// Sets the user's password (an invitation).
    pub password_hash: Option<&'a str>,
    /// Moves an `invited` user who has (or is given) a password to
    /// `active` (a sign-up, an invitation).
    pub activate: bool,
}

#[async_trait]
pub trait SelfServiceStore: Send + Sync {
    async fn insert_email_link(&self, link: &EmailLink) -> Result<()>;
    /// The link of `token_hash` for `purpose`, if unused and unexpired at `now`.
    async fn email_link(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<EmailLink>>;
    /// Spends a live link for `purpose` and, if its user's address still is
    /// the one it was sent to, marks that address verified and applies
    /// `effect`, atomically. The user's id when it did; `None` for an
    /// unknown, spent or expired link, or an address changed since.
    async fn spend_email_link(
        &self,
        token_hash: &str,
        purpose: &str,
        effect: LinkEffect<'_>,
        now: i64,
    ) -> Result<Option<String>>;
    /// Sets the user's address, unverified; `false` for an unknown user.
    async fn change_email(&self, user_id: &str, email: &str) -> Result<bool>;
    /// The user's SSO sessions live at `now`, the most recently used first.
    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<SsoSession>>;
    /// Records that the session was used at `now`, unless it was within
    /// the last `resolution` seconds (so a busy session writes rarely).
    async fn touch_session(&self, id_hash: &str, now: i64, resolution: i64) -> Result<()>;
    /// Deletes one SSO session of the user; `false` if the user has none
    /// under that hash.
    async fn end_user_session(&self, user_id: &str, id_hash: &str) -> Result<bool>;
    /// Ends every SSO session and revokes every refresh token of the user
    /// (with the access tokens issued with them, unexpired at `now`).
    async fn end_all_sessions(&self, user_id: &str, now: i64) -> Result<()>;
    /// The applications holding refresh tokens of the user live at `now`.
    async fn user_apps(&self, user_id: &str, now: i64) -> Result<Vec<AppGrant>>;
    /// Revokes the user's refresh tokens of one client (and the access
    /// tokens issued with them, unexpired at `now`); how many.
    async fn revoke_user_app(&self, user_id: &str, client_id: &str, now: i64) -> Result<u64>;
    /// Replaces the recovery codes of a user with a confirmed TOTP
    /// credential; `false` (nothing changed) without one.
    async fn replace_recovery_codes(&self, user_id: &str, hashes: &[String]) -> Result<bool>;
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    token_hash: String,
    purpose: String,
    user_id: String,
    email: String,
    created_at: i64,
    expires_at: i64,
}

impl From<LinkRow> for EmailLink {
    fn from(r: LinkRow) -> Self {
        EmailLink {
            token_hash: r.token_hash,
            purpose: r.purpose,
            user_id: r.user_id,
            email: r.email,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

#[async_trait]
impl<DB: Backend> SelfServiceStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
{
    async fn insert_email_link(&self, link: &EmailLink) -> Result<()> {
        sqlx::query(
            "INSERT INTO email_links (token_hash, purpose, user_id, email, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.token_hash)
        .bind(&link.purpose)
        .bind(&link.user_id)
        .bind(&link.email)
        .bind(link.created_at)
        .bind(link.expires_at)
        .execute(&self.pools.write)
        .await
        .map_err(conflict("email link"))?;
        Ok(())
    }

    async fn email_link(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<EmailLink>> {
        Ok(sqlx::query_as::<_, LinkRow>(
            "SELECT token_hash, purpose, user_id, email, created_at, expires_at FROM email_links \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&self.pools.write)
        .await?
        .map(EmailLink::from))
    }

    async fn spend_email_link(
        &self,
        token_hash: &str,
        purpose: &str,
        effect: LinkEffect<'_>,
        now: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.pools.write.begin().await?;
        let spent: Option<(String, String)> = sqlx::query_as(
            "UPDATE email_links SET used_at = $3 \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING user_id, email",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, email)) = spent else {
            return Ok(None);
        };
        let updated = sqlx::query(
            "UPDATE users SET email_verified = TRUE, \
             password_hash = COALESCE($3, password_hash), \
             state = CASE WHEN $4 AND state = 'invited' AND COALESCE($3, password_hash) <> '' \
             THEN 'active' ELSE state END \
             WHERE id = $1 AND lower(email) = lower($2)",
        )
        .bind(&user_id)
        .bind(&email)
        .bind(effect.password_hash)
        .bind(effect.activate)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            // The address changed since: the link is spent, and proves nothing.
            tx.commit().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(user_id))
    }

    async fn change_email(&self, user_id: &str, email: &str) -> Result<bool> {
        let changed =
            sqlx::query("UPDATE users SET email = $2, email_verified = FALSE WHERE id = $1")
                .bind(user_id)
                .bind(email)
                .execute(&self.pools.write)
                .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<SsoSession>> {
        sqlx::query_as::<_, SessionRow>(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sso_sessions WHERE user_id = $1 AND expires_at > $2 \
             ORDER BY last_seen_at DESC, created_at DESC"
        )))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pools.write)
        .await?
        .into_iter()
        .map(SsoSession::try_from)
        .collect()
    }

    async fn touch_session(&self, id_hash: &str, now: i64, resolution: i64) -> Result<()> {
        sqlx::query(
            "UPDATE sso_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at <= $3",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now - resolution)
        .execute(&self.pools.write)
        .await?;
        Ok(())
    }

    async fn end_user_session(&self, user_id: &str, id_hash: &str) -> Result<bool> {
        let ended = sqlx::query("DELETE FROM sso_sessions WHERE user_id = $1 AND id_hash = $2")
            .bind(user_id)
            .bind(id_hash)
            .execute(&self.pools.write)
            .await?;
        Ok(ended.rows_affected() == 1)
    }

    async fn end_all_sessions(&self, user_id: &str, now: i64) -> Result<()> {
        let mut tx = self.pools.write.begin().await?;
        end_sessions_of(&mut tx, user_id, now, "").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_apps(&self, user_id: &str, now: i64) -> Result<Vec<AppGrant>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT client_id, COUNT(*), MAX(issued_at) FROM refresh_tokens \
             WHERE user_id = $1 AND revoked_at IS NULL AND used_at IS NULL AND expires_at > $2 \
             GROUP BY client_id ORDER BY client_id",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pools.write)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(client_id, tokens, last_used_at)| AppGrant {
                client_id,
                tokens,
                last_used_at,
            })
            .collect())
    }

    async fn revoke_user_app(&self, user_id: &str, client_id: &str, now: i64) -> Result<u64> {
        let mut tx = self.pools.write.begin().await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) \
             SELECT access_jti, access_expires_at FROM refresh_tokens \
             WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL \
             AND access_expires_at > $3 ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let revoked = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $3, expires_at = $3 \
             WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(revoked)
    }

    async fn replace_recovery_codes(&self, user_id: &str, hashes: &[String]) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        let confirmed: Option<i64> = sqlx::query_scalar(
            "SELECT confirmed_at FROM totp_credentials \
             WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if confirmed.is_none() {
            return Ok(false);
        }
        replace_recovery_codes_of(&mut tx, user_id, hashes).await?;
        tx.commit().await?;
        Ok(true)
    }
}
