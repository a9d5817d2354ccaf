//! The request pipeline, after Pingora's phases: each request passes
//! through a fixed sequence of steps, each a method on [`Gateway`] with the
//! request's context, each able to end the request with a
//! [`GatewayError`] (which records whose fault it is: downstream,
//! upstream or internal).
//!
//! 0. **admit** ([`Gateway::admit`]): the per-IP bucket, before anything
//!    that costs (so floods of bad credentials are slowed too). Every
//!    request but static files and health checks.
//! 1. **route** ([`Gateway::forward`]): the route table's longest path
//!    prefix; none is a 404.
//! 2. **authenticate** ([`Gateway::authenticate`]): who is calling — a
//!    bearer JWT from identity (verified locally) or a browser session
//!    (idle and absolute timeouts, CSRF proof for the API, the access
//!    token refreshed when it is about to expire).
//! 3. **authorize** (`authorize`): the route's roles (any one) and scopes
//!    (all) against the [`Principal`]; 403 otherwise.
//! 4. **rate limit** (`rate_limit`): per user, and the route's own
//!    buckets per IP and per user; 429 with `Retry-After`, audited once
//!    per window per key.
//! 5. **upstream token** (`Gateway::token_for`, `exchange.rs`): the
//!    caller's token traded at identity for one whose `aud` is the
//!    upstream (RFC 8693, the gateway as `act`), cached.
//! 6. **rewrite** (`rewrite`): the prefix stripped, the cookie, the
//!    caller's `Authorization` and hop-by-hop headers dropped, the new
//!    token, `X-Request-Id` and `traceparent` set.
//! 7. **forward** (`send`): streamed to the upstream and back within the
//!    route's timeout (until the response head): no answer is a 502, too
//!    late a 504. The upstream's own status codes pass through.
//! 8. **respond**: errors become pages or JSON in `http/error.rs`.
//!
//! The gateway's own endpoints (`/api/me`, the pages) run phases 0 and 2
//! and answer themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, SET_COOKIE};
use axum::http::{HeaderValue, Request, Response, Uri, Version};
use echo_core::audit::AuditEvent;
use echo_crypto::secret::token_hash;
use echo_verify::Expectations;

use crate::gateway::{Gateway, RequestMeta};
use crate::http::CSRF_HEADER;
use crate::proxy::{
    REQUEST_ID, TRACEPARENT, request_id, set_forwarded_for, strip_hop_by_hop, traceparent,
};
use crate::routes::{Limit, Route};
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
    /// The bearer token's `scope`; for a session, the scopes the gateway
    /// asks for at login.
    pub scopes: Vec<String>,
    /// Set when the caller is a browser session.
    pub session: Option<SessionInfo>,
    /// What the caller's token can be traded from.
    pub(crate) credential: Credential,
}

