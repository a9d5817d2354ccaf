//! [`Gate`]: how every service authenticates its caller, the one place a
//! token is turned into a [`Caller`] or a [`Refusal`].
//!
//! - The bearer token (RFC 6750 §2.1) is verified locally with the shared
//!   [`Verifier`] as an access token (`typ: at+jwt`) for the service's
//!   audience.
//! - A verified token yields a typed [`Caller`]: a service when `sub` is
//!   its own `client_id` (what client credentials issue), else a user.
//! - Every refusal is audited once, through the service's [`RefusalLog`]
//!   (one event name, aggregated per address and reason), and answered
//!   with one body: 401 with the RFC 6750 challenge for a missing or
//!   invalid token, 403 for a valid token of the wrong kind or without the
//!   scope needed (`error="insufficient_scope"`), 503 when the keys cannot
//!   be had (our trouble, not the caller's: not audited).
//!
//! Handlers take a [`Caller`], [`ServiceCaller`] or [`UserCaller`] as an
//! extractor (the state gives the gate: [`HasGate`]), or call
//! [`Gate::authenticate`] themselves.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use echo_core::Scope;
use echo_core::audit::AuditSink;
use echo_crypto::secret::sha256;
use echo_verify::{Claims, Expectations, Verifier, VerifyError};

use crate::refusals::{DEFAULT_WINDOW, RefusalLog, RefusedSubject};
use crate::run::Periodic;
use crate::{Origin, Problem};

/// What kind of principal a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A person, through an application (`sub` ≠ `client_id`).
    User,
    /// A service acting as itself (`sub` = `client_id`).
    Service,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: CallerKind,
    /// `sub`: a user id, or the client id of a service.
    pub subject: String,
    pub client_id: Option<String>,
    pub roles: Vec<String>,
    /// Every claim of the verified token.
    pub claims: Arc<Claims>,
    /// SHA-256 of the token: its verifier-cache key, and what a service
    /// keys its own per-token state by without hashing it again.
    pub token_digest: [u8; 32],
    pub origin: Origin,
}

impl Caller {
    fn of(claims: Arc<Claims>, token_digest: [u8; 32], origin: &Origin) -> Self {
        let kind = if claims.client_id.as_deref() == Some(claims.sub.as_str()) {
            CallerKind::Service
        } else {
            CallerKind::User
        };
        Self {
            kind,
            subject: claims.sub.clone(),
            client_id: claims.client_id.clone(),
            roles: claims.roles.clone(),
            claims,
            token_digest,
            origin: origin.clone(),
        }
    }

    pub fn is_service(&self) -> bool {
        self.kind == CallerKind::Service
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the token's `scope` has `token` (whole tokens only).
    pub fn has_scope(&self, token: &str) -> bool {
        self.claims.has_scope(token)
    }

    /// The token's scope.
    pub fn scope(&self) -> Scope {
        Scope::parse(self.claims.scope.as_deref().unwrap_or_default())
    }

    /// `preferred_username`, else `name`, when the token carries one.
    pub fn name(&self) -> Option<&str> {
        ["preferred_username", "name"]
            .iter()
            .find_map(|claim| self.claims.other.get(*claim).and_then(|v| v.as_str()))
    }
}

/// Why a caller was refused: a short stable code, the status it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No bearer token.
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    UnknownKey,
    WrongIssuer,
    WrongAudience,
    /// A token that is not what the endpoint takes: an ID token as an
    /// access token (401), a user's token where a service's is needed or
    /// the other way round (403).
    WrongKind,
    /// A valid token without the scope the endpoint needs (403).
    InsufficientScope,
    /// A valid token revoked since (RFC 7009).
    Revoked,
    /// A valid token whose subject no longer exists.
    UnknownSubject,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongKind => "wrong_kind",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::Revoked => "revoked",
            Reason::UnknownSubject => "unknown_subject",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Reason::Missing => "a bearer token is required",
            Reason::Malformed => "the token is malformed",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::BadSignature => "the token's signature does not verify",
            Reason::UnknownKey => "the token is signed with an unknown key",
            Reason::WrongIssuer => "the token is from another issuer",
            Reason::WrongAudience => "the token is not meant for this service",
            Reason::WrongKind => "this token cannot be used here",
            Reason::InsufficientScope => "the token lacks the scope this needs",
            Reason::Revoked => "the token has been revoked",
            Reason::UnknownSubject => "the token's subject no longer exists",
        }
    }

    /// The reason a verifier's error stands for; `None` for
    /// [`VerifyError::KeysUnavailable`], which is not the caller's fault.
    pub fn of(error: &VerifyError) -> Option<Self> {
        Some(match error {
            VerifyError::Malformed => Reason::Malformed,
            VerifyError::UnknownKey => Reason::UnknownKey,
            VerifyError::KeysUnavailable(_) => return None,
            VerifyError::BadSignature => Reason::BadSignature,
            VerifyError::WrongIssuer => Reason::WrongIssuer,
            VerifyError::WrongAudience => Reason::WrongAudience,
            VerifyError::WrongType => Reason::WrongKind,
            VerifyError::Expired => Reason::Expired,
            VerifyError::NotYetValid => Reason::NotYetValid,
        })
    }
}

