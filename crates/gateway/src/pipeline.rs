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
//!    bearer JWT from identity (verified locally by the edge's gate, which
//!    audits every refusal) or a browser session
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
//!    late a 504. The upstream's own status codes pass through. A request
//!    that may change state (not GET, HEAD, OPTIONS or TRACE) is audited as
//!    `gateway.request.forwarded`, with its route, method and status.
//! 8. **respond**: errors become pages (with a redirect to login) or
//!    problem+json, by the request's [`Surface`], in `http/error.rs`.
//!
//! The gateway's own endpoints (`/api/me`, the pages) run phases 0 and 2
//! and answer themselves.

use std::time::Instant;

use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Method, Request, Response, Uri, Version};
use echo_core::Scope;
use echo_core::audit::AuditEvent;
use echo_crypto::secret::{b64url, token_hash};
use echo_edge::{Caller, Limit, Origin, REQUEST_ID, Reason, TRACEPARENT};
use echo_verify::Expectations;

use crate::gateway::Gateway;
use crate::principal::{Credential, Presented, Principal, SessionInfo, Surface};
use crate::proxy::{is_client_claim, keep_end_to_end, set_forwarded};
use crate::routes::Route;
use crate::session::{Session, Tokens};
use crate::{GatewayError, Result};

/// A request the first phases let through: its route and its caller.
pub struct Admitted<'g> {
    route: &'g Route,
    principal: Principal,
}