impl Principal {
    /// Whether the caller has any of `roles`.
    pub fn has_any_role(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

/// The caller's token: as presented, or sealed in the session (opened
/// only when a request needs it upstream).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Bearer(String),
    Session {
        id_hash: String,
        sealed: Vec<u8>,
        /// When the sealed access token expires: it changes with every
        /// refresh, so it tells the session's tokens apart without opening
        /// them.
        access_expires_at: i64,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
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
            scopes: self.config.scopes.split(' ').map(str::to_owned).collect(),
            credential: Credential::Session {
                id_hash: session.id_hash.clone(),
                sealed: session.tokens,
                access_expires_at: session.access_expires_at,
            },
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
            scopes: claims
                .scope
                .as_deref()
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            session: None,
            credential: Credential::Bearer(token.to_owned()),
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

impl Gateway {
    /// Phase 0: the per-IP bucket of every request.
    pub fn admit(&self, meta: &RequestMeta) -> Result<()> {
        match (&meta.ip, self.config.rate_limits.per_ip) {
            (Some(ip), Some(limit)) => self.take(&format!("ip {ip}"), limit, "per_ip", None, meta),
            _ => Ok(()),
        }
    }

    /// Phases 1 to 7 for a request under a route's prefix: the upstream's
    /// response, its body streamed.
    pub async fn forward(
        &self,
        presented: &Presented<'_>,
        request: Request<Body>,
        meta: &RequestMeta,
    ) -> Result<Response<Body>> {
        let route = self
            .config
            .routes
            .find(request.uri().path())
            .ok_or(GatewayError::NotFound)?;
        let principal =
            self.authenticate(presented, meta)
                .await?
                .ok_or(match presented.surface {
                    Surface::Page => GatewayError::SessionExpired,
                    Surface::Api => GatewayError::NotSignedIn,
                })?;
        self.authorize(route, &principal, meta)?;
        self.rate_limit(route, &principal, meta)?;
        let token = self.token_for(&principal, &route.audience).await?;
        let (request, request_id) = rewrite(route, request, &token, meta)?;
        self.send(route, request, request_id).await
    }

    /// Phase 3: any one of the route's roles (if it names any) and all of
    /// its scopes.
    fn authorize(&self, route: &Route, principal: &Principal, meta: &RequestMeta) -> Result<()> {
        let has_role =
            route.roles.is_empty() || principal.roles.iter().any(|r| route.roles.contains(r));
        let has_scopes = route.scopes.iter().all(|s| principal.scopes.contains(s));
        if has_role && has_scopes {
            return Ok(());
        }
        self.audit(
            AuditEvent::failure("gateway.route.denied")
                .actor(principal.subject.as_str())
                .detail("route", route.prefix.as_str()),
            meta,
        );
        Err(GatewayError::Forbidden(
            "you do not have the role or scope this needs".into(),
        ))
    }

    /// Phase 4: the caller's bucket, then the route's (per IP and per
    /// user).
    fn rate_limit(&self, route: &Route, principal: &Principal, meta: &RequestMeta) -> Result<()> {
        let user = principal.subject.as_str();
        if let Some(limit) = self.config.rate_limits.per_user {
            self.take(&format!("user {user}"), limit, "per_user", Some(user), meta)?;
        }
        if let Some(limit) = route.rate_limit {
            if let Some(ip) = &meta.ip {
                let key = format!("route {} ip {ip}", route.prefix);
                self.take(&key, limit, "route_per_ip", Some(user), meta)?;
            }
            let key = format!("route {} user {user}", route.prefix);
            self.take(&key, limit, "route_per_user", Some(user), meta)?;
        }
        Ok(())
    }

    /// One token from `key`'s bucket; a refusal is audited once per
    /// window per key.
    fn take(
        &self,
        key: &str,
        limit: Limit,
        which: &'static str,
        actor: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<()> {
        self.limiter
            .check(key, limit, Instant::now())
            .map_err(|refusal| {
                if refusal.first_in_window {
                    let mut event = AuditEvent::failure("gateway.rate_limited")
                        .detail("limit", which)
                        .detail("key", key);
                    if let Some(actor) = actor {
                        event = event.actor(actor);
                    }
                    self.audit(event, meta);
                }
                GatewayError::RateLimited {
                    retry_after: refusal.retry_after,
                }
            })
    }

    /// Phase 7: the rewritten request to the upstream, within the route's
    /// timeout for the response head; the body streams after it.
    async fn send(
        &self,
        route: &Route,
        request: Request<Body>,
        request_id: HeaderValue,
    ) -> Result<Response<Body>> {
        let upstream = || route.origin.clone();
        let answer = tokio::time::timeout(route.timeout, self.upstreams.request(request))
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                upstream: upstream(),
            })?
            .map_err(|e| GatewayError::UpstreamUnavailable {
                upstream: upstream(),
                cause: match std::error::Error::source(&e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                },
            })?;
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The gateway owns the cookies of its origin.
        parts.headers.remove(SET_COOKIE);
        parts.headers.insert(REQUEST_ID, request_id);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Phase 6: the request as the upstream gets it, and its request id.
fn rewrite(
    route: &Route,
    request: Request<Body>,
    token: &str,
    meta: &RequestMeta,
) -> Result<(Request<Body>, HeaderValue)> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = format!("{}{}", route.origin, route.upstream_path(path))
        .parse::<Uri>()
        .map_err(|e| GatewayError::BadRequest(format!("unusable path: {e}")))?;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    let id = request_id(headers);
    let trace = traceparent(headers);
    strip_hop_by_hop(headers);
    headers.remove(COOKIE);
    headers.remove(HOST);
    headers.remove(CSRF_HEADER);
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| GatewayError::Identity("a token that is no header value".into()))?;
    headers.insert(AUTHORIZATION, bearer);
    headers.insert(REQUEST_ID, id.clone());
    headers.insert(TRACEPARENT, trace);
    set_forwarded_for(headers, meta.ip.as_deref());
    Ok((Request::from_parts(parts, body), id))
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
