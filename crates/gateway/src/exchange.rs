//! Tokens the gateway sends on: for an upstream, the caller's token traded
//! at identity (RFC 8693 token exchange) for one whose `aud` is that
//! upstream, naming the user as `sub` and the gateway as `act`; for the
//! gateway's own reads of the audit log, its client-credentials token
//! (the edge's [`echo_edge::ServiceTokens`]).
//!
//! Exchanged tokens are cached ([`crate::token_cache`]) until shortly
//! before they expire, per caller token and audience (a session's access
//! token changes at each refresh, so this is per session and audience,
//! and a refreshed session trades its new token), so identity sees one
//! exchange per session, audience and token lifetime rather than one per
//! request.

use std::borrow::Cow;

use axum::http::HeaderValue;
#[cfg(test)]
use echo_crypto::secret::token_hash;

use crate::gateway::Gateway;
use crate::principal::{Credential, Principal};
use crate::session::Tokens;
use crate::{GatewayError, Result};

/// What the gateway's client-credentials token lets it do at audit.
const AUDIT_READ: &str = "audit.read";
/// Identity's audience, where its admin API is.
pub(crate) const ADMIN_AUDIENCE: &str = "identity";
/// The admin API's scope.
const ADMIN_SCOPE: &str = "echo.admin";

impl Gateway {
    /// The caller's token, as presented (bearer) or opened from the
    /// session. Never logged.
    fn subject_token(&self, principal: &Principal) -> Result<String> {
        match &principal.credential {
            Credential::Bearer { token, .. } => Ok(token.clone()),
            Credential::Session {
                id_hash, sealed, ..
            } => Ok(Tokens::open(&self.sealer, id_hash, sealed)?.access_token),
        }
    }

    /// What the exchanged tokens of `principal` are cached under: the
    /// bearer token's hash, or the session and its access token's expiry
    /// (so a session's tokens are opened only to make an exchange, not on
    /// every request, and a refreshed session trades its new token).
    fn subject_key(principal: &Principal) -> (&str, i64) {
        match &principal.credential {
            Credential::Bearer { hash, .. } => (hash.as_str(), 0),
            Credential::Session {
                id_hash,
                access_expires_at,
                ..
            } => (id_hash.as_str(), *access_expires_at),
        }
    }

    /// The `Authorization` header carrying a token for `audience` that
    /// names the caller (RFC 8693), from the cache or from identity.
    pub(crate) async fn token_for(
        &self,
        principal: &Principal,
        audience: &str,
    ) -> Result<HeaderValue> {
        self.exchanged(principal, audience, None).await
    }

    /// The admin API's token for a signed-in admin: scope `echo.admin`
    /// for audience `identity`, which identity grants only to an active
    /// admin whose sign-in passed a second factor. Cached apart from any
    /// token a route to identity's audience would get, so it never goes
    /// to an upstream.
    pub(crate) async fn admin_token(&self, principal: &Principal) -> Result<HeaderValue> {
        self.exchanged(principal, ADMIN_AUDIENCE, Some(ADMIN_SCOPE))
            .await
    }

    async fn exchanged(
        &self,
        principal: &Principal,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<HeaderValue> {
        let (whose, version) = Self::subject_key(principal);
        let now = self.clock.now();
        let cached_as: Cow<'_, str> = match scope {
            Some(scope) => format!("{audience} {scope}").into(),
            None => audience.into(),
        };
        if let Some(header) = self.tokens.get(whose, version, &cached_as, now) {
            return Ok(header);
        }
        let subject = self.subject_token(principal)?;
        let answer = self
            .identity
            .exchange(&subject, audience, scope)
            .await
            .map_err(|e| match e {
                // Identity will not let the gateway act for this caller
                // there (an audience not registered for the gateway, a
                // revoked token): the caller may not go there.
                GatewayError::IdentityRefused(code) => GatewayError::Forbidden(format!(
                    "identity refused a token for {audience}: {code}"
                )),
                other => other,
            })?;
        let mut header = HeaderValue::try_from(format!("Bearer {}", answer.access_token))
            .map_err(|_| GatewayError::Identity("a token that is no header value".into()))?;
        header.set_sensitive(true);
        let expires_at = now + answer.expires_in.unwrap_or(0);
        self.tokens.put(
            (whose, version),
            &cached_as,
            header.clone(),
            expires_at,
            now,
        );
        Ok(header)
    }

    /// The gateway's own token for reading the audit log (scope
    /// `audit.read`), by client credentials.
    pub(crate) async fn own_audit_token(&self) -> Result<String> {
        self.service_tokens
            .token(&self.config.audit_audience, AUDIT_READ)
            .await
            .map_err(GatewayError::Identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(credential: Credential) -> Principal {
        Principal {
            subject: "u1".into(),
            name: None,
            roles: Vec::new(),
            scopes: echo_core::Scope::default(),
            session: None,
            credential,
        }
    }

    #[test]
    fn a_refreshed_session_is_cached_apart_and_its_tokens_stay_sealed() {
        let session = |sealed: &[u8], access_expires_at| {
            caller(Credential::Session {
                id_hash: "s1".into(),
                sealed: sealed.to_vec(),
                access_expires_at,
            })
        };
        // Not a sealed box: a key that opened it would fail.
        let (before, other) = (
            session(b"not opened", 1_000),
            session(b"other bytes", 1_000),
        );
        assert_eq!(Gateway::subject_key(&before), Gateway::subject_key(&other));
        let refreshed = session(b"not opened", 1_900);
        assert_ne!(
            Gateway::subject_key(&before),
            Gateway::subject_key(&refreshed)
        );
        let bearer = caller(Credential::Bearer {
            token: "jwt".into(),
            hash: token_hash("jwt"),
        });
        assert_eq!(
            Gateway::subject_key(&bearer),
            (token_hash("jwt").as_str(), 0)
        );
    }
}