/// A refused request, already audited: answers 401, 403 or 503 with a
/// problem body (and the RFC 6750 challenge on 401 and scope refusals).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `None`: the keys are unavailable (503).
    pub reason: Option<Reason>,
    pub status: StatusCode,
    /// What the endpoint needs that the token lacks: the scope for
    /// `insufficient_scope`, the kind of token for a 403 `wrong_kind`.
    pub needed: Option<&'static str>,
}

impl Refusal {
    /// The keys to check tokens with cannot be had: our trouble (503), not
    /// the caller's, so nothing is audited.
    pub fn keys_unavailable() -> Self {
        Self {
            reason: None,
            status: StatusCode::SERVICE_UNAVAILABLE,
            needed: None,
        }
    }

    /// The short code (`missing`, `expired`, …, `keys_unavailable`).
    pub fn code(&self) -> &'static str {
        self.reason.map_or("keys_unavailable", Reason::code)
    }

    /// The RFC 6750 §3 challenge, if the answer carries one.
    pub fn challenge(&self) -> Option<String> {
        let realm = r#"Bearer realm="echo""#;
        match (self.status, self.reason) {
            (StatusCode::UNAUTHORIZED, Some(Reason::Missing)) => Some(realm.to_owned()),
            (StatusCode::UNAUTHORIZED, Some(reason)) => Some(format!(
                r#"{realm}, error="invalid_token", error_description="{}""#,
                reason.code()
            )),
            (StatusCode::FORBIDDEN, Some(Reason::InsufficientScope)) => Some(format!(
                r#"{realm}, error="insufficient_scope", scope="{}""#,
                self.needed.unwrap_or_default()
            )),
            _ => None,
        }
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let Some(reason) = self.reason else {
            return Problem::new(
                self.status,
                "keys_unavailable",
                "the signing keys cannot be fetched; try again shortly",
            )
            .retry_after(5);
        };
        let code = if self.status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "invalid_token"
        };
        let mut problem =
            Problem::new(self.status, code, reason.detail()).with("reason", reason.code());
        if let Some(needed) = self.needed {
            problem = problem.with("needed", needed);
        }
        problem
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Some(reason) => f.write_str(reason.detail()),
            None => f.write_str("the signing keys cannot be fetched"),
        }
    }
}

