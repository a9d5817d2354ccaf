//! The request pipeline, after Pingora's phases: each request passes
//! through a fixed sequence of steps, each a method on [`Gateway`] with the
//! request's context.
//!
//! 1. **authenticate** ([`Gateway::authenticate`], this phase): who is
//!    calling — a bearer JWT from identity (verified locally) or a browser
//!    session (idle and absolute timeouts, CSRF proof for the API, the
//!    access token refreshed when it is about to expire).
//! 2. *authorize* (phase 2): the route's required roles or scopes against
//!    the [`Principal`].
//! 3. *rate limit* (phase 2): per IP and per [`Principal::subject`].
//! 4. *choose upstream* (phase 2): the route table's path prefix → upstream.
//! 5. *rewrite* (phase 2): strip the prefix, drop the cookie and hop-by-hop
//!    headers, attach a token for the upstream's audience (token exchange
//!    from the session's access token), `X-Request-Id`, `traceparent`.
//! 6. *respond*: errors become pages or JSON in `http/error.rs`.
//!
//! The gateway's own endpoints (`/api/me`, the pages) run phase 1 and
//! answer themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use echo_core::audit::AuditEvent;
use echo_crypto::secret::token_hash;
use echo_verify::Expectations;

use crate::gateway::{Gateway, RequestMeta};
use crate::session::{Session, Tokens};
use crate::{GatewayError, Result};

/// A session is marked used at most this often (seconds), so reading a
/// session costs no write on most requests; the idle timeout is as precise.
const TOUCH_EVERY: i64 = 60;

/// Which face of the gateway a request is for: what CSRF proof it needs
/// and how failures answer (pages redirect to login, the API says 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Page,
    Api,
}

/// The credentials a request presents, as read from HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub surface: Surface,
    /// `Authorization: Bearer` (the API only).
    pub bearer: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
    /// `X-Echo-CSRF: 1` was sent: a header a cross-site page cannot set
    /// without a CORS preflight, which the gateway never grants.
    pub csrf_header: bool,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
}

/// Who is calling, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: a user id, or a client id for service tokens.
    pub subject: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// Set when the caller is a browser session.
    pub session: Option<SessionInfo>,
}

/// What pages show and need of a browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The absolute end (Unix seconds).
    pub expires_at: i64,
    /// The end if unused from now on.
    pub idle_expires_at: i64,
    /// The token this session's forms carry.
    pub csrf: String,
}

