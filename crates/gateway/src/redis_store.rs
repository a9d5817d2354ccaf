//! [`SessionStore`] on Redis (`ECHO_REDIS_URL`), for gateways that share
//! their sessions or keep nothing on local disk. A `rediss://` URL speaks
//! TLS, trusting the roots it is given (the system's and `ECHO_CA_FILE`'s).
//!
//! Keys, under a prefix (default `echo:gateway:`):
//!
//! - `<prefix>attempt:<state hash>`: the [`LoginAttempt`] as JSON, expiring
//!   at its `expires_at`; taken with `GETDEL`, so a `state` works once.
//! - `<prefix>session:<id hash>`: a hash with the fields of the SQLite row
//!   (`subject`, `name`, `roles` as JSON, `created_at`, `last_seen_at`,
//!   `expires_at`, `access_expires_at`, and `tokens` still sealed),
//!   expiring at the idle end (`last_seen_at` + idle timeout) or the
//!   absolute end, whichever comes first; each touch moves it. Also
//!   `user_agent` and `address`, what the user's sessions page shows.
//! - `<prefix>user:<subject>`: a set of the subject's session id hashes,
//!   so their sessions page finds them; it expires with the subject's
//!   last session to end, and ids whose session is gone are dropped as
//!   the page is read.
//! - `<prefix>refresh:<id hash>`: the session's refresh lock
//!   ([`SharedLock`]): a random token, set only if absent, expiring by
//!   itself; deleted only by the holder of that token.
//!
//! Redis deletes ended sessions and attempts itself, so [`purge`] has
//! nothing to do. Expiry follows the Redis server's clock; the gateway
//! still checks both timeouts on every request with its own.
//!
//! [`purge`]: SessionStore::purge

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::refresh_lock::SharedLock;
use crate::session::{LISTED_SESSIONS, LoginAttempt, Session, SessionStore};
use crate::{GatewayError, Result};

/// The key prefix unless configured otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "echo:gateway:";

/// Moves `last_seen_at` forward (never back) and the key's expiry with it.
/// KEYS[1] session; ARGV now, idle timeout.
const TOUCH: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen_at'))
local now = tonumber(ARGV[1])
if not last or last >= now then return 0 end
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
local absolute = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
redis.call('EXPIREAT', KEYS[1], math.min(now + tonumber(ARGV[2]), absolute))
return 1
";

/// Replaces the tokens of a session that still exists (never recreates an
/// expired one). KEYS[1] session; ARGV tokens, access expiry, roles.
const UPDATE_TOKENS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'access_expires_at', ARGV[2], 'roles', ARGV[3])
return 1
";

/// Adds a session to its user's set, which lives at least as long as the
/// session can. KEYS[1] the user's set; ARGV id hash, seconds the session
/// can live.
const INDEX: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// Deletes a lock only for the token holding it. KEYS[1] lock; ARGV token.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Clone)]
pub struct RedisSessionStore {
    redis: ConnectionManager,
    prefix: String,
    /// The idle timeout (seconds): a session key expires this long after
    /// its last recorded use.
    idle_ttl: i64,
    touch: Script,
    update_tokens: Script,
    index: Script,
    unlock: Script,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .field("idle_ttl", &self.idle_ttl)
            .finish_non_exhaustive()
    }
}

