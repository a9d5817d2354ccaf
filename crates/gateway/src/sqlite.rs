//! [`SessionStore`] on the gateway's own SQLite file (`<data>/gateway.db`):
//! WAL, one writer connection and a reader pool, as every Echo SQLite file.

use std::path::Path;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteRow, SqliteSynchronous};

use crate::session::{LoginAttempt, Session, SessionStore};
use crate::{GatewayError, Result};

#[derive(Debug, Clone)]
pub struct SqliteSessionStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteSessionStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        // Sessions can be recreated by signing in again: a power cut may
        // lose the last commits, which `NORMAL` trades for speed.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal);
        let (read, write) =
            echo_store::open_sqlite_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { read, write })
    }
}

fn session_from(row: &SqliteRow) -> Result<Session> {
    let roles: String = row.try_get("roles")?;
    Ok(Session {
        id_hash: row.try_get("id_hash")?,
        subject: row.try_get("subject")?,
        name: row.try_get("name")?,
        roles: serde_json::from_str(&roles).map_err(|e| GatewayError::Storage(Box::new(e)))?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        access_expires_at: row.try_get("access_expires_at")?,
        tokens: row.try_get("tokens")?,
    })
}

fn roles_json(roles: &[String]) -> String {
    serde_json::Value::from(roles).to_string()
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn insert_attempt(&self, a: &LoginAttempt) -> Result<()> {
        sqlx::query(
            "INSERT INTO login_attempts (state_hash, browser_hash, nonce, pkce_verifier, return_to, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.state_hash)
        .bind(&a.browser_hash)
        .bind(&a.nonce)
        .bind(&a.pkce_verifier)
        .bind(&a.return_to)
        .bind(a.expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn take_attempt(&self, state_hash: &str) -> Result<Option<LoginAttempt>> {
        let row = sqlx::query(
            "DELETE FROM login_attempts WHERE state_hash = ?
             RETURNING state_hash, browser_hash, nonce, pkce_verifier, return_to, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.write)
        .await?;
        row.map(|row| {
            Ok(LoginAttempt {
                state_hash: row.try_get("state_hash")?,
                browser_hash: row.try_get("browser_hash")?,
                nonce: row.try_get("nonce")?,
                pkce_verifier: row.try_get("pkce_verifier")?,
                return_to: row.try_get("return_to")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn insert_session(&self, s: &Session) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, subject, name, roles, created_at, last_seen_at, expires_at, access_expires_at, tokens)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.subject)
        .bind(&s.name)
        .bind(roles_json(&s.roles))
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.access_expires_at)
        .bind(&s.tokens)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(session_from).transpose()
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?")
            .bind(now)
            .bind(id_hash)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn update_tokens(
        &self,
        id_hash: &str,
        tokens: &[u8],
        access_expires_at: i64,
        roles: &[String],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET tokens = ?, access_expires_at = ?, roles = ? WHERE id_hash = ?",
        )
        .bind(tokens)
        .bind(access_expires_at)
        .bind(roles_json(roles))
        .bind(id_hash)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge(&self, now: i64, idle_before: i64) -> Result<u64> {
        let sessions =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?")
                .bind(now)
                .bind(idle_before)
                .execute(&self.write)
                .await?;
        let attempts = sqlx::query("DELETE FROM login_attempts WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(sessions.rows_affected() + attempts.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, last_seen_at: i64, expires_at: i64) -> Session {
        Session {
            id_hash: id.into(),
            subject: "u1".into(),
            name: Some("alice".into()),
            roles: vec!["admin".into()],
            created_at: 0,
            last_seen_at,
            expires_at,
            access_expires_at: 10,
            tokens: vec![1, 2, 3],
        }
    }

    #[tokio::test]
    async fn attempts_are_single_use_and_sessions_round_trip() {
        let dir = echo_testkit::data_dir();
        let store = SqliteSessionStore::open(&dir.path().join("gateway.db"))
            .await
            .unwrap();
        let attempt = LoginAttempt {
            state_hash: "s".into(),
            browser_hash: "b".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/x".into(),
            expires_at: 100,
        };
        store.insert_attempt(&attempt).await.unwrap();
        assert_eq!(store.take_attempt("s").await.unwrap(), Some(attempt));
        assert_eq!(store.take_attempt("s").await.unwrap(), None);

        store.insert_session(&session("a", 50, 1000)).await.unwrap();
        store
            .insert_session(&session("idle", 10, 1000))
            .await
            .unwrap();
        store.insert_session(&session("old", 50, 60)).await.unwrap();
        store.touch_session("a", 70).await.unwrap();
        store
            .update_tokens("a", &[9], 500, &["auditor".into()])
            .await
            .unwrap();
        let a = store.session("a").await.unwrap().unwrap();
        assert_eq!(
            (a.last_seen_at, a.access_expires_at, a.tokens, a.roles),
            (70, 500, vec![9], vec!["auditor".to_owned()])
        );
        assert_eq!(store.purge(60, 20).await.unwrap(), 2, "idle and old");
        assert!(store.session("a").await.unwrap().is_some());
        assert!(store.delete_session("a").await.unwrap());
        assert!(!store.delete_session("a").await.unwrap());
    }
}