/// One async mutex per session being refreshed, so that of many requests
/// arriving as the access token expires one refreshes and the others wait
/// for its result: a refresh token is rotated on use, and racing it would
/// spend it twice. Entries live as long as someone holds or waits on them.
///
/// This serializes refreshes within one gateway process; replicas sharing
/// a session store rely on identity's grace period for a just-rotated
/// refresh token (it answers a repeat within seconds with the same
/// successor).
#[derive(Default)]
pub(crate) struct RefreshLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl RefreshLocks {
    fn lock_for(&self, id_hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = map.get(id_hash).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id_hash.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

impl Gateway {
    /// Phase 1: authenticates a request. `Ok(None)` is an anonymous page
    /// request; the API always needs credentials.
    ///
    /// The API takes a bearer token first (no CSRF question: browsers never
    /// attach one on their own); a session on the API needs `X-Echo-CSRF`
    /// and, if an `Origin` is sent, this gateway's.
    pub async fn authenticate(
        &self,
        presented: &Presented<'_>,
        meta: &RequestMeta,
    ) -> Result<Option<Principal>> {
        if presented.surface == Surface::Api {
            if let Some(token) = presented.bearer {
                return self.bearer_principal(token).await.map(Some);
            }
            if presented.session.is_none() {
                return Err(GatewayError::NotSignedIn);
            }
            self.check_origin(presented.origin, meta)?;
            if !presented.csrf_header {
                self.refuse_csrf("session API call without X-Echo-CSRF", meta)?;
            }
        }
        let Some(token) = presented.session else {
            return Ok(None);
        };
        let session = self.live_session(token, meta).await?;
        Ok(Some(Principal {
            subject: session.subject,
            name: session.name,
            roles: session.roles,
            session: Some(SessionInfo {
                expires_at: session.expires_at,
                idle_expires_at: (session.last_seen_at + self.config.session_idle_ttl)
                    .min(session.expires_at),
                csrf: self.csrf_token(&session.id_hash),
            }),
        }))
    }

    /// Verified locally against identity's JWKS: no call to identity.
    async fn bearer_principal(&self, token: &str) -> Result<Principal> {
        let claims = self
            .verifier
            .verify(token, &Expectations::access_token(&self.config.audience))
            .await?;
        let name = ["preferred_username", "name"]
            .iter()
            .find_map(|claim| claims.other.get(*claim).and_then(|v| v.as_str()))
            .map(str::to_owned);
        Ok(Principal {
            subject: claims.sub.clone(),
            name,
            roles: claims.roles.clone(),
            session: None,
        })
    }

    /// The session named by the cookie value `token`, if it is live, with
    /// an access token good for a while yet.
    async fn live_session(&self, token: &str, meta: &RequestMeta) -> Result<Session> {
        let id_hash = token_hash(token);
        let mut session = self
            .store
            .session(&id_hash)
            .await?
            .ok_or(GatewayError::SessionExpired)?;
        let now = self.clock.now();
        if now >= session.expires_at {
            return self.end_session(&session, "absolute_timeout", meta).await;
        }
        if now >= session.last_seen_at + self.config.session_idle_ttl {
            return self.end_session(&session, "idle_timeout", meta).await;
        }
        if session.access_expires_at - self.config.refresh_margin <= now {
            session = self.refresh(&id_hash, meta).await?;
        }
        if now - session.last_seen_at >= TOUCH_EVERY {
            self.store.touch_session(&id_hash, now).await?;
            session.last_seen_at = now;
        }
        Ok(session)
    }

    async fn end_session<T>(
        &self,
        session: &Session,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<T> {
        self.store.delete_session(&session.id_hash).await?;
        self.audit(
            AuditEvent::success("gateway.session.expired")
                .actor(session.subject.as_str())
                .detail("reason", reason),
            meta,
        );
        Err(GatewayError::SessionExpired)
    }

    /// RFC 6749 §6, one at a time per session: whoever gets the lock first
    /// refreshes; the others find the new token when they get it.
    async fn refresh(&self, id_hash: &str, meta: &RequestMeta) -> Result<Session> {
        let lock = self.refreshing.lock_for(id_hash);
        let _one_at_a_time = lock.lock().await;
        let current = self
            .store
            .session(id_hash)
            .await?
            .ok_or(GatewayError::SessionExpired)?;
        if current.access_expires_at - self.config.refresh_margin > self.clock.now() {
            return Ok(current);
        }
        let tokens = Tokens::open(&self.sealer, id_hash, &current.tokens)?;
        let Some(refresh_token) = tokens.refresh_token.as_deref() else {
            return self
                .end_session(&current, "access_token_expired", meta)
                .await;
        };
        let answer = match self.identity.refresh(refresh_token).await {
            Ok(answer) => answer,
            Err(GatewayError::IdentityRefused(_)) => {
                return self.end_session(&current, "refresh_refused", meta).await;
            }
            Err(e) => return Err(e),
        };
        let claims = match self
            .verify_issued(
                &answer.access_token,
                &Expectations::access_token(&self.config.audience),
            )
            .await
        {
            Ok(claims) if claims.sub == current.subject => claims,
            Ok(_) | Err(GatewayError::LoginFailed(_)) => {
                return self
                    .end_session(&current, "refreshed_token_refused", meta)
                    .await;
            }
            Err(e) => return Err(e),
        };
        let tokens = Tokens {
            access_token: answer.access_token,
            // RFC 6749 §6: the old one stays if no new one is issued.
            refresh_token: answer.refresh_token.or(tokens.refresh_token),
            id_token: tokens.id_token,
        };
        let sealed = tokens.seal(&self.sealer, id_hash)?;
        self.store
            .update_tokens(id_hash, &sealed, claims.exp, &claims.roles)
            .await?;
        Ok(Session {
            tokens: sealed,
            access_expires_at: claims.exp,
            roles: claims.roles.clone(),
            ..current
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_locks_are_shared_per_session_and_dropped_after_use() {
        let locks = RefreshLocks::default();
        let a = locks.lock_for("a");
        assert!(Arc::ptr_eq(&a, &locks.lock_for("a")));
        assert!(!Arc::ptr_eq(&a, &locks.lock_for("b")));
        drop(a);
        let _c = locks.lock_for("c");
        let map = locks.0.lock().unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec!["c"],
            "unused entries go"
        );
    }
}
