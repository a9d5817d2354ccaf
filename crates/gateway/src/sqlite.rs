//! [`SessionStore`] on the gateway's own SQLite file (`<data>/gateway.db`):
//! WAL, one writer connection and a reader pool, as every Echo SQLite file,
//! and a small cache of recently read sessions in front of it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteRow, SqliteSynchronous};

use crate::session::{LISTED_SESSIONS, LoginAttempt, Session, SessionStore};
use crate::{GatewayError, Result};

/// How long a read session is served from memory.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Sessions cached at most.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SqliteSessionStore {
    read: SqlitePool,
    write: SqlitePool,
    recent: Arc<Mutex<Recent>>,
}

/// Sessions read in the last [`CACHE_TTL`], so a busy session costs no
/// database read per request. The file is this process's alone and every
/// write goes through this store, which drops the session's entry (logout
/// ends a session at once); the TTL bounds how stale an entry could be if
/// something else wrote the file.
///
/// A read that raced a write must not cache what it read before the write:
/// every write bumps `generation`, and a read caches its row only if no
/// write happened since it began.
#[derive(Debug, Default)]
struct Recent {
    generation: u64,
    sessions: HashMap<String, (Session, Instant)>,
}

impl SqliteSessionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        echo_core::sync::lock(&self.recent)
    }

    fn cached(&self, id_hash: &str) -> std::result::Result<Session, u64> {
        let recent = self.lock();
        match recent.sessions.get(id_hash) {
            Some((session, at)) if at.elapsed() < CACHE_TTL => Ok(session.clone()),
            _ => Err(recent.generation),
        }
    }

    fn remember(&self, session: &Session, generation: u64) {
        let mut recent = self.lock();
        if recent.generation != generation {
            return;
        }
        if recent.sessions.len() >= CACHE_CAPACITY {
            recent
                .sessions
                .retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if recent.sessions.len() >= CACHE_CAPACITY {
                return;
            }
        }
        let entry = (session.clone(), Instant::now());
        recent.sessions.insert(session.id_hash.clone(), entry);
    }

    /// After a write to `id_hash`'s row (`None`: to any rows).
    fn forget(&self, id_hash: Option<&str>) {
        let mut recent = self.lock();
        recent.generation += 1;
        match id_hash {
            Some(id_hash) => {
                recent.sessions.remove(id_hash);
            }
            None => recent.sessions.clear(),
        }
    }
}

impl SqliteSessionStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        // FULL: a power cut must not bring back a session that was logged
        // out or ended by a suspension.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Full);
        let echo_sql::Pools { read, write, .. } =
            echo_sql::sqlite::open_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self {
            read,
            write,
            recent: Arc::default(),
        })
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
        user_agent: row.try_get("user_agent")?,
        address: row.try_get("address")?,
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
            "INSERT INTO sessions (id_hash, subject, name, roles, created_at, last_seen_at, expires_at, access_expires_at, tokens, user_agent, address)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(&s.user_agent)
        .bind(&s.address)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>> {
        let generation = match self.cached(id_hash) {
            Ok(session) => return Ok(Some(session)),
            Err(generation) => generation,
        };
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .fetch_optional(&self.read)
            .await?;
        let session = row.as_ref().map(session_from).transpose()?;
        if let Some(session) = &session {
            self.remember(session, generation);
        }
        Ok(session)
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?")
            .bind(now)
            .bind(id_hash)
            .bind(now)
            .execute(&self.write)
            .await?;
        self.forget(Some(id_hash));
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
        self.forget(Some(id_hash));
        Ok(())
    }

    async fn user_sessions(
        &self,
        subject: &str,
        now: i64,
        idle_before: i64,
    ) -> Result<Vec<Session>> {
        let rows = sqlx::query(
            "SELECT * FROM sessions
             WHERE subject = ? AND expires_at > ? AND last_seen_at > ?
             ORDER BY last_seen_at DESC, id_hash LIMIT ?",
        )
        .bind(subject)
        .bind(now)
        .bind(idle_before)
        .bind(LISTED_SESSIONS as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(session_from).collect()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.write)
            .await?;
        self.forget(Some(id_hash));
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
        self.forget(None);
        Ok(sessions.rows_affected() + attempts.rows_affected())
    }

    async fn live_sessions(&self, now: i64, idle_before: i64) -> Result<u64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions WHERE expires_at > ? AND last_seen_at > ?",
        )
        .bind(now)
        .bind(idle_before)
        .fetch_one(&self.read)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FULL (2): a logout or an ended session is on disk when answered.
    #[tokio::test]
    async fn commits_are_fully_synchronous() {
        let dir = echo_testkit::data_dir();
        let store = SqliteSessionStore::open(&dir.path().join("sessions.db"))
            .await
            .unwrap();
        for pool in [&store.write, &store.read] {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(level, 2);
        }
    }
}