impl From<redis::RedisError> for GatewayError {
    fn from(e: redis::RedisError) -> Self {
        GatewayError::Storage(Box::new(e))
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> GatewayError {
    GatewayError::Storage(Box::new(e))
}

impl RedisSessionStore {
    /// Connects to `url` (`redis://host:port[/db]`, or `rediss://…` for
    /// TLS, trusting `roots`); keys go under `prefix`, sessions expire
    /// `idle_ttl` seconds after their last recorded use. The connection
    /// reconnects by itself.
    pub async fn open(
        url: &str,
        roots: &TrustedRoots,
        prefix: &str,
        idle_ttl: i64,
    ) -> Result<Self> {
        let client = echo_edge::redis_client(url, roots)?;
        Ok(Self {
            redis: ConnectionManager::new(client).await?,
            prefix: prefix.to_owned(),
            idle_ttl,
            touch: Script::new(TOUCH),
            update_tokens: Script::new(UPDATE_TOKENS),
            index: Script::new(INDEX),
            unlock: Script::new(UNLOCK),
        })
    }

    fn attempt_key(&self, state_hash: &str) -> String {
        format!("{}attempt:{state_hash}", self.prefix)
    }

    fn session_key(&self, id_hash: &str) -> String {
        format!("{}session:{id_hash}", self.prefix)
    }

    fn user_key(&self, subject: &str) -> String {
        format!("{}user:{subject}", self.prefix)
    }

    fn lock_key(&self, id_hash: &str) -> String {
        format!("{}refresh:{id_hash}", self.prefix)
    }
}

fn roles_json(roles: &[String]) -> String {
    serde_json::Value::from(roles).to_string()
}

/// A session from its hash's fields; `None` for a key that is gone.
fn session_from(id_hash: &str, mut fields: HashMap<String, Vec<u8>>) -> Result<Option<Session>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| GatewayError::Storage(format!("session without {name}").into()))
    };
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(storage);
    let number = |bytes: Vec<u8>| -> Result<i64> { text(bytes)?.parse().map_err(storage) };
    let subject = text(take("subject")?)?;
    let roles = serde_json::from_slice(&take("roles")?).map_err(storage)?;
    let created_at = number(take("created_at")?)?;
    let last_seen_at = number(take("last_seen_at")?)?;
    let expires_at = number(take("expires_at")?)?;
    let access_expires_at = number(take("access_expires_at")?)?;
    let tokens = take("tokens")?;
    let name = fields.remove("name").map(text).transpose()?;
    // Absent from sessions stored before the sessions page.
    let mut optional = |name: &str| fields.remove(name).map(text).unwrap_or(Ok(String::new()));
    let user_agent = optional("user_agent")?;
    let address = optional("address")?;
    Ok(Some(Session {
        id_hash: id_hash.to_owned(),
        subject,
        name,
        roles,
        created_at,
        last_seen_at,
        expires_at,
        access_expires_at,
        tokens,
        user_agent,
        address,
    }))
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn insert_attempt(&self, attempt: &LoginAttempt) -> Result<()> {
        let json = serde_json::to_string(attempt).map_err(storage)?;
        let options = redis::SetOptions::default()
            .with_expiration(redis::SetExpiry::EXAT(attempt.expires_at.max(1) as u64));
        let () = self
            .redis
            .clone()
            .set_options(self.attempt_key(&attempt.state_hash), json, options)
            .await?;
        Ok(())
    }

    async fn take_attempt(&self, state_hash: &str) -> Result<Option<LoginAttempt>> {
        let json: Option<String> = self
            .redis
            .clone()
            .get_del(self.attempt_key(state_hash))
            .await?;
        json.map(|json| serde_json::from_str(&json).map_err(storage))
            .transpose()
    }

    async fn insert_session(&self, s: &Session) -> Result<()> {
        let key = self.session_key(&s.id_hash);
        let mut fields: Vec<(&str, Vec<u8>)> = vec![
            ("subject", s.subject.clone().into_bytes()),
            ("roles", roles_json(&s.roles).into_bytes()),
            ("created_at", s.created_at.to_string().into_bytes()),
            ("last_seen_at", s.last_seen_at.to_string().into_bytes()),
            ("expires_at", s.expires_at.to_string().into_bytes()),
            (
                "access_expires_at",
                s.access_expires_at.to_string().into_bytes(),
            ),
            ("tokens", s.tokens.clone()),
            ("user_agent", s.user_agent.clone().into_bytes()),
            ("address", s.address.clone().into_bytes()),
        ];
        if let Some(name) = &s.name {
            fields.push(("name", name.clone().into_bytes()));
        }
        let ends = (s.last_seen_at + self.idle_ttl).min(s.expires_at);
        let () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire_at(&key, ends)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        let _indexed: i64 = self
            .index
            .key(self.user_key(&s.subject))
            .arg(&s.id_hash)
            .arg((s.expires_at - s.last_seen_at).max(1))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>> {
        let fields: HashMap<String, Vec<u8>> = self
            .redis
            .clone()
            .hgetall(self.session_key(id_hash))
            .await?;
        session_from(id_hash, fields)
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        let _moved: i64 = self
            .touch
            .key(self.session_key(id_hash))
            .arg(now)
            .arg(self.idle_ttl)
            .invoke_async(&mut self.redis.clone())
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
        let _updated: i64 = self
            .update_tokens
            .key(self.session_key(id_hash))
            .arg(tokens)
            .arg(access_expires_at)
            .arg(roles_json(roles))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    async fn user_sessions(
        &self,
        subject: &str,
        now: i64,
        idle_before: i64,
    ) -> Result<Vec<Session>> {
        let mut redis = self.redis.clone();
        let user_key = self.user_key(subject);
        let ids: Vec<String> = redis.smembers(&user_key).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = redis::pipe();
        for id in &ids {
            read.hgetall(self.session_key(id));
        }
        let rows: Vec<HashMap<String, Vec<u8>>> = read.query_async(&mut redis).await?;
        let mut sessions = Vec::new();
        let mut gone = Vec::new();
        for (id, fields) in ids.iter().zip(rows) {
            match session_from(id, fields)? {
                Some(s) if s.subject == subject => {
                    if s.expires_at > now && s.last_seen_at > idle_before {
                        sessions.push(s);
                    }
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _removed: i64 = redis.srem(&user_key, gone).await?;
        }
        sessions.sort_by(|a, b| (b.last_seen_at, &a.id_hash).cmp(&(a.last_seen_at, &b.id_hash)));
        sessions.truncate(LISTED_SESSIONS);
        Ok(sessions)
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let deleted: u64 = self.redis.clone().del(self.session_key(id_hash)).await?;
        Ok(deleted > 0)
    }

    /// Nothing to do: every key carries its own expiry.
    async fn purge(&self, _now: i64, _idle_before: i64) -> Result<u64> {
        Ok(0)
    }

    /// Every session key is alive (each expires on its own), counted by a
    /// SCAN, which never blocks the server for long.
    async fn live_sessions(&self, _now: i64, _idle_before: i64) -> Result<u64> {
        let mut redis = self.redis.clone();
        let mut keys: redis::AsyncIter<'_, String> = redis
            .scan_match(format!("{}session:*", self.prefix))
            .await?;
        let mut count = 0;
        while let Some(key) = keys.next_item().await {
            key?;
            count += 1;
        }
        Ok(count)
    }

    fn shared_lock(&self) -> Option<Arc<dyn SharedLock>> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait]
impl SharedLock for RedisSessionStore {
    async fn try_lock(&self, id_hash: &str, token: &str, ttl: Duration) -> Result<bool> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl_ms));
        let taken: Option<String> = self
            .redis
            .clone()
            .set_options(self.lock_key(id_hash), token, options)
            .await?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, id_hash: &str, token: &str) -> Result<()> {
        let _deleted: i64 = self
            .unlock
            .key(self.lock_key(id_hash))
            .arg(token)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}