impl std::error::Error for Refusal {}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        if let Some(value) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// A service's door: its audience, the shared verifier, its refusal log.
pub struct Gate {
    audience: String,
    verifier: Arc<Verifier>,
    refusals: RefusalLog,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("audience", &self.audience)
            .field("refusals", &self.refusals)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// The door of `service` (its name in refusal events), taking access
    /// tokens for `audience` checked by `verifier`, auditing to `audit`.
    pub fn new(
        service: &'static str,
        audience: &str,
        verifier: Arc<Verifier>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        Self {
            audience: audience.to_owned(),
            verifier,
            refusals: RefusalLog::new(service, audit, DEFAULT_WINDOW),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The caller of a request with `headers` from `origin`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        origin: &Origin,
    ) -> Result<Caller, Refusal> {
        self.authenticate_bearer(crate::bearer(headers), origin)
            .await
    }

    /// The caller presenting `token` (`None`: no token) from `origin`.
    pub async fn authenticate_bearer(
        &self,
        token: Option<&str>,
        origin: &Origin,
    ) -> Result<Caller, Refusal> {
        self.authenticate_for(token, &self.audience, origin).await
    }

    /// As [`authenticate_bearer`](Self::authenticate_bearer), for a token
    /// whose audience is `audience` rather than this service's (identity
    /// checks tokens for its clients).
    pub async fn authenticate_for(
        &self,
        token: Option<&str>,
        audience: &str,
        origin: &Origin,
    ) -> Result<Caller, Refusal> {
        let Some(token) = token else {
            return Err(self.refuse(Reason::Missing, None, origin));
        };
        let digest = sha256(token.as_bytes());
        match self
            .verifier
            .verify_digested(token, &digest, &Expectations::access_token(audience))
            .await
        {
            Ok(claims) => Ok(Caller::of(claims, digest, origin)),
            Err(e) => match Reason::of(&e) {
                Some(reason) => Err(self.refuse(reason, None, origin)),
                None => Err(Refusal::keys_unavailable()),
            },
        }
    }

    /// A service's token, or a 403.
    pub fn require_service(&self, caller: &Caller) -> Result<(), Refusal> {
        match caller.kind {
            CallerKind::Service => Ok(()),
            CallerKind::User => Err(self.wrong_kind(caller, "a service token")),
        }
    }

    /// A user's token, or a 403.
    pub fn require_user(&self, caller: &Caller) -> Result<(), Refusal> {
        match caller.kind {
            CallerKind::User => Ok(()),
            CallerKind::Service => Err(self.wrong_kind(caller, "a user token")),
        }
    }

    /// A token with `scope`, or a 403 (`insufficient_scope`).
    pub fn require_scope(&self, caller: &Caller, scope: &'static str) -> Result<(), Refusal> {
        if caller.has_scope(scope) {
            return Ok(());
        }
        Err(self.insufficient(caller, scope))
    }

    /// Refuses, and audits, a valid token that lacks the right `needed`
    /// (a scope, or a rule such as "role auditor or scope audit.read"):
    /// 403 `insufficient_scope`.
    pub fn insufficient(&self, caller: &Caller, needed: &'static str) -> Refusal {
        let mut refusal = self.refuse(
            Reason::InsufficientScope,
            Some(&caller.claims),
            &caller.origin,
        );
        refusal.status = StatusCode::FORBIDDEN;
        refusal.needed = Some(needed);
        refusal
    }

    fn wrong_kind(&self, caller: &Caller, needed: &'static str) -> Refusal {
        let mut refusal = self.refuse(Reason::WrongKind, Some(&caller.claims), &caller.origin);
        refusal.status = StatusCode::FORBIDDEN;
        refusal.needed = Some(needed);
        refusal
    }

    /// Refuses, and audits, a caller for a reason the service found itself
    /// (a revoked token). `verified`: the token's claims when its signature
    /// was valid.
    pub fn refuse(&self, reason: Reason, verified: Option<&Claims>, origin: &Origin) -> Refusal {
        let subject = verified
            .map(|claims| RefusedSubject {
                sub: Some(claims.sub.clone()),
                client_id: claims.client_id.clone(),
            })
            .unwrap_or_default();
        self.refusals
            .refused(reason.code(), &subject, origin, Instant::now());
        Refusal {
            reason: Some(reason),
            status: StatusCode::UNAUTHORIZED,
            needed: None,
        }
    }

    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    /// The periodic job that records the counts of ended refusal windows.
    pub fn refusal_job(self: &Arc<Self>) -> Periodic {
        let gate = self.clone();
        Periodic::every("refusal counts", self.refusals.window(), move || {
            let gate = gate.clone();
            async move {
                gate.refusals.flush(Instant::now());
                Ok::<(), std::convert::Infallible>(())
            }
        })
    }
}

/// A service's state, which holds its [`Gate`]: what the caller extractors
/// need.
pub trait HasGate {
    fn gate(&self) -> &Gate;
}

impl<T: HasGate> HasGate for Arc<T> {
    fn gate(&self) -> &Gate {
        (**self).gate()
    }
}

/// Any caller with a valid token.
impl<S> FromRequestParts<S> for Caller
where
    S: HasGate + Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let gate = state.gate();
        let origin = Origin::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        gate.authenticate(&parts.headers, &origin).await
    }
}

/// A service acting as itself; a user's token is a 403.
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub Caller);

impl<S> FromRequestParts<S> for ServiceCaller
where
    S: HasGate + Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        state.gate().require_service(&caller)?;
        Ok(Self(caller))
    }
}

/// A user, through an application; a service's own token is a 403.
#[derive(Debug, Clone)]
pub struct UserCaller(pub Caller);

impl<S> FromRequestParts<S> for UserCaller
where
    S: HasGate + Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        state.gate().require_user(&caller)?;
        Ok(Self(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_answer_401_403_or_503_with_the_right_challenge() {
        let refusal = |reason, status, needed| Refusal {
            reason: Some(reason),
            status,
            needed,
        };
        let expired = refusal(Reason::Expired, StatusCode::UNAUTHORIZED, None);
        assert_eq!(
            expired.challenge().unwrap(),
            r#"Bearer realm="echo", error="invalid_token", error_description="expired""#
        );
        let missing = refusal(Reason::Missing, StatusCode::UNAUTHORIZED, None);
        assert_eq!(missing.challenge().unwrap(), r#"Bearer realm="echo""#);
        let scope = refusal(
            Reason::InsufficientScope,
            StatusCode::FORBIDDEN,
            Some("docs.index"),
        );
        assert!(
            scope
                .challenge()
                .unwrap()
                .contains(r#"error="insufficient_scope", scope="docs.index""#)
        );
        assert_eq!(scope.problem().body()["needed"], "docs.index");
        let kind = refusal(
            Reason::WrongKind,
            StatusCode::FORBIDDEN,
            Some("a user token"),
        );
        assert_eq!(kind.challenge(), None);
        assert_eq!(kind.problem().body()["reason"], "wrong_kind");
        let keys = Refusal::keys_unavailable();
        assert_eq!(keys.problem().retry_after, Some(5));
        assert_eq!(keys.code(), "keys_unavailable");
    }
}