/// A session is marked used at most this often (seconds), so reading a
/// session costs no write on most requests; the idle timeout is as precise.
const TOUCH_EVERY: i64 = 60;

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
        meta: &Origin,
    ) -> Result<Option<Principal>> {
        if presented.surface == Surface::Api {
            if let Some(token) = presented.bearer {
                let caller = self.gate.authenticate_bearer(Some(token), meta).await?;
                // token_hash(token), from the digest the gate made.
                let key = b64url(&caller.token_digest);
                if self.liveness.due(&key, Instant::now()) && !self.still_active(token).await {
                    self.tokens.forget(&key);
                    let refusal = self
                        .gate
                        .refuse(Reason::Revoked, Some(&caller.claims), meta);
                    return Err(GatewayError::Refused(refusal));
                }
                return Ok(Some(bearer_principal(caller, token, key)));
            }
            if presented.session.is_none() {
                // No credentials at all: refused (and audited) as every
                // service refuses a request without a token.
                return Err(self
                    .gate
                    .authenticate_bearer(None, meta)
                    .await
                    .err()
                    .map_or(GatewayError::NotSignedIn, GatewayError::Refused));
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
            scopes: Scope::parse(&self.config.scopes),
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

    /// The session named by the cookie value `token`, if it is live, with
    /// an access token good for a while yet.
    async fn live_session(&self, token: &str, meta: &Origin) -> Result<Session> {
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
        // After the refresh: the tokens asked about are the current ones.
        // Before it, a request could ask about the refresh token another
        // request of the session had just rotated, and end a live session.
        if self.liveness.due(&id_hash, Instant::now()) {
            let tokens = Tokens::open(&self.sealer, &id_hash, &session.tokens)?;
            let credential = tokens.refresh_token.as_deref();
            if !self
                .still_active(credential.unwrap_or(&tokens.access_token))
                .await
            {
                self.tokens.forget(&id_hash);
                return self.end_session(&session, "revoked", meta).await;
            }
        }
        if now - session.last_seen_at >= TOUCH_EVERY {
            self.store.touch_session(&id_hash, now).await?;
            session.last_seen_at = now;
        }
        Ok(session)
    }

    /// Whether identity still honours `token` (see `liveness.rs`); while
    /// identity cannot say, the verified token is trusted.
    async fn still_active(&self, token: &str) -> bool {
        match self.identity.is_active(token).await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm a credential with identity; trusting it until the next check");
                true
            }
        }
    }

    async fn end_session<T>(&self, session: &Session, reason: &str, meta: &Origin) -> Result<T> {
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
    async fn refresh(&self, id_hash: &str, meta: &Origin) -> Result<Session> {
        let _one_at_a_time = self.refreshing.lock(id_hash).await?;
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
    pub async fn admit(&self, meta: &Origin) -> Result<()> {
        match (&meta.client_ip, self.config.rate_limits.per_ip) {
            (Some(ip), Some(limit)) => {
                let key = bucket_key(&["ip "], Some(*ip));
                self.take(&key, limit, "per_ip", None, meta).await
            }
            _ => Ok(()),
        }
    }

    /// Phases 1 to 4 for a request under a route's prefix: its route and
    /// the caller, allowed through. The request's path is normalised
    /// ([`crate::normalise`]); `dotted` is the path as sent when it held
    /// `.` or `..` segments, which may not lead out of the route the path
    /// as sent names.
    pub async fn admit_to_route(
        &self,
        presented: &Presented<'_>,
        (method, path): (&Method, &str),
        dotted: Option<&str>,
        meta: &Origin,
    ) -> Result<Admitted<'_>> {
        let route = self.config.routes.find(path);
        if let Some(sent) = dotted
            && self.config.routes.find(sent) != route
        {
            return Err(GatewayError::BadRequest(
                "the path's dot segments lead out of its route".into(),
            ));
        }
        let route = route.ok_or(GatewayError::NotFound)?;
        let principal = self
            .authenticate(presented, meta)
            .await?
            .ok_or(GatewayError::NotSignedIn)?;
        if principal.session.is_some() && !method.is_safe() {
            self.check_page_csrf(presented, meta)?;
        }
        self.authorize(route, &principal, meta)?;
        self.rate_limit(route, &principal, meta).await?;
        Ok(Admitted { route, principal })
    }

    /// Phases 5 to 7 for an admitted request: the upstream's response, its
    /// body streamed.
    pub async fn forward(
        &self,
        admitted: Admitted<'_>,
        request: Request<Body>,
        meta: &Origin,
    ) -> Result<Response<Body>> {
        let Admitted { route, principal } = admitted;
        let bearer = self.token_for(&principal, &route.audience).await?;
        let method = request.method().clone();
        let (request, request_id) = self.rewrite(route, request, bearer, meta)?;
        let answer = self.send(route, request, request_id).await;
        if !method.is_safe() {
            // `send` fails only with no answer (502) or one too late (504).
            let status = match &answer {
                Ok(response) => response.status().as_u16(),
                Err(GatewayError::UpstreamTimeout { .. }) => 504,
                Err(_) => 502,
            };
            let event = if status < 400 {
                AuditEvent::success("gateway.request.forwarded")
            } else {
                AuditEvent::failure("gateway.request.forwarded")
            };
            self.audit(
                event
                    .actor(principal.subject.as_str())
                    .detail("route", route.prefix.as_str())
                    .detail("method", method.as_str())
                    .detail("status", status),
                meta,
            );
        }
        answer
    }

    /// A state-changing request on a session (a page route's form post, an
    /// API call) needs a proof that it comes from the gateway's own pages:
    /// `X-Echo-CSRF: 1` (which a cross-site page cannot send without a
    /// preflight the gateway never grants), or the browser's word that it
    /// is same-origin (`Origin` equal to the gateway's, or `Sec-Fetch-Site:
    /// same-origin`). The cookie alone (`SameSite=Lax`) is no proof: a
    /// top-level cross-site POST may still carry it in some browsers, and
    /// a sibling subdomain is same-site.
    fn check_page_csrf(&self, presented: &Presented<'_>, meta: &Origin) -> Result<()> {
        let same_origin = presented.origin == Some(self.config.public_url.as_str())
            || presented.fetch_site == Some("same-origin");
        if presented.csrf_header || same_origin {
            return Ok(());
        }
        self.refuse_csrf("state-changing request without CSRF proof", meta)
    }

    /// Phase 6: the request as the upstream gets it, and its request id.
    /// What the client sent about itself (`X-Forwarded-*`, `Forwarded`,
    /// `X-Real-IP`, `X-User-*`, `X-Echo-*`) is dropped; the gateway sets
    /// what it vouches for.
    fn rewrite(
        &self,
        route: &Route,
        request: Request<Body>,
        bearer: HeaderValue,
        meta: &Origin,
    ) -> Result<(Request<Body>, HeaderValue)> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Origin-form (`/path?query`): the connection is the upstream's.
        parts.uri = Uri::try_from(route.upstream_path(path))
            .map_err(|e| GatewayError::BadRequest(format!("unusable path: {e}")))?;
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        let id = HeaderValue::from_str(&meta.request_id)
            .map_err(|_| GatewayError::BadRequest("unusable request id".into()))?;
        let trace = meta.trace.next_hop();
        // `X-Echo-CSRF` goes as a client claim; `Authorization` is the
        // gateway's own below.
        keep_end_to_end(headers, FORWARD_HEADERS_SET, |name| {
            matches!(name, "cookie" | "host" | "authorization") || is_client_claim(name)
        });
        headers.insert(AUTHORIZATION, bearer);
        headers.insert(REQUEST_ID, id.clone());
        headers.insert(TRACEPARENT, trace);
        set_forwarded(headers, meta.client_ip, &self.forwarded);
        Ok((Request::from_parts(parts, body), id))
    }

    /// Phase 3: any one of the route's roles (if it names any) and all of
    /// its scopes.
    fn authorize(&self, route: &Route, principal: &Principal, meta: &Origin) -> Result<()> {
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
    async fn rate_limit(&self, route: &Route, principal: &Principal, meta: &Origin) -> Result<()> {
        let user = principal.subject.as_str();
        if let Some(limit) = self.config.rate_limits.per_user {
            let key = bucket_key(&["user ", user], None);
            self.take(&key, limit, "per_user", Some(user), meta).await?;
        }
        if let Some(limit) = route.rate_limit {
            let prefix = route.prefix.as_str();
            if let Some(ip) = meta.client_ip {
                let key = bucket_key(&["route ", prefix, " ip "], Some(ip));
                self.take(&key, limit, "route_per_ip", Some(user), meta)
                    .await?;
            }
            let key = bucket_key(&["route ", prefix, " user ", user], None);
            self.take(&key, limit, "route_per_user", Some(user), meta)
                .await?;
        }
        Ok(())
    }

    /// One token from `key`'s bucket; a refusal is audited once per
    /// window per key.
    async fn take(
        &self,
        key: &str,
        limit: Limit,
        which: &'static str,
        actor: Option<&str>,
        meta: &Origin,
    ) -> Result<()> {
        self.limiter.check(key, limit).await.map_err(|refusal| {
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
        let Some(to) = self.upstreams.of(&route.prefix) else {
            return Err(GatewayError::UpstreamUnavailable {
                upstream: upstream(),
                cause: "no connections to it".into(),
            });
        };
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(route.timeout, to.send(request)).await;
        let outcome = match &answered {
            Ok(Ok(answer)) => status_class(answer.status()),
            Ok(Err(_)) => "unavailable",
            Err(_) => "timeout",
        };
        to.metrics.record(outcome, started.elapsed());
        let answer = answered
            .map_err(|_| GatewayError::UpstreamTimeout {
                upstream: upstream(),
            })?
            .map_err(|e| GatewayError::UpstreamUnavailable {
                upstream: upstream(),
                cause: match std::error::Error::source(&*e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                },
            })?;
        let (mut parts, body) = answer.into_parts();
        // The gateway owns the cookies of its origin.
        keep_end_to_end(&mut parts.headers, ANSWER_HEADERS_SET, |name| {
            name == "set-cookie"
        });
        parts.headers.insert(REQUEST_ID, request_id);
        Ok(Response::from_parts(parts, body))
    }
}

/// The headers the gateway sets on a forwarded request: `Authorization`,
/// `X-Request-Id`, `traceparent`, the four of [`set_forwarded`] and
/// `Host`.
const FORWARD_HEADERS_SET: usize = 8;
/// The headers the gateway sets on an upstream's answer: `X-Request-Id`
/// and the edge's five security headers (`SecurityHeaders::put_on`).
const ANSWER_HEADERS_SET: usize = 6;

/// `2xx` … `5xx`: an upstream's answer as a bounded label.
fn status_class(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The principal of a verified bearer token.
/// A rate-limit bucket's key: `parts`, then `ip` if given (`ip 192.0.2.7`,
/// `route /api/x user u1`). Written without `format!`: a proxied request
/// makes up to four.
fn bucket_key(parts: &[&str], ip: Option<std::net::IpAddr>) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 15);
    for part in parts {
        key.push_str(part);
    }
    if let Some(ip) = ip {
        echo_edge::push_ip(&mut key, ip);
    }
    key
}

fn bearer_principal(caller: Caller, token: &str, hash: String) -> Principal {
    Principal {
        name: caller.name().map(str::to_owned),
        scopes: caller.scope(),
        subject: caller.subject,
        roles: caller.roles,
        session: None,
        credential: Credential::Bearer {
            token: token.to_owned(),
            hash,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_read_as_the_formatted_ones_did() {
        let ip = std::net::IpAddr::from([192, 0, 2, 7]);
        assert_eq!(bucket_key(&["ip "], Some(ip)), "ip 192.0.2.7");
        assert_eq!(
            bucket_key(&["route ", "/api/x", " ip "], Some(ip)),
            "route /api/x ip 192.0.2.7"
        );
        assert_eq!(
            bucket_key(&["route ", "/api/x", " user ", "u1"], None),
            "route /api/x user u1"
        );
    }
}
